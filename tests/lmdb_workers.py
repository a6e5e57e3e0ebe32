"""Child-process entry points for ``test_lmdb_store.py``.

The tests start these with the ``multiprocessing`` "spawn" context: each child is a fresh
interpreter that configures Django itself (``tests.settings``, then the store path it is
given) and reports back through files, never through a queue (no feeder threads, so a
child that forks has no other thread). Every entry point writes its outcome as JSON to
``result_path`` and exits non-zero if anything unexpected happened. The workers both
stores share (concurrent writers, a logout racing them) are in ``tests/session_workers.py``,
configured by ``setup()`` here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from tests.processes import WAIT, reporting

# Bounds for everything a child waits on: a child never outlives a broken test for long.


def setup(path: str, **overrides: Any) -> None:
    """Configure Django from ``tests.settings`` with the store at ``path`` and the other
    settings ``overrides`` names, all in place before the apps are ready."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    from django.conf import settings

    unused = settings.MEMOPT_LMDB_PATH  # loads tests.settings; no app is ready yet
    settings.MEMOPT_LMDB_PATH = path
    for name, value in overrides.items():
        setattr(settings, name, value)
    django.setup()
    # tests.settings makes an empty directory at import for its own default store.
    if unused != path and os.path.basename(unused).startswith("django-memopt-tests-"):
        with contextlib.suppress(OSError):
            os.rmdir(unused)


def blob(value: int) -> bytes:
    """Bytes derived from ``value``, 32 to 6,400 of them: a torn write cannot match."""
    return hashlib.sha256(str(value).encode()).digest() * (value % 200 + 1)


# -- a writer killed mid-write ---------------------------------------------------------------


def write_until_killed(path: str, log_path: str, first_value: int, seed: int) -> None:
    """Create and update sessions as fast as possible; log each one once ``save()`` returned.

    Each line of ``log_path`` is ``<session key> <value>``, written with one ``write()``
    after the commit; values only grow. Runs until killed (or ``WAIT`` seconds).
    """
    setup(path)
    from django_memopt.backends.lmdb import SessionStore

    rng = random.Random(seed)
    keys: list[str] = []
    value = first_value
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            session = SessionStore(rng.choice(keys) if keys and rng.random() < 0.7 else None)
            session["v"] = value
            session["blob"] = blob(value)
            session["n"] = rng.randrange(1000)
            session.save()
            if session.session_key not in keys:
                keys.append(session.session_key)
            os.write(fd, f"{session.session_key} {value}\n".encode())
            value += 1
    finally:
        os.close(fd)


def hold_read_transaction(path: str, log_path: str, session_key: str) -> None:
    """Open a read transaction, say so, and keep it open until killed (or ``WAIT``)."""
    setup(path)
    from django_memopt.backends.lmdb import environment

    opened = environment()
    with opened.env.begin(db=opened.sessions) as txn:
        if txn.get(session_key.encode()) is None:
            raise RuntimeError("the session is not there")
        with open(log_path, "w") as file:
            file.write(f"{os.getpid()}\n")
        time.sleep(WAIT)


def grow_in_bursts(
    path: str, result_path: str, map_size: int, count: int, size: int, pause: float
) -> None:
    """With a map of ``map_size`` bytes, create ``count`` sessions of ``size`` random bytes,
    ``pause`` seconds apart: another process's writes growing the file in bursts."""
    with reporting(result_path) as result:
        setup(path, MEMOPT_LMDB_MAP_SIZE=map_size)
        from django_memopt.backends.lmdb import SessionStore

        created = []
        for _ in range(count):
            session = SessionStore()
            session["blob"] = os.urandom(size)
            session.save()
            created.append(session.session_key)
            time.sleep(pause)
        result["created"] = created


def hold_write_transaction(path: str, log_path: str, session_key: str) -> None:
    """Write inside a transaction, say so, and hold it (and LMDB's write lock) until killed."""
    setup(path)
    from django_memopt.backends.lmdb import environment

    opened = environment()
    txn = opened.env.begin(write=True)
    txn.put(session_key.encode(), b"uncommitted", db=opened.sessions)
    txn.put(b"uncommitted" * 3, b"uncommitted", db=opened.sessions)
    with open(log_path, "w") as file:
        file.write(f"{os.getpid()}\n")
    time.sleep(WAIT)
    txn.abort()


def write_probe(path: str, result_path: str, log_path: str | None = None) -> None:
    """Create a session, update it and read it back: the store takes writes.

    With ``log_path``, a line is written there once Django is set up, just before the
    first use of the store.
    """
    with reporting(result_path) as result:
        setup(path)
        from django_memopt.backends.lmdb import SessionStore

        if log_path is not None:
            with open(log_path, "w") as file:
                file.write(f"{os.getpid()}\n")
        session = SessionStore()
        session["probe"] = 1
        session.save()
        session = SessionStore(session.session_key)
        session["probe"] = 2
        session.save()
        if SessionStore(session.session_key).get("probe") != 2:
            raise RuntimeError("the probe did not read back")
        result["session_key"] = session.session_key


# -- fork ------------------------------------------------------------------------------------


def _fork_child(
    body: Callable[[], dict[str, Any]], result_path: str, *, threaded: bool = False
) -> int:
    """Fork; the child runs ``body`` and reports to ``result_path``. Returns the child's pid.

    Unless ``threaded``, any warning from ``os.fork()`` (Python 3.12+ warns when other
    threads exist) fails the test: the fork tests must not fork a threaded process by
    accident.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore" if threaded else "always")
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's exit code
        code = 1
        try:
            with reporting(result_path) as result:
                result.update(body())
            code = 0
        finally:
            os._exit(code)
    if caught:
        raise RuntimeError(f"os.fork() warned: {[str(w.message) for w in caught]}")
    return pid


def _wait_child(pid: int) -> int:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise RuntimeError("the forked child did not finish in time")


def fork_and_use(path: str, result_path: str, child_result_path: str) -> None:
    """Save, fork, use the store in the child; then the parent reads the child's writes."""
    with reporting(result_path) as result:
        setup(path)
        from django_memopt.backends.lmdb import SessionStore, environment

        result["threads_at_fork"] = threading.active_count()
        parent_session = SessionStore()
        parent_session["by"] = "parent"
        parent_session.save()
        parent_key = parent_session.session_key
        inherited = environment()

        def child() -> dict[str, Any]:
            session = SessionStore(parent_key)
            seen = session.get("by")
            session["child"] = os.getpid()
            session.save()
            created = SessionStore()
            created["by"] = "child"
            created.save()
            opened = environment()
            return {
                "seen": seen,
                "created": created.session_key,
                "reopened": opened is not inherited and opened.pid == os.getpid(),
            }

        child_pid = _fork_child(child, child_result_path)
        result["child_pid"] = child_pid
        result["child_exit"] = _wait_child(child_pid)
        result["same_environment"] = environment() is inherited
        result["parent_sees"] = SessionStore(parent_key).get("child")
        with open(child_result_path) as file:
            created = json.load(file).get("created")
        result["parent_sees_created"] = created and SessionStore(created).get("by")
        after = SessionStore()
        after["by"] = "parent after fork"
        after.save()
        result["parent_key"] = parent_key
        result["after_key"] = after.session_key


def fork_during_transaction(
    path: str, result_path: str, child_result_path: str, release_after: float
) -> None:
    """Fork while another thread is inside a read transaction of the store.

    The thread leaves its transaction ``release_after`` seconds after it began (or only
    once the fork is over, if negative). The child then tries to use the store.
    """
    with reporting(result_path) as result:
        setup(path)
        from django_memopt import records
        from django_memopt.backends import lmdb as lmdb_backend
        from django_memopt.backends.lmdb import SessionStore, environment

        lmdb_backend.FORK_WAIT_SECONDS = 0.5  # type: ignore[misc]
        session = SessionStore()
        session["by"] = "parent"
        session.save()
        opened = environment()
        inside, release = threading.Event(), threading.Event()

        def hold(txn: Any) -> bytes:
            inside.set()
            release.wait(10)
            return bytes(txn.get(session.session_key.encode(), db=opened.sessions))

        holder_result: list[bytes] = []
        holder = threading.Thread(
            target=lambda: holder_result.append(
                lmdb_backend._transaction(opened, hold, write=False)
            )
        )
        holder.start()
        inside.wait(10)
        if release_after >= 0:
            threading.Timer(release_after, release.set).start()

        def pids() -> list[int]:
            lines = opened.env.readers().splitlines()[1:]
            return [int(line.split()[0]) for line in lines if line.split()]

        def child() -> dict[str, Any]:
            try:
                created = SessionStore()
                created["by"] = "child"
                created.save()
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                return {"error": f"{type(exc).__name__}: {exc}"}
            return {"created": created.session_key}

        result["before"] = pids()
        started = time.monotonic()
        pid = _fork_child(child, child_result_path, threaded=True)  # threads: the scenario
        result["fork_waited"] = time.monotonic() - started
        result["child_exit"] = _wait_child(pid)
        result["after"] = pids()
        release.set()
        holder.join(10)
        result["holder_read"] = bool(holder_result) and holder_result[0][:1] == bytes(
            (records.FORMAT,)
        )
        result["pid"] = os.getpid()
        result["parent_still_works"] = SessionStore(session.session_key).get("by") == "parent"
