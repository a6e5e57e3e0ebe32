"""Scenario ``filter_check``: what the session-ID filter (``django_memopt.bloom``) costs per check
and per add, and how well it is sized.

The filter is built at design capacity in a temporary directory, with an injected clock
that advances one window per generation, as a site's sessions spread over time: every
generation holds a share of the sessions and stays live.
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass

from benchmarks.harness import timing
from benchmarks.harness.report import render, table

WINDOW = 3600.0
FP_RATE = 0.01
GENERATIONS = 8
PROBES = 200_000  # random IDs asked for, for the false-positive rate


@dataclass
class Result:
    capacity: int
    rounds: int  # of the checks
    fill_s: float
    check_ns: dict[str, float]  # kind of ID -> median ns per might_contain()
    add_ns: float
    retire_ms: float
    measured_fp: float
    estimated_fp: float
    positions: int
    hashes: int
    block: int
    file_size: int
    fill_ratios: list[float]


def measure(quick: bool) -> Result:
    from django_memopt.bloom import BLOCK, SessionFilter

    capacity, rounds, add_rounds = (20_000, 3, 2) if quick else (1_000_000, 9, 5)
    now = [1_000 * WINDOW]
    with tempfile.TemporaryDirectory() as directory:
        gate = SessionFilter.open(
            os.path.join(directory, "sessions.bloom"),
            capacity=capacity,
            fp_rate=FP_RATE,
            generations=GENERATIONS,
            window=WINDOW,
            clock=lambda: now[0],
        )
        with gate:
            lifetime = GENERATIONS * WINDOW  # every generation stays live
            added: list[str] = []
            start = time.perf_counter()
            for window in range(GENERATIONS):
                now[0] = (1_000 + window) * WINDOW
                keys = [secrets.token_hex(16) for _ in range(capacity // GENERATIONS)]
                gate.rebuild((key, now[0] + lifetime) for key in keys)
                added += keys[:2_000]
            fill_s = time.perf_counter() - start
            hits, misses = added[-10_000:], [secrets.token_hex(16) for _ in range(10_000)]
            assert all(gate.might_contain(key) for key in hits)
            probes = [secrets.token_hex(16) for _ in range(PROBES)]
            measured_fp = sum(map(gate.might_contain, probes)) / len(probes)
            # A miss is turned away only once the file is confirmed: for an ID minted long
            # before (a deleted or expired session's cookie) that is one pread; for an ID of
            # unknown age (no tag), or a recent one, a stat as well.
            minted = now[0] - 3600.0
            checks = {
                "an ID it holds": lambda: timing.loop_ns(gate.might_contain, hits),
                "an ID minted an hour before, turned away": lambda: timing.loop_ns(
                    lambda key: gate.might_contain(key, minted), misses
                ),
                "an ID of unknown age, turned away": lambda: timing.loop_ns(
                    gate.might_contain, misses
                ),
            }
            check_ns = timing.interleaved_calls(checks, rounds, random.Random(1))
            add_ns = statistics.median(
                timing.loop_ns(lambda key: gate.add(key, now[0] + WINDOW), misses)
                for _ in range(add_rounds)
            )
            stats = gate.stats()
            # Retiring a slot clears its bit in every position byte: once a window per host.
            now[0] += 2 * lifetime
            start = time.perf_counter()
            gate.add(secrets.token_hex(16), now[0] + WINDOW)
            retire_ms = (time.perf_counter() - start) * 1e3
    return Result(
        capacity,
        rounds,
        fill_s,
        check_ns,
        add_ns,
        retire_ms,
        measured_fp,
        stats.estimated_fp_rate,
        stats.positions,
        stats.hashes,
        BLOCK,
        stats.file_size,
        [generation.fill_ratio for generation in stats.live],
    )


def section(found: Result) -> str:
    rows = [[f"`might_contain()`: {kind}", f"{ns:,.0f}"] for kind, ns in found.check_ns.items()]
    rows.append(["`add()`", f"{found.add_ns:,.0f}"])
    rows.append(["`add()` that retires a generation", f"{found.retire_ms * 1e6:,.0f}"])
    return render(
        "filter-check",
        capacity=found.capacity,
        fp_target=FP_RATE,
        generations=GENERATIONS,
        per_window=found.capacity // GENERATIONS,
        fill_s=found.fill_s,
        positions=found.positions,
        block=found.block,
        hashes=found.hashes,
        file_size=found.file_size,
        rounds=found.rounds,
        table=table(["operation", "ns per call"], rows),
        measured_fp=found.measured_fp,
        probes=PROBES,
        estimated_fp=found.estimated_fp,
        fill_ratios=", ".join(f"{ratio:.3f}" for ratio in found.fill_ratios),
    )
