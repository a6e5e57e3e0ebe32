"""What the app does, counted per process and summed across processes by ``memopt_stats``.

Each thread counts into a dictionary of its own (exact, and no lock on the hot path). A
process flushes the totals of its threads to the store under a key of its own at most
every ``MEMOPT_STATS_INTERVAL`` seconds, when a request finishes, and at exit. A flush
replaces that process's record with its totals so far, so records are never counted
twice, and the record of a process that has died stays: a process killed outright loses
only what it counted since its last flush.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgpack
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished

from .conf import conf

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

#: The engine's counters: sessions loaded (and of those, not found), saves by kind, the
#: fields loads brought and how many of them were decoded, the bytes saves wrote and what
#: whole-session rewrites would have written.
ENGINE_COUNTERS: Final = (
    "loads",
    "misses",
    "creates",
    "updates",
    "touches",
    "fields_loaded",
    "fields_decoded",
    "bytes_written",
    "bytes_rewrite",
)
#: The session-ID gate's counters: cookies checked, let through, and turned away by reason.
GATE_COUNTERS: Final = (
    "checked",
    "passed",
    "rejected_malformed",
    "rejected_forged",
    "rejected_unsigned",
    "rejected_unknown",
)

RECORD_VERSION: Final = 1


class _Process:
    """This process's counters: one Counter per thread, and when it last flushed."""

    def __init__(self) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns():x}"
        self.started = time.time()
        self.threads: list[Counter[str]] = []
        self.lock = threading.Lock()  # guards ``threads``; counting never takes it
        self.local = threading.local()
        self.next_flush = 0.0


_process = _Process()


def _reset_in_child() -> None:
    # A forked worker starts counting from zero under its own key; the parent's counts
    # stay the parent's.
    global _process
    _process = _Process()


os.register_at_fork(after_in_child=_reset_in_child)


def counter() -> Counter[str]:
    """This thread's counters, to add to directly where several counts come at once."""
    process = _process
    try:
        return process.local.counts  # type: ignore[no-any-return]
    except AttributeError:
        counts: Counter[str] = Counter()
        with process.lock:
            process.threads.append(counts)
        process.local.counts = counts
        return counts


def add(name: str, amount: int = 1) -> None:
    """Count ``amount`` more of ``name`` in this thread."""
    counter()[name] += amount


def process_totals() -> dict[str, int]:
    """This process's counts so far, over all its threads."""
    total: Counter[str] = Counter()
    with _process.lock:
        threads = list(_process.threads)
    for counts in threads:
        # A copy first: another thread may be adding a key while this one iterates.
        total.update(counts.copy())
    return dict(total)


def _record() -> bytes:
    from .gc_tuning import figures

    record = {
        "version": RECORD_VERSION,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _process.started,
        "flushed": time.time(),
        "counts": process_totals(),
        "gc": figures(),
    }
    packed: bytes = msgpack.packb(record)
    return packed


def _store() -> Any:
    """The engine's ``SessionStore``, or None if ``SESSION_ENGINE`` is not one of this app's
    (the app may be installed for its collector tuning alone)."""
    from .gate import session_store

    try:
        return session_store()
    except ImproperlyConfigured:
        return None


def flush() -> None:
    """Write this process's record to the store now (nowhere if the engine is not ours)."""
    store = _store()
    if store is not None:
        store.write_stats(_process.token, _record())


def _flush_when_due(**kwargs: Any) -> None:
    interval = conf.MEMOPT_STATS_INTERVAL
    if interval is None:
        return
    now = time.monotonic()
    if now < _process.next_flush:
        return
    _process.next_flush = now + interval
    try:
        flush()
    except Exception:
        # Counting must never fail a request; the next flush tries again.
        logger.exception("django-memopt could not flush its counters to the session store")


def _flush_at_exit() -> None:
    if conf.MEMOPT_STATS_INTERVAL is None or not _process.threads:
        return
    try:
        flush()
    except Exception:
        logger.exception("django-memopt could not flush its counters at exit")


def connect() -> None:
    """Flush after requests and at exit (from ``AppConfig.ready()``; once)."""
    request_finished.connect(_flush_when_due, dispatch_uid="django_memopt.stats")
    atexit.register(_flush_at_exit)


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
