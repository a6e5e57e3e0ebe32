"""Scenario ``engines``: every session engine side by side, in the same interleaved rounds.

django-memopt's LMDB engine (both durabilities) and Redis engine; Django's ``db``
(SQLite), ``cached_db``, ``file``, ``cache`` on locmem and on django-redis and
``signed_cookies``; django-redis-sessions; and the floor of plain Redis round trips. All
of them against one ``redis-server`` this scenario starts, with Redis and the benchmark
on two different CPUs. Measured: request latency (warm and cold), lazy against eager
decoding, bytes per save, and lost updates under concurrent writers.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness import log, servers, timing, workload, writers
from benchmarks.harness.engines import FLOOR, MEMOPT_LMDB, MEMOPT_REDIS, Engine
from benchmarks.harness.workload import COLD, OPERATIONS, READ_KEYS, SIZES, WRITE_KEY, Payloads


@dataclass(frozen=True)
class Profile:
    sessions: int  # pre-populated sessions per size and engine
    rounds: dict[str, int]  # timed rounds per operation and size (each runs every engine)
    burst: int  # requests each engine serves in a row per round (the first not recorded)
    warmup: int
    cold_rounds: int  # rounds of the cold typical request (one request per engine)
    lazy_samples: int  # requests per variant, engine and size for the lazy-decoding table
    bytes_samples: int  # saves sampled for the bytes per save, per engine
    writers: writers.Plan


FULL = Profile(
    sessions=1000,
    rounds={"read-only": 300, "typical": 250, "create": 100, "miss": 300},
    burst=11,
    warmup=5,
    cold_rounds=1500,
    lazy_samples=2000,
    bytes_samples=50,
    writers=writers.Plan(iterations=50, think_ms=1.0),
)
QUICK = Profile(
    sessions=50,
    rounds={"read-only": 10, "typical": 10, "create": 5, "miss": 10},
    burst=5,
    warmup=2,
    cold_rounds=30,
    lazy_samples=100,
    bytes_samples=10,
    writers=writers.Plan(iterations=10, think_ms=1.0),
)


@dataclass
class SaveBytes:
    """One save with one small key changed in a medium session (medians over sessions)."""

    engine: str
    written: float  # what the save writes (LMDB: the delta) or sends (Redis)
    rewrite: float | None  # the same for a whole-session rewrite (None: the floor has none)
    stored: float  # the value the save replaced in the store
    os_bytes: float  # bytes handed to write() syscalls during the save
    load_out: float  # bytes Redis sent for the load (0 off Redis)


FIGURES = ("written", "rewrite", "stored", "os_bytes", "load_out")


@dataclass
class LazyRow:
    engine: str
    size: str
    lazy_ns: float  # the read-only request: two fields decoded
    eager_ns: float  # the same request decoding every field first


@dataclass
class Result:
    profile: Profile
    names: list[str]
    medians: dict[tuple[str, str, str], float]  # (operation, size, engine) -> ns
    noise: dict[tuple[str, str, str], float]  # half-width of the median's 95% interval
    anomalies: Counter[str]
    size_rows: list[list[str]]
    cookie_bytes: dict[str, int]  # the signed_cookies cookie of each size
    save_bytes: list[SaveBytes]
    lost: list[writers.LostUpdates]
    lazy: list[LazyRow]
    redis: dict[str, str]  # redis-server version and allocator
    placement: str
    round_trips: tuple[float, float]  # one PING, at the start and at the end (ns)
    skipped: str | None  # why django-redis-sessions was left out
    fs_type: str
    samples: dict[str, list[float]] = field(default_factory=dict)  # cell -> every timing

    def ns(self, op: str, size: str, name: str) -> float:
        return self.medians[(op, size, name)]

    def ratio(self, op: str, size: str, name: str, base: str) -> float:
        return self.ns(op, size, name) / self.ns(op, size, base)

    def bytes_of(self, name: str) -> SaveBytes:
        return next(row for row in self.save_bytes if row.engine == name)


# -- latency ---------------------------------------------------------------------------------


@dataclass
class _Round:
    picks: list[int]  # which populated sessions the round asks for
    miss_keys: list[str]
    counter: int  # the value the typical request writes


def _time_cell(
    op: str,
    size: str,
    engines: list[Engine],
    payloads: Payloads,
    rounds: int,
    burst: int,
    warmup: int,
    rng: random.Random,
    anomalies: Counter[str],
) -> dict[str, list[float]]:
    """``rounds`` rounds of ``op`` on sessions of ``size``, every engine in each.

    With ``burst`` = 1 each engine serves one request per round (cold: right after
    another engine's); with more it serves that many in a row on different sessions and
    the first is not recorded (warm, as on a site that runs one engine). Each request is
    checked afterwards, outside the timing; sessions made by *create* are deleted again.
    """
    request = workload.REQUESTS[op]
    count = len(engines[0].keys[size])
    state = _Round([], [], 1_000_000 * (OPERATIONS.index(op) + 1) + 100_000 * burst)

    def next_round() -> _Round:
        state.picks = [rng.randrange(count) for _ in range(burst)]
        state.miss_keys = [workload.random_session_key(rng) for _ in range(burst)]
        state.counter += 1
        return state

    def serve(engine: Engine, plan: _Round) -> list[float]:
        engine.activate()
        timings = []
        for step, j in enumerate(plan.picks):
            if op == "create":
                key, arg = "", workload.session_payload(payloads, size, count + j)
            elif op == "miss":
                key, arg = plan.miss_keys[step], None
            else:
                key, arg = engine.keys[size][j], plan.counter
            start = timing.perf_ns()
            session = request(engine.store, key, arg)
            timings.append(timing.perf_ns() - start)
            _check(engine, op, key, session, anomalies)
        return timings

    return timing.interleaved(
        engines, rounds, rng, serve, warmup=warmup, drop_first=burst > 1, before_round=next_round
    )


def _check(engine: Engine, op: str, key: str, session: Any, anomalies: Counter[str]) -> None:
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


def _latency(
    engines: list[Engine], payloads: Payloads, profile: Profile, rng: random.Random
) -> dict[str, Any]:
    """The medians, their noise, every sample and the failed checks, as ``Result`` names them."""
    found: dict[str, Any] = {"medians": {}, "noise": {}, "samples": {}, "anomalies": Counter()}
    cells = [(op, op, profile.rounds[op], profile.burst) for op in OPERATIONS]
    cells.append((COLD, "typical", profile.cold_rounds, 1))
    for label, op, rounds, burst in cells:
        for size in SIZES:
            samples = _time_cell(
                op, size, engines, payloads, rounds, burst, profile.warmup, rng, found["anomalies"]
            )
            for engine, values in samples.items():
                cell = (label, size, engine.name)
                found["medians"][cell] = statistics.median(values)
                found["noise"][cell] = timing.relative_noise(values)
                found["samples"][f"{label} {size} {engine.name}"] = values
            medians = (
                f"{e.name} {found['medians'][(label, size, e.name)] / 1000:.1f}" for e in samples
            )
            log(f"{label:>13} {size:>6}: " + ", ".join(medians))
    return found


def _lazy(engines: list[Engine], samples: int, rng: random.Random) -> list[LazyRow]:
    """The read-only request against the same request decoding every field, interleaved."""
    rows = []
    for name in (MEMOPT_LMDB, MEMOPT_REDIS):
        engine = registry.named(engines, name)
        engine.activate()
        for size in SIZES:
            keys = engine.keys[size]

            def serve(
                request: Any, _: Any, keys: list[str] = keys, engine: Engine = engine
            ) -> list[float]:
                key = keys[rng.randrange(len(keys))]
                start = timing.perf_ns()
                request(engine.store, key, None)
                return [timing.perf_ns() - start]

            arms = [workload.read_only, workload.read_every_key]
            found = timing.medians(timing.interleaved(arms, samples, rng, serve))
            rows.append(LazyRow(name, size, found[arms[0]], found[arms[1]]))
    return rows


# -- bytes per save --------------------------------------------------------------------------


def _wchar() -> int:
    """Bytes this process has passed to write()/pwrite() and friends (Linux; else 0)."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))
    except (OSError, StopIteration):
        return 0


def _stored_bytes(engine: Engine, session: Any, key: str, admin: Any) -> int:
    """The bytes of what the save left in the store for this session."""
    from django.contrib.sessions.models import Session
    from django.core.cache import caches

    if engine.lmdb is not None:
        from django_memopt.backends.lmdb import environment

        opened = environment()
        with opened.env.begin() as txn:
            return len(txn.get(key.encode(), db=opened.sessions))
    if engine.name == MEMOPT_REDIS:  # the changed field, whatever form the session has
        return len(registry.sealed_fields(engine, key)[WRITE_KEY])
    if engine.on_redis:
        name = registry.redis_key(engine, key)
        return int(admin.hstrlen(name, WRITE_KEY) if engine.name == FLOOR else admin.strlen(name))
    if engine.name == registry.DB:
        return len(Session.objects.get(session_key=key).session_data)
    if engine.name == registry.FILE:
        return os.path.getsize(session._key_to_file())
    if engine.name == registry.CACHE:
        cache = caches["default"]
        return len(cache._cache[cache.make_and_validate_key(session.cache_key)])
    return len(session.session_key)  # signed_cookies: the new cookie, the whole session


def _save_bytes(
    engine: Engine, samples: int, rng: random.Random, wire: servers.Wire, admin: Any
) -> SaveBytes:
    """The typical request on medium sessions, its save measured (not timed)."""
    engine.activate()
    figures: dict[str, list[float]] = {k: [] for k in FIGURES}
    keys = engine.keys["medium"]
    for n in range(samples):
        key = keys[rng.randrange(len(keys))]
        wire.start()
        session = engine.store(key)
        session.get(READ_KEYS[0])
        session.get(READ_KEYS[1])
        figures["load_out"].append(wire.stop()[1] if engine.on_redis else 0)
        session[WRITE_KEY] = 5_000_000 + n  # one small key, changed
        full = None
        if engine.name in registry.MEMOPT:
            fields = session._get_session()
            delta, full = fields.delta(key), fields.delta(key, full=True)
            delta_bytes = sum(map(len, delta.sets.values())) + sum(
                len(name.encode()) for name in delta.deletes
            )
        before = _wchar()
        wire.start()
        workload.respond(session)
        sent = wire.stop()[0]
        figures["os_bytes"].append(_wchar() - before)
        figures["stored"].append(_stored_bytes(engine, session, key, admin))
        if engine.on_redis:
            figures["written"].append(sent)
        elif engine.lmdb is not None:
            figures["written"].append(delta_bytes)
        else:
            figures["written"].append(figures["stored"][-1])
        if engine.name == MEMOPT_REDIS and full is not None:
            wire.start()
            expires_at = time.time() + session.get_expiry_age()
            engine.store._write(key, full, expires_at, create=False)
            figures["rewrite"].append(wire.stop()[0])
        elif engine.lmdb is not None and full is not None:
            figures["rewrite"].append(sum(map(len, full.sets.values())))
        elif engine.name != FLOOR:
            figures["rewrite"].append(figures["written"][-1])
    return SaveBytes(
        engine.name, **{k: statistics.median(v) if v else None for k, v in figures.items()}
    )


def _size_rows(engines: list[Engine], payloads: Payloads) -> list[list[str]]:
    """What one session of each size takes: JSON, memopt's sealed fields, Django's forms."""
    from django.contrib.sessions.backends.db import SessionStore as DbStore

    from django_memopt.backends.base import field_codec

    codec = field_codec()
    key = registry.named(engines, MEMOPT_LMDB).keys["small"][0]
    rows = []
    for size in SIZES:
        payload = workload.session_payload(payloads, size, 0)
        sealed = sum(len(codec.encode(key, name, value)) for name, value in payload.items())
        rows.append(
            [
                size,
                str(len(payload)),
                f"{workload.json_size(payload):,}",
                f"{sealed:,}",
                f"{len(DbStore().encode(payload)):,}",
                f"{len(pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)):,}",
            ]
        )
    return rows


# -- the scenario ----------------------------------------------------------------------------


def _filesystem(path: str) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), or "unknown"."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for parts in (line.split() for line in mounts):
                if len(parts) > 2 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def measure(quick: bool, placement: str = "split") -> Result:
    from django.core.management import call_command
    from django.db import connections

    from django_memopt.backends.lmdb import close_environments

    profile = QUICK if quick else FULL
    base = tempfile.mkdtemp(prefix="memopt-bench-engines-")
    with servers.redis_server() as server:
        try:
            pinned = servers.pin(server, placement)
            config = registry.make_config(base, server.url, server.port)
            registry.configure(config)
            call_command("migrate", run_syncdb=True, verbosity=0)
            skipped = registry.redis_sessions_status()
            engines = registry.make_engines(config)
            admin = servers.client(server.url)
            start_trip = servers.round_trip_ns(admin)
            log(f"populating {len(engines)} engines...")
            payloads = workload.make_payloads()
            registry.populate(engines, payloads, profile.sessions, admin)
            signed = registry.named(engines, registry.SIGNED)
            rng = random.Random(workload.SEED)
            latency = _latency(engines, payloads, profile, rng)
            log("lazy decoding, bytes per save...")
            lazy = _lazy(engines, profile.lazy_samples, rng)
            wire = servers.Wire(admin)
            save_bytes = [_save_bytes(e, profile.bytes_samples, rng, wire, admin) for e in engines]
            log("concurrent writers...")
            lost = writers.lost_updates(engines, config, payloads, profile.writers)
            result = Result(
                profile=profile,
                names=[engine.name for engine in engines],
                size_rows=_size_rows(engines, payloads),
                cookie_bytes={size: len(signed.keys[size][0]) for size in SIZES},
                save_bytes=save_bytes,
                lost=lost,
                lazy=lazy,
                redis=servers.versions(admin),
                placement=pinned,
                round_trips=(start_trip, servers.round_trip_ns(admin)),
                skipped=skipped,
                fs_type=_filesystem(os.path.realpath(base)),
                **latency,
            )
            connections.close_all()
            close_environments()
            return result
        finally:
            shutil.rmtree(base, ignore_errors=True)
