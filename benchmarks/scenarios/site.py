"""Scenario ``site``: the example shop under a real load generator, on every engine.

For each engine the shop runs with a database and a store of its own (the project's
``EXAMPLE_SESSION_STORE``), first under gunicorn (WSGI, sync workers), then under uvicorn
(ASGI). Before that, ``benchmarks.harness.signed_in`` makes a thousand users (200 with
``--quick``) and a logged-in session each through the engine itself, as the shop's login
and a few visits leave them. ``wrk`` (Debian's) then drives one engine and one view at a
time over loopback for a bounded time, each request with the cookie of a user picked at
random, on:

* ``/bench/whoami/``: reads the logged-in user's (small) session and nothing else;
* ``/bench/session-heavy/``: the session-heavy view: on a second set of logged-in sessions,
  each the benchmarks' medium session (20 keys, about 5 KB), reads the user and the cart
  and counts the visit (a load and a save); the goal is judged here;
* ``/``: the shop's home page (the session read and written, the user read from the
  database, a template rendered).

Every (engine, view) pair is one arm of interleaved rounds, shuffled each round; a cell's
figures are the medians over the rounds of wrk's requests per second, median and p99.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from benchmarks.harness import log, plots, shop, timing
from benchmarks.harness.engines import (
    CACHED_DB,
    DB,
    FILE,
    MEMOPT_LMDB,
    MEMOPT_REDIS,
    MEMOPT_REDIS_CACHED,
    REDIS_CACHE,
    SIGNED,
)
from benchmarks.harness.report import met, render, table
from benchmarks.harness.servers import ROOT, client, redis_server, versions
from benchmarks.harness.signed_in import HEAVY_SIZE, SESSION_HEAVY, WHOAMI
from benchmarks.scenarios.client_cache import CACHE_BYTES

WORKERS = 4  # per server, as on a small production host
CONNECTIONS = 8  # wrk's, kept open: two per worker, so that a worker never waits for one
WARMUP_SECONDS = 2  # wrk's durations are whole seconds
# The latency phase: every engine at one request rate, this share of what the best shared
# Django store served at saturation on the view, from this many connections (each waiting
# a random time between its requests, so the arrivals are about Poisson's).
PACED_SHARE = 0.5
PACED_CONNECTIONS = 32
PACED_VIEWS = (SESSION_HEAVY, WHOAMI)
# Where the latency phase runs: not under gunicorn, whose sync workers each hold one
# connection at a time. wrk opens a connection before it waits out its delay (each
# request closes its own), so there 4 workers would sit on idle connections and the rate
# would never be offered; there the p99 compared is the saturated one.
PACED_SERVERS = ("uvicorn",)
# A turn of the latency phase whose engine served less than this share of the rate did not
# keep up (the machine was busy with something else): its p99 is no comparison.
HELD = 0.9
GOAL_SPEEDUP = 1.3
PLOT = "site.png"
MEASURES = (("per_second", "requests/s"), ("p99_ms", "p99 ms"))  # the plot's columns

# Every shop's settings beyond the example project's. django-memopt's engines run with its
# defaults: the shop itself turns on what its pages show (the counters flushed every
# second for its live statistics, the index of users' sessions, on LMDB the filter), none
# of which is on by default.
SETTINGS = """\
ROOT_URLCONF = "benchmarks.harness.signed_in_urls"
MEMOPT_STATS_INTERVAL = 10.0
MEMOPT_USER_SESSIONS = False
MEMOPT_FILTER = False
"""
# (engine, the shop's EXAMPLE_SESSION_STORE)
STORES = {
    MEMOPT_LMDB: "lmdb",
    MEMOPT_REDIS: "redis",
    MEMOPT_REDIS_CACHED: "redis",
    DB: "django-db",
    REDIS_CACHE: "django-cache",
    CACHED_DB: "django-cached-db",
    FILE: "django-file",
    SIGNED: "django-signed-cookies",
}
OURS = (MEMOPT_LMDB, MEMOPT_REDIS, MEMOPT_REDIS_CACHED)
# Django's engines with a store every process shares: the goal's comparison. signed_cookies
# keeps the session in the cookie, not in a store (shown, but not a peer: see the page).
DJANGO_STORES = (DB, REDIS_CACHE, CACHED_DB, FILE)
# Each engine on Redis gets a database of its own on the one private server.
REDIS_DATABASES = {MEMOPT_REDIS: 0, REDIS_CACHE: 1, CACHED_DB: 2, MEMOPT_REDIS_CACHED: 3}

VIEWS = {
    SESSION_HEAVY: "session-heavy view",
    WHOAMI: "session-reading view",
    "/": "shop home page",
}
#: The view the goal is judged on.
GOAL_VIEW = SESSION_HEAVY
SERVERS = {
    "gunicorn": (shop.gunicorn, f"gunicorn (WSGI), {WORKERS} sync workers, `--preload`"),
    "uvicorn": (shop.uvicorn, f"uvicorn (ASGI), {WORKERS} workers"),
}

# wrk's script: each request carries the cookie of a session picked at random from the
# file named after ``--``; with a second argument, each connection waits a random time of
# that mean (ms, exponentially distributed) before each request. At the end, one JSON line
# of what wrk measured.
WRK_SCRIPT = """\
local cookies = {}
local mean_delay = nil
function init(args)
  for line in io.lines(args[1]) do cookies[#cookies + 1] = "sessionid=" .. line end
  mean_delay = tonumber(args[2])
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function delay()
  if not mean_delay then return 0 end
  return math.floor(-math.log(1 - math.random()) * mean_delay + 0.5)
end
function request()
  return wrk.format("GET", nil, {
    ["Cookie"] = cookies[math.random(#cookies)], ["Connection"] = "close"})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"socket_errors": %d, "status_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(eq=False)  # hashed by identity: an arm of the interleaved rounds
class Engine(shop.Served):
    cookies: str = ""  # the file of its sessions' cookies, one a line
    heavy_cookies: str = ""  # the same, of the session-heavy view's sessions

    def cookies_for(self, path: str) -> str:
        return self.heavy_cookies if path == SESSION_HEAVY else self.cookies


@dataclass
class Turn:
    """What wrk measured in one engine's turn on one view."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, and answers 4xx or 5xx

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass
class Cell:
    """One server, engine and view: its turns, and the medians over them."""

    turns: list[Turn]

    @property
    def per_second(self) -> float:
        return statistics.median(turn.per_second for turn in self.turns)

    @property
    def p50_ms(self) -> float:
        return statistics.median(turn.p50_ms for turn in self.turns)

    @property
    def p99_ms(self) -> float:
        return statistics.median(turn.p99_ms for turn in self.turns)

    @property
    def requests(self) -> int:
        return sum(turn.requests for turn in self.turns)

    @property
    def errors(self) -> int:
        return sum(turn.errors for turn in self.turns)


@dataclass
class Result:
    rounds: int
    seconds: int  # of each turn
    sessions: int
    engines: list[str]
    warmup: int = WARMUP_SECONDS  # seconds of each arm's turn before the rounds
    paced_rounds: int = 3  # of the latency phase
    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))  # this process's
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)  # server, engine, view
    # The latency phase: the rate every engine was offered (server, view), and what it did.
    rates: dict[tuple[str, str], float] = field(default_factory=dict)
    paced: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def cell(self, server: str, engine: str, view: str) -> Cell:
        return self.cells[server, engine, view]

    def best_django(self, server: str, view: str = GOAL_VIEW) -> str:
        """The Django engine with a shared store that served the most requests per second."""
        shown = [name for name in DJANGO_STORES if name in self.engines]
        return max(shown, key=lambda name: self.cell(server, name, view).per_second)

    def goal(self, server: str, engine: str, view: str = GOAL_VIEW) -> tuple[float, bool]:
        """(requests per second against the best shared Django store's, the goal met) on
        ``view``, the session-heavy view unless said: that ratio at saturation, and a p99
        no worse at the latency phase's common rate."""
        best_name = self.best_django(server, view)
        ours, best = (self.cell(server, n, view) for n in (engine, best_name))
        speedup = ours.per_second / best.per_second
        ours_p99, best_p99 = (self.p99_ms(server, n, view) for n in (engine, best_name))
        held = all(self.held(server, n, view) for n in (engine, best_name))
        return speedup, speedup >= GOAL_SPEEDUP and ours_p99 <= best_p99 and held

    def paced_cell(self, server: str, engine: str, view: str) -> Cell | None:
        """``engine``'s turns at the common rate on ``view``, if the latency phase ran
        there (under :data:`PACED_SERVERS`; a quick run: on the goal's view only)."""
        return self.paced.get((server, engine, view)) if server in PACED_SERVERS else None

    def p99_ms(self, server: str, engine: str, view: str) -> float:
        """The p99 the goal compares: at the common rate where there is a latency phase,
        else at saturation."""
        return (self.paced_cell(server, engine, view) or self.cell(server, engine, view)).p99_ms

    def held(self, server: str, engine: str, view: str) -> bool:
        """Whether ``engine`` served the latency phase's rate (its p99 is comparable)."""
        paced = self.paced_cell(server, engine, view)
        if paced is None:
            return True
        return paced.per_second >= HELD * self.rates[server, view]


# -- measuring ------------------------------------------------------------------------------


def wrk() -> str:
    """The ``wrk`` binary; ``RuntimeError`` saying how to install it if there is none."""
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError(
            "scenario site needs the load generator wrk, which is not on PATH: install "
            "Debian's package (apt-get install wrk); `python3 scripts/dev.py test -e "
            "benchmarks` and `python3 scripts/dev.py bench` install it when they can"
        )
    return found


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError:
        return "unknown"
    return (
        (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def _prepare(base: str, index: int, engine: Engine, sessions: int) -> None:
    """Engine ``index``'s database migrated and ``sessions`` logged-in sessions made, of
    each kind (the shop's small ones, and the session-heavy view's)."""
    env = shop.environment(base, index, engine)
    shop.manage(env, "migrate", "--noinput", "-v0")
    for kind in ("small", "heavy"):
        command = [sys.executable, "-m", "benchmarks.harness.signed_in", str(sessions), kind]
        made = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        cookies = made.stdout.split()
        if len(cookies) != sessions:
            raise RuntimeError(f"{engine.name}: {len(cookies)} sessions made, not {sessions}")
        path = os.path.join(base, f"cookies-{kind}-{index}.txt")
        with open(path, "w") as file:
            file.write("\n".join(cookies) + "\n")
        if kind == "heavy":
            engine.heavy_cookies = path
        else:
            engine.cookies = path


def _fetch(port: int, path: str, cookie: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": f"sessionid={cookie}"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def _check(engine: Engine) -> None:
    """``RuntimeError`` unless ``engine``'s server sees a logged-in user on every view."""
    for path, expected in ((SESSION_HEAVY, "user "), (WHOAMI, "user "), ("/", "Signed in as")):
        with open(engine.cookies_for(path)) as file:
            cookie = file.readline().strip()
        status, body = _fetch(engine.port, path, cookie)
        if status != 200 or expected not in body:
            raise RuntimeError(f"{engine.name}: GET {path} with a session's cookie: {status}")


def _drive(
    engine: Engine,
    path: str,
    seconds: int,
    script: str,
    connections: int | None = None,
    rate: float | None = None,
) -> Turn:
    """One turn of wrk on ``engine``'s ``path`` with ``connections`` at once (by default
    :data:`CONNECTIONS`, or :data:`PACED_CONNECTIONS` with a rate): as fast as it answers,
    or at about ``rate`` requests per second."""
    if connections is None:
        connections = CONNECTIONS if rate is None else PACED_CONNECTIONS
    command = [wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", script, f"http://127.0.0.1:{engine.port}{path}", "--"]
    command += [engine.cookies_for(path)]
    if rate is not None:
        command.append(f"{connections / rate * 1000:.3f}")  # each connection's mean wait, ms
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK-RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed on {engine.name} {path}:\n{done.stdout}{done.stderr}")
    found = json.loads(line.removeprefix("WRK-RESULT "))
    return Turn(
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        errors=found["socket_errors"] + found["status_errors"],
    )


def _serve(result: Result, server: str, engines: list[Engine], base: str, script: str) -> None:
    """Every engine's shop under ``server`` at once, driven in interleaved rounds."""
    command, _ = SERVERS[server]
    try:
        for index, engine in enumerate(engines):
            shop.start(base, index, engine, WORKERS, server=command, migrate=False)
        for engine in engines:
            shop.wait(engine)
            _check(engine)
        arms = [(engine, path) for engine in engines for path in VIEWS]
        for engine, path in arms if result.warmup else []:  # workers connected, cached
            _drive(engine, path, result.warmup, script)
        log(f"site: {server}, {result.rounds} rounds of {len(arms)} turns")
        samples = timing.interleaved(
            arms,
            result.rounds,
            random.Random(1),
            lambda arm, _: [_drive(arm[0], arm[1], result.seconds, script)],
        )
        for (engine, path), turns in samples.items():
            result.cells[server, engine.name, path] = Cell(list(turns))  # type: ignore[arg-type]
        if server not in PACED_SERVERS:
            return
        for path in PACED_VIEWS:
            best = result.cell(server, result.best_django(server, path), path)
            result.rates[server, path] = round(best.per_second * PACED_SHARE, -1) or 10.0
        # A quick run drives the latency phase on the goal's view alone: it still runs.
        views = PACED_VIEWS if result.warmup else (GOAL_VIEW,)
        paced_arms = [(engine, path) for engine in engines for path in views]
        log(f"site: {server}, latency at a common rate, {result.paced_rounds} rounds")
        samples = timing.interleaved(
            paced_arms,
            result.paced_rounds,
            random.Random(2),
            lambda arm, _: [
                _drive(arm[0], arm[1], result.seconds, script, rate=result.rates[server, arm[1]])
            ],
        )
        for (engine, path), turns in samples.items():
            result.paced[server, engine.name, path] = Cell(list(turns))  # type: ignore[arg-type]
    finally:
        for engine in engines:
            shop.stop(engine)


def measure(quick: bool) -> Result:
    wrk()
    if importlib.util.find_spec("uvicorn") is None:
        raise RuntimeError(
            "scenario site serves the shop under uvicorn too, which is not installed: "
            "pip install -r benchmarks/requirements.txt"
        )
    rounds, paced_rounds, seconds, sessions = (1, 1, 1, 50) if quick else (4, 3, 3, 1000)
    result = Result(rounds, seconds, sessions, list(STORES), 0 if quick else WARMUP_SECONDS)
    result.paced_rounds = paced_rounds
    base = tempfile.mkdtemp(prefix="memopt-bench-site-")
    sys.path[:0] = [ROOT]
    try:
        with redis_server() as redis:
            engines = [
                Engine(
                    name,
                    SETTINGS,
                    env={
                        "EXAMPLE_SESSION_STORE": store,
                        "EXAMPLE_REDIS_CLIENT_CACHE": str(CACHE_BYTES)
                        if name == MEMOPT_REDIS_CACHED
                        else "0",
                        "EXAMPLE_REDIS_URL": f"redis://127.0.0.1:{redis.port}/"
                        f"{REDIS_DATABASES.get(name, 0)}",
                    },
                )
                for name, store in STORES.items()
            ]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(
                    pool.map(
                        lambda pair: _prepare(base, pair[0], pair[1], sessions),
                        enumerate(engines),
                    )
                )
            script = os.path.join(base, "cookies.lua")
            with open(script, "w") as file:
                file.write(WRK_SCRIPT)
            for server in SERVERS:
                _serve(result, server, engines, base, script)
            result.versions = {
                "wrk": _version([wrk(), "--version"]).split(" [")[0].removeprefix("wrk "),
                "redis-server": versions(client(redis.url))["redis-server"],
            }
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the page -------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def figures_table(found: Result, server: str) -> str:
    """Requests per second, median and p99 of every engine on both views under ``server``."""
    header = ["engine"]
    for label in VIEWS.values():
        header += [f"{label}: requests/s", "median ms", "p99 ms", "errors"]
    rows = []
    for name in found.engines:
        row = [f"`{name}`"]
        for path in VIEWS:
            cell = found.cell(server, name, path)
            row += [f"{cell.per_second:,.0f}", _ms(cell.p50_ms), _ms(cell.p99_ms)]
            row += [f"{cell.errors:,}"]
        rows.append(row)
    return table(header, rows)


def paced_table(found: Result, server: str) -> str:
    """Every engine's latency at the common rate, on the views of the latency phase."""
    header = ["engine"]
    views = [p for p in PACED_VIEWS if found.paced_cell(server, found.engines[0], p) is not None]
    for path in views:
        rate = found.rates[server, path]
        header += [f"{VIEWS[path]} at {rate:,.0f}/s: served/s", "median ms", "p99 ms", "errors"]
    rows = []
    for name in found.engines:
        row = [f"`{name}`"]
        for path in views:
            cell = found.paced[server, name, path]
            row += [f"{cell.per_second:,.0f}", _ms(cell.p50_ms), _ms(cell.p99_ms)]
            row += [f"{cell.errors:,}"]
        rows.append(row)
    return table(header, rows)


def goal_lines(found: Result, view: str = GOAL_VIEW) -> list[str]:
    """The goal on ``view``, for each of our engines and each server, in words."""
    lines = []
    for server in SERVERS:
        best = found.best_django(server, view)
        base = found.cell(server, best, view)
        for name in OURS:
            speedup, ok = found.goal(server, name, view)
            ours = found.cell(server, name, view)
            ours_p99, base_p99 = (found.p99_ms(server, n, view) for n in (name, best))
            behind = [n for n in (name, best) if not found.held(server, n, view)]
            at = (
                f"at {found.rates[server, view]:,.0f} requests/s"
                if found.paced_cell(server, name, view) is not None
                else "at saturation"
            )
            lines.append(
                f"{server}: `{name}` {ours.per_second:,.0f} requests/s, {speedup:.2f}x "
                f"`{best}` ({base.per_second:,.0f}); p99 {at} {_ms(ours_p99)} ms against "
                f"{_ms(base_p99)} ms"
                + "".join(f" (`{n}` did not keep up with that rate)" for n in behind)
                + f": {met(ok)}"
            )
    return lines


def heavy_bound(found: Result) -> str:
    """For scale, in words: ``memopt-lmdb`` against ``signed_cookies`` (no store at all)
    under gunicorn on the session-heavy view, and what the saturated p99 there reflects."""
    ours, none = (found.cell("gunicorn", n, GOAL_VIEW) for n in (MEMOPT_LMDB, SIGNED))
    best = found.best_django("gunicorn")
    needed = GOAL_SPEEDUP * found.cell("gunicorn", best, GOAL_VIEW).per_second
    cpu_only = ", ".join(
        f"`{n}` {_ms(found.cell('gunicorn', n, GOAL_VIEW).p99_ms)} ms"
        for n in (MEMOPT_LMDB, FILE, SIGNED)
    )
    waiting = ", ".join(
        f"`{n}` {_ms(found.cell('gunicorn', n, GOAL_VIEW).p99_ms)} ms"
        for n in (MEMOPT_REDIS, REDIS_CACHE)
    )
    return (
        f"For scale: under gunicorn `{MEMOPT_LMDB}` served "
        f"{ours.per_second / none.per_second:.2f}x the requests per second of "
        f"`signed_cookies`, which reads and writes no store at all (it decodes and signs the "
        f"whole session in the cookie instead); {GOAL_SPEEDUP:g}x `{best}` is "
        f"{needed:,.0f} requests per second, {needed / none.per_second:.2f}x what a site with "
        "no session store serves here: the rest of each request is Django's, the server's "
        "and wrk's, on the same two cores. The p99 at saturation is queueing for the CPU: "
        f"the engines that never wait on I/O had the longest ({cpu_only}), those whose "
        f"workers wait on Redis and leave the CPU to the others meanwhile the shortest "
        f"({waiting})."
    )


def target(found: Result) -> tuple[str, bool]:
    """The one-run page's target row: what was measured, and whether every cell met it."""
    ok = all(found.goal(server, name)[1] for server in SERVERS for name in OURS)
    return "; ".join(goal_lines(found)), ok


def section(found: Result, image: str | None = None) -> str:
    fastest = max(found.cell("gunicorn", name, WHOAMI).per_second for name in found.engines)
    return render(
        "site",
        workers=WORKERS,
        connections=CONNECTIONS,
        sessions=found.sessions,
        rounds=found.rounds,
        seconds=found.seconds,
        warmup=f"after a warm-up turn of {found.warmup} s of each arm that is not recorded"
        if found.warmup
        else "with no warm-up (a quick run)",
        whoami=WHOAMI,
        plot=f"![Requests per second and p99 by engine, view and server]({image})\n"
        if image
        else "",
        gunicorn=figures_table(found, "gunicorn"),
        uvicorn=figures_table(found, "uvicorn"),
        uvicorn_paced=paced_table(found, "uvicorn"),
        paced_share=f"{PACED_SHARE:.0%}",
        paced_connections=PACED_CONNECTIONS,
        paced_rounds=found.paced_rounds,
        goal="\n".join(f"- {line}" for line in goal_lines(found)),
        heavy_bound=heavy_bound(found),
        minimal="\n".join(f"- {line}" for line in goal_lines(found, WHOAMI)),
        heavy=SESSION_HEAVY,
        cache_mib=CACHE_BYTES >> 20,
        heavy_size=HEAVY_SIZE,
        goal_speedup=f"{GOAL_SPEEDUP:g}",
        fastest=fastest,
        machine_us=found.cpus / fastest * 1e6,
        cpus=found.cpus,
        versions=", ".join(f"{name} {value}" for name, value in found.versions.items()),
    )


def draw(found: Result, directory: str, page_dir: str) -> str:
    """The plot of requests per second and p99; its path relative to the page."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PLOT)
    with plots.figure(path, nrows=2, ncols=2, figsize=(10, 6.5)) as (drawn, axes):
        width = 0.8 / len(found.engines)
        for row, server in enumerate(SERVERS):
            for column, (what, unit) in enumerate(
                (("per_second", "requests/s"), ("p99_ms", "p99 ms"))
            ):
                ax = axes[row][column]
                for index, name in enumerate(found.engines):
                    values = [getattr(found.cell(server, name, p), what) for p in VIEWS]
                    xs = [
                        v + (index - len(found.engines) / 2 + 0.5) * width
                        for v in range(len(VIEWS))
                    ]
                    ax.bar(xs, values, width, label=name, color=plots.colour(name))
                ax.set_xticks(range(len(VIEWS)), list(VIEWS.values()))
                ax.set_ylabel(unit)
                ax.set_title(f"{SERVERS[server][1].split(',')[0]}: {unit}")
        axes[0][0].legend(fontsize=7, ncols=2)
        drawn.tight_layout()
    return os.path.relpath(path, page_dir)
