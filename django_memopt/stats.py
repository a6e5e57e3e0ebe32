"""What the app does, counted per process and summed across processes by ``memopt_stats``.

The counting is :mod:`django_memopt.counters` (re-exported here). A process flushes the
totals of its threads to the store under a key of its own at most every
``MEMOPT_STATS_INTERVAL`` seconds, when a request finishes, and at exit, SIGTERM included.
A flush replaces that process's record with its totals so far, so records are never
counted twice, and the record of a process that has died stays: a process killed outright
loses only what it counted since its last flush.
"""

from __future__ import annotations

import _thread
import atexit
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any, Final

import msgpack
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished

from .backends.base import SessionBase, SessionStoreError, session_store
from .conf import conf
from .counters import (
    ENGINE_COUNTERS,
    GATE_COUNTERS,
    add,
    counted_anything,
    counter,
    process_started,
    process_token,
    process_totals,
)
from .gc_tuning import figures as collector_figures

__all__ = [
    "ENGINE_COUNTERS",
    "GATE_COUNTERS",
    "add",
    "counter",
    "flush",
    "process_totals",
    "read_records",
    "stale_tokens",
    "summed",
]

logger: Final = logging.getLogger("django_memopt.stats")

RECORD_VERSION: Final = 1
#: The exit status after SIGTERM: what shells and container runtimes report for a process
#: SIGTERM killed.
SIGTERM_EXIT_STATUS: Final = 128 + signal.SIGTERM
#: How long the exit after SIGTERM (and its flush) may take before SIGTERM's default action
#: ends the process anyway.
SIGTERM_GRACE_SECONDS: Final = 5.0


class _Schedule:
    """When this process flushes next (monotonic); a forked child flushes at once."""

    next_flush = 0.0


_schedule = _Schedule()


def _reset_in_child() -> None:
    _schedule.next_flush = 0.0


os.register_at_fork(after_in_child=_reset_in_child)


def _record() -> bytes:
    record = {
        "version": RECORD_VERSION,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_started(),
        "flushed": time.time(),
        "counts": process_totals(),
        "gc": collector_figures(),
    }
    packed: bytes = msgpack.packb(record)
    return packed


def _store() -> type[SessionBase] | None:
    """The engine's ``SessionStore``, or None if ``SESSION_ENGINE`` is not one of this app's
    (the app may be installed for its collector tuning alone)."""
    try:
        return session_store()
    except ImproperlyConfigured:
        return None


def flush() -> None:
    """Write this process's record to the store now (nowhere if the engine is not ours)."""
    store = _store()
    if store is not None:
        store.put_value("stats", process_token(), _record())


def _flush_logging_failure(failure: str) -> None:
    """Flush; a store error is logged in one line (a store that is down would otherwise
    print a traceback every interval), anything unexpected with its traceback."""
    try:
        flush()
    except SessionStoreError as exc:
        logger.warning("%s: %s: %s", failure, type(exc).__name__, exc)
    except Exception:
        logger.exception(failure)


def _flush_when_due(**kwargs: Any) -> None:
    interval = conf.MEMOPT_STATS_INTERVAL
    if interval is None:
        return
    now = time.monotonic()
    if now < _schedule.next_flush:
        return
    _schedule.next_flush = now + interval
    # Counting must never fail a request; the next flush tries again.
    _flush_logging_failure("django-memopt could not flush its counters to the session store")


def _flush_at_exit() -> None:
    if conf.MEMOPT_STATS_INTERVAL is None or not counted_anything():
        return
    _flush_logging_failure("django-memopt could not flush its counters at exit")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: leave through ``SystemExit``, so that the process exits as it would at the
    end of its work, and ``atexit`` flushes.

    The flush is not done here: Python runs this handler in the main thread between two of
    its steps, maybe inside an LMDB write transaction (LMDB refuses a second one in that
    thread: the flush would be lost) or halfway through the Redis client's bookkeeping of
    its connections. The exception unwinds all that first: the transaction is aborted, the
    connection handed back.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    if conf.MEMOPT_STATS_INTERVAL is None or not counted_anything():
        signal.raise_signal(signal.SIGTERM)  # nothing to flush: die as before
    # Even if the exit hangs (a non-daemon thread that never ends, code that swallows
    # SystemExit, a store that does not answer), SIGTERM ends the process. A bare thread:
    # the code this handler interrupted may hold the locks of ``threading``.
    _thread.start_new_thread(_terminate_after, (SIGTERM_GRACE_SECONDS,))
    raise SystemExit(SIGTERM_EXIT_STATUS)


def _terminate_after(seconds: float) -> None:
    time.sleep(seconds)
    os.kill(os.getpid(), signal.SIGTERM)


def _caught_outside_python(signum: int) -> bool:
    """Whether the kernel says ``signum`` is caught or ignored, though ``signal.getsignal``
    says default: a server that embeds Python (uWSGI, mod_wsgi) may set its own handler in
    C after Python started. Known on Linux only; elsewhere, False."""
    try:
        with open("/proc/self/status") as status:
            masks = dict(line.split(":", 1) for line in status if line.startswith("Sig"))
    except OSError:
        return False
    bit = 1 << (signum - 1)
    return any(int(masks.get(name, "0"), 16) & bit for name in ("SigCgt", "SigIgn"))


def _flush_on_sigterm() -> None:
    """Make SIGTERM exit through ``atexit`` (which flushes) where its action is the
    default one, which kills the process without running ``atexit``.

    Only the main thread may set a handler. A handler already in place (gunicorn's,
    uvicorn's, a Celery worker's, the embedding server's) is left alone, as is one
    installed later over this one: such servers end their processes through ``atexit``
    when they are ready to, after their requests. Chaining to it from here would flush
    before their requests have finished, from inside a signal handler.
    """
    if conf.MEMOPT_STATS_INTERVAL is None:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # somebody else's, SIG_IGN, or this module's own from an earlier call
    if _caught_outside_python(signal.SIGTERM):
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def connect() -> None:
    """Flush after requests, at exit and on SIGTERM (from ``AppConfig.ready()``; once)."""
    request_finished.connect(_flush_when_due, dispatch_uid="django_memopt.stats")
    atexit.register(_flush_at_exit)
    _flush_on_sigterm()


# -- reading -----------------------------------------------------------------------------


def read_records(raw: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """The processes' records as the store holds them; unreadable ones are skipped."""
    records = []
    for token, packed in raw.items():
        try:
            record = msgpack.unpackb(packed, strict_map_key=False)
        except Exception:
            logger.warning("Skipping an unreadable django-memopt stats record %r", token)
            continue
        if isinstance(record, dict) and record.get("version") == RECORD_VERSION:
            record["token"] = token
            records.append(record)
    return records


def stale_tokens(records: Iterable[dict[str, Any]], older_than: float, now: float) -> list[str]:
    """The tokens of the records (from :func:`read_records`) last flushed more than
    ``older_than`` seconds before ``now``: processes gone, or idle that long."""
    cutoff = now - older_than
    return [record["token"] for record in records if record.get("flushed", 0) < cutoff]


# GC figures that are not amounts to add up (settings in effect; the frozen objects of a
# process, which forked workers share): taken from the latest record.
_GC_SETTINGS: Final = (
    "out_of_band_every",
    "threshold0",
    "threshold1",
    "threshold2",
    "frozen_objects",
)


def summed(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The records' counters added up and their GC figures added up (the worst pause: the
    largest, with its generation; the thresholds in effect: the latest record's), and how
    many processes and hosts they came from."""
    counts: Counter[str] = Counter()
    gc_figures: Counter[str] = Counter()
    worst = (0, -1)
    latest: tuple[float, dict[str, Any]] = (-math.inf, {})
    processes, hosts = 0, set()
    for record in records:
        processes += 1
        hosts.add(record.get("host"))
        counts.update(record.get("counts") or {})
        figures = dict(record.get("gc") or {})
        pause = (figures.pop("worst_pause_ns", 0), figures.pop("worst_pause_generation", -1))
        worst = max(worst, pause)
        if record.get("flushed", 0) > latest[0]:
            latest = (record.get("flushed", 0), figures)
        gc_figures.update({k: v for k, v in figures.items() if k not in _GC_SETTINGS})
    settings_in_effect = {name: latest[1][name] for name in _GC_SETTINGS if name in latest[1]}
    return {
        "processes": processes,
        "hosts": len(hosts),
        "counts": dict(counts),
        "gc": {
            **gc_figures,
            "worst_pause_ns": worst[0],
            "worst_pause_generation": worst[1],
            **settings_in_effect,
        },
    }
