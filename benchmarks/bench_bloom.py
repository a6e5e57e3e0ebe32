"""Measure the session-ID gate (``django_memopt.bloom``): the cost of a check and of an add.

Run from the repository root::

    python benchmarks/bench_bloom.py            # 1,000,000 sessions over 8 windows
    python benchmarks/bench_bloom.py --full     # and every generation full (8,000,000 IDs)

The filter is built at design capacity in a temporary directory, with an injected clock
that advances one window per generation, as a site's sessions spread over time. Every
figure is the median over several rounds (the machine may be noisy).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from django_memopt.bloom import BLOCK, SessionFilter  # noqa: E402

WINDOW = 3600.0


def per_call_ns(call: Callable[[str], object], keys: list[str], rounds: int = 9) -> float:
    """Median over ``rounds`` of the mean ns per ``call(key)`` over ``keys``."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for key in keys:
            call(key)
        results.append((time.perf_counter_ns() - start) / len(keys))
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--fp-rate", type=float, default=0.01)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="fill every generation")
    args = parser.parse_args()
    now = [1_000 * WINDOW]
    with tempfile.TemporaryDirectory() as directory:
        gate = SessionFilter.open(
            os.path.join(directory, "sessions.bloom"),
            capacity=args.capacity,
            fp_rate=args.fp_rate,
            generations=args.generations,
            window=WINDOW,
            clock=lambda: now[0],
        )
        with gate:
            per_window = args.capacity if args.full else args.capacity // args.generations
            lifetime = args.generations * WINDOW  # every generation stays live
            added: list[str] = []
            start = time.perf_counter()
            for window in range(args.generations):
                now[0] = (1_000 + window) * WINDOW
                keys = [secrets.token_hex(16) for _ in range(per_window)]
                gate.rebuild((key, now[0] + lifetime) for key in keys)
                added += keys[:2_000]
            filled = time.perf_counter() - start
            total = per_window * args.generations
            hits = added[-10_000:]
            misses = [secrets.token_hex(16) for _ in range(10_000)]
            assert all(gate.might_contain(key) for key in hits)
            probes = [secrets.token_hex(16) for _ in range(200_000)]
            measured = sum(map(gate.might_contain, probes)) / len(probes)
            hit_ns = per_call_ns(gate.might_contain, hits)
            # A miss is turned away only once the file is confirmed: for an ID minted long
            # before (a deleted or expired session's cookie) that is one pread; for an ID of
            # unknown age (no tag), or a recent one, a stat as well.
            old = now[0] - 3600.0
            miss_old_ns = per_call_ns(lambda key: gate.might_contain(key, old), misses)
            miss_ns = per_call_ns(gate.might_contain, misses)
            add_ns = per_call_ns(lambda key: gate.add(key, now[0] + WINDOW), misses, rounds=5)
            stats = gate.stats()
            # Retiring a slot clears its bit in every position byte: once a window per host.
            now[0] += 2 * lifetime
            start = time.perf_counter()
            gate.add(secrets.token_hex(16), now[0] + WINDOW)
            retire_ms = (time.perf_counter() - start) * 1e3
    print(f"capacity {args.capacity:,}, fp target {args.fp_rate:.2%}, {args.generations} gens")
    print(f"  filled with {total:,} IDs ({per_window:,} per window) in {filled:.1f} s")
    print(f"  {stats.positions:,} positions x 1 byte in blocks of {BLOCK}, {stats.hashes} hashes")
    print(f"  file {stats.file_size:,} B")
    print(
        f"  might_contain: hit {hit_ns:,.0f} ns, miss {miss_old_ns:,.0f} ns (an ID minted an "
        f"hour before), {miss_ns:,.0f} ns (age unknown: a stat too); median per call"
    )
    print(f"  add: {add_ns:,.0f} ns; an add that retires a slot: {retire_ms:.1f} ms")
    print(
        f"  false positives: measured {measured:.4%}, stats estimate {stats.estimated_fp_rate:.4%}"
    )
    fills = ", ".join(f"{generation.fill_ratio:.3f}" for generation in stats.live)
    print(f"  fill ratios of the live generations: {fills}")


if __name__ == "__main__":
    main()
