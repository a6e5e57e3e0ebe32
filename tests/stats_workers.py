"""Child-process entry points for ``test_stats.py``: worker processes serving requests."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tests import lmdb_workers
from tests.processes import WAIT, reporting


def setup(path: str, interval: float | None) -> None:
    lmdb_workers.setup(path, MEMOPT_STATS_INTERVAL=interval)


def serve(path: str, requests: int, interval: float | None, result_path: str) -> None:
    """Serve ``requests`` requests through the whole stack: one that creates a session,
    the rest reading it; then exit normally (the exit flushes)."""
    setup(path, interval)
    from django.test import Client

    with reporting(result_path) as result:
        client = Client()
        assert client.get("/store/a/1/").status_code == 200
        for _ in range(requests - 1):
            assert client.get("/read/a/").json() == {"value": "1"}
        result["served"] = requests


def serve_until_killed(
    path: str, requests: int, interval: float | None, done_path: str, result_path: str
) -> None:
    """As :func:`serve`, then say so and wait to be killed (no exit flush)."""
    setup(path, interval)
    from django.test import Client

    with reporting(result_path) as result:
        client = Client()
        assert client.get("/store/a/1/").status_code == 200
        for _ in range(requests - 1):
            assert client.get("/read/a/").json() == {"value": "1"}
        result["served"] = requests
    Path(done_path).write_text(str(os.getpid()))
    time.sleep(WAIT)


def serve_until_terminated(
    path: str,
    requests: int,
    interval: float | None,
    ready_path: str,
    result_path: str,
    handler_path: str = "",
    swallow_exit: bool = False,
) -> None:
    """As :func:`serve_until_killed`, waiting for SIGTERM instead. With ``handler_path``, a
    SIGTERM handler of the program's own is in place before Django starts, as servers
    install theirs: it writes that file and exits. With ``swallow_exit``, the program
    catches ``SystemExit`` and carries on (a grace of half a second here)."""
    if handler_path:

        def own_handler(signum: int, frame: FrameType | None) -> None:
            Path(handler_path).write_text("called")
            sys.exit(0)

        signal.signal(signal.SIGTERM, own_handler)
    setup(path, interval)
    from django.test import Client

    from django_memopt import stats

    if swallow_exit:
        stats.SIGTERM_GRACE_SECONDS = 0.5
    with reporting(result_path) as result:
        client = Client()
        assert client.get("/store/a/1/").status_code == 200
        for _ in range(requests - 1):
            assert client.get("/read/a/").json() == {"value": "1"}
        result["served"] = requests
    Path(ready_path).write_text(str(os.getpid()))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SystemExit:
            if not swallow_exit:
                raise


def sigterm_handler_under_a_c_level_ignore(path: str) -> None:
    """SIGTERM ignored in C, behind Python's back (as a server embedding Python may set its
    own handler), before Django starts; then SIGTERM: print whether this survived it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.signal(signal.SIGTERM, 1)  # SIG_IGN
    setup(path, 10.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)
    print("survived")


def save_until_terminated(path: str, ready_path: str) -> None:
    """Save one session over and over in the main thread, each save an LMDB write
    transaction, until SIGTERM; say so after the first 50."""
    setup(path, 3600.0)
    from django_memopt.backends.lmdb import SessionStore

    session = SessionStore()
    deadline = time.monotonic() + WAIT
    saves = 0
    while time.monotonic() < deadline:
        session["n"] = saves
        session.save()
        saves += 1
        if saves == 50:
            Path(ready_path).write_text(str(os.getpid()))
