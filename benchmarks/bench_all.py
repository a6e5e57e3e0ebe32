"""Every benchmark side by side in one run, written up as one page: ``docs/benchmarks.md``.

Run from the repository root, with the package installed with its ``redis`` extra and
``benchmarks/requirements.txt``::

    python benchmarks/bench_all.py --quick
    python benchmarks/bench_all.py --output docs/benchmarks.md

One process tree runs, one after the other:

* in this process, the engine comparison: django-memopt's LMDB and Redis engines and
  Django's ``db`` (SQLite), ``cached_db``, ``file``, ``cache`` (on locmem and on
  django-redis) and ``signed_cookies`` engines, with django-redis-sessions and the floor of
  plain Redis round trips, all in the same interleaved rounds, against one ``redis-server``
  the script starts (the timing, payloads, bytes and lost-update code is that of
  ``bench_engines.py`` and ``bench_redis.py``);
* the same engines' lost updates under concurrent writer processes and threads;
* in a fresh child process each (each configures Django its own way): the flood of
  unknown and forged session IDs (``bench_gate.py``), the pooling measurements
  (``bench_pooling.py``) and the collector under gunicorn (``bench_gc.py``).

The page ends with the performance targets of the design and the seven claims the app
grew out of, each with this run's figures and a verdict. With ``--output`` the plots go to
``_static/benchmarks/`` beside the page; without it the page is printed and the plots go
to ``--plots`` or a temporary directory. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import bench_engines as be
import bench_gate
import bench_gc
import bench_redis as br
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore

MEMOPT_LMDB = be.MEMOPT
MEMOPT_REDIS = br.MEMOPT
SIGNED = "django signed_cookies"
# The order of the tables, plots and legends; each engine's short name in the plots.
ENGINES = {
    MEMOPT_LMDB: "memopt-lmdb",
    MEMOPT_REDIS: "memopt-redis",
    be.DB: "db (SQLite)",
    br.CACHED_DB: "cached_db",
    be.FILE: "file",
    be.CACHE: "cache (locmem)",
    br.CACHE: "cache (django-redis)",
    SIGNED: "signed_cookies",
    br.REDIS_SESSIONS: "django-redis-sessions",
    br.FLOOR: "floor (raw redis-py)",
}
ON_REDIS = (MEMOPT_REDIS, br.CACHED_DB, br.CACHE, br.REDIS_SESSIONS, br.FLOOR)
BROWSER_COOKIE_LIMIT = 4096  # bytes of one cookie that browsers are required to keep
GC_CLIENTS, GC_WORKERS = 4, 2
SEED = 1


@dataclass(frozen=True)
class Profile:
    engines: be.Profile
    bytes_samples: int  # saves sampled for the bytes written per save, per engine
    lazy_samples: int  # requests per variant, engine and size for the lazy-decoding table
    gate_quick: bool  # bench_gate's own quick profile, or its full one
    gc_rounds: int
    gc_requests: int  # per setup and round
    pooling_number: int  # timeit loops
    pooling_repeat: int


FULL = Profile(
    engines=be.FULL,
    bytes_samples=50,
    lazy_samples=2000,
    gate_quick=False,
    gc_rounds=10,
    gc_requests=1000,
    pooling_number=20000,
    pooling_repeat=15,
)
QUICK = Profile(
    engines=be.QUICK,
    bytes_samples=10,
    lazy_samples=100,
    gate_quick=True,
    gc_rounds=2,
    gc_requests=200,
    pooling_number=2000,
    pooling_repeat=5,
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- engines -----------------------------------------------------------------------------


class LocMemCacheSessionStore(CacheSessionStore):
    """Django's ``cache`` engine on the locmem cache ``default``.

    ``SESSION_CACHE_ALIAS`` names the Redis cache in this run (the ``cache`` engine on
    django-redis and django-memopt's Redis engine use it), so this copy of Django's
    ``__init__`` names the other cache; nothing else differs.
    """

    def __init__(self, session_key: str | None = None) -> None:
        from django.core.cache import caches

        self._cache = caches["default"]
        SessionBase.__init__(self, session_key)


class BrowserJar:
    """Django's ``signed_cookies`` engine as browsers drive it, for the lost-update test.

    With that engine the session *is* the cookie, so concurrent requests race in the
    browser: each request carries the cookie the browser holds when it is sent, and each
    response's ``Set-Cookie`` replaces it, the last to arrive winning. The browser's
    cookie jar is a file here (writer threads and processes share it), and its path is
    the "session key" the lost-update test passes around: making a session reads the jar
    (the request is sent), ``save()`` puts the new cookie in it (the response arrives).
    Everything else is the engine's own ``SessionStore``.
    """

    directory = ""

    def __init__(self, jar: str | None = None) -> None:
        from django.contrib.sessions.backends.signed_cookies import SessionStore

        cookie = None
        if jar is None:
            jar = os.path.join(self.directory, f"jar-{uuid.uuid4().hex}")
        else:
            with open(jar) as held:
                cookie = held.read()
        self.session_key = jar
        self._session = SessionStore(cookie)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._session[name] = value

    def save(self, must_create: bool = False) -> None:
        self._session.save(must_create)
        arriving = f"{self.session_key}.{os.getpid()}.{threading.get_ident()}"
        with open(arriving, "w") as response:
            response.write(self._session.session_key)
        os.replace(arriving, self.session_key)  # atomic: a whole cookie, one or the other


def make_config(base: str, server: Any) -> dict[str, str]:
    return {
        **be.make_config(base),
        "redis_url": server.url,
        "redis_port": str(server.port),
        "jars": os.path.join(base, "cookie-jars"),
    }


def configure_django(config: dict[str, str]) -> None:
    """``bench_engines``' settings plus ``bench_redis``' Redis cache (once per process)."""
    redis = br.redis_settings(config)
    caches = be.django_settings(config)["CACHES"]
    os.makedirs(config["jars"], exist_ok=True)
    be.configure_django(
        config,
        {
            "CACHES": {**caches, br.ALIAS: redis["cache"]},
            "SESSION_CACHE_ALIAS": br.ALIAS,
            "SESSION_REDIS": redis["SESSION_REDIS"],
        },
    )
    br.drop_django_log_records()


def make_engines(config: dict[str, str], *, browser_jar: bool = False) -> list[be.Engine]:
    """Every engine of the comparison, in the order of ``ENGINES``.

    ``browser_jar``: the ``signed_cookies`` engine goes through :class:`BrowserJar`
    (for the lost-update test; timing uses the engine as it is).
    """
    found = {engine.name: engine for engine in be.make_engines(config)}
    found.update((engine.name, engine) for engine in br.make_engines(config))
    found[be.CACHE].store = LocMemCacheSessionStore
    signed = be.Engine(SIGNED, "django.contrib.sessions.backends.signed_cookies")
    signed.cookie_store = True
    signed.load()
    if browser_jar:
        BrowserJar.directory = config["jars"]
        signed.store = BrowserJar
    found[SIGNED] = signed
    return [found[name] for name in ENGINES if name in found]


def writer_engines(config: dict[str, str]) -> list[be.Engine]:
    """What a writer process of the lost-update test starts with."""
    configure_django(config)
    return make_engines(config, browser_jar=True)


# -- lazy decoding -----------------------------------------------------------------------


def read_every_key(store: Any, key: str, _arg: Any) -> Any:
    """The read-only request with every field decoded at the start, as an eager load does."""
    session = store(key)
    dict(session.items())
    session.get(be.READ_KEYS[0])
    session.get(be.READ_KEYS[1])
    be.respond(session)
    return session


@dataclass
class LazyRow:
    engine: str
    size: str
    lazy_ns: float  # the read-only request: two fields decoded
    eager_ns: float  # the same request decoding every field


def time_lazy_decoding(
    engines: list[be.Engine], samples: int, rng: random.Random
) -> list[LazyRow]:
    """Median ns of the read-only request and of :func:`read_every_key`, interleaved."""
    perf = time.perf_counter_ns
    rows = []
    for name in (MEMOPT_LMDB, MEMOPT_REDIS):
        engine = be.engine_named(engines, name)
        engine.activate()
        for size in be.SIZES:
            keys = engine.keys[size]
            timings: dict[Callable[..., Any], list[int]] = {
                be.op_read_only: [],
                read_every_key: [],
            }
            order = list(timings)
            gc.collect()
            for _ in range(samples):
                rng.shuffle(order)
                for op in order:
                    key = keys[rng.randrange(len(keys))]
                    start = perf()
                    op(engine.store, key, None)
                    timings[op].append(perf() - start)
            rows.append(
                LazyRow(
                    name,
                    size,
                    statistics.median(timings[be.op_read_only]),
                    statistics.median(timings[read_every_key]),
                )
            )
    return rows


# -- the engine comparison ---------------------------------------------------------------


@dataclass
class SaveBytes:
    engine: str
    written: float  # bytes one save writes or sends (median)
    rewrite: float | None  # the same for a whole-session rewrite
    counted: str  # what the figures count


@dataclass
class EngineRun:
    names: list[str]
    medians: dict[tuple[str, str, str], float]
    anomalies: Counter[str]
    size_rows: list[list[str]]
    cookie_bytes: dict[str, int]  # the signed_cookies cookie of each session size
    lmdb_bytes: list[be.BytesRow]
    redis_bytes: list[br.BytesRow]
    concurrency: list[be.ConcurrencyRow]
    lazy: list[LazyRow]
    versions: dict[str, str]
    placement: str
    round_trips: tuple[float, float]
    skipped: str | None  # why django-redis-sessions was left out
    fs_type: str


def measure_engines(profile: Profile) -> EngineRun:
    """The engine comparison, in this process, against a ``redis-server`` of its own."""
    from django.core.management import call_command
    from django.db import connections

    from django_memopt.backends.lmdb import close_environments

    servers = br.redis_server_module()
    server = servers.RedisServer(servers.free_port()).start()
    base = tempfile.mkdtemp(prefix="memopt-bench-all-")
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        placement = br.pin(server, "split")
        config = make_config(base, server)
        configure_django(config)
        call_command("migrate", run_syncdb=True, verbosity=0)
        skipped = br.redis_sessions_status()
        if skipped is not None:
            log(f"django-redis-sessions left out: {skipped}")
        engines = make_engines(config)
        names = [engine.name for engine in engines]
        admin = br.admin_client(config)
        versions = br._versions(admin)
        round_trip_start = br.round_trip_ns(admin)
        log(f"redis-server {versions['redis-server']}; populating {len(engines)} engines...")
        payloads = {size: be.make_payloads(size) for size in be.SIZES}
        for engine in engines:
            if engine.name == br.FLOOR:
                br.populate_floor(engine, be.engine_named(engines, MEMOPT_REDIS), admin)
                continue
            be.populate(engine, payloads, profile.engines.sessions)
            be.check_engine(engine, payloads)

        rng = random.Random(be.SEED)
        medians, anomalies = be.time_cells(engines, payloads, profile.engines, rng)
        log("lazy decoding...")
        lazy = time_lazy_decoding(engines, profile.lazy_samples, rng)

        log("bytes per save...")
        wire = br.Wire(admin)
        lmdb_bytes, redis_bytes = [], []
        for engine in engines:
            if engine.name in ON_REDIS:
                redis_bytes.append(
                    br.measure_bytes(engine, profile.bytes_samples, rng, wire, admin)
                )
            else:
                lmdb_bytes.append(be.measure_bytes(engine, profile.bytes_samples, rng))
        size_rows = be.size_table_rows(engines, payloads, MEMOPT_LMDB)
        signed = be.engine_named(engines, SIGNED)
        cookie_bytes = {size: len(signed.keys[size][0]) for size in be.SIZES}

        log("concurrent writers...")
        writers = [
            engine for engine in make_engines(config, browser_jar=True) if engine.name != br.FLOOR
        ]
        target = partial(be._process_writer, engines_for=writer_engines)
        concurrency = be.run_writers(writers, config, payloads, profile.engines, target)
        round_trip_end = br.round_trip_ns(admin)
        connections.close_all()
        close_environments()
        return EngineRun(
            names=names,
            medians=medians,
            anomalies=anomalies,
            size_rows=size_rows,
            cookie_bytes=cookie_bytes,
            lmdb_bytes=lmdb_bytes,
            redis_bytes=redis_bytes,
            concurrency=concurrency,
            lazy=lazy,
            versions=versions,
            placement=placement,
            round_trips=(round_trip_start, round_trip_end),
            skipped=skipped,
            fs_type=be._filesystem(os.path.realpath(base)),
        )
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)  # the children that follow get every CPU


def writers(run: EngineRun) -> dict[str, int]:
    """How many writers each mode of the lost-update test ran: processes, threads."""
    return {row.mode: row.writers for row in run.concurrency}


def save_bytes(run: EngineRun) -> list[SaveBytes]:
    """Bytes per save of every engine, in table order, with what each figure counts."""
    counted = {
        MEMOPT_LMDB: "the delta: the sealed fields changed",
        be.DB: "the encoded session (`session_data`)",
        be.FILE: "the session file",
        be.CACHE: "the pickled session",
        SIGNED: "the new cookie: the whole signed session",
        MEMOPT_REDIS: "received by Redis: the `EVALSHA` and its arguments",
        br.CACHED_DB: "received by Redis: the cache `SET` (the database row is written too)",
        br.CACHE: "received by Redis: the `GET` and the `SET`",
        br.REDIS_SESSIONS: "received by Redis: the `SETEX`",
        br.FLOOR: "received by Redis: one `HSET` of the changed key",
    }
    found = {
        row.engine: SaveBytes(row.engine, row.written, row.rewrite, counted[row.engine])
        for row in run.lmdb_bytes
    }
    for wire in run.redis_bytes:
        found[wire.engine] = SaveBytes(
            wire.engine, wire.save_in, wire.rewrite_in, counted[wire.engine]
        )
    return [found[name] for name in run.names]


# -- the other benchmarks, each in a fresh process ---------------------------------------


class PartFailed(Exception):
    """A benchmark run in a child process raised or died; the message says how."""


def _run_and_send(sender: Any, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = (True, func(*args))
    except BaseException:
        result = (False, traceback.format_exc())
    sender.send(result)
    sender.close()


def in_fresh_process(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in a new interpreter (spawned): Django is set up once per process.

    Raises :class:`PartFailed` with the child's traceback if it raised or died.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_run_and_send, args=(sender, func, args))
    child.start()
    sender.close()
    try:
        ok, value = receiver.recv()
    except EOFError:
        ok, value = False, "the child process ended without a result"
    child.join()
    if not ok:
        raise PartFailed(value)
    return value


def gc_setups(rounds: int, requests: int, seed: int) -> list[bench_gc.Setup]:
    """``bench_gc``'s setups, measured (their server processes are gone by then)."""
    bench_gc.measure(rounds, requests, GC_CLIENTS, GC_WORKERS, seed)
    return [dataclasses.replace(setup, process=None) for setup in bench_gc.SETUPS]


def pooling_rows(number: int, repeat: int) -> list[tuple[str, str, float, float]]:
    import bench_pooling

    return bench_pooling.rows(number, repeat)


@dataclass
class Parts:
    gate: tuple[list[bench_gate.Row], dict[str, str]] | None = None
    pooling: list[tuple[str, str, float, float]] | None = None
    gc: list[bench_gc.Setup] | None = None
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # part -> last line


def run_parts(profile: Profile) -> Parts:
    parts = Parts()
    runs: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
        ("gate", bench_gate.measure, (profile.gate_quick, SEED)),
        ("pooling", pooling_rows, (profile.pooling_number, profile.pooling_repeat)),
        ("gc", gc_setups, (profile.gc_rounds, profile.gc_requests, SEED)),
    ]
    for name, func, args in runs:
        log(f"{name}...")
        started = time.perf_counter()
        try:
            setattr(parts, name, in_fresh_process(func, *args))
        except PartFailed as failure:
            text = str(failure).strip()
            log(f"{name} failed:\n{text}")
            parts.failed[name] = text.splitlines()[-1]
        log(f"{name}: {time.perf_counter() - started:.0f} s")
    return parts


# -- plots -------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "django-memopt", "font.size": 9})
    return plt


def _save(plt: Any, figure: Any, path: str) -> None:
    # No "Software" entry: the file depends on the figures only, not on the version drawing it.
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def _colours(plt: Any, names: list[str]) -> dict[str, Any]:
    """One colour per engine, the same in every plot whichever engines ran."""
    palette = plt.get_cmap("tab10").colors
    order = list(ENGINES)
    return {name: palette[order.index(name) % len(palette)] for name in names}


def plot_latency(run: EngineRun, path: str) -> None:
    plt = _pyplot()
    colours = _colours(plt, run.names)
    figure, axes = plt.subplots(len(be.SIZES), 1, figsize=(10, 11), sharey=True)
    width = 0.8 / len(run.names)
    for axis, size in zip(axes, be.SIZES, strict=True):
        for n, name in enumerate(run.names):
            xs = [i - 0.4 + width * (n + 0.5) for i in range(len(be.OPERATIONS))]
            ys = [run.medians[(op, size, name)] / 1000 for op in be.OPERATIONS]
            axis.bar(xs, ys, width, color=colours[name], label=ENGINES[name])
        keys, target = be.SIZE_SPECS[size]
        axis.set_title(f"{size} session ({keys} keys, about {target / 1024:g} KB as JSON)")
        axis.set_yscale("log")
        axis.set_ylabel("median µs per request (log)")
        axis.set_xticks(range(len(be.OPERATIONS)), be.OPERATIONS)
        axis.grid(axis="y", which="major", alpha=0.3)
    axes[-1].set_xlabel("operation")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=5, frameon=False)
    figure.suptitle("Request latency by engine, operation and session size (lower is better)")
    figure.tight_layout(rect=(0, 0.06, 1, 0.98))
    _save(plt, figure, path)


def plot_bytes(rows: list[SaveBytes], path: str) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 5.5))
    ys = range(len(rows))
    axis.barh(
        [y - 0.2 for y in ys], [row.written for row in rows], 0.4, label="written by the save"
    )
    axis.barh(
        [y + 0.2 for y in ys],
        [row.rewrite or 0 for row in rows],
        0.4,
        label="whole-session rewrite",
        color="lightgrey",
    )
    for y, row in zip(ys, rows, strict=True):
        axis.text(row.written * 1.08, y - 0.2, f"{row.written:,.0f} B", va="center")
    axis.set_yticks(list(ys), [ENGINES[row.engine] for row in rows])
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("bytes per save (log)")
    axis.set_title("Bytes written per save: one small key changed in a medium session")
    axis.legend(loc="lower right")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    _save(plt, figure, path)


def plot_lost_updates(run: EngineRun, path: str) -> None:
    plt = _pyplot()
    names = [name for name in run.names if name != br.FLOOR]
    rows = {(row.engine, row.mode): row for row in run.concurrency}
    figure, axis = plt.subplots(figsize=(10, 4.8))
    for offset, mode, colour in ((-0.2, "processes", "tab:blue"), (0.2, "threads", "tab:orange")):
        for x, name in enumerate(names):
            row = rows.get((name, mode))
            if row is None:
                axis.text(x + offset, 2, "n/a", ha="center", rotation=90, fontsize=8)
                continue
            share = 100 * row.lost / row.writers
            axis.bar(x + offset, share, 0.4, color=colour, label=mode if x == 0 else None)
            axis.text(x + offset, share + 2, f"{row.lost}/{row.writers}", ha="center", fontsize=8)
    axis.set_xticks(range(len(names)), [ENGINES[name] for name in names], rotation=25, ha="right")
    axis.set_ylim(0, 110)
    axis.set_ylabel("writers whose last update was lost (%)")
    axis.set_title(
        f"Lost updates: {writers(run)['processes']} writer processes or "
        f"{writers(run)['threads']} writer threads "
        "on one session"
    )
    handles, labels = axis.get_legend_handles_labels()
    axis.legend(handles, labels, loc="upper left")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    _save(plt, figure, path)


# -- the page ----------------------------------------------------------------------------


def rounds_text(profile: be.Profile) -> str:
    """The rounds per size of each operation in ``profile``, in words."""
    return (
        ", ".join(f"{op} {count:,}" for op, count in profile.reps.items())
        + f"; {profile.cold_rounds:,} for the cold case"
    )


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _change(new: float, old: float, less: str, more: str) -> str:
    """``new`` against ``old`` in words, e.g. "42% faster" or "8% slower"."""
    change = 1 - new / old
    return f"{change:.0%} {less}" if change >= 0 else f"{-change:.0%} {more}"


def _pct_faster(new_ns: float, old_ns: float) -> str:
    return _change(new_ns, old_ns, "faster", "slower")


class Page:
    """The figures of one run, and the Markdown made of them."""

    def __init__(
        self,
        argv: list[str],
        profile: Profile,
        quick: bool,
        run: EngineRun,
        parts: Parts,
        images: dict[str, str],
        elapsed_s: float,
        loads: tuple[str, str],
        changed: bool,
    ) -> None:
        self.argv, self.profile, self.quick, self.run, self.parts = (
            argv,
            profile,
            quick,
            run,
            parts,
        )
        self.images, self.elapsed_s, self.loads, self.changed = images, elapsed_s, loads, changed
        self.out: list[str] = []
        self.add = self.out.append

    def ns(self, op: str, size: str, name: str) -> float:
        return self.run.medians[(op, size, name)]

    def us(self, op: str, size: str, name: str) -> str:
        return f"{be._us(self.ns(op, size, name))} µs"

    def ratio(self, op: str, size: str, name: str, base: str) -> float:
        return self.ns(op, size, name) / self.ns(op, size, base)

    def concurrency(self, name: str, mode: str) -> be.ConcurrencyRow | None:
        return next(
            (row for row in self.run.concurrency if row.engine == name and row.mode == mode),
            None,
        )

    def gate_row(self, label_start: str, workload: str) -> bench_gate.Row | None:
        if self.parts.gate is None:
            return None
        return next(
            row
            for row in self.parts.gate[0]
            if row.setup.label.startswith(label_start) and row.workload == workload
        )

    def not_measured(self, part: str) -> str:
        return f"not measured in this run ({part} failed: `{self.parts.failed.get(part, '?')}`)"

    # -- sections

    def render(self) -> str:
        self.header()
        self.machine()
        self.what_is_measured()
        self.latency()
        self.lazy()
        self.bytes_per_save()
        self.lost_updates()
        self.gate()
        self.pooling()
        self.collector()
        self.targets()
        self.claims()
        return "\n".join(self.out)

    def header(self) -> None:
        add = self.add
        add("# Benchmarks: every engine and every claim, side by side in one run\n")
        add(
            "Generated by `benchmarks/bench_all.py`; every number below comes from the one "
            "run described here. It measures django-memopt's two engines side by side with "
            "every Django session engine, in the same interleaved rounds, then the session-ID "
            "gate, the pooling ideas and the garbage collector, and ends with the performance "
            "targets of the design and the seven claims the app grew out of. Each topic has a "
            "page of its own with more detail and more samples: "
            "[LMDB engine](benchmarks-lmdb.md), [Redis engine](benchmarks-redis.md), "
            "[gate](benchmarks-gate.md), [collector](benchmarks-gc.md), "
            "[pooling](benchmarks-pooling.md). Absolute times depend on the machine; compare "
            "the ratios, which come from one run.\n"
        )
        if self.parts.failed:
            add(
                "> **Parts of this run failed** and are marked *not measured* below: "
                + "; ".join(f"{part}: `{line}`" for part, line in self.parts.failed.items())
                + "\n"
            )

    def machine(self) -> None:
        import django
        import lmdb
        import matplotlib

        versions = self.run.versions
        lines = be.machine_and_run(
            self.argv,
            "benchmarks/bench_all.py",
            f"Django {django.get_version()}, lmdb {lmdb.__version__}, "
            + ", ".join(
                f"{name} {versions[name]}"
                for name in (
                    "msgpack",
                    "django-redis",
                    "redis-py",
                    "hiredis",
                    "django-redis-sessions",
                )
            )
            + f", matplotlib {matplotlib.__version__}",
        )
        rt = self.run.round_trips
        lines[-1:-1] = [
            f"- CPU: {be._cpu_model()}; the stores' temporary directory is on {self.run.fs_type}",
            f"- redis-server {versions['redis-server']} (allocator `{versions['allocator']}`) "
            f"on the same machine over loopback TCP; during the engine comparison Redis and "
            f"the benchmark were {self.run.placement}",
            f"- One Redis round trip (`PING`, median of 2,000): {be._us(rt[0])} µs at the start "
            f"of the engine comparison, {be._us(rt[1])} µs at its end",
            f"- Load average (1, 5, 15 min) at the start: {self.loads[0]}; at the end: "
            f"{self.loads[1]}",
            f"- Wall time of the whole run: {self.elapsed_s / 60:.1f} min",
        ]
        self.out.extend(lines)

    def what_is_measured(self) -> None:
        add = self.add
        profile = self.profile.engines
        be.report_notices(add, changed=self.changed, quick=self.quick)
        add(
            "Engines, each used through its `SessionStore` class, all in one Django "
            "configuration (one SQLite file, one `redis-server`):\n"
        )
        engine_text = {
            MEMOPT_LMDB: "`django_memopt.backends.lmdb`, durability `process` (the default).",
            MEMOPT_REDIS: "`django_memopt.backends.redis`, on the django-redis cache "
            "`SESSION_CACHE_ALIAS`: one hash per session, a save is one `EVALSHA`.",
            be.DB: "`django.contrib.sessions.backends.db` on a SQLite file (Django's "
            "defaults: rollback journal, `synchronous=FULL`).",
            br.CACHED_DB: "`django.contrib.sessions.backends.cached_db`: the django-redis "
            "cache in front of that SQLite database.",
            be.FILE: "`django.contrib.sessions.backends.file`.",
            be.CACHE: "`django.contrib.sessions.backends.cache` on `LocMemCache` (one "
            "process's memory; `MAX_ENTRIES` raised so that nothing is culled).",
            br.CACHE: "`django.contrib.sessions.backends.cache` on django-redis (its "
            "default pickle serializer).",
            SIGNED: "`django.contrib.sessions.backends.signed_cookies`: the session is the "
            "cookie (JSON, zlib-compressed, signed), so a request's time is the decoding "
            "and encoding of the cookie and nothing is stored on the server.",
            br.REDIS_SESSIONS: "`redis_sessions.session` (django-redis-sessions, "
            "unmaintained): one string per session, a save is one `SETEX`.",
            br.FLOOR: "not an engine: the fewest plain redis-py round trips a request "
            "needs (`HGETALL` to load, one `HSET` to save), with no session code.",
        }
        for name in self.run.names:
            add(f"- `{ENGINES[name]}`: {engine_text[name]}")
        if self.run.skipped is not None:
            add(f"- `{ENGINES[br.REDIS_SESSIONS]}`: left out, it failed: {self.run.skipped}")
        add("")
        add(
            f"Each engine is pre-populated with {profile.sessions:,} sessions of each size. "
            f"In every round each engine, in a freshly shuffled order, serves "
            f"{profile.burst} requests in a row on randomly picked sessions, and the first of "
            "each run is not recorded (warm, as on a site that runs one engine); rotating the "
            "engines every round spreads the machine's noise over all of them alike. Times "
            f"are the **median µs per request** after {profile.warmup} warm-up rounds. "
            f"Rounds per size: {rounds_text(profile)} ("
            + (
                "as in `bench_engines.py`'s full run"
                if rounds_text(profile) == rounds_text(be.FULL)
                else f"`bench_engines.py`'s full run: {rounds_text(be.FULL)}"
            )
            + "). This run leaves out `memopt-lmdb-system` (durability `system`), which "
            "[the LMDB page](benchmarks-lmdb.md) measures. Session sizes, and the "
            "`signed_cookies` cookie of each:\n"
        )
        header = [
            "size",
            "keys",
            "JSON bytes",
            "memopt sealed fields",
            "Django db/file encoding",
            "pickled (cache)",
            "signed cookie (B)",
        ]
        rows = []
        for size, row in zip(be.SIZES, self.run.size_rows, strict=True):
            cookie = self.run.cookie_bytes[size]
            note = " [^cookie-limit]" if cookie > BROWSER_COOKIE_LIMIT else ""
            rows.append([*row, f"{cookie:,}{note}"])
        add(be._table(header, rows) + "\n")
        if any(size > BROWSER_COOKIE_LIMIT for size in self.run.cookie_bytes.values()):
            add(
                f"[^cookie-limit]: Over the {BROWSER_COOKIE_LIMIT:,} bytes per cookie that "
                "browsers are required to keep (RFC 6265); larger cookies are commonly "
                "dropped, so `signed_cookies` cannot hold this session on a real site. Its "
                "times for this size are still measured, as the work it would do.\n"
            )
        add(be.PAYLOAD_TEXT)

    def latency(self) -> None:
        add = self.add
        names = self.run.names
        add("## Request latency\n")
        add(f"![Request latency by engine, operation and size]({self.images['latency']})\n")
        add(
            "Median µs per request for each size, then each engine's time as a multiple of "
            "`memopt-lmdb`'s and of `memopt-redis`'s (small / medium / large; above 1: slower "
            "than django-memopt).\n"
        )
        titles = {op: f"{op}: {be.OPERATION_TEXT[op]}" for op in be.OPERATIONS}
        titles[be.COLD] = f"{be.COLD}: the typical request, right after another engine's"
        notes = {
            be.COLD: f"{self.profile.engines.cold_rounds:,} rounds per size, one typical "
            "request per engine in each, in a shuffled order: each request starts with its "
            "own code and data cold in the CPU caches.\n"
        }
        for op, title in titles.items():
            add(f"### {title}\n")
            if op in notes:
                add(notes[op])
            header = ["engine", *(f"{size} µs" for size in be.SIZES)]
            header += ["× memopt-lmdb", "× memopt-redis"]
            rows = []
            for name in names:
                row = [f"`{ENGINES[name]}`"]
                row += [be._us(self.ns(op, size, name)) for size in be.SIZES]
                for base in (MEMOPT_LMDB, MEMOPT_REDIS):
                    row.append(
                        " / ".join(f"{self.ratio(op, size, name, base):.2f}" for size in be.SIZES)
                    )
                rows.append(row)
            add(be._table(header, rows) + "\n")
        add(be.sanity_text(self.run.anomalies) + "\n")

    def lazy(self) -> None:
        add = self.add
        add("## Lazy decoding\n")
        add(
            "The read-only request (two keys read), against the same request when every "
            "field is decoded first (`dict(session.items())`), as an engine that decodes the "
            "whole session on load would. The two alternate on randomly picked sessions, "
            f"{self.profile.lazy_samples:,} of each per engine and size; median µs.\n"
        )
        rows = [
            [
                f"`{ENGINES[row.engine]}`",
                row.size,
                be._us(row.lazy_ns),
                be._us(row.eager_ns),
                _pct_faster(row.lazy_ns, row.eager_ns),
            ]
            for row in self.run.lazy
        ]
        header = ["engine", "size", "lazy µs", "every field decoded µs", "lazy is"]
        add(be._table(header, rows) + "\n")

    def bytes_per_save(self) -> None:
        add = self.add
        add("## Bytes written per save\n")
        add(f"![Bytes written per save by engine]({self.images['bytes']})\n")
        add(
            f"The typical request on a medium session: `{be.WRITE_KEY}` set to a new int, "
            f"then saved; median over {self.profile.bytes_samples} sessions. For the engines "
            "on Redis the figure is what Redis itself counted as received "
            "(`total_net_input_bytes`), commands and protocol included; for the others it is "
            "the value the engine stores (LMDB: the changed sealed fields; the whole record "
            "replaced is given below the table). *Whole-session rewrite*: what a save of "
            "every field writes the same way; Django's engines always rewrite the whole "
            "session.\n"
        )
        rows = []
        for row in save_bytes(self.run):
            rewrite = "n/a [^floor-rewrite]" if row.rewrite is None else f"{row.rewrite:,.0f}"
            share = "n/a" if row.rewrite is None else f"{100 * row.written / row.rewrite:.1f}%"
            rows.append(
                [f"`{ENGINES[row.engine]}`", f"{row.written:,.0f}", rewrite, share, row.counted]
            )
        header = [
            "engine",
            "written per save (B)",
            "whole-session rewrite (B)",
            "save / rewrite",
            "what is counted",
        ]
        add(be._table(header, rows, align="lrrrl") + "\n")
        lmdb_row = next(row for row in self.run.lmdb_bytes if row.engine == MEMOPT_LMDB)
        add("[^floor-rewrite]: The floor is no engine: it only ever sends the key it changes.\n")
        add(
            f"The LMDB store still replaces the session's whole record ({lmdb_row.record:,.0f} B) "
            "inside its write transaction"
            + (
                f", and LMDB handed {lmdb_row.os_bytes:,.0f} B of pages to `write()` per commit"
                if lmdb_row.os_bytes is not None
                else ""
            )
            + ": the delta bounds what is encoded and sent, not the pages LMDB rewrites. "
            "`cached_db` also writes the whole session to its database on every save. "
            "`signed_cookies` sends its cookie back with every later request as well.\n"
        )

    def lost_updates(self) -> None:
        add = self.add
        profile = self.profile.engines
        add("## Concurrent writers: lost updates\n")
        add(f"![Lost updates by engine]({self.images['lost']})\n")
        add(
            f"One medium session; each writer repeats {profile.iterations} times: load the "
            f"session, {profile.think_ms:g} ms of simulated view work, set its own key "
            "`writer-{i}` to the iteration number, save (through the middleware's calls). "
            f"{writers(self.run)['processes']} writer processes (spawned, starting together at "
            f"a barrier) or {writers(self.run)['threads']} threads of one process. At the end "
            "the session is read back: a writer whose last saved value is not there has lost "
            "an update. For "
            "`signed_cookies` the writers share one browser cookie jar: each request carries "
            "the cookie the jar holds when it starts, and its response's cookie replaces the "
            "jar's, the last response winning, as in a browser with several tabs.\n"
        )
        header = [
            "engine",
            f"processes: lost of {writers(self.run)['processes']}",
            f"threads: lost of {writers(self.run)['threads']}",
            "SessionInterrupted",
            "DB locked (retried)",
            "other errors",
        ]
        notes: dict[str, str] = {}
        rows = []
        for name in self.run.names:
            cells = []
            errors: Counter[str] = Counter()
            for mode in ("processes", "threads"):
                row = self.concurrency(name, mode)
                if row is None:
                    note = "floor" if name == br.FLOOR else "per-process"
                    cells.append(f"n/a [^{note}]")
                    notes[note] = {
                        "floor": "The floor is no session engine; it has nothing to lose.",
                        "per-process": "Each process has a `LocMemCache` of its own, so "
                        "processes share no session: nothing to measure.",
                    }[note]
                    continue
                cells.append(f"{row.lost}")
                errors.update(row.errors)
            other = {k: v for k, v in errors.items() if k not in ("update_error", "db_locked")}
            rows.append(
                [
                    f"`{ENGINES[name]}`",
                    *cells,
                    str(errors.get("update_error", 0)),
                    str(errors.get("db_locked", 0)),
                    ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "0",
                ]
            )
        add(be._table(header, rows) + "\n")
        for note, text in notes.items():
            add(f"[^{note}]: {text}\n")
        add(
            "*SessionInterrupted*: saves that raised `UpdateError` (the middleware turns it "
            'into `SessionInterrupted`); *DB locked*: SQLite "database is locked" errors, each '
            "retried. Errors are summed over both modes.\n"
        )

    def gate(self) -> None:
        add = self.add
        add("## Unknown and forged session IDs: the gate\n")
        if self.parts.gate is None:
            add(f"The gate flood was {self.not_measured('gate')}.\n")
            return
        rows, info = self.parts.gate
        add(
            "`bench_gate.py`'s flood, run here: each request goes through Django's WSGI handler "
            "and the usual middleware to a view that reads one session key, with Django's "
            "session middleware or django-memopt's gate. Cookies: *unknown* (random IDs of "
            "Django's form), *ended* (IDs this site signed for sessions gone since), *forged* "
            "(the signed form, a tag made under another key), *live*. "
            f"Store reads are counted over {info['reads_sample']} requests per row (untimed); "
            f"time is the median µs per whole request over {info['rounds']} rounds of "
            f"{info['burst']}; *check*: the median ns of `django_memopt.gate.admits()` alone. "
            "More in [the gate page](benchmarks-gate.md).\n"
        )
        add("\n".join(bench_gate.table_lines(rows)) + "\n")

    def pooling(self) -> None:
        add = self.add
        add("## Memory pools and object pooling\n")
        if self.parts.pooling is None:
            add(f"The pooling measurements were {self.not_measured('pooling')}.\n")
            return
        add(
            "`bench_pooling.py`'s measurements, run here: what a request does today against "
            f"the same work pooled; median ns per operation over {self.profile.pooling_repeat} "
            f"repeats of {self.profile.pooling_number:,} loops; *change* below 0% means the "
            "pooled version is faster. More in [the pooling page](benchmarks-pooling.md).\n"
        )
        add("\n".join(bench_pooling_table(self.parts.pooling)) + "\n")

    def collector(self) -> None:
        add = self.add
        add("## The garbage collector under gunicorn\n")
        if self.parts.gc is None:
            add(f"The collector comparison was {self.not_measured('gc')}.\n")
            return
        add(
            f"`bench_gc.py`'s comparison, run here with {self.profile.gc_rounds} rounds of "
            f"{self.profile.gc_requests:,} requests per setup: "
            f"the example project under gunicorn (`--preload`, {GC_WORKERS} sync workers), one "
            f"server per setup, all running at once, {GC_CLIENTS} client threads sending "
            "`GET /` to one setup at a time. The collector's figures are the workers' own "
            "(`manage.py memopt_stats --json`). More in [the collector page](benchmarks-gc.md).\n"
        )
        add("\n".join(bench_gc.table_lines(self.parts.gc)) + "\n")

    # -- verdicts

    def gc_figures(self) -> list[dict[str, float]] | None:
        """Per setup (defaults, freeze, freeze + out-of-band): the collector's figures."""
        if self.parts.gc is None:
            return None
        found = []
        for setup in self.parts.gc:
            figures = setup.figures
            found.append(
                {
                    "in_ms": figures.get("in_request_time_ns", 0) / 1e6,
                    "between_ms": figures.get("between_requests_time_ns", 0) / 1e6,
                    "pause_ms": figures.get("worst_pause_ns", 0) / 1e6,
                    "median_ms": statistics.median(setup.latencies_ns) / 1e6,
                }
            )
        return found

    def targets(self) -> None:
        add = self.add
        add("## The performance targets of the design\n")
        add(
            "Each target as the design states it, what this run measured, and whether it was "
            "met.\n"
        )
        rows = []
        typical_cache = self.ratio("typical", "medium", br.CACHE, MEMOPT_REDIS)
        cold_cache = self.ratio(be.COLD, "medium", br.CACHE, MEMOPT_REDIS)
        floor_x = self.ratio("typical", "medium", MEMOPT_REDIS, br.FLOOR)
        cache_floor = self.ratio("typical", "medium", br.CACHE, br.FLOOR)
        rows.append(
            [
                "Redis engine, typical request, medium session: at least 2x faster than "
                "Django's `cache` engine on django-redis",
                f"`memopt-redis` {self.us('typical', 'medium', MEMOPT_REDIS)}, `cache` "
                f"{self.us('typical', 'medium', br.CACHE)}: {typical_cache:.2f}x (cold: "
                f"{cold_cache:.2f}x). The floor of two round trips, with no session code at "
                f"all, was {cache_floor:.2f}x faster than `cache` (which makes three round "
                + (
                    "trips): no engine that makes two can be 2x faster here."
                    if cache_floor < 2
                    else f"trips): 2x asks for an engine within {cache_floor / 2:.2f}x of the "
                    "floor."
                ),
                _met(typical_cache >= 2),
            ]
        )
        rows.append(
            [
                "Redis engine, typical request, medium session: within 1.5x of the floor of "
                "two Redis round trips",
                f"`memopt-redis` {self.us('typical', 'medium', MEMOPT_REDIS)}, floor "
                f"{self.us('typical', 'medium', br.FLOOR)}: {floor_x:.2f}x",
                _met(floor_x <= 1.5),
            ]
        )
        large = self.ratio("typical", "large", br.CACHE, MEMOPT_REDIS)
        large_read = self.ratio("read-only", "large", br.CACHE, MEMOPT_REDIS)
        large_floor = self.ratio("typical", "large", br.CACHE, br.FLOOR)
        rows.append(
            [
                "Redis engine, large session: at least 5x faster than Django's `cache` engine",
                f"typical request: `memopt-redis` {self.us('typical', 'large', MEMOPT_REDIS)}, "
                f"`cache` {self.us('typical', 'large', br.CACHE)}: {large:.2f}x; read-only "
                f"{large_read:.2f}x. The floor, which fetches the whole hash as `memopt-redis` "
                f"does but runs no session code, was {large_floor:.2f}x faster than `cache`"
                + (": not even the floor reaches 5x here." if large_floor < 5 else "."),
                _met(large >= 5),
            ]
        )
        file_x = self.ratio("typical", "medium", be.FILE, MEMOPT_LMDB)
        db_x = self.ratio("typical", "medium", be.DB, MEMOPT_LMDB)
        redis_cache_x = self.ratio("typical", "medium", br.CACHE, MEMOPT_LMDB)
        locmem_x = self.ratio("typical", "medium", be.CACHE, MEMOPT_LMDB)
        rows.append(
            [
                "LMDB engine, typical request, medium session: at least 10x faster than "
                "Django's `file` and `db` (SQLite) engines, and faster than Django's `cache` "
                "engine on Redis",
                f"`memopt-lmdb` {self.us('typical', 'medium', MEMOPT_LMDB)}; `file` "
                f"{file_x:.1f}x that, `db` {db_x:.1f}x, `cache` on django-redis "
                f"{redis_cache_x:.2f}x (and `cache` on local memory, which no other process "
                f"can see, {locmem_x:.2f}x)",
                _met(file_x >= 10 and db_x >= 10 and redis_cache_x > 1),
            ]
        )
        lmdb_bytes, redis_bytes = (
            next(row for row in save_bytes(self.run) if row.engine == name)
            for name in (MEMOPT_LMDB, MEMOPT_REDIS)
        )
        shares = [row.written / (row.rewrite or 1) for row in (lmdb_bytes, redis_bytes)]
        rows.append(
            [
                "Bytes written per save with one small key changed in a medium session: at "
                "most 10% of a whole-session rewrite",
                f"`memopt-lmdb` {lmdb_bytes.written:,.0f} B of {lmdb_bytes.rewrite or 0:,.0f} B "
                f"({shares[0]:.1%}); `memopt-redis` {redis_bytes.written:,.0f} B of "
                f"{redis_bytes.rewrite or 0:,.0f} B ({shares[1]:.1%})",
                _met(max(shares) <= 0.10),
            ]
        )
        rows.append(self.flood_target())
        memopt_rows = [
            row for row in self.run.concurrency if row.engine in (MEMOPT_LMDB, MEMOPT_REDIS)
        ]
        memopt_lost = sum(row.lost for row in memopt_rows)
        memopt_errors = sum(sum(row.errors.values()) for row in memopt_rows)
        django_lost = "; ".join(
            f"{mode}: "
            + ", ".join(
                f"`{ENGINES[row.engine]}` {row.lost}/{row.writers}"
                for row in self.run.concurrency
                if row.engine not in (MEMOPT_LMDB, MEMOPT_REDIS) and row.mode == mode
            )
            for mode in ("processes", "threads")
        )
        rows.append(
            [
                "Concurrent writers: zero lost updates (Django's engines lose most of them: "
                "show it)",
                f"django-memopt lost {memopt_lost} and raised {memopt_errors} errors over "
                f"{len(memopt_rows)} runs. The other engines lost, {django_lost}",
                _met(memopt_lost == 0 and memopt_errors == 0),
            ]
        )
        add(be._table(["target", "measured in this run", "verdict"], rows, align="lll") + "\n")

    def flood_target(self) -> list[str]:
        target = (
            "Unknown-ID flood: at least 99% of store reads avoided by default on every store; "
            "the check costs no more than a few microseconds (taken as 5 µs)"
        )
        if self.parts.gate is None:
            return [target, self.not_measured("gate"), "**not measured**"]
        rows = self.parts.gate[0]
        found = [
            self.gate_row(label, "unknown") for label in ("LMDB, gate (def", "Redis, gate (def")
        ]
        cells = []
        ok = True
        for row in found:
            assert row is not None
            avoided = 1 - row.reads / bench_gate.reads_without_gate(rows, row)
            check_us = (row.check_ns or 0) / 1000
            ok = ok and avoided >= 0.99 and check_us <= 5
            cells.append(
                f"{row.setup.label}: {avoided:.1%} of store reads avoided, check {check_us:.2f} µs"
            )
        return [target, "; ".join(cells), _met(ok)]

    def claims(self) -> None:
        add = self.add
        add("## The seven original claims\n")
        add(
            'django-memopt grew out of a list of seven "memory optimisation patterns", each '
            "with a claimed gain. What was built for each, what this run measured, and the "
            "verdict. [The patterns page](patterns.md) tells the story of each.\n"
        )
        rows = [
            self.pool_claim(
                "memory pool",
                "40% faster allocation",
                "no pool: CPython's allocator already pools small objects; LMDB reads decode "
                "the record in the map without copying it (`buffers=True`)",
                0.40,
            ),
            self.gc_claim(),
            self.lazy_claim(),
            self.filter_claim(),
            self.delta_claim(),
            self.mmap_claim(),
            self.pool_claim(
                "object pooling",
                "30% faster memory ops",
                "per-process store environments and Redis connections only",
                0.30,
            ),
        ]
        header = ["pattern", "claimed", "what was built", "measured here", "verdict"]
        add(be._table(header, rows, align="lllll") + "\n")

    def pool_claim(self, idea: str, claimed: str, built: str, gain: float) -> list[str]:
        if self.parts.pooling is None:
            return [idea, claimed, built, self.not_measured("pooling"), "**not measured**"]
        request_ns = self.ns("typical", "medium", MEMOPT_LMDB)
        measured = []
        best_saving, best_change = 0.0, 1.0
        for row_idea, what, today, pooled in self.parts.pooling:
            if row_idea != idea:
                continue
            change = pooled / today - 1
            measured.append(
                f"{what.split(':')[0]}: {today:,.0f} ns today, {pooled:,.0f} ns pooled "
                f"({change:+.0%})"
            )
            if today - pooled > best_saving:
                best_saving, best_change = today - pooled, change
        share = best_saving / request_ns
        measured_text = (
            "; ".join(measured) + f". A typical request on a medium session (`memopt-lmdb`) "
            f"took {be._us(request_ns)} µs."
        )
        head = "confirmed in isolation" if -best_change >= gain else "not confirmed"
        head += f" (the best pooled version {-best_change:.0%} faster)"
        saving = f"{best_saving:,.0f} ns, {share:.1%} of a typical request"
        if best_saving <= 0:
            verdict = "not confirmed: pooling was slower every time; not adopted"
        elif share < 0.01:
            verdict = f"{head}; no gain on a request ({saving}): not adopted"
        else:
            verdict = f"{head}; a gain on a request ({saving})"
        return [idea, claimed, built, measured_text, verdict]

    def gc_claim(self) -> list[str]:
        idea, claimed = "generational GC tuning", "50% less GC time"
        built = (
            "`gc.freeze()` after startup (the default), out-of-band collection between "
            "requests and version-aware thresholds (opt-in)"
        )
        found = self.gc_figures()
        if found is None:
            return [idea, claimed, built, self.not_measured("gc"), "**not measured**"]
        default, freeze, both = found
        less_freeze = 1 - freeze["in_ms"] / default["in_ms"]

        def against_defaults(ms: float) -> str:
            return _change(ms, default["in_ms"], "less", "more")

        requests = self.profile.gc_rounds * self.profile.gc_requests
        measured = (
            f"Example project under gunicorn, {requests:,} requests per setup: collector "
            f"time inside requests {default['in_ms']:.0f} ms with Python's defaults, "
            f"{freeze['in_ms']:.0f} ms with the freeze "
            f"({against_defaults(freeze['in_ms'])}), {both['in_ms']:.0f} ms with the freeze "
            f"and out-of-band collection ({against_defaults(both['in_ms'])}; "
            f"{against_defaults(both['in_ms'] + both['between_ms'])} counting the "
            f"{both['between_ms']:.0f} ms it spent between requests). Worst pause "
            f"{default['pause_ms']:.1f} ms, {freeze['pause_ms']:.1f} ms, "
            f"{both['pause_ms']:.1f} ms; median request {default['median_ms']:.2f}, "
            f"{freeze['median_ms']:.2f}, {both['median_ms']:.2f} ms."
        )
        if less_freeze >= 0.5:
            verdict = f"confirmed: {less_freeze:.0%} less collector time in requests"
        else:
            verdict = (
                f"not confirmed: collector time in requests {against_defaults(freeze['in_ms'])}"
                f" with the freeze, {against_defaults(both['in_ms'])} with out-of-band "
                "collection too"
            )
            if freeze["pause_ms"] <= default["pause_ms"] / 2:
                verdict += (
                    f"; the worst pause fell {default['pause_ms'] / freeze['pause_ms']:.0f}x, "
                    "which is what the freeze is on by default for"
                )
        return [idea, claimed, built, measured, verdict]

    def lazy_claim(self) -> list[str]:
        idea, claimed = "lazy deserialization", "35% faster load"
        built = "each session key its own field, decoded on first read"
        found = {(row.engine, row.size): row for row in self.run.lazy}
        gains = {key: 1 - row.lazy_ns / row.eager_ns for key, row in found.items()}
        parts = []
        for name in (MEMOPT_LMDB, MEMOPT_REDIS):
            parts.append(
                f"`{ENGINES[name]}`: "
                + ", ".join(
                    f"{size} {be._us(found[(name, size)].lazy_ns)} µs against "
                    f"{be._us(found[(name, size)].eager_ns)} µs "
                    f"({gains[(name, size)]:.0%} less time)"
                    for size in be.SIZES
                )
            )
        measured = (
            "Read-only request (two keys read), lazily against every field decoded first: "
            + "; ".join(parts)
            + f". One Redis round trip took {be._us(self.run.round_trips[0])} µs."
        )
        verdicts = []
        for name in (MEMOPT_LMDB, MEMOPT_REDIS):
            medium, large = gains[(name, "medium")], gains[(name, "large")]
            figures = f"{medium:.0%} faster on a medium session, {large:.0%} on a large one"
            if medium >= 0.35:
                verdicts.append(f"confirmed on `{ENGINES[name]}` ({figures})")
            else:
                verdicts.append(f"not confirmed on `{ENGINES[name]}` ({figures})")
        return [idea, claimed, built, measured, "; ".join(verdicts)]

    def filter_claim(self) -> list[str]:
        idea, claimed = "Bloom filter", "70% faster membership checks"
        built = (
            "a shared filter of live session IDs behind signed IDs, in the middleware "
            "(the filter is opt-in)"
        )
        if self.parts.gate is None:
            return [idea, claimed, built, self.not_measured("gate"), "**not measured**"]
        measured = []
        verdicts = []
        for store, name in (("Redis", MEMOPT_REDIS), ("LMDB", MEMOPT_LMDB)):
            with_filter = self.gate_row(f"{store}, gate +", "ended")
            without = self.gate_row(f"{store}, Django", "ended")
            assert with_filter is not None and without is not None
            check_ns = with_filter.check_ns or 0.0
            lookup_ns = self.ns("miss", "medium", name)
            check_faster = 1 - check_ns / lookup_ns
            request_faster = 1 - with_filter.median_us / without.median_us
            measured.append(
                f"{store}: the filter's check took {check_ns / 1000:.2f} µs, against "
                f"{be._us(lookup_ns)} µs for a request on `{ENGINES[name]}` to find nothing "
                f"(the *miss* table); under a flood of ended sessions' IDs a whole request "
                f"through the middleware stack took {with_filter.median_us:.0f} µs with the "
                f"gate and filter, {without.median_us:.0f} µs without"
            )
            figures = (
                f"the check {_pct_faster(check_ns, lookup_ns)} than asking the store, a "
                f"flooded request {_pct_faster(with_filter.median_us, without.median_us)}"
            )
            if check_faster >= 0.70 and request_faster > 0:
                verdicts.append(f"confirmed in front of {store} ({figures})")
            else:
                verdicts.append(f"not confirmed in front of {store} ({figures})")
        verdict = "; ".join(verdicts)
        return [idea, claimed, built, "; ".join(measured) + ".", verdict]

    def delta_claim(self) -> list[str]:
        idea, claimed = "delta snapshots", "55% less storage"
        built = "saves that write only the changed fields"
        lmdb_row = next(row for row in self.run.lmdb_bytes if row.engine == MEMOPT_LMDB)
        db_row = next(row for row in self.run.lmdb_bytes if row.engine == be.DB)
        by_engine = {row.engine: row for row in save_bytes(self.run)}
        lmdb_save, redis_save = by_engine[MEMOPT_LMDB], by_engine[MEMOPT_REDIS]
        less = [1 - row.written / (row.rewrite or 1) for row in (lmdb_save, redis_save)]
        stored_less = 1 - lmdb_row.record / db_row.record
        measured = (
            f"One small key changed in a medium session: `memopt-lmdb` wrote "
            f"{lmdb_save.written:,.0f} B against {lmdb_save.rewrite or 0:,.0f} B for the whole "
            f"session ({less[0]:.1%} less), `memopt-redis` sent {redis_save.written:,.0f} B "
            f"against {redis_save.rewrite or 0:,.0f} B ({less[1]:.1%} less). Stored: the "
            f"`memopt-lmdb` record is {lmdb_row.record:,.0f} B, Django's `db` row "
            f"{db_row.record:,.0f} B (zlib-compressed JSON)."
        )
        verdict = (
            f"confirmed for what a save writes ({min(less):.1%} less or better)"
            if min(less) >= 0.55
            else f"not confirmed: {min(less):.1%} less written per save"
        )
        if stored_less >= 0.55:
            verdict += f"; storage {stored_less:.0%} less too"
        else:
            size = _change(lmdb_row.record, db_row.record, "smaller", "larger")
            verdict += (
                f"; storage itself is not reduced ({size} than `db`): the whole session is "
                "still stored"
            )
        return [idea, claimed, built, measured, verdict]

    def mmap_claim(self) -> list[str]:
        idea, claimed = "memory-mapped I/O", "45% faster I/O"
        built = "the LMDB store: multi-process, crash-safe, growable"
        parts = []
        faster = []
        for op in ("typical", "read-only"):
            for name in (be.FILE, be.DB):
                change = 1 - self.ratio(op, "medium", MEMOPT_LMDB, name)
                faster.append(change)
                parts.append(
                    f"{op}: `memopt-lmdb` {self.us(op, 'medium', MEMOPT_LMDB)} against "
                    f"`{ENGINES[name]}` {self.us(op, 'medium', name)} ({change:.0%} less time)"
                )
        measured = "Medium session, " + "; ".join(parts) + "."
        verdict = (
            f"confirmed: at least {min(faster):.0%} faster than Django's file and database engines"
            if min(faster) >= 0.45
            else f"not confirmed: at least {min(faster):.0%} faster"
        )
        return [idea, claimed, built, measured, verdict]


def bench_pooling_table(found: list[tuple[str, str, float, float]]) -> list[str]:
    import bench_pooling

    return bench_pooling.table_lines(found)


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    parser.add_argument(
        "--output",
        help="write the page to this file, and its plots to _static/benchmarks/ beside it",
    )
    parser.add_argument("--plots", help="the directory for the plots (default: see --output)")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_start = be._load()
    digest = be._package_digest()

    run = measure_engines(profile)
    parts = run_parts(profile)

    page_dir = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
    plots = args.plots or (
        os.path.join(page_dir, "_static", "benchmarks")
        if args.output
        else tempfile.mkdtemp(prefix="memopt-bench-plots-")
    )
    os.makedirs(plots, exist_ok=True)
    files = {"latency": "latency.png", "bytes": "bytes-per-save.png", "lost": "lost-updates.png"}
    paths = {key: os.path.join(plots, name) for key, name in files.items()}
    plot_latency(run, paths["latency"])
    plot_bytes(save_bytes(run), paths["bytes"])
    plot_lost_updates(run, paths["lost"])
    log(f"plots written to {plots}")
    images = {key: os.path.relpath(path, page_dir) for key, path in paths.items()}

    page = Page(
        argv=argv,
        profile=profile,
        quick=args.quick,
        run=run,
        parts=parts,
        images=images,
        elapsed_s=time.perf_counter() - started,
        loads=(load_start, be._load()),
        changed=be._package_digest() != digest,
    )
    be.publish(page.render(), args.output)
    return 1 if parts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
