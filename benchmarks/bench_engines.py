"""Benchmark django-memopt's LMDB session engine against Django's own session engines.

Run from the repository root::

    python benchmarks/bench_engines.py --quick
    python benchmarks/bench_engines.py --output docs/benchmarks-lmdb.md

The script configures Django itself (no project needed), puts every store in a fresh
temporary directory, and removes it at the end. It measures, side by side in one run:

* ``memopt-lmdb`` (``django_memopt.backends.lmdb``, durability "process") and
  ``memopt-lmdb-system`` (durability "system": LMDB flushes every commit to disk);
* Django's ``db`` engine on a SQLite file, ``file`` engine, and ``cache`` engine on
  ``LocMemCache``.

Each timed operation is exactly the session calls one request makes through Django's
``SessionMiddleware``: ``SessionStore(cookie)`` in ``process_request``, the view's reads and
writes, then ``accessed``, ``modified``, ``is_empty()`` and, when saving,
``get_expire_at_browser_close()``, ``get_expiry_age()``, ``save()`` and ``session_key`` in
``process_response``. Engines are interleaved round-robin (in a shuffled order each round)
so that noise on a shared machine hits all of them alike; medians are reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import importlib
import json
import multiprocessing
import os
import pickle
import platform
import queue
import random
import shlex
import shutil
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SIZES = ("small", "medium", "large")
# keys, target size of the session as Django's JSON serializer writes it (bytes)
SIZE_SPECS = {"small": (5, 512), "medium": (20, 5 * 1024), "large": (50, 100 * 1024)}
OPERATIONS = ("read-only", "typical", "create", "miss")
OPERATION_TEXT = {
    "read-only": "load an existing session, read 2 keys, no save",
    "typical": "load an existing session, read 2 keys, change 1 small key, save",
    "create": "new session (no cookie), set every key of the payload, save",
    "miss": "cookie with an unknown well-formed session ID, read 1 key (gets nothing)",
}
COLD = "typical, cold"
READ_KEYS = ("_auth_user_id", "_auth_user_hash")
WRITE_KEY = "visits"
PAYLOAD_VARIANTS = 16
SEED = 20240601
MAX_ATTEMPTS = 50  # per writer iteration, retrying "database is locked"

MEMOPT = "memopt-lmdb"
MEMOPT_SYSTEM = "memopt-lmdb-system"
DB = "django db (SQLite file)"
FILE = "django file"
CACHE = "django cache (locmem)"


@dataclass(frozen=True)
class Profile:
    sessions: int  # pre-populated sessions per size and engine
    reps: dict[str, int]  # timed rounds per operation (each round runs every engine)
    burst: int  # requests each engine serves in a row per round (the first not recorded)
    warmup: int
    iterations: int  # per concurrent writer
    think_ms: float  # simulated view work between loading and saving, concurrent test
    cold_rounds: int  # rounds of the cold typical measurement (one request per engine)


FULL = Profile(
    sessions=1000,
    reps={"read-only": 300, "typical": 250, "create": 100, "miss": 300},
    burst=11,
    warmup=5,
    iterations=50,
    think_ms=1.0,
    cold_rounds=1500,
)
QUICK = Profile(
    sessions=50,
    reps={"read-only": 10, "typical": 10, "create": 5, "miss": 10},
    burst=5,
    warmup=2,
    iterations=10,
    think_ms=1.0,
    cold_rounds=30,
)


# -- Django ------------------------------------------------------------------------------


def make_config(base: str) -> dict[str, str]:
    return {
        "lmdb": os.path.join(base, "lmdb-process"),
        "lmdb-system": os.path.join(base, "lmdb-system"),
        "sqlite": os.path.join(base, "sessions.sqlite3"),
        "files": os.path.join(base, "session-files"),
    }


def django_settings(config: dict[str, str]) -> dict[str, Any]:
    """The settings the benchmark runs with."""
    return {
        "DEBUG": False,
        "SECRET_KEY": "benchmark-secret-key-" + "k" * 40,
        "INSTALLED_APPS": ["django.contrib.sessions", "django_memopt"],
        "DATABASES": {
            # Django's defaults for SQLite: rollback journal, synchronous=FULL, 5 s timeout.
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": config["sqlite"]}
        },
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "benchmark-sessions",
                # The default (300) would cull the pre-populated sessions.
                "OPTIONS": {"MAX_ENTRIES": 10_000_000},
            }
        },
        "SESSION_ENGINE": "django_memopt.backends.lmdb",
        "SESSION_FILE_PATH": config["files"],
        "MEMOPT_LMDB_PATH": config["lmdb"],
        "MEMOPT_LMDB_DURABILITY": "process",
        # No counters flushed at exit: that would reopen the store after it is removed.
        "MEMOPT_STATS_INTERVAL": None,
        "USE_TZ": True,
        "LOGGING_CONFIG": None,
    }


def configure_django(config: dict[str, str], overrides: dict[str, Any] | None = None) -> None:
    """Configure and set up Django for the benchmark (in this process and in children).

    ``overrides`` replaces or adds settings (``bench_all.py`` adds its Redis cache).
    """
    import django
    from django.conf import settings

    if settings.configured:
        return
    os.makedirs(config["files"], exist_ok=True)
    settings.configure(**{**django_settings(config), **(overrides or {})})
    django.setup()


@dataclass
class Engine:
    name: str
    module: str
    lmdb: tuple[str, str] | None = None  # (MEMOPT_LMDB_PATH, MEMOPT_LMDB_DURABILITY)
    shared_across_processes: bool = True
    # The session key is the signed session itself (signed_cookies): it changes on a save.
    cookie_store: bool = False
    keys: dict[str, list[str]] = field(default_factory=dict)
    store: Any = None

    def load(self) -> None:
        self.store = importlib.import_module(self.module).SessionStore

    def activate(self) -> None:
        """Point django-memopt at this engine's LMDB environment (no-op for Django's)."""
        if self.lmdb is None:
            return
        from django.conf import settings

        from django_memopt.backends import lmdb as backend

        path, durability = self.lmdb
        if getattr(backend, "_current", None) is not None and backend._current.path == path:
            return
        # A plain assignment: no setting_changed signal, so every environment stays open
        # (they are cached per path; durability is fixed when an environment is opened).
        settings.MEMOPT_LMDB_PATH, settings.MEMOPT_LMDB_DURABILITY = path, durability
        # django-memopt caches what it read of the settings, and the backend its current
        # environment, so that the hot path reads no setting: make both look again (the
        # environments stay open, cached per path).
        from django_memopt import conf as memopt_conf

        memopt_conf._cache.clear()
        if hasattr(backend, "_current"):
            backend._current = None
        if backend.environment().path != path:
            raise SystemExit(f"{self.name}: cannot switch the LMDB environment to this engine")


def make_engines(config: dict[str, str]) -> list[Engine]:
    engines = [
        Engine(MEMOPT, "django_memopt.backends.lmdb", (config["lmdb"], "process")),
        Engine(MEMOPT_SYSTEM, "django_memopt.backends.lmdb", (config["lmdb-system"], "system")),
        Engine(DB, "django.contrib.sessions.backends.db"),
        Engine(FILE, "django.contrib.sessions.backends.file"),
        Engine(CACHE, "django.contrib.sessions.backends.cache", shared_across_processes=False),
    ]
    for engine in engines:
        engine.load()
    return engines


def engine_named(engines: list[Engine], name: str) -> Engine:
    return next(engine for engine in engines if engine.name == name)


# -- workloads ---------------------------------------------------------------------------

_WORD_TEXT = (
    "account address basket billing blue cart catalog checkout coffee colour country "
    "coupon credit delivery discount dress express filter garden gift green invoice jacket "
    "kitchen lamp large leather medium order package payment phone price product profile "
    "promo quantity receipt refund return review search shipping shoes size small sofa "
    "standard street summer table total tracking voucher wallet warehouse winter wishlist"
)
_WORDS = tuple(_WORD_TEXT.split())

# (name, kind) of the keys after the login trio and the counter, in order.
_EXTRA_KEYS = (
    ("prefs", "dict"),
    ("cart", "records"),
    ("recently_viewed", "ints"),
    ("last_search", "text"),
    ("checkout_step", "int"),
    ("csrf_hint", "token"),
    ("messages", "texts"),
    ("newsletter_seen", "flag"),
    ("wizard_data", "dict"),
    ("form_draft", "text"),
    ("compare", "ints"),
    ("coupon", "token"),
    ("shipping", "dict"),
    ("wishlist", "records"),
    ("banner_dismissed", "flag"),
    ("ab_bucket", "int"),
    ("notes", "text"),
)
_SCALED_KINDS = {"dict": 1.0, "records": 2.0, "ints": 0.5, "text": 1.5, "texts": 1.0}


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    total = 0
    while total < length:
        word = rng.choice(_WORDS)
        words.append(word)
        total += len(word) + 1
    return " ".join(words)[: max(length, 1)]


def _value(rng: random.Random, kind: str, chars: int) -> Any:
    """A JSON-serializable value of ``kind`` taking about ``chars`` characters as JSON."""
    if kind == "int":
        return rng.randrange(1, 10_000)
    if kind == "flag":
        return rng.random() < 0.5
    if kind == "token":
        return f"{rng.getrandbits(128):032x}"
    if kind == "text":
        return _text(rng, chars)
    if kind == "texts":
        count = max(1, chars // 60)
        return [_text(rng, 50) for _ in range(count)]
    if kind == "ints":
        return [rng.randrange(1, 10**6) for _ in range(max(1, chars // 8))]
    if kind == "dict":
        return {
            "lang": rng.choice(("en", "de", "fr", "nl")),
            "currency": rng.choice(("EUR", "USD", "GBP")),
            "page_size": rng.choice((20, 50, 100)),
            "dark_mode": rng.random() < 0.5,
            "comment": _text(rng, max(1, chars - 90)),
        }
    if kind == "records":
        count = max(1, chars // 110)
        return [
            {
                "id": rng.randrange(1, 10**6),
                "title": _text(rng, 40),
                "qty": rng.randrange(1, 5),
                "price": f"{rng.randrange(100, 99_999) / 100:.2f}",
                "tags": [rng.choice(_WORDS) for _ in range(2)],
            }
            for _ in range(count)
        ]
    raise ValueError(kind)


def _json_size(payload: dict[str, Any]) -> int:
    # As django.contrib.sessions.serializers.JSONSerializer writes it.
    return len(json.dumps(payload, separators=(",", ":")).encode())


def _build(size: str, variant: int, scale: float) -> dict[str, Any]:
    keys, _target = SIZE_SPECS[size]
    rng = random.Random(f"{SEED}-{size}-{variant}")
    payload: dict[str, Any] = {
        "_auth_user_id": str(rng.randrange(1, 10**6)),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": f"{rng.getrandbits(256):064x}",
        WRITE_KEY: rng.randrange(1, 1000),
    }
    extra = keys - len(payload)
    for i in range(extra):
        name, kind = _EXTRA_KEYS[i % len(_EXTRA_KEYS)]
        if i >= len(_EXTRA_KEYS):
            name = f"{name}_{i // len(_EXTRA_KEYS) + 1}"
        chars = int(scale * _SCALED_KINDS.get(kind, 0.0))
        payload[name] = _value(rng, kind, chars)
    return payload


def make_payloads(size: str) -> list[dict[str, Any]]:
    """``PAYLOAD_VARIANTS`` payloads of one size, each within a few % of the target."""
    keys, target = SIZE_SPECS[size]
    scale = 100.0
    for _ in range(8):
        actual = _json_size(_build(size, 0, scale))
        fixed = _json_size(_build(size, 0, 0.0))
        if abs(actual - target) <= target * 0.02:
            break
        scale = max(1.0, scale * (target - fixed) / max(actual - fixed, 1))
    return [_build(size, variant, scale) for variant in range(PAYLOAD_VARIANTS)]


def session_payload(payloads: dict[str, list[dict[str, Any]]], size: str, j: int) -> dict:
    """Session ``j`` of a size: a shared variant with its own user and hash."""
    payload = dict(payloads[size][j % PAYLOAD_VARIANTS])
    rng = random.Random(f"{SEED}-user-{size}-{j}")
    payload["_auth_user_id"] = str(rng.randrange(1, 10**7))
    payload["_auth_user_hash"] = f"{rng.getrandbits(256):064x}"
    return payload


def random_session_key(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(32))


# -- one request, as SessionMiddleware drives the session --------------------------------


def respond(session: Any) -> None:
    """The session calls of ``SessionMiddleware.process_response`` (Django 5.2)."""
    _accessed = session.accessed
    modified = session.modified
    empty = session.is_empty()
    if modified and not empty:
        if not session.get_expire_at_browser_close():
            session.get_expiry_age()
        session.save()
        _cookie = session.session_key


def op_read_only(store: Any, key: str, _arg: Any) -> Any:
    session = store(key)
    session.get(READ_KEYS[0])
    session.get(READ_KEYS[1])
    respond(session)
    return session


def op_typical(store: Any, key: str, arg: Any) -> Any:
    session = store(key)
    session.get(READ_KEYS[0])
    session.get(READ_KEYS[1])
    session[WRITE_KEY] = arg
    respond(session)
    return session


def op_create(store: Any, _key: str, arg: Any) -> Any:
    session = store(None)
    for name, value in arg.items():
        session[name] = value
    respond(session)
    return session


def op_miss(store: Any, key: str, _arg: Any) -> Any:
    session = store(key)
    session.get(READ_KEYS[0])
    respond(session)
    return session


OP_FUNCS: dict[str, Callable[[Any, str, Any], Any]] = {
    "read-only": op_read_only,
    "typical": op_typical,
    "create": op_create,
    "miss": op_miss,
}


# -- setup -------------------------------------------------------------------------------


def populate(engine: Engine, payloads: dict[str, list[dict[str, Any]]], count: int) -> None:
    from django.db import transaction

    engine.activate()
    for size in SIZES:
        keys: list[str] = []
        # One transaction for the SQLite inserts; every other engine commits per session.
        with transaction.atomic():
            for j in range(count):
                session = engine.store(None)
                session.update(session_payload(payloads, size, j))
                session.save()
                keys.append(session.session_key)
        engine.keys[size] = keys


def check_engine(engine: Engine, payloads: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse to time an engine that does not return what was stored."""
    engine.activate()
    for size in SIZES:
        for j in (0, len(engine.keys[size]) - 1):
            session = engine.store(engine.keys[size][j])
            got = dict(session.items())
            if got != session_payload(payloads, size, j):
                raise SystemExit(f"{engine.name}: {size} session {j} does not read back")


# -- timing ------------------------------------------------------------------------------


@dataclass
class Cell:
    samples: dict[str, list[int]]
    anomalies: Counter[str]


def time_cell(
    op: str,
    size: str,
    engines: list[Engine],
    payloads: dict[str, list[dict[str, Any]]],
    rounds: int,
    warmup: int,
    rng: random.Random,
    burst: int = 1,
) -> Cell:
    """Time ``op`` on sessions of ``size``: ``rounds`` rounds over every engine.

    Each round runs the engines in a fresh random order. With ``burst`` = 1 each engine
    serves one request per round (interleaved); with ``burst`` > 1 it serves that many in
    a row, on different sessions, and the first of each burst is not recorded
    (back-to-back: the engine's code and data are warm in the CPU caches).
    """
    func = OP_FUNCS[op]
    perf = time.perf_counter_ns
    samples: dict[str, list[int]] = {engine.name: [] for engine in engines}
    anomalies: Counter[str] = Counter()
    order = list(engines)
    count = len(engines[0].keys[size])
    counter = 1_000_000 * (OPERATIONS.index(op) + 1) + 100_000 * burst
    gc.collect()
    for round_no in range(warmup + rounds):
        rng.shuffle(order)
        picks = [rng.randrange(count) for _ in range(burst)]
        miss_keys = [random_session_key(rng) for _ in range(burst)]
        counter += 1
        for engine in order:
            engine.activate()
            for step, j in enumerate(picks):
                if op == "create":
                    key, arg = "", session_payload(payloads, size, count + j)
                elif op == "miss":
                    key, arg = miss_keys[step], None
                else:
                    key, arg = engine.keys[size][j], counter
                start = perf()
                session = func(engine.store, key, arg)
                elapsed = perf() - start
                # Untimed: the request did what it should; the store stays the same size.
                if op == "miss":
                    if session.get(READ_KEYS[0]) is not None:
                        anomalies[f"{engine.name}: miss found data"] += 1
                elif op == "create":
                    if session.session_key is None:
                        anomalies[f"{engine.name}: create left no key"] += 1
                    else:
                        session.delete()
                elif session.get(READ_KEYS[0]) is None or (
                    session.session_key != key and not engine.cookie_store
                ):
                    anomalies[f"{engine.name}: session not found"] += 1
                if round_no >= warmup and (burst == 1 or step > 0):
                    samples[engine.name].append(elapsed)
    return Cell(samples, anomalies)


def time_cells(
    engines: list[Engine],
    payloads: dict[str, list[dict[str, Any]]],
    profile: Profile,
    rng: random.Random,
) -> tuple[dict[tuple[str, str, str], float], Counter[str]]:
    """Every operation, then the cold typical request, on every size: the medians (ns) by
    (operation, size, engine name), and the failed checks. Progress goes to stderr."""
    medians: dict[tuple[str, str, str], float] = {}
    anomalies: Counter[str] = Counter()
    cells = [(op, op, profile.reps[op], profile.burst) for op in OPERATIONS]
    cells.append((COLD, "typical", profile.cold_rounds, 1))
    for label, op, rounds, burst in cells:
        for size in SIZES:
            t0 = time.perf_counter()
            cell = time_cell(op, size, engines, payloads, rounds, profile.warmup, rng, burst=burst)
            anomalies.update(cell.anomalies)
            for name, samples in cell.samples.items():
                medians[(label, size, name)] = statistics.median(samples)
            print(
                f"{label:>9} {size:>6}: "
                + ", ".join(f"{name} {_us(medians[(label, size, name)])}" for name in cell.samples)
                + f" µs ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return medians, anomalies


# -- bytes written per save --------------------------------------------------------------


def _wchar() -> int | None:
    """Bytes this process has passed to write()/pwrite() and friends (Linux only)."""
    try:
        with open("/proc/self/io") as io:
            for line in io:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass
class BytesRow:
    engine: str
    written: float  # what one save writes (memopt: the delta), median over sessions
    rewrite: float  # what a whole-session rewrite writes
    record: float  # the stored value the store replaces
    os_bytes: float | None  # bytes passed to write() syscalls during the save


def measure_bytes(engine: Engine, samples: int, rng: random.Random) -> BytesRow:
    from django.contrib.sessions.models import Session
    from django.core.cache import caches

    engine.activate()
    written: list[int] = []
    rewrite: list[int] = []
    record: list[int] = []
    os_bytes: list[int] = []
    keys = engine.keys["medium"]
    for n in range(samples):
        key = keys[rng.randrange(len(keys))]
        session = engine.store(key)
        session.get(READ_KEYS[0])
        session.get(READ_KEYS[1])
        session[WRITE_KEY] = 5_000_000 + n  # one small key, changed
        if engine.lmdb is not None:
            fields = session._get_session()
            delta = fields.delta(key)
            full = fields.delta(key, full=True)
            written.append(
                sum(len(value) for value in delta.sets.values())
                + sum(len(name.encode()) for name in delta.deletes)
            )
            rewrite.append(sum(len(value) for value in full.sets.values()))
        before = _wchar()
        respond(session)
        after = _wchar()
        if before is not None and after is not None:
            os_bytes.append(after - before)
        if engine.lmdb is not None:
            from django_memopt.backends.lmdb import environment

            opened = environment()
            with opened.env.begin() as txn:
                stored = txn.get(key.encode(), db=opened.sessions)
            record.append(len(stored))
        elif engine.name == DB:
            data = Session.objects.get(session_key=key).session_data
            written.append(len(data))
        elif engine.name == FILE:
            written.append(os.path.getsize(session._key_to_file()))
        elif engine.name == CACHE:
            cache = caches["default"]
            stored = cache._cache[cache.make_and_validate_key(session.cache_key)]
            written.append(len(stored))
        elif engine.cookie_store:
            written.append(len(session.session_key))  # the new cookie: the whole session
        if engine.lmdb is None:
            rewrite.append(written[-1])
            record.append(written[-1])
    return BytesRow(
        engine.name,
        statistics.median(written),
        statistics.median(rewrite),
        statistics.median(record),
        statistics.median(os_bytes) if os_bytes else None,
    )


def size_table_rows(
    engines: list[Engine], payloads: dict[str, list[dict]], memopt_name: str = MEMOPT
) -> list[list[str]]:
    """What one session of each size takes: JSON, memopt fields, Django's encodings."""
    from django.contrib.sessions.backends.db import SessionStore as DbStore

    from django_memopt.backends.base import field_codec

    memopt = engine_named(engines, memopt_name)
    memopt.activate()
    rows = []
    for size in SIZES:
        payload = session_payload(payloads, size, 0)
        key = memopt.keys[size][0]
        codec = field_codec()
        sealed = sum(len(codec.encode(key, name, value)) for name, value in payload.items())
        rows.append(
            [
                size,
                str(len(payload)),
                f"{_json_size(payload):,}",
                f"{sealed:,}",
                f"{len(DbStore().encode(payload)):,}",
                f"{len(pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)):,}",
            ]
        )
    return rows


# -- concurrent writers ------------------------------------------------------------------


def _classify(exc: BaseException) -> tuple[str, bool]:
    """(error kind, retry?) for an exception raised by one writer iteration."""
    from django.contrib.sessions.backends.base import UpdateError
    from django.db import OperationalError

    cause = exc if isinstance(exc, OperationalError) else exc.__context__
    if isinstance(cause, OperationalError) and "locked" in str(cause):
        return "db_locked", True
    if isinstance(exc, UpdateError):
        return "update_error", False
    return type(exc).__name__, False


def write_loop(
    engine: Engine,
    session_key: str,
    writer: int,
    iterations: int,
    think_s: float,
) -> dict[str, Any]:
    """One writer: ``iterations`` requests that each set ``writer-{writer}`` and save."""
    from django.db import connections

    engine.activate()
    last = 0
    errors: Counter[str] = Counter()
    for n in range(1, iterations + 1):
        for _attempt in range(MAX_ATTEMPTS):
            try:
                session = engine.store(session_key)
                session.get(READ_KEYS[0])  # loads the session
                if think_s:
                    time.sleep(think_s)  # the view's own work
                session[f"writer-{writer}"] = n
                respond(session)
            except Exception as exc:
                kind, retry = _classify(exc)
                errors[kind] += 1
                if retry:
                    time.sleep(0.001)
                    continue
                break
            if session.session_key != session_key:
                errors["new_session"] += 1
            else:
                last = n
            break
        else:
            errors["gave_up"] += 1
    connections.close_all()
    return {"writer": writer, "last": last, "errors": dict(errors)}


def engines_in_this_process(config: dict[str, str]) -> list[Engine]:
    """Configure Django in this (writer) process and make the engines."""
    configure_django(config)
    return make_engines(config)


def _process_writer(
    config: dict[str, str],
    engine_name: str,
    session_key: str,
    writer: int,
    iterations: int,
    think_s: float,
    barrier: Any,
    results: Any,
    engines_for: Callable[[dict[str, str]], list[Engine]] = engines_in_this_process,
) -> None:
    engine = engine_named(engines_for(config), engine_name)
    engine.activate()
    engine.store(session_key).exists(session_key)  # open connections before the start line
    barrier.wait()
    results.put(write_loop(engine, session_key, writer, iterations, think_s))


@dataclass
class ConcurrencyRow:
    engine: str
    mode: str
    writers: int
    iterations: int
    lost: int
    errors: Counter[str]


def _new_shared_session(engine: Engine, payloads: dict[str, list[dict[str, Any]]]) -> str:
    engine.activate()
    session = engine.store(None)
    session.update(session_payload(payloads, "medium", 10**6))
    session.save()
    return session.session_key


def _tally(
    engine: Engine, session_key: str, results: list[dict[str, Any]], mode: str, iterations: int
) -> ConcurrencyRow:
    engine.activate()
    stored = engine.store(session_key)
    lost = 0
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
        if stored.get(f"writer-{result['writer']}", 0) != result["last"]:
            lost += 1
    if stored.get(READ_KEYS[0]) is None:
        errors["session_gone"] += 1
    return ConcurrencyRow(engine.name, mode, len(results), iterations, lost, errors)


def run_processes(
    engine: Engine,
    config: dict[str, str],
    payloads: dict[str, list[dict[str, Any]]],
    writers: int,
    profile: Profile,
    target: Callable[..., None] = _process_writer,
) -> ConcurrencyRow:
    """``writers`` processes running ``target`` (with ``_process_writer``'s arguments)."""
    ctx = multiprocessing.get_context("spawn")
    session_key = _new_shared_session(engine, payloads)
    barrier = ctx.Barrier(writers)
    results_queue = ctx.Queue()
    processes = [
        ctx.Process(
            target=target,
            args=(
                config,
                engine.name,
                session_key,
                writer,
                profile.iterations,
                profile.think_ms / 1000,
                barrier,
                results_queue,
            ),
        )
        for writer in range(writers)
    ]
    for process in processes:
        process.start()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 600
    while len(results) < writers and time.monotonic() < deadline:
        try:
            results.append(results_queue.get(timeout=1))
        except queue.Empty:
            if not any(process.is_alive() for process in processes) and results_queue.empty():
                break
    for process in processes:
        process.join()
    if len(results) < writers:
        raise SystemExit(f"{engine.name}: {writers - len(results)} writer processes failed")
    return _tally(engine, session_key, results, "processes", profile.iterations)


def run_threads(
    engine: Engine,
    payloads: dict[str, list[dict[str, Any]]],
    writers: int,
    profile: Profile,
) -> ConcurrencyRow:
    session_key = _new_shared_session(engine, payloads)
    barrier = threading.Barrier(writers)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def target(writer: int) -> None:
        engine.store(session_key).exists(session_key)
        barrier.wait()
        think_s = profile.think_ms / 1000
        result = write_loop(engine, session_key, writer, profile.iterations, think_s)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=target, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _tally(engine, session_key, results, "threads", profile.iterations)


def run_writers(
    engines: list[Engine],
    config: dict[str, str],
    payloads: dict[str, list[dict[str, Any]]],
    profile: Profile,
    target: Callable[..., None] = _process_writer,
) -> list[ConcurrencyRow]:
    """4 writer processes (``target``) on each engine shared across processes, then 8
    writer threads on every engine. Each result goes to stderr as well."""
    concurrency: list[ConcurrencyRow] = []
    for engine in engines:
        if engine.shared_across_processes:
            concurrency.append(run_processes(engine, config, payloads, 4, profile, target))
    for engine in engines:
        concurrency.append(run_threads(engine, payloads, 8, profile))
    for row in concurrency:
        print(
            f"{row.engine} {row.mode}: lost {row.lost}/{row.writers}, {dict(row.errors)}",
            file=sys.stderr,
            flush=True,
        )
    return concurrency


# -- report ------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def _us(ns: float) -> str:
    us = ns / 1000
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def _filesystem(path: str) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), or "unknown"."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) > 2 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_digest() -> str:
    """A hash of django_memopt's source, to tell whether it changed during the run."""
    import django_memopt

    root = os.path.dirname(django_memopt.__file__)
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                digest.update(name.encode())
                with open(os.path.join(folder, name), "rb") as source:
                    digest.update(source.read())
    return digest.hexdigest()


def _package_revision() -> str:
    """The git commit of the django_memopt being measured, and whether it has changes."""
    import django_memopt

    root = os.path.dirname(django_memopt.__file__)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return "not in a git checkout"
    return f"git commit {commit}" + (" with uncommitted changes" if dirty else "")


def _load() -> str:
    try:
        return ", ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unknown"


def _command(argv: list[str], script: str = "benchmarks/bench_engines.py") -> str:
    args = []
    for arg in argv:
        if os.path.isabs(arg):
            relative = os.path.relpath(arg)
            arg = relative if not relative.startswith("..") else os.path.basename(arg)
        args.append(shlex.quote(arg))
    return " ".join(["python", script, *args])


def machine_and_run(argv: list[str], script: str, versions: str) -> list[str]:
    """The "Machine and run" section of a report: ``versions`` names what it measured with."""
    return [
        "## Machine and run",
        "",
        f"- Platform: `{platform.platform()}`, {os.cpu_count()} CPUs",
        f"- Python {platform.python_version()}, {versions}",
        f"- django-memopt measured: {_package_revision()}",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{_command(argv, script)}`",
        "",
    ]


def publish(report: str, output: str | None) -> None:
    """Print the report, and write it to ``output`` if given."""
    if output:
        with open(output, "w") as file:
            file.write(report)
    print(report)


def report_notices(add: Callable[[str], None], *, changed: bool, quick: bool) -> None:
    """The warnings a report opens with, when they apply, and what a timed request is."""
    if changed:
        add(
            "> **Warning: django_memopt's source changed during this run**, so the numbers "
            "do not all come from one version. Re-run it.\n"
        )
    if quick:
        add("> **Quick smoke run** (`--quick`): too few samples to quote; use a full run.\n")
    add("## What is measured\n")
    add(
        "Each timed request is exactly the session calls one request makes through Django's "
        "`SessionMiddleware`: `SessionStore(cookie)` (`process_request`), the view's reads "
        "and writes, then `accessed`, `modified`, `is_empty()` and, when the session was "
        "modified, `get_expire_at_browser_close()`, `get_expiry_age()`, `save()` and "
        "`session_key` (`process_response`). The HTTP and cookie work around them is left "
        "out, as it is the same for every engine.\n"
    )


PAYLOAD_TEXT = (
    "Values are strings, ints, booleans, lists and small dicts, with the "
    "`_auth_user_id` / `_auth_user_backend` / `_auth_user_hash` trio that "
    f"`django.contrib.auth.login()` leaves. The requests read `{READ_KEYS[0]}` and "
    f"`{READ_KEYS[1]}` and change `{WRITE_KEY}` (an int).\n"
)


def concurrency_section(
    add: Callable[[str], None],
    profile: Profile,
    concurrency: list[ConcurrencyRow],
    errors_text: str,
) -> None:
    """The lost-update section; ``errors_text`` says what the error columns count."""
    add("## Concurrent writers on one session (lost updates)\n")
    add(
        f"One medium session; each writer repeats {profile.iterations} times: load the "
        "session (`SessionStore(key)` and a read), "
        f"{profile.think_ms:g} ms of simulated view work, set its own key `writer-{{i}}` to "
        "the iteration number, save (through the middleware's calls). Processes start "
        "together at a barrier (`multiprocessing`, spawn context, each configuring Django "
        "itself); threads share one process. At the end the session is reloaded: a writer "
        "whose last successfully saved value is not what is stored has lost an update. "
        + errors_text
        + "\n"
    )
    rows = []
    for row in concurrency:
        other = {k: v for k, v in row.errors.items() if k not in ("update_error", "db_locked")}
        rows.append(
            [
                f"`{row.engine}`",
                f"{row.writers} {row.mode} × {row.iterations}",
                f"{row.lost} of {row.writers}",
                str(row.errors.get("update_error", 0)),
                str(row.errors.get("db_locked", 0)),
                ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "0",
            ]
        )
    header = [
        "engine",
        "writers",
        "final values lost",
        "SessionInterrupted",
        "DB locked (retried)",
        "other errors",
    ]
    add(_table(header, rows) + "\n")


def sanity_text(anomalies: Counter[str]) -> str:
    """The verdict line on the checks made after every timed request."""
    if anomalies:
        return "- **Sanity checks failed** during timing (results above are suspect): " + (
            ", ".join(f"{k}: {v}" for k, v in sorted(anomalies.items()))
        )
    return (
        "- Every timed request was checked afterwards (outside the timing): each load "
        "found its session, each miss found nothing, each create got a key."
    )


def render(
    *,
    argv: list[str],
    profile: Profile,
    quick: bool,
    engines: list[Engine],
    medians: dict[tuple[str, str, str], float],
    size_rows: list[list[str]],
    bytes_rows: list[BytesRow],
    concurrency: list[ConcurrencyRow],
    anomalies: Counter[str],
    fs_type: str,
    elapsed_s: float,
    revision: str,
    loads: tuple[str, str],
    changed: bool,
) -> str:
    import django
    import lmdb
    import msgpack

    names = [engine.name for engine in engines]
    out: list[str] = []
    add = out.append
    add("# Benchmarks: django-memopt's LMDB engine against Django's session engines\n")
    add(
        "Generated by `benchmarks/bench_engines.py`; every number below comes from the run "
        "described here. Re-run the command on your own hardware: absolute times depend on "
        "the machine, the ratios much less.\n"
    )
    report_notices(add, changed=changed, quick=quick)
    add("Engines, each used through its module's `SessionStore` class:\n")
    add(
        f"- `{MEMOPT}`: `django_memopt.backends.lmdb`, `MEMOPT_LMDB_DURABILITY = "
        '"process"` (the default: a commit survives any process crash, not an OS crash).'
    )
    add(
        f'- `{MEMOPT_SYSTEM}`: the same engine with `MEMOPT_LMDB_DURABILITY = "system"` '
        "(each commit is flushed to disk), in its own LMDB environment."
    )
    add(
        f"- `{DB}`: `django.contrib.sessions.backends.db` on a SQLite database file "
        "(Django's defaults: rollback journal, `synchronous=FULL`, 5 s busy timeout)."
    )
    add(f"- `{FILE}`: `django.contrib.sessions.backends.file`.")
    add(
        f"- `{CACHE}`: `django.contrib.sessions.backends.cache` on `LocMemCache` "
        "(`MAX_ENTRIES` raised so that no session is culled).\n"
    )
    add(
        f"Every store lives in a fresh temporary directory ({fs_type} here) that is removed "
        f"at the end. Each engine is pre-populated with {profile.sessions:,} sessions of each "
        f"size. In every round each engine, in a freshly shuffled order, serves {profile.burst} "
        "requests in a row on randomly picked sessions, and the first of each run is not "
        "recorded: a site runs one engine, so its code and data are warm in the CPU caches, "
        "while rotating the engines every round spreads noise on the machine over all of "
        "them alike. (A separate table times requests one engine at a time, each right "
        "after another engine's: the cold case.) Times are the **median in µs per request** "
        f"(`time.perf_counter_ns`, after {profile.warmup} warm-up rounds). Sessions made by "
        "the *create* request are deleted again outside the timed region. Session sizes:\n"
    )
    add(
        _table(
            [
                "size",
                "keys",
                "JSON bytes",
                "memopt sealed fields",
                "Django db/file encoding",
                "pickled (cache)",
            ],
            size_rows,
        )
        + "\n"
    )
    add(PAYLOAD_TEXT)
    add("## Machine and run\n")
    add(f"- Platform: `{platform.platform()}`, {os.cpu_count()} CPUs ({_cpu_model()})")
    add(
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"lmdb {lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))}), "
        f"msgpack {'.'.join(map(str, msgpack.version))}, SQLite {sqlite3.sqlite_version}"
    )
    add(f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    add(f"- django-memopt measured: {revision}")
    add(f"- Load average (1, 5, 15 min) at the start: {loads[0]}; at the end: {loads[1]}")
    add(f"- Wall time of the whole run: {elapsed_s:.0f} s")
    add(f"- Command: `{_command(argv)}`\n")

    add("## Request latency\n")
    add(
        "Median µs per request; ratio = the engine's median / the `memopt-lmdb` median for "
        "the same size (above 1x: slower than `memopt-lmdb`).\n"
    )
    for op in (*OPERATIONS, COLD):
        if op == COLD:
            add(f"### {op}: the typical request, each one right after another engine's\n")
            add(
                f"{profile.cold_rounds:,} rounds per size; in each round every engine (in a "
                "shuffled order) serves one typical request, so each request starts just "
                "after another engine's request, with its own code and data cold in the CPU "
                "caches. Every engine is slower this way, and the LMDB engine loses the most "
                "(presumably its memory-mapped pages and their address translations being "
                "evicted by the other engines' work; pinning the process to one CPU or "
                "moving the stores to tmpfs did not change it). A server that runs one "
                "engine is in the case of the tables above.\n"
            )
        else:
            add(f"### {op}: {OPERATION_TEXT[op]}\n")
            add(
                f"{profile.reps[op]:,} rounds per size of {profile.burst - 1} recorded "
                "requests per engine.\n"
            )
        header = ["engine", *(f"{size} µs" for size in SIZES)]
        header += [f"{size} ratio" for size in SIZES]
        rows = []
        for name in names:
            row = [f"`{name}`"]
            row += [_us(medians[(op, size, name)]) for size in SIZES]
            row += [
                f"{medians[(op, size, name)] / medians[(op, size, MEMOPT)]:.2f}x" for size in SIZES
            ]
            rows.append(row)
        add(_table(header, rows) + "\n")

    add("## Bytes written per save (one small key changed in a medium session)\n")
    add(
        f"The *typical* request on a medium session: `{WRITE_KEY}` set to a new int, then "
        "saved. Medians over the sampled sessions, measured, not estimated:\n"
    )
    add(
        "- *written per save*: for memopt the delta, i.e. the sealed fields in "
        "`fields.delta(...).sets` plus the names deleted; for `db`/`file` the encoded "
        "session string stored (the `session_data` column, the file's size); for `cache` "
        "the pickled dict `LocMemCache` stores."
    )
    add(
        "- *whole-session rewrite*: for memopt every sealed field (what a full save would "
        "write); Django's engines always rewrite the whole session."
    )
    add(
        "- *record replaced in the store*: the value the store puts back in this save "
        "(memopt: the LMDB record, header plus the msgpack map of every sealed field)."
    )
    add(
        "- *bytes passed to `write()`*: the growth of `wchar` in `/proc/self/io` across "
        "`save()`: everything the engine hands the kernel (LMDB pages, SQLite pages and "
        "journal, the temporary session file); 0 for an in-process cache.\n"
    )
    rows = []
    for row in bytes_rows:
        rows.append(
            [
                f"`{row.engine}`",
                f"{row.written:,.0f}",
                f"{row.rewrite:,.0f}",
                f"{100 * row.written / row.rewrite:.1f}%",
                f"{row.record:,.0f}",
                "n/a" if row.os_bytes is None else f"{row.os_bytes:,.0f}",
            ]
        )
    add(
        _table(
            [
                "engine",
                "written per save (B)",
                "whole-session rewrite (B)",
                "written / rewrite",
                "record replaced in the store (B)",
                "bytes passed to write() (B)",
            ],
            rows,
        )
        + "\n"
    )

    concurrency_section(
        add,
        profile,
        concurrency,
        "`SessionInterrupted` counts saves that raised `UpdateError` (the middleware turns "
        "it into `SessionInterrupted`, the request fails); *DB locked* counts SQLite "
        '"database is locked" errors, each retried.',
    )

    add("## Reading the numbers\n")
    add(_verdicts(medians, bytes_rows, concurrency, anomalies) + "\n")
    return "\n".join(out)


def _verdicts(
    medians: dict[tuple[str, str, str], float],
    bytes_rows: list[BytesRow],
    concurrency: list[ConcurrencyRow],
    anomalies: Counter[str],
) -> str:
    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    def speed(label: str, memopt: str) -> tuple[bool, str]:
        at = {name: medians[(label, "medium", name)] for name in (memopt, DB, FILE, CACHE)}
        file_x, db_x, cache_x = (at[name] / at[memopt] for name in (FILE, DB, CACHE))
        ok = file_x >= 10 and db_x >= 10 and cache_x > 1
        text = (
            f"`{memopt}` took {_us(at[memopt])} µs; `file` took {file_x:.1f}x that, "
            f"`db` {db_x:.1f}x, `cache` {cache_x:.2f}x"
        )
        return ok, text

    ok, text = speed("typical", MEMOPT)
    cold_ok, cold_text = speed(COLD, MEMOPT)
    _sys_ok, sys_text = speed("typical", MEMOPT_SYSTEM)
    parts = [
        f"- Typical request on a medium session, `{MEMOPT}` at least 10x faster than "
        "Django's `file` and `db` engines and faster than `cache` on local memory: "
        f"{met(ok)} in this run: {text}. Measured cold (each request right after another "
        f"engine's), the same target is {met(cold_ok)}: {cold_text}. "
        f'With durability "system": {sys_text}.'
    ]
    memopt_bytes = next(row for row in bytes_rows if row.engine == MEMOPT)
    share = memopt_bytes.written / memopt_bytes.rewrite
    django_written = ", ".join(
        f"`{row.engine}` {row.written:,.0f} B" for row in bytes_rows if row.engine in (DB, FILE)
    )
    parts.append(
        "- Bytes written per save with one small key changed in a medium session at most "
        f"10% of a whole-session rewrite: {met(share <= 0.10)}: the delta is "
        f"{memopt_bytes.written:,.0f} B against {memopt_bytes.rewrite:,.0f} B of sealed "
        f"fields ({100 * share:.1f}%); Django's engines rewrite the whole session "
        f"({django_written}). Note that the LMDB store still replaces the whole "
        f"{memopt_bytes.record:,.0f} B record inside its write transaction"
        + (
            f", and LMDB handed {memopt_bytes.os_bytes:,.0f} B of pages to `write()` per commit"
            if memopt_bytes.os_bytes is not None
            else ""
        )
        + ": the delta bounds what is encoded and sent, not the pages LMDB rewrites."
    )
    memopt_rows = [row for row in concurrency if row.engine in (MEMOPT, MEMOPT_SYSTEM)]
    memopt_lost = sum(row.lost for row in memopt_rows)
    memopt_errors = sum(sum(row.errors.values()) for row in memopt_rows)
    django_lost = ", ".join(
        f"`{row.engine}` ({row.mode}) {row.lost}/{row.writers}"
        for row in concurrency
        if row.engine not in (MEMOPT, MEMOPT_SYSTEM)
    )
    parts.append(
        f"- Zero lost updates for memopt: {met(memopt_lost == 0)}: {memopt_lost} final "
        f"values lost and {memopt_errors} errors over {len(memopt_rows)} memopt runs. "
        f"Django's engines lost: {django_lost}."
    )
    parts.append(
        "- The engines that flush to disk on every commit (`db` on SQLite with its default "
        "`synchronous=FULL`, and `memopt-lmdb-system`), and `file`, which creates and "
        "renames a file on every save, are the ones most exposed to other disk activity on "
        "the machine: a cell measured while something else was writing can be far slower "
        "than in a quiet moment (the load averages above say how busy the machine was). "
        "`memopt-lmdb` and `cache` never wait for the disk."
    )
    parts.append(sanity_text(anomalies))
    return "\n".join(parts)


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--output", help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_start = _load()
    digest = _package_digest()
    revision = _package_revision()

    base = tempfile.mkdtemp(prefix="memopt-bench-")
    try:
        config = make_config(base)
        configure_django(config)
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", run_syncdb=True, verbosity=0)
        engines = make_engines(config)
        for engine in engines:
            if engine.lmdb is not None:
                from django_memopt.backends.lmdb import environment

                engine.activate()
                flags = environment().env.flags()
                if flags["sync"] != (engine.lmdb[1] == "system"):
                    raise SystemExit(f"{engine.name}: LMDB opened with the wrong durability")

        log = sys.stderr
        print("building payloads and populating stores...", file=log, flush=True)
        payloads = {size: make_payloads(size) for size in SIZES}
        for engine in engines:
            populate(engine, payloads, profile.sessions)
            check_engine(engine, payloads)

        rng = random.Random(SEED)
        medians, anomalies = time_cells(engines, payloads, profile, rng)

        print("measuring bytes written per save...", file=log, flush=True)
        bytes_samples = 10 if args.quick else 50
        bytes_rows = [measure_bytes(engine, bytes_samples, rng) for engine in engines]
        size_rows = size_table_rows(engines, payloads)

        print("concurrent writers...", file=log, flush=True)
        concurrency = run_writers(engines, config, payloads, profile)

        report = render(
            argv=argv,
            profile=profile,
            quick=args.quick,
            engines=engines,
            medians=medians,
            size_rows=size_rows,
            bytes_rows=bytes_rows,
            concurrency=concurrency,
            anomalies=anomalies,
            fs_type=_filesystem(os.path.realpath(base)),
            elapsed_s=time.perf_counter() - started,
            revision=revision,
            loads=(load_start, _load()),
            changed=_package_digest() != digest,
        )
        connections.close_all()
        from django_memopt.backends.lmdb import close_environments

        close_environments()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(report)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as output:
            output.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
