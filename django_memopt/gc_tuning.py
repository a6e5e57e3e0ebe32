"""Garbage-collector tuning applied at startup, and what the collector costs, measured.

:func:`apply` runs once per process from ``MemoptConfig.ready()``. It sets the thresholds
of ``MEMOPT_GC_THRESHOLDS``; with ``MEMOPT_GC_OUT_OF_BAND`` it stops the collector from
starting full collections by itself and runs one after every N finished requests instead,
when no request of the process is in flight; with ``MEMOPT_GC_FREEZE`` it collects, then
freezes every object alive (with ``gunicorn --preload`` this happens in the master, before
the fork, so the workers' copies of those pages stay shared). Settings the system checks
refuse are not applied.

Measurement: a ``gc.callbacks`` entry counts, per generation, the collections, the time
between their "start" and "stop" phases, and the objects they freed; the worst single
pause; and whether each collection started while a request was in flight (counted from
Django's ``request_started`` and ``request_finished`` signals). :func:`figures` returns a
snapshot. A process forked from one where :func:`apply` ran starts counting from zero.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from typing import Any, Final, TypeGuard

from django.core.signals import request_finished, request_started

from .conf import conf

__all__ = [
    "DEFAULT_FIRST_THRESHOLD_313",
    "NEVER",
    "apply",
    "figures",
    "incremental_collector",
    "python_version",
    "valid_out_of_band",
    "valid_thresholds",
]

#: The largest threshold ``gc.set_threshold()`` accepts: it parses C ints, 32 bits on every
#: platform CPython supports (one more raises ``OverflowError``). As the third
#: threshold it means "never": the oldest generation's count grows by one per collection of
#: the middle generation, so it would take 2**31 of those to start a full collection.
NEVER: Final = 2**31 - 1

#: CPython 3.13 raised the first threshold's default from 700 to 2000; larger first
#: thresholds measured slower there (DESIGN.md, section 2).
DEFAULT_FIRST_THRESHOLD_313: Final = 2000

# CPython 3.14.0 to 3.14.4 shipped an incremental collector: the second threshold means
# something else there and the third is ignored. 3.14.5 went back to 3.13's collector.
_INCREMENTAL: Final = ((3, 14, 0), (3, 14, 5))  # [first, past the last)


def python_version() -> tuple[int, ...]:
    """``sys.version_info[:3]``, read on every call (the tests patch ``sys.version_info``)."""
    return tuple(sys.version_info[:3])


def incremental_collector() -> bool:
    """Whether this Python has the incremental collector of CPython 3.14.0 to 3.14.4."""
    return _INCREMENTAL[0] <= python_version() < _INCREMENTAL[1]


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= NEVER


def valid_thresholds(value: object) -> TypeGuard[tuple[int, ...] | list[int]]:
    """Whether ``value`` is a tuple or list of 1 to 3 ints, the first at least 1 (0 would
    turn automatic collection off) and the others at least 0, none above :data:`NEVER`."""
    return (
        isinstance(value, tuple | list)
        and 1 <= len(value) <= 3
        and _is_int(value[0], 1)
        and all(_is_int(item, 0) for item in value[1:])
    )


def valid_out_of_band(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a number of requests between out-of-band collections (>= 1)."""
    return _is_int(value, 1)


class _State:
    """This process's tuning and counters. The collector runs one collection at a time, so
    the callback's updates need no lock; the request counters take ``lock`` (threads)."""

    def __init__(self) -> None:
        self.applied = False
        self.out_of_band_every = 0  # 0: off
        self.reset()

    def reset(self) -> None:
        # A lock some other thread held at fork() time would stay held in the child.
        self.lock = threading.Lock()
        self.in_flight = 0
        self.finished_since_collection = 0
        self.requests_finished = 0
        self.out_of_band_collections = 0
        self.collections = [0, 0, 0]
        self.time_ns = [0, 0, 0]
        self.collected = [0, 0, 0]
        self.worst_pause_ns = 0
        self.worst_pause_generation = -1
        self.in_request_time_ns = 0
        self.between_requests_time_ns = 0
        self.started_ns = 0
        self.started_in_request = False


_state: Final = _State()


def _on_collection(phase: str, info: dict[str, int]) -> None:
    """The ``gc.callbacks`` entry: runs around every collection, so it only adds."""
    state = _state
    if phase == "start":
        state.started_in_request = state.in_flight > 0
        state.started_ns = time.perf_counter_ns()
        return
    elapsed = time.perf_counter_ns() - state.started_ns
    # Clamped: a collector with other generation numbers must not break the count.
    generation = min(max(info.get("generation", 2), 0), 2)
    state.collections[generation] += 1
    state.time_ns[generation] += elapsed
    state.collected[generation] += info.get("collected", 0)
    if elapsed > state.worst_pause_ns:
        state.worst_pause_ns = elapsed
        state.worst_pause_generation = generation
    if state.started_in_request:
        state.in_request_time_ns += elapsed
    else:
        state.between_requests_time_ns += elapsed


def _request_started(**kwargs: Any) -> None:
    state = _state
    with state.lock:
        state.in_flight += 1


def _request_finished(**kwargs: Any) -> None:
    """Count the request as finished; collect out of band when due and none is in flight.

    A ``request_finished`` without a matching ``request_started`` (a response closed twice,
    or outside any request) is ignored, so the in-flight count never goes below zero.
    """
    state = _state
    with state.lock:
        if state.in_flight == 0:
            return
        state.in_flight -= 1
        state.requests_finished += 1
        state.finished_since_collection += 1
        due = (
            state.out_of_band_every > 0
            and state.in_flight == 0
            and state.finished_since_collection >= state.out_of_band_every
        )
        if due:
            state.finished_since_collection = 0
    if due:
        # Outside the lock: a thread starting a request meanwhile must not wait for it.
        gc.collect()
        state.out_of_band_collections += 1


def _after_fork_in_child() -> None:
    # The child is a new process (a gunicorn worker): its figures are its own, from zero.
    # The tuning itself (thresholds, frozen objects, callback, receivers) is inherited.
    _state.reset()


def apply() -> None:
    """Apply the ``MEMOPT_GC_*`` settings and start measuring, once per process.

    Later calls do nothing, whatever the settings say by then (``override_settings`` never
    re-applies or undoes anything). Never raises on invalid settings: it leaves them
    unapplied, and the system checks report them. On CPython 3.14.0 to 3.14.4 neither the
    thresholds nor the out-of-band mode is applied (checks ``E020`` and ``W005``).
    """
    state = _state
    if state.applied:
        return
    state.applied = True
    generational = not incremental_collector()
    thresholds: object = conf.MEMOPT_GC_THRESHOLDS
    if generational and valid_thresholds(thresholds):
        gc.set_threshold(*thresholds)
    every: object = conf.MEMOPT_GC_OUT_OF_BAND
    if generational and valid_out_of_band(every):
        first, second, _ = gc.get_threshold()
        gc.set_threshold(first, second, NEVER)
        state.out_of_band_every = every
    if conf.MEMOPT_GC_FREEZE is True:
        # Collect first, so that no garbage is frozen (frozen objects are never collected).
        gc.collect()
        gc.freeze()
    # Measured from here: the figures describe serving, not the one-off startup collection.
    gc.callbacks.append(_on_collection)
    request_started.connect(_request_started, dispatch_uid="django_memopt.gc_tuning")
    request_finished.connect(_request_finished, dispatch_uid="django_memopt.gc_tuning")
    if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
        os.register_at_fork(after_in_child=_after_fork_in_child)


def figures() -> dict[str, int]:
    """A snapshot of this process's collector figures, with stable keys.

    Per generation ``N`` in 0-2: ``collections_genN``, ``time_ns_genN`` (nanoseconds from
    the "start" to the "stop" callback) and ``collected_genN`` (objects freed). Then
    ``worst_pause_ns`` and ``worst_pause_generation`` (-1 before any collection);
    ``in_request_time_ns`` and ``between_requests_time_ns`` (collections that started with
    a request of this process in flight, or none); ``requests_finished``;
    ``out_of_band_collections`` and ``out_of_band_every`` (0: off); ``frozen_objects``
    (``gc.get_freeze_count()``) and ``threshold0`` to ``threshold2`` (in effect now). Each
    value is read once, not all under one lock: a collection in another thread meanwhile
    can leave the snapshot one collection apart between keys.
    """
    state = _state
    result: dict[str, int] = {}
    for generation in range(3):
        result[f"collections_gen{generation}"] = state.collections[generation]
    for generation in range(3):
        result[f"time_ns_gen{generation}"] = state.time_ns[generation]
    for generation in range(3):
        result[f"collected_gen{generation}"] = state.collected[generation]
    result["worst_pause_ns"] = state.worst_pause_ns
    result["worst_pause_generation"] = state.worst_pause_generation
    result["in_request_time_ns"] = state.in_request_time_ns
    result["between_requests_time_ns"] = state.between_requests_time_ns
    result["requests_finished"] = state.requests_finished
    result["out_of_band_collections"] = state.out_of_band_collections
    result["out_of_band_every"] = state.out_of_band_every
    result["frozen_objects"] = gc.get_freeze_count()
    for number, threshold in enumerate(gc.get_threshold()):
        result[f"threshold{number}"] = threshold
    return result
