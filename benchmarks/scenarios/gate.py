"""Scenario ``gate``: a flood of unknown, ended and forged session IDs through Django's
whole middleware stack, with Django's session middleware or django-memopt's gate.

For each django-memopt engine, requests go through Django's WSGI handler with the usual
middleware (security, sessions, common, CSRF, auth, messages) to a view that reads one
session key. Measured: the store reads made (counted in a separate, untimed pass), the
share the gate avoided, the median time per request, and the median cost of the gate's
check alone.
"""

from __future__ import annotations

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

from benchmarks.harness import engines as registry
from benchmarks.harness import servers, timing
from benchmarks.harness.report import render, table

DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
GATE_MIDDLEWARE = "django_memopt.middleware.SessionMiddleware"
LMDB = "django_memopt.backends.lmdb"
REDIS = "django_memopt.backends.redis"
WORKLOADS = ("unknown", "ended", "forged", "live")
ALPHABET = string.ascii_lowercase + string.digits
LIVE_SESSIONS = 200


@dataclass(frozen=True)
class Profile:
    rounds: int
    burst: int  # timed requests per row and round (one more is sent first, untimed)
    reads_sample: int  # requests per row of the untimed pass that counts store reads


FULL = Profile(rounds=60, burst=50, reads_sample=2000)
QUICK = Profile(rounds=8, burst=20, reads_sample=300)


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


@dataclass
class Row:
    setup: Setup
    workload: str
    reads: int
    requests: int
    median_us: float
    check_ns: float | None


@dataclass
class Result:
    profile: Profile
    rows: list[Row]

    def row(self, label_start: str, workload: str) -> Row:
        return next(
            r
            for r in self.rows
            if r.setup.label.startswith(label_start) and r.workload == workload
        )

    def reads_without_gate(self, row: Row) -> int:
        """The store reads Django's middleware made for ``row``'s engine and cookies."""
        return next(
            r.reads
            for r in self.rows
            if r.setup.engine == row.setup.engine
            and not r.setup.gate
            and r.workload == row.workload
        )


def view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(str(request.session.get("cart")))


urlpatterns: list[Any] = []


def _configure(base: str, redis_url: str) -> None:
    import django
    from django.conf import settings
    from django.urls import path

    urlpatterns.append(path("", view))
    settings.configure(
        DEBUG=False,
        SECRET_KEY=registry.SECRET_KEY,
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
            registry.REDIS_ALIAS: registry.redis_cache(redis_url),
        },
        SESSION_CACHE_ALIAS=registry.REDIS_ALIAS,
        SESSION_ENGINE=LMDB,
        MEMOPT_LMDB_PATH=os.path.join(base, "lmdb"),
        USE_TZ=True,
        LOGGING_CONFIG=None,
        SILENCED_SYSTEM_CHECKS=["django_memopt.W003"],
    )
    django.setup()


def _environ(cookie: str) -> dict[str, Any]:
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


def _request(handler: Any, cookie: str) -> None:
    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    response = handler(_environ(cookie), start_response)
    b"".join(response)
    response.close()


def _cookies(workload: str, live: list[str], count: int, rng: random.Random) -> list[str]:
    if workload == "live":
        return [rng.choice(live) for _ in range(count)]
    if workload == "unknown":  # random, of Django's (and legacy) form
        return ["".join(rng.choices(ALPHABET, k=32)) for _ in range(count)]
    if workload == "ended":  # signed an hour ago by this site, for sessions gone since
        from django_memopt.gate import session_ids

        return [session_ids().mint(time.time() - 3600) for _ in range(count)]
    # A signed ID's form (48 characters) with a tag made under another key.
    from django_memopt.session_ids import SessionIds

    other = SessionIds.from_secrets(["not-this-site-s-secret-key" * 2])
    return [other.mint() for _ in range(count)]


@contextmanager
def _counting_reads(store: Any) -> Iterator[list[int]]:
    """Counts the store's reads (its ``_read`` primitive) while the block runs."""
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


def _flood(base: str, profile: Profile, rng: random.Random) -> list[Row]:
    from importlib import import_module

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.test import override_settings

    from django_memopt import gate

    live: dict[str, list[str]] = {}
    handlers: dict[Setup, Any] = {}
    for setup in SETUPS:
        with override_settings(**setup.overrides(base)):
            store = import_module(setup.engine).SessionStore
            if setup.engine not in live:
                live[setup.engine] = []
                for n in range(LIVE_SESSIONS):
                    session = store()
                    session["cart"] = [n, "item"]
                    session.save()
                    live[setup.engine].append(session.session_key)
            if setup.filter:
                call_command("memopt_rebuild_filter", stdout=StringIO())
            handlers[setup] = WSGIHandler()

    def serve(arm: tuple[Setup, str], _: Any) -> list[float]:
        setup, workload = arm
        cookies = _cookies(workload, live[setup.engine], profile.burst + 1, rng)
        timings = []
        with override_settings(**setup.overrides(base)):
            for cookie in cookies:  # the first reopens what the settings change closed
                start = timing.perf_ns()
                _request(handlers[setup], cookie)
                timings.append(timing.perf_ns() - start)
        return timings

    arms = [(setup, workload) for setup in SETUPS for workload in WORKLOADS]
    timings = timing.interleaved(arms, profile.rounds, rng, serve, drop_first=True)
    rows = []
    for setup in SETUPS:
        with override_settings(**setup.overrides(base)):
            store = import_module(setup.engine).SessionStore
            for workload in WORKLOADS:
                cookies = _cookies(workload, live[setup.engine], profile.reads_sample, rng)
                with _counting_reads(store) as counted:
                    for cookie in cookies:
                        _request(handlers[setup], cookie)
                check_ns = None
                if setup.gate:
                    checks = []
                    for cookie in cookies:
                        start = timing.perf_ns()
                        gate.admits(cookie)
                        checks.append(timing.perf_ns() - start)
                    check_ns = statistics.median(checks)
                median_us = statistics.median(timings[setup, workload]) / 1000
                rows.append(Row(setup, workload, counted[0], len(cookies), median_us, check_ns))
    return rows


def measure(quick: bool, seed: int = 1) -> Result:
    profile = QUICK if quick else FULL
    base = tempfile.mkdtemp(prefix="memopt-bench-gate-")
    with servers.redis_server() as server:
        try:
            _configure(base, server.url)
            return Result(profile, _flood(base, profile, random.Random(seed)))
        finally:
            shutil.rmtree(base, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------


def section(found: Result) -> str:
    """The method and the table: one row per setup and kind of cookie."""
    rows = []
    for row in found.rows:
        avoided = "n/a"
        if row.setup.gate and row.workload != "live":
            baseline = found.reads_without_gate(row)
            avoided = f"{1 - row.reads / baseline:.1%}" if baseline else "n/a"
        check = "" if row.check_ns is None else f"{row.check_ns:,.0f}"
        reads = f"{row.reads:,} of {row.requests:,}"
        speed = [f"{row.median_us:,.1f}", f"{1e6 / row.median_us:,.0f}"]
        rows.append([row.setup.label, row.workload, reads, avoided, *speed, check])
    header = ["setup", "cookies", "store reads", "avoided", "µs / request", "requests/s"]
    header.append("check ns")
    profile = found.profile
    return render(
        "gate",
        reads_sample=profile.reads_sample,
        rounds=profile.rounds,
        burst=profile.burst,
        table=table(header, rows, "llrrrrr"),
    )
