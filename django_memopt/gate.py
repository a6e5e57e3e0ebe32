"""The session-ID gate: forged, expired and deleted session IDs turned away before the store.

Two checks, cheapest first. The ID's own tag (:mod:`django_memopt.session_ids`): an ID
that looks like one of ours but does not verify was never minted here. Then the host's
filter of live session IDs (:mod:`django_memopt.bloom`): an ID it has never seen saved,
or whose every possible lifetime is over, names no live session. This module holds the
per-process objects built from settings, the writers' side (every persisted write is
recorded in the filter first) and the counters.

Never a false negative: the filter passes everything until it is known to hold every live
session (a fresh file is filled from the store first), a damaged file is replaced and
refilled, and every process records its writes in the file the others read, even a process
with ``MEMOPT_FILTER`` off (it follows the file another configuration keeps, and never
creates or removes one).

IDs without a tag (minted by Django's engines, or by this app before signed IDs) are let
through only inside a *migration window* the store records once for every process and
host (:func:`unsigned_ids_admitted`); outside it they are turned away without a lookup.
With ``MEMOPT_PREVIOUS_ENGINE`` set they are let through, past the filter, to be looked
up in that engine.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from typing import Any, Final

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .backends.base import (
    EngineHooks,
    SessionBase,
    SessionStoreError,
    add_hooks,
    session_ids,
    session_store,
)
from .bloom import SessionFilter
from .conf import conf
from .counters import add as count

__all__ = [
    "GENERATIONS",
    "FILTER_RETRY_SECONDS",
    "REJECT_REASONS",
    "UNSIGNED_WINDOW",
    "admits",
    "confirm_write",
    "open_filter",
    "plug_in",
    "record_write",
    "session_filter",
    "session_ids",
    "session_store",
    "unsigned_ids_admitted",
    "unsigned_window_end",
]

logger: Final = logging.getLogger("django_memopt.gate")

#: Why a cookie's session ID was turned away: not a session ID at all, a tag that does not
#: verify, no tag outside the migration window, or an ID the filter knows no live
#: session for. Counted (:mod:`django_memopt.stats`) as ``rejected_<reason>``.
REJECT_REASONS: Final = ("malformed", "forged", "unsigned", "unknown")

# A ring of 8 generations, each current for 1/7 of SESSION_COOKIE_AGE: a session saved
# with the default lifetime has expired before its generation's slot comes round again.
GENERATIONS: Final = 8

#: A fresh filter is filled from the store by the first process to open it when the store
#: holds at most this many sessions; past that, ``manage.py memopt_rebuild_filter``.
AUTOMATIC_REBUILD_LIMIT: Final = 10_000

# How often a process looks for a filter file replaced by another process.
_REFRESH_SECONDS: Final = 1.0
#: After the filter file could not be opened (or re-created), checks let every ID through
#: for this many seconds, counted as ``filter_unavailable``, before trying again; saves
#: fail meanwhile with the reason, naming the setting to fix.
FILTER_RETRY_SECONDS: Final = 60

#: The store-wide value (space ``meta``) holding the end of the migration window for IDs
#: without a tag, in seconds since the epoch, as ASCII digits (0: no window).
UNSIGNED_WINDOW: Final = "unsigned-ids-until"
#: Session keys read, when the window is decided, to look for IDs without a tag.
WINDOW_SCAN_LIMIT: Final = 10_000
# After the store failed to tell the window, IDs pass (the store is asked anyway and
# fails with its own error) and the store is asked again this much later.
_WINDOW_RETRY_SECONDS: Final = 5.0


class _FilterState:
    """This process's handles on the filter file; a forked child opens its own."""

    def __init__(self) -> None:
        self.filter: SessionFilter | None = None
        # With MEMOPT_FILTER off: the handle that records writes into a file others keep.
        self.follower: SessionFilter | None = None
        self.pid = 0
        self.refresh_at = 0.0
        # After a failure to open the file, checks pass everything until then (monotonic).
        self.unavailable_until = 0.0
        # The file this process last tried to fill from the store (once per file).
        self.filled: bytes | None = None
        # The migration window's end (seconds since the epoch), once the store told it.
        self.window_end: float | None = None
        self.window_retry_at = 0.0


_state: Final = _FilterState()


def _window() -> float:
    return max(60.0, settings.SESSION_COOKIE_AGE / (GENERATIONS - 1))


def open_filter() -> SessionFilter:
    """Open (or create) the host's filter file with the parameters the settings give.

    Raises ``SessionStoreError`` naming the setting to fix when the file cannot be opened.
    """
    try:
        return SessionFilter.open(
            conf.MEMOPT_FILTER_PATH,
            capacity=conf.MEMOPT_FILTER_CAPACITY,
            fp_rate=conf.MEMOPT_FILTER_FP_RATE,
            generations=GENERATIONS,
            window=_window(),
        )
    except OSError as exc:
        setting = (
            "MEMOPT_FILTER_PATH"
            if hasattr(settings, "MEMOPT_FILTER_PATH")
            else "MEMOPT_FILTER_PATH (by default in MEMOPT_LMDB_PATH)"
        )
        raise SessionStoreError(
            f"The session-ID filter file {conf.MEMOPT_FILTER_PATH!r} cannot be opened "
            f"({exc}): check {setting}."
        ) from exc


def session_filter() -> SessionFilter | None:
    """This process's view of the host's filter, or ``None`` when ``MEMOPT_FILTER`` is off."""
    state = _state
    if state.pid != os.getpid():
        # After a fork the file lock would be shared with the parent: open anew.
        state.filter = state.follower = None
        state.pid = os.getpid()
    found = state.filter
    if found is None:
        if not conf.MEMOPT_FILTER:
            return None
        found = state.filter = open_filter()
    elif time.monotonic() >= state.refresh_at:
        found.refresh()
    else:
        return found
    state.refresh_at = time.monotonic() + _REFRESH_SECONDS
    # A file new to this process that nobody has filled yet (created, or re-created after
    # damage or removal): fill it now if that is cheap. Once per file, not per refresh.
    if found.incarnation != state.filled and not found.complete:
        state.filled = found.incarnation
        _fill_when_small(found)
    return found


def _fill_when_small(found: SessionFilter) -> None:
    """Fill a fresh filter from the store at once if that is cheap."""
    listed_for = found.incarnation
    sessions = list(itertools.islice(session_store().iter_sessions(), AUTOMATIC_REBUILD_LIMIT + 1))
    if len(sessions) > AUTOMATIC_REBUILD_LIMIT:
        logger.warning(
            "The session-ID filter %s is new or was damaged, and lets every session ID "
            "through until it is rebuilt: run manage.py memopt_rebuild_filter.",
            found.path,
        )
        return
    found.rebuild(sessions, listed_for=listed_for)


def unsigned_ids_admitted() -> bool:
    """Whether IDs without a tag may name a session: ``MEMOPT_UNSIGNED_IDS`` if set, else
    whether the migration window the store records (:func:`unsigned_window_end`) is open."""
    forced: bool | None = conf.MEMOPT_UNSIGNED_IDS
    if forced is not None:
        return forced
    # -- MEMOPT_PREVIOUS_ENGINE: its cookies are unsigned IDs, for the engine to look up
    # there (docs/moving.md); a cookie unknown to both costs that lookup meanwhile.
    if conf.MEMOPT_PREVIOUS_ENGINE:
        return True
    # --
    end = _state.window_end
    if end is None:
        if time.monotonic() < _state.window_retry_at:
            return True
        try:
            end = _state.window_end = unsigned_window_end()
        except SessionStoreError as exc:
            _state.window_retry_at = time.monotonic() + _WINDOW_RETRY_SECONDS
            logger.warning("The unsigned-ID migration window is unknown (%s): IDs pass", exc)
            return True
    return time.time() < end


def unsigned_window_end() -> float:
    """When the store stops accepting IDs without a tag (seconds since the epoch; 0: never
    did). Decided once per store, by the first process to ask, and kept in the store.

    A store that holds a session under such an ID, or more sessions than can be looked
    through (``WINDOW_SCAN_LIMIT``), opens the window for ``SESSION_COOKIE_AGE``: the
    sessions from before the switch keep working until they would have expired. An empty
    store, or one whose every session has a signed ID, never opens it.
    """
    store = session_store()
    stored = store.read_value("meta", UNSIGNED_WINDOW)
    if stored is None:
        stored = store.add_value("meta", UNSIGNED_WINDOW, b"%d" % _decide_window(store))
    try:
        return float(stored.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        logger.warning("The stored unsigned-ID migration window %r is unreadable: closed", stored)
        return 0.0


def _decide_window(store: type[SessionBase]) -> int:
    ids = session_ids()
    keys = itertools.islice(store.iter_session_keys(), WINDOW_SCAN_LIMIT + 1)
    for scanned, session_key in enumerate(keys, 1):
        if scanned > WINDOW_SCAN_LIMIT or ids.check(session_key).status == "unsigned":
            end = math.ceil(time.time()) + settings.SESSION_COOKIE_AGE
            logger.warning(
                "Session IDs without a tag are accepted until %s (a migration window of "
                "SESSION_COOKIE_AGE), then turned away; MEMOPT_UNSIGNED_IDS overrides it.",
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end)),
            )
            return end
    return 0


def admits(session_key: str) -> bool:
    """Whether a cookie's session ID may name a live session (counted either way)."""
    count("checked")
    status, issued_at = session_ids().check(session_key)
    if (
        status == "malformed"
        or status == "forged"
        or (status == "unsigned" and not unsigned_ids_admitted())
    ):
        count("rejected_" + status)
        return False
    # -- MEMOPT_PREVIOUS_ENGINE: the filter never saw the previous engine's sessions.
    if status == "unsigned" and conf.MEMOPT_PREVIOUS_ENGINE:
        count("passed")
        return True
    # --
    found = None
    if time.monotonic() < _state.unavailable_until:
        count("filter_unavailable")
    else:
        try:
            found = session_filter()
        except SessionStoreError as exc:
            # Never turn a user away for it; saves fail with the reason meanwhile.
            _state.unavailable_until = time.monotonic() + FILTER_RETRY_SECONDS
            count("filter_unavailable")
            logger.warning(
                "The session-ID filter is unavailable (%s): IDs pass for %d s",
                exc,
                FILTER_RETRY_SECONDS,
            )
    if found is not None and not found.might_contain(session_key, issued_at):
        count("rejected_unknown")
        return False
    count("passed")
    return True


def record_write(session_key: str, expires_at: float) -> None:
    """Record, before it is written, that session ``session_key`` lives until ``expires_at``."""
    if conf.MEMOPT_FILTER:  # a cached read: the check costs nothing when the filter is off
        found = session_filter()
        if found is not None:
            found.add(session_key, expires_at)


def confirm_write(session_key: str, expires_at: float) -> None:
    """After the write: record it again if the filter file was replaced meanwhile, or, with
    the filter off here, in the file that processes of another configuration may keep.

    A process that re-creates the filter lists the store afterwards; a session written
    after that listing was recorded in the file being replaced. Adding it to the new
    file before the response leaves means nobody can present its ID in between. A
    follower records after the write for the same reason: a file created before the
    write was there to be found, one created after it was filled from the store.
    """
    found = _state.filter
    if found is not None:
        if not found.is_current():
            found.add(session_key, expires_at)  # moves to the file now at the path first
    elif not conf.MEMOPT_FILTER:
        follower = _state.follower
        if follower is None or _state.pid != os.getpid():
            _state.pid = os.getpid()
            follower = _state.follower = SessionFilter.follow(conf.MEMOPT_FILTER_PATH)
        follower.add(session_key, expires_at)


class _FilterHooks(EngineHooks):
    """The filter's side of every persisted write."""

    def before_write(self, session_key: str, expires_at: float) -> None:
        record_write(session_key, expires_at)

    def after_write(self, session_key: str, expires_at: float) -> None:
        confirm_write(session_key, expires_at)


_hooks: Final = _FilterHooks()


def plug_in() -> None:
    """Record every write of this process's engines in the filter (or the file others keep).

    Done when the gate is imported, and by the app's ``ready()``: a process with the app
    installed records its writes even if it never serves a request through the middleware.
    """
    add_hooks(_hooks)


plug_in()


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("MEMOPT_FILTER") or setting in (
        "MEMOPT_LMDB_PATH",
        "SESSION_ENGINE",
        "SESSION_COOKIE_AGE",
    ):
        for handle in (_state.filter, _state.follower):
            if handle is not None:
                handle.close()
        _state.filter = _state.follower = None
        _state.unavailable_until = 0.0
    if setting in ("MEMOPT_LMDB_PATH", "SESSION_ENGINE", "CACHES", "MEMOPT_REDIS_KEY_PREFIX"):
        _state.window_end = None
        _state.window_retry_at = 0.0
