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


# -- the index of a user's sessions ----------------------------------------------------------


def log_in(SessionStore: type[SessionBase], user: str, **fields: Any) -> SessionBase:
    """A session logged in as ``user``, the way ``django.contrib.auth.login()`` does it: a
    new key (``cycle_key``), then the user's fields, saved at the end of the request."""
    session = SessionStore()
    session.client = ("203.0.113.7", f"Browser/{os.getpid()}")
    session.update(fields)
    session.cycle_key()
    session["_auth_user_id"] = user
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = "0" * 64
    session.save()
    return session


def log_in_and_out(
    store: str,
    setup_args: tuple[Any, ...],
    user: str,
    rounds: int,
    barrier: Any,
    result_path: str,
) -> None:
    """Three threads, each ``rounds`` times: log in as ``user``, save once more, log out
    (``flush``); then log in once more and stay. Reports the keys left logged in
    (``kept``), with MEMOPT_USER_SESSIONS on."""
    from django.test import override_settings

    with reporting(result_path) as result:
        SessionStore = ready(store, setup_args)
        override_settings(MEMOPT_USER_SESSIONS=True).enable()
        kept: list[str] = []
        barrier.wait(WAIT)

        def work(n: int) -> None:
            for round_ in range(rounds):
                session = log_in(SessionStore, user)
                session["round"] = round_
                session.save()
                session.flush()
            kept.append(str(log_in(SessionStore, user).session_key))

        run_threads(3, work)
        result["kept"] = kept


def end_all_of(
    store: str,
    setup_args: tuple[Any, ...],
    user: str,
    barrier: Any,
    result_path: str,
) -> None:
    """``end_all_sessions(user)`` from another process; reports how many (``ended``)."""
    from django.test import override_settings

    with reporting(result_path) as result:
        ready(store, setup_args)
        override_settings(MEMOPT_USER_SESSIONS=True).enable()
        from django_memopt.user_sessions import end_all_sessions

        barrier.wait(WAIT)
        result["ended"] = end_all_sessions(user)
