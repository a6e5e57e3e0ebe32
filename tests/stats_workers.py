"""Child-process entry points for ``test_stats.py``: worker processes serving requests."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
