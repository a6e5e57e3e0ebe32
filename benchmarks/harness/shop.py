"""The example shop as a server of a benchmark's own: under gunicorn (WSGI, sync workers) or
uvicorn (ASGI), with a settings module, a database and a store apart for each setup.

A setup's settings module is written once under the benchmark's temporary directory: the
example project's settings, ``DEBUG = False``, an SQLite file and an LMDB directory of its
own, and the lines the setup adds. Its processes run the checkout's django_memopt and
``benchmarks`` package, whatever the virtualenv installed.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness.servers import EXAMPLE, ROOT

STARTUP_SECONDS = 30


@dataclass(eq=False)  # hashed by identity: an arm of the interleaved rounds
class Served:
    """One setup of the shop: what it adds to the settings and the environment, and its
    running server (``port``, ``process``) while there is one."""

    name: str
    settings: str  # lines appended to the example project's settings
    env: dict[str, str] = field(default_factory=dict)  # more environment of its processes
    port: int = 0
    process: Any = None


def environment(base: str, index: int, setup: Served) -> dict[str, str]:
    """The environment of setup ``index``'s processes, its settings module written once."""
    module = f"bench_shop_settings_{index}"
    path = os.path.join(base, f"{module}.py")
    if not os.path.exists(path):
        with open(path, "w") as file:
            file.write(
                "from example_project.settings import *  # noqa: F403\nDEBUG = False\n"
                f"MEMOPT_LMDB_PATH = {os.path.join(base, f'store-{index}')!r}\n"
                "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', "
                f"'NAME': {os.path.join(base, f'db-{index}.sqlite3')!r}, "
                "'OPTIONS': {'timeout': 20}}}\n"
                f"MEMOPT_STATS_INTERVAL = 1\n{setup.settings}\n"
            )
    env = dict(os.environ)
    # The checkout's django_memopt, as in this process, whatever the virtualenv installed.
    env["PYTHONPATH"] = os.pathsep.join([EXAMPLE, base, ROOT, env.get("PYTHONPATH", "")])
    env["DJANGO_SETTINGS_MODULE"] = module
    # The shop's own files (the gate's filter among them) apart for each setup.
    env["EXAMPLE_VAR_DIR"] = os.path.join(base, module)
    env.update(setup.env)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py *args`` in the environment ``env``; its stdout."""
    command = [sys.executable, os.path.join(EXAMPLE, "manage.py"), *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def gunicorn(port: int, workers: int, *options: str) -> list[str]:
    """The command of the shop under gunicorn: ``--preload``, ``workers`` sync workers."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "example_project.wsgi:application",
        "--preload",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        # No control socket in the home directory (as serve.py): setups run at once.
        "--no-control-socket",
        *options,
    ]


def uvicorn(port: int, workers: int, *options: str) -> list[str]:
    """The command of the shop under uvicorn: ``workers`` processes, no access log."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "example_project.asgi:application",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        *options,
    ]


def launch(
    base: str, index: int, setup: Served, workers: int, *options: str, server: Any = gunicorn
) -> None:
    """Setup ``index``'s shop under ``server`` (:func:`gunicorn` or :func:`uvicorn`) with
    ``workers`` workers and more of the server's ``options``, its database migrated; back
    once it answers ``GET /``."""
    start(base, index, setup, workers, *options, server=server)
    wait(setup)


def start(
    base: str,
    index: int,
    setup: Served,
    workers: int,
    *options: str,
    server: Any = gunicorn,
    migrate: bool = True,
) -> None:
    """:func:`launch` without waiting for the server to answer (see :func:`wait`);
    ``migrate=False`` for a database migrated already."""
    from tests.redis_server import free_port

    env = environment(base, index, setup)
    if migrate:
        manage(env, "migrate", "--noinput", "-v0")
    setup.port = free_port()
    setup.process = subprocess.Popen(server(setup.port, workers, *options), env=env)


def wait(setup: Served) -> None:
    """Back once ``setup``'s server answers ``GET /``; ``RuntimeError`` if it never does."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            get(setup.port, None)
            return
        except OSError:
            if time.monotonic() > deadline or setup.process.poll() is not None:
                raise RuntimeError(f"the server for {setup.name!r} did not start") from None
            time.sleep(0.1)


def get(port: int, cookie: str | None, path: str = "/") -> str | None:
    """``GET path`` (``RuntimeError`` unless it answers 200); the session cookie to send
    next time."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")
        for header, value in response.getheaders():
            if header.lower() == "set-cookie" and value.startswith("sessionid="):
                return value.split(";", 1)[0].split("=", 1)[1]
        return cookie
    finally:
        connection.close()


def stop(setup: Served) -> None:
    """Stop the server: its workers finish their request, flush their counters and exit."""
    if setup.process is None:
        return
    if setup.process.poll() is None:
        setup.process.send_signal(signal.SIGTERM)
        try:
            setup.process.wait(30)
        except subprocess.TimeoutExpired:
            setup.process.kill()
            setup.process.wait()
    setup.process = None
