"""The behaviour every django-memopt engine shares: lazy fields, delta saves, expiry.

A store module subclasses :class:`SessionBase` and provides the storage primitives at the
bottom of the class; they take a validated session key and move bytes. Everything a
Django user can observe is decided here, once, for every store.

The engine is the centre of the package: it imports only the Django-free core (codec,
fields, counters, session IDs) and the settings. What hangs off it (the session-ID gate
today) plugs in through :class:`EngineHooks`, and finds the configured engine through
:func:`session_store`.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.base import SessionBase as DjangoSessionBase
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from django_memopt.codec import CorruptField, FieldCodec, derive_key
from django_memopt.conf import conf
from django_memopt.counters import add as count
from django_memopt.counters import counter
from django_memopt.fields import Delta, Holder, SessionFields
from django_memopt.previous import PreviousEngine, PreviousSession, previous_engine
from django_memopt.session_ids import SIGNED_ID_LENGTH, SessionIds

__all__ = [
    "ADOPTED_AS",
    "PREVIOUS_ENGINE_SINCE",
    "Adoption",
    "CreateError",
    "Delta",
    "AUTH_USER_FIELD",
    "USER_ENTRY_FIELD",
    "EngineHooks",
    "IndexChange",
    "UserEntry",
    "SessionBase",
    "SessionStoreError",
    "SessionStoreFull",
    "StoredSession",
    "UpdateError",
    "add_hooks",
    "log_corrupt_record",
    "note_previous_engine",
    "session_ids",
    "session_store",
]

T = TypeVar("T")

security_logger: Final = logging.getLogger("django.security.SuspiciousSession")
logger: Final = logging.getLogger("django_memopt.engine")

#: The one field of a claim: the record kept under a previous engine's session key once
#: that session was copied here, naming the signed ID it was copied under. No session
#: key a Django application sets starts with a NUL character.
ADOPTED_AS: Final = "\x00adopted-as"
#: What :meth:`SessionBase.adopt` did with one session of the previous engine.
Adoption = Literal["copied", "claimed", "absent", "refused"]
#: The store-wide value (space ``meta``) holding when the fallback to the previous engine
#: was first used, in seconds since the epoch (ASCII digits), a space, and that engine.
PREVIOUS_ENGINE_SINCE: Final = "previous-engine-since"

# Django's engines mint 32 characters of [a-z0-9]; anything else from a cookie is refused
# before it reaches a store (overlong keys, path characters, non-ASCII).
SESSION_KEY_RE: Final = re.compile(r"[a-z0-9]{8,64}\Z")


#: The field Django's auth keeps the logged-in user's ID in (``django.contrib.auth
#: .SESSION_KEY``): a session holding it is listed in that user's index.
AUTH_USER_FIELD: Final = "_auth_user_id"
#: The field in which a session indexed as a user's (``MEMOPT_USER_SESSIONS``) keeps what
#: the index lists it as: ``[user ID, the entry's deadline (epoch ms), created (epoch s),
#: handle]``. Carried over by ``cycle_key`` as any field; the deadline is never earlier
#: than the session's, so the index entry outlives the session it lists.
USER_ENTRY_FIELD: Final = "_memopt_user_entry"
#: The longest user ID indexed, in bytes of UTF-8 (Django's primary keys are far shorter).
USER_ID_MAX: Final = 255
#: The longest user agent recorded, in characters.
USER_AGENT_MAX: Final = 256
#: A handle: hex digits of an HMAC of the session key, opaque, never the key itself.
HANDLE_RE: Final = re.compile(r"[0-9a-f]{24}\Z")


@dataclass(frozen=True, slots=True)
class UserEntry:
    """A session's entry in the index of its user's sessions."""

    user: str
    handle: str
    until_ms: int  # the entry's deadline: never earlier than the session's
    sealed: bytes  # what it lists: session key, created, last seen, IP, user agent


@dataclass(frozen=True, slots=True)
class IndexChange:
    """What a write does to the index of users' sessions, in the same transaction as the
    session's write: ``put`` lists the session (replacing any entry of it), ``drop`` is
    an entry that listed it until now, as ``(user, handle)``, if known (a store that keeps
    its own link from a session to its entry may ignore it)."""

    put: UserEntry | None
    drop: tuple[str, str] | None


class SessionStoreError(Exception):
    """The session store cannot do what was asked (unreachable, unopenable, ...)."""


class SessionStoreFull(SessionStoreError):
    """The session store has no room left for a write."""


@dataclass(slots=True)
class StoredSession:
    """A session as a store returns it: sealed fields, not decoded, and its deadline."""

    fields: Mapping[str, bytes | Holder]  # a field's sealed bytes, or what holds them
    expires_at: float  # seconds since the epoch
    #: Bytes the session takes in the store, about what rewriting it whole would write
    #: (for statistics; 0 if the store cannot tell cheaply).
    size: int = 0
    #: The store's version token of what was read, replaced by every write of the session
    #: (``None`` if the store keeps none, or the session has none yet).
    version: bytes | None = None


class EngineHooks:
    """What hangs off the engine's writes, each method a no-op here: the session-ID gate's
    filter today (``django_memopt.gate``), a client-side cache or a per-user index later.

    Subclass, override what you need, and plug an instance in with :func:`add_hooks`.
    Hooks run in the saving thread, around every persisted write (a create, an update, an
    expiry refresh), in the order they were added; an exception fails the save.
    """

    def before_write(self, session_key: str, expires_at: float) -> None:
        """Session ``session_key`` is about to be written, live until ``expires_at``."""

    def after_write(self, session_key: str, expires_at: float) -> None:
        """That write is done (not called if it failed)."""


_hooks: tuple[EngineHooks, ...] = ()


def add_hooks(hooks: EngineHooks) -> None:
    """Plug ``hooks`` into every engine of this process (once per object)."""
    global _hooks
    if hooks not in _hooks:
        _hooks = (*_hooks, hooks)


_codecs: dict[int, FieldCodec] = {}
_UNREAD: Final = object()
# MEMOPT_PREVIOUS_ENGINE as last read (forgotten when settings change): the path of a
# cookie the store does not know looks at it, and a global costs less than a setting.
_previous_setting: Any = _UNREAD


def _read_previous_setting() -> str | None:
    global _previous_setting
    _previous_setting = conf.MEMOPT_PREVIOUS_ENGINE or None
    return _previous_setting  # type: ignore[no-any-return]


_ids: SessionIds | None = None
_store: type[SessionBase] | None = None


def field_codec(plain_below: int = 0) -> FieldCodec:
    """The codec for the current ``SECRET_KEY``, ``SECRET_KEY_FALLBACKS`` and
    ``MEMOPT_COMPRESS_FROM``, leaving payloads under ``plain_below`` bytes uncompressed
    whatever that setting says (see ``SessionBase.plain_below``)."""
    codec = _codecs.get(plain_below)
    if codec is None:
        compress_from = conf.MEMOPT_COMPRESS_FROM
        codec = _codecs[plain_below] = FieldCodec.from_secrets(
            (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS),
            compress_from=None if compress_from is None else max(compress_from, plain_below),
        )
    return codec


def session_ids() -> SessionIds:
    """Mints and checks session IDs with keys from ``SECRET_KEY`` and its fallbacks."""
    global _ids
    if _ids is None:
        _ids = SessionIds.from_secrets((settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS))
    return _ids


def session_store() -> type[SessionBase]:
    """The ``SessionStore`` class of ``SESSION_ENGINE``, resolved once; ``ImproperlyConfigured``
    if that is not one of this app's engines (the app may be installed for its collector
    tuning alone)."""
    global _store
    if _store is None:
        store = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
        if not (isinstance(store, type) and issubclass(store, SessionBase)):
            raise ImproperlyConfigured(
                f"SESSION_ENGINE {settings.SESSION_ENGINE!r} is not a django-memopt engine "
                "(django_memopt.backends.lmdb or django_memopt.backends.redis)."
            )
        _store = store
    return _store


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    global _handle_key, _ids, _previous_setting, _store
    _previous_setting = _UNREAD
    if setting in ("SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        _codecs.clear()
        _ids = None
        _handle_key = None
    if setting == "MEMOPT_COMPRESS_FROM":
        _codecs.clear()
    if setting == "SESSION_ENGINE":
        _store = None


def _log_corrupt(name: str, error: CorruptField) -> None:
    security_logger.warning("Session data corrupted: field %r (%s)", name, error)


def log_corrupt_record() -> None:
    """Log, as Django does for bad session data, a stored session no field can be read from."""
    security_logger.warning("Session data corrupted: unreadable session record")


_previous_noted: tuple[type[Any], str] | None = None


def note_previous_engine(store: type[SessionBase] | None = None) -> float:
    """When the fallback to ``MEMOPT_PREVIOUS_ENGINE`` was first used with this store
    (seconds since the epoch), recording now if nobody did: read by check
    ``django_memopt.W009``. Naming another engine than the one recorded starts anew.

    Raises ``SessionStoreError`` if the store cannot answer.
    """
    global _previous_noted
    store = session_store() if store is None else store
    engine = conf.MEMOPT_PREVIOUS_ENGINE or ""
    value = store.read_value("meta", PREVIOUS_ENGINE_SINCE)
    if value is None:
        value = store.add_value(
            "meta", PREVIOUS_ENGINE_SINCE, b"%d %s" % (time.time(), engine.encode())
        )
    since, _, recorded = value.decode("ascii", "replace").partition(" ")
    if recorded != engine or not since.isdigit():
        value = b"%d %s" % (time.time(), engine.encode())
        store.put_value("meta", PREVIOUS_ENGINE_SINCE, value)
        since = value.split(b" ", 1)[0].decode()
    _previous_noted = (store, engine)
    return float(since)


def _note_previous_engine(store: type[SessionBase]) -> None:
    """:func:`note_previous_engine`, once per process, store and engine; never fails a
    request (the record is for a system check)."""
    if _previous_noted != (store, conf.MEMOPT_PREVIOUS_ENGINE or ""):
        try:
            note_previous_engine(store)
        except SessionStoreError as exc:
            logger.warning("Cannot record when the previous engine's fallback began: %s", exc)


def _other_engines_key(session_key: str) -> bool:
    """Whether ``session_key`` can be a key of the previous engine: a valid key that is not
    of our signed IDs' length."""
    return SESSION_KEY_RE.match(session_key) is not None and len(session_key) != SIGNED_ID_LENGTH


def _previous_engine() -> PreviousEngine:
    previous = previous_engine()
    if previous is None:
        raise ImproperlyConfigured("MEMOPT_PREVIOUS_ENGINE is not set.")
    return previous


def _delta_size(delta: Delta) -> int:
    """Characters of the names plus bytes of the values a save sends."""
    sets = delta.sets
    return sum(map(len, sets)) + sum(map(len, sets.values())) + sum(map(len, delta.deletes))


_handle_key: bytes | None = None


def session_handle(session_key: str) -> str:
    """The opaque handle a user's index lists session ``session_key`` under: an HMAC of the
    key (a key derived from ``SECRET_KEY``), so it names the session without revealing
    its key."""
    global _handle_key
    if _handle_key is None:
        _handle_key = derive_key(settings.SECRET_KEY, b"django-memopt user-session handle")
    return hmac.digest(_handle_key, session_key.encode(), "sha256")[:12].hex()


def index_name(user: str) -> str:
    """What a user's index entries are sealed for: no session key has a ``~``, so an entry
    is never mistaken for a session's field."""
    return f"~user:{user}"


def user_id(value: object) -> str | None:
    """A user ID as the index keys it (Django stores ``_auth_user_id`` as text); ``None``
    if ``value`` cannot be one (the session is then not indexed)."""
    if type(value) is int:
        value = str(value)
    if (
        type(value) is not str
        or not value
        or len(value.encode("utf-8", "surrogatepass")) > USER_ID_MAX
    ):
        return None
    return value


@dataclass(frozen=True, slots=True)
class _Marker:
    user: str
    until_ms: int
    created: int
    handle: str


def _marker(value: Any) -> _Marker | None:
    """The content of ``USER_ENTRY_FIELD``, if well formed."""
    if type(value) is not list or len(value) != 4:
        return None
    user, until_ms, created, handle = value
    if user_id(user) is None or type(until_ms) is not int or type(created) is not int:
        return None
    if type(handle) is not str or not HANDLE_RE.match(handle):
        return None
    return _Marker(user, until_ms, created, handle)


def _refresh_bucket(deadline_ms: int, refresh_ms: int) -> int:
    """``deadline_ms`` rounded up to a multiple of ``refresh_ms``: a save refreshes the
    session's index entry when it moves the session's deadline into a later bucket, and
    gives the entry the deadline of the bucket after it. The session's stored deadline
    never passes its bucket without a refresh, so the entry always outlives the session,
    and a save tells whether a refresh is due from the deadline it loaded, without
    reading the entry."""
    if refresh_ms <= 0:
        return deadline_ms
    return -(-deadline_ms // refresh_ms) * refresh_ms


#: What a save writes (``SessionBase._plan_save``): the deadline, the delta, the change to
#: the index of users' sessions, and whether it is a touch (the expiry alone).
_SavePlan = tuple[float, Delta, IndexChange | None, bool]


def _user_sessions_on() -> bool:
    return bool(conf.MEMOPT_USER_SESSIONS)


class SessionBase(DjangoSessionBase):
    """A Django session whose fields are decoded lazily and saved as a delta."""

    #: Whether the primitives may wait on I/O; if so the async API runs them in a thread.
    store_blocks: ClassVar[bool] = True
    #: Payloads under this many bytes are sealed uncompressed whatever
    #: ``MEMOPT_COMPRESS_FROM`` says: the store compresses such fields together.
    plain_below: ClassVar[int] = 0
    #: Whether :meth:`_remove` must be told which entry of a user's index lists the
    #: session (a store that keeps no link of its own from a session to its entry).
    remove_needs_entry: ClassVar[bool] = False
    #: The client's IP address and user agent, recorded in the index of the user's
    #: sessions when this session is (``MEMOPT_USER_SESSIONS``): set by
    #: ``django_memopt.middleware.SessionMiddleware``, read at save.
    client: tuple[str | None, str | None] | None = None

    _session_cache: SessionFields

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        # The deadline the store held when this session was loaded: the touch throttle's
        # reference point.
        self._stored_expires_at: float | None = None
        # About how many bytes the stored session takes (for the statistics).
        self._stored_size = 0

    def _validate_session_key(self, session_key: object) -> bool:
        return isinstance(session_key, str) and SESSION_KEY_RE.match(session_key) is not None

    # -- the mapping ---------------------------------------------------------------------

    def _new_fields(
        self,
        stored: Mapping[str, bytes | Holder] | None = None,
        sealed_for: str | None = None,
        counts: Counter[str] | None = None,
    ) -> SessionFields:
        counts = counter() if counts is None else counts
        codec = field_codec(self.plain_below)
        return SessionFields(codec, sealed_for, stored, _log_corrupt, counts)

    def _get_session(self, no_load: bool = False) -> SessionFields:
        self.accessed = True
        try:
            return self._session_cache
        except AttributeError:
            fields = self._new_fields() if self.session_key is None or no_load else self.load()
            self._session_cache = fields
            return fields

    async def _aget_session(self, no_load: bool = False) -> SessionFields:
        self.accessed = True
        try:
            return self._session_cache
        except AttributeError:
            if self.session_key is None or no_load:
                fields = self._new_fields()
            else:
                fields = await self.aload()
            self._session_cache = fields
            return fields

    _session = property(_get_session)

    def clear(self) -> None:
        # As Django's, without loading: the next save replaces whatever is stored.
        try:
            fields = self._session_cache
        except AttributeError:
            fields = self._session_cache = self._new_fields(sealed_for=self.session_key)
        fields.clear()
        self.accessed = True
        self.modified = True

    # -- keys ----------------------------------------------------------------------------

    def _mint_session_key(self) -> str:
        """A fresh signed session ID (see :mod:`django_memopt.session_ids`).

        :meth:`create` relies on the store to refuse a taken one.
        """
        return session_ids().mint()

    def _get_new_session_key(self) -> str:
        while True:
            session_key = self._mint_session_key()
            if not self.exists(session_key):
                return session_key

    # -- Django's storage API, in terms of the primitives --------------------------------

    # Django annotates load() as returning a dict; the mapping behaves as one.
    def load(self) -> SessionFields:  # type: ignore[override]
        session_key = self.session_key
        stored = self._read(session_key) if session_key is not None else None
        if session_key is not None and len(session_key) != SIGNED_ID_LENGTH:
            # Not one of our IDs: perhaps the previous engine's (see "sessions of the
            # previous engine" below). Our signed IDs never take this path.
            if stored is not None:
                if ADOPTED_AS in stored.fields:
                    session_key, stored = self._follow_claim(session_key, stored)
            elif (
                _previous_setting if _previous_setting is not _UNREAD else _read_previous_setting()
            ):
                new_key = self._adopt(session_key, None)[1]
                if new_key is not None:
                    session_key, stored = new_key, self._read(new_key)
        return self._loaded(session_key, stored)

    def _loaded(self, session_key: str | None, stored: StoredSession | None) -> SessionFields:
        """The fields of ``stored``, read as ``session_key`` (``None``: no session), the
        state this session keeps of it updated: what :meth:`load` returns."""
        counts = counter()
        counts["loads"] += 1
        if stored is None:
            counts["misses"] += 1
            self._session_key = None
            self._stored_expires_at = None
            return self._new_fields(counts=counts)
        if session_key != self.session_key:
            # Moved under a signed ID: the response must hand out the new cookie.
            self._session_key = session_key
            self.modified = True
        counts["fields_loaded"] += len(stored.fields)
        self._stored_expires_at = stored.expires_at
        self._stored_size = stored.size
        return self._new_fields(stored.fields, session_key, counts)

    def exists(self, session_key: str | None) -> bool:
        return self._validate_session_key(session_key) and self._contains(session_key)  # type: ignore[arg-type]

    def create(self) -> None:
        while True:
            # No exists() round trip first: the create-only write refuses a taken key.
            self._session_key = self._mint_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        """Apply this request's changes to the stored session.

        ``must_create`` writes every field and fails with ``CreateError`` if the key is
        taken. Otherwise only the delta is applied, and only onto a session that still
        exists (``UpdateError`` if it was deleted or expired meanwhile); with nothing to
        apply, the expiry alone is refreshed, at most once per ``MEMOPT_TOUCH_INTERVAL``.
        """
        fields = self._get_session(no_load=must_create)
        session_key = self.session_key
        if session_key is None:  # a new session, or loading found no such session
            return self.create()
        plan = self._plan_save(fields, session_key, must_create)
        if plan is None:
            return
        expires_at, delta, index, touch = plan
        if touch:
            self._touch(session_key, expires_at)
        elif index is None:
            self._write(session_key, delta, expires_at, create=must_create)
        else:
            self._write(session_key, delta, expires_at, create=must_create, index=index)
        self._saved(fields, session_key, plan, must_create)

    def _plan_save(
        self, fields: SessionFields, session_key: str, must_create: bool
    ) -> _SavePlan | None:
        """What a save of ``fields`` as ``session_key`` writes, the hooks told it is
        about to; ``None`` if nothing is due (no change, and no touch yet)."""
        expires_at = time.time() + self.get_expiry_age()
        # Before the delta: a change to the index adds USER_ENTRY_FIELD to it.
        index = (
            self._index_change(fields, session_key, expires_at, must_create)
            if _user_sessions_on()
            else None
        )
        delta = fields.delta(session_key, full=must_create)
        touch = not (must_create or delta)
        if touch and not self._touch_due(expires_at):
            return None
        for hook in _hooks:
            hook.before_write(session_key, expires_at)
        return expires_at, delta, index, touch

    def _saved(
        self, fields: SessionFields, session_key: str, plan: _SavePlan, must_create: bool
    ) -> None:
        """After ``plan`` was written: the hooks, the fields and the figures told."""
        expires_at, delta, _, touch = plan
        if touch:
            count("touches")
        for hook in _hooks:
            hook.after_write(session_key, expires_at)
        fields.saved(session_key, delta)
        if not touch:
            written = _delta_size(delta)
            # A whole rewrite would write the session as stored, changes included (about:
            # a replaced field's old bytes are not subtracted, so as not to read them).
            self._stored_size = written if delta.replace else self._stored_size + written
            counts = counter()
            counts["creates" if must_create else "updates"] += 1
            counts["bytes_written"] += written
            counts["bytes_rewrite"] += self._stored_size
        self._stored_expires_at = expires_at

    def _touch_due(self, expires_at: float) -> bool:
        interval = conf.MEMOPT_TOUCH_INTERVAL
        stored = self._stored_expires_at
        return not interval or stored is None or expires_at - stored >= interval

    def delete(self, session_key: str | None = None) -> None:
        session_key = self._to_delete(session_key)
        if session_key is None:
            return
        if self.remove_needs_entry and _user_sessions_on():
            self._remove(session_key, self._listed_as(session_key))
        else:
            self._remove(session_key)

    def _to_delete(self, session_key: str | None) -> str | None:
        """The session a delete of ``session_key`` deletes (``None``: none to delete)."""
        if session_key is None:
            session_key = self.session_key
        return session_key if self._validate_session_key(session_key) else None

    # -- the index of a user's sessions (MEMOPT_USER_SESSIONS; docs/user-sessions.md) ---
    #
    # A session holding AUTH_USER_FIELD is listed in its user's index, written by the store
    # in the same transaction (LMDB) or script (Redis) as the session itself. The session
    # keeps what it is listed as in USER_ENTRY_FIELD. A save that moves the session's
    # deadline into a later bucket of MEMOPT_USER_SESSIONS_REFRESH (_refresh_bucket())
    # rewrites the entry (its "last seen", the client's metadata) with the deadline of the
    # bucket after, so the entry always outlives the session. So the index is written at
    # login, logout and at most once per that interval, and a save that changes neither
    # pays a few dictionary lookups: it compares the deadline it loaded with the new one,
    # and decodes nothing.

    def _index_change(
        self, fields: SessionFields, session_key: str, expires_at: float, full: bool
    ) -> IndexChange | None:
        """What saving ``fields`` as ``session_key`` until ``expires_at`` does to the index
        of its user's sessions (setting or deleting ``USER_ENTRY_FIELD`` accordingly);
        ``None``: nothing."""
        expires_ms = int(expires_at * 1000)
        refresh_ms = conf.MEMOPT_USER_SESSIONS_REFRESH * 1000
        if not (full or fields.changes(AUTH_USER_FIELD, session_key)):
            if fields.holds(USER_ENTRY_FIELD):
                stored = self._stored_expires_at
                if stored is not None and _refresh_bucket(expires_ms, refresh_ms) <= (
                    _refresh_bucket(int(stored * 1000), refresh_ms)
                ):
                    return None  # listed, and the entry outlives the session: the hot path
            elif AUTH_USER_FIELD not in fields:
                return None  # anonymous
        marker = _marker(fields.get(USER_ENTRY_FIELD))
        user = user_id(fields.get(AUTH_USER_FIELD))
        was = _marker(fields.stored_value(USER_ENTRY_FIELD))
        handle = session_handle(session_key)
        drop = None
        if was is not None and (was.user, was.handle) != (user, handle):
            drop = (was.user, was.handle)
        if user is None:
            if USER_ENTRY_FIELD in fields:
                del fields[USER_ENTRY_FIELD]
            return None if drop is None and was is None else IndexChange(None, drop)
        now = time.time()
        created = marker.created if marker is not None and marker.user == user else int(now)
        until_ms = _refresh_bucket(expires_ms, refresh_ms) + refresh_ms
        fields[USER_ENTRY_FIELD] = [user, until_ms, created, handle]
        ip = agent = None
        if self.client is not None:
            recorded = conf.MEMOPT_USER_SESSIONS_METADATA
            if "ip" in recorded:
                ip = self.client[0]
            if "user_agent" in recorded and self.client[1] is not None:
                agent = self.client[1][:USER_AGENT_MAX]
        entry = [session_key, created, int(now), ip, agent]
        sealed = field_codec().encode(index_name(user), handle, entry)
        return IndexChange(UserEntry(user, handle, until_ms, sealed), drop)

    def _listed_as(self, session_key: str) -> tuple[str, str] | None:
        """The ``(user, handle)`` of the index entry listing session ``session_key``, as
        the stored session says; ``None`` if it is not listed (or not there)."""
        return self._entry_of(session_key, self._read(session_key))

    def _entry_of(self, session_key: str, stored: StoredSession | None) -> tuple[str, str] | None:
        """:meth:`_listed_as`, ``stored`` being the session as read."""
        if stored is None:
            return None
        marker = _marker(self._new_fields(stored.fields, session_key).get(USER_ENTRY_FIELD))
        return None if marker is None else (marker.user, marker.handle)

    def cycle_key(self) -> None:
        self._get_session()  # every stored field, still undecoded
        old_key = self.session_key
        self.create()  # a full write under a new key carries the fields over
        if old_key:
            self.delete(old_key)

    # -- async: the same operations, on the event loop when the store has async
    # primitives (async_native()), else inline when the store never waits on I/O, else in
    # a thread. The native twins below make the calls of their sync counterparts, awaiting
    # the async primitives; every decision is in the helpers both share (_loaded,
    # _plan_save, _saved, _to_delete, _entry_of).

    @classmethod
    def async_native(cls) -> bool:
        """Whether this store provides the async primitives (``_aread`` ...), for the
        async API to await on the event loop rather than run the sync one in a thread."""
        return False

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        if self.store_blocks:
            return await sync_to_async(func)(*args)
        return func(*args)

    async def aload(self) -> SessionFields:  # type: ignore[override]
        session_key = self.session_key
        if self.async_native() and (session_key is None or len(session_key) == SIGNED_ID_LENGTH):
            stored = await self._aread(session_key) if session_key is not None else None
            return self._loaded(session_key, stored)
        if _previous_setting if _previous_setting is not _UNREAD else _read_previous_setting():
            # Another engine's key: the previous engine may wait on I/O (a database
            # query) whatever our store does.
            return await sync_to_async(self.load)()
        return await self._run(self.load)

    async def aexists(self, session_key: str | None) -> bool:
        if not self.async_native():
            return await self._run(self.exists, session_key)
        return self._validate_session_key(session_key) and await self._acontains(session_key)  # type: ignore[arg-type]

    async def acreate(self) -> None:
        if not self.async_native():
            return await self._run(self.create)
        while True:  # as create()
            self._session_key = self._mint_session_key()
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    async def asave(self, must_create: bool = False) -> None:
        if not self.async_native():
            return await self._run(self.save, must_create)
        fields = await self._aget_session(no_load=must_create)
        session_key = self.session_key
        if session_key is None:
            return await self.acreate()
        plan = self._plan_save(fields, session_key, must_create)
        if plan is None:
            return
        expires_at, delta, index, touch = plan
        if touch:
            await self._atouch(session_key, expires_at)
        elif index is None:
            await self._awrite(session_key, delta, expires_at, create=must_create)
        else:
            await self._awrite(session_key, delta, expires_at, create=must_create, index=index)
        self._saved(fields, session_key, plan, must_create)

    async def adelete(self, session_key: str | None = None) -> None:
        if not self.async_native():
            return await self._run(self.delete, session_key)
        session_key = self._to_delete(session_key)
        if session_key is None:
            return
        if self.remove_needs_entry and _user_sessions_on():
            listed_as = self._entry_of(session_key, await self._aread(session_key))
            await self._aremove(session_key, listed_as)
        else:
            await self._aremove(session_key)

    async def acycle_key(self) -> None:
        if not self.async_native():
            return await self._run(self.cycle_key)
        await self._aget_session()  # as cycle_key()
        old_key = self.session_key
        await self.acreate()
        if old_key:
            await self.adelete(old_key)

    @classmethod
    async def aclear_expired(cls) -> None:
        if cls.store_blocks:
            await sync_to_async(cls.clear_expired)()
        else:
            cls.clear_expired()

    # -- sessions of the previous engine (MEMOPT_PREVIOUS_ENGINE; docs/moving.md) -------
    #
    # A session of the previous engine is copied under a fresh signed ID, then a *claim* is
    # created under its old key: a record of our store holding one field, ADOPTED_AS, the
    # new ID, sealed as any field is, and expiring when the old session would have. Both
    # writes are create-only, so of two requests copying one session at once, one claim
    # wins; the loser deletes its copy (never handed out) and follows the winner's claim.
    # Only then is the old session deleted from the previous engine. So a claim always
    # names a copy that was complete before the claim existed, and a session is copied
    # once: while its claim lives, its old key leads to the copy or, once the copy is
    # gone (logged out, expired), to nothing, never back to the previous engine.

    def _follow_claim(
        self, old_key: str, claim: StoredSession
    ) -> tuple[str, StoredSession | None]:
        """The session a claim under ``old_key`` names, if it still lives."""
        new_key = self._new_fields(claim.fields, old_key).get(ADOPTED_AS)
        if not isinstance(new_key, str) or not self._validate_session_key(new_key):
            return old_key, None  # a damaged claim (logged): a fresh session, nothing moved
        return new_key, self._read(new_key)

    @classmethod
    def adopt(cls, old_key: str) -> tuple[Adoption, str | None]:
        """Copy the previous engine's session ``old_key`` into this store, once.

        Returns what happened and the session's key here (``None`` when nothing was
        copied): ``"copied"`` now, or ``"claimed"`` before (by another request, a run of
        ``memopt_import``, or a copy that lost a race to it; the key is then the claim's,
        whose session may have ended since); ``"absent"`` when the previous engine holds
        no live, readable, non-empty session under that key (a pickled one reads as
        corrupt); ``"refused"`` when its values cannot be stored here (logged; the old
        session stays where it is). ``ImproperlyConfigured`` if ``MEMOPT_PREVIOUS_ENGINE``
        is not set or names no engine the fallback reads.
        """
        if not _other_engines_key(old_key):
            return "absent", None  # looked up nowhere
        return cls._adopt(old_key, cls._read(old_key))

    @classmethod
    def adopt_many(cls, old_keys: list[str]) -> list[Adoption]:
        """:meth:`adopt` of each of ``old_keys``, what happened to each; the previous
        engine's sessions are read, and those moved deleted, a batch at a time where the
        engine can (``memopt_import``)."""
        previous = _previous_engine()
        theirs = [key for key in old_keys if _other_engines_key(key)]
        found = previous.read_many(theirs)
        outcomes: list[Adoption] = []
        moved = []
        for old_key in old_keys:
            claim = cls._read(old_key) if _other_engines_key(old_key) else None
            if claim is None and old_key not in found:
                outcomes.append("absent")
                continue
            outcome = cls._adopt(old_key, claim, found.get(old_key), delete=False)[0]
            if outcome in ("copied", "claimed"):
                moved.append(old_key)
            outcomes.append(outcome)
        cls._delete_previous(previous, moved)
        return outcomes

    @classmethod
    def _adopt(
        cls,
        old_key: str,
        claim: StoredSession | None,
        found: PreviousSession | None = None,
        *,
        delete: bool = True,
    ) -> tuple[Adoption, str | None]:
        """:meth:`adopt`, ``claim`` being what this store holds under ``old_key``, and
        ``found`` the previous engine's session if it was read already. Without
        ``delete``, the caller deletes a session copied or claimed from the previous
        engine."""
        previous = _previous_engine()
        if claim is None:
            if found is None:
                found = previous.read(old_key)
            if found is not None:
                moved = cls._copy_and_claim(old_key, found)
                if moved is not None:
                    if delete and moved[0] == "copied":
                        cls._delete_previous(previous, [old_key])
                    return moved
            # Claimed meanwhile by another request (this one lost the race to claim, or
            # looked there before the claim and in the previous engine after the delete;
            # a claim is written before the old session is deleted, so it is there now),
            # or nowhere.
            claim = cls._read(old_key)
            if claim is None:
                return "absent", None
        if ADOPTED_AS not in claim.fields:
            return "absent", None  # a session of ours under that key: never overwritten
        new_key = cls()._follow_claim(old_key, claim)[0]
        if new_key == old_key:
            return "absent", None
        if delete:  # the run that claimed it may have stopped before deleting it there
            cls._delete_previous(previous, [old_key])
        return "claimed", new_key

    @classmethod
    def _copy_and_claim(
        cls, old_key: str, found: PreviousSession
    ) -> tuple[Adoption, str | None] | None:
        """Copy ``found`` and claim it under ``old_key``; ``None`` if another request
        claimed it first (this copy is then removed)."""
        _note_previous_engine(cls)
        codec = field_codec(cls.plain_below)
        copy = SessionFields(codec, on_corrupt=_log_corrupt)
        try:
            copy.update(found.data)
            new_key = cls._create_copy(copy, found.expires_at)
        except (TypeError, ValueError) as exc:  # values our codec cannot take
            logger.warning(
                "The previous engine's session %s... cannot be copied (%s): left there",
                old_key[:6],
                exc,
            )
            return "refused", None
        claim = SessionFields(codec)
        claim[ADOPTED_AS] = new_key
        try:
            cls._create_record(old_key, claim, found.expires_at)
        except CreateError:
            cls._remove(new_key)  # never handed out: the winner's copy is the one
            return None
        return "copied", new_key

    @classmethod
    def _create_copy(cls, fields: SessionFields, expires_at: float) -> str:
        """Write ``fields`` under a fresh signed ID, returned."""
        while True:
            new_key = session_ids().mint()
            try:
                cls._create_record(new_key, fields, expires_at)
            except CreateError:
                continue
            return new_key

    @classmethod
    def _create_record(cls, session_key: str, fields: SessionFields, expires_at: float) -> None:
        """Create session ``session_key`` holding ``fields`` (``CreateError`` if taken),
        with the hooks every write has."""
        delta = fields.delta(session_key, full=True)
        for hook in _hooks:
            hook.before_write(session_key, expires_at)
        cls._write(session_key, delta, expires_at, create=True)
        for hook in _hooks:
            hook.after_write(session_key, expires_at)

    @staticmethod
    def _delete_previous(previous: PreviousEngine, old_keys: list[str]) -> None:
        if not old_keys:
            return
        try:
            previous.delete(old_keys)
        except Exception as exc:  # copied and claimed: served regardless
            logger.warning(
                "%d session(s) of the previous engine (%s...) were copied but could not be "
                "deleted there (%s): their claims keep them from being copied again",
                len(old_keys),
                old_keys[0][:6],
                exc,
            )

    # -- storage primitives: a store provides these, and nothing else --------------------

    @classmethod
    def _read(cls, session_key: str) -> StoredSession | None:
        """The live session ``session_key``, or ``None`` if absent, expired or unreadable."""
        raise NotImplementedError("subclasses of SessionBase must provide a _read() method")

    @classmethod
    def _write(
        cls,
        session_key: str,
        delta: Delta,
        expires_at: float,
        *,
        create: bool,
        index: IndexChange | None = None,
    ) -> None:
        """Apply ``delta`` and the new deadline atomically.

        With ``create``, only if no live session has that key (else ``CreateError``);
        without, only if one does (else ``UpdateError``): a deleted session is never
        brought back. Fields the delta does not name are left exactly as stored. ``index``
        is applied to the index of users' sessions in the same transaction, only if the
        session write is.
        """
        raise NotImplementedError("subclasses of SessionBase must provide a _write() method")

    @classmethod
    def _touch(cls, session_key: str, expires_at: float) -> None:
        """Set the deadline of a live session (else ``UpdateError``), fields untouched."""
        raise NotImplementedError("subclasses of SessionBase must provide a _touch() method")

    @classmethod
    def _remove(cls, session_key: str, listed_as: tuple[str, str] | None = None) -> None:
        """Delete the session if it exists, and the index entry listing it: the one the
        store links to it, or ``listed_as`` (``(user, handle)``) for a store that keeps no
        such link (``remove_needs_entry``)."""
        raise NotImplementedError("subclasses of SessionBase must provide a _remove() method")

    @classmethod
    def _user_entries(cls, user: str) -> list[tuple[str, str, bytes]]:
        """The entries of ``user``'s index listing live sessions: ``(handle, session key,
        sealed entry)``, in no set order. Entries of sessions gone (expired, deleted by
        other means) are left out, and may be pruned on the way."""
        raise NotImplementedError("subclasses of SessionBase must provide _user_entries()")

    @classmethod
    def _contains(cls, session_key: str) -> bool:
        """Whether a live session has that key."""
        raise NotImplementedError("subclasses of SessionBase must provide a _contains() method")

    # The async primitives: the same contracts, awaited on the running event loop. Only a
    # store whose async_native() is true provides them.

    @classmethod
    async def _aread(cls, session_key: str) -> StoredSession | None:
        """:meth:`_read`, awaited."""
        raise NotImplementedError(
            "subclasses of SessionBase with async_native() must provide _aread()"
        )

    @classmethod
    async def _awrite(
        cls,
        session_key: str,
        delta: Delta,
        expires_at: float,
        *,
        create: bool,
        index: IndexChange | None = None,
    ) -> None:
        """:meth:`_write`, awaited."""
        raise NotImplementedError(
            "subclasses of SessionBase with async_native() must provide _awrite()"
        )

    @classmethod
    async def _atouch(cls, session_key: str, expires_at: float) -> None:
        """:meth:`_touch`, awaited."""
        raise NotImplementedError(
            "subclasses of SessionBase with async_native() must provide _atouch()"
        )

    @classmethod
    async def _aremove(cls, session_key: str, listed_as: tuple[str, str] | None = None) -> None:
        """:meth:`_remove`, awaited."""
        raise NotImplementedError(
            "subclasses of SessionBase with async_native() must provide _aremove()"
        )

    @classmethod
    async def _acontains(cls, session_key: str) -> bool:
        """:meth:`_contains`, awaited."""
        raise NotImplementedError(
            "subclasses of SessionBase with async_native() must provide _acontains()"
        )

    @classmethod
    def iter_sessions(cls) -> Iterator[tuple[str, float]]:
        """Every live session's key and deadline (seconds since the epoch), in no set order.

        For rebuilding the session-ID filter and for statistics: read in batches, never
        holding the store for the whole walk.
        """
        raise NotImplementedError("subclasses of SessionBase must provide iter_sessions()")

    @classmethod
    def iter_session_keys(cls) -> Iterator[str]:
        """Every live session's key."""
        return (session_key for session_key, _ in cls.iter_sessions())

    @classmethod
    def store_figures(cls, sample: int = 1000) -> dict[str, Any]:
        """The store's own figures (sessions, bytes, ...), sampling rather than scanning."""
        raise NotImplementedError("subclasses of SessionBase must provide store_figures()")

    # Store-wide values: bytes under names (non-empty text, at most 200 bytes in UTF-8),
    # in spaces ("stats": each process's counters; "meta": values set once) beside the
    # sessions. They never expire and are never sessions: a space's name (check_space())
    # can never be a session key. A store raises ValueError for a space so misnamed.

    @classmethod
    def read_values(cls, space: str) -> dict[str, bytes]:
        """Every value of ``space``, by name (``{}`` for a space never written)."""
        raise NotImplementedError("subclasses of SessionBase must provide read_values()")

    @classmethod
    def read_value(cls, space: str, name: str) -> bytes | None:
        """The value ``name`` of ``space``, or ``None`` if it is not set."""
        raise NotImplementedError("subclasses of SessionBase must provide read_value()")

    @classmethod
    def put_value(cls, space: str, name: str, value: bytes) -> None:
        """Set the value ``name`` of ``space`` to ``value``, replacing what it held."""
        raise NotImplementedError("subclasses of SessionBase must provide put_value()")

    @classmethod
    def add_value(cls, space: str, name: str, value: bytes) -> bytes:
        """Set the value ``name`` of ``space`` to ``value`` unless it is set; the value it
        holds.

        Atomic across threads, processes and hosts: the first caller's value wins, and
        every caller gets that one back.
        """
        raise NotImplementedError("subclasses of SessionBase must provide add_value()")

    @classmethod
    def remove_values(cls, space: str, names: Iterable[str]) -> None:
        """Forget the values ``names`` of ``space`` (those not set are ignored). Works on a
        full store, as a delete does."""
        raise NotImplementedError("subclasses of SessionBase must provide remove_values()")


# A space is named in lowercase ASCII, so it fits every store's naming (a Redis key
# <prefix>~<space>, where no session key has a "~"; an LMDB named database), and is not
# one of the names stores keep for the sessions themselves.
SPACE_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
RESERVED_SPACES: Final = frozenset({"sessions", "expiry"})


def check_space(space: str) -> None:
    """Raise ``ValueError`` unless ``space`` can name a space of store-wide values."""
    if not SPACE_RE.match(space) or space in RESERVED_SPACES:
        raise ValueError(
            f"{space!r} cannot name a space of store-wide values: use lowercase ASCII "
            f"letters, digits and '_' (at most 32, a letter first), not "
            f"{' or '.join(sorted(RESERVED_SPACES))}"
        )
