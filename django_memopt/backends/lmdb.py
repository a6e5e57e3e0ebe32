"""``SESSION_ENGINE = "django_memopt.backends.lmdb"``: sessions in an embedded LMDB store.

Every worker process on the host opens the same environment (``MEMOPT_LMDB_PATH``); LMDB
serialises writers across processes and never blocks readers. Named databases:

``sessions``
    session key -> the session as one record (:mod:`django_memopt.records`): its deadline
    and layers of sealed fields. A load is one ``get`` that merges the layers without
    decoding any value; a save appends its delta as a layer.
``expiry``
    :func:`django_memopt.records.index_key` (the deadline rounded up to the hour, then the
    session key) -> empty, so ``clear_expired`` reads only what has expired or expires
    within the hour under way. Rounding means a session saved again and again moves its
    index entry (a commit's largest part after the record) at most once an hour.
``users``
    the index of each user's sessions (``MEMOPT_USER_SESSIONS``): the user ID's length
    (2 bytes) and UTF-8, then the session's handle -> the session key's length (1 byte),
    the session key, then the sealed entry (see ``SessionBase._index_change``).
``owners``
    session key -> its key in ``users``: a delete, a logout or ``clear_expired`` drops the
    entry listing the session in the same transaction, whoever asks.
one per space of store-wide values (``stats``, ``meta``, ...)
    name -> value (:meth:`SessionStore.read_values` and the like); opened on first use.

A save reads the record, merges the delta and writes it back inside one write
transaction, so concurrent writers keep each other's fields and a deleted session stays
deleted.

A full map refuses session writes (``SessionStoreFull``), but a logout or a sweep must
still work then, when it is needed most, and a delete writes copies of the pages it
changes before it frees any. So a delete that finds the map full runs again in a map grown
for that one transaction (``_in_reserve``), then shrunk back: session writes never get
the reserve.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import lmdb
from django.core.signals import setting_changed
from django.dispatch import receiver

from django_memopt import codec, records
from django_memopt.conf import conf

from .base import (
    SESSION_KEY_RE,
    CreateError,
    Delta,
    IndexChange,
    SessionStoreError,
    SessionStoreFull,
    StoredSession,
    UpdateError,
    check_space,
    log_corrupt_record,
    security_logger,
)
from .base import SessionBase as _SessionBase

__all__ = ["SessionStore", "close_environments", "environment"]

T = TypeVar("T")

# Expired sessions deleted per write transaction by clear_expired: short transactions
# keep the writer lock free for requests.
SWEEP_BATCH: Final = 500
# Expired sessions deleted per write transaction by clear_expired on a full map: the
# pages each transaction frees serve the ones after it.
FULL_SWEEP_BATCH: Final = 16
# Named databases beside "sessions", "expiry", "users" and "owners": one per space of
# store-wide values.
MAX_SPACES: Final = 14
# A delete on a full map may grow it, for that transaction, in steps of 1 MiB per 64 MiB of
# MEMOPT_LMDB_MAP_SIZE (at least 1 MiB), at most RESERVE_STEPS of them. A delete needs a
# few pages; the steps are address space, and only the pages written take disk.
RESERVE_STEP: Final = 1024**2
RESERVE_STEPS: Final = 4
# A sealed field's format byte: the codec's format, its low bits the compression method.
_COMPRESSION_BITS: Final = 0x03
_PLAIN_FIELD: Final = bytes((codec.FORMAT,))


@dataclass(frozen=True, slots=True)
class Environment:
    """An LMDB environment opened by this process, and its databases."""

    env: Any  # lmdb.Environment
    sessions: Any
    expiry: Any
    users: Any
    owners: Any
    path: str
    pid: int
    map_size: int  # MEMOPT_LMDB_MAP_SIZE when opened: the most session writes may fill
    # The databases of the spaces of store-wide values used so far (see _space()).
    spaces: dict[str, Any] = field(default_factory=dict)

    @property
    def reserve(self) -> int:
        """The most a delete on a full map may grow the map by, over ``map_size``."""
        return RESERVE_STEPS * self.reserve_step

    @property
    def reserve_step(self) -> int:
        return RESERVE_STEP * max(1, self.map_size // (64 * RESERVE_STEP))


_environments: dict[str, Environment] = {}
_open_lock: Final = threading.Lock()
# Held while a space's database is opened (see _space()).
_space_lock = threading.Lock()
# The environment of the current settings in this process: the hot path reads no setting.
_current: Environment | None = None
# Threads of this process inside one of our transactions (set.add/discard are atomic).
_in_transaction: Final[set[int]] = set()
# Environments inherited across fork() while a transaction was open: never closed.
_stranded: list[Environment] = []
FORK_WAIT_SECONDS: Final = 2.0
# While a thread holds _pause_lock and _paused is set, new transactions of this process
# wait for _resumed: see _pause().
_pause_lock = threading.Lock()
_paused = False
_resumed = threading.Event()
_resumed.set()
RESIZE_WAIT_SECONDS: Final = 10.0


def environment() -> Environment:
    """This process's environment at ``MEMOPT_LMDB_PATH``, opened on first use.

    After a fork the child closes the inherited environment and opens its own: LMDB
    forbids using one across ``fork()``. Closing it aborts the transactions it holds,
    which would free the parent's reader slots, so a fork first waits for transactions in
    flight (they last microseconds); if one outlived the wait, the child leaves the
    inherited environment alone and cannot open the store.
    """
    global _current
    if _current is not None:
        return _current
    path = conf.MEMOPT_LMDB_PATH
    with _open_lock:
        opened = _environments.get(path)
        if opened is None or opened.pid != os.getpid():
            if opened is not None:
                if opened in _stranded:
                    raise SessionStoreError(
                        f"This process was forked while a transaction on the LMDB session "
                        f"store at {path!r} was open in another thread; it cannot use it."
                    )
                opened.env.close()
            _environments[path] = opened = _open(path)
        _current = opened
        return opened


def _before_fork() -> None:
    deadline = time.monotonic() + FORK_WAIT_SECONDS
    me = threading.get_ident()
    while _in_transaction - {me} and time.monotonic() < deadline:
        time.sleep(0.0005)


def _after_fork_in_child() -> None:
    global _current, _pause_lock, _paused, _space_lock
    _current = None
    # A pause or an opening by another thread of the parent is over here: it is gone.
    _pause_lock, _paused, _space_lock = threading.Lock(), False, threading.Lock()
    _resumed.set()
    if _in_transaction:
        _stranded.extend(opened for opened in _environments.values() if opened.pid != os.getpid())
        _in_transaction.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _open(path: str) -> Environment:
    durable = conf.MEMOPT_LMDB_DURABILITY == "system"
    map_size = conf.MEMOPT_LMDB_MAP_SIZE
    try:
        # Sessions are not encrypted and their IDs are credentials: owner only.
        os.makedirs(path, mode=0o700, exist_ok=True)
        env = lmdb.open(
            path,
            mode=0o600,
            map_size=map_size,
            max_readers=conf.MEMOPT_LMDB_MAX_READERS,
            max_dbs=4 + MAX_SPACES,
            # "process": commits reach the OS page cache, which outlives any killed
            # worker; "system": each commit is also flushed to disk (two fsyncs).
            sync=durable,
            metasync=durable,
            # Session lookups are random: reading ahead only evicts useful pages.
            readahead=False,
            # No cached read transactions: their reader slots would leak into a fork.
            max_spare_txns=0,
        )
        # Slots of killed processes pin old pages and fill the reader table.
        env.reader_check()
        sessions = env.open_db(b"sessions")
        expiry = env.open_db(b"expiry")
        users = env.open_db(b"users")
        owners = env.open_db(b"owners")
    except (OSError, lmdb.Error) as exc:
        raise SessionStoreError(
            f"Cannot open the LMDB session store at {path!r} (MEMOPT_LMDB_PATH): {exc}"
        ) from exc
    return Environment(env, sessions, expiry, users, owners, path, os.getpid(), map_size)


def close_environments() -> None:
    """Close every environment this process opened (the next use reopens)."""
    global _current
    _current = None
    with _open_lock:
        for opened in _environments.values():
            if opened.pid == os.getpid():
                opened.env.close()
        _environments.clear()


@receiver(setting_changed)
def _reopen_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("MEMOPT_LMDB_"):
        close_environments()


def _transaction(
    opened: Environment, body: Callable[[Any], T], *, write: bool, reserve: bool = False
) -> T:
    """Run ``body`` in a transaction; LMDB's failures become ``SessionStoreError``.

    A map another process has grown is adopted. With ``reserve``, a write that finds the
    map full runs again in a map grown for it (:func:`_in_reserve`): for deletes, which
    must work on a full map. Session writes never are.
    """
    thread = threading.get_ident()
    try:
        for _attempt in range(3):
            _in_transaction.add(thread)  # before looking at _paused: see _pause()
            try:
                if _paused:
                    _wait_while_paused(thread)
                txn = opened.env.begin(write=write, buffers=True)
                try:
                    result = body(txn)
                except BaseException:
                    _abort(txn, write)
                    raise
                txn.commit()
                return result
            except lmdb.MapResizedError:
                pass
            except lmdb.MapFullError:
                if not reserve:
                    raise
                break
            finally:
                _in_transaction.discard(thread)
            # Another process has grown the file: map it, and no more than this process's
            # own size (LMDB rounds up to what the file holds), so as not to adopt a reserve.
            with _alone():
                opened.env.set_mapsize(opened.map_size)
        else:
            raise SessionStoreError(
                f"LMDB session store at {opened.path!r}: map size keeps changing"
            )
        return _in_reserve(opened, body)
    except lmdb.MapFullError as exc:
        raise SessionStoreFull(
            f"The LMDB session store at {opened.path!r} is full (MEMOPT_LMDB_MAP_SIZE is "
            f"{opened.map_size} bytes"
            + (
                f", and a delete did not fit even in its reserve of {opened.reserve} bytes "
                "over that). Raise MEMOPT_LMDB_MAP_SIZE and restart."
                if reserve
                else "). Raise MEMOPT_LMDB_MAP_SIZE and restart; run clearsessions to drop "
                "expired sessions."
            )
        ) from exc
    except lmdb.ReadersFullError as exc:
        raise SessionStoreError(
            f"The LMDB session store at {opened.path!r} has no free reader slot: more "
            "threads read at once than MEMOPT_LMDB_MAX_READERS "
            f"({opened.env.max_readers()}) allows. Raise it and restart."
        ) from exc
    except lmdb.DiskError as exc:
        raise SessionStoreError(
            f"The disk holding the LMDB session store at {opened.path!r} is full ({exc}): "
            "nothing can be written to it, not even a delete, until space is freed."
        ) from exc
    except lmdb.Error as exc:
        raise SessionStoreError(f"LMDB session store at {opened.path!r}: {exc}") from exc


def _wait_while_paused(thread: int) -> None:
    """Wait, counted out of ``_in_transaction``, until transactions are no longer paused."""
    while _paused:
        _in_transaction.discard(thread)
        _resumed.wait()
        _in_transaction.add(thread)


@contextmanager
def _pause(*, wait: bool = True) -> Iterator[None]:
    """New transactions of this process wait meanwhile (those in flight go on).

    A transaction counts itself in ``_in_transaction``, then looks at ``_paused``: so a
    thread that sets ``_paused`` and then finds the count empty knows that none is in
    flight, nor can start. Without ``wait``, if another thread holds the pause, this one
    goes on at once: they are paused already.
    """
    global _paused
    if not _pause_lock.acquire(blocking=wait):
        yield
        return
    try:
        _paused = True
        _resumed.clear()
        yield
    finally:
        _paused = False
        _resumed.set()
        _pause_lock.release()


@contextmanager
def _alone() -> Iterator[None]:
    """No other thread of this process in a transaction meanwhile: for a resize, which
    unmaps and maps the file again under every transaction of the process. Those in
    flight, which last microseconds, are waited for."""
    me = threading.get_ident()
    with _pause():
        _in_transaction.add(me)  # a fork meanwhile waits for this as for a transaction
        try:
            deadline = time.monotonic() + RESIZE_WAIT_SECONDS
            while _in_transaction - {me}:
                if time.monotonic() > deadline:
                    raise SessionStoreError(
                        "Cannot resize the LMDB session store: a transaction in another "
                        f"thread of this process did not end within {RESIZE_WAIT_SECONDS} s."
                    )
                time.sleep(0.0005)
            yield
        finally:
            _in_transaction.discard(me)


def _abort(txn: Any, write: bool) -> None:
    """Abort ``txn``, a write one with new transactions paused.

    py-lmdb aborts a write transaction only once no other thread of the process is inside
    an LMDB call, which the reads of a few busy threads may never allow. If another thread
    holds the pause (a resize waiting for this transaction to end), it is paused already.
    """
    if not write:
        txn.abort()
        return
    with _pause(wait=False):
        txn.abort()


def _in_reserve(opened: Environment, body: Callable[[Any], T]) -> T:
    """Run the write ``body`` in a map grown above ``MEMOPT_LMDB_MAP_SIZE`` for it alone.

    For deletes on a full map: the reader slots of killed processes (which keep old pages
    from being reused) are cleared, then the map grows a step at a time, at most
    ``opened.reserve`` over the configured size, and shrinks back afterwards (LMDB keeps
    at least what the file holds), so that session writes never get the reserve. Raises
    ``lmdb.MapFullError`` if even that is not enough.
    """
    env = opened.env
    ceiling = opened.map_size + opened.reserve
    with _alone():
        env.reader_check()
        size = env.info()["map_size"]
        try:
            for _attempt in range(RESERVE_STEPS + 3):
                try:
                    with env.begin(write=True, buffers=True) as txn:
                        return body(txn)
                except lmdb.MapFullError:
                    if size >= ceiling:
                        raise
                except lmdb.MapResizedError:
                    pass  # another process has grown the file: set_mapsize() maps it
                size = min(size + opened.reserve_step, ceiling)
                env.set_mapsize(size)
            raise SessionStoreError(
                f"LMDB session store at {opened.path!r}: map size keeps changing"
            )
        finally:
            env.set_mapsize(opened.map_size)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _compressed(sealed: bytes) -> bool:
    """Whether the codec compressed ``sealed``: its format byte is the codec's current
    format with compression bits set. Such a field stays out of the record's block of small
    fields (a field sealed by an earlier release is never compressed)."""
    head = sealed[:1]
    return bool(head) and head != _PLAIN_FIELD and head[0] & ~_COMPRESSION_BITS == codec.FORMAT


def _log_bad_entry(name: str | bytes, stored: object) -> None:
    """Log, as Django does for bad session data, an entry no save writes (it is dropped)."""
    if type(name) is not str:
        problem = "its name is not text"
    elif type(stored) is records.Block:
        problem = "the block of small fields holding it cannot be read"
    else:
        problem = f"its value is a {type(stored).__name__}, not bytes"
    security_logger.warning("Session data corrupted: field %r (%s)", name[:64], problem)


def _session_key(key: bytes) -> str | None:
    """``key`` of the ``sessions`` database as a session key; ``None`` if it is none."""
    session_key = key.decode("ascii", "replace")
    return session_key if SESSION_KEY_RE.match(session_key) else None


def _log_stray_key(key: bytes) -> None:
    security_logger.warning(
        "Session data corrupted: records under keys that are no session IDs (such as %r) "
        "are left out of this listing of sessions",
        key[:64],
    )


def _reindex(opened: Environment, txn: Any, key: bytes, old_ms: int | None, new_ms: int) -> None:
    if old_ms is not None and records.index_bucket(old_ms) == records.index_bucket(new_ms):
        return
    if old_ms is not None:
        txn.delete(records.index_key(old_ms, key), db=opened.expiry)
    txn.put(records.index_key(new_ms, key), b"", db=opened.expiry)


def _user_prefix(user: str) -> bytes:
    """Where ``user``'s entries start in the ``users`` database."""
    name = user.encode("utf-8", "surrogatepass")
    return len(name).to_bytes(2, "big") + name


def _unlist(opened: Environment, txn: Any, key: bytes) -> None:
    """Drop the index entry listing session ``key``, if any."""
    entry = txn.get(key, db=opened.owners)
    if entry is not None:
        txn.delete(bytes(entry), db=opened.users)
        txn.delete(key, db=opened.owners)


def _index(opened: Environment, txn: Any, key: bytes, change: IndexChange) -> None:
    """Apply ``change`` for session ``key``: its entry replaces whatever listed it."""
    _unlist(opened, txn, key)
    put = change.put
    if put is not None:
        entry = _user_prefix(put.user) + put.handle.encode()
        txn.put(entry, bytes((len(key),)) + key + put.sealed, db=opened.users)
        txn.put(key, entry, db=opened.owners)


def _space(opened: Environment, space: str) -> Any:
    """The named database of ``space`` in ``opened``, opened (and made) on first use.

    LMDB allows one transaction of a process at a time to open databases, hence the lock;
    the handle serves every transaction once the one that opened it has committed.
    """
    db = opened.spaces.get(space)
    if db is None:
        check_space(space)
        with _space_lock:
            db = opened.spaces.get(space)
            if db is None:
                db = _transaction(
                    opened, lambda txn: opened.env.open_db(space.encode(), txn=txn), write=True
                )
                opened.spaces[space] = db
    return db


class SessionStore(_SessionBase):
    """Sessions in the LMDB environment at ``MEMOPT_LMDB_PATH``."""

    # Reads and writes are memory copies under a process-shared lock, measured in
    # microseconds: a thread hop would cost more than the work.
    store_blocks = False
    # The record compresses the small fields together (records.SMALL_FIELD_MAX sealed
    # bytes, the codec's head included), which saves more than compressing each alone.
    plain_below = records.SMALL_FIELD_MAX - codec.HEADER_SIZE

    @classmethod
    def _read(cls, session_key: str) -> StoredSession | None:
        def read(txn: Any) -> StoredSession | None:
            record = txn.get(session_key.encode(), db=opened.sessions)
            if record is None:
                return None
            expires_ms = records.deadline(record)
            if expires_ms is not None and expires_ms <= _now_ms():
                return None
            fields = None if expires_ms is None else records.fields(record, _log_bad_entry)
            if fields is None:
                log_corrupt_record()
                return None
            return StoredSession(fields, expires_ms / 1000, len(record))  # type: ignore[operator]

        opened = environment()
        return _transaction(opened, read, write=False)

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
        key = session_key.encode()
        new_ms = int(expires_at * 1000)

        def write(txn: Any) -> None:
            record = txn.get(key, db=opened.sessions)
            old_ms = records.deadline(record)
            live = old_ms is not None and old_ms > _now_ms()
            if create and live and records.fields(record) is not None:
                raise CreateError
            if not create and not live:
                raise UpdateError
            new = (
                records.pack(new_ms, delta.sets, _compressed)
                if delta.replace
                else records.updated(
                    record, new_ms, delta.sets, delta.deletes, _log_bad_entry, _compressed
                )
            )
            if new is None:  # damaged: it reads as absent, so it is not there to update
                raise UpdateError
            txn.put(key, new, db=opened.sessions)
            _reindex(opened, txn, key, old_ms, new_ms)
            if index is not None:
                _index(opened, txn, key, index)

        opened = environment()
        _transaction(opened, write, write=True)

    @classmethod
    def _touch(cls, session_key: str, expires_at: float) -> None:
        key = session_key.encode()
        new_ms = int(expires_at * 1000)

        def touch(txn: Any) -> None:
            record = txn.get(key, db=opened.sessions)
            old_ms = records.deadline(record)
            if old_ms is None or old_ms <= _now_ms():
                raise UpdateError
            txn.put(key, records.with_deadline(record, new_ms), db=opened.sessions)
            _reindex(opened, txn, key, old_ms, new_ms)

        opened = environment()
        _transaction(opened, touch, write=True)

    @classmethod
    def _remove(cls, session_key: str, listed_as: tuple[str, str] | None = None) -> None:
        key = session_key.encode()

        def remove(txn: Any) -> None:
            old_ms = records.deadline(txn.get(key, db=opened.sessions))
            if txn.delete(key, db=opened.sessions) and old_ms is not None:
                txn.delete(records.index_key(old_ms, key), db=opened.expiry)
            _unlist(opened, txn, key)

        opened = environment()
        _transaction(opened, remove, write=True, reserve=True)  # a logout, even on a full map

    @classmethod
    def _contains(cls, session_key: str) -> bool:
        def contains(txn: Any) -> bool:
            record = txn.get(session_key.encode(), db=opened.sessions)
            expires_ms = records.deadline(record)
            # Exactly what _read() would serve; a damaged record is not a session.
            return (
                expires_ms is not None
                and expires_ms > _now_ms()
                and records.fields(record) is not None
            )

        opened = environment()
        return _transaction(opened, contains, write=False)

    @classmethod
    def clear_expired(cls) -> None:
        """Delete expired sessions, walking the expiry index in short transactions.

        It reads the entries of the buckets that have begun, and the records they name:
        an expired session is deleted, a live one keeps its entry (in the bucket still
        running) or gets one at its deadline if the entry was left behind. On a full map
        it goes on in transactions of ``FULL_SWEEP_BATCH`` entries, each in the reserve if
        need be: the pages one of them frees serve the next ones.
        """
        opened = environment()
        now_ms = _now_ms()
        current = records.index_bucket(now_ms)
        batch = SWEEP_BATCH
        resume = b""  # the index key the sweep goes on from

        def sweep(txn: Any) -> bytes | None:
            """Where the next transaction goes on from; ``None``: the sweep is over."""
            cursor = txn.cursor(db=opened.expiry)
            position = resume
            for _ in range(batch):
                if not cursor.set_range(position):
                    return None
                index_key = bytes(cursor.key())
                if int.from_bytes(index_key[:8], "big") > current:
                    return None
                position = index_key + b"\0"
                key = index_key[8:]
                expires_ms = records.deadline(txn.get(key, db=opened.sessions))
                if expires_ms is not None and expires_ms > now_ms:
                    entry = records.index_key(expires_ms, key)
                    if entry == index_key:
                        continue
                    txn.put(entry, b"", db=opened.expiry)
                elif expires_ms is not None:
                    txn.delete(key, db=opened.sessions)
                    _unlist(opened, txn, key)
                txn.delete(index_key, db=opened.expiry)
            return position

        while True:
            try:
                position = _transaction(opened, sweep, write=True, reserve=batch < SWEEP_BATCH)
            except SessionStoreFull:
                if batch < SWEEP_BATCH:
                    raise
                batch = FULL_SWEEP_BATCH
                continue
            if position is None:
                return
            resume = position

    @classmethod
    def iter_sessions(cls, batch: int = 1000) -> Iterator[tuple[str, float]]:
        """The live sessions' keys and deadlines, in key order.

        Read in batches of short transactions: none stays open while the caller works. A
        record under a key that is no session ID is left out (and logged, once).
        """
        opened = environment()
        now_ms = _now_ms()
        after: bytes | None = None
        stray: bytes | None = None

        def page(txn: Any) -> tuple[list[tuple[str, float]], bytes | None]:
            nonlocal stray
            cursor = txn.cursor(db=opened.sessions)
            found = cursor.first() if after is None else cursor.set_range(after)
            if found and after is not None and bytes(cursor.key()) == after:
                found = cursor.next()
            live: list[tuple[str, float]] = []
            last = None
            for _ in range(batch):
                if not found:
                    break
                last = bytes(cursor.key())
                record = cursor.value()
                expires_ms = records.deadline(record)
                if (
                    expires_ms is not None
                    and expires_ms > now_ms
                    and records.fields(record) is not None
                ):
                    if (session_key := _session_key(last)) is not None:
                        live.append((session_key, expires_ms / 1000))
                    elif stray is None:
                        stray = last
                        _log_stray_key(last)
                found = cursor.next()
            return live, last

        while True:
            live, after = _transaction(opened, page, write=False)
            yield from live
            if after is None:
                return

    @classmethod
    def _user_entries(cls, user: str) -> list[tuple[str, str, bytes]]:
        """Read in one transaction: each entry's session is checked live, as ``_read()``
        would serve it, and still linked to that entry."""
        opened = environment()
        prefix = _user_prefix(user)
        now_ms = _now_ms()

        def read(txn: Any) -> list[tuple[str, str, bytes]]:
            found = []
            cursor = txn.cursor(db=opened.users)
            listed = cursor.set_range(prefix)
            while listed:
                entry = bytes(cursor.key())
                if not entry.startswith(prefix):
                    break
                value = bytes(cursor.value())
                key = value[1 : 1 + value[0]] if value else b""
                record = txn.get(key, db=opened.sessions) if key else None
                expires_ms = records.deadline(record)
                if (
                    expires_ms is not None
                    and expires_ms > now_ms
                    and txn.get(key, db=opened.owners) == entry
                    and (session_key := _session_key(key)) is not None
                ):
                    handle = entry[len(prefix) :].decode("ascii", "replace")
                    found.append((handle, session_key, value[1 + value[0] :]))
                listed = cursor.next()
            return found

        return _transaction(opened, read, write=False)

    # -- store-wide values: one named database per space ---------------------------------

    @classmethod
    def read_values(cls, space: str) -> dict[str, bytes]:
        opened = environment()
        db = _space(opened, space)

        def read(txn: Any) -> dict[str, bytes]:
            return {
                bytes(name).decode("utf-8", "replace"): bytes(value)
                for name, value in txn.cursor(db=db)
            }

        return _transaction(opened, read, write=False)

    @classmethod
    def read_value(cls, space: str, name: str) -> bytes | None:
        opened = environment()
        db = _space(opened, space)

        def read(txn: Any) -> bytes | None:
            value = txn.get(name.encode(), db=db)
            return None if value is None else bytes(value)

        return _transaction(opened, read, write=False)

    @classmethod
    def put_value(cls, space: str, name: str, value: bytes) -> None:
        opened = environment()
        db = _space(opened, space)
        _transaction(opened, lambda txn: txn.put(name.encode(), value, db=db), write=True)

    @classmethod
    def add_value(cls, space: str, name: str, value: bytes) -> bytes:
        """One write transaction, which LMDB serialises across processes: the first wins."""
        opened = environment()
        db = _space(opened, space)
        key = name.encode()

        def add(txn: Any) -> bytes:
            txn.put(key, value, db=db, overwrite=False)
            return bytes(txn.get(key, db=db))

        return _transaction(opened, add, write=True)

    @classmethod
    def remove_values(cls, space: str, names: Iterable[str]) -> None:
        opened = environment()
        db = _space(opened, space)
        keys = [name.encode() for name in names]

        def remove(txn: Any) -> None:
            for key in keys:
                txn.delete(key, db=db)

        _transaction(opened, remove, write=True, reserve=True)  # a clean-up: as a delete

    @classmethod
    def store_figures(cls, sample: int = 1000) -> dict[str, Any]:
        """What the store knows of itself, cheaply at any size.

        Counts and sizes come from LMDB's own statistics. Fields per session come from
        ``sample`` records read from a random point; expired records not yet swept are
        those the expiry index names in the buckets that have begun, up to a limit.
        """
        opened = environment()
        now_ms = _now_ms()
        limit = 100_000

        def read(txn: Any) -> dict[str, Any]:
            stat = txn.stat(opened.sessions)
            pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            # The records named by the entries of the buckets that have begun.
            expired = due = 0
            cursor = txn.cursor(db=opened.expiry)
            found = cursor.first()
            while found and due < limit:
                index_key = bytes(cursor.key())
                if int.from_bytes(index_key[:8], "big") > records.index_bucket(now_ms):
                    break
                due += 1
                expires_ms = records.deadline(txn.get(index_key[8:], db=opened.sessions))
                expired += expires_ms is not None and expires_ms <= now_ms
                found = cursor.next()
            # Consecutive records from a random key on (keys are random), wrapping round.
            sampled: list[int] = []
            stray = None
            cursor = txn.cursor(db=opened.sessions)
            found = cursor.set_range(os.urandom(4).hex().encode())
            for _ in range(min(sample, stat["entries"])):
                if not found and not cursor.first():
                    break
                if _session_key(key := bytes(cursor.key())) is None:
                    stray = stray or key
                elif (fields := records.fields(cursor.value())) is not None:
                    sampled.append(len(fields))
                found = cursor.next()
            if stray is not None:
                _log_stray_key(stray)
            info, env_stat = opened.env.info(), opened.env.stat()
            return {
                "sessions": stat["entries"],
                # Exact unless the count of expired records was capped (then at most).
                "live_sessions": stat["entries"] - expired,
                "session_bytes": pages * stat["psize"],
                "expired_not_swept": expired,
                "expired_not_swept_capped": due >= limit,
                "fields_per_session": sum(sampled) / len(sampled) if sampled else 0.0,
                "sampled_sessions": len(sampled),
                "map_size": info["map_size"],
                "map_used": (info["last_pgno"] + 1) * env_stat["psize"],
                "readers_used": info["num_readers"],
                "readers_max": info["max_readers"],
            }

        # The environment's own figures too are read inside the transaction: they read
        # the map, which a resize in another thread may be replacing (see _alone()).
        return _transaction(opened, read, write=False)
