"""Scenario ``user_sessions``: what the index of users' sessions (``MEMOPT_USER_SESSIONS``)
adds to the read-only and the typical request, on each store.

One process; an LMDB store and a Redis server of the scenario's own, each holding medium
logged-in sessions saved once with the index on (so each is listed, as after its login).
In each round, blocks of read-only and typical requests run with the setting off and on,
in a shuffled order: the same sessions, the same requests, only the setting differs.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness import servers, timing, workload
from benchmarks.harness.report import render, table

SESSIONS = 200
OPS = {"read-only": workload.read_only, "typical": workload.typical}
STORES = (registry.MEMOPT_LMDB, registry.MEMOPT_REDIS)


@dataclass
class Result:
    rounds: int
    block: int  # requests per arm and round
    median_us: dict[tuple[str, str, bool], float]  # (store, op, index on) -> µs
    interval_us: dict[tuple[str, str, bool], tuple[float, float]]


def measure(quick: bool) -> Result:
    from django.test import override_settings

    rounds, block = (4, 50) if quick else (30, 200)
    base = tempfile.mkdtemp(prefix="memopt-bench-user-sessions-")
    try:
        with servers.redis_server() as server:
            config = registry.make_config(base, server.url, server.port)
            engines = registry.setup(config, list(STORES))
            payloads = workload.make_payloads()
            keys: dict[str, list[str]] = {}
            with override_settings(MEMOPT_USER_SESSIONS=True):
                for engine in engines:
                    keys[engine.name] = []
                    for n in range(SESSIONS):
                        session = engine.store()
                        session.update(workload.session_payload(payloads, "medium", n))
                        session.save()
                        keys[engine.name].append(session.session_key)
            by_name = {engine.name: engine for engine in engines}
            arms = [(store, op, on) for store in STORES for op in OPS for on in (False, True)]

            def serve(arm: tuple[str, str, bool], _: Any) -> list[float]:
                store, op, on = arm
                engine, request, listed = by_name[store], OPS[op], keys[store]
                timings = []
                with override_settings(MEMOPT_USER_SESSIONS=on):
                    for n in range(block):
                        start = timing.perf_ns()
                        request(engine.store, listed[n % SESSIONS], n)
                        timings.append(timing.perf_ns() - start)
                return timings

            samples = timing.interleaved(
                arms, rounds, random.Random(15), serve, warmup=1, drop_first=True
            )
        medians = {arm: statistics.median(values) / 1000 for arm, values in samples.items()}
        intervals = {
            arm: tuple(x / 1000 for x in timing.median_interval(values))
            for arm, values in samples.items()
        }
        return Result(rounds, block, medians, intervals)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def section(found: Result) -> str:
    rows = []
    for store in STORES:
        for op in OPS:
            off, on = found.median_us[store, op, False], found.median_us[store, op, True]
            rows.append([store, op, f"{off:.1f}", f"{on:.1f}", f"{on / off - 1:+.1%}"])
    return render(
        "user-sessions",
        rounds=found.rounds,
        block=found.block,
        table=table(
            ["store", "request", "index off (µs)", "index on (µs)", "added"], rows, "llrrr"
        ),
    )
