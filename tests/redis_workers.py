"""Child-process entry points for ``test_redis_store.py``.

The tests start these with the ``multiprocessing`` "spawn" context: each child is a fresh
interpreter that configures Django itself (``tests.settings``), then points the cache
alias ``"sessions"`` at the redis-server whose port it is given (the child's own import of
``tests.settings`` picked another, unused port) and uses the Redis engine with the key
prefix it is given. Children report back through files, never through a queue: every
entry point writes its outcome as JSON to ``result_path`` and exits non-zero if anything
unexpected happened.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import traceback
from typing import Any

from tests.processes import WAIT, reporting, run_threads

# Bounds for everything a child waits on: a child never outlives a broken test for long.
ENGINE = "django_memopt.backends.redis"


def redis_caches(port: int) -> dict[str, Any]:
    """``CACHES`` with the alias ``"sessions"`` on the redis-server at ``port``."""
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        },
    }


def setup(port: int, prefix: str) -> None:
    """Configure Django from ``tests.settings``, with sessions in Redis at ``port``."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import override_settings

    # tests.settings makes an empty directory at import for its LMDB store: unused here.
    unused = settings.MEMOPT_LMDB_PATH
    if os.path.basename(unused).startswith("django-memopt-tests-"):
        with contextlib.suppress(OSError):
            os.rmdir(unused)
    # As override_settings in a test: the setting_changed signal resets Django's cache
    # handler (and the engine's client), so nothing configured at import time is kept.
    override_settings(
        CACHES=redis_caches(port),
        SESSION_ENGINE=ENGINE,
        SESSION_CACHE_ALIAS="sessions",
        MEMOPT_REDIS_KEY_PREFIX=prefix,
    ).enable()
    from django_memopt.backends.redis import connection

    actual = int(connection().info("server")["tcp_port"])
    if actual != port:
        raise RuntimeError(f"the child talks to the redis-server on port {actual}, not {port}")


# -- no lost updates -------------------------------------------------------------------------


def update_own_fields(
    port: int,
    prefix: str,
    session_key: str,
    names: list[str],
    rounds: int,
    barrier: Any,
    result_path: str,
) -> None:
    """One thread per name, each ``rounds`` times: load the session, check that its own
    field holds its last value, set the next value, save. Started together with the other
    processes (``barrier``)."""
    with reporting(result_path) as result:
        setup(port, prefix)
        from django_memopt.backends.redis import SessionStore

        errors: list[str] = result["errors"]
        saves = [0] * len(names)
        start = threading.Barrier(len(names), timeout=WAIT)
        barrier.wait(WAIT)

        def work(n: int) -> None:
            name = names[n]
            rng = random.Random(f"{name}-{os.getpid()}")
            try:
                start.wait()
                for value in range(1, rounds + 1):
                    session = SessionStore(session_key)
                    previous = session.get(name)
                    if session.session_key != session_key:
                        errors.append(f"{name}: the session vanished in round {value}")
                        return
                    if previous != (value - 1 if value > 1 else None):
                        errors.append(f"{name}: round {value} loaded {previous!r}")
                    # Stay between load and save a little, so other writers save meanwhile.
                    time.sleep(rng.random() / 1000)
                    session[name] = value
                    session.save()
                    saves[n] += 1
            except Exception:
                errors.append(traceback.format_exc())

        run_threads(len(names), work)
        result["saves"] = sum(saves)


# -- no resurrection -------------------------------------------------------------------------


def update_until_deleted(
    port: int,
    prefix: str,
    session_key: str,
    names: list[str],
    max_rounds: int,
    barrier: Any,
    result_path: str,
) -> None:
    """Update own fields until the session is gone; record how each thread noticed."""
    with reporting(result_path) as result:
        setup(port, prefix)
        from django.contrib.sessions.backends.base import UpdateError

        from django_memopt.backends.redis import SessionStore

        errors: list[str] = result["errors"]
        outcomes: dict[str, str] = {}
        start = threading.Barrier(len(names), timeout=WAIT)
        barrier.wait(WAIT)

        def work(n: int) -> None:
            name = names[n]
            try:
                start.wait()
                for value in range(1, max_rounds + 1):
                    session = SessionStore(session_key)
                    session.get(name)
                    if session.session_key is None:
                        outcomes[name] = "gone at load"
                        return
                    time.sleep(0.002)  # the window a logout elsewhere falls into
                    session[name] = value
                    try:
                        session.save()
                    except UpdateError:
                        outcomes[name] = "UpdateError"
                        if session.exists(session_key):
                            errors.append(f"{name}: UpdateError, but the session exists")
                        return
                outcomes[name] = "never saw the logout"
            except Exception:
                errors.append(traceback.format_exc())

        run_threads(len(names), work)
        result["outcomes"] = outcomes


def delete_when_busy(
    port: int, prefix: str, session_key: str, names: list[str], barrier: Any, result_path: str
) -> None:
    """Delete (log out) the session once every writer has saved a few times."""
    with reporting(result_path) as result:
        setup(port, prefix)
        from django_memopt.backends.redis import SessionStore

        barrier.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            session = SessionStore(session_key)
            if all(session.get(name, 0) >= 3 for name in names):
                break
            time.sleep(0.001)
        else:
            raise RuntimeError("the writers never got going")
        SessionStore(session_key).delete()
        result["deleted"] = True
