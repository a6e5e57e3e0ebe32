"""The session and store contracts, Django's own session tests and the middleware flows,
on Redis; and how the store contract reaches Redis's raw data (also used by
``test_redis_store.py``)."""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import redis
import sessions_tests.tests as django_session_tests
from django.conf import settings as django_settings
from django.test import SimpleTestCase, override_settings

from django_memopt.backends.redis import SessionStore, connection
from tests.contract import (
    GATE_MIDDLEWARE,
    MiddlewareFlows,
    SessionContract,
    StoreContract,
    StoreUnderTest,
    UserSessionsContract,
)
from tests.redis_workers import DJANGO_OWN, redis_caches

REDIS = {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"}
# docs/redis.md: the hash field that holds a session's deadline, then ":" and its token
MARKER = b"\xff"
# docs/redis.md: a string's format (2), deadline and version token
HEADER = struct.Struct(">BQ8s")

# -- Redis's raw data ------------------------------------------------------------------------


def hash_name(session_key: str, prefix: str) -> bytes:
    return (prefix + session_key).encode()


def stored_session(raw: redis.Redis, name: bytes) -> tuple[str, dict[Any, Any], int]:
    """A stored session as the layout says (docs/redis.md): its form ("string" or "hash"),
    its entries (names and values as stored: bytes, or what the string's map holds) and
    its deadline in epoch ms."""
    kind = raw.type(name).decode()
    if kind == "string":
        value = raw.get(name)
        assert value is not None
        string_format, deadline, _ = HEADER.unpack_from(value)
        assert string_format == 2, value[:24]
        body = msgpack.unpackb(value[HEADER.size :], raw=True, strict_map_key=False)
        return kind, body, deadline
    assert kind == "hash", kind
    fields = raw.hgetall(name)
    return kind, fields, int(fields.pop(MARKER).partition(b":")[0])


def stored_fields(raw: redis.Redis, name: bytes) -> dict[bytes, bytes]:
    """The entries of a stored session, by name as stored (in UTF-8)."""
    return stored_session(raw, name)[1]


def write_format_1(
    raw: redis.Redis, name: bytes, fields: dict[bytes, bytes], deadline: int
) -> None:
    """Store a session as the previous release did: a hash of its sealed fields and the
    deadline field, the key expiring at the deadline (the commands of its save script)."""
    with raw.pipeline() as pipe:
        pipe.delete(name)
        pipe.hset(name, mapping={**fields, MARKER: str(deadline).encode()})
        pipe.pexpireat(name, deadline)
        pipe.execute()


def as_format_1(raw: redis.Redis, name: bytes) -> None:
    """The stored session rewritten in the previous release's layout, entries as they are."""
    _, fields, deadline = stored_session(raw, name)
    write_format_1(raw, name, fields, deadline)


def overwrite_field(raw: redis.Redis, name: bytes, field: str, stored: bytes) -> None:
    """Replace the stored bytes of one field of a stored session, in either form (as
    someone who can write to Redis could)."""
    if raw.type(name) == b"hash":
        assert raw.hset(name, field, stored) == 0  # replaced, not added
        return
    value = raw.get(name)
    assert value is not None
    entries = msgpack.unpackb(value[HEADER.size :])
    assert field in entries
    entries[field] = stored
    put_string(raw, name, value[: HEADER.size] + msgpack.packb(entries))


def put_string(raw: redis.Redis, name: bytes, value: bytes) -> None:
    """Store ``value`` as the session's string, keeping its expiry."""
    raw.set(name, value, keepttl=True)


def rewrite_string(raw: redis.Redis, name: bytes, change: Callable[[bytes], bytes]) -> None:
    value = raw.get(name)
    assert value is not None
    put_string(raw, name, change(value))


DEADLINES: dict[str, bytes] = {
    "soon": b"soon",
    "negative": b"-5",
    "nan": b"nan",
    "inf": b"inf",
    "1e400": b"1e400",
    "fraction": b"12.5",
    "space": b" 12",
    "empty": b"",
    "400 digits": b"9" * 400,
}
STRING_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "of another format": lambda value: b"\x07" + value[1:],
    "of format 1": lambda value: b"\x01" + value[1:],
    "with deadline 0": lambda value: value[:1] + bytes(8) + value[9:],
    "with a deadline past 10**15 ms": lambda value: value[:1] + b"\xff" * 8 + value[9:],
    "with a truncated header": lambda value: value[:5],
    "of one byte": lambda value: b"x",
    "with a garbage body": lambda value: value[: HEADER.size] + b"\xc1 not msgpack",
    "whose body is no map": lambda value: value[: HEADER.size] + b"\x93\x01\x02\x03",
    "with a truncated body": lambda value: value[:-3],
    "with trailing bytes": lambda value: value + b"\x00",
}


def _damage_deadline(raw: redis.Redis, name: bytes, deadline: bytes) -> None:
    as_format_1(raw, name)
    raw.hset(name, MARKER, deadline)


CORRUPTIONS: dict[str, Callable[[redis.Redis, bytes], object]] = {
    **{
        f"hash deadline {kind}": lambda raw, name, deadline=deadline: _damage_deadline(
            raw, name, deadline
        )
        for kind, deadline in DEADLINES.items()
    },
    **{
        f"string {kind}": lambda raw, name, change=change: rewrite_string(raw, name, change)
        for kind, change in STRING_DAMAGE.items()
    },
    "a list": lambda raw, name: raw.pipeline().delete(name).rpush(name, b"x").execute(),
}


def plant_strings(raw: redis.Redis, prefix: str, count: int) -> None:
    for n in range(count):
        raw.set(hash_name(f"{n}string{'0' * 24}", prefix), b"not a session")


def plant_hashes_without_deadline(raw: redis.Redis, prefix: str, count: int) -> None:
    for n in range(count):
        raw.hset(hash_name(f"{n}nodeadline{'0' * 22}", prefix), b"a", b"no marker")
        bad_deadline = {b"a": b"1", MARKER: b"x"}
        raw.hset(hash_name(f"{n}baddeadline{'0' * 21}", prefix), mapping=bad_deadline)


def plant_lists(raw: redis.Redis, prefix: str, count: int) -> None:
    for n in range(count):
        raw.rpush(hash_name(f"{n}list{'0' * 26}", prefix), b"not a session")


def plant_all(raw: redis.Redis, prefix: str, count: int) -> None:
    plant_strings(raw, prefix, count)
    plant_hashes_without_deadline(raw, prefix, count)
    plant_lists(raw, prefix, count)


STRAYS: dict[str, Callable[[redis.Redis, str, int], None]] = {
    "strings under session names": plant_strings,
    "hashes without a valid deadline": plant_hashes_without_deadline,
    "lists under session names": plant_lists,
    "all of them": plant_all,
}


class RedisStore(StoreUnderTest):
    """The suite's redis-server, under a key prefix of the test's own."""

    name = "redis"
    SessionStore = SessionStore
    corruptions = tuple(CORRUPTIONS)
    listing_logs_damage = True
    strays = tuple(STRAYS)

    def __init__(self, raw: redis.Redis, prefix: str) -> None:
        self.raw, self.prefix = raw, prefix
        self.setup_args = (django_settings.REDIS_TEST_PORT, prefix)

    @classmethod
    @contextmanager
    def isolated(cls, tmp_path: Path) -> Iterator[RedisStore]:
        prefix = f"memopt-test:{uuid.uuid4().hex}:"
        raw = redis.Redis(port=django_settings.REDIS_TEST_PORT, single_connection_client=True)
        try:
            with override_settings(**REDIS, MEMOPT_REDIS_KEY_PREFIX=prefix):
                assert int(connection().info("server")["tcp_port"]) == raw.connection.port
                yield cls(raw, prefix)
        finally:
            for key in list(raw.scan_iter(match=f"{prefix}*")):
                raw.delete(key)
            raw.close()

    def stored_keys(self) -> list[str]:
        # Less the hashes of store-wide values, <prefix>~<space>.
        rests = [key[len(self.prefix) :] for key in self.raw.keys(f"{self.prefix}*")]
        return sorted(rest.decode() for rest in rests if b"~" not in rest)

    def stored_names(self, session_key: str) -> set[str | bytes]:
        names: set[str | bytes] = set()
        for name in stored_fields(self.raw, hash_name(session_key, self.prefix)):
            try:
                names.add(name.decode())
            except UnicodeDecodeError:
                names.add(name)
        return names

    def check_consistent(self) -> None:
        # Every session expires at the deadline it holds.
        for session_key in self.stored_keys():
            name = hash_name(session_key, self.prefix)
            ttl_ms = self.raw.pttl(name)
            assert ttl_ms > 0, session_key
            deadline = stored_session(self.raw, name)[2]
            assert abs(deadline - (time.time() * 1000 + ttl_ms)) < 2000, session_key

    def reopen(self) -> None:
        connection().connection_pool.disconnect()

    def damage(self, session_key: str, kind: str) -> None:
        CORRUPTIONS[kind](self.raw, hash_name(session_key, self.prefix))

    def plant_bad_entries(self, session_key: str) -> tuple[set[str], int]:
        # In the string's map: names that are not UTF-8, a name that is no str at all, and
        # a value that is no bytes.
        name = hash_name(session_key, self.prefix)
        value = self.raw.get(name)
        assert value is not None
        entries = msgpack.unpackb(value[HEADER.size :])
        sealed = entries["b"]
        packer = msgpack.Packer(unicode_errors="surrogateescape")
        planted = {
            **entries,
            "\udc80 not utf-8": sealed,
            "café".encode("latin-1").decode("utf-8", "surrogateescape"): sealed,
            7: sealed,
            "n": 5,
        }
        put_string(self.raw, name, value[: HEADER.size] + packer.pack(planted))
        return {"a", "b", "c"}, 4

    def index_size(self, user: str) -> int:
        name = user.encode("utf-8", "surrogatepass")
        prefix = self.prefix.encode()
        return int(self.raw.hlen(prefix + b"~user:" + name)) + int(
            self.raw.zcard(prefix + b"~user-until:" + name)
        )

    def tamper_index(self, user: str) -> None:
        name = self.prefix.encode() + b"~user:" + user.encode("utf-8", "surrogatepass")
        for handle, value in self.raw.hgetall(name).items():
            self.raw.hset(name, handle, value[:-1] + bytes((value[-1] ^ 1,)))

    def plant_strays(self, kind: str, count: int) -> None:
        STRAYS[kind](self.raw, self.prefix, count)
        # Under the prefix but no session's name: skipped without a line.
        self.raw.set(f"{self.prefix}not-a-session-id", b"x")


class TestStoreContract(StoreContract):
    store_type = RedisStore


class TestUserSessions(UserSessionsContract):
    store_type = RedisStore


@override_settings(**REDIS)
class TestContract(SessionContract, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestContractWithoutTimeZones(TestContract):
    pass


@override_settings(MEMOPT_USER_SESSIONS=True)
class TestContractWithUserSessions(TestContract):
    """The contract holds with the index of users' sessions kept."""


@override_settings(**REDIS)
class TestDjangoSessionTests(django_session_tests.SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestDjangoSessionTestsWithoutTimeZones(TestDjangoSessionTests):
    pass


@override_settings(MEMOPT_USER_SESSIONS=True)
class TestDjangoSessionTestsWithUserSessions(TestDjangoSessionTests):
    pass


@override_settings(**REDIS)
class TestMiddlewareFlows(MiddlewareFlows, SimpleTestCase):
    engine = "django_memopt.backends.redis"


@override_settings(USE_TZ=False)
class TestMiddlewareFlowsWithoutTimeZones(TestMiddlewareFlows):
    pass


class TestMiddlewareFlowsThroughTheGate(TestMiddlewareFlows):
    middleware = GATE_MIDDLEWARE


# -- on Django's own RedisCache as the connection source ---------------------------------

#: The suite's redis-server through Django's own Redis cache backend, not django-redis.
DJANGO_REDIS_CACHE = redis_caches(django_settings.REDIS_TEST_PORT, DJANGO_OWN)


class DjangoCacheRedisStore(RedisStore):
    """The same, its connection taken from ``django.core.cache.backends.redis.RedisCache``
    (in the worker processes too)."""

    def __init__(self, raw: redis.Redis, prefix: str) -> None:
        super().__init__(raw, prefix)
        self.setup_args = (*self.setup_args, DJANGO_OWN)

    @classmethod
    @contextmanager
    def isolated(cls, tmp_path: Path) -> Iterator[RedisStore]:
        with override_settings(CACHES=DJANGO_REDIS_CACHE), super().isolated(tmp_path) as store:
            # The client is Django's cache's own, not one django-redis made.
            from django.core.cache import caches

            pool = caches["sessions"]._cache._get_connection_pool(True)
            assert connection().connection_pool is pool
            yield store


class TestStoreContractOnDjangoCache(StoreContract):
    store_type = DjangoCacheRedisStore


class TestUserSessionsOnDjangoCache(UserSessionsContract):
    store_type = DjangoCacheRedisStore


@override_settings(CACHES=DJANGO_REDIS_CACHE)
class TestContractOnDjangoCache(TestContract):
    pass


@override_settings(CACHES=DJANGO_REDIS_CACHE)
class TestDjangoSessionTestsOnDjangoCache(TestDjangoSessionTests):
    pass


@override_settings(CACHES=DJANGO_REDIS_CACHE)
class TestMiddlewareFlowsOnDjangoCache(TestMiddlewareFlows):
    pass
