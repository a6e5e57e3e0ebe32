"""Scenario ``moving``: what moving in from Django's ``db`` engine costs
(``MEMOPT_PREVIOUS_ENGINE`` and ``manage.py memopt_import``), on each store.

One process; an LMDB store and a Redis server of the scenario's own, and Django's ``db``
engine on SQLite as the engine the site switched from, holding medium sessions written
the way Django writes them (JSON). In each round, blocks of requests in a shuffled order:

- a cookie unknown to both engines (a well-formed, unsigned ID: a forged or malformed
  one is turned away by the gate before any store), with the fallback off and on;
- a typical request with a cookie of the previous engine: the first request after the
  switch, which copies the session under a new signed ID and deletes it there; beside
  it, a typical request on a session already in our store.

Then ``memopt_import`` moves a batch of sessions of the previous engine: sessions a
second.
"""

from __future__ import annotations

import io
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness import servers, timing, workload
from benchmarks.harness.report import render, table, us

PREVIOUS = "django.contrib.sessions.backends.db"
STORES = (registry.MEMOPT_LMDB, registry.MEMOPT_REDIS)
ARMS = ("unknown, fallback off", "unknown, fallback on", "moved in", "already ours")


@dataclass
class Result:
    rounds: int
    block: int  # requests per arm and round
    median_ns: dict[tuple[str, str], float]  # (store, arm) -> ns
    imported: int  # sessions each import moved
    import_rate: dict[str, float]  # store -> sessions a second
    moved_checked: int  # first requests that came back on a new key with the old data
    anomalies: list[str]


def _old_sessions(payloads: Any, count: int, start: int) -> list[str]:
    """``count`` medium sessions in Django's ``db`` engine, as Django writes them."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import transaction

    keys = []
    with transaction.atomic():
        for n in range(start, start + count):
            session = SessionStore()
            session.update(workload.session_payload(payloads, "medium", n))
            session.save()
            keys.append(session.session_key)
    return keys


def measure(quick: bool) -> Result:
    from django.core.management import call_command
    from django.test import override_settings

    rounds, block, imported = (3, 10, 100) if quick else (20, 50, 2000)
    base = tempfile.mkdtemp(prefix="memopt-bench-moving-")
    try:
        with servers.redis_server() as server:
            config = registry.make_config(base, server.url, server.port)
            engines = registry.setup(config, list(STORES))
            call_command("migrate", run_syncdb=True, verbosity=0)
            payloads = workload.make_payloads()
            registry.populate(engines, payloads, 20, servers.client(server.url))
            by_name = {engine.name: engine for engine in engines}
            needed = (rounds + 1) * block  # the warm-up round included
            old = {
                store: _old_sessions(payloads, needed, i * needed)
                for i, store in enumerate(STORES)
            }
            rng = random.Random(16)
            anomalies: list[str] = []
            moved_checked = 0

            def serve(arm: tuple[str, str], _: Any) -> list[float]:
                nonlocal moved_checked
                store, kind = arm
                engine = by_name[store]
                fallback = PREVIOUS if kind != "unknown, fallback off" else None
                timings = []
                with override_settings(MEMOPT_PREVIOUS_ENGINE=fallback):
                    for n in range(block):
                        if kind.startswith("unknown"):
                            key, request = workload.random_session_key(rng), workload.miss
                        elif kind == "moved in":
                            key, request = old[store].pop(), workload.typical
                        else:
                            medium = engine.keys["medium"]
                            key, request = medium[n % len(medium)], workload.typical
                        start = timing.perf_ns()
                        session = request(engine.store, key, n)
                        timings.append(timing.perf_ns() - start)
                        if kind == "moved in":
                            if session.session_key in (None, key) or session.get("visits") != n:
                                anomalies.append(f"{store}: {key} was not moved in")
                            else:
                                moved_checked += 1
                return timings

            arms = [(store, kind) for store in STORES for kind in ARMS]
            samples = timing.interleaved(arms, rounds, rng, serve, warmup=1, drop_first=True)

            rates = {}
            for i, store in enumerate(STORES):
                _old_sessions(payloads, imported, (len(STORES) + i) * needed)
                with override_settings(
                    SESSION_ENGINE=by_name[store].module, MEMOPT_PREVIOUS_ENGINE=PREVIOUS
                ):
                    by_name[store].activate()
                    start = time.perf_counter()
                    call_command("memopt_import", "--from", PREVIOUS, stdout=io.StringIO())
                    rates[store] = imported / (time.perf_counter() - start)
                from django.contrib.sessions.models import Session

                left = Session.objects.count()
                if left:
                    anomalies.append(f"{store}: the import left {left} sessions behind")
                    Session.objects.all().delete()
        medians = {arm: statistics.median(values) for arm, values in samples.items()}
        return Result(rounds, block, medians, imported, rates, moved_checked, anomalies)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def section(found: Result) -> str:
    rows = [[store, *(us(found.median_ns[store, kind]) for kind in ARMS)] for store in STORES]
    rates = [[store, f"{found.import_rate[store]:,.0f}"] for store in STORES]
    return render(
        "moving",
        rounds=found.rounds,
        block=found.block,
        table=table(["store", *(f"{kind} (µs)" for kind in ARMS)], rows),
        imported=f"{found.imported:,}",
        rates=table(["store", "sessions a second"], rates),
        checked=f"{found.moved_checked:,}",
        anomalies="; ".join(found.anomalies[:5]) or "none",
    )
