"""Child-process entry points for ``test_gate.py``: session creators and request senders.

Each child configures Django from ``tests.settings`` with the LMDB store (and so the
session-ID filter) at the path it is given, and reports through ``tests.processes``.
"""

from __future__ import annotations

import os
import random
import string
import time
from pathlib import Path

from tests import lmdb_workers
from tests.processes import WAIT, reporting

DONE = "done"


def setup(path: str) -> None:
    """Django from ``tests.settings``, the LMDB store at ``path`` and the filter on."""
    lmdb_workers.setup(path, MEMOPT_FILTER=True)


def create_sessions(path: str, log_path: str, count: int, result_path: str) -> None:
    """Create ``count`` sessions; log each key (with its value) once ``save()`` returned."""
    setup(path)
    from django_memopt.backends.lmdb import SessionStore

    with reporting(result_path) as result, open(log_path, "a") as log:
        for n in range(count):
            session = SessionStore()
            session["n"] = n
            session.save()
            log.write(f"{session.session_key} {n}\n")
            log.flush()
        log.write(f"{DONE}\n")
        log.flush()
        result["created"] = count


def request_logged_sessions(path: str, log_paths: list[str], result_path: str) -> None:
    """Send a request carrying every logged session ID, as soon as it is logged.

    Counts the requests whose session came back empty: the gate (or the store) lost it.
    """
    setup(path)
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.test import RequestFactory

    from django_memopt.gate import session_filter
    from django_memopt.middleware import SessionMiddleware
    from django_memopt.stats import process_totals

    def view(request: HttpRequest) -> HttpResponse:
        return JsonResponse({"n": request.session.get("n")})

    middleware = SessionMiddleware(view)
    factory = RequestFactory()
    with reporting(result_path) as result:
        found = session_filter()
        assert found is not None and found.complete, "the filter must be filtering"
        offsets = dict.fromkeys(log_paths, 0)
        done: set[str] = set()
        sent = lost = 0
        deadline = time.monotonic() + WAIT
        while len(done) < len(log_paths):
            assert time.monotonic() < deadline, "the creators never finished"
            for log_path in log_paths:
                if log_path in done or not os.path.exists(log_path):
                    continue
                with open(log_path) as log:
                    log.seek(offsets[log_path])
                    lines = log.readlines()
                    # A line without its newline is still being written: read it next time.
                    if lines and not lines[-1].endswith("\n"):
                        lines.pop()
                    offsets[log_path] += sum(len(line) for line in lines)
                for line in lines:
                    if line.strip() == DONE:
                        done.add(log_path)
                        continue
                    session_key, value = line.split()
                    request = factory.get("/")
                    request.COOKIES[settings.SESSION_COOKIE_NAME] = session_key
                    response = middleware(request)
                    sent += 1
                    if response.content != f'{{"n": {value}}}'.encode():
                        lost += 1
            time.sleep(0.001)
        # The same filter turns away IDs nobody saved.
        alphabet = string.ascii_lowercase + string.digits
        unknown = ["".join(random.choices(alphabet, k=32)) for _ in range(1000)]
        result.update(
            sent=sent,
            lost=lost,
            rejected={
                name: value
                for name, value in process_totals().items()
                if name.startswith("rejected_") and value
            },
            unknown_passed=sum(found.might_contain(key) for key in unknown),
        )


def reopen_and_check(path: str, keys_path: str, result_path: str) -> None:
    """A new process (a restarted worker): how many of the listed live sessions it admits."""
    setup(path)
    from django_memopt.gate import admits, session_filter

    with reporting(result_path) as result:
        keys = Path(keys_path).read_text().split()
        found = session_filter()
        result["complete"] = found is not None and found.complete
        result["admitted"] = sum(admits(key) for key in keys)
