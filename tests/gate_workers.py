"""Child-process entry points for ``test_gate.py``: session creators and request senders.

Each child configures Django from ``tests.settings`` with the LMDB store (and so the
session-ID filter) at the path it is given, and reports through ``tests.processes``.
"""

from __future__ import annotations

import contextlib
import os
import random
import string
import time
from pathlib import Path
from typing import Any

from tests import lmdb_workers
from tests.processes import WAIT, reporting

DONE = "done"
KEEP = 500  # sessions each churn() worker keeps


def setup(path: str, **overrides: Any) -> None:
    """Django from ``tests.settings``, the LMDB store at ``path`` and the filter on."""
    lmdb_workers.setup(path, MEMOPT_FILTER=True, **overrides)


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


def _new_keys(log_dir: str, offsets: dict[str, int]) -> list[str]:
    """The session keys logged in ``log_dir`` since the last call (whole lines only)."""
    keys: list[str] = []
    for name in sorted(os.listdir(log_dir)):
        log_path = os.path.join(log_dir, name)
        with open(log_path, "rb") as log:
            log.seek(offsets.get(log_path, 0))
            data = log.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line still being written: next time
        offsets[log_path] = offsets.get(log_path, 0) + len(whole)
        keys += whole.decode().split()
    return keys


def churn(path: str, log_dir: str, worker: int, seconds: float, result_path: str) -> None:
    """For ``seconds``: create a session, log its key once saved, ask the gate about every
    key any worker logged since (each once) and about one ID nobody saved, and delete this
    worker's sessions but the newest ``KEEP`` (so that a re-created filter is refilled).

    Reports the sessions the gate turned away that the store holds (there must be none)
    and the unknown IDs it turned away (it was filtering some of the time).
    """
    setup(path, MEMOPT_FILTER_CAPACITY=50_000)
    from django_memopt.backends.lmdb import SessionStore
    from django_memopt.gate import admits, session_ids

    with reporting(result_path) as result, open(f"{log_dir}/{worker}.log", "a") as log:
        offsets: dict[str, int] = {}
        created = checked = unknown_turned_away = 0
        mine: list[str] = []
        turned_away: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            session = SessionStore()
            session["worker"] = worker
            session.save()
            log.write(f"{session.session_key}\n")
            log.flush()
            created += 1
            mine.append(str(session.session_key))
            if len(mine) > KEEP:
                SessionStore().delete(mine.pop(0))
            for session_key in _new_keys(log_dir, offsets):
                checked += 1
                # Turned away rightly if its worker deleted it since; wrongly if it is there.
                if not admits(session_key) and SessionStore().exists(session_key):
                    turned_away.append(session_key)
            unknown_turned_away += not admits(session_ids().mint())
        result.update(
            created=created,
            checked=checked,
            turned_away=len(turned_away),
            examples=turned_away[:5],
            unknown_turned_away=unknown_turned_away,
        )


def vandalise(filter_path: str, seconds: float, result_path: str) -> None:
    """For ``seconds``, do to the filter file what operators and temp cleaners do: remove
    it (with or without its lock file), put a stale copy or garbage in its place, truncate
    it (to nothing or to half) and zero it in place, every 5 to 30 ms."""

    def remove() -> None:
        os.unlink(filter_path)

    def remove_with_lock() -> None:
        os.unlink(filter_path)
        os.unlink(f"{filter_path}.lock")

    def put_in_place(data: bytes) -> None:
        temporary = f"{filter_path}.vandal"
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, filter_path)

    stale: list[bytes] = []

    def copy_back_stale() -> None:
        with open(filter_path, "rb") as file:
            stale.append(file.read())
        if len(stale) > 1:
            put_in_place(stale.pop(0))

    def garbage() -> None:
        put_in_place(os.urandom(os.path.getsize(filter_path)))

    def truncate_to_nothing() -> None:
        os.truncate(filter_path, 0)

    def truncate_to_half() -> None:
        os.truncate(filter_path, os.path.getsize(filter_path) // 2)

    def zero_in_place() -> None:
        with open(filter_path, "r+b") as file:
            file.write(bytes(os.path.getsize(filter_path)))

    actions = [
        remove,
        remove_with_lock,
        copy_back_stale,
        garbage,
        truncate_to_nothing,
        truncate_to_half,
        zero_in_place,
    ]
    with reporting(result_path) as result:
        done: dict[str, int] = {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            action = random.choice(actions)
            with contextlib.suppress(FileNotFoundError):
                action()
                done[action.__name__] = done.get(action.__name__, 0) + 1
            time.sleep(random.uniform(0.005, 0.03))
        result["done"] = done


def check_after_truncation(
    path: str, keys_path: str, ready_path: str, truncated_path: str, result_path: str
) -> None:
    """Open the filter, say so, wait until the parent truncated its file, then ask the
    gate about every listed live session."""
    setup(path)
    from django_memopt.gate import admits, session_filter

    with reporting(result_path) as result:
        keys = Path(keys_path).read_text().split()
        found = session_filter()
        assert found is not None and found.complete
        assert all(admits(key) for key in keys)
        Path(ready_path).touch()
        deadline = time.monotonic() + WAIT
        while not os.path.exists(truncated_path):
            assert time.monotonic() < deadline, "the parent never truncated the file"
            time.sleep(0.005)
        result["admitted"] = sum(admits(key) for key in keys)
