"""Scenario ``memory``: what a session takes in each store, what a save costs Redis, and
what the example shop's workers take; the memory page (``docs/memory.md``).

For each session of the memory comparison (``workload.MEMORY_SESSIONS``) and of the
workload's three sizes, side by side in one run against one ``redis-server``, one SQLite
file and fresh LMDB environments:

- Redis: ``MEMORY USAGE <key> SAMPLES 0`` and ``OBJECT ENCODING`` of django-memopt's
  sessions as created and after typical saves, of the previous release's layout (a hash
  of format-1 fields, written as that release wrote it), of Django's ``cache`` engine on
  django-redis and of django-redis-sessions;
- LMDB: django-memopt's record as created and over typical saves, the previous release's
  (format 1) record, and the pages of the environment per session; against Django's
  ``db`` row (``SessionStore().encode()``) and SQLite's pages per session, and the
  ``file`` engine's file;
- ``MEMOPT_COMPRESS_FROM``'s effect on both, Redis's hash encodings under
  ``hash-max-listpack-value``, and Redis CPU per save (``INFO commandstats``);
- the workers' memory under gunicorn (:mod:`benchmarks.scenarios.worker_memory`).

The Redis page takes its memory section from here too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness import log, servers, workload
from benchmarks.harness.engines import (
    DB,
    FILE,
    MEMOPT_LMDB,
    MEMOPT_REDIS,
    REDIS_CACHE,
    REDIS_SESSIONS,
    Engine,
)
from benchmarks.harness.report import met, render, table
from benchmarks.harness.servers import text
from benchmarks.harness.workload import READ_KEYS, SIZES, WRITE_KEY
from benchmarks.scenarios import worker_memory

ISSUE = tuple(workload.MEMORY_SESSIONS)  # the sessions of the memory comparison
KINDS = (*ISSUE, *(f"workload {size}" for size in SIZES))
PREVIOUS = "previous release"
SAVED = " after saves"
# The goals: Redis memory (after saves) at most `cache`'s, LMDB records at most Django's
# db row, for these sessions; at most this share of `cache` (Redis) and of the previous
# release's record (LMDB) for the large ones.
SMALL_GOALS, LARGE_GOALS, LARGE_SHARE = ("logged in", "medium"), ("large", "large, English"), 0.6
COMPRESS_VALUES = (1024, None)  # MEMOPT_COMPRESS_FROM measured beside the default
SETTING_VALUES = (64, 256)  # hash-max-listpack-value
# The commands each engine's save sends (Redis CPU per save), as INFO commandstats names them.
SENT = {MEMOPT_REDIS: ("evalsha", "set"), REDIS_CACHE: ("get", "set")}
_TOKEN = "3f9c2a7e5b1d4c6a8e0f2b4d6a8c0e1f"
# Sessions for the hash encoding table, beside the workload's sessions.
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


@dataclass(frozen=True)
class Profile:
    samples: int  # sessions of each kind measured one by one (medians)
    bulk: int  # sessions of each kind in the LMDB and SQLite stores whose pages are counted
    saves: int  # typical saves of each sampled session
    cpu_sessions: int  # sessions of each kind saved for Redis CPU per save
    cpu_rounds: int  # saves of each of them measured
    requests: int  # requests through the example shop, per setup


FULL = Profile(samples=20, bulk=1000, saves=40, cpu_sessions=40, cpu_rounds=10, requests=4500)
QUICK = Profile(samples=2, bulk=20, saves=3, cpu_sessions=3, cpu_rounds=2, requests=60)


@dataclass
class Row:
    """What one kind of session takes in each store (medians over the samples, bytes)."""

    kind: str
    keys: int
    json: int
    redis: dict[str, float] = field(default_factory=dict)  # engine -> MEMORY USAGE
    encodings: dict[str, str] = field(default_factory=dict)  # engine -> OBJECT ENCODING
    record: float = 0  # memopt-lmdb's record as created
    steady: float = 0  # its mean size over typical saves
    previous: float = 0  # the previous release's record
    lmdb_pages: float = 0  # LMDB pages (sessions and expiry index) per session
    db_row: float = 0  # len(SessionStore().encode()) of Django's db engine
    sqlite_pages: float = 0  # SQLite pages (table and indexes) per session
    file: float = 0  # Django's file engine: the file's size
    file_disk: float = 0  # and the blocks it takes on disk


@dataclass
class Encoding:
    session: str
    largest: int  # the longest sealed field of the session (bytes)
    cells: dict[int, tuple[str, int]] = field(default_factory=dict)  # setting -> (encoding, B)
    cache_usage: int = 0  # the same session in Django's cache engine (a string)


@dataclass
class Cpu:
    """Redis CPU of the saves of one engine on one kind of session."""

    saves: int
    usec: dict[str, float]  # command -> µs in all
    calls: dict[str, int]  # command -> calls in all
    sent: tuple[str, ...]  # the commands the client sends (the others ran in a script)

    @property
    def per_save(self) -> float:
        return sum(self.usec.get(name, 0.0) for name in self.sent) / self.saves


@dataclass
class Result:
    profile: Profile
    rows: list[Row]
    compress: dict[str, dict[str, tuple[float, float]]]  # setting -> kind -> (Redis, record)
    compress_default: int | None
    encodings: list[Encoding]
    setting: str  # the name this server gives hash-max-listpack-value
    entries: int  # its hash-max-*-entries
    hash_sealed: int  # bytes of a sealed 64-character _auth_user_hash
    hash_sealed_previous: int  # and as the previous release sealed it
    cpu: dict[str, dict[str, Cpu]]  # kind -> engine -> its saves
    redis: dict[str, str]  # redis-server version and allocator
    skipped: str | None  # why django-redis-sessions was left out
    workers: worker_memory.Result

    def row(self, kind: str) -> Row:
        return next(row for row in self.rows if row.kind == kind)


def session(payloads: workload.Payloads, kind: str, j: int) -> dict[str, Any]:
    """Session ``j`` of ``kind``."""
    if kind in ISSUE:
        return workload.memory_session(kind, j)
    return workload.session_payload(payloads, kind.removeprefix("workload "), j)


def _saved(engine: Engine, payload: dict[str, Any]) -> str:
    """A new session of ``payload`` in ``engine``: its session key."""
    made = engine.store(None)
    made.update(payload)
    made.save()
    return str(made.session_key)


def _save(engine: Engine, key: str, value: int) -> None:
    """The typical request: two keys read, the counter set to ``value``, saved."""
    workload.typical(engine.store, key, value)


def _usage(admin: Any, engine: Engine, session_key: str) -> tuple[int, str]:
    """``MEMORY USAGE`` and ``OBJECT ENCODING`` of the session's key."""
    name = registry.redis_key(engine, session_key)
    return int(admin.memory_usage(name, samples=0)), text(admin.object("encoding", name))


def _deadline_ms() -> int:
    """Two weeks from now (Django's default session age), in epoch milliseconds."""
    return int((time.time() + 14 * 24 * 3600) * 1000)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- the previous release's forms ------------------------------------------------------------


def _sealed_format_1(session_key: str, name: str, value: Any) -> bytes:
    """``value`` as the previous release sealed it (format 1: the byte 1, a 16-byte keyed
    BLAKE2b tag, the msgpack payload; no compression, hex strings as strings). The test
    suite keeps the same function (``tests/test_codec.py``) to write such fields."""
    import msgpack
    from django.conf import settings

    from django_memopt.codec import FieldCodec

    payload = msgpack.packb(value) if isinstance(value, str) else FieldCodec.pack(name, value)
    key = hmac.digest(settings.SECRET_KEY.encode(), b"django_memopt.codec.field-tag.v1", "sha256")
    tag = hashlib.blake2b(key=key, digest_size=16)
    encoded = name.encode("utf-8", "surrogatepass")
    tag.update(b"%d:%s" % (len(session_key), session_key.encode()))
    tag.update(b"%d:%s%s" % (len(encoded), encoded, payload))
    return b"\x01" + tag.digest() + payload


def _previous(
    payload: dict[str, Any], deadline_ms: int, rng: random.Random
) -> tuple[str, dict[str, bytes], bytes]:
    """A session key, the session's format-1 fields, and its format-1 LMDB record (the
    header, then one layer: a msgpack array of one map)."""
    import msgpack

    from django_memopt import records

    key = workload.random_session_key(rng)
    sealed = {name: _sealed_format_1(key, name, value) for name, value in payload.items()}
    record = records.HEADER.pack(1, deadline_ms) + msgpack.packb([sealed])
    return key, sealed, record


def _check_reads(engine: Engine, key: str, payload: dict[str, Any]) -> None:
    """Refuse a stored form django-memopt does not read back as ``payload``."""
    from django_memopt.backends.base import field_codec

    stored = engine.store._read(key)
    codec = field_codec()
    got = {} if stored is None else {n: codec.decode(key, n, v) for n, v in stored.fields.items()}
    if got != payload:
        raise SystemExit(f"{engine.name}: the previous release's session {key} does not read back")


# -- Redis -----------------------------------------------------------------------------------


def _redis_row(
    row: Row,
    build: Callable[[int], dict[str, Any]],
    engines: list[Engine],
    admin: Any,
    profile: Profile,
    deadline_ms: int,
) -> None:
    from django_memopt.backends.redis import MARKER

    usage: dict[str, list[float]] = {}
    rng = random.Random(f"{workload.SEED}-{row.kind}")
    for engine in engines:
        for j in range(profile.samples):
            key = _saved(engine, build(j))
            found, encoding = _usage(admin, engine, key)
            usage.setdefault(engine.name, []).append(found)
            row.encodings.setdefault(engine.name, encoding)
            if engine.name != MEMOPT_REDIS:
                continue
            for n in range(profile.saves):  # the first one changes the counter's length
                _save(engine, key, 1_000_000 + n)
            found, encoding = _usage(admin, engine, key)
            usage.setdefault(MEMOPT_REDIS + SAVED, []).append(found)
            row.encodings.setdefault(MEMOPT_REDIS + SAVED, encoding)
            # The previous release: a hash of format-1 fields and the deadline.
            old, sealed, _record = _previous(build(j), deadline_ms, rng)
            name = registry.redis_key(engine, old)
            admin.hset(name, mapping={**sealed, MARKER: str(deadline_ms)})
            admin.pexpireat(name, deadline_ms)
            if j == 0:
                _check_reads(engine, old, build(j))
            found, encoding = _usage(admin, engine, old)
            usage.setdefault(PREVIOUS, []).append(found)
            row.encodings.setdefault(PREVIOUS, encoding)
    row.redis = {name: _median(values) for name, values in usage.items()}


def _encodings(
    engines: list[Engine], payloads: workload.Payloads, admin: Any, setting: str
) -> list[Encoding]:
    """Each session written afresh under each value of ``setting`` (decided at write time),
    and saved once."""
    memopt, cache = (registry.named(engines, n) for n in (MEMOPT_REDIS, REDIS_CACHE))
    sessions = dict(ENCODING_SESSIONS)
    for size in SIZES:
        sessions[f"workload {size} session"] = workload.session_payload(payloads, size, 0)
    found = {label: Encoding(label, 0) for label in sessions}
    original = text(admin.config_get(setting)[setting])
    try:
        for value in SETTING_VALUES:
            admin.config_set(setting, value)
            for label, payload in sessions.items():
                key = _saved(memopt, payload)
                _save(memopt, key, 1_000_000)  # a large session becomes a hash
                found[label].largest = max(map(len, registry.sealed_fields(memopt, key).values()))
                usage, encoding = _usage(admin, memopt, key)
                found[label].cells[value] = (encoding, usage)
                admin.delete(registry.redis_key(memopt, key))
                if not found[label].cache_usage:
                    other = _saved(cache, payload)
                    found[label].cache_usage = _usage(admin, cache, other)[0]
                    admin.delete(registry.redis_key(cache, other))
    finally:
        admin.config_set(setting, original)
    return list(found.values())


def _setting(admin: Any) -> str:
    for name in ("hash-max-listpack-value", "hash-max-ziplist-value"):
        if admin.config_get(name):
            return name
    raise SystemExit("redis-server knows neither hash-max-listpack-value nor its older name")


def _cpu(
    engine: Engine, build: Callable[[int], dict[str, Any]], profile: Profile, admin: Any
) -> Cpu:
    """Redis's own time (``INFO commandstats``) for typical saves: sessions loaded and
    changed first, the statistics reset, then only their saves sent."""
    keys = [_saved(engine, build(j)) for j in range(profile.cpu_sessions)]
    for key in keys:  # the first save, which makes a large string session a hash
        _save(engine, key, 1_000_000)
    usec: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for round_ in range(profile.cpu_rounds):
        loaded = []
        for key in keys:
            changed = engine.store(key)
            changed.get(READ_KEYS[0])
            changed.get(READ_KEYS[1])
            changed[WRITE_KEY] = 2_000_000 + round_
            loaded.append(changed)
        admin.config_resetstat()
        for changed in loaded:
            workload.respond(changed)
        for name, stat in admin.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command not in ("config|resetstat", "info"):
                usec[command] += float(stat["usec"])
                calls[command] += int(stat["calls"])
    saves = len(keys) * profile.cpu_rounds
    if sum(calls[name] for name in SENT[engine.name]) < saves:
        raise SystemExit(f"{engine.name}: fewer commands than saves reached Redis")
    return Cpu(saves, dict(usec), dict(calls), SENT[engine.name])


# -- LMDB, SQLite, files ---------------------------------------------------------------------


def _lmdb_pages(engine: Engine) -> int:
    """Bytes of the pages of the sessions and the expiry index."""
    from django_memopt.backends.lmdb import environment

    opened = environment()
    with opened.env.begin() as txn:
        stats = [txn.stat(opened.sessions), txn.stat(opened.expiry)]
    pages = sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
    return int(pages * stats[0]["psize"])


def _record(key: str) -> int:
    from django_memopt.backends.lmdb import environment

    opened = environment()
    with opened.env.begin() as txn:
        return len(txn.get(key.encode(), db=opened.sessions))


def _lmdb_row(
    row: Row, build: Callable[[int], dict[str, Any]], lmdb: Engine, profile: Profile
) -> None:
    lmdb.activate()
    keys = [_saved(lmdb, build(j)) for j in range(profile.bulk)]
    row.lmdb_pages = _lmdb_pages(lmdb) / profile.bulk
    row.record = _median([_record(key) for key in keys[: profile.samples]])
    steady = []
    for key in keys[: profile.samples]:
        sizes = []
        for n in range(profile.saves):
            _save(lmdb, key, 1_000_000 + n)
            sizes.append(_record(key))
        steady.append(statistics.mean(sizes))
    row.steady = _median(steady)
    rng = random.Random(f"{workload.SEED}-lmdb-{row.kind}")
    deadline_ms = _deadline_ms()
    previous = [_previous(build(j), deadline_ms, rng) for j in range(profile.samples)]
    row.previous = _median([len(record) for _key, _sealed, record in previous])
    from django_memopt.backends.lmdb import environment

    opened = environment()
    old, _sealed, record = previous[0]
    with opened.env.begin(write=True) as txn:
        txn.put(old.encode(), record, db=opened.sessions)
    _check_reads(lmdb, old, build(0))


def _sqlite_pages() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA page_count")
        count = cursor.fetchone()[0]
        cursor.execute("PRAGMA page_size")
        return int(count * cursor.fetchone()[0])


def _django_rows(
    row: Row, build: Callable[[int], dict[str, Any]], db: Engine, file: Engine, profile: Profile
) -> None:
    from django.contrib.sessions.models import Session
    from django.db import connection, transaction

    row.db_row = _median([len(db.store().encode(build(j))) for j in range(profile.samples)])
    Session.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM")
    empty = _sqlite_pages()
    with transaction.atomic():
        for j in range(profile.bulk):
            _saved(db, build(j))
    row.sqlite_pages = (_sqlite_pages() - empty) / profile.bulk
    sizes, disk = [], []
    for j in range(profile.samples):
        made = file.store(None)
        made.update(build(j))
        made.save()
        status = os.stat(made._key_to_file())
        sizes.append(status.st_size)
        disk.append(status.st_blocks * 512)
    row.file, row.file_disk = _median(sizes), _median(disk)


def _compress(
    payloads: workload.Payloads,
    memopt: Engine,
    lmdb: Engine,
    admin: Any,
    value: int | None,
) -> dict[str, tuple[float, float]]:
    """MEMORY USAGE after a save and the LMDB record of one session of each kind, with
    ``MEMOPT_COMPRESS_FROM = value``."""
    from django.test import override_settings

    found = {}
    with override_settings(MEMOPT_COMPRESS_FROM=value):
        lmdb.activate()
        for kind in ISSUE:
            payload = session(payloads, kind, 0)
            key = _saved(memopt, payload)
            _save(memopt, key, 1_000_000)
            record = _saved(lmdb, payload)
            found[kind] = (float(_usage(admin, memopt, key)[0]), float(_record(record)))
    return found


# -- the scenario ----------------------------------------------------------------------------


def _lmdb_engine(path: str) -> Engine:
    from django_memopt.backends import lmdb

    return Engine(MEMOPT_LMDB, lmdb.__name__, lmdb=(path, "process"), store=lmdb.SessionStore)


def measure(quick: bool) -> Result:
    from django.core.management import call_command
    from django.db import connections

    from django_memopt.backends.base import field_codec
    from django_memopt.backends.lmdb import close_environments
    from django_memopt.conf import conf

    profile = QUICK if quick else FULL
    base = tempfile.mkdtemp(prefix="memopt-bench-memory-")
    try:
        with servers.redis_server() as server:
            config = registry.make_config(base, server.url, server.port)
            registry.configure(config)
            call_command("migrate", run_syncdb=True, verbosity=0)
            skipped = registry.redis_sessions_status()
            names = [MEMOPT_REDIS, REDIS_CACHE, REDIS_SESSIONS, DB, FILE]
            engines = registry.make_engines(config, names)
            on_redis = [engine for engine in engines if engine.on_redis]
            admin = servers.client(server.url)
            payloads = workload.make_payloads()
            deadline_ms = _deadline_ms()
            rows = []
            for index, kind in enumerate(KINDS):
                log(f"memory: {kind}...")

                def build(j: int, kind: str = kind) -> dict[str, Any]:
                    return session(payloads, kind, j)

                row = Row(kind, len(build(0)), workload.json_size(build(0)))
                _redis_row(row, build, on_redis, admin, profile, deadline_ms)
                _lmdb_row(row, build, _lmdb_engine(f"{config['lmdb']}-{index}"), profile)
                db, file = (registry.named(engines, n) for n in (DB, FILE))
                _django_rows(row, build, db, file, profile)
                rows.append(row)
            memopt = registry.named(engines, MEMOPT_REDIS)
            default = conf.MEMOPT_COMPRESS_FROM
            compress = {
                str(value): _compress(
                    payloads, memopt, _lmdb_engine(f"{config['lmdb']}-c{value}"), admin, value
                )
                for value in (default, *(v for v in COMPRESS_VALUES if v != default))
            }
            setting = _setting(admin)
            entries = setting.replace("-value", "-entries")
            log("memory: Redis CPU per save...")
            cpu = {
                kind: {
                    name: _cpu(
                        registry.named(engines, name),
                        lambda j, kind=kind: session(payloads, kind, j),
                        profile,
                        admin,
                    )
                    for name in SENT
                }
                for kind in ISSUE
            }
            result_parts = {
                "compress": compress,
                "compress_default": default,
                "encodings": _encodings(engines, payloads, admin, setting),
                "setting": setting,
                "entries": int(text(admin.config_get(entries)[entries])),
                "hash_sealed": len(field_codec().encode("k" * 32, "_auth_user_hash", "0" * 64)),
                "hash_sealed_previous": len(
                    _sealed_format_1("k" * 32, "_auth_user_hash", "0" * 64)
                ),
                "cpu": cpu,
                "redis": servers.versions(admin),
                "skipped": skipped,
            }
        connections.close_all()
        close_environments()
        log("memory: the example shop's workers...")
        workers = worker_memory.measure(os.path.join(base, "shop"), profile.requests)
        return Result(profile, rows, workers=workers, **result_parts)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the goals -------------------------------------------------------------------------------


@dataclass
class Goal:
    store: str  # "Redis" or "LMDB"
    kind: str
    ours: float  # the larger of django-memopt's figures as created and after saves
    base: float
    base_label: str
    limit: float  # at most this share of ``base``

    @property
    def ratio(self) -> float:
        return self.ours / self.base

    @property
    def ok(self) -> bool:
        return self.ratio <= self.limit

    def text(self) -> str:
        limit = "at most" + (f" {self.limit:g}x" if self.limit != 1 else "")
        return (
            f"{self.store}, {self.kind}: {self.ours:,.0f} B against {self.base:,.0f} B for "
            f"{self.base_label} ({self.ratio:.2f}x; goal {limit} {self.base_label}): "
            f"{met(self.ok)}"
        )


def goals_in_short(checked: list[Goal]) -> str:
    """The goals, grouped by what they compare with: "Redis against ...: kind ratio, ..."."""
    groups: dict[tuple[str, str], list[str]] = {}
    for goal in checked:
        limit = f", at most {goal.limit:g}x" if goal.limit != 1 else ""
        groups.setdefault((goal.store, goal.base_label), []).append(
            f"{goal.kind} {goal.ratio:.2f}x{limit}" + ("" if goal.ok else " (**not met**)")
        )
    return "; ".join(
        f"{store} against {label}: {', '.join(parts)}" for (store, label), parts in groups.items()
    )


def goals(found: Result) -> list[Goal]:
    """The memory goals of the design, each with this run's figures."""
    found_goals = []
    for kinds, limit in ((SMALL_GOALS, 1.0), (LARGE_GOALS, LARGE_SHARE)):
        for kind in kinds:
            row = found.row(kind)
            ours = max(row.redis[MEMOPT_REDIS], row.redis[MEMOPT_REDIS + SAVED])
            found_goals.append(
                Goal("Redis", kind, ours, row.redis[REDIS_CACHE], "Django's `cache`", limit)
            )
    for kinds, limit in ((SMALL_GOALS, 1.0), (LARGE_GOALS, LARGE_SHARE)):
        for kind in kinds:
            row = found.row(kind)
            base, label = (
                (row.db_row, "Django's `db` row")
                if limit == 1.0
                else (row.previous, "the previous release's record")
            )
            found_goals.append(Goal("LMDB", kind, max(row.record, row.steady), base, label, limit))
    return found_goals


# -- the memory page -------------------------------------------------------------------------


def _b(value: float) -> str:
    return f"{value:,.0f}"


def _kib(value: float) -> str:
    return f"{round(value / 1024) + 0:,}"  # + 0: no "-0"


def _mib(value: float) -> str:
    return f"{value / 1024**2:,.1f}"


def _sessions(found: Result) -> str:
    rows = []
    for kind in KINDS:
        row = found.row(kind)
        if kind in workload.MEMORY_SESSIONS:
            what = workload.MEMORY_SESSIONS[kind]
        else:
            what = "the benchmarks' workload session of that size (the other pages' sessions)"
        rows.append([kind, what, str(row.keys), _b(row.json)])
    return table(["session", "what it holds", "keys", "JSON (B)"], rows, "llrr")


def _redis_table(found: Result, kinds: tuple[str, ...]) -> str:
    names = [MEMOPT_REDIS, MEMOPT_REDIS + SAVED, PREVIOUS, REDIS_CACHE, REDIS_SESSIONS]
    names = [name for name in names if name in found.rows[0].redis]
    header = ["session", "`memopt-redis`, created", f"after {found.profile.saves} saves"]
    header += [PREVIOUS, "Django's `cache`"]
    header += ["`django-redis-sessions`"] * (REDIS_SESSIONS in names)
    header += ["memopt / `cache`"]
    rows = []
    for kind in kinds:
        row = found.row(kind)
        cells = [f"{_b(row.redis[n])} ({row.encodings[n]})" for n in names]
        ours = max(row.redis[MEMOPT_REDIS], row.redis[MEMOPT_REDIS + SAVED])
        rows.append([kind, *cells, f"{ours / row.redis[REDIS_CACHE]:.2f}x"])
    return table(header, rows)


def _disk_table(found: Result) -> str:
    header = ["session", "record, created", f"over {found.profile.saves} saves"]
    header += [f"{PREVIOUS}'s record", "Django's `db` row", "record / row", "record / previous"]
    header += ["LMDB pages", "SQLite pages", "`file` (on disk)"]
    rows = []
    for kind in KINDS:
        row = found.row(kind)
        ours = max(row.record, row.steady)
        rows.append(
            [
                kind,
                _b(row.record),
                _b(row.steady),
                _b(row.previous),
                _b(row.db_row),
                f"{ours / row.db_row:.2f}x",
                f"{ours / row.previous:.2f}x",
                _b(row.lmdb_pages),
                _b(row.sqlite_pages),
                f"{_b(row.file)} ({_b(row.file_disk)})",
            ]
        )
    return table(header, rows)


def _compress_table(found: Result) -> str:
    values = list(found.compress)
    label = {str(found.compress_default): f"{found.compress_default} (default)"}
    header = ["session"]
    header += [f"Redis at {label.get(v, v)}" for v in values]
    header += [f"LMDB record at {label.get(v, v)}" for v in values]
    rows = [
        [kind]
        + [_b(found.compress[v][kind][0]) for v in values]
        + [_b(found.compress[v][kind][1]) for v in values]
        for kind in ISSUE
    ]
    return table(header, rows)


def _cpu_table(found: Result) -> str:
    header = ["session", "`memopt-redis`: µs per save", "its commands (µs per call)"]
    header += ["Django's `cache`: µs per save", "its commands (µs per call)"]
    rows = []
    for kind, engines in found.cpu.items():
        cells = [kind]
        for name in SENT:
            cpu = engines[name]
            parts = []
            for command in sorted(cpu.calls, key=lambda c: (c not in cpu.sent, c)):
                per_call = cpu.usec[command] / cpu.calls[command]
                calls = cpu.calls[command] / cpu.saves
                inside = " in the script" if command not in cpu.sent else ""
                times = f" x{calls:.3g}" if calls != 1 else ""
                parts.append(f"`{command.upper()}`{times}{inside} {per_call:.1f}")
            cells += [f"{cpu.per_save:.1f}", ", ".join(parts)]
        rows.append(cells)
    return table(header, rows, "lrlrl")


def _workers_table(found: worker_memory.Result) -> str:
    header = ["setup", "worker USS before (MiB)", "worker USS after", "worker PSS after"]
    header += ["full collections per worker", "master PSS", "the whole server's PSS"]
    rows = []

    def uss(run: worker_memory.Run, when: str) -> str:
        lows, highs = run.spread(when, "USS")
        return f"{_mib(run.mean(when, 'USS'))} ({_mib(lows)}-{_mib(highs)})"

    for run in found.runs:
        collections = "/".join(str(w.figures["full_collections"]) for w in run.workers)
        rows.append(
            [
                run.name,
                uss(run, "before"),
                uss(run, "after"),
                _mib(run.mean("after", "Pss")),
                collections,
                _mib(run.master["Pss"]),
                _mib(run.total_pss),
            ]
        )
    return table(header, rows)


def _app_table(app: worker_memory.AppMemory) -> str:
    ordered = sorted(app.by_module.items(), key=lambda item: -(item[1][0] + item[1][1]))
    shown = [item for item in ordered if item[1][0] + item[1][1] >= 4096]
    rest = [item for item in ordered if item not in shown]
    rows = [[f"`{module}`", _kib(at_fork), _kib(added)] for module, (at_fork, added) in shown]
    if rest:
        rows.append(
            [
                f"{len(rest)} other modules",
                _kib(sum(v[0] for _, v in rest)),
                _kib(sum(v[1] for _, v in rest)),
            ]
        )
    total = [sum(v[i] for v in app.by_module.values()) for i in (0, 1)]
    rows.append(["**all of `django_memopt`**", f"**{_kib(total[0])}**", f"**{_kib(total[1])}**"])
    rows.append(["everything Python allocated", _kib(app.traced[0]), _kib(app.traced[1])])
    header = ["allocated by", "in the master, before the fork (KiB)", "added in a worker (KiB)"]
    return table(header, rows)


def memory_body(found: Result) -> list[str]:
    workers = found.workers
    frozen, thawed, _django = workers.runs
    return [
        render(
            "memory-page",
            sessions=_sessions(found),
            samples=found.profile.samples,
            saves=found.profile.saves,
            bulk=found.profile.bulk,
            redis_version=found.redis["redis-server"],
            allocator=found.redis["allocator"],
            redis_table=_redis_table(found, KINDS),
            disk_table=_disk_table(found),
            goals="\n".join(f"- {goal.text()}" for goal in goals(found)) + "\n",
            compress_default=found.compress_default,
            compress_table=_compress_table(found),
            cpu_sessions=found.profile.cpu_sessions,
            cpu_saves=found.profile.cpu_sessions * found.profile.cpu_rounds,
            cpu_table=_cpu_table(found),
            workers=worker_memory.WORKERS,
            clients=worker_memory.CLIENTS,
            requests=workers.requests,
            workers_table=_workers_table(workers),
            freeze=_freeze_note(frozen, thawed),
            app_table=_app_table(workers.app) if workers.app is not None else "",
            setting=found.setting,
            hash_sealed=found.hash_sealed,
            hash_sealed_previous=found.hash_sealed_previous,
            skipped=""
            if found.skipped is None
            else f"`{REDIS_SESSIONS}` could not be measured: {found.skipped}.\n",
        )
    ]


def _freeze_note(frozen: worker_memory.Run, thawed: worker_memory.Run) -> str:
    """What this run says of the freeze: the workers' USS with and without it."""
    gap = thawed.mean("after", "USS") - frozen.mean("after", "USS")
    collected = [w.after["USS"] for w in thawed.workers if w.figures["full_collections"]]
    spared = [w.after["USS"] for w in thawed.workers if not w.figures["full_collections"]]
    if not collected:
        return (
            "No worker ran a full collection in this run, so the freeze could make no "
            f"difference: the workers' USS differed by {gap / 1024**2:+.1f} MiB on average."
        )
    text = (
        f"In this run the workers took {gap / 1024**2:.1f} MiB less USS with the freeze, on "
        "average. Without it, "
    )
    if spared:
        return text + (
            f"the workers that ran a full collection took {_mib(statistics.mean(collected))} MiB "
            f"of USS, those that did not {_mib(statistics.mean(spared))} MiB."
        )
    return text + "every worker ran a full collection."


def machine_lines(found: Result) -> list[str]:
    """What the "Machine and run" section says of this scenario's Redis."""
    return [
        f"- redis-server {found.redis['redis-server']} (allocator `{found.redis['allocator']}`) "
        "at its default settings, on the same machine"
    ]


# -- the Redis page's memory section ---------------------------------------------------------


def redis_section(found: Result) -> str:
    default = SETTING_VALUES[0]
    header = ["session", "largest sealed field (B)"]
    header += [f"at {v}" + " (default)" * (v == default) for v in SETTING_VALUES]
    encodings = [
        [enc.session, f"{enc.largest:,}"]
        + [f"{enc.cells[v][1]:,} B ({enc.cells[v][0]})" for v in SETTING_VALUES]
        + [f"{enc.cache_usage:,}"]
        for enc in found.encodings
    ]
    return render(
        "redis-memory",
        allocator=found.redis["allocator"],
        memory=_redis_table(found, KINDS),
        samples=found.profile.samples,
        saves=found.profile.saves,
        setting=found.setting,
        compact="listpack" if "listpack" in found.setting else "ziplist",
        default=default,
        entries=found.entries,
        hash_sealed=found.hash_sealed,
        encodings=table([*header, "same session in `cache` (B)"], encodings),
    )


def one_run_section(found: Result) -> str:
    """The one-run page's summary: the memory comparison's sessions on both stores."""
    header = ["session", "`memopt-redis`", "Django's `cache`", "`memopt-lmdb` record"]
    header += ["Django's `db` row", "previous release's record"]
    rows = []
    for kind in ISSUE:
        row = found.row(kind)
        ours = max(row.redis[MEMOPT_REDIS], row.redis[MEMOPT_REDIS + SAVED])
        record = max(row.record, row.steady)
        rows.append(
            [
                kind,
                _b(ours),
                _b(row.redis[REDIS_CACHE]),
                _b(record),
                _b(row.db_row),
                _b(row.previous),
            ]
        )
    return render(
        "memory-one-run",
        redis_version=found.redis["redis-server"],
        saves=found.profile.saves,
        table=table(header, rows),
        goals="\n".join(f"- {goal.text()}" for goal in goals(found)) + "\n",
    )
