"""Scenario ``asgi``: an async view under uvicorn, the Redis engine's native asyncio against
its thread hop and Django's ``cache`` engine, at several concurrency levels.

Three setups of the example project, each with a database of one private redis-server,
serve :func:`benchmarks.harness.async_view.whoami` (reads the logged-in user's session,
counts a visit in it: the middleware saves it) under uvicorn with ``WORKERS`` worker
processes, the session middleware alone in ``MIDDLEWARE``:

* ``memopt-redis, asyncio``: django-memopt's Redis engine and middleware as they are;
* ``memopt-redis, thread hop``: the same engine with its async API and middleware as the
  previous release had them (``sync_to_async``; ``benchmarks.harness.async_view``);
* ``cache (django-redis)``: Django's ``cache`` engine and session middleware.

``wrk`` drives one setup and one concurrency level at a time, each request with the cookie
of a user picked at random (the ``site`` scenario's script); every (setup, level) pair is
an arm of interleaved rounds, and a figure is the median over the rounds.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from benchmarks.harness import log, shop, timing
from benchmarks.harness.async_view import ASYNC_WHOAMI
from benchmarks.harness.engines import REDIS_CACHE
from benchmarks.harness.report import render, table
from benchmarks.harness.servers import ROOT, client, redis_server, versions
from benchmarks.scenarios.site import (
    WRK_SCRIPT,
    Cell,
    Engine,
    _drive,
    _fetch,
    _prepare,
    _version,
    wrk,
)

WORKERS = 4
LEVELS = (16, 64, 256)  # wrk's connections at once
WARMUP_SECONDS = 2
NATIVE = "memopt-redis, asyncio"
HOP = "memopt-redis, thread hop"
CACHE = REDIS_CACHE
URLS = 'ROOT_URLCONF = "benchmarks.harness.async_view"\n'
# (EXAMPLE_SESSION_STORE, the lines the setup adds to the example project's settings)
SETUPS = {
    NATIVE: ("redis", URLS + "MIDDLEWARE = [SESSION_MIDDLEWARE]"),
    HOP: (
        "redis",
        URLS + 'SESSION_ENGINE = "benchmarks.harness.async_view"\n'
        'MIDDLEWARE = ["benchmarks.harness.async_view.ThreadHopMiddleware"]',
    ),
    CACHE: ("django-cache", URLS + "MIDDLEWARE = [SESSION_MIDDLEWARE]"),
}


@dataclass
class Result:
    rounds: int
    seconds: int  # of each turn
    sessions: int
    levels: tuple[int, ...]
    engines: list[str]
    warmup: int = WARMUP_SECONDS
    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    cells: dict[tuple[str, int], Cell] = field(default_factory=dict)  # engine, connections
    versions: dict[str, str] = field(default_factory=dict)

    def cell(self, engine: str, connections: int) -> Cell:
        return self.cells[engine, connections]


def _check(engine: Engine) -> None:
    """``RuntimeError`` unless ``engine``'s server sees a logged-in user, twice (a save)."""
    with open(engine.cookies) as file:
        cookie = file.readline().strip()
    for _ in range(2):
        status, body = _fetch(engine.port, ASYNC_WHOAMI, cookie)
        if status != 200 or "user " not in body:
            raise RuntimeError(
                f"{engine.name}: GET {ASYNC_WHOAMI} with a session's cookie: {status}"
            )


def measure(quick: bool) -> Result:
    wrk()
    if importlib.util.find_spec("uvicorn") is None:
        raise RuntimeError(
            "scenario asgi serves the example project under uvicorn, which is not "
            "installed: pip install -r benchmarks/requirements.txt"
        )
    rounds, seconds, sessions = (1, 1, 200) if quick else (5, 3, 1000)
    result = Result(
        rounds, seconds, sessions, LEVELS, list(SETUPS), 0 if quick else WARMUP_SECONDS
    )
    base = tempfile.mkdtemp(prefix="memopt-bench-asgi-")
    sys.path[:0] = [ROOT]
    try:
        with redis_server() as redis:
            engines = [
                Engine(
                    name,
                    lines,
                    env={
                        "EXAMPLE_SESSION_STORE": store,
                        "EXAMPLE_REDIS_URL": f"{redis.url.rsplit('/', 1)[0]}/{index}",
                    },
                )
                for index, (name, (store, lines)) in enumerate(SETUPS.items())
            ]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda pair: _prepare(base, *pair, sessions), enumerate(engines)))
            script = os.path.join(base, "cookies.lua")
            with open(script, "w") as file:
                file.write(WRK_SCRIPT)
            try:
                for index, engine in enumerate(engines):
                    shop.start(base, index, engine, WORKERS, server=shop.uvicorn, migrate=False)
                for engine in engines:
                    shop.wait(engine)
                    _check(engine)
                arms = [(engine, level) for engine in engines for level in LEVELS]
                for engine, level in arms if result.warmup else []:
                    _drive(engine, ASYNC_WHOAMI, result.warmup, script, level)
                log(f"asgi: {result.rounds} rounds of {len(arms)} turns")
                samples = timing.interleaved(
                    arms,
                    result.rounds,
                    random.Random(1),
                    lambda arm, _: [_drive(arm[0], ASYNC_WHOAMI, result.seconds, script, arm[1])],
                )
                for (engine, level), turns in samples.items():
                    result.cells[engine.name, level] = Cell(list(turns))  # type: ignore[arg-type]
            finally:
                for engine in engines:
                    shop.stop(engine)
            result.versions = {
                "wrk": _version([wrk(), "--version"]).split(" [")[0].removeprefix("wrk "),
                "uvicorn": _uvicorn_version(),
                "redis-server": versions(client(redis.url))["redis-server"],
            }
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _uvicorn_version() -> str:
    # It says "Running uvicorn 0.55.0 with CPython 3.11.7 on Linux".
    said = _version([sys.executable, "-m", "uvicorn", "--version"])
    return _bare_uvicorn(said.split(" with")[0])


def _bare_uvicorn(said: str) -> str:
    return said.removeprefix("Running uvicorn ")


# -- the page -------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def figures_table(found: Result) -> str:
    """Requests per second, median and p99 of every setup at every level, with ratios to
    the thread hop and to Django's ``cache`` engine."""
    header = ["connections", "setup", "requests/s", "median ms", "p99 ms", "errors"]
    header += [f"requests/s against {HOP.split(', ')[1]}", "against `cache`"]
    rows = []
    for level in found.levels:
        for name in found.engines:
            cell = found.cell(name, level)
            row = [str(level), f"`{name}`", f"{cell.per_second:,.0f}", _ms(cell.p50_ms)]
            row += [_ms(cell.p99_ms), f"{cell.errors:,}"]
            row += [
                f"{cell.per_second / found.cell(other, level).per_second:.2f}x"
                if other != name
                else ""
                for other in (HOP, CACHE)
            ]
            rows.append(row)
    return table(header, rows)


def summary(found: Result) -> str:
    """The native path against the others, level by level, in words."""
    lines = []
    for level in found.levels:
        ours, hop, cache = (found.cell(name, level) for name in (NATIVE, HOP, CACHE))
        lines.append(
            f"- {level} connections: {ours.per_second / hop.per_second:.2f}x the requests per "
            f"second of the thread hop (p99 {_ms(ours.p99_ms)} ms against "
            f"{_ms(hop.p99_ms)} ms), {ours.per_second / cache.per_second:.2f}x Django's "
            f"`cache` engine's (p99 {_ms(cache.p99_ms)} ms)"
        )
    return "\n".join(lines)


def section(found: Result) -> str:
    return render(
        "asgi",
        workers=WORKERS,
        levels=", ".join(str(level) for level in found.levels),
        sessions=found.sessions,
        rounds=found.rounds,
        seconds=found.seconds,
        warmup=f"after a warm-up turn of {found.warmup} s of each arm that is not recorded"
        if found.warmup
        else "with no warm-up (a quick run)",
        whoami=ASYNC_WHOAMI,
        figures=figures_table(found),
        summary=summary(found),
        cpus=found.cpus,
        versions=", ".join(
            f"{name} {_bare_uvicorn(value)}" for name, value in found.versions.items()
        ),
    )
