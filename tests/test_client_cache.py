"""The Redis engine's client-side cache (``django_memopt.client_cache``), on real
redis-servers of each test's own.

What it holds and how much (the bound in bytes, least recently used first out), its own
writes, expiry; and the guarantee (docs/redis.md): a write, a logout or a key change that
another process has completed is seen by this process's very next load, also while its
invalidation channel is killed, the database flushed or Redis restarted; and a server
that refuses tracking leaves the process without a cache, said once.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings
from django_redis.pool import ConnectionFactory

from django_memopt import client_cache as client_cache_module
from django_memopt import counters
from django_memopt.backends import redis as redis_backend
from django_memopt.backends.redis import SessionStore, client_cache
from django_memopt.checks import check_client_cache_server
from django_memopt.client_cache import ENTRY_OVERHEAD, CachedSession, ClientCache
from tests import client_cache_workers
from tests import test_redis_contract as redis_contract
from tests.redis_server import RedisServer, free_port, sentinel_for
from tests.redis_workers import redis_caches

ENGINE = "django_memopt.backends.redis"
PREFIX = "memopt:session:"
CACHE_BYTES = 1 << 20
# A child process's answer, or its start, never takes this long on a healthy machine.
WAIT = 60.0


@dataclass
class Cached:
    """A test's own redis-server, the engine on it with the client-side cache on."""

    server: RedisServer
    raw: redis.Redis

    def cache(self) -> ClientCache:
        cache = client_cache()
        assert cache is not None
        return cache


@contextmanager
def new_pools_disconnected() -> Iterator[None]:
    """django-redis keeps one pool per URL for the life of the process: the pools made
    meanwhile (for servers about to stop) are disconnected and forgotten at the end."""
    pools: dict[str, Any] = ConnectionFactory._pools
    known = set(pools)
    try:
        yield
    finally:
        for gone in set(pools) - known:
            pools.pop(gone).disconnect()


@contextmanager
def cached_redis(*options: str, cache_bytes: int = CACHE_BYTES, url: str = "") -> Iterator[Cached]:
    server = RedisServer(free_port(), *options)
    raw = None
    try:
        server.start()
        caches = redis_caches(server.port)
        if url:
            caches["sessions"]["LOCATION"] = url.format(port=server.port)
        with (
            new_pools_disconnected(),
            override_settings(
                CACHES=caches,
                SESSION_ENGINE=ENGINE,
                SESSION_CACHE_ALIAS="sessions",
                MEMOPT_REDIS_CLIENT_CACHE=cache_bytes,
            ),
        ):
            raw = redis.Redis(port=server.port)
            yield Cached(server, raw)
    finally:
        if raw is not None:
            raw.close()
        server.cleanup()


@pytest.fixture
def cached() -> Iterator[Cached]:
    with cached_redis() as running:
        yield running


def counted() -> dict[str, int]:
    return counters.process_totals()


def new_session(**fields: Any) -> str:
    session = SessionStore()
    session.update(fields)
    session.save()
    assert session.session_key is not None
    return session.session_key


def load(session_key: str) -> dict[str, Any] | None:
    """The session's fields as a fresh request's load sees them; ``None`` if it is gone."""
    session = SessionStore(session_key)
    fields = dict(session.items())
    return None if session.session_key is None else fields


def name(session_key: str) -> bytes:
    return (PREFIX + session_key).encode()


def served_from_cache(session_key: str) -> bool:
    before = counted().get("cache_hits", 0)
    load(session_key)
    return counted().get("cache_hits", 0) > before


def hold(cache: ClientCache, key: bytes) -> CachedSession:
    """``key`` held by ``cache``, as a load from Redis leaves it: the entry."""
    entry = CachedSession(key, {"a": b"x"}, int(time.time() * 1000) + 600_000, b"t" * 8)
    with cache.loading(key) as fill:
        fill(entry)
    return entry


# -- what it holds -------------------------------------------------------------------------


def test_the_deploy_check_is_quiet_on_a_server_that_tracks(cached: Cached) -> None:
    assert check_client_cache_server() == []
    deadline = time.monotonic() + 5  # the check closed the connections it opened
    while [c for c in cached.raw.client_list() if "P" in c["flags"] or "t" in c["flags"]]:
        assert time.monotonic() < deadline, "the check left a tracking connection open"
        time.sleep(0.01)


def test_a_held_session_is_served_and_a_write_elsewhere_drops_it(cached: Cached) -> None:
    key = new_session(a=1)
    assert load(key) == {"a": 1}  # loaded: now held
    assert served_from_cache(key)
    # Written by another client, behind the engine's back: the next load sees it.
    cached.raw.pexpire(name(key), 600_000)
    assert not served_from_cache(key)
    assert served_from_cache(key)
    cached.raw.delete(name(key))
    assert load(key) is None
    assert counted().get("cache_invalidations", 0) >= 2


def test_the_bound_in_bytes_holds_and_the_least_recently_used_go_first() -> None:
    per_session = 2000
    with cached_redis(cache_bytes=10 * per_session) as running:
        keys = [new_session(blob="x" * 500, n=n) for n in range(30)]
        for key in keys:
            load(key)
        cache = running.cache()
        assert 0 < cache.used <= cache.max_bytes
        assert cache.used == sum(entry.size for entry in cache.entries.values())
        held = list(cache.entries)
        assert held == [name(key) for key in keys[-len(held) :]], "not the most recent ones"
        # Each entry counts its fields' bytes and more, not its stored size alone.
        for entry in cache.entries.values():
            stored = sum(len(field) + len(value) for field, value in entry.fields.items())
            assert entry.size >= stored + ENTRY_OVERHEAD
        # A load moves a session to the back of the queue: the next to go is another.
        oldest = keys[-len(held)]
        assert served_from_cache(oldest)
        load(new_session(blob="y" * 500))
        assert name(oldest) in cache.entries
        assert name(keys[-len(held) + 1]) not in cache.entries
        # A session larger than the whole bound is never held.
        big = new_session(blob=os.urandom(10 * per_session).hex())  # hex: compresses to half
        load(big)
        assert name(big) not in cache.entries
        assert not served_from_cache(big)
        assert cache.used <= cache.max_bytes
        assert counted().get("cache_bytes", 0) >= cache.used  # this thread's, at least


def test_own_writes_keep_the_held_copy_current(cached: Cached) -> None:
    key = new_session(a=1, b=2)
    load(key)
    for value in range(3, 20):
        session = SessionStore(key)
        session["a"] = value
        del session["b"]
        session["b"] = value
        session.save()
        assert served_from_cache(key), "an own write dropped the held copy"
        assert load(key) == {"a": value, "b": value}
    # An expiry refresh (a save that changes nothing) moves the held deadline.
    cache = cached.cache()
    before = cache.entries[name(key)].deadline_ms
    time.sleep(0.01)
    session = SessionStore(key)
    session.load()
    session.save()
    assert served_from_cache(key)
    assert cache.entries[name(key)].deadline_ms > before
    stored_deadline = redis_contract.stored_session(cached.raw, name(key))[2]
    assert cache.entries[name(key)].deadline_ms == stored_deadline
    # A write by another client between the copy and the save: the copy is dropped.
    loaded = SessionStore(key)
    loaded["c"] = 1
    cached.raw.pexpire(name(key), 700_000)
    loaded.save()
    assert not served_from_cache(key)
    assert load(key) == {"a": 19, "b": 19, "c": 1}


def test_a_patched_copy_counts_what_a_new_entry_of_its_fields_counts() -> None:
    held = CachedSession(b"k", {"a": b"1" * 10, "b": b"2" * 300, "c": b"3"}, 5, b"t" * 8)
    sets = {"a": b"x" * 2000, "d": b"4" * 70, "e": b""}
    patched = held.patched(sets, ["b", "gone"], 9, b"u" * 8)
    assert patched.fields == {"a": b"x" * 2000, "c": b"3", "d": b"4" * 70, "e": b""}
    assert (patched.deadline_ms, patched.token, patched.verified) == (9, b"u" * 8, False)
    assert held.fields["a"] == b"1" * 10 and held.verified  # the held copy is untouched
    assert patched.size == CachedSession(b"k", patched.fields, 9, b"u" * 8).size


def test_a_session_within_a_second_of_its_deadline_is_not_served(cached: Cached) -> None:
    session = SessionStore()
    session["a"] = 1
    session.set_expiry(1)
    session.save()
    assert session.session_key is not None
    load(session.session_key)
    assert not served_from_cache(session.session_key)


def test_off_by_default_and_with_zero() -> None:
    with override_settings(SESSION_ENGINE=ENGINE, SESSION_CACHE_ALIAS="sessions"):
        assert client_cache() is None
    with override_settings(MEMOPT_REDIS_CLIENT_CACHE=0):
        assert client_cache() is None


def _in_forked_child(session_key: str, answers: Any) -> None:
    try:
        first = served_from_cache(session_key)
        deadline = time.monotonic() + 10
        while not served_from_cache(session_key):  # its own channel, confirmed
            assert time.monotonic() < deadline, "the child's cache never served"
            time.sleep(0.01)
        answers.send((first, load(session_key)))
    except Exception:
        answers.send(("error", traceback.format_exc()))


def test_a_forked_child_starts_empty_on_its_own_channel(cached: Cached) -> None:
    key = new_session(a=1)
    load(key)
    assert served_from_cache(key)
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=_in_forked_child, args=(key, theirs))
    child.start()
    assert ours.poll(WAIT)
    served_first, loaded = ours.recv()
    child.join(WAIT)
    assert served_first is False, "the child served its parent's copy"
    assert loaded == {"a": 1}
    # The parent's channel is still its own, and still told of writes.
    assert served_from_cache(key)
    cached.raw.delete(name(key))
    assert load(key) is None


def test_a_resp3_pool_and_another_database(cached: Cached) -> None:
    # The channel speaks RESP2 whatever the pool speaks; Redis tracks key names across
    # databases, so a database of its own changes nothing.
    caches = redis_caches(cached.server.port)
    caches["sessions"]["LOCATION"] = cached.server.url.replace("/0", "/1")
    caches["sessions"]["OPTIONS"]["CONNECTION_POOL_KWARGS"] = {"protocol": 3}
    with override_settings(CACHES=caches):
        key = new_session(a=1)
        assert load(key) == {"a": 1}
        assert served_from_cache(key)
        session = SessionStore(key)
        session["a"] = 2
        session.save()
        assert served_from_cache(key)
        assert load(key) == {"a": 2}
        db1 = redis.Redis(port=cached.server.port, db=1)
        db1.delete(name(key))
        db1.close()
        assert load(key) is None


def test_no_serving_unless_the_heartbeat_comes_back_on_the_channel(cached: Cached) -> None:
    """The heartbeat goes through the data pool and is not replicated: a channel that talks
    to another server (a proxy, a failover the pool saw first) or to a replica of the
    pool's (a demoted primary, a DNS name a failover moved) never hears it, and never
    serves."""
    other = RedisServer(free_port()).start()
    replica = RedisServer(free_port(), "--replicaof", "127.0.0.1", str(cached.server.port))
    cached.raw.config_set("repl-diskless-sync-delay", 0)  # a replica in sync at once
    try:
        replica.start()
        with redis.Redis(port=replica.port) as replica_raw:
            deadline = time.monotonic() + 10
            while replica_raw.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica never caught up"
                time.sleep(0.05)
        key = name("held")
        for channel_on, serves in ((other, False), (replica, False), (cached.server, True)):
            pool = redis.ConnectionPool(port=channel_on.port)
            cache = ClientCache(
                functools.partial(lambda pool: pool, pool),
                redis_backend._heartbeat,  # through the engine's pool, to cached.server
                redis_backend.PROBE,
                PREFIX,
                CACHE_BYTES,
            )
            bypasses = counted().get("cache_bypasses", 0)
            entry = hold(cache, key)
            assert (cache.get(key) is entry) == serves
            assert counted().get("cache_bypasses", 0) - bypasses == (0 if serves else 1)
            # Nor later: a replicated heartbeat would reach a replica's channel within
            # milliseconds here.
            finish = time.monotonic() + (0 if serves else 1)
            while time.monotonic() < finish:
                hold(cache, key)
                assert cache.get(key) is None, f"served on a channel to {channel_on.port}"
                time.sleep(0.02)
            cache.close()
            pool.disconnect()
    finally:
        replica.cleanup()
        other.cleanup()


# -- failures ------------------------------------------------------------------------------


def test_flushdb_flushes_and_a_restart_flushes_then_serves_again(cached: Cached) -> None:
    key = new_session(a=1)
    load(key)
    assert served_from_cache(key)
    flushes = counted().get("cache_flushes", 0)
    cached.raw.flushdb()
    assert load(key) is None
    assert counted().get("cache_flushes", 0) > flushes
    key = new_session(a=2)
    load(key)
    assert served_from_cache(key)
    # Restarted without its data: the session is gone, the cache flushed; then, once
    # reconnected, it serves again.
    cached.server.stop()
    cached.server.start()
    assert load(key) is None
    key = new_session(a=3)
    deadline = time.monotonic() + 10
    while not served_from_cache(key):
        assert time.monotonic() < deadline, "the cache never came back after the restart"
        time.sleep(0.05)
    assert load(key) == {"a": 3}


def test_script_flush_reloads_the_scripts_and_the_held_copies_stay_current(
    cached: Cached,
) -> None:
    """After ``SCRIPT FLUSH`` the save, refresh and heartbeat scripts are loaded again at
    their next use, and still report the token they replaced: own writes keep patching the
    held copy, and another process's writes and logouts are seen."""
    mine, theirs, gone = (new_session(v=0) for _ in range(3))
    for key in (mine, theirs, gone):
        load(key)
        assert served_from_cache(key)
    cache = cached.cache()

    def scripts() -> int:
        return int(cached.raw.info("memory")["number_of_cached_scripts"])

    with writer_process(cached.server.port) as ask:
        for value in range(1, 4):
            cached.raw.script_flush()
            assert scripts() == 0
            session = SessionStore(mine)
            session["v"] = value
            session.save()  # the save script, loaded again
            assert scripts() >= 1
            assert served_from_cache(mine), "an own save after SCRIPT FLUSH dropped the copy"
            assert load(mine) == {"v": value}
            cached.raw.script_flush()
            held = cache.entries[name(mine)].deadline_ms
            time.sleep(0.01)
            session = SessionStore(mine)
            session.load()
            session.save()  # nothing changed: the refresh script, loaded again
            assert served_from_cache(mine), "an own refresh after SCRIPT FLUSH dropped the copy"
            refreshed = cache.entries[name(mine)].deadline_ms
            assert refreshed > held
            assert refreshed == redis_contract.stored_session(cached.raw, name(mine))[2]
            cached.raw.script_flush()
            ask("set", theirs, value)  # another process's save, its script loaded again
            assert load(theirs) == {"v": value}
        # The heartbeat's script was flushed too: the cache is confirmed again, and serves.
        deadline = time.monotonic() + 10
        while not served_from_cache(theirs):
            assert time.monotonic() < deadline, "the cache never served after SCRIPT FLUSH"
            time.sleep(0.05)
        ask("flush", gone)  # a logout elsewhere
        assert load(gone) is None
        assert load(mine) == {"v": 3}


def client_id(raw: redis.Redis, sock: socket.socket) -> int:
    """The id Redis gives the connection of ``sock``."""
    host, port = sock.getsockname()[:2]
    address = f"{host}:{port}"
    (found,) = [c["id"] for c in raw.client_list() if c["addr"] == address]
    return int(found)


@pytest.mark.parametrize("killed", ["channel", "probe connection"])
def test_a_channel_or_probe_connection_killed_is_bypassed_at_once_then_reconnected(
    cached: Cached, monkeypatch: pytest.MonkeyPatch, killed: str
) -> None:
    """``CLIENT KILL ID``: the very next load reads Redis, and sees a logout made while the
    connection was gone; then the cache reconnects and serves again. (The channel is its
    own redirect target: its tracking ends with it, never broken apart from it.)"""
    monkeypatch.setattr(client_cache_module, "RECONNECT_EVERY", 0.02)
    cache = cached.cache()
    for attempt in range(2):  # the second time on the connections reopened after the first
        key, other = new_session(v=attempt), new_session(v=attempt)
        for session_key in (key, other):
            load(session_key)
            assert served_from_cache(session_key)
        link = cache._channel if killed == "channel" else cache._prober
        assert link is not None
        flushes = counted().get("cache_flushes", 0)
        cached.raw.client_kill_filter(_id=client_id(cached.raw, link.sock))
        cached.raw.delete(name(key))  # no channel hears this one
        bypasses = counted().get("cache_bypasses", 0)
        assert load(key) is None
        assert counted().get("cache_bypasses", 0) == bypasses + 1, "not bypassed"
        assert counted().get("cache_flushes", 0) > flushes
        assert not served_from_cache(other), "a copy held before the kill was served"
        deadline = time.monotonic() + 10
        while not served_from_cache(other):
            assert time.monotonic() < deadline, "the cache never served again"
            time.sleep(0.02)
        assert cache._channel is not link and cache._prober is not link


def test_a_sentinel_failover_flushes_then_the_cache_serves_from_the_new_primary() -> None:
    """``SENTINEL FAILOVER``: the replica is promoted; the old primary, still up, keeps the
    connections it has until Sentinel makes it a replica of the new one and closes its
    clients. No copy held before is served after it; what another process wrote on the
    new primary meanwhile, unheard by the channel, is seen; the cache serves again once
    its channel is on the new primary, where the heartbeat goes."""
    fast_sync = ("--repl-diskless-sync-delay", "0")
    primary = RedisServer(free_port(), *fast_sync)
    replica = RedisServer(free_port(), *fast_sync, "--replicaof", "127.0.0.1", str(primary.port))
    try:
        primary.start()
        replica.start()
        with (
            sentinel_for(primary, down_after_milliseconds=1000, failover_timeout=2000) as port,
            redis.Redis(port=port) as sentinel,
        ):
            deadline = time.monotonic() + 30
            while not any(
                found["is_slave"] and found["master-link-status"] == "ok"
                for found in sentinel.sentinel_slaves("mymaster")
            ):
                assert time.monotonic() < deadline, "the sentinel never saw the replica"
                time.sleep(0.05)
            caches = redis_caches(port)
            caches["sessions"]["LOCATION"] = "redis://mymaster/0"
            caches["sessions"]["OPTIONS"] |= {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": [("127.0.0.1", port)],
            }
            with (
                new_pools_disconnected(),
                override_settings(
                    CACHES=caches,
                    SESSION_ENGINE=ENGINE,
                    SESSION_CACHE_ALIAS="sessions",
                    MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES,
                ),
                writer_process(replica.port) as ask,  # another process, on the new primary
            ):
                unchanged, changed, gone = (new_session(v=0) for _ in range(3))
                for key in (unchanged, changed, gone):
                    load(key)
                    assert served_from_cache(key)
                cache = client_cache()
                assert cache is not None and cache._channel is not None
                assert cache._channel.sock.getpeername()[1] == primary.port
                flushes = counted().get("cache_flushes", 0)

                sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
                deadline = time.monotonic() + 30
                while int(sentinel.sentinel_get_master_addr_by_name("mymaster")[1]) != (
                    replica.port
                ):
                    assert time.monotonic() < deadline, "the replica was never promoted"
                    time.sleep(0.02)
                # Written on the new primary while the channel is still on the old one.
                ask("set", changed, 1)
                ask("delete", gone)
                while role(primary) != b"slave":  # then Sentinel has closed its clients
                    assert time.monotonic() < deadline, "the old primary was never demoted"
                    time.sleep(0.05)

                assert not served_from_cache(unchanged), "a copy held before was served"
                assert counted().get("cache_flushes", 0) > flushes
                assert load(changed) == {"v": 1}
                assert load(gone) is None
                deadline = time.monotonic() + 10
                while not served_from_cache(unchanged):
                    assert time.monotonic() < deadline, "the cache never served again"
                    time.sleep(0.05)
                assert cache._channel is not None
                assert cache._channel.sock.getpeername()[1] == replica.port
                assert load(changed) == {"v": 1}
                ask("set", changed, 2)  # heard on the new channel
                assert load(changed) == {"v": 2}
    finally:
        replica.cleanup()
        primary.cleanup()


def role(server: RedisServer) -> bytes:
    """What ``server`` says it is (``ROLE``), on a connection of its own."""
    with redis.Redis(port=server.port, single_connection_client=True) as client:
        found: bytes = client.execute_command("ROLE")[0]
        return found


@pytest.mark.parametrize("refusal", ["an ACL without CLIENT", "threaded I/O"])
def test_a_server_refusing_tracking_leaves_the_process_without_cache_said_once(
    caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    caplog.set_level(logging.WARNING, logger="django_memopt.client_cache")
    refused_before = counted().get("cache_refusals", 0)
    if refusal == "threaded I/O":  # Redis's order of invalidations and replies is lost
        options, url = ("--io-threads", "2", "--io-threads-do-reads", "yes"), ""
    else:
        options, url = (), "redis://app:secret@127.0.0.1:{port}/0"
    with cached_redis(*options, url=url) as running:
        if url:
            running.raw.execute_command(
                "ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-client"
            )
        warned = check_client_cache_server()  # manage.py check --deploy knows it first
        assert [message.id for message in warned] == ["django_memopt.W011"], warned
        key = new_session(a=1)
        for _ in range(20):
            assert load(key) == {"a": 1}
        assert not served_from_cache(key)
        reason = running.cache().refused
        assert reason is not None and reason in warned[0].msg
        assert reason is not None
        assert ("threaded I/O" in reason) == (refusal == "threaded I/O"), reason
        assert ("NOPERM" in reason or "permission" in reason) == bool(url), reason
    refusals = [r for r in caplog.records if "client-side session cache is off" in r.getMessage()]
    assert len(refusals) == 1, refusals
    assert counted().get("cache_refusals", 0) == refused_before + 1  # memopt_stats counts it


# -- the guarantee, across processes -------------------------------------------------------


@contextmanager
def writer_process(port: int) -> Iterator[Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=client_cache_workers.writer, args=(port, PREFIX, theirs), daemon=True
    )
    process.start()
    try:
        assert ours.poll(WAIT), "the writer never started"
        kind, detail = ours.recv()
        assert kind == "ready", detail

        def ask(operation: str, session_key: str | None = None, value: Any = None) -> Any:
            ours.send((operation, session_key, value))
            assert ours.poll(WAIT), f"the writer did not answer {operation}"
            kind, answer = ours.recv()
            assert kind in ("done", "stopped"), answer
            return answer

        yield ask
        ask("stop")
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


def run_rounds(cached: Cached, ask: Any, rounds: int, kill_every: int = 0) -> dict[str, int]:
    """A (this process) and B (the writer) on a few sessions: in each round B changes,
    deletes, logs out or cycles one, or nothing happens, and A's next load, started after
    B's answer, must show it; A also loads the others and writes its own field."""
    sessions = {ask("create", value=0): 0 for _ in range(4)}  # session key -> B's value
    own: dict[str, int] = {}  # session key -> A's own field
    stale: list[str] = []
    checked = 0
    hits_before = counted().get("cache_hits", 0)
    for round_number in range(1, rounds + 1):
        key = list(sessions)[round_number % len(sessions)]
        action = round_number % 11
        if kill_every and round_number % kill_every == 0:
            cached.raw.client_kill_filter(_type="pubsub")
        if action in (0, 1, 2, 3):
            sessions[key] = round_number
            ask("set", key, round_number)
        elif action == 4:
            ask("delete", key)
            del sessions[key]
            own.pop(key, None)
            expected_gone = key
            key = ask("create", value=round_number)
            sessions[key] = round_number
            if load(expected_gone) is not None:
                stale.append(f"round {round_number}: a deleted session loaded")
            checked += 1
        elif action == 5:
            ask("flush", key)
            del sessions[key]
            own.pop(key, None)
            if load(key) is not None:
                stale.append(f"round {round_number}: a logged-out session loaded")
            checked += 1
            key = ask("create", value=round_number)
            sessions[key] = round_number
        elif action == 6:
            new_key = ask("cycle", key)
            sessions[new_key] = sessions.pop(key)
            if key in own:
                own[new_key] = own.pop(key)
            if load(key) is not None:
                stale.append(f"round {round_number}: the old key of a cycled session loaded")
            checked += 1
            key = new_key
        elif action == 7:  # A's own write, then B's, then A's load
            session = SessionStore(key)
            session["own"] = own[key] = round_number
            session.save()
            sessions[key] = round_number
            ask("set", key, round_number)
        # A's next load of every session shows what B and A last wrote.
        for session_key, value in sessions.items():
            expected = {"v": value} | ({"own": own[session_key]} if session_key in own else {})
            found = load(session_key)
            checked += 1
            if found != expected:
                stale.append(f"round {round_number}: {found} instead of {expected}")
    assert not stale, f"{len(stale)} stale loads of {checked}: {stale[:5]}"
    return {"checked": checked, "hits": counted().get("cache_hits", 0) - hits_before}


def test_another_process_s_writes_logouts_and_key_changes_are_seen_at_once(
    cached: Cached,
) -> None:
    with writer_process(cached.server.port) as ask:
        figures = run_rounds(cached, ask, rounds=3000)
    assert figures["checked"] > 12_000
    assert figures["hits"] > figures["checked"] // 4, figures  # the cache was used


def test_no_stale_load_while_the_channel_is_killed_again_and_again(
    cached: Cached, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reconnected within a few rounds, so that most kills find a channel serving.
    monkeypatch.setattr(client_cache_module, "RECONNECT_EVERY", 0.02)
    with writer_process(cached.server.port) as ask:
        before = counted()
        figures = run_rounds(cached, ask, rounds=3000, kill_every=97)
    after = counted()
    flushes = after.get("cache_flushes", 0) - before.get("cache_flushes", 0)
    assert flushes >= 10, flushes  # it noticed each kill: flushed, bypassed, reconnected
    assert after.get("cache_bypasses", 0) > before.get("cache_bypasses", 0)
    assert figures["hits"] > figures["checked"] // 4, figures


def test_own_writes_racing_another_process_s_never_leave_a_stale_copy(cached: Cached) -> None:
    """A writes its own field of the sessions B keeps writing: a write of B's that lands
    right after A's comes back in the same message as A's own, and only the probe tells
    A's patched copy is not current. Every load must show each of B's writes answered
    before it started."""
    session_keys = [new_session(v=0, own=0) for _ in range(3)]
    context = multiprocessing.get_context("spawn")
    acknowledged = context.Array("q", len(session_keys), lock=False)
    stop, ready = context.Event(), context.Event()
    process = context.Process(
        target=client_cache_workers.racing_writer,
        args=(cached.server.port, PREFIX, session_keys, acknowledged, stop, ready),
        daemon=True,
    )
    process.start()
    stale: list[str] = []
    loads = 0
    hits_before = counted().get("cache_hits", 0)
    try:
        assert ready.wait(WAIT), "the writer never started"
        own = 0
        finish = time.monotonic() + 4
        while time.monotonic() < finish:
            for at, key in enumerate(session_keys):
                own += 1
                session = SessionStore(key)
                session["own"] = own
                session.save()
                for _ in range(3):
                    floor = acknowledged[at]
                    found = load(key)
                    loads += 1
                    if found is None or found["v"] < floor or found["own"] != own:
                        stale.append(f"{found} after v={floor}, own={own}")
    finally:
        stop.set()
        process.join(10)
        if process.is_alive():
            process.kill()
    hits = counted().get("cache_hits", 0) - hits_before
    assert not stale, f"{len(stale)} stale loads of {loads}: {stale[:5]}"
    assert loads > 3000 and hits > 0, (loads, hits)


def test_a_lagging_channel_is_fenced_before_it_serves(cached: Cached) -> None:
    """Writes of other keys under the prefix pour in faster than this process reads its
    channel, so Redis holds some of their invalidations back: a logout that follows them
    must still be seen."""
    keys = [new_session(v=0) for _ in range(3)]
    for key in keys:
        load(key)
        assert served_from_cache(key)
    # A small receive buffer, so that Redis must hold messages back (on loopback the
    # kernel's autotuned one takes in megabytes at once).
    channel = cached.cache()._channel
    assert channel is not None
    channel.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    for key in keys:
        with cached.raw.pipeline(transaction=False) as pipe:
            for n in range(100_000):
                pipe.set(f"{PREFIX}~noise:{n}", b"x", px=60_000)
            pipe.delete(name(key))
            pipe.execute()
        assert load(key) is None, "a logout behind a flood of writes was not seen"


# -- threads -------------------------------------------------------------------------------


class Stall:
    """Holds up the calls made while it is on, until released: ``entered`` is set once
    one waits; ``calls`` counts them all."""

    def __init__(self) -> None:
        self.on, self.entered, self.released = (threading.Event() for _ in range(3))
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.on.is_set():
            self.entered.set()
            self.released.wait(WAIT)


def in_thread(action: Any) -> tuple[threading.Thread, list[Any]]:
    """``action()`` started in a thread of its own: the thread, and a list that gets its
    result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(action()), daemon=True)
    thread.start()
    return thread, result


def test_a_slow_heartbeat_holds_up_no_other_thread(
    cached: Cached, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A heartbeat due at every call that finds none outstanding, and silence tolerated long
    # enough that only the stall, never the machine's pace, decides what happens.
    monkeypatch.setattr(client_cache_module, "HEARTBEAT", 0.0)
    monkeypatch.setattr(client_cache_module, "MAX_SILENCE", WAIT)
    stall = Stall()

    def heartbeat(name: bytes) -> None:
        stall()
        cached.raw.set(name, b"1", px=60_000)

    pool = redis.ConnectionPool(port=cached.server.port)
    cache = ClientCache(lambda: pool, heartbeat, redis_backend.PROBE, PREFIX, CACHE_BYTES)
    try:
        key = name("held")
        entry = hold(cache, key)
        assert cache.get(key) is entry
        stall.on.set()
        beating, beating_got = in_thread(lambda: cache.get(key))
        assert stall.entered.wait(WAIT), "the heartbeat was never sent"
        beats = stall.calls
        other, other_got = in_thread(lambda: cache.get(key))
        other.join(WAIT / 4)
        assert not other.is_alive(), "a get waited for another thread's heartbeat"
        assert beating.is_alive(), "the heartbeat was not outstanding meanwhile"
        assert other_got == [entry], "not served while the last confirmation was recent"
        assert stall.calls == beats, "a second heartbeat while one was outstanding"
        stall.released.set()
        beating.join(WAIT)
        assert beating_got == [entry]
    finally:
        stall.released.set()
        cache.close()
        pool.disconnect()


def test_a_reconnect_makes_other_threads_bypass_and_a_close_meanwhile_discards_it(
    cached: Cached, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reconnecting at once allowed: only the reconnect in progress keeps another thread
    # from starting its own.
    monkeypatch.setattr(client_cache_module, "RECONNECT_EVERY", 0.0)
    stall = Stall()
    pool = redis.ConnectionPool(port=cached.server.port)

    def data_pool() -> redis.ConnectionPool:
        stall()
        return pool

    def heartbeat(name: bytes) -> None:
        cached.raw.set(name, b"1", px=60_000)

    cache = ClientCache(data_pool, heartbeat, redis_backend.PROBE, PREFIX, CACHE_BYTES)
    try:
        key = name("held")  # the engine's own cache left unused: no channel of its own
        stall.on.set()
        connecting, connecting_got = in_thread(lambda: cache.get(key))
        assert stall.entered.wait(WAIT), "no reconnect was started"

        def get_then_close() -> tuple[CachedSession | None, int]:
            bypasses = counted().get("cache_bypasses", 0)
            got = cache.get(key)
            bypassed = counted().get("cache_bypasses", 0) - bypasses
            cache.close()
            return got, bypassed

        other, other_got = in_thread(get_then_close)
        other.join(WAIT / 4)
        assert not other.is_alive(), "a get or a close waited for another thread's reconnect"
        assert connecting.is_alive(), "the reconnect was not in progress meanwhile"
        assert other_got == [(None, 1)], "not a bypass"
        assert stall.calls == 1, "a second reconnect while one was in progress"
        stall.released.set()
        connecting.join(WAIT)
        # The channel opened after the close was discarded: closed, never used.
        assert connecting_got == [None]
        assert cache._channel is None
        deadline = time.monotonic() + 10
        while cached.raw.client_list(_type="pubsub"):
            assert time.monotonic() < deadline, "the discarded channel was left open"
            time.sleep(0.02)
        # The next call reconnects, and the cache serves again.
        stall.on.clear()
        entry = hold(cache, key)
        assert cache.get(key) is entry
    finally:
        stall.released.set()
        cache.close()
        pool.disconnect()


# -- every contract, with the cache on -----------------------------------------------------


class CachedRedisStore(redis_contract.RedisStore):
    """The store contract's Redis store, with this process's client-side cache on."""

    @classmethod
    @contextmanager
    def isolated(cls, tmp_path: Path) -> Iterator[redis_contract.RedisStore]:
        with (
            override_settings(MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES),
            super().isolated(tmp_path) as store,
        ):
            yield store


class TestStoreContractCached(redis_contract.TestStoreContract):
    store_type = CachedRedisStore


class TestUserSessionsCached(redis_contract.TestUserSessions):
    store_type = CachedRedisStore


@override_settings(MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES)
class TestContractCached(redis_contract.TestContract):
    pass


@override_settings(MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES)
class TestDjangoSessionTestsCached(redis_contract.TestDjangoSessionTests):
    pass


@override_settings(MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES)
class TestMiddlewareFlowsCached(redis_contract.TestMiddlewareFlows):
    pass


class CachedDjangoCacheRedisStore(redis_contract.DjangoCacheRedisStore):
    """The same, the connection (and so the cache's channel) made by Django's own
    ``RedisCache``."""

    @classmethod
    @contextmanager
    def isolated(cls, tmp_path: Path) -> Iterator[redis_contract.RedisStore]:
        with (
            override_settings(MEMOPT_REDIS_CLIENT_CACHE=CACHE_BYTES),
            super().isolated(tmp_path) as store,
        ):
            yield store


class TestStoreContractCachedOnDjangoCache(redis_contract.TestStoreContract):
    store_type = CachedDjangoCacheRedisStore
