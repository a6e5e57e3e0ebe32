"""Scenario ``client_cache``: the Redis engine's client-side cache against a round trip
per load, on one ``redis-server`` of its own.

- **One process**: the read-only and typical requests (as in ``engines``) on
  ``memopt-redis`` with its client-side cache, without it, Django's ``cache`` engine on
  django-redis and the floor, in the same interleaved rounds. The cache holds the sessions
  (each was loaded once before the timing), as it does those of a process's recent users.
- **Workers**: ``WORKERS`` processes serve requests for ``SESSIONS`` medium sessions, each
  request sent to a worker at random (no stickiness), read-only or typical by a mix (90/10,
  then 50/50); with the cache, without, and Django's ``cache`` engine, each its own
  sessions, in alternating blocks. Per request: latency, whether the cache served it, and
  the commands sent to Redis and run by it.
- **Held**: the bytes a process holds at the benchmark's cache setting after loading a
  number of distinct sessions once each, as the cache counts them and as ``tracemalloc``
  sees them.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import statistics
import tempfile
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness import log, servers, timing, workload
from benchmarks.harness.engines import (
    FLOOR,
    MEMOPT_REDIS,
    MEMOPT_REDIS_CACHED,
    REDIS_CACHE,
    Engine,
)
from benchmarks.harness.report import met, render, table, us
from benchmarks.harness.workload import READ_KEYS, SIZES, Payloads
from benchmarks.scenarios import engines as engines_scenario

CACHED = MEMOPT_REDIS_CACHED
#: The cache's bound in every part: ``MEMOPT_REDIS_CLIENT_CACHE``'s suggested value.
CACHE_BYTES = 32 * 1024 * 1024
SETTING = "MEMOPT_REDIS_CLIENT_CACHE"
OPERATIONS = ("read-only", "typical")
ARMS = (CACHED, MEMOPT_REDIS, REDIS_CACHE, FLOOR)  # the single-process table's rows
WORKER_ARMS = (CACHED, MEMOPT_REDIS, REDIS_CACHE)
MIXES = (0.9, 0.5)  # the share of read-only requests
LOOKUPS = ("cache_hits", "cache_misses", "cache_bypasses")


@dataclass(frozen=True)
class Profile:
    sessions: int  # per size and engine, for the single-process part
    rounds: int
    burst: int
    warmup: int
    workers: int
    worker_sessions: int  # medium sessions per engine in the workers part
    block: int  # requests per worker per block
    blocks: int  # recorded blocks per mix (one more, first, is not recorded)
    held: tuple[int, ...]  # distinct sessions loaded, for the bytes held
    channels: tuple[int, ...]  # subscribed channels, for the cost of a write's fan-out
    writes: int  # typical requests per channel count
    drains: int  # look-ups timed, for the cost of taking in the channel


FULL = Profile(
    sessions=500,
    rounds=300,
    burst=11,
    warmup=5,
    workers=4,
    worker_sessions=1000,
    block=1500,
    blocks=4,
    held=(100, 1_000, 10_000),
    channels=(0, 4, 16, 64, 256),
    writes=2000,
    drains=5000,
)
QUICK = Profile(
    sessions=30,
    rounds=10,
    burst=5,
    warmup=2,
    workers=4,
    worker_sessions=50,
    block=60,
    blocks=1,
    held=(10, 100),
    channels=(0, 4),
    writes=50,
    drains=100,
)


@dataclass
class WorkerRow:
    mix: float
    engine: str
    requests: int
    median_ns: float
    p99_ns: float
    lookups: dict[str, int]  # hits, misses, bypasses of the client-side cache
    sent: float  # commands the workers sent to Redis, per request
    ran: float  # commands Redis ran, per request (those inside scripts included)

    @property
    def hit_rate(self) -> float | None:
        loads = sum(self.lookups.values())
        return self.lookups.get("cache_hits", 0) / loads if loads else None


@dataclass
class HeldRow:
    size: str
    loaded: int  # distinct sessions loaded once each
    held: int  # sessions the cache holds afterwards
    counted: int  # bytes, as the cache counts them against its bound
    traced: int  # bytes Python allocated and still holds (tracemalloc)


@dataclass
class FanOutRow:
    channels: int  # other processes' channels subscribed (besides the benchmark's own)
    cpu_us: float  # Redis's CPU time per typical request (user + system)
    median_ns: float  # the typical request's time


@dataclass
class Result:
    profile: Profile
    medians: dict[tuple[str, str, str], float]  # (operation, size, engine) -> ns
    noise: dict[tuple[str, str, str], float]
    hit_rates: dict[tuple[str, str], float]  # (operation, size) -> share served locally
    anomalies: Counter[str]
    workers: list[WorkerRow]
    held: list[HeldRow]
    fan_out: list[FanOutRow]
    drain_ns: tuple[float, float]  # a look-up with nothing on the channel, and with a message
    redis: dict[str, str]
    placement: str
    round_trip: float  # one PING (ns)
    script_us: float  # Redis's own time per EVALSHA (the save) in the single-process part
    cpus: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    def ns(self, op: str, size: str, name: str) -> float:
        return self.medians[(op, size, name)]

    def ratio(self, op: str, size: str, name: str, base: str) -> float:
        return self.ns(op, size, name) / self.ns(op, size, base)

    def worker_row(self, mix: float, name: str) -> WorkerRow:
        return next(row for row in self.workers if row.mix == mix and row.engine == name)


def _lookups() -> dict[str, int]:
    from django_memopt import counters

    totals = counters.process_totals()
    return {name: totals.get(name, 0) for name in LOOKUPS}


def _since(before: dict[str, int]) -> dict[str, int]:
    return {name: value - before[name] for name, value in _lookups().items()}


def _engines(config: dict[str, str]) -> list[Engine]:
    """Django's ``cache`` engine, the floor and ``memopt-redis`` without its cache, as the
    registry makes them, and ``memopt-redis`` with it: the same engine, its own sessions."""
    made = registry.make_engines(config, [REDIS_CACHE, MEMOPT_REDIS, FLOOR])
    memopt = registry.named(made, MEMOPT_REDIS)
    memopt.settings = {SETTING: 0}
    cached = Engine(CACHED, memopt.module, on_redis=True, settings={SETTING: CACHE_BYTES})
    cached.store = memopt.store
    return [cached, *made]


def _warm(engine: Engine, sizes: tuple[str, ...] = SIZES) -> None:
    """Load each of ``engine``'s sessions once (its cache then holds them)."""
    engine.activate()
    for size in sizes:
        for key in engine.keys[size]:
            engine.store(key).get(READ_KEYS[0])


# -- one process -----------------------------------------------------------------------------


def _single(
    engines: list[Engine], payloads: Payloads, profile: Profile, rng: random.Random
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "medians": {},
        "noise": {},
        "samples": {},
        "hit_rates": {},
        "anomalies": Counter(),
    }
    for op in OPERATIONS:
        for size in SIZES:
            before = _lookups()
            samples = engines_scenario._time_cell(
                op,
                size,
                engines,
                payloads,
                profile.rounds,
                profile.burst,
                profile.warmup,
                rng,
                found["anomalies"],
            )
            lookups = _since(before)
            found["hit_rates"][(op, size)] = lookups["cache_hits"] / max(1, sum(lookups.values()))
            for engine, values in samples.items():
                cell = (op, size, engine.name)
                found["medians"][cell] = statistics.median(values)
                found["noise"][cell] = timing.relative_noise(values)
                found["samples"][f"{op} {size} {engine.name}"] = values
            log(
                f"{op:>9} {size:>6}: "
                + ", ".join(
                    f"{e.name} {found['medians'][(op, size, e.name)] / 1000:.1f}" for e in samples
                )
                + f"; served locally {found['hit_rates'][(op, size)]:.1%}"
            )
    return found


# -- workers ---------------------------------------------------------------------------------


def _commands_in(data: bytes) -> int:
    """How many commands a buffer of RESP requests holds (arrays of bulk strings)."""
    count = position = 0
    while position < len(data):
        end = data.index(b"\r\n", position)
        items = int(data[position + 1 : end])
        position = end + 2
        for _ in range(items):
            end = data.index(b"\r\n", position)
            position = end + 2 + int(data[position + 1 : end]) + 2
        count += 1
    return count


def _count_sent_commands() -> Counter[str]:
    """Count every command this process sends to Redis while ``["on"]`` is set (in
    ``["sent"]``): through redis-py's connections (django-redis, the engine) and the
    client-side cache's links. Off, it costs a look-up per send."""
    import redis.connection

    from django_memopt import client_cache

    sent: Counter[str] = Counter()
    send_packed = redis.connection.AbstractConnection.send_packed_command
    link_send = client_cache._Link.send_packed

    def counted_send_packed(self: Any, command: Any, check_health: bool = True) -> None:
        if sent["on"]:
            chunks = [command] if isinstance(command, (bytes, str)) else command
            data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
            sent["sent"] += _commands_in(data)
        send_packed(self, command, check_health)

    def counted_link_send(self: Any, data: bytes) -> None:  # the probe, the lag fence
        if sent["on"]:
            sent["sent"] += _commands_in(data)
        link_send(self, data)

    redis.connection.AbstractConnection.send_packed_command = counted_send_packed  # type: ignore[method-assign]
    client_cache._Link.send_packed = counted_link_send  # type: ignore[method-assign]
    return sent


def _serve_requests(connection: Any, config: dict[str, str], keys: dict[str, list[str]]) -> None:
    """A worker: serves each block it is sent, and sends back what it measured.

    A block is (engine, share of read-only requests, requests, seed, whether to count the
    commands sent); the reply is (timings, cache look-ups, commands sent, sessions not
    found)."""
    registry.configure(config)
    engines = {engine.name: engine for engine in _engines(config) if engine.name in keys}
    for name, engine in engines.items():
        engine.keys = {"medium": keys[name]}
    sent = _count_sent_commands()
    while (order := connection.recv()) is not None:
        name, mix, requests, seed, counting = order
        engine, rng = engines[name], random.Random(seed)
        engine.activate()
        pool = engine.keys["medium"]
        timings, anomalies = [], 0
        sent["on"] = counting  # parsing what is sent takes time: not in timed blocks
        before, sent_before = _lookups(), sent["sent"]
        for n in range(requests):
            key = pool[rng.randrange(len(pool))]
            request = workload.read_only if rng.random() < mix else workload.typical
            start = timing.perf_ns()
            session = request(engine.store, key, seed + n)
            timings.append(timing.perf_ns() - start)
            anomalies += session.get(READ_KEYS[0]) is None
        connection.send((timings, _since(before), sent["sent"] - sent_before, anomalies))


def _commands_run(admin: Any) -> int:
    """Every command Redis has run, less the ``INFO`` calls (this probe's own)."""
    stats = admin.info("commandstats")
    return sum(int(found["calls"]) for name, found in stats.items() if name != "cmdstat_info")


def _workers(
    cpus: set[int],
    engines: list[Engine],
    config: dict[str, str],
    payloads: Payloads,
    profile: Profile,
    admin: Any,
    anomalies: Counter[str],
) -> list[WorkerRow]:
    """The multi-worker run: every mix, every engine, in alternating blocks."""
    arms = [engine for engine in engines if engine.name in WORKER_ARMS]
    keys: dict[str, list[str]] = {}
    for engine in arms:
        engine.activate()
        keys[engine.name] = []
        for j in range(profile.worker_sessions):
            session = engine.store(None)
            session.update(workload.session_payload(payloads, "medium", j))
            session.save()
            keys[engine.name].append(session.session_key)
    ctx = multiprocessing.get_context("spawn")
    links, processes = [], []
    for _ in range(profile.workers):
        here, there = ctx.Pipe()
        process = ctx.Process(target=_serve_requests, args=(there, config, keys), daemon=True)
        process.start()
        links.append(here)
        processes.append(process)
    for process in processes:  # the workers share every CPU with Redis, as on one host
        os.sched_setaffinity(process.pid, cpus)
    rng = random.Random(workload.SEED + 7)
    rows = []
    try:
        for mix in MIXES:
            timings: dict[str, list[float]] = {engine.name: [] for engine in arms}
            lookups: dict[str, Counter[str]] = {engine.name: Counter() for engine in arms}
            sent: Counter[str] = Counter()
            ran: Counter[str] = Counter()
            # A warm-up block (each worker's cache fills, its pools connect), the recorded
            # blocks, then one block per engine counting the commands sent.
            for block in range(profile.blocks + 2):
                order = list(arms)
                rng.shuffle(order)
                counting = block == profile.blocks + 1
                for engine in order:
                    ran_before = _commands_run(admin)
                    for link in links:
                        seed = rng.randrange(1 << 30)
                        link.send((engine.name, mix, profile.block, seed, counting))
                    replies = [link.recv() for link in links]
                    ran_after = _commands_run(admin)
                    if counting:
                        sent[engine.name] += sum(reply[2] for reply in replies)
                        continue
                    if block == 0:
                        continue
                    ran[engine.name] += ran_after - ran_before
                    for values, counted, _, failed in replies:
                        timings[engine.name] += values
                        lookups[engine.name].update(counted)
                        if failed:
                            anomalies[f"workers: {engine.name}: session not found"] += failed
            for engine in arms:
                values = sorted(timings[engine.name])
                requests = len(values)
                rows.append(
                    WorkerRow(
                        mix,
                        engine.name,
                        requests,
                        statistics.median(values),
                        values[min(requests - 1, int(requests * 0.99))],
                        dict(lookups[engine.name]),
                        sent[engine.name] / (profile.block * profile.workers),
                        ran[engine.name] / requests,
                    )
                )
                row = rows[-1]
                log(
                    f"workers {mix:.0%} read-only, {engine.name}: median "
                    f"{row.median_ns / 1000:.0f} µs, p99 {row.p99_ns / 1000:.0f} µs, "
                    f"hit rate {row.hit_rate}, "
                    f"sent {row.sent:.2f}, ran {row.ran:.2f}"
                )
    finally:
        for link in links:
            link.send(None)
        for process in processes:
            process.join(30)
    return rows


# -- bytes held ------------------------------------------------------------------------------


def _empty_cache(engine: Engine, key: str) -> Any:
    """A new client-side cache, connected and confirmed (it holds ``key`` only)."""
    import time

    from django.core.signals import setting_changed

    from django_memopt.backends import redis as backend

    # What override_settings sends: the engine closes its cache and makes a new one.
    setting_changed.send(sender=None, setting=SETTING, value=CACHE_BYTES, enter=True)
    deadline = time.monotonic() + 10
    while True:
        engine.store(key).get(READ_KEYS[0])
        cache = backend.client_cache()
        if cache is not None and cache.entries:
            return cache
        if time.monotonic() > deadline:
            raise SystemExit(f"{CACHED}: the cache never held a session")
        time.sleep(0.01)


def _held(engine: Engine, payloads: Payloads, profile: Profile) -> list[HeldRow]:
    """For each size and count: that many new sessions loaded once each by a cache that
    starts empty; what it holds then."""
    engine.activate()
    rows = []
    for size in SIZES:
        keys: list[str] = []
        for count in profile.held:
            while len(keys) < count:
                session = engine.store(None)
                session.update(workload.session_payload(payloads, size, len(keys)))
                session.save()
                keys.append(session.session_key)  # type: ignore[arg-type]  # saved
            cache = _empty_cache(engine, keys[0])
            tracemalloc.start()
            start = tracemalloc.get_traced_memory()[0]
            for key in keys[:count]:
                engine.store(key).get(READ_KEYS[0])
            traced = tracemalloc.get_traced_memory()[0] - start
            tracemalloc.stop()
            rows.append(HeldRow(size, count, len(cache.entries), cache.used, traced))
            log(f"held {size} x {count}: {len(cache.entries)} sessions, {cache.used:,} B")
        for key in keys:
            engine.store(key).delete()
    return rows


# -- taking in the channel ---------------------------------------------------------------------


def _drain(engine: Engine, admin: Any, profile: Profile) -> tuple[float, float]:
    """The cache's look-up of a held session (its ``get``: it first takes in whatever the
    channel holds), with nothing there, and with one invalidation there (another session,
    written by another client, so the held one is still served)."""
    import select

    from django_memopt.backends import redis as backend

    engine.activate()
    session_key, other_key = engine.keys["small"][:2]
    held, other = (
        (backend.conf.MEMOPT_REDIS_KEY_PREFIX + key).encode() for key in (session_key, other_key)
    )
    engine.store(session_key).load()
    cache = backend.client_cache()
    assert cache is not None and cache.get(held) is not None
    quiet, told = [], []
    for _ in range(profile.drains):
        start = timing.perf_ns()
        cache.get(held)
        quiet.append(timing.perf_ns() - start)
        admin.pexpire(other, 3_600_000)
        channel = cache._channel
        if channel is not None:  # the message is in this process's socket before timing
            select.select([channel.sock], [], [], 1)
        start = timing.perf_ns()
        found = cache.get(held)
        told.append(timing.perf_ns() - start)
        if found is None:
            raise SystemExit(f"{CACHED}: a write to another session dropped the held one")
    return statistics.median(quiet), statistics.median(told)


# -- fan-out ---------------------------------------------------------------------------------


def _redis_cpu(admin: Any) -> float:
    found = admin.info("cpu")
    return float(found["used_cpu_user"]) + float(found["used_cpu_sys"])


def _fan_out(engine: Engine, admin: Any, port: int, profile: Profile) -> list[FanOutRow]:
    """Typical requests on ``engine`` (the cache off) while other processes' channels are
    subscribed, as the client-side cache subscribes them: what each write costs Redis."""
    import select
    import threading

    import redis.connection

    from django_memopt.conf import conf

    engine.activate()
    keys = engine.keys["medium"]
    rng = random.Random(workload.SEED + 11)
    rows = []
    for count in profile.channels:
        channels = []
        for _ in range(count):
            channel = redis.connection.Connection(port=port, protocol=2)
            channel.connect()
            channel.send_command("CLIENT", "ID")
            own = channel.read_response()
            prefix = conf.MEMOPT_REDIS_KEY_PREFIX
            channel.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", own, "BCAST", "PREFIX", prefix
            )
            channel.read_response()
            channel.send_command("SUBSCRIBE", "__redis__:invalidate")
            channel.read_response()
            channels.append(channel)
        stop = threading.Event()

        def drain(channels: list[Any], stop: threading.Event) -> None:
            # As each process does: read what comes, so Redis never holds it back.
            poller = select.poll()
            sockets = {channel._sock.fileno(): channel._sock for channel in channels}
            for fd in sockets:
                poller.register(fd, select.POLLIN)
            while not stop.is_set():
                for fd, _ in poller.poll(50):
                    sockets[fd].recv(1 << 16)

        reader = threading.Thread(target=drain, args=(channels, stop))
        reader.start()
        try:
            timings = []
            before = _redis_cpu(admin)
            for n in range(profile.writes):
                start = timing.perf_ns()
                workload.typical(engine.store, keys[rng.randrange(len(keys))], n)
                timings.append(timing.perf_ns() - start)
            used = _redis_cpu(admin) - before
        finally:
            stop.set()
            reader.join()
            for channel in channels:
                channel.disconnect()
        rows.append(FanOutRow(count, used / profile.writes * 1e6, statistics.median(timings)))
        log(f"fan-out to {count} channels: {rows[-1].cpu_us:.1f} µs of Redis CPU per write")
    return rows


# -- the scenario ----------------------------------------------------------------------------


def measure(quick: bool) -> Result:
    profile = QUICK if quick else FULL
    base = tempfile.mkdtemp(prefix="memopt-bench-client-cache-")
    cpus = os.sched_getaffinity(0)
    with servers.redis_server() as server:
        try:
            pinned = servers.pin(server, "split")
            config = registry.make_config(base, server.url, server.port)
            registry.configure(config)
            engines = _engines(config)
            admin = servers.client(server.url)
            payloads = workload.make_payloads()
            log("populating...")
            registry.populate(engines, payloads, profile.sessions, admin)
            cached = registry.named(engines, CACHED)
            _warm(cached)
            rng = random.Random(workload.SEED)
            admin.config_resetstat()
            single = _single(engines, payloads, profile, rng)
            script = admin.info("commandstats").get("cmdstat_evalsha", {})
            log("workers...")
            rows = _workers(cpus, engines, config, payloads, profile, admin, single["anomalies"])
            log("bytes held...")
            held = _held(cached, payloads, profile)
            drain_ns = _drain(cached, admin, profile)
            log("fan-out...")
            fan_out = _fan_out(registry.named(engines, MEMOPT_REDIS), admin, server.port, profile)
            return Result(
                profile=profile,
                workers=rows,
                held=held,
                fan_out=fan_out,
                drain_ns=drain_ns,
                redis=servers.versions(admin),
                placement=pinned,
                round_trip=servers.round_trip_ns(admin),
                script_us=float(script.get("usec_per_call", 0)),
                cpus=len(cpus),
                **single,
            )
        finally:
            shutil.rmtree(base, ignore_errors=True)


# -- the pages -------------------------------------------------------------------------------


def _speedups(found: Result) -> dict[tuple[str, str], float]:
    """Django's ``cache`` engine's time over the cached engine's, per (operation, size)."""
    return {
        (op, size): found.ratio(op, size, REDIS_CACHE, CACHED)
        for op in OPERATIONS
        for size in SIZES
    }


TARGETS = (("read-only", "medium", 5.0), ("typical", "medium", 2.0), ("typical", "large", 5.0))


def targets(found: Result) -> list[tuple[str, float, float, bool]]:
    """Each target: (its cell in words, its speed-up over Django's ``cache`` engine, the
    speed-up asked for, whether it was met)."""
    speedups = _speedups(found)
    return [
        (f"{op} {size}", speedups[(op, size)], goal, speedups[(op, size)] >= goal)
        for op, size, goal in TARGETS
    ]


def _single_tables(found: Result) -> str:
    parts = []
    for op in OPERATIONS:
        header = ["engine", *(f"{size} µs" for size in SIZES), "`cache` ÷ engine"]
        rows = []
        for name in ARMS:
            rows.append(
                [
                    f"`{name}`",
                    *(us(found.ns(op, size, name)) for size in SIZES),
                    " / ".join(
                        f"{found.ratio(op, size, REDIS_CACHE, name):.2f}" for size in SIZES
                    ),
                ]
            )
        served = " / ".join(f"{found.hit_rates[(op, size)]:.1%}" for size in SIZES)
        parts.append(f"#### {op}: {workload.OPERATION_TEXT[op]}\n")
        parts.append(table(header, rows))
        parts.append(
            f"Loads the cache served in the timed requests: {served} (small / medium / large).\n"
        )
    return "\n".join(parts)


def _worker_table(found: Result) -> str:
    rows = []
    for row in found.workers:
        rate = row.hit_rate
        rows.append(
            [
                f"{row.mix:.0%} / {1 - row.mix:.0%}",
                f"`{row.engine}`",
                "" if rate is None else f"{rate:.1%}",
                us(row.median_ns),
                us(row.p99_ns),
                f"{row.sent:.2f}",
                f"{row.ran:.2f}",
            ]
        )
    header = [
        "read-only / typical",
        "engine",
        "served locally",
        "median µs",
        "p99 µs",
        "commands sent per request",
        "commands Redis ran per request",
    ]
    return table(header, rows, "llrrrrr")


def _held_table(found: Result) -> str:
    rows = [
        [
            row.size,
            f"{row.loaded:,}",
            f"{row.held:,}",
            f"{row.counted / 1024 / 1024:,.2f}",
            f"{row.traced / 1024 / 1024:,.2f}",
            f"{row.counted / max(1, row.held):,.0f}",
        ]
        for row in found.held
    ]
    header = ["session", "loaded", "held", "MiB counted", "MiB traced", "bytes per session held"]
    return table(header, rows)


def _fan_out_table(found: Result) -> str:
    base = found.fan_out[0]
    rows = [
        [
            f"{row.channels:,}",
            f"{row.cpu_us:.1f}",
            f"{(row.cpu_us - base.cpu_us) / row.channels:.2f}" if row.channels else "",
            us(row.median_ns),
        ]
        for row in found.fan_out
    ]
    header = [
        "other processes' channels",
        "Redis CPU µs per typical request",
        "µs more per channel",
        "typical request µs",
    ]
    return table(header, rows)


def section(found: Result) -> str:
    """The scenario's section of a page."""
    profile = found.profile
    verdicts = "\n".join(
        f"- {cell}: `{CACHED}` {speedup:.2f}x faster than Django's `cache` engine (asked: "
        f"{goal:g}x): {met(ok)}"
        for cell, speedup, goal, ok in targets(found)
    )
    mixes = " and ".join(f"{mix:.0%}" for mix in MIXES)
    return render(
        "client-cache",
        cached=CACHED,
        cache_mib=CACHE_BYTES // (1024 * 1024),
        sessions=profile.sessions,
        rounds=profile.rounds,
        recorded=profile.burst - 1,
        single=_single_tables(found),
        verdicts=verdicts,
        round_trip=us(found.round_trip),
        script_us=f"{found.script_us:.1f}",
        typical_floor=us(found.ns("typical", "medium", FLOOR)),
        typical_cached=us(found.ns("typical", "medium", CACHED)),
        client_us=us(
            found.ns("typical", "medium", CACHED) - found.round_trip - found.script_us * 1000
        ),
        read_cached=us(found.ns("read-only", "medium", CACHED)),
        workers=profile.workers,
        worker_sessions=profile.worker_sessions,
        block=profile.block,
        blocks=profile.blocks,
        per_session=round(
            profile.block * profile.workers * (profile.blocks + 1) / profile.worker_sessions
        ),
        mixes=mixes,
        cpus=found.cpus,
        worker_table=_worker_table(found),
        held_table=_held_table(found),
        fan_out_table=_fan_out_table(found),
        drain_quiet=f"{found.drain_ns[0] / 1000:.2f}",
        drain_told=f"{found.drain_ns[1] / 1000:.2f}",
        drains=profile.drains,
        writes=profile.writes,
        anomalies=", ".join(f"{k}: {v}" for k, v in found.anomalies.items()) or "none",
        redis=found.redis["redis-server"],
        placement=found.placement,
    )
