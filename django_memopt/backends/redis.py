"""``SESSION_ENGINE = "django_memopt.backends.redis"``: sessions in Redis, for many hosts.

The connection is django-redis's, for the cache named by ``SESSION_CACHE_ALIAS``, so
Redis is configured once, in ``CACHES`` (pooling, password, TLS, Sentinel), and is always
the primary, never a replica. Layout: one hash per session under
``MEMOPT_REDIS_KEY_PREFIX``; field = the session key's name (UTF-8), value = the sealed
field; the session's deadline is the key's expiry, and is also kept in the hash (field
``MARKER``) so that a load is one ``HGETALL``. A save is one ``EVALSHA`` of a script that
checks the session exists (or does not, for a create), applies the delta and sets the
expiry, atomically: a ``MULTI`` block could not make the write conditional.

Beside the sessions, under names no session key can take (no session key has a ``~``):
one hash without expiry per space of store-wide values, ``<prefix>~<space>`` (such as
``~stats``, each process's counters, and ``~meta``, values set once).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis import exceptions as redis_errors

from django_memopt.backends.base import (
    SESSION_KEY_RE,
    CreateError,
    Delta,
    SessionStoreError,
    SessionStoreFull,
    StoredSession,
    UpdateError,
    check_space,
    log_corrupt_record,
    security_logger,
)
from django_memopt.backends.base import SessionBase as _SessionBase
from django_memopt.conf import conf

__all__ = ["SessionStore", "SessionStoreUnavailable", "connection"]

T = TypeVar("T")

# Present in every session hash, holding the deadline (epoch ms): an emptied session still
# exists, and a load learns the deadline without a second command. No session key name
# encodes to it: the byte 0xFF never occurs in UTF-8.
MARKER: Final = b"\xff"
# A deadline in epoch milliseconds has at most this many digits (10**15 ms: the year 33658).
DEADLINE_DIGITS: Final = 15

# KEYS[1]: the session hash. ARGV: "c" (create) or "u" (update); "1" to drop every stored
# field first; the deadline in epoch ms; the number of fields to set; their names and
# values; then the names to delete. Returns 1, or 0 (create: the key is taken) or -1
# (update: the session is gone). A deadline in the past deletes the session.
WRITE_SCRIPT: Final = """
local live = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == 'c' then
  if live then return 0 end
elseif not live then
  return -1
end
if live and ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
local last_set = 4 + 2 * tonumber(ARGV[4])
for first = 5, last_set, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 999, last_set)))
end
for first = last_set + 1, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('HSET', KEYS[1], '\\255', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1]: the session hash; ARGV[1]: the new deadline in epoch ms. 1, or 0 if it is gone.
TOUCH_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], '\\255', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1]: a space's hash; ARGV: a name and a value. The value the name then holds.
ADD_VALUE_SCRIPT: Final = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""


class SessionStoreUnavailable(SessionStoreError):
    """Redis could not be reached, or did not answer in time."""


_client: Any = None


def connection() -> Any:
    """The redis-py client of the primary of the cache ``SESSION_CACHE_ALIAS``.

    Looked up once per process: redis-py clients are thread-safe and their connection
    pools reset themselves after a fork.
    """
    global _client
    if _client is None:
        from django_redis import get_redis_connection

        _client = get_redis_connection(settings.SESSION_CACHE_ALIAS, write=True)
    return _client


@receiver(setting_changed)
def _forget_client(*, setting: str, **kwargs: Any) -> None:
    global _client
    if setting in ("CACHES", "SESSION_CACHE_ALIAS"):
        _client = None


_SHAS: Final = {
    script: hashlib.sha1(script.encode()).hexdigest()
    for script in (WRITE_SCRIPT, TOUCH_SCRIPT, ADD_VALUE_SCRIPT)
}


def _execute(*command: Any) -> Any:
    """Send ``command`` on a pooled connection to the primary; Redis's reply, unconverted.

    The pool, the connection (password, TLS, Sentinel) and the retry policy are the
    client's, as configured in ``CACHES``. redis-py's per-command layer (reply callbacks,
    metrics) is skipped: it costs more than the rest of a load's Python work. So a hash
    arrives as a flat list of names and values (a dict under RESP3), ``SCAN`` as
    ``[cursor, keys]``.
    """
    pool = connection().connection_pool
    conn = pool.get_connection()
    try:
        return conn.retry.call_with_retry(
            lambda: _send(conn, command), lambda _error: conn.disconnect()
        )
    finally:
        pool.release(conn)


def _send(conn: Any, command: tuple[Any, ...]) -> Any:
    conn.send_command(*command)
    return conn.read_response()


def _run_script(script: str, key: bytes, *args: Any) -> Any:
    try:
        return _execute("EVALSHA", _SHAS[script], 1, key, *args)
    except redis_errors.NoScriptError:  # after SCRIPT FLUSH or a Redis restart: load it once more
        _execute("SCRIPT", "LOAD", script)
        return _execute("EVALSHA", _SHAS[script], 1, key, *args)


def _call(action: Callable[[], T]) -> T:
    """Run ``action``; Redis's own failures become ``SessionStoreError``."""
    try:
        return action()
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise SessionStoreUnavailable(
            f"The Redis session store (cache {settings.SESSION_CACHE_ALIAS!r}) is "
            f"unavailable: {exc}"
        ) from exc
    except redis_errors.OutOfMemoryError as exc:
        raise SessionStoreFull(
            f"The Redis session store (cache {settings.SESSION_CACHE_ALIAS!r}) is full: "
            f"{exc}. Raise Redis's maxmemory, or let it evict (volatile-ttl suits sessions)."
        ) from exc
    except redis_errors.RedisError as exc:
        raise SessionStoreError(
            f"The Redis session store (cache {settings.SESSION_CACHE_ALIAS!r}): {exc}"
        ) from exc


def _key(session_key: str) -> bytes:
    return (conf.MEMOPT_REDIS_KEY_PREFIX + session_key).encode()


def _deadline_ms(stored: Any) -> int | None:
    """The deadline a marker field holds; ``None`` if it holds none our writes could have
    stored (absent, not a hash, not a count of milliseconds: negative, NaN, huge, ...)."""
    if type(stored) is bytes and stored.isdigit() and len(stored) <= DEADLINE_DIGITS:
        return int(stored)
    return None


def _text_named(stored: dict[bytes, bytes]) -> dict[str, bytes]:
    """The fields whose name is UTF-8 text; the others are dropped and logged."""
    fields = {}
    for name, value in stored.items():
        try:
            fields[name.decode("utf-8", "surrogatepass")] = value
        except UnicodeDecodeError:
            security_logger.warning(
                "Session data corrupted: field %r (its name is not UTF-8)", name[:64]
            )
    return fields


def _none_if_no_hash(command: Callable[[], T]) -> Callable[[], T | None]:
    """``command`` on a key, answering ``None`` if the key holds another type than a hash
    (which is no session)."""

    def run() -> T | None:
        try:
            return command()
        except redis_errors.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return None
            raise

    return run


def _log_stray_key(key: bytes) -> None:
    security_logger.warning(
        "Session data corrupted: keys under session names that hold no session (not a "
        "hash, or no valid deadline; such as %r) are left out of this listing of sessions",
        key[:80],
    )


class SessionStore(_SessionBase):
    """Sessions in the Redis of the cache ``SESSION_CACHE_ALIAS``."""

    @classmethod
    def _read(cls, session_key: str) -> StoredSession | None:
        key = _key(session_key)
        reply = _call(_none_if_no_hash(lambda: _execute("HGETALL", key)))
        if not reply:  # no such key, or (None) one that is no hash
            if reply is None:
                log_corrupt_record()
            return None
        if not isinstance(reply, dict):  # RESP2: a flat list of names and values
            reply = dict(zip(reply[::2], reply[1::2], strict=True))
        stored: dict[bytes, bytes] = reply
        deadline_ms = _deadline_ms(stored.pop(MARKER, None))
        if deadline_ms is None:
            log_corrupt_record()
            return None
        try:
            fields = {
                name.decode("utf-8", "surrogatepass"): value for name, value in stored.items()
            }
        except UnicodeDecodeError:
            fields = _text_named(stored)
        size = sum(map(len, stored)) + sum(map(len, stored.values()))
        return StoredSession(fields, deadline_ms / 1000, size)

    @classmethod
    def _write(cls, session_key: str, delta: Delta, expires_at: float, *, create: bool) -> None:
        args: list[bytes | str | int] = [
            "c" if create else "u",
            "1" if delta.replace else "0",
            int(expires_at * 1000),
            len(delta.sets),
        ]
        for name, sealed in delta.sets.items():
            args += (name.encode("utf-8", "surrogatepass"), sealed)
        args += (name.encode("utf-8", "surrogatepass") for name in delta.deletes)
        outcome = _call(lambda: _run_script(WRITE_SCRIPT, _key(session_key), *args))
        if outcome == 0:
            raise CreateError
        if outcome == -1:
            raise UpdateError

    @classmethod
    def _touch(cls, session_key: str, expires_at: float) -> None:
        deadline_ms = int(expires_at * 1000)
        key = _key(session_key)
        if not _call(lambda: _run_script(TOUCH_SCRIPT, key, deadline_ms)):
            raise UpdateError

    @classmethod
    def _remove(cls, session_key: str) -> None:
        _call(lambda: _execute("DEL", _key(session_key)))

    @classmethod
    def _contains(cls, session_key: str) -> bool:
        # The marker, not EXISTS: as _read(), a hash without a valid deadline is no session.
        key = _key(session_key)
        deadline = _call(_none_if_no_hash(lambda: _execute("HGET", key, MARKER)))
        return _deadline_ms(deadline) is not None

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: Redis expires sessions itself."""

    @classmethod
    def store_figures(cls, sample: int = 1000) -> dict[str, Any]:
        """What Redis knows of the sessions (sampled: see :func:`_store_figures`)."""
        return _store_figures(sample)

    # -- store-wide values: one hash per space -------------------------------------------

    @classmethod
    def read_values(cls, space: str) -> dict[str, bytes]:
        key = _space_key(space)
        reply = _call(lambda: _execute("HGETALL", key))
        if not isinstance(reply, dict):  # RESP2: a flat list of names and values
            reply = dict(zip(reply[::2], reply[1::2], strict=True))
        return {name.decode("utf-8", "replace"): value for name, value in reply.items()}

    @classmethod
    def read_value(cls, space: str, name: str) -> bytes | None:
        key = _space_key(space)
        value: bytes | None = _call(lambda: _execute("HGET", key, name))
        return value

    @classmethod
    def put_value(cls, space: str, name: str, value: bytes) -> None:
        key = _space_key(space)
        _call(lambda: _execute("HSET", key, name, value))

    @classmethod
    def add_value(cls, space: str, name: str, value: bytes) -> bytes:
        """One script (``HSETNX``, then ``HGET``), which Redis runs alone: the first wins."""
        key = _space_key(space)
        stored: bytes = _call(lambda: _run_script(ADD_VALUE_SCRIPT, key, name, value))
        return stored

    @classmethod
    def remove_values(cls, space: str, names: Iterable[str]) -> None:
        key = _space_key(space)
        listed = list(names)
        if listed:
            _call(lambda: _execute("HDEL", key, *listed))

    @classmethod
    def iter_sessions(cls) -> Iterator[tuple[str, float]]:
        """The live sessions' keys and deadlines (``SCAN``: never blocks Redis).

        Keys under the prefix whose rest is no session key (another site's longer prefix,
        the hashes of store-wide values) are skipped; so is a session that expires
        between its listing and its reading, or a hash without a deadline. A key under a
        session's name that is no hash, or whose deadline is none, is skipped and logged
        (once per listing).
        """
        pattern = _glob_escape(conf.MEMOPT_REDIS_KEY_PREFIX) + "*"
        skip = len(conf.MEMOPT_REDIS_KEY_PREFIX.encode())

        def page(at: int) -> Callable[[], list[Any]]:
            return lambda: _execute("SCAN", at, "MATCH", pattern, "COUNT", 1000)

        def deadlines(keys: list[bytes]) -> Callable[[], list[Any]]:
            def read() -> list[Any]:
                with connection().pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hget(key, MARKER)
                    # A key that is no hash answers with an error, not the whole page.
                    return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

            return read

        logged = False
        cursor = 0
        while True:
            reply = _call(page(cursor))
            cursor = int(reply[0])
            listed = [
                (key, session_key)
                for key in reply[1]
                if SESSION_KEY_RE.match(session_key := key[skip:].decode("ascii", "replace"))
            ]
            if listed:
                found = _call(deadlines([key for key, _ in listed]))
                for (key, session_key), deadline in zip(listed, found, strict=True):
                    if (deadline_ms := _deadline_ms(deadline)) is not None:
                        yield session_key, deadline_ms / 1000
                    elif deadline is not None and not logged:  # None: expired since SCAN
                        _log_stray_key(key)
                        logged = True
            if not cursor:
                return


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _space_key(space: str) -> bytes:
    # "~" never occurs in a session key, so no session hash can take this name.
    check_space(space)
    return f"{conf.MEMOPT_REDIS_KEY_PREFIX}~{space}".encode()


def _store_figures(sample: int) -> dict[str, Any]:
    """Sessions, memory and encodings, from ``SCAN`` pages until ``sample`` sessions.

    The session count is exact when the scan finished, else estimated from the share of
    sessions among the keys scanned (``DBSIZE`` counts every key of the database).
    """
    prefix = conf.MEMOPT_REDIS_KEY_PREFIX.encode()
    found: list[bytes] = []
    scanned = 0
    cursor = 0
    while True:
        reply = _call(lambda at=cursor: _execute("SCAN", at, "COUNT", 1000))  # type: ignore[misc]
        cursor = int(reply[0])
        scanned += len(reply[1])
        found += [
            key
            for key in reply[1]
            if key.startswith(prefix)
            and SESSION_KEY_RE.match(key[len(prefix) :].decode("ascii", "replace"))
        ]
        if not cursor or len(found) >= sample:
            break
    keys = found[:sample]

    def details() -> list[Any]:
        with connection().pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key, samples=0)
                pipe.object("encoding", key)
                pipe.hlen(key)
            pipe.dbsize()
            pipe.info("memory")
            # A key that is no hash answers HLEN with an error, not the whole sample.
            replies: list[Any] = pipe.execute(raise_on_error=False)
        for reply in replies[-2:]:
            if isinstance(reply, Exception):
                raise reply
        return replies

    replies = _call(details)
    dbsize, memory = replies[-2], replies[-1]
    usage = [int(size) for size in replies[0:-2:3] if type(size) is int]
    encodings = Counter(
        (encoding.decode() if isinstance(encoding, bytes) else str(encoding))
        for encoding in replies[1:-2:3]
        if isinstance(encoding, (bytes, str))
    )
    # Less the marker; a key that is no hash answered with an error.
    lengths = [length - 1 for length in replies[2:-2:3] if type(length) is int and length]
    sessions = len(found) if not cursor else round(dbsize * len(found) / max(scanned, 1))
    per_session = sum(usage) / len(usage) if usage else 0.0
    return {
        "sessions": sessions,
        "live_sessions": sessions,  # Redis expires sessions itself: every one is live
        "sessions_estimated": bool(cursor),
        "memory_per_session": per_session,
        "session_bytes": round(per_session * sessions),
        "fields_per_session": sum(lengths) / len(lengths) if lengths else 0.0,
        "hash_encodings": dict(encodings),
        "sampled_sessions": len(keys),
        "used_memory": int(memory.get("used_memory", 0)),
        "maxmemory": int(memory.get("maxmemory", 0)),
    }
