"""A tampered field on the real stores: absent through every method, and ``login()`` works.

Each test stores a session through the engine, then rewrites one field's stored bytes in
the store itself, as someone who can write to the store could: on LMDB in the session's
record, on Redis in the session's string or hash (the suite's own redis-server, under a
key prefix of the test's own).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth import SESSION_KEY, login
from django.contrib.auth.models import User
from django.test import RequestFactory, override_settings

from django_memopt import records
from django_memopt.backends import lmdb as lmdb_backend
from django_memopt.backends import redis as redis_backend
from django_memopt.backends.base import SessionBase
from tests.test_redis_contract import overwrite_field

SECURITY_LOGGER = "django.security.SuspiciousSession"


@dataclass
class Engine:
    store: type[SessionBase]
    #: Replace the stored bytes of one field: (session key, field name, new bytes).
    overwrite: Callable[[str, str, bytes], None]


def overwrite_in_lmdb(session_key: str, name: str, stored: bytes) -> None:
    """Rewrite the session's record with ``stored`` for ``name`` in its last layer (the
    layer that wins), the deadline and the other fields as they were."""
    opened = lmdb_backend.environment()
    with opened.env.begin(write=True, db=opened.sessions) as txn:
        record = bytes(txn.get(session_key.encode()))
        header = record[: records.HEADER_SIZE]
        layers = msgpack.unpackb(record[records.HEADER_SIZE :])
        layers[-1][name] = stored
        txn.put(session_key.encode(), header + msgpack.packb(layers))


@pytest.fixture(params=["lmdb", "redis"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "lmdb":
        with override_settings(
            SESSION_ENGINE="django_memopt.backends.lmdb", MEMOPT_LMDB_PATH=str(tmp_path / "db")
        ):
            yield Engine(lmdb_backend.SessionStore, overwrite_in_lmdb)
        return
    prefix = f"memopt-test:{uuid.uuid4().hex}:"
    raw = redis.Redis(port=django_settings.REDIS_TEST_PORT, single_connection_client=True)

    def overwrite_in_redis(session_key: str, name: str, stored: bytes) -> None:
        overwrite_field(raw, (prefix + session_key).encode(), name, stored)

    try:
        with override_settings(
            SESSION_ENGINE="django_memopt.backends.redis",
            SESSION_CACHE_ALIAS="sessions",
            MEMOPT_REDIS_KEY_PREFIX=prefix,
        ):
            yield Engine(redis_backend.SessionStore, overwrite_in_redis)
    finally:
        for key in list(raw.scan_iter(match=f"{prefix}*")):
            raw.delete(key)
        raw.close()


def stored_session(engine: Engine, **fields: Any) -> str:
    session = engine.store()
    session.update(fields)
    session.save()
    assert session.session_key is not None
    return session.session_key


def stored_bytes(engine: Engine, session_key: str) -> dict[str, bytes]:
    stored = engine.store._read(session_key)
    assert stored is not None
    return stored.fields


def tamper(engine: Engine, session_key: str, name: str) -> bytes:
    """Flip one bit of the field's payload in the store; the bytes it now holds."""
    damaged = bytearray(stored_bytes(engine, session_key)[name])
    damaged[-1] ^= 0x01
    engine.overwrite(session_key, name, bytes(damaged))
    assert stored_bytes(engine, session_key)[name] == damaged
    return bytes(damaged)


def corruption_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == SECURITY_LOGGER]


BACKEND = "django.contrib.auth.backends.ModelBackend"
ASKED_FIRST: dict[str, Callable[[SessionBase], Any]] = {
    "in": lambda session: SESSION_KEY in session,
    "keys": lambda session: list(session.keys()),
    "len": lambda session: len(session.keys()),
    "items": lambda session: list(session.items()),
    "values": lambda session: list(session.values()),
    "get": lambda session: session.get(SESSION_KEY),
    "getitem": lambda session: session[SESSION_KEY],
    "pop": lambda session: session.pop(SESSION_KEY, None),
}


@pytest.mark.parametrize("first", ASKED_FIRST)
def test_a_tampered_field_is_absent_through_every_method(
    engine: Engine, first: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = stored_session(engine, _auth_user_id="1", _auth_user_backend=BACKEND, cart=[1, 2])
    damaged = tamper(engine, key, SESSION_KEY)
    session = engine.store(key)
    with caplog.at_level(logging.WARNING, logger=SECURITY_LOGGER):
        with contextlib.suppress(KeyError):
            ASKED_FIRST[first](session)
        assert SESSION_KEY not in session
        assert sorted(session.keys()) == ["_auth_user_backend", "cart"]
        assert len(session.keys()) == 2
        assert dict(session.items()) == {"_auth_user_backend": BACKEND, "cart": [1, 2]}
        assert session.get(SESSION_KEY) is None
        with pytest.raises(KeyError):
            session[SESSION_KEY]
    logs = corruption_logs(caplog)
    assert len(logs) == 1 and "Session data corrupted" in logs[0], logs

    # The other fields are saved as usual; the bad one stays in the store as it was.
    session["cart"] = [3]
    session.save()
    assert session.session_key == key
    assert stored_bytes(engine, key)[SESSION_KEY] == damaged
    reloaded = engine.store(key)
    assert dict(reloaded.items()) == {"_auth_user_backend": BACKEND, "cart": [3]}


@pytest.mark.django_db
def test_login_over_a_tampered_user_id(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    user = User.objects.create_user("alice", password="not-used-here")
    key = stored_session(engine, _auth_user_id=str(user.pk), theme="dark")
    tamper(engine, key, SESSION_KEY)
    request = RequestFactory().get("/")
    request.session = engine.store(key)
    with caplog.at_level(logging.WARNING, logger=SECURITY_LOGGER):
        login(request, user)  # asks "in", then reads the field: a KeyError if they disagree
    request.session.save()
    assert len(corruption_logs(caplog)) == 1

    # As for an anonymous session: a new key, the other data kept, the bad field left behind.
    new_key = request.session.session_key
    assert new_key is not None and new_key != key
    assert not engine.store().exists(key)
    logged_in = engine.store(new_key)
    assert logged_in[SESSION_KEY] == str(user.pk)
    assert logged_in["theme"] == "dark"
    assert SESSION_KEY in stored_bytes(engine, new_key)
