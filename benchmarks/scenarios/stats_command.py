"""Scenario ``stats_command``: how long ``manage.py memopt_stats`` takes to collect its
report on a large store, LMDB and Redis.

Each store is filled with small sessions, then the command's collection (what ``--json``
prints) is timed three times. LMDB is filled through the engine's own write primitive;
Redis with copies (``DUMP`` / ``RESTORE``) of a session the engine wrote, so the copies
have exactly the engine's layout whatever it is (their tags are not for their keys, which
the report never checks: it reads no value).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass

from benchmarks.harness import engines as registry
from benchmarks.harness import servers
from benchmarks.harness.report import render, table

STORES = {"LMDB": "django_memopt.backends.lmdb", "Redis": "django_memopt.backends.redis"}
SAMPLE = 1000  # the command's default --sample (django_memopt.report.DEFAULT_SAMPLE)
TIMES = 3


@dataclass
class Result:
    sessions: dict[str, int]  # store -> sessions the report counted
    fill_s: dict[str, float]
    collect_ms: dict[str, float]  # median of TIMES


def _fill_lmdb(store: type, count: int, expires_at: float) -> None:
    from django_memopt.backends.base import field_codec, session_ids
    from django_memopt.fields import Delta

    codec, ids = field_codec(), session_ids()
    for n in range(count):
        key = ids.mint()
        delta = Delta({"visits": codec.encode(key, "visits", n)}, replace=True)
        store._write(key, delta, expires_at, create=True)


def _fill_redis(store: type, count: int, expires_at: float) -> None:
    from django_memopt.backends.base import session_ids
    from django_memopt.backends.redis import connection
    from django_memopt.conf import conf

    session = store()
    session["visits"] = 1
    session.save()
    prefix = conf.MEMOPT_REDIS_KEY_PREFIX
    client, ids = connection(), session_ids()
    template = client.dump(prefix + session.session_key)
    ttl_ms = int((expires_at - time.time()) * 1000)
    with client.pipeline(transaction=False) as pipe:
        for n in range(count - 1):
            pipe.restore(prefix + ids.mint(), ttl_ms, template)
            if n % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()


def measure(quick: bool) -> Result:
    from django.test import override_settings

    from django_memopt.report import collect

    count = 2_000 if quick else 1_000_000
    base = tempfile.mkdtemp(prefix="memopt-bench-stats-")
    found = Result({}, {}, {})
    with servers.redis_server() as server:
        try:
            config = registry.make_config(base, server.url, server.port)
            registry.configure(config, MEMOPT_LMDB_MAP_SIZE=4 * 1024**3)
            for name, engine in STORES.items():
                with override_settings(SESSION_ENGINE=engine):
                    from importlib import import_module

                    store = import_module(engine).SessionStore
                    started = time.perf_counter()
                    fill = _fill_redis if name == "Redis" else _fill_lmdb
                    fill(store, count, time.time() + 3600)
                    found.fill_s[name] = time.perf_counter() - started
                    timings = []
                    for _ in range(TIMES):
                        started = time.perf_counter()
                        report = collect(SAMPLE)
                        timings.append(time.perf_counter() - started)
                    found.sessions[name] = report["store"]["sessions"]
                    found.collect_ms[name] = statistics.median(timings) * 1000
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return found


def section(found: Result) -> str:
    rows = [
        [name, f"{count:,}", f"{found.fill_s[name]:.0f}", f"{found.collect_ms[name]:,.1f}"]
        for name, count in found.sessions.items()
    ]
    header = ["store", "sessions counted", "filled in (s)", "collection: median ms"]
    return render("stats-command", sample=SAMPLE, times=TIMES, table=table(header, rows))
