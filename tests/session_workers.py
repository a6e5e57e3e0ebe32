"""Child-process workers shared by the LMDB and Redis multi-process tests.

Each entry point takes the store's name (``"lmdb"`` or ``"redis"``) and the arguments of
that store's ``setup()`` (in ``tests/lmdb_workers.py`` or ``tests/redis_workers.py``),
which configures Django in the fresh child interpreter.
"""

from __future__ import annotations

import os
import random
import threading
import time
import traceback
from importlib import import_module
from typing import Any

from django.contrib.sessions.backends.base import UpdateError

from django_memopt.backends.base import SessionBase
from tests.processes import WAIT, reporting, run_threads


def ready(store: str, setup_args: tuple[Any, ...]) -> type[SessionBase]:
    """Configure this child for ``store``; its ``SessionStore``, with the store opened."""
    import_module(f"tests.{store}_workers").setup(*setup_args)
    SessionStore: type[SessionBase] = import_module(f"django_memopt.backends.{store}").SessionStore
    # Open the store before the start line, so that every process starts writing at once.
    SessionStore().exists("openthestore")
    return SessionStore


# -- no lost updates -------------------------------------------------------------------------


def hammer(
    SessionStore: type[SessionBase], session_key: str, names: list[str], rounds: int
) -> tuple[int, list[str]]:
    """One thread per name, each ``rounds`` times: load the session, check that its own
    field holds its last value, set the next value, save. Returns (saves, errors)."""
    errors: list[str] = []
    saves = [0] * len(names)
    start = threading.Barrier(len(names), timeout=WAIT)

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
                # Stay between load and save a little, so other writers commit meanwhile.
                time.sleep(rng.random() / 1000)
                session[name] = value
                session.save()
                saves[n] += 1
        except Exception:
            errors.append(traceback.format_exc())

    run_threads(len(names), work)
    return sum(saves), errors


def update_own_fields(
    store: str,
    setup_args: tuple[Any, ...],
    session_key: str,
    names: list[str],
    rounds: int,
    barrier: Any,
    result_path: str,
) -> None:
    """:func:`hammer` in this process, started together with the other processes."""
    with reporting(result_path) as result:
        SessionStore = ready(store, setup_args)
        barrier.wait(WAIT)
        result["saves"], errors = hammer(SessionStore, session_key, names, rounds)
        result["errors"].extend(errors)


# -- no resurrection -------------------------------------------------------------------------


def update_until_deleted(
    store: str,
    setup_args: tuple[Any, ...],
    session_key: str,
    names: list[str],
    max_rounds: int,
    barrier: Any,
    result_path: str,
) -> None:
    """Update own fields until the session is gone; record how each thread noticed."""
    with reporting(result_path) as result:
        SessionStore = ready(store, setup_args)
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
    store: str,
    setup_args: tuple[Any, ...],
    session_key: str,
    names: list[str],
    barrier: Any,
    result_path: str,
) -> None:
    """Delete (log out) the session once every writer has saved a few times."""
    with reporting(result_path) as result:
        SessionStore = ready(store, setup_args)
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


# -- store-wide values -----------------------------------------------------------------------


def add_value_racing(
    store: str,
    setup_args: tuple[Any, ...],
    space: str,
    name: str,
    values: list[str],
    barrier: Any,
    result_path: str,
) -> None:
    """One thread per value, all at once with the other processes: ``add_value(space,
    name, value)``. Reports what each call returned (``returned``), as text."""
    with reporting(result_path) as result:
        SessionStore = ready(store, setup_args)
        returned: list[str] = []
        start = threading.Barrier(len(values), timeout=WAIT)
        barrier.wait(WAIT)

        def add(n: int) -> None:
            start.wait()
            returned.append(SessionStore.add_value(space, name, values[n].encode()).decode())

        run_threads(len(values), add)
        result["returned"] = returned
