"""The session and store contracts, Django's own session tests and the middleware flows,
on LMDB; and how the store contract reaches LMDB's raw data (also used by
``test_lmdb_store.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import sessions_tests.tests as django_session_tests
import zstandard
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, SimpleTestCase, override_settings

from django_memopt import compression, records
from django_memopt.backends.lmdb import SessionStore, close_environments, environment
from django_memopt.middleware import SessionMiddleware as GateSessionMiddleware
from tests.contract import (
    GATE_MIDDLEWARE,
    MiddlewareFlows,
    SessionContract,
    StoreContract,
    StoreUnderTest,
    UserSessionsContract,
)

# -- LMDB's raw data -------------------------------------------------------------------------


def raw_records() -> dict[str, bytes]:
    """Every record in the ``sessions`` database, as stored."""
    opened = environment()
    with opened.env.begin(db=opened.sessions) as txn:
        return {bytes(key).decode(): bytes(value) for key, value in txn.cursor()}


def index_entries() -> list[tuple[int, str]]:
    """Every entry of the ``expiry`` index: (due time in epoch ms, session key), in order."""
    opened = environment()
    with opened.env.begin(db=opened.expiry) as txn:
        return [
            (int.from_bytes(key[:8], "big"), bytes(key[8:]).decode()) for key, _ in txn.cursor()
        ]


def put_raw(session_key: str | bytes, record: bytes) -> None:
    opened = environment()
    key = session_key.encode() if isinstance(session_key, str) else session_key
    with opened.env.begin(write=True, db=opened.sessions) as txn:
        txn.put(key, record)


def maps_of(session_key: str) -> list[dict[Any, Any]]:
    """The maps of a stored record of the current format, as msgpack gives them back: its
    block's fields, its first layer, then the layers added since."""
    stored = raw_records()[session_key]
    _appended, names, block, *layers = msgpack.unpackb(stored[records.HEADER_SIZE :])
    values = msgpack.unpackb(compression.decompress(block[0], block[1:])) if block else []
    return [dict(zip(names, values, strict=True)), *layers]


def put_maps(session_key: str, block: dict[Any, Any], *layers: dict[Any, Any]) -> None:
    """Store a record of the current format holding ``block`` (uncompressed) and ``layers``,
    under the session's current deadline."""
    header = raw_records()[session_key][: records.HEADER_SIZE]
    added = sum(len(msgpack.packb(layer)) for layer in layers[1:])
    values = msgpack.packb(list(block.values()))
    packed_block = bytes((compression.PLAIN,)) + values if block else b""
    items = [added, list(block), packed_block, *layers]
    put_raw(session_key, header + msgpack.packb(items))


def deadline_ms(record: bytes) -> int:
    record_format, deadline = records.HEADER.unpack_from(record)
    assert record_format == records.FORMAT
    return int(deadline)


def with_block(record: bytes, block: bytes) -> bytes:
    """``record`` (of the current format) with ``block`` in place of its block."""
    items = msgpack.unpackb(record[HEADER_SIZE:])
    items[2] = block
    return record[:HEADER_SIZE] + msgpack.packb(items)


def assert_indexed(session_key: str, deadline: int, entries: list[tuple[int, str]]) -> None:
    """The session has one index entry, due no earlier than its deadline (else the sweep
    would pass it by while it is live) and not long after it."""
    due = [at for at, key in entries if key == session_key]
    assert len(due) == 1, f"{session_key}: index entries at {due}"
    assert deadline <= due[0] <= deadline + 3_600_000, (session_key, deadline, due)


def assert_index_matches_records() -> None:
    """One index entry per record, due at the record's deadline, and no other entry."""
    stored = {key: deadline_ms(record) for key, record in raw_records().items()}
    entries = index_entries()
    assert sorted(key for _, key in entries) == sorted(stored)
    for key, deadline in stored.items():
        assert_indexed(key, deadline, entries)


HEADER_SIZE = records.HEADER_SIZE
# A zstd frame (without its magic number) that declares 100 MiB of zeros.
_BOMB = zstandard.ZstdCompressor().compress(bytes(100 * 1024 * 1024))[4:]
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "garbage body": lambda record: record[:HEADER_SIZE] + b"\xc1 not msgpack",
    "body not a map": lambda record: record[:HEADER_SIZE] + b"\x93\x01\x02\x03",
    "truncated body": lambda record: record[:-3],
    "garbage header": lambda record: b"\xde" * HEADER_SIZE + record[HEADER_SIZE:],
    "truncated header": lambda record: record[:5],
    # A block that names no field is damage to the record (a block's own damage is to
    # its fields alone: test_lmdb_store).
    "a block of an unknown method naming no field": lambda record: with_block(record, b"\x07\x80"),
    "a decompression bomb naming no field": lambda record: with_block(
        record, bytes((compression.ZSTD,)) + _BOMB
    ),
}
# Damage a save does not look at (it checks the container's first bytes only): the
# session stays absent all the same, as the next read finds.
CORRUPTIONS_PAST_THE_FIRST_BYTES = (
    "truncated body",
    "a block of an unknown method naming no field",
    "a decompression bomb naming no field",
)
# Keys that are no session ID, under which a listing finds records.
STRAY_KEYS: dict[str, bytes] = {
    "not UTF-8": b"\xff\xfe not utf-8",
    "a path": b"../../etc/passwd",
    "upper case": b"A" * 32,
    "not ASCII": "ключ".encode() * 8,
}


class LmdbStore(StoreUnderTest):
    name = "lmdb"
    SessionStore = SessionStore
    corruptions = tuple(CORRUPTIONS)
    # A damaged record is skipped where a listing reads it, without a line: only its load
    # is logged.
    listing_logs_damage = False
    strays = tuple(STRAY_KEYS)

    def __init__(self, path: str) -> None:
        self.setup_args = (path,)

    @classmethod
    @contextmanager
    def isolated(cls, tmp_path: Path) -> Iterator[LmdbStore]:
        path = str(tmp_path / "store")
        with override_settings(
            SESSION_ENGINE="django_memopt.backends.lmdb", MEMOPT_LMDB_PATH=path
        ):
            yield cls(path)

    def stored_keys(self) -> list[str]:
        return sorted(raw_records())

    def stored_names(self, session_key: str) -> set[str | bytes]:
        return {name for layer in maps_of(session_key) for name in layer}

    def check_consistent(self) -> None:
        assert_index_matches_records()

    def reopen(self) -> None:
        close_environments()

    def damage(self, session_key: str, kind: str) -> None:
        put_raw(session_key, CORRUPTIONS[kind](raw_records()[session_key]))

    def plant_bad_entries(self, session_key: str) -> tuple[set[str], int]:
        # A name that is bytes, values that are no bytes, and such entries in a later layer.
        block, first = maps_of(session_key)
        sealed = block | first
        put_maps(
            session_key,
            {},
            {"a": sealed["a"], b"b": sealed["b"], "c": sealed["c"], "n": 5, "m": ["x"]},
            {b"late": sealed["b"], "o": {"no": "bytes"}, "c": sealed["c"], "gone": None},
        )
        return {"a", "c"}, 5  # b"b", "n", "m", b"late", "o": each one line

    def index_size(self, user: str) -> int:
        opened = environment()
        name = user.encode("utf-8", "surrogatepass")
        prefix = len(name).to_bytes(2, "big") + name
        with opened.env.begin() as txn:
            entries = {
                bytes(key) for key, _ in txn.cursor(db=opened.users) if key.startswith(prefix)
            }
            owners = [bytes(entry) for _, entry in txn.cursor(db=opened.owners)]
        return len(entries) + sum(entry in entries for entry in owners)

    def tamper_index(self, user: str) -> None:
        opened = environment()
        name = user.encode("utf-8", "surrogatepass")
        prefix = len(name).to_bytes(2, "big") + name
        with opened.env.begin(write=True) as txn:
            found = [
                (bytes(key), bytes(value))
                for key, value in txn.cursor(db=opened.users)
                if key.startswith(prefix)
            ]
            for key, value in found:
                txn.put(key, value[:-1] + bytes((value[-1] ^ 1,)), db=opened.users)

    def plant_strays(self, kind: str, count: int) -> None:
        record = next(iter(raw_records().values()))
        for n in range(count):
            put_raw(STRAY_KEYS[kind] + str(n).encode(), record)


class TestStoreContract(StoreContract):
    store_type = LmdbStore


class TestUserSessions(UserSessionsContract):
    store_type = LmdbStore


class TestContract(SessionContract, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestContractWithoutTimeZones(TestContract):
    pass


@override_settings(MEMOPT_USER_SESSIONS=True)
class TestContractWithUserSessions(TestContract):
    """The contract holds with the index of users' sessions kept."""


class TestDjangoSessionTests(django_session_tests.SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestDjangoSessionTestsWithoutTimeZones(TestDjangoSessionTests):
    pass


@override_settings(MEMOPT_USER_SESSIONS=True)
class TestDjangoSessionTestsWithUserSessions(TestDjangoSessionTests):
    pass


@override_settings(SESSION_ENGINE="django_memopt.backends.lmdb")
class TestDjangoMiddlewareTests(django_session_tests.SessionMiddlewareTests):
    def test_empty_session_saved(self) -> None:
        # Django's version reads the row through the db engine's model; same flow here.
        def set_session(request: HttpRequest) -> HttpResponse:
            request.session["foo"] = "bar"
            return HttpResponse("Session test")

        request = RequestFactory().get("/")
        middleware = django_session_tests.SessionMiddleware(set_session)
        middleware(request)
        del request.session["foo"]
        response = middleware.process_response(request, HttpResponse("Session test"))
        stored = SessionStore._read(request.session.session_key)
        assert stored is not None and stored.fields == {}
        assert f"Set-Cookie: sessionid={request.session.session_key}" in str(response.cookies)
        assert response.headers["Vary"] == "Cookie"


@override_settings(MEMOPT_FILTER=True)
class TestDjangoMiddlewareTestsThroughTheGate(TestDjangoMiddlewareTests):
    """Django's middleware tests, with django-memopt's middleware in place of Django's."""

    def setUp(self) -> None:
        super().setUp()
        self.enterContext(
            mock.patch.object(django_session_tests, "SessionMiddleware", GateSessionMiddleware)
        )


class TestMiddlewareFlows(MiddlewareFlows, SimpleTestCase):
    engine = "django_memopt.backends.lmdb"


@override_settings(USE_TZ=False)
class TestMiddlewareFlowsWithoutTimeZones(TestMiddlewareFlows):
    pass


@override_settings(MEMOPT_FILTER=True)
class TestMiddlewareFlowsThroughTheGate(TestMiddlewareFlows):
    middleware = GATE_MIDDLEWARE
