"""The sessions of the engine a site switched from (``MEMOPT_PREVIOUS_ENGINE``).

This module knows other engines, not ours: it reads one session of the previous engine by
its key, deletes one, and (where the engine can say what it holds) lists them. The engine
(:mod:`django_memopt.backends.base`) decides what to do with them; ``manage.py
memopt_import`` walks the listings.

Nothing is ever unpickled here: every engine that signs and encodes its sessions
(``db``, ``cached_db``, ``file``, django-redis-sessions and their subclasses) is read with
Django's ``JSONSerializer`` whatever ``SESSION_SERIALIZER`` says, so a session written by
a pickle serializer reads as corrupt (a fresh session) and stays where it is. Django's
``cache`` engine stores the dict itself, which its cache backend serialises with its own
serializer, as it did on every request before the switch.

The readers, by engine (a subclass goes with its base class):

``django.contrib.sessions.backends.db`` and ``cached_db``
    The ``django_session`` row (the model of ``get_model_class()``): the database is what
    ``cached_db`` writes first, so its cache is never read. The deadline is the row's
    ``expire_date``. Listed by key, in batches.
``django.contrib.sessions.backends.file``
    The file in ``SESSION_FILE_PATH``, read and decoded here (the engine's own ``load()``
    creates a session for an expired or damaged file). The deadline is the engine's own
    (the file's modification time plus the session's age). Listed by key.
any other engine (Django's ``cache``, django-redis-sessions, ...)
    Through the engine's ``load()``: found if it gives a non-empty session. The deadline is
    ``get_expiry_date()``, which for an engine that keeps it outside the session (a cache
    entry's timeout) is now plus the session's age: never earlier than the real one. Not
    listed: only the read-through moves them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any, Final, cast

from django.contrib.sessions.backends.base import SessionBase as DjangoSessionBase
from django.contrib.sessions.backends.cached_db import SessionStore as CachedDatabaseSessionStore
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.backends.file import SessionStore as FileSessionStore
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.core.signals import setting_changed
from django.core.signing import JSONSerializer
from django.dispatch import receiver
from django.utils import timezone

from .conf import conf

__all__ = [
    "DatabaseSessions",
    "FileSessions",
    "OtherSessions",
    "PreviousEngine",
    "PreviousSession",
    "UNLISTABLE",
    "engine_for",
    "previous_engine",
]

logger: Final = logging.getLogger("django_memopt.previous")

#: Why an engine's sessions cannot be listed (``memopt_import`` says it).
UNLISTABLE: Final = (
    "{engine} cannot list the sessions it holds, so memopt_import cannot copy them: the "
    "read-through fallback (MEMOPT_PREVIOUS_ENGINE) moves each one the first time its "
    "user comes back, and the others expire where they are."
)


@dataclass(frozen=True, slots=True)
class PreviousSession:
    """One session of the previous engine: its values, decoded, and its deadline."""

    data: dict[str, Any]
    expires_at: float  # seconds since the epoch


def _json_store(store: DjangoSessionBase) -> DjangoSessionBase:
    # decode() goes through self.serializer: JSON whatever SESSION_SERIALIZER says, so a
    # pickled payload fails to parse (an empty session) instead of being unpickled.
    store.serializer = JSONSerializer
    return store


def _epoch(moment: datetime) -> float:
    if timezone.is_naive(moment):  # USE_TZ = False: the default time zone's wall clock
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return moment.timestamp()


class PreviousEngine:
    """The sessions of one engine module (``path``), whose ``SessionStore`` is ``store``."""

    #: Whether :meth:`pages` can list what the engine holds.
    listable = False

    def __init__(self, path: str, store: type[DjangoSessionBase]) -> None:
        self.path = path
        self.store = store

    def read(self, session_key: str) -> PreviousSession | None:
        """The live session ``session_key``; ``None`` if absent, expired, unreadable or
        empty (an empty session has nothing to carry over)."""
        store = _json_store(self.store(session_key))
        if store.session_key is None:  # a key the engine itself refuses
            return None
        data: Any = store.load()
        # load() forgets the key of a session it does not hold (mypy cannot know).
        if cast("str | None", store.session_key) is None or not data or not isinstance(data, dict):
            return None
        store._session_cache = data  # type: ignore[attr-defined]  # read by get_expiry_date()
        found = PreviousSession(dict(data), _epoch(store.get_expiry_date()))
        return found if found.expires_at > time.time() else None

    def read_many(self, session_keys: list[str]) -> dict[str, PreviousSession]:
        """:meth:`read` of each key, by key, the sessions found only."""
        found = ((session_key, self.read(session_key)) for session_key in session_keys)
        return {session_key: session for session_key, session in found if session is not None}

    def delete(self, session_keys: list[str]) -> None:
        """Delete the sessions ``session_keys`` (those not there are ignored)."""
        for session_key in session_keys:
            self.store(session_key).delete(session_key)

    def count(self) -> int | None:
        """About how many live sessions the engine holds (``None``: it cannot tell)."""
        return None

    def pages(self, after: str | None, size: int) -> Iterator[tuple[list[str], str]]:
        """Lists of at most ``size`` session keys, each with the checkpoint to resume after
        it: the keys after ``after`` (a checkpoint), in an order that does not change."""
        raise NotImplementedError(UNLISTABLE.format(engine=self.path))


class DatabaseSessions(PreviousEngine):
    """Django's ``db`` and ``cached_db`` engines (and their subclasses): the model's rows."""

    listable = True

    def _live(self) -> Any:
        model = self.store.get_model_class()  # type: ignore[attr-defined]
        return model.objects.filter(expire_date__gt=timezone.now())

    def read(self, session_key: str) -> PreviousSession | None:
        store = _json_store(self.store(session_key))
        if store.session_key is None:
            return None
        row = self._live().filter(session_key=session_key).first()
        if row is None:
            return None
        data = store.decode(row.session_data)  # {} if corrupt, tampered or not JSON
        if not data or not isinstance(data, dict):
            return None
        return PreviousSession(data, _epoch(row.expire_date))

    def read_many(self, session_keys: list[str]) -> dict[str, PreviousSession]:
        # One query for a batch of memopt_import, not one per session.
        store = _json_store(self.store())
        found = {}
        for row in self._live().filter(session_key__in=session_keys):
            data = store.decode(row.session_data)
            if data and isinstance(data, dict):
                found[row.session_key] = PreviousSession(data, _epoch(row.expire_date))
        return found

    def delete(self, session_keys: list[str]) -> None:
        # One query, where the engine's own delete() makes two per session.
        model = self.store.get_model_class()  # type: ignore[attr-defined]
        model.objects.filter(session_key__in=session_keys).delete()
        if issubclass(self.store, CachedDatabaseSessionStore):
            store = self.store()
            names = [store.cache_key_prefix + key for key in session_keys]
            store._cache.delete_many(names)  # type: ignore[attr-defined]

    def count(self) -> int | None:
        return int(self._live().count())

    def pages(self, after: str | None, size: int) -> Iterator[tuple[list[str], str]]:
        while True:
            rows = self._live().order_by("session_key")
            if after is not None:
                rows = rows.filter(session_key__gt=after)
            keys = list(rows.values_list("session_key", flat=True)[:size])
            if not keys:
                return
            after = keys[-1]
            yield keys, after


class FileSessions(PreviousEngine):
    """Django's ``file`` engine: one file per session in ``SESSION_FILE_PATH``."""

    listable = True

    def read(self, session_key: str) -> PreviousSession | None:
        store = _json_store(self.store(session_key))
        if store.session_key is None:
            return None
        try:
            with open(store._key_to_file(session_key), encoding="ascii") as file:  # type: ignore[attr-defined]
                encoded = file.read()
            data = store.decode(encoded) if encoded else {}
            if not data or not isinstance(data, dict):
                return None
            # As the engine's load() decides: the file's age, or the session's own expiry.
            age = store.get_expiry_age(expiry=store._expiry_date(data))  # type: ignore[attr-defined]
        except (OSError, SuspiciousOperation, UnicodeDecodeError):
            return None
        return PreviousSession(data, time.time() + age) if age > 0 else None

    def _keys(self) -> list[str]:
        prefix = self.store(None).file_prefix  # type: ignore[attr-defined]
        directory = self.store._get_storage_path()  # type: ignore[attr-defined]
        validate = self.store(None)._validate_session_key  # type: ignore[attr-defined]
        return sorted(
            key
            for name in os.listdir(directory)
            if name.startswith(prefix) and validate(key := name.removeprefix(prefix))
        )

    def count(self) -> int | None:
        return len(self._keys())

    def pages(self, after: str | None, size: int) -> Iterator[tuple[list[str], str]]:
        keys = self._keys()
        if after is not None:
            keys = [key for key in keys if key > after]
        for start in range(0, len(keys), size):
            batch = keys[start : start + size]
            yield batch, batch[-1]


class OtherSessions(PreviousEngine):
    """Any other engine, through its own ``load()``: Django's ``cache``,
    django-redis-sessions, ..."""


def engine_for(path: str) -> PreviousEngine:
    """The reader of the engine module ``path``; ``ImproperlyConfigured`` if that is no
    engine the fallback can read (see :func:`refusal`)."""
    problem = refusal(path)
    if problem is not None:
        raise ImproperlyConfigured(f"MEMOPT_PREVIOUS_ENGINE {path!r}: {problem}")
    store = import_module(path).SessionStore
    if issubclass(store, DatabaseSessionStore):
        return DatabaseSessions(path, store)
    if issubclass(store, FileSessionStore):
        return FileSessions(path, store)
    return OtherSessions(path, store)


def refusal(path: object) -> str | None:
    """Why ``path`` cannot name the previous engine, or ``None`` if it can."""
    if not isinstance(path, str) or not path:
        return "must be the module path of a session engine, as SESSION_ENGINE takes"
    if path.startswith("django_memopt."):
        return (
            "is one of django-memopt's own engines: moving between them is not what the "
            "fallback does (their signed IDs are never looked up elsewhere)"
        )
    if path == "django.contrib.sessions.backends.signed_cookies":
        return (
            "keeps each session in the cookie itself, which is no session ID: there is "
            "nothing to look up"
        )
    try:
        store = import_module(path).SessionStore
    except Exception as exc:  # any engine may fail to import: say why
        return f"cannot be imported ({type(exc).__name__}: {exc})"
    if not (isinstance(store, type) and issubclass(store, DjangoSessionBase)):
        return "has no SessionStore subclassing Django's SessionBase"
    return None


_engine: PreviousEngine | None = None


def previous_engine() -> PreviousEngine | None:
    """The reader of ``MEMOPT_PREVIOUS_ENGINE``, or ``None`` when it is not set."""
    global _engine
    path = conf.MEMOPT_PREVIOUS_ENGINE
    if not path:
        return None
    if _engine is None or _engine.path != path:
        _engine = engine_for(path)
    return _engine


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs: Any) -> None:
    global _engine
    if setting in ("MEMOPT_PREVIOUS_ENGINE", "SESSION_FILE_PATH"):
        _engine = None
