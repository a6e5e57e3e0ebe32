"""What this process has done, counted per thread: the figures ``memopt_stats`` adds up.

This module imports nothing from Django: the engine and the gate count here, on their hot
paths, and :mod:`django_memopt.stats` takes the totals to the store. Each thread counts
into a ``Counter`` of its own, so counting is exact and takes no lock; a forked child
starts from zero under a token of its own.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from typing import Final

__all__ = [
    "CLIENT_CACHE_COUNTERS",
    "ENGINE_COUNTERS",
    "GATE_COUNTERS",
    "add",
    "counted_anything",
    "counter",
    "process_started",
    "process_token",
    "process_totals",
]

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
#: The Redis engine's client-side cache's counters (see ``django_memopt.client_cache``).
CLIENT_CACHE_COUNTERS: Final = (
    "cache_hits",
    "cache_misses",
    "cache_bypasses",
    "cache_invalidations",
    "cache_flushes",
    "cache_refusals",
    "cache_bytes",
)
#: The session-ID gate's counters: cookies checked, let through, and turned away by reason,
#: and the checks made while the filter could not be asked.
GATE_COUNTERS: Final = (
    "checked",
    "passed",
    "rejected_malformed",
    "rejected_forged",
    "rejected_unsigned",
    "rejected_unknown",
    "filter_unavailable",
)


class _Process:
    """This process's counters: one Counter per thread."""

    def __init__(self) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns():x}"
        self.started = time.time()
        self.threads: list[Counter[str]] = []
        self.lock = threading.Lock()  # guards ``threads``; counting never takes it
        self.local = threading.local()


_process = _Process()


def _reset_in_child() -> None:
    # A forked worker starts counting from zero under its own token; the parent's counts
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


def counted_anything() -> bool:
    """Whether any thread of this process has counted since it started (or forked)."""
    return bool(_process.threads)


def process_token() -> str:
    """This process's name for its figures in the store: host, pid and start time."""
    return _process.token


def process_started() -> float:
    """When this process started counting (seconds since the epoch)."""
    return _process.started
