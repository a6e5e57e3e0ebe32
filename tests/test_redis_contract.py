"""The session and store contracts, Django's own session tests and the middleware flows,
on Redis; and how the store contract reaches Redis's raw data (also used by
``test_redis_store.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
)

REDIS = {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"}
MARKER = b"\xff"  # docs/redis.md: the field that keeps a session in existence

# -- Redis's raw data ------------------------------------------------------------------------

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
CORRUPTIONS: dict[str, Callable[[redis.Redis, bytes], object]] = {
    **{
        f"deadline {kind}": lambda raw, name, deadline=deadline: raw.hset(name, MARKER, deadline)
        for kind, deadline in DEADLINES.items()
    },
    "not a hash": lambda raw, name: raw.pipeline().delete(name).set(name, b"x").execute(),
}


def hash_name(session_key: str, prefix: str) -> bytes:
    return (prefix + session_key).encode()


def plant_strings(raw: redis.Redis, prefix: str, count: int) -> None:
    for n in range(count):
        raw.set(hash_name(f"{n}string{'0' * 24}", prefix), b"not a hash")


def plant_hashes_without_deadline(raw: redis.Redis, prefix: str, count: int) -> None:
    for n in range(count):
        raw.hset(hash_name(f"{n}nodeadline{'0' * 22}", prefix), b"a", b"no marker")
        bad_deadline = {b"a": b"1", MARKER: b"x"}
        raw.hset(hash_name(f"{n}baddeadline{'0' * 21}", prefix), mapping=bad_deadline)


def plant_all(raw: redis.Redis, prefix: str, count: int) -> None:
    plant_strings(raw, prefix, count)
    plant_hashes_without_deadline(raw, prefix, count)


STRAYS: dict[str, Callable[[redis.Redis, str, int], None]] = {
    "strings under session names": plant_strings,
    "hashes without a valid deadline": plant_hashes_without_deadline,
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
        for name in self.raw.hkeys(hash_name(session_key, self.prefix)):
            try:
                names.add(name.decode())
            except UnicodeDecodeError:
                names.add(name)
        return names - {MARKER}

    def check_consistent(self) -> None:
        for session_key in self.stored_keys():
            assert self.raw.pttl(hash_name(session_key, self.prefix)) > 0, session_key

    def reopen(self) -> None:
        connection().connection_pool.disconnect()

    def damage(self, session_key: str, kind: str) -> None:
        CORRUPTIONS[kind](self.raw, hash_name(session_key, self.prefix))

    def plant_bad_entries(self, session_key: str) -> tuple[set[str], int]:
        # Field names that are not UTF-8.
        name = hash_name(session_key, self.prefix)
        sealed = self.raw.hget(name, b"b")
        self.raw.hset(name, b"\x80 not utf-8", sealed)
        self.raw.hset(name, "café".encode("latin-1"), sealed)
        return {"a", "b", "c"}, 2

    def plant_strays(self, kind: str, count: int) -> None:
        STRAYS[kind](self.raw, self.prefix, count)
        # Under the prefix but no session's name: skipped without a line.
        self.raw.set(f"{self.prefix}not-a-session-id", b"x")


class TestStoreContract(StoreContract):
    store_type = RedisStore


@override_settings(**REDIS)
class TestContract(SessionContract, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestContractWithoutTimeZones(TestContract):
    pass


@override_settings(**REDIS)
class TestDjangoSessionTests(django_session_tests.SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestDjangoSessionTestsWithoutTimeZones(TestDjangoSessionTests):
    pass


@override_settings(**REDIS)
class TestMiddlewareFlows(MiddlewareFlows, SimpleTestCase):
    engine = "django_memopt.backends.redis"


@override_settings(USE_TZ=False)
class TestMiddlewareFlowsWithoutTimeZones(TestMiddlewareFlows):
    pass


class TestMiddlewareFlowsThroughTheGate(TestMiddlewareFlows):
    middleware = GATE_MIDDLEWARE
