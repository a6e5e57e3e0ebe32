"""Scenario ``session_ids``: what ``SessionIds.check`` costs per call, by verdict, and what
``mint`` costs (``django_memopt.session_ids``), with one key and during a key rotation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmarks.harness import timing
from benchmarks.harness.report import render, table

CALLS = {"check": 100_000, "mint": 10_000}  # calls per timed round


@dataclass
class Result:
    rounds: int
    ns: dict[int, dict[str, float]]  # keys that verify -> case -> median ns per call


def _cases(keys: int, rounds: int) -> dict[str, float]:
    from django_memopt.session_ids import SessionIds, derive_id_key

    # The ID is minted under the last key, so with several keys the worst case is timed.
    secrets = [derive_id_key(f"secret {n}") for n in range(keys)]
    ids = SessionIds(secrets)
    signed = SessionIds(secrets[-1:]).mint()
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
    arms = {
        f"`check()`: {name}": (
            lambda value=value: timing.ns_per_call(lambda: ids.check(value), CALLS["check"])
        )
        for name, value in cases.items()
    }
    arms["`mint()`"] = lambda: timing.ns_per_call(ids.mint, CALLS["mint"])
    return timing.interleaved_calls(arms, rounds, random.Random(1))


def measure(quick: bool) -> Result:
    rounds = 3 if quick else 15
    return Result(rounds, {keys: _cases(keys, rounds) for keys in (1, 2)})


def section(found: Result) -> str:
    one, two = found.ns[1], found.ns[2]
    rows = [[case, f"{one[case]:,.0f}", f"{two[case]:,.0f}"] for case in one]
    return render(
        "session-ids",
        rounds=found.rounds,
        check_calls=CALLS["check"],
        mint_calls=CALLS["mint"],
        table=table(["call", "one key: ns", "two keys: ns"], rows),
    )
