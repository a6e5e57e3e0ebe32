"""What ``SessionIds.check`` costs per call, by verdict, and what ``mint`` costs.

Run from the repository root::

    python benchmarks/bench_session_ids.py [--keys N] [--rounds R]

Each figure is the median, over R rounds, of the mean time per call in a round of 100,000
calls (the ``timeit`` loop overhead included, about 15 ns). ``--keys 2`` measures a
rotation in progress: a forged ID is then hashed once per key.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django_memopt.session_ids import SessionIds, derive_id_key  # noqa: E402


def median_ns(call: Callable[[], object], number: int, rounds: int) -> float:
    times = timeit.repeat(call, number=number, repeat=rounds)
    return statistics.median(times) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1, help="keys that verify (default 1)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    # The ID is minted under the last key, so with several keys the worst case is timed.
    keys = [derive_id_key(f"secret {n}") for n in range(args.keys)]
    ids = SessionIds(keys)
    signed = SessionIds(keys[-1:]).mint()
    forged = signed[:-1] + ("0" if signed[-1] != "0" else "1")
    cases: dict[str, object] = {
        "signed (valid)": signed,
        "forged": forged,
        "unsigned (32-char legacy)": "k3q9x0c1m2v8b7n6z5l4j3h2g1f0d9s8",
        "malformed (uppercase)": signed.upper(),
        "malformed (10 kB)": "a" * 10_000,
        "malformed (None)": None,
    }
    expected = {"signed (valid)": "signed", "forged": "forged"}
    for name, value in cases.items():
        assert ids.check(value).status == expected.get(name, name.split()[0]), name

    print(f"Python {sys.version.split()[0]}, {args.keys} key(s), median of {args.rounds}")
    number = 100_000
    for name, value in cases.items():
        check = ids.check
        ns = median_ns(lambda check=check, value=value: check(value), number, args.rounds)
        print(f"  check {name:<27} {ns:8.0f} ns")
    print(f"  {'mint':<33} {median_ns(ids.mint, 10_000, args.rounds):8.0f} ns")


if __name__ == "__main__":
    main()
