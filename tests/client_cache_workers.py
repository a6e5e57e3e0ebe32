"""Child processes of ``test_client_cache.py``: each configures Django as
``tests/redis_workers.py`` does, with the client-side cache on, then writes sessions.

Kept apart from the test module, which a spawned child would otherwise import before
Django is configured.
"""

from __future__ import annotations

import traceback
from typing import Any

from tests.redis_workers import setup

# The writers' own client-side cache (bytes).
CACHE_BYTES = 1 << 20


def writer(port: int, prefix: str, commands: Any) -> None:
    """Process B: carries out what it is sent on the pipe, then answers (with its cache on)."""
    try:
        setup(port, prefix)
        from django.test import override_settings

        from django_memopt import counters
        from django_memopt.backends.redis import SessionStore

        override_settings(MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES).enable()
        commands.send(("ready", None))
        while True:
            operation, session_key, value = commands.recv()
            if operation == "stop":
                commands.send(("stopped", counters.process_totals()))
                return
            session = SessionStore(session_key)
            answer: Any = None
            if operation == "set":
                session["v"] = value
                session.save()
            elif operation == "delete":
                session.delete()
            elif operation == "flush":  # a logout: deleted, and a new empty session
                session.flush()
            elif operation == "cycle":
                session.cycle_key()
                answer = session.session_key
            elif operation == "create":
                session["v"] = value
                session.save()
                answer = session.session_key
            commands.send(("done", answer))
    except Exception:
        commands.send(("error", traceback.format_exc()))


def racing_writer(
    port: int, prefix: str, session_keys: list[str], acknowledged: Any, stop: Any, ready: Any
) -> None:
    """Process B, without a handshake: sets field ``v`` of the sessions in turn to a rising
    number and, once each save has answered, publishes that number in ``acknowledged``."""
    setup(port, prefix)
    from django.test import override_settings

    from django_memopt.backends.redis import SessionStore

    override_settings(MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES).enable()
    ready.set()
    number = 0
    while not stop.is_set():
        number += 1
        at = number % len(session_keys)
        session = SessionStore(session_keys[at])
        session["v"] = number
        session.save()
        acknowledged[at] = number
