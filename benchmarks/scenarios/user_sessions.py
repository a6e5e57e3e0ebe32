"""Scenario ``user_sessions``: what the index of users' sessions (``MEMOPT_USER_SESSIONS``)
adds to the read-only and the typical request, on each store.

One process; an LMDB store and a Redis server of the scenario's own, each holding medium
logged-in sessions saved once with the index on (so each is listed, as after its login,
with an IP address and a browser's user agent). In each round, blocks of read-only and
typical requests run with the setting off and on, in a shuffled order: the same sessions,
the same requests, only the setting differs. Then the bytes: the same sessions saved
with the setting off, beside them, and what each store holds for each.
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
CLIENT = (
    "203.0.113.7",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
)


@dataclass
class Result:
    rounds: int
    block: int  # requests per arm and round
    median_us: dict[tuple[str, str, bool], float]  # (store, op, index on) -> µs
    interval_us: dict[tuple[str, str, bool], tuple[float, float]]
    # store -> (median session bytes off, median on, index bytes per session)
    bytes_per_session: dict[str, tuple[float, float, float]]


def _sessions(engine: Any, payloads: Any, client: tuple[str, str] | None) -> list[str]:
    keys = []
    for n in range(SESSIONS):
        session = engine.store()
        session.client = client
        session.update(workload.session_payload(payloads, "medium", n))
        session.save()
        keys.append(session.session_key)
    return keys


def _lmdb_bytes(keys: list[str] | None) -> float:
    """The median record bytes of the sessions ``keys``; with ``None``, the bytes of the
    index (keys and values of ``users`` and ``owners``)."""
    from django_memopt.backends.lmdb import environment

    opened = environment()
    with opened.env.begin() as txn:
        if keys is not None:
            return float(
                statistics.median(len(txn.get(key.encode(), db=opened.sessions)) for key in keys)
            )
        return float(
            sum(
                len(key) + len(value)
                for db in (opened.users, opened.owners)
                for key, value in txn.cursor(db=db)
            )
        )


def _redis_bytes(url: str, keys: list[str] | None) -> float:
    """The median ``MEMORY USAGE`` of the sessions ``keys``; with ``None``, the total of
    the users' index keys."""
    from django_memopt.conf import conf

    prefix = conf.MEMOPT_REDIS_KEY_PREFIX
    client = servers.client(url)
    try:
        if keys is not None:
            return float(
                statistics.median(client.memory_usage(prefix + key, samples=0) for key in keys)
            )
        return float(
            sum(
                client.memory_usage(key, samples=0)
                for key in client.scan_iter(match=f"{prefix}~user*")
            )
        )
    finally:
        client.close()


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
                    keys[engine.name] = _sessions(engine, payloads, CLIENT)
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

            # The index as the logins wrote it (the typical requests refreshed nothing);
            # then fresh sessions, listed and not, since saves add layers to LMDB records.
            def measured(store: str, keys: list[str] | None) -> float:
                if store == registry.MEMOPT_LMDB:
                    return _lmdb_bytes(keys)
                return _redis_bytes(server.url, keys)

            index = {store: measured(store, None) / SESSIONS for store in STORES}
            fresh = {}
            for on in (False, True):
                with override_settings(MEMOPT_USER_SESSIONS=on):
                    for engine in engines:
                        created = _sessions(engine, payloads, CLIENT if on else None)
                        fresh[engine.name, on] = measured(engine.name, created)
            sizes = {
                store: (fresh[store, False], fresh[store, True], index[store]) for store in STORES
            }
        medians = {arm: statistics.median(values) / 1000 for arm, values in samples.items()}
        intervals = {
            arm: tuple(x / 1000 for x in timing.median_interval(values))
            for arm, values in samples.items()
        }
        return Result(rounds, block, medians, intervals, sizes)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def section(found: Result) -> str:
    rows = []
    for store in STORES:
        for op in OPS:
            off, on = found.median_us[store, op, False], found.median_us[store, op, True]
            rows.append([store, op, f"{off:.1f}", f"{on:.1f}", f"{on / off - 1:+.1%}"])
    sizes = [
        [store, f"{off:.0f}", f"{on:.0f}", f"{on - off:+.0f}", f"{index:.0f}"]
        for store, (off, on, index) in found.bytes_per_session.items()
    ]
    return render(
        "user-sessions",
        rounds=found.rounds,
        block=found.block,
        table=table(
            ["store", "request", "index off (µs)", "index on (µs)", "added"], rows, "llrrr"
        ),
        sessions=SESSIONS,
        user_agent=len(CLIENT[1]),
        bytes=table(["store", "session off", "session on", "added", "index, per session"], sizes),
    )
