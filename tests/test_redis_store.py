"""What only the Redis store does, under stress and failure, on real redis-servers.

The layout of a session in Redis, what a load and a save actually send (as Redis itself
reports it: ``MONITOR``, which also shows the commands a Lua script runs, and the read
events of ``INFO stats``), ``cycle_key`` without ``RENAME``, ``SCRIPT FLUSH``, Redis
stopped, restarted, hung and full, Sentinel, replicas, RESP3, memory encodings, and expiry
as a TTL. What every store does (concurrent writers, a logout racing them, damaged data,
listings, store-wide values) is the store contract, run on Redis by
``test_redis_contract.py``.

Tests that stop, restart, flush or reconfigure Redis run on a redis-server of their own
(``dedicated_redis``), on its own free port, with a cache alias of its own: the suite's
shared server is never disturbed.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import msgpack
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.test import Client, override_settings
from django_redis.pool import ConnectionFactory

from django_memopt.backends import redis as redis_backend
from django_memopt.backends.base import CreateError, SessionStoreError, UpdateError, field_codec
from django_memopt.backends.redis import (
    STRING_LIMIT,
    SessionStore,
    SessionStoreUnavailable,
    connection,
)
from django_memopt.codec import HEADER_SIZE
from django_memopt.fields import Delta
from tests import contract
from tests.redis_server import RedisServer, free_port, sentinel_for
from tests.test_redis_contract import (
    HEADER,
    MARKER,
    RedisStore,
    stored_fields,
    stored_session,
)

# Generous bounds for a loaded 2-core machine; a healthy run needs a fraction of each.
ENGINE = "django_memopt.backends.redis"
DEFAULT_PREFIX = "memopt:session:"  # docs/settings.md: MEMOPT_REDIS_KEY_PREFIX
DEDICATED = "dedicated"  # the cache alias of a test's own redis-server
# An operation on an unreachable or hung Redis fails within the cache's socket timeouts
# (1 s here), never after redis-py's retries and backoffs.
FAIL_FAST = 3.0


# -- what a redis-server received ------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One line of ``MONITOR``: who sent it (``"lua"`` for a script) and its arguments."""

    client: str
    args: list[bytes]

    @property
    def name(self) -> str:
        return self.args[0].decode().upper()

    @property
    def by_script(self) -> bool:
        return self.client == "lua"


_ESCAPES = {ord(k): v for k, v in {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a"}.items()}
_ESCAPES |= {ord("b"): b"\b", ord("\\"): b"\\", ord('"'): b'"'}


def parse_monitor_line(line: bytes) -> Command:
    """``+<time> [<db> <client>] "arg" ...``, arguments escaped as by ``sdscatrepr``."""
    header, _, text = line.partition(b"] ")
    client = header.rsplit(b" ", 1)[1].decode()
    args: list[bytes] = []
    at = 0
    while at < len(text):
        assert text[at : at + 1] == b'"', line
        at += 1
        arg = bytearray()
        while text[at : at + 1] != b'"':
            if text[at : at + 1] == b"\\":
                escape = text[at + 1]
                if escape == ord("x"):
                    arg.append(int(text[at + 2 : at + 4], 16))
                    at += 4
                else:
                    arg += _ESCAPES[escape]
                    at += 2
            else:
                arg.append(text[at])
                at += 1
        args.append(bytes(arg))
        at += 2  # the closing quote and the space
    return Command(client, args)


@dataclass
class Recording:
    """What Redis received while a ``CommandLog.record()`` block ran."""

    commands: list[Command] = field(default_factory=list)
    round_trips: int = -1  # read events Redis processed for the block's clients

    @property
    def sent(self) -> list[Command]:
        """The commands the clients sent (not those a script ran)."""
        return [command for command in self.commands if not command.by_script]

    @property
    def scripted(self) -> list[Command]:
        return [command for command in self.commands if command.by_script]

    def names(self) -> list[str]:
        return [command.name for command in self.commands]


class CommandLog:
    """``MONITOR`` on a raw connection to a redis-server, read in fenced windows.

    ``raw`` is a client of its own (one connection), whose commands are left out of every
    recording: an ``ECHO`` of a fresh token marks the end of a window, and since Redis
    feeds monitors in execution order, every command before it has been read once the
    token shows up.
    """

    def __init__(self, port: int) -> None:
        self.raw = redis.Redis(port=port, single_connection_client=True)
        self.own = self.raw.client_info()["addr"]
        self.monitor = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.pending = b""
        self.fences = 0
        self.monitor.sendall(b"MONITOR\r\n")
        assert self._line() == b"+OK"

    def close(self) -> None:
        self.monitor.close()
        self.raw.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.monitor.recv(1 << 16)  # bounded by the socket's timeout
            if not chunk:
                raise RuntimeError("the MONITOR connection was closed")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line

    def _until_fence(self) -> list[Command]:
        self.fences += 1
        token = f"memopt-fence-{self.fences}".encode()
        self.raw.echo(token)
        commands = []
        while True:
            command = parse_monitor_line(self._line())
            if command.client != self.own:
                commands.append(command)
            elif command.args == [b"ECHO", token]:
                return commands

    def _reads(self) -> int:
        return int(self.raw.info("stats")["total_reads_processed"])

    @contextmanager
    def record(self) -> Iterator[Recording]:
        self._until_fence()  # whatever came before is not part of this recording
        recording = Recording()
        before = self._reads()
        yield recording
        # Each INFO is one read event too: the second one is counted, the first not.
        recording.round_trips = self._reads() - before - 1
        recording.commands = self._until_fence()


# -- servers and settings --------------------------------------------------------------------


@dataclass
class Dedicated:
    """A test's own redis-server, the current ``SESSION_CACHE_ALIAS``."""

    server: RedisServer
    raw: redis.Redis
    log: CommandLog | None

    def restart(self) -> None:
        self.server.stop()
        self.server.start()


def caches_with(alias: str, cache: dict[str, Any]) -> dict[str, Any]:
    """The suite's ``CACHES``, plus ``alias``."""
    return {**django_settings.CACHES, alias: cache}


def redis_cache(url: str) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
    }


def tcp_port() -> int:
    """The port of the redis-server the engine's client talks to, as that server says."""
    return int(connection().info("server")["tcp_port"])


@contextmanager
def dedicated_redis(*options: str, monitor: bool = True) -> Iterator[Dedicated]:
    """A redis-server of this test's own, with the engine pointed at it (default prefix)."""
    server = RedisServer(free_port(), *options)
    raw = log = None
    try:
        server.start()
        with override_settings(
            CACHES=caches_with(DEDICATED, redis_cache(server.url)),
            SESSION_ENGINE=ENGINE,
            SESSION_CACHE_ALIAS=DEDICATED,
        ):
            assert tcp_port() == server.port, "the dedicated alias talks to another server"
            raw = redis.Redis(port=server.port, single_connection_client=True)
            for script in (redis_backend.UPDATE_SCRIPT, redis_backend.TOUCH_SCRIPT):
                raw.script_load(script)  # as on a server a site has used for a while
            if monitor:
                log = CommandLog(server.port)
            yield Dedicated(server, raw, log)
    finally:
        if log is not None:
            log.close()
        if raw is not None:
            raw.close()
        server.cleanup()


@pytest.fixture
def dedicated() -> Iterator[Dedicated]:
    with dedicated_redis() as running:
        yield running


@pytest.fixture(autouse=True)
def _forget_new_connection_pools() -> Iterator[None]:
    """django-redis keeps one pool per URL for the life of the process: the pools this test
    made (for servers that are about to stop) are disconnected and forgotten."""
    pools: dict[str, Any] = ConnectionFactory._pools
    known = set(pools)
    yield
    for url in set(pools) - known:
        pools.pop(url).disconnect()


new_session = functools.partial(contract.new_session, SessionStore)


def hash_name(session_key: str, prefix: str = DEFAULT_PREFIX) -> bytes:
    return (prefix + session_key).encode()


def elapsed(action: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run ``action``; what it raised (or ``None``) and how long it took."""
    started = time.monotonic()
    try:
        action()
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def assert_ttl_is(raw: redis.Redis, name: bytes, seconds: float) -> None:
    """The key's expiry is ``seconds`` away (give or take the test's own pace), and the
    deadline the session holds (string header or hash field) is that same expiry."""
    ttl_ms = raw.pttl(name)
    assert seconds * 1000 - 5000 <= ttl_ms <= seconds * 1000, (name, ttl_ms, seconds)
    deadline_ms = stored_session(raw, name)[2]
    assert abs(deadline_ms - (time.time() * 1000 + ttl_ms)) < 2000, (deadline_ms, ttl_ms)


def entries(raw: redis.Redis, name: bytes) -> dict[bytes, bytes]:
    """The stored entries of a session, either form, by name in UTF-8."""
    return stored_fields(raw, name)


def big(size: int = STRING_LIMIT) -> bytes:
    """A value whose sealed field alone outgrows the string form."""
    return os.urandom(size)


# -- 1. layout -------------------------------------------------------------------------------


def test_a_small_session_is_one_string_of_its_fields_with_the_expiry_as_ttl(
    dedicated: Dedicated,
) -> None:
    raw = dedicated.raw
    fields = {"user": 42, "café": "crème", "ключ": [1, 2], "empty": ""}
    key = new_session(**fields)
    name = hash_name(key)
    assert raw.keys("*") == [name]
    assert raw.type(name) == b"string"
    value = raw.get(name)
    # The format, the deadline, the version token, then a msgpack map of name (str) to
    # sealed field (bin), as Python's msgpack packs it: the sealed fields are the engine's,
    # byte for byte.
    string_format, deadline, token = HEADER.unpack_from(value)
    assert string_format == 2
    sealed = SessionStore._read(key)
    assert sealed is not None
    assert value[HEADER.size :] == msgpack.packb(sealed.fields)
    assert sealed.version == token
    assert set(entries(raw, name)) == {field.encode() for field in fields}
    assert b"caf\xc3\xa9" in entries(raw, name)  # the name in UTF-8
    assert deadline == round(sealed.expires_at * 1000)
    assert_ttl_is(raw, name, django_settings.SESSION_COOKIE_AGE)
    assert dict(SessionStore(key).items()) == fields

    # A session's own expiry age is the key's TTL.
    session = SessionStore(key)
    session.set_expiry(300)
    session.save()
    assert_ttl_is(raw, name, 300)
    assert SessionStore(key).get_expiry_age() == 300


def test_a_session_outgrowing_the_string_becomes_a_hash_and_a_small_one_a_string(
    dedicated: Dedicated,
) -> None:
    assert dedicated.log is not None
    log, raw = dedicated.log, dedicated.raw
    key = new_session(a=1, b=[2])
    name = hash_name(key)
    small = entries(raw, name)
    session = SessionStore(key)
    session["big"] = big(2 * STRING_LIMIT)
    with log.record() as grow:
        session.save()
    # Once, inside the save's script: the stored bytes of the other fields carried over.
    assert [command.name for command in grow.sent] == ["EVALSHA"]
    assert raw.type(name) == b"hash"
    stored = entries(raw, name)
    assert set(stored) == {b"a", b"b", b"big"}
    assert (stored[b"a"], stored[b"b"]) == (small[b"a"], small[b"b"])
    assert_ttl_is(raw, name, django_settings.SESSION_COOKIE_AGE)

    # A hash from then on: a save sets and deletes its fields.
    session = SessionStore(key)
    session["c"] = 3
    del session["a"]
    with log.record() as update:
        session.save()
    assert {"HSET", "HDEL", "PEXPIREAT"} <= set(update.names())
    assert not {"GET", "SET", "DEL", "HGETALL"} & set(update.names()), update.names()
    assert set(entries(raw, name)) == {b"b", b"big", b"c"}

    # Small again: folded into a string at its next save, the fields' bytes as they were.
    kept = entries(raw, name)
    session = SessionStore(key)
    del session["big"]
    session.save()
    assert raw.type(name) == b"string"
    assert entries(raw, name) == {b"b": kept[b"b"], b"c": kept[b"c"]}
    assert dict(SessionStore(key).items()) == {"b": [2], "c": 3}
    assert_ttl_is(raw, name, django_settings.SESSION_COOKIE_AGE)


def test_a_session_created_large_is_one_set_and_a_hash_from_its_first_rewrite(
    dedicated: Dedicated,
) -> None:
    assert dedicated.log is not None
    log, raw = dedicated.log, dedicated.raw
    blob = big()
    session = SessionStore()
    session.update({"a": 1, "blob": blob})
    with log.record() as create:
        session.save()
    key = session.session_key
    assert key is not None
    name = hash_name(key)
    # One command, no script, whatever the size: a script would hash every byte it gets.
    assert [command.name for command in create.sent] == ["SET"]
    assert create.sent[0].args[3:5] == [b"NX", b"PXAT"]
    assert raw.type(name) == b"string"
    assert_ttl_is(raw, name, django_settings.SESSION_COOKIE_AGE)
    assert dict(SessionStore(key).items()) == {"a": 1, "blob": blob}

    # A save that cannot write in place rewrites it, too large for a string: a hash.
    grown = SessionStore(key)
    grown["b"] = 2
    grown.save()
    assert raw.type(name) == b"hash"
    assert set(entries(raw, name)) == {b"a", b"blob", b"b"}
    assert dict(SessionStore(key).items()) == {"a": 1, "blob": blob, "b": 2}

    # A whole replace (after clear()) applies only to a session that is there.
    replaced = SessionStore(key)
    replaced.clear()
    replaced["blob"] = other = big()
    replaced.save()
    assert dict(SessionStore(key).items()) == {"blob": other}
    gone = SessionStore(key)
    gone.clear()
    gone["blob"] = big()
    SessionStore(key).delete()
    with pytest.raises(UpdateError):
        gone.save()
    assert not raw.exists(name)

    # A replace is SET ... XX.
    small = SessionStore(new_session(blob=big()))
    small.clear()
    small["a"] = 2
    with log.record() as replace:
        small.save()
    assert [command.name for command in replace.sent] == ["SET"]
    assert replace.sent[0].args[3:5] == [b"XX", b"PXAT"]
    assert raw.type(hash_name(small.session_key)) == b"string"  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [10, STRING_LIMIT])
def test_a_create_over_a_taken_key_raises_create_error_and_changes_nothing(
    dedicated: Dedicated, size: int
) -> None:
    raw = dedicated.raw
    for taken_by in (b"small", big()):
        key = new_session(a=taken_by)
        before = raw.dump(hash_name(key))
        intruder = SessionStore(key)
        intruder._session_cache = intruder._new_fields()
        intruder["a"] = os.urandom(size)
        with pytest.raises(CreateError):
            intruder.save(must_create=True)
        assert raw.dump(hash_name(key)) == before
        assert SessionStore(key)["a"] == taken_by


@pytest.mark.parametrize("form", ["string", "hash"])
def test_every_write_replaces_the_version_token_and_reports_the_one_it_replaced(
    dedicated: Dedicated, form: str
) -> None:
    key = new_session(a=1, blob=big() if form == "hash" else b"")
    name = hash_name(key)

    def version() -> bytes | None:
        stored = SessionStore._read(key)
        assert stored is not None
        return stored.version

    def update(**sets: Any) -> tuple[bytes | None, bytes]:
        codec = field_codec()
        sealed = {field: codec.seal(key, field, codec.pack(field, v)) for field, v in sets.items()}
        expires_at = time.time() + 600
        return redis_backend._write_session(name, Delta(sealed, ()), expires_at, create=False)

    created = version()
    assert created is not None and len(created) == 8
    seen = {created}
    replaced, token = update(a="two")  # a string spliced, or (hash) made a hash
    assert (replaced, version()) == (created, token)
    assert raw_type(dedicated, name) == form
    seen.add(token)
    replaced, in_place = update(a="six")  # a string written in place
    assert (replaced, version()) == (token, in_place)
    seen.add(in_place)
    replaced, touched = redis_backend._touch_session(name, time.time() + 900)
    assert (replaced, version()) == (in_place, touched)
    seen.add(touched)
    assert len(seen) == 4, "a write kept the token it found"
    assert dict(SessionStore(key).items())["a"] == "six"
    # A whole replace (a SET): a new token, nothing to report.
    session = SessionStore(key)
    session.clear()
    session["b"] = 1
    session.save()
    assert version() not in seen

    # Nothing is written to a session that is gone, and no token is reported.
    SessionStore(key).delete()
    with pytest.raises(UpdateError):
        update(a=4)
    with pytest.raises(UpdateError):
        redis_backend._touch_session(name, time.time() + 900)


def raw_type(dedicated: Dedicated, name: bytes) -> str:
    return str(dedicated.raw.type(name).decode())


def test_a_previous_release_session_has_no_token_until_its_next_save(
    dedicated: Dedicated,
) -> None:
    key, _ = previous_release_session(dedicated.raw, a=1)
    stored = SessionStore._read(key)
    assert stored is not None and stored.version is None
    replaced, _ = redis_backend._touch_session(hash_name(key), time.time() + 900)
    assert replaced is None
    stored = SessionStore._read(key)
    assert stored is not None and stored.version is not None
    session = SessionStore(key)
    session["a"] = 2
    session.save()
    assert dict(SessionStore(key).items()) == {"a": 2}


def test_an_emptied_session_still_exists(dedicated: Dedicated) -> None:
    raw = dedicated.raw
    for empty in ("delete every field", "clear"):
        key = new_session(a=1, b=2)
        session = SessionStore(key)
        if empty == "clear":
            session.clear()
        else:
            del session["a"], session["b"]
        session.save()
        assert session.session_key == key
        assert stored_session(raw, hash_name(key))[:2] == ("string", {}), empty
        assert_ttl_is(raw, hash_name(key), django_settings.SESSION_COOKIE_AGE)
        assert SessionStore().exists(key), empty
        loaded = SessionStore(key)
        assert dict(loaded.items()) == {}
        assert loaded.session_key == key, f"{empty}: the empty session was not found"
        # It can be filled again: an update, not a refusal.
        loaded["c"] = 3
        loaded.save()
        assert dict(SessionStore(key).items()) == {"c": 3}


def test_key_prefix_setting_is_honoured(dedicated: Dedicated) -> None:
    raw = dedicated.raw
    default_key = new_session(where="default")
    prefix = "site-b|sessions:"
    with override_settings(MEMOPT_REDIS_KEY_PREFIX=prefix):
        key = new_session(where="site b")
        assert SessionStore(key)["where"] == "site b"
        assert SessionStore().exists(key)
        assert not SessionStore().exists(default_key)
        assert SessionStore(default_key).get("where") is None
    assert sorted(raw.keys("*")) == sorted([hash_name(default_key), hash_name(key, prefix)])
    assert set(entries(raw, hash_name(key, prefix))) == {b"where"}
    assert not SessionStore().exists(key)
    with override_settings(MEMOPT_REDIS_KEY_PREFIX=prefix):
        SessionStore(key).delete()
    assert raw.keys("*") == [hash_name(default_key)]


def test_iter_session_keys_lists_exactly_the_live_sessions_of_the_prefix(
    dedicated: Dedicated,
) -> None:
    raw = dedicated.raw
    # Glob characters in the prefix are matched literally: unescaped, "glob[...]*?\:*"
    # would also match the other prefix's keys.
    tag = uuid.uuid4().hex[:8]
    prefix = f"glob[{tag}]*?\\:"
    lookalike = f"glob{tag[0]}zz:"
    with override_settings(MEMOPT_REDIS_KEY_PREFIX=lookalike):
        others = [new_session(n=n) for n in range(3)]
    default_key = new_session(n="default prefix")
    raw.set(f":1:{prefix}cached", b"a django-redis cache entry")
    raw.set("unrelated", b"x")
    with override_settings(MEMOPT_REDIS_KEY_PREFIX=prefix):
        assert list(SessionStore.iter_session_keys()) == []
        live = [new_session(n=n) for n in range(1500)]  # more than one SCAN batch
        deleted = new_session(n="deleted")
        SessionStore(deleted).delete()
        expired = new_session(n="expired")
        raw.pexpire(hash_name(expired, prefix), 1)
        time.sleep(0.01)
        listed = list(SessionStore.iter_session_keys())
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(live)
    assert sorted(SessionStore.iter_session_keys()) == [default_key]
    with override_settings(MEMOPT_REDIS_KEY_PREFIX=lookalike):
        assert sorted(SessionStore.iter_session_keys()) == sorted(others)


def test_iter_session_keys_does_not_list_the_sessions_of_a_longer_prefix(
    dedicated: Dedicated,
) -> None:
    # Two sites on one Redis database: "memopt:session:" and "memopt:session:b:". The
    # first must not list the second's sessions as its own ("b:<key>" is no session key).
    with override_settings(MEMOPT_REDIS_KEY_PREFIX=DEFAULT_PREFIX + "b:"):
        other = new_session(site="b")
    mine = new_session(site="a")
    listed = list(SessionStore.iter_session_keys())
    assert listed == [mine], f"listed {listed}; {other} belongs to the other prefix"


# -- 2. only the delta is sent ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["string", "hash"])
def test_a_load_is_one_round_trip_and_a_save_sends_only_the_delta(
    dedicated: Dedicated, form: str
) -> None:
    assert dedicated.log is not None
    log, raw = dedicated.log, dedicated.raw
    names = [f"f{n:02}" for n in range(20)]
    values: dict[str, Any] = {name: [n, "x" * (10 + n)] for n, name in enumerate(names)}
    if form == "hash":
        values["f19"] = big(2 * STRING_LIMIT)
    key = new_session(**values)
    name = hash_name(key)
    if form == "hash":  # created as one string; its first rewrite makes it a hash
        grown = SessionStore(key)
        grown["f18"] = values["f18"] = [18, "longer than before"]
        grown.save()
    assert raw.type(name).decode() == form
    before = entries(raw, name)

    session = SessionStore(key)
    with log.record() as load:
        first, second = session["f00"], session["f01"]
    assert (first, second) == (values["f00"], values["f01"])
    assert load.round_trips == 1, f"a load took {load.round_trips} round trips"
    # Both forms' reads at once: the one of the wrong type answers WRONGTYPE.
    assert load.names() == ["GET", "HGETALL"], load.names()
    assert all(command.args[1:] == [name] for command in load.commands)

    session["f00"] = "changed"
    del session["f05"]
    with log.record() as save:
        session.save()
    assert save.round_trips == 1, f"a save took {save.round_trips} round trips"
    assert [command.name for command in save.sent] == ["EVALSHA"], save.names()
    (evalsha,) = save.sent
    field_names = {n.encode() for n in names}
    untouched = [n.encode() for n in names if n not in ("f00", "f05")]
    # The script got the name of the changed field and of the deleted one, and no other
    # field: neither the name nor the stored bytes of an untouched field were sent.
    assert set(evalsha.args) & field_names == {b"f00", b"f05"}
    assert not any(before[n] in arg for arg in evalsha.args for n in untouched)
    scripted = save.scripted
    assert all(name in command.args for command in scripted)
    assert not {"DEL", "UNLINK", "RENAME", "HGETALL"} & {c.name for c in scripted}
    if form == "hash":
        written = {f for c in scripted if c.name == "HSET" for f in c.args[2::2]}
        removed = {f for c in scripted if c.name == "HDEL" for f in c.args[2:]}
        assert written - {MARKER} == {b"f00"}
        assert removed == {b"f05"}
    else:
        # Spliced: read, then written back whole in one SET with its expiry.
        assert [c.name for c in scripted] == ["TYPE", "GET", "SET"], scripted
        assert scripted[-1].args[3] == b"PXAT"
    assert session._session.decoded_count == 2  # the untouched fields were never decoded

    after = entries(raw, name)
    assert set(after) == set(before) - {b"f05"}
    assert after[b"f00"] != before[b"f00"]
    for untouched_name in untouched:
        assert after[untouched_name] == before[untouched_name], untouched_name
    expected = {n: v for n, v in values.items() if n != "f05"} | {"f00": "changed"}
    assert dict(SessionStore(key).items()) == expected
    assert_ttl_is(raw, name, django_settings.SESSION_COOKIE_AGE)

    # A field set to a value as long as the stored one: written in place in a string.
    session = SessionStore(key)
    session["f01"] = [1, "y" * 11]
    with log.record() as same_length:
        session.save()
    if form == "string":
        scripted = [c.name for c in same_length.scripted]
        assert scripted == ["TYPE", "GET", "SETRANGE", "SETRANGE", "PEXPIREAT"], scripted
    assert dict(SessionStore(key).items()) == expected | {"f01": [1, "y" * 11]}
    assert_ttl_is(raw, name, django_settings.SESSION_COOKIE_AGE)


# -- 2b. the string and the hash against a model of the session -----------------------------


def test_random_deltas_across_the_string_limit_match_a_model(dedicated: Dedicated) -> None:
    # Deltas of random sizes straight to the store (bytes as a codec would hand them):
    # sessions cross the limit both ways, and always read back exactly as the model.
    raw = dedicated.raw
    rng = random.Random(13)
    names = ["a", "b", "visits", "é名", "n" * 300, *(f"cart:{n}" for n in range(8))]
    sizes = [0, 1, 17, 60, 300, 1500, 3000, 70_000]
    forms = set()
    for trial in range(60):
        key = uuid.uuid4().hex
        model = {rng.choice(names): os.urandom(rng.choice(sizes)) for _ in range(rng.randrange(6))}
        deadline = time.time() + 600
        SessionStore._write(key, Delta(model, replace=True), deadline, create=True)
        for step in range(8):
            sets = {
                rng.choice(names): os.urandom(rng.choice(sizes)) for _ in range(rng.randrange(3))
            }
            deletes = frozenset(n for n in model if rng.random() < 0.3 and n not in sets)
            deadline += 1
            SessionStore._write(key, Delta(sets, deletes), deadline, create=False)
            model = {n: v for n, v in model.items() if n not in deletes} | sets
            stored = SessionStore._read(key)
            assert stored is not None
            assert stored.fields == model, (trial, step)
            assert stored.expires_at == pytest.approx(deadline, abs=0.002)
            # A string over the limit is one created so (one SET) and not rewritten since.
            forms.add(raw.type(hash_name(key)).decode())
        SessionStore._remove(key)
        with pytest.raises(UpdateError):
            SessionStore._write(key, Delta({"x": b"1"}), deadline, create=False)
        with pytest.raises(UpdateError):
            SessionStore._touch(key, deadline)
        assert not raw.exists(hash_name(key))
    assert forms == {"string", "hash"}


def test_threads_writing_their_own_fields_across_the_limit_lose_nothing(
    dedicated: Dedicated,
) -> None:
    # The store contract runs concurrent writers on a small session; here each write also
    # moves the session across the string limit and back.
    key = new_session(base="kept")
    threads, rounds = 6, 30
    failures: list[BaseException] = []

    def write(name: str) -> None:
        try:
            for n in range(rounds):
                session = SessionStore(key)
                session[name] = (n, os.urandom(900 if n % 3 else 10))
                session.save()
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=write, args=(f"t{t}",)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    final = SessionStore(key)
    assert final["base"] == "kept"
    assert {name: value[0] for name, value in final.items() if name != "base"} == {
        f"t{t}": rounds - 1 for t in range(threads)
    }


# -- 2c. sessions stored by the previous release (format 1) ----------------------------------

# The previous release's save script, as it was (a create, or an update applying a delta).
PREVIOUS_WRITE_SCRIPT = """
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


def previous_release_session(raw: redis.Redis, **values: Any) -> tuple[str, dict[bytes, bytes]]:
    """A session stored as the previous release stored it, by its save script: a hash of
    the sealed fields and the deadline field. Its key, and its stored fields."""
    key = uuid.uuid4().hex
    codec = field_codec()
    sealed = {name: codec.seal(key, name, codec.pack(name, v)) for name, v in values.items()}
    deadline = int((time.time() + django_settings.SESSION_COOKIE_AGE) * 1000)
    args: list[Any] = ["c", "1", deadline, len(sealed)]
    for name, sealed_field in sealed.items():
        args += (name.encode(), sealed_field)
    assert raw.eval(PREVIOUS_WRITE_SCRIPT, 1, hash_name(key), *args) == 1
    return key, {name.encode(): sealed_field for name, sealed_field in sealed.items()}


def test_sessions_of_the_previous_release_load_update_and_fold(dedicated: Dedicated) -> None:
    assert dedicated.log is not None
    log, raw = dedicated.log, dedicated.raw
    login = {"_auth_user_id": "7", "_auth_user_backend": "django.contrib.auth.backends.x"}
    login["_auth_user_hash"] = "h" * 64
    small, stored = previous_release_session(raw, **login, visits=1)
    cart = [os.urandom(100) for _ in range(60)]
    large, stored_large = previous_release_session(raw, **login, cart=cart)
    assert raw.type(hash_name(small)) == raw.type(hash_name(large)) == b"hash"

    # Read as they are, listed, and they exist.
    assert dict(SessionStore(small).items()) == {**login, "visits": 1}
    assert SessionStore(large)["cart"] == cart
    assert SessionStore().exists(small) and SessionStore().exists(large)
    assert sorted(SessionStore.iter_session_keys()) == sorted([small, large])
    before = raw.memory_usage(hash_name(small), samples=0)

    # A small one is folded into a string at its next save: the other fields' stored
    # bytes carried as they are (the store never re-seals), in one EVALSHA.
    session = SessionStore(small)
    session["visits"] = 2
    with log.record() as fold:
        session.save()
    assert [command.name for command in fold.sent] == ["EVALSHA"]
    kind, folded, _ = stored_session(raw, hash_name(small))
    assert kind == "string"
    assert set(folded) == set(stored)
    for name in set(stored) - {b"visits"}:
        assert folded[name] == stored[name], name
    assert raw.memory_usage(hash_name(small), samples=0) < before
    assert_ttl_is(raw, hash_name(small), django_settings.SESSION_COOKIE_AGE)
    assert dict(SessionStore(small).items()) == {**login, "visits": 2}

    # A large one stays a hash: its save sets the changed field alone.
    session = SessionStore(large)
    session["visits"] = 1
    with log.record() as update:
        session.save()
    assert "HGETALL" not in update.names() and "SET" not in update.names(), update.names()
    assert stored_fields(raw, hash_name(large)) == {**stored_large, b"visits": ANY}
    assert dict(SessionStore(large).items()) == {**login, "cart": cart, "visits": 1}

    # Touched in place; moved to a new key by cycle_key (small now: a string).
    raw.pexpire(hash_name(large), 60_000)
    SessionStore._touch(large, time.time() + django_settings.SESSION_COOKIE_AGE)
    assert_ttl_is(raw, hash_name(large), django_settings.SESSION_COOKIE_AGE)
    old, _ = previous_release_session(raw, **login)
    moved = SessionStore(old)
    moved.cycle_key()
    assert not raw.exists(hash_name(old))
    assert raw.type(hash_name(moved.session_key)) == b"string"  # type: ignore[arg-type]
    assert dict(SessionStore(moved.session_key).items()) == login


def test_a_previous_release_session_with_names_that_are_not_utf8_folds_and_loads(
    dedicated: Dedicated, caplog: pytest.LogCaptureFixture
) -> None:
    raw = dedicated.raw
    key, stored = previous_release_session(raw, a=1, b=2)
    raw.hset(hash_name(key), b"\x80 not utf-8", stored[b"a"])
    caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
    session = SessionStore(key)
    session["c"] = 3
    session.save()
    assert raw.type(hash_name(key)) == b"string"
    assert dict(SessionStore(key).items()) == {"a": 1, "b": 2, "c": 3}
    assert any("not UTF-8" in record.getMessage() for record in caplog.records)


# -- 3. cycle_key ----------------------------------------------------------------------------


def test_cycle_key_copies_sealed_fields_without_decoding_or_rename(dedicated: Dedicated) -> None:
    assert dedicated.log is not None
    log, raw = dedicated.log, dedicated.raw
    values = {"user": 7, "cart": [1, 2, 3], "naïve": {"a": None}, "blob": b"\x00" * 300}
    # The default expiry: a custom one is a field too, which a save must decode.
    old_key = new_session(**values)
    old = entries(raw, hash_name(old_key))

    session = SessionStore(old_key)
    with log.record() as cycle:
        session.cycle_key()
    new_key = session.session_key
    assert new_key is not None and new_key != old_key
    assert session._session.decoded_count == 0
    assert not raw.exists(hash_name(old_key))
    new = entries(raw, hash_name(new_key))
    assert set(new) == set(old)
    for field_name in old:
        # Re-sealed for the new key (another tag), same payload: moved, never decoded.
        assert new[field_name][:HEADER_SIZE] != old[field_name][:HEADER_SIZE], field_name
        assert new[field_name][HEADER_SIZE:] == old[field_name][HEADER_SIZE:], field_name
    assert_ttl_is(raw, hash_name(new_key), django_settings.SESSION_COOKIE_AGE)
    names = cycle.names()
    assert not {"RENAME", "RENAMENX", "COPY", "MOVE"} & set(names), names
    assert "cmdstat_rename" not in raw.info("commandstats")
    assert [c.name for c in cycle.sent if c.name == "DEL"] == ["DEL"]
    assert dict(SessionStore(new_key).items()) == values
    assert SessionStore(old_key).get("user") is None


# -- 4. SCRIPT FLUSH -------------------------------------------------------------------------


def test_saves_after_script_flush_reload_the_script(dedicated: Dedicated) -> None:
    assert dedicated.log is not None
    log, raw = dedicated.log, dedicated.raw
    key = new_session(a=1, b=2)
    assert int(raw.info("memory")["number_of_cached_scripts"]) >= 1

    raw.script_flush()
    assert int(raw.info("memory")["number_of_cached_scripts"]) == 0
    session = SessionStore(key)
    session["a"] = 10
    del session["b"]
    with log.record() as update:
        session.save()
    assert "SCRIPT" in update.names(), "the script was not loaded again"
    assert [c.name for c in update.scripted if c.name == "SET"], update.names()
    assert int(raw.info("memory")["number_of_cached_scripts"]) >= 1
    assert dict(SessionStore(key).items()) == {"a": 10}
    assert set(entries(raw, hash_name(key))) == {b"a"}

    raw.script_flush()
    created = new_session(c=3)  # a create after a flush: not mistaken for a taken key
    assert dict(SessionStore(created).items()) == {"c": 3}

    raw.script_flush()
    raw.pexpire(hash_name(key), 60_000)
    touched = SessionStore(key)
    assert touched["a"] == 10
    touched.save()  # nothing changed: only the expiry moves
    assert_ttl_is(raw, hash_name(key), django_settings.SESSION_COOKIE_AGE)


def test_a_server_older_than_6_2_is_named_in_the_error(
    dedicated: Dedicated, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No redis-server before 6.2 here: its answers are simulated on the real connection
    # (6.0 refuses SET ... PXAT with a syntax error, and reports its version in INFO).
    real_execute = redis_backend._execute

    def as_redis_6_0(*command: Any) -> Any:
        if command[0] == "SET" and "PXAT" in command:
            raise redis.ResponseError("syntax error")
        if command[:2] == ("INFO", "server"):
            return b"# Server\r\nredis_version:6.0.16\r\nredis_mode:standalone\r\n"
        return real_execute(*command)

    monkeypatch.setattr(redis_backend, "_execute", as_redis_6_0)
    session = SessionStore()
    session["a"] = 1
    with pytest.raises(
        SessionStoreError, match=r"needs Redis 6\.2 or later .* runs Redis 6\.0\.16"
    ):
        session.save()
    # Another syntax error on a recent server keeps Redis's own message.
    monkeypatch.setattr(redis_backend, "_execute", real_execute)
    with pytest.raises(SessionStoreError, match="syntax error") as error:
        redis_backend._call(lambda: redis_backend._execute("SET", "k", "v", "PXAT"))
    assert "6.2" not in str(error.value)


# -- 5. Redis stopped and restarted ----------------------------------------------------------


def _operations(key: str) -> dict[str, Callable[[], Any]]:
    """Every session operation on ``key``; call while Redis is up (one loads ``key``)."""
    loaded = SessionStore(key)
    assert loaded.get("a") == 1  # a request that loaded the session before the failure

    def create() -> None:
        session = SessionStore()
        session["a"] = 1
        session.save()

    def update() -> None:
        loaded["b"] = 2
        loaded.save()

    return {
        "load": lambda: SessionStore(key).load(),
        "exists": lambda: SessionStore().exists(key),
        "create": create,
        "update": update,
        "delete": lambda: SessionStore(key).delete(),
        "cycle_key": lambda: SessionStore(key).cycle_key(),
        "read_values": lambda: SessionStore.read_values("meta"),
        "read_value": lambda: SessionStore.read_value("meta", "window"),
        "put_value": lambda: SessionStore.put_value("stats", "token", b"counters"),
        "add_value": lambda: SessionStore.add_value("meta", "window", b"later"),
        "remove_values": lambda: SessionStore.remove_values("stats", ["token"]),
    }


def test_redis_stopped_fails_fast_and_restarted_works_again() -> None:
    with dedicated_redis("--appendonly", "yes", monitor=False) as running:
        key = new_session(a=1)
        assert SessionStore.add_value("meta", "window", b"until") == b"until"
        operations = _operations(key)
        running.server.stop()
        for operation, action in operations.items():
            error, took = elapsed(action)
            assert isinstance(error, SessionStoreUnavailable), f"{operation}: {error!r}"
            assert took < FAIL_FAST, f"{operation} took {took:.2f} s"
            assert DEDICATED in str(error)

        running.server.start()  # same port, same data directory
        session = SessionStore(key)
        assert session["a"] == 1  # saved before the stop, kept by the AOF
        session["b"] = 2
        session.save()  # the restarted Redis has no script cached: loaded again
        assert dict(SessionStore(key).items()) == {"a": 1, "b": 2}
        assert SessionStore.read_value("meta", "window") == b"until"
        assert SessionStore.add_value("meta", "window", b"other") == b"until"

        # Restarted between two requests, with no failed request in between: the pooled
        # connections are stale, and the next request still works.
        running.restart()
        session = SessionStore(key)
        session["c"] = 3
        session.save()
        assert dict(SessionStore(key).items()) == {"a": 1, "b": 2, "c": 3}
        assert SessionStore(new_session(d=4))["d"] == 4


def test_iter_session_keys_while_redis_is_stopped_raises_unavailable(
    dedicated: Dedicated,
) -> None:
    key = new_session(a=1)
    dedicated.server.stop()
    error, took = elapsed(lambda: list(SessionStore.iter_session_keys()))
    assert isinstance(error, SessionStoreUnavailable), repr(error)
    assert took < FAIL_FAST
    dedicated.server.start()
    assert list(SessionStore.iter_session_keys()) == []  # no persistence: the data went
    assert not SessionStore().exists(key)


def test_hung_redis_times_out_as_unavailable(dedicated: Dedicated) -> None:
    key = new_session(a=1)
    operations = _operations(key)
    process = dedicated.server.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        for operation in ("load", "exists", "update"):
            error, took = elapsed(operations[operation])
            assert isinstance(error, SessionStoreUnavailable), f"{operation}: {error!r}"
            assert took < FAIL_FAST, f"{operation} took {took:.2f} s"
    finally:
        os.kill(process.pid, signal.SIGCONT)
    session = SessionStore(key)
    assert session["a"] == 1
    session["c"] = 3
    session.save()
    assert SessionStore(key)["c"] == 3


def test_requests_while_redis_is_down_fail_with_500_then_recover(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with dedicated_redis("--appendonly", "yes", monitor=False) as running:
        client = Client()
        response = client.get("/store/a/1/")
        assert response.status_code == 200
        key = response.cookies[django_settings.SESSION_COOKIE_NAME].value
        assert SessionStore(key)["a"] == "1"

        running.server.stop()
        client.raise_request_exception = False
        for path in ("/store/b/2/", "/read/a/"):
            with caplog.at_level(logging.ERROR, logger="django.request"):
                caplog.clear()
                started = time.monotonic()
                response = client.get(path)
                took = time.monotonic() - started
            assert response.status_code == 500, path
            assert took < FAIL_FAST, f"{path} took {took:.2f} s"
            logged = [r for r in caplog.records if r.name == "django.request" and r.exc_info]
            assert logged, f"{path}: the failure was not logged"
            assert isinstance(logged[0].exc_info[1], SessionStoreUnavailable)

        running.server.start()
        client.raise_request_exception = True
        response = client.get("/store/b/2/")
        assert response.status_code == 200
        assert client.get("/read/a/").json() == {"value": "1"}
        assert dict(SessionStore(key).items()) == {"a": "1", "b": "2"}


# -- 6. a full Redis -------------------------------------------------------------------------


def test_full_redis_refuses_writes_with_its_message_and_recovers() -> None:
    options = ("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    with dedicated_redis(*options, monitor=False) as running:
        raw = running.raw
        saved: dict[str, bytes] = {}
        error = None
        for _ in range(200):
            session = SessionStore()
            session["blob"] = payload = os.urandom(50_000)
            try:
                session.save()
            except SessionStoreError as exc:
                error = exc
                break
            saved[session.session_key] = payload  # type: ignore[index]
        assert error is not None, "2 MB never filled up"
        assert not isinstance(error, SessionStoreUnavailable), repr(error)
        assert "OOM command not allowed when used memory > 'maxmemory'" in str(error)
        assert DEDICATED in str(error)
        assert len(saved) >= 3
        assert raw.dbsize() == len(saved)  # the refused create left nothing behind

        # An update that does not fit is refused as a whole.
        some_key = next(iter(saved))
        stored = raw.dump(hash_name(some_key))
        update = SessionStore(some_key)
        update["blob"] = b"smaller"
        update["other"] = os.urandom(50_000)
        with pytest.raises(SessionStoreError, match="OOM") as refused:
            update.save()
        assert not isinstance(refused.value, SessionStoreUnavailable)
        assert raw.dump(hash_name(some_key)) == stored

        for key, payload in saved.items():  # reads still work
            assert SessionStore(key)["blob"] == payload

        raw.config_set("maxmemory", 0)
        key = new_session(blob=b"fits now")
        assert SessionStore(key)["blob"] == b"fits now"
        update = SessionStore(some_key)
        update["other"] = b"fits too"
        update.save()
        assert dict(SessionStore(some_key).items()) == {
            "blob": saved[some_key],
            "other": b"fits too",
        }


# -- 7. Sentinel -----------------------------------------------------------------------------


@pytest.mark.parametrize("factory_in", ["OPTIONS", "setting"])
def test_sessions_through_sentinel(factory_in: str) -> None:
    primary = RedisServer(free_port())
    try:
        primary.start()
        with (
            sentinel_for(primary) as sentinel_port,
            redis.Redis(port=primary.port, single_connection_client=True) as raw,
        ):
            options: dict[str, Any] = {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "SENTINELS": [("127.0.0.1", sentinel_port)],
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            }
            factory = "django_redis.pool.SentinelConnectionFactory"
            overrides: dict[str, Any] = {}
            if factory_in == "OPTIONS":
                options["CONNECTION_FACTORY"] = factory
            else:
                overrides["DJANGO_REDIS_CONNECTION_FACTORY"] = factory
            cache = {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": "redis://mymaster/0",
                "OPTIONS": options,
            }
            with override_settings(
                CACHES=caches_with("sentinel", cache),
                SESSION_ENGINE=ENGINE,
                SESSION_CACHE_ALIAS="sentinel",
                **overrides,
            ):
                assert type(connection().connection_pool).__name__ == "SentinelConnectionPool"
                assert tcp_port() == primary.port
                key = new_session(a=1)  # created
                assert set(entries(raw, hash_name(key))) == {b"a"}  # in the primary
                session = SessionStore(key)
                assert session["a"] == 1  # loaded
                session["b"] = [2]
                del session["a"]
                session.save()  # saved
                assert set(entries(raw, hash_name(key))) == {b"b"}
                assert dict(SessionStore(key).items()) == {"b": [2]}
                assert SessionStore().exists(key)
                SessionStore(key).delete()  # deleted
                assert not raw.exists(hash_name(key))
                assert not SessionStore().exists(key)
    finally:
        primary.cleanup()


# -- 8. expiry -------------------------------------------------------------------------------


def test_session_expires_with_its_ttl(dedicated: Dedicated) -> None:
    raw = dedicated.raw
    session = SessionStore()
    session["a"] = 1
    session.set_expiry(1)
    session.save()
    saved_at = time.monotonic()
    key = session.session_key
    assert key is not None
    assert 0 < raw.pttl(hash_name(key)) <= 1000
    assert SessionStore(key)["a"] == 1
    time.sleep(max(0.0, saved_at + 1.2 - time.monotonic()))
    assert not SessionStore().exists(key)
    gone = SessionStore(key)
    assert dict(gone.items()) == {}
    assert gone.session_key is None
    assert raw.dbsize() == 0


@pytest.mark.parametrize("form", ["string", "hash"])
def test_touch_extends_the_ttl_without_rewriting_fields(dedicated: Dedicated, form: str) -> None:
    assert dedicated.log is not None
    log, raw = dedicated.log, dedicated.raw
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        client = Client()
        client.get("/store/a/1/")
        client.get("/store/b/2/")
        key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        name = hash_name(key)
        if form == "hash":
            grown = SessionStore(key)
            grown["blob"] = big()
            grown.save()
        assert raw.type(name).decode() == form
        raw.pexpire(name, 60_000)  # as if the session had been idle for two weeks
        before = entries(raw, name)
        with log.record() as touch:
            response = client.get("/read/a/")  # reads, changes nothing
        assert response.json() == {"value": "1"}
    assert_ttl_is(raw, name, django_settings.SESSION_COOKIE_AGE)
    assert entries(raw, name) == before
    names = touch.names()
    assert "HDEL" not in names and "DEL" not in names and "SET" not in names, names
    written = {
        f for command in touch.commands if command.name == "HSET" for f in command.args[2::2]
    }
    assert written <= {MARKER}, f"a touch rewrote {written}"
    # In place: the string's deadline and token (8 + 8 bytes at offset 1), or the hash's
    # deadline field.
    ranges = [command.args[2:] for command in touch.commands if command.name == "SETRANGE"]
    assert all(offset == b"1" and len(deadline) == 16 for offset, deadline in ranges), ranges
    assert bool(ranges) == (form == "string")
    assert not any(set(command.args) & set(before.values()) for command in touch.sent)
    assert SessionStore(key)["a"] == "1"


def test_sessions_go_to_the_primary_never_a_replica() -> None:
    # django-redis's DefaultClient reads from a replica when LOCATION lists several
    # servers; a session read from a lagging replica right after a save would be stale.
    primary = RedisServer(free_port()).start()
    replica = RedisServer(free_port(), "--replicaof", "127.0.0.1", str(primary.port)).start()
    try:
        replica_raw = redis.Redis(port=replica.port, single_connection_client=True)
        deadline = time.monotonic() + 10
        while replica_raw.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.05)
        cache = redis_cache(primary.url)
        cache["LOCATION"] = [primary.url, replica.url]
        with override_settings(
            CACHES=caches_with(DEDICATED, cache),
            SESSION_ENGINE=ENGINE,
            SESSION_CACHE_ALIAS=DEDICATED,
        ):
            assert tcp_port() == primary.port
            before = replica_raw.info("commandstats")
            for n in range(20):
                session = SessionStore()
                session["n"] = n
                session.save()
                loaded = SessionStore(session.session_key)
                assert loaded["n"] == n
                loaded["n"] = n + 1
                loaded.save()
                assert SessionStore(session.session_key)["n"] == n + 1
            after = replica_raw.info("commandstats")
        # The replica only ever ran what replication sent it: no session read reached it.
        for command in ("cmdstat_hgetall", "cmdstat_hget", "cmdstat_exists", "cmdstat_evalsha"):
            assert after.get(command, {}).get("calls", 0) == before.get(command, {}).get(
                "calls", 0
            ), command
        replica_raw.close()
    finally:
        replica.cleanup()
        primary.cleanup()


def test_writes_wait_for_the_replicas_asked_for_on_one_server_too() -> None:
    # MEMOPT_REDIS_WAIT_REPLICAS: a save returns once the replica has it; with the replica
    # gone, it fails rather than succeed on the primary alone.
    primary = RedisServer(free_port(), "--repl-diskless-sync-delay", "0").start()
    replica = RedisServer(free_port(), "--replicaof", "127.0.0.1", str(primary.port)).start()
    try:
        with redis.Redis(port=replica.port, single_connection_client=True) as replica_raw:
            deadline = time.monotonic() + 10
            while replica_raw.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica never caught up"
                time.sleep(0.05)
            with override_settings(
                CACHES=caches_with(DEDICATED, redis_cache(primary.url)),
                SESSION_ENGINE=ENGINE,
                SESSION_CACHE_ALIAS=DEDICATED,
                MEMOPT_REDIS_WAIT_REPLICAS=1,
                MEMOPT_REDIS_WAIT_TIMEOUT=2000,
            ):
                for n in range(5):
                    session = SessionStore()
                    session["n"] = n
                    session.save()
                    session["m"] = n
                    session.save()
                    # Acknowledged: the replica has the write already.
                    assert replica_raw.exists(hash_name(session.session_key))
                    assert SessionStore(session.session_key)["m"] == n

                async def async_saves(n: int) -> str:
                    # The same on the event loop (asave, natively on redis.asyncio).
                    session = SessionStore()
                    await session.aset("n", n)
                    await session.asave()
                    await session.aset("m", n)
                    await session.asave()
                    assert session.session_key is not None
                    return session.session_key

                for n in range(3):
                    key = async_to_sync(async_saves)(n)
                    assert replica_raw.exists(hash_name(key))
                replica.stop()
                with override_settings(MEMOPT_REDIS_WAIT_TIMEOUT=50):
                    session["m"] = "lonely"
                    with pytest.raises(SessionStoreUnavailable, match="by 0 of the 1"):
                        session.save()
                    with pytest.raises(SessionStoreUnavailable, match="by 0 of the 1"):
                        async_to_sync(async_saves)(9)
    finally:
        replica.cleanup()
        primary.cleanup()


def test_sessions_work_over_resp3(dedicated: Dedicated) -> None:
    # With django-redis's CONNECTION_POOL_KWARGS = {"protocol": 3}, Redis answers a hash
    # as a map, not a flat list. (Database 1: django-redis keeps a pool per URL, and the
    # one for database 0 speaks RESP2.)
    cache = redis_cache(dedicated.server.url.replace("/0", "/1"))
    cache["OPTIONS"]["CONNECTION_POOL_KWARGS"] = {"protocol": 3}
    with override_settings(CACHES=caches_with(DEDICATED, cache)):
        assert connection().connection_pool.connection_kwargs["protocol"] == 3
        key = new_session(a=1, b=[2, 3])
        loaded = SessionStore(key)
        assert dict(loaded.items()) == {"a": 1, "b": [2, 3]}
        loaded["a"] = 4
        loaded.save()
        assert SessionStore(key)["a"] == 4
        assert list(SessionStore.iter_session_keys()) == [key]
        moved = SessionStore(key)
        moved.cycle_key()
        assert not SessionStore().exists(key)
        assert SessionStore(moved.session_key)["b"] == [2, 3]


# -- 9. what listings see --------------------------------------------------------------------


def test_figures_sample_keys_by_session_name_without_reading_them(tmp_path: Path) -> None:
    # The contract checks that listings skip and log such keys; the figures count them, as
    # they sample keys (MEMORY USAGE, OBJECT ENCODING, TYPE, HLEN, GETRANGE) without
    # reading any.
    with RedisStore.isolated(tmp_path) as store:
        live = sorted(new_session(n=n) for n in range(3))
        large = new_session(n="large", blob=big())
        grown = SessionStore(large)
        grown["n"] = "large, rewritten: a hash"
        grown.save()
        store.plant_strays("all of them", 3)
        figures = SessionStore.store_figures()  # HLEN on a string does not fail the sample
        assert figures["sampled_sessions"] == 4 + 12
        assert sorted(SessionStore.iter_session_keys()) == sorted([*live, large])
        # OBJECT ENCODING of either form: the strings (sessions and strays), the hashes.
        encodings = figures["hash_encodings"]
        assert sum(encodings.values()) == 4 + 9, encodings  # the lists are no session
        assert encodings.get("embstr", 0) + encodings.get("raw", 0) == 3 + 3, encodings
        assert figures["memory_per_session"] > 0


# -- 10. store-wide values -------------------------------------------------------------------


def test_store_wide_values_are_one_hash_per_space_without_expiry(tmp_path: Path) -> None:
    with RedisStore.isolated(tmp_path) as store:
        raw, prefix = store.raw, store.prefix
        # Where the previous release kept each process's counters: an upgrade reads them.
        raw.hset(f"{prefix}~stats", b"host:1:token", b"counters")
        assert SessionStore.read_values("stats") == {"host:1:token": b"counters"}
        key = new_session(a=1)
        assert SessionStore.add_value("meta", "window", b"0") == b"0"
        SessionStore.put_value("stats", "host:2:token", b"more")
        assert raw.hgetall(f"{prefix}~meta") == {b"window": b"0"}
        assert raw.hgetall(f"{prefix}~stats") == {
            b"host:1:token": b"counters",
            b"host:2:token": b"more",
        }
        assert raw.ttl(f"{prefix}~meta") == raw.ttl(f"{prefix}~stats") == -1
        assert sorted(raw.keys(f"{prefix}*")) == sorted(
            [f"{prefix}~meta".encode(), f"{prefix}~stats".encode(), hash_name(key, prefix)]
        )
        assert list(SessionStore.iter_session_keys()) == [key]
        figures = SessionStore.store_figures()
        assert (figures["sessions"], figures["sampled_sessions"]) == (1, 1)
