"""A user's sessions: list them, end one, end all but the current one, end all.

With ``MEMOPT_USER_SESSIONS`` on, the engine keeps an index from each user to their live
sessions, written with the session itself (see ``docs/user-sessions.md``). This module
reads it and ends sessions through the store, so an ended session is gone for every
process and host at once (on Redis, the delete also reaches every process's client-side
cache). A session is named here by an opaque *handle*, never by its key: a page listing
sessions must not hand out the cookies of the others.

``user`` is a user object (its primary key, as Django's ``login()`` stores it) or a user
ID as text. A session is one of the user's if it holds ``_auth_user_id`` and has been
saved since the feature was turned on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import SessionBase as DjangoSessionBase

from .backends.base import (
    HANDLE_RE,
    SessionBase,
    field_codec,
    index_name,
    session_store,
    user_id,
)
from .codec import CorruptField

__all__ = [
    "UserSession",
    "aend_all_sessions",
    "aend_other_sessions",
    "aend_session",
    "asessions_of",
    "end_all_sessions",
    "end_other_sessions",
    "end_session",
    "sessions_of",
]

security_logger: Final = logging.getLogger("django.security.SuspiciousSession")


@dataclass(frozen=True, slots=True)
class UserSession:
    """One of a user's live sessions, as its index lists it."""

    handle: str  # opaque: what end_session() takes
    created: datetime  # when the user logged in (UTC)
    last_seen: datetime  # the latest refresh of the entry (UTC), at most
    # MEMOPT_USER_SESSIONS_REFRESH seconds behind the session's latest save
    ip: str | None
    user_agent: str | None
    current: bool  # the session the listing was asked from


def _user(user: Any) -> str:
    """The ID the index keys ``user`` by; ``TypeError`` or ``ValueError`` if it has none."""
    if isinstance(user, str | int) and not isinstance(user, bool):
        found = user_id(user)
    else:
        meta = getattr(user, "_meta", None)
        if meta is None or getattr(user, "pk", None) is None:
            raise TypeError(
                f"expected a saved user object or a user ID, not {type(user).__name__}"
            )
        found = user_id(meta.pk.value_to_string(user))
    if found is None:
        raise ValueError("not a user ID the index can hold (empty, or over 255 bytes)")
    return found


def _current_key(current: DjangoSessionBase | str | None) -> str | None:
    if current is None or isinstance(current, str):
        return current
    if isinstance(current, DjangoSessionBase):
        return current.session_key
    raise TypeError(f"current must be a session or a session key, not {type(current).__name__}")


def _entries(store: type[SessionBase], user: str) -> list[tuple[str, str, list[Any]]]:
    """The user's live sessions: handle, session key, and the entry as sealed. An entry
    that does not verify, or names another session than the one it is stored for, is
    left out and logged."""
    codec = field_codec()
    found = []
    for handle, session_key, sealed in store._user_entries(user):
        try:
            entry = codec.decode(index_name(user), handle, sealed)
        except CorruptField as error:
            security_logger.warning("Session data corrupted: an index entry (%s)", error)
            continue
        if (
            type(entry) is not list
            or len(entry) != 5
            or entry[0] != session_key
            or not all(type(value) is int for value in entry[1:3])
        ):
            security_logger.warning("Session data corrupted: an index entry names no session")
            continue
        found.append((handle, session_key, entry))
    return found


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def sessions_of(user: Any, current: DjangoSessionBase | str | None = None) -> list[UserSession]:
    """The live sessions of ``user``, the most recently seen first; ``current`` (the
    request's session, or its key) is marked as such."""
    current_key = _current_key(current)
    listed = [
        UserSession(
            handle,
            _moment(entry[1]),
            _moment(entry[2]),
            entry[3] if type(entry[3]) is str else None,
            entry[4] if type(entry[4]) is str else None,
            session_key == current_key,
        )
        for handle, session_key, entry in _entries(session_store(), _user(user))
    ]
    listed.sort(key=lambda session: (not session.current, -session.last_seen.timestamp()))
    return listed


def _end(user: Any, keep: str | None = None, only: str | None = None) -> int:
    store = session_store()
    user_key = _user(user)
    ended = 0
    for handle, session_key, _entry in _entries(store, user_key):
        if session_key == keep or (only is not None and handle != only):
            continue
        store._remove(session_key, (user_key, handle))
        ended += 1
    return ended


def end_session(user: Any, handle: object) -> bool:
    """End the session of ``user`` listed under ``handle``; whether there was one. A
    handle that is no handle, or another user's, ends nothing."""
    if not isinstance(handle, str) or not HANDLE_RE.match(handle):
        return False
    return _end(user, only=handle) > 0


def end_other_sessions(user: Any, current: DjangoSessionBase | str | None) -> int:
    """End every session of ``user`` but ``current`` (the request's session, or its key;
    ``None`` keeps none): "log out other devices". How many were ended."""
    return _end(user, keep=_current_key(current))


def end_all_sessions(user: Any) -> int:
    """End every session of ``user`` (after a password reset, say, or for a banned
    account). How many were ended."""
    return _end(user)


# The same, for async views: the store's I/O runs in a thread, as the engine's own does.


async def asessions_of(
    user: Any, current: DjangoSessionBase | str | None = None
) -> list[UserSession]:
    """:func:`sessions_of`, for async code."""
    return await sync_to_async(sessions_of)(user, current)


async def aend_session(user: Any, handle: object) -> bool:
    """:func:`end_session`, for async code."""
    return await sync_to_async(end_session)(user, handle)


async def aend_other_sessions(user: Any, current: DjangoSessionBase | str | None) -> int:
    """:func:`end_other_sessions`, for async code."""
    return await sync_to_async(end_other_sessions)(user, current)


async def aend_all_sessions(user: Any) -> int:
    """:func:`end_all_sessions`, for async code."""
    return await sync_to_async(end_all_sessions)(user)
