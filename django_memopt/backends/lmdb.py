"""``SESSION_ENGINE = "django_memopt.backends.lmdb"``: sessions in an embedded LMDB store.

Every worker process on the host opens the same environment (``MEMOPT_LMDB_PATH``); LMDB
serialises writers across processes and never blocks readers. Two named databases:

``sessions``
    session key -> record: ``FORMAT`` (1 byte), deadline in epoch milliseconds (8 bytes,
    big-endian), then a msgpack array of layers, oldest first, each a map of field name ->
    sealed field bytes (or nil: deleted by that layer). A load is one ``get`` that merges
    the layers without decoding any value. A save appends its delta as a new layer,
    copying the stored bytes as they are, so its cost does not grow with what it did not
    touch; past ``MAX_LAYERS`` the save merges them back into one.
``expiry``
    deadline rounded up to the minute (8 bytes, big-endian) + session key -> empty, so
    ``clear_expired`` reads only what has expired. Rounding means a session saved every
    few seconds moves its index entry once a minute, not on every save.

A save reads the record, merges the delta and writes it back inside one write
transaction, so concurrent writers keep each other's fields and a deleted session stays
deleted.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import lmdb
import msgpack
from django.core.signals import setting_changed
from django.dispatch import receiver

from django_memopt.conf import conf

from .base import (
    CreateError,
    Delta,
    SessionStoreError,
    SessionStoreFull,
    StoredSession,
    UpdateError,
    log_corrupt_record,
)
from .base import SessionBase as _SessionBase

__all__ = ["SessionStore", "close_environments", "environment"]

T = TypeVar("T")

RECORD_FORMAT: Final = 1
_HEADER: Final = struct.Struct(">BQ")
HEADER_SIZE: Final = _HEADER.size
# Expired sessions deleted per write transaction by clear_expired: short transactions
# keep the writer lock free for requests.
SWEEP_BATCH: Final = 500
INDEX_GRANULARITY_MS: Final = 60_000
# At most this many layers per record (a one-byte msgpack array header holds 15).
MAX_LAYERS: Final = 8
_FIXARRAY: Final = 0x90


@dataclass(frozen=True, slots=True)
class Environment:
    """An LMDB environment opened by this process, and its two databases."""

    env: Any  # lmdb.Environment
    sessions: Any
    expiry: Any
    stats: Any  # each process's counters, for manage.py memopt_stats
    path: str
    pid: int


_environments: dict[str, Environment] = {}
_open_lock: Final = threading.Lock()
# The environment of the current settings in this process: the hot path reads no setting.
_current: Environment | None = None
# Threads of this process inside one of our transactions (set.add/discard are atomic).
_in_transaction: Final[set[int]] = set()
# Environments inherited across fork() while a transaction was open: never closed.
_stranded: list[Environment] = []
FORK_WAIT_SECONDS: Final = 2.0


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
    global _current
    _current = None
    if _in_transaction:
        _stranded.extend(opened for opened in _environments.values() if opened.pid != os.getpid())
        _in_transaction.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _open(path: str) -> Environment:
    durable = conf.MEMOPT_LMDB_DURABILITY == "system"
    try:
        # Sessions are not encrypted and their IDs are credentials: owner only.
        os.makedirs(path, mode=0o700, exist_ok=True)
        env = lmdb.open(
            path,
            mode=0o600,
            map_size=conf.MEMOPT_LMDB_MAP_SIZE,
            max_readers=conf.MEMOPT_LMDB_MAX_READERS,
            max_dbs=3,
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
        stats = env.open_db(b"stats")
    except (OSError, lmdb.Error) as exc:
        raise SessionStoreError(
            f"Cannot open the LMDB session store at {path!r} (MEMOPT_LMDB_PATH): {exc}"
        ) from exc
    return Environment(env, sessions, expiry, stats, path, os.getpid())


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


def _transaction(opened: Environment, body: Callable[[Any], T], *, write: bool) -> T:
    """Run ``body`` in a transaction, adopting a map another process has grown."""
    thread = threading.get_ident()
    for _attempt in range(3):
        _in_transaction.add(thread)
        try:
            with opened.env.begin(write=write, buffers=True) as txn:
                return body(txn)
        except lmdb.MapResizedError:
            opened.env.set_mapsize(0)
        except lmdb.MapFullError as exc:
            raise SessionStoreFull(
                f"The LMDB session store at {opened.path!r} is full "
                f"({opened.env.info()['map_size']} bytes). Raise MEMOPT_LMDB_MAP_SIZE and "
                "restart; run clearsessions to drop expired sessions."
            ) from exc
        except lmdb.ReadersFullError as exc:
            raise SessionStoreError(
                f"The LMDB session store at {opened.path!r} has no free reader slot: more "
                "threads read at once than MEMOPT_LMDB_MAX_READERS "
                f"({opened.env.info()['max_readers']}) allows. Raise it and restart."
            ) from exc
        except lmdb.Error as exc:
            raise SessionStoreError(f"LMDB session store at {opened.path!r}: {exc}") from exc
        finally:
            _in_transaction.discard(thread)
    raise SessionStoreError(f"LMDB session store at {opened.path!r}: map size keeps changing")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _deadline(record: bytes | memoryview | None) -> int | None:
    """The record's deadline in epoch ms; ``None`` for no record or an unreadable one."""
    if record is None or len(record) < HEADER_SIZE:
        return None
    record_format, expires_ms = _HEADER.unpack_from(record)
    return expires_ms if record_format == RECORD_FORMAT else None


def _fields(record: bytes | memoryview) -> dict[str, bytes] | None:
    """The sealed fields of a record, its layers merged; ``None`` if it is unreadable."""
    try:
        layers = msgpack.unpackb(record[HEADER_SIZE:])
    except Exception:  # any msgpack error: the record is damaged
        return None
    if type(layers) is not list or not layers or type(layers[0]) is not dict:
        return None
    fields: dict[str, bytes] = layers[0]
    for layer in layers[1:]:
        if type(layer) is not dict:
            return None
        for name, stored in layer.items():
            if stored is None:
                fields.pop(name, None)
            else:
                fields[name] = stored
    return fields


def _record(expires_ms: int, fields: dict[str, bytes]) -> bytes:
    return _HEADER.pack(RECORD_FORMAT, expires_ms) + msgpack.packb([fields])


def _is_map_marker(byte: int) -> bool:
    return 0x80 <= byte <= 0x8F or byte in (0xDE, 0xDF)


def _with_layer(record: memoryview, expires_ms: int, delta: Delta) -> bytes | None:
    """``record`` with ``delta`` appended as a layer; ``None`` if its layers must merge.

    Only the container's first bytes are checked (an array of maps): a record damaged
    further in stays unreadable, as it already was.
    """
    if len(record) < HEADER_SIZE + 2 or not _is_map_marker(record[HEADER_SIZE + 1]):
        return None
    layers = record[HEADER_SIZE] - _FIXARRAY
    if not 1 <= layers < MAX_LAYERS:
        return None
    layer: dict[str, bytes | None] = dict.fromkeys(delta.deletes)
    layer.update(delta.sets)
    return b"".join(
        (
            _HEADER.pack(RECORD_FORMAT, expires_ms),
            bytes((_FIXARRAY + layers + 1,)),
            record[HEADER_SIZE + 1 :],
            msgpack.packb(layer),
        )
    )


def _index_bucket(expires_ms: int) -> int:
    """The deadline rounded up, so a bucket that has passed holds only expired sessions."""
    return -(-expires_ms // INDEX_GRANULARITY_MS) * INDEX_GRANULARITY_MS


def _index_key(expires_ms: int, key: bytes) -> bytes:
    return _index_bucket(expires_ms).to_bytes(8, "big") + key


def _reindex(opened: Environment, txn: Any, key: bytes, old_ms: int | None, new_ms: int) -> None:
    if old_ms is not None and _index_bucket(old_ms) == _index_bucket(new_ms):
        return
    if old_ms is not None:
        txn.delete(_index_key(old_ms, key), db=opened.expiry)
    txn.put(_index_key(new_ms, key), b"", db=opened.expiry)


class SessionStore(_SessionBase):
    """Sessions in the LMDB environment at ``MEMOPT_LMDB_PATH``."""

    # Reads and writes are memory copies under a process-shared lock, measured in
    # microseconds: a thread hop would cost more than the work.
    store_blocks = False

    @classmethod
    def _read(cls, session_key: str) -> StoredSession | None:
        def read(txn: Any) -> StoredSession | None:
            record = txn.get(session_key.encode(), db=opened.sessions)
            if record is None:
                return None
            expires_ms = _deadline(record)
            if expires_ms is not None and expires_ms <= _now_ms():
                return None
            fields = None if expires_ms is None else _fields(record)
            if fields is None:
                log_corrupt_record()
                return None
            return StoredSession(fields, expires_ms / 1000, len(record))  # type: ignore[operator]

        opened = environment()
        return _transaction(opened, read, write=False)

    @classmethod
    def _write(cls, session_key: str, delta: Delta, expires_at: float, *, create: bool) -> None:
        key = session_key.encode()
        new_ms = int(expires_at * 1000)

        def write(txn: Any) -> None:
            record = txn.get(key, db=opened.sessions)
            old_ms = _deadline(record)
            live = old_ms is not None and old_ms > _now_ms()
            if create and live and _fields(record) is not None:
                raise CreateError
            if not create and not live:
                raise UpdateError
            new = _record(new_ms, delta.sets) if delta.replace else None
            if new is None and (new := _with_layer(record, new_ms, delta)) is None:
                fields = _fields(record)
                if fields is None:  # damaged: it reads as absent, so it is not there to update
                    raise UpdateError
                fields.update(delta.sets)
                for name in delta.deletes:
                    fields.pop(name, None)
                new = _record(new_ms, fields)
            txn.put(key, new, db=opened.sessions)
            _reindex(opened, txn, key, old_ms, new_ms)

        opened = environment()
        _transaction(opened, write, write=True)

    @classmethod
    def _touch(cls, session_key: str, expires_at: float) -> None:
        key = session_key.encode()
        new_ms = int(expires_at * 1000)

        def touch(txn: Any) -> None:
            record = txn.get(key, db=opened.sessions)
            old_ms = _deadline(record)
            if old_ms is None or old_ms <= _now_ms():
                raise UpdateError
            body = bytes(record[HEADER_SIZE:])
            txn.put(key, _HEADER.pack(RECORD_FORMAT, new_ms) + body, db=opened.sessions)
            _reindex(opened, txn, key, old_ms, new_ms)

        opened = environment()
        _transaction(opened, touch, write=True)

    @classmethod
    def _remove(cls, session_key: str) -> None:
        key = session_key.encode()

        def remove(txn: Any) -> None:
            old_ms = _deadline(txn.get(key, db=opened.sessions))
            if txn.delete(key, db=opened.sessions) and old_ms is not None:
                txn.delete(_index_key(old_ms, key), db=opened.expiry)

        opened = environment()
        _transaction(opened, remove, write=True)

    @classmethod
    def _contains(cls, session_key: str) -> bool:
        def contains(txn: Any) -> bool:
            record = txn.get(session_key.encode(), db=opened.sessions)
            expires_ms = _deadline(record)
            # Exactly what _read() would serve; a damaged record is not a session.
            return (
                expires_ms is not None and expires_ms > _now_ms() and _fields(record) is not None
            )

        opened = environment()
        return _transaction(opened, contains, write=False)

    @classmethod
    def clear_expired(cls) -> None:
        """Delete expired sessions, walking the expiry index in short transactions."""
        opened = environment()
        now_ms = _now_ms()

        def sweep(txn: Any) -> bool:
            cursor = txn.cursor(db=opened.expiry)
            for _ in range(SWEEP_BATCH):
                if not cursor.first():
                    return True
                index_key = bytes(cursor.key())
                bucket = int.from_bytes(index_key[:8], "big")
                if bucket > now_ms:
                    return True
                key = index_key[8:]
                expires_ms = _deadline(txn.get(key, db=opened.sessions))
                # Only if the record is still in that bucket (else its entry is elsewhere).
                if expires_ms is not None and _index_bucket(expires_ms) == bucket:
                    txn.delete(key, db=opened.sessions)
                cursor.delete()
            return False

        while not _transaction(opened, sweep, write=True):
            pass

    @classmethod
    def iter_sessions(cls, batch: int = 1000) -> Iterator[tuple[str, float]]:
        """The live sessions' keys and deadlines, in key order.

        Read in batches of short transactions: none stays open while the caller works.
        """
        opened = environment()
        now_ms = _now_ms()
        after: bytes | None = None

        def page(txn: Any) -> tuple[list[tuple[str, float]], bytes | None]:
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
                expires_ms = _deadline(record)
                if expires_ms is not None and expires_ms > now_ms and _fields(record) is not None:
                    live.append((last.decode(), expires_ms / 1000))
                found = cursor.next()
            return live, last

        while True:
            live, after = _transaction(opened, page, write=False)
            yield from live
            if after is None:
                return

    # -- statistics ----------------------------------------------------------------------

    @classmethod
    def write_stats(cls, token: str, record: bytes) -> None:
        """Store one process's statistics record under ``token``, replacing its last one."""
        opened = environment()
        _transaction(
            opened, lambda txn: txn.put(token.encode(), record, db=opened.stats), write=True
        )

    @classmethod
    def read_stats(cls) -> dict[str, bytes]:
        """Every process's statistics record, by token."""
        opened = environment()

        def read(txn: Any) -> dict[str, bytes]:
            return {
                bytes(token).decode("utf-8", "replace"): bytes(record)
                for token, record in txn.cursor(db=opened.stats)
            }

        return _transaction(opened, read, write=False)

    @classmethod
    def remove_stats(cls, tokens: Iterable[str]) -> None:
        """Forget the statistics records of these processes (absent ones are ignored)."""
        opened = environment()
        keys = [token.encode() for token in tokens]

        def remove(txn: Any) -> None:
            for key in keys:
                txn.delete(key, db=opened.stats)

        _transaction(opened, remove, write=True)

    @classmethod
    def store_figures(cls, sample: int = 1000) -> dict[str, Any]:
        """What the store knows of itself, cheaply at any size.

        Counts and sizes come from LMDB's own statistics. Fields per session come from
        ``sample`` records read from a random point; expired records not yet swept are
        counted on the expiry index, up to a limit.
        """
        opened = environment()
        now_ms = _now_ms()
        limit = 100_000

        def read(txn: Any) -> dict[str, Any]:
            stat = txn.stat(opened.sessions)
            pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            expired = 0
            cursor = txn.cursor(db=opened.expiry)
            found = cursor.first()
            while found and expired < limit:
                if int.from_bytes(bytes(cursor.key())[:8], "big") >= _index_bucket(now_ms):
                    break
                expired += 1
                found = cursor.next()
            # Consecutive records from a random key on (keys are random), wrapping round.
            sampled: list[int] = []
            cursor = txn.cursor(db=opened.sessions)
            found = cursor.set_range(os.urandom(4).hex().encode())
            for _ in range(min(sample, stat["entries"])):
                if not found and not cursor.first():
                    break
                fields = _fields(cursor.value())
                if fields is not None:
                    sampled.append(len(fields))
                found = cursor.next()
            return {
                "sessions": stat["entries"],
                # Exact unless the count of expired records was capped (then at most).
                "live_sessions": stat["entries"] - expired,
                "session_bytes": pages * stat["psize"],
                "expired_not_swept": expired,
                "expired_not_swept_capped": expired >= limit,
                "fields_per_session": sum(sampled) / len(sampled) if sampled else 0.0,
                "sampled_sessions": len(sampled),
            }

        figures = _transaction(opened, read, write=False)
        info, env_stat = opened.env.info(), opened.env.stat()
        figures["map_size"] = info["map_size"]
        figures["map_used"] = (info["last_pgno"] + 1) * env_stat["psize"]
        figures["readers_used"] = info["num_readers"]
        figures["readers_max"] = info["max_readers"]
        return figures
