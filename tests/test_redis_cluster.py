"""The Redis engine on a Redis Cluster (three primaries with a replica each, on loopback):
the session and store contracts, Django's own session tests and the middleware flows as on
one server, then what only a cluster has: sessions spread over the shards, a user's index
in one slot, slots moving (``MOVED`` / ``ASK``), a primary killed mid-run, and writes
that wait for a replica."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import sessions_tests.tests as django_session_tests
from django.conf import settings as django_settings
from django.core.cache import caches
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import SimpleTestCase, override_settings
from redis.cluster import RedisCluster as ClusterClient

import tests.test_redis_store as store_tests
from django_memopt.backends import redis as engine
from django_memopt.backends.redis import SessionStore, SessionStoreUnavailable, connection
from django_memopt.user_sessions import end_all_sessions, sessions_of
from tests.contract import (
    GATE_MIDDLEWARE,
    MiddlewareFlows,
    SessionContract,
    StoreContract,
    UserSessionsContract,
)
from tests.redis_cluster import RedisCluster
from tests.redis_workers import DJANGO_REDIS, redis_caches
from tests.session_workers import log_in
from tests.test_redis_contract import REDIS, RedisStore, hash_name, stored_session

CLUSTER = {
    **REDIS,
    "CACHES": redis_caches(django_settings.REDIS_CLUSTER_TEST_PORTS[0], cluster=True),
}


@pytest.fixture(autouse=True)
def _cluster_running(redis_cluster: RedisCluster) -> None:
    """Every test here runs on the suite's Redis Cluster (started by the first)."""


def raw_client() -> ClusterClient:
    return ClusterClient(host="127.0.0.1", port=django_settings.REDIS_CLUSTER_TEST_PORTS[0])


def user_key(prefix: str, kind: str, user: str) -> bytes:
    """A key of ``user``'s index on a cluster (docs/redis.md): the user ID a hash tag."""
    return f"{prefix}~{kind}:{{{user}}}".encode()


class RedisClusterStore(RedisStore):
    """The suite's Redis Cluster, under a key prefix of the test's own."""

    def __init__(self, raw: Any, prefix: str) -> None:
        self.raw, self.prefix = raw, prefix
        self.setup_args = (django_settings.REDIS_CLUSTER_TEST_PORTS[0], prefix, DJANGO_REDIS, True)

    @classmethod
    @contextmanager
    def isolated(cls, tmp_path: Path) -> Iterator[RedisClusterStore]:
        prefix = f"memopt-test:{uuid.uuid4().hex}:"
        raw = raw_client()
        try:
            with override_settings(**CLUSTER, MEMOPT_REDIS_KEY_PREFIX=prefix):
                assert engine.is_cluster()
                yield cls(raw, prefix)
        finally:
            for key in list(raw.scan_iter(match=f"{prefix}*")):
                raw.delete(key)
            raw.close()

    def stored_keys(self) -> list[str]:
        # Of every primary (KEYS asks one node); less <prefix>~<...> keys.
        rests = [key[len(self.prefix) :] for key in self.raw.scan_iter(match=f"{self.prefix}*")]
        return sorted(rest.decode() for rest in rests if b"~" not in rest)

    def reopen(self) -> None:
        connection().disconnect_connection_pools()

    def damage(self, session_key: str, kind: str) -> None:
        name = hash_name(session_key, self.prefix)
        if kind == "a list":  # a cluster pipeline does not chain
            self.raw.delete(name)
            self.raw.rpush(name, b"x")
            return
        super().damage(session_key, kind)

    def index_size(self, user: str) -> int:
        return int(self.raw.hlen(user_key(self.prefix, "user", user))) + int(
            self.raw.zcard(user_key(self.prefix, "user-until", user))
        )

    def tamper_index(self, user: str) -> None:
        name = user_key(self.prefix, "user", user)
        for handle, value in self.raw.hgetall(name).items():
            self.raw.hset(name, handle, value[:-1] + bytes((value[-1] ^ 1,)))


class TestClusterStoreContract(StoreContract):
    store_type = RedisClusterStore


class TestClusterUserSessions(UserSessionsContract):
    store_type = RedisClusterStore


@override_settings(**CLUSTER)
class TestClusterContract(SessionContract, SimpleTestCase):
    backend = SessionStore


@override_settings(MEMOPT_USER_SESSIONS=True)
class TestClusterContractWithUserSessions(TestClusterContract):
    pass


@override_settings(**CLUSTER)
class TestClusterDjangoSessionTests(django_session_tests.SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


@override_settings(MEMOPT_USER_SESSIONS=True)
class TestClusterDjangoSessionTestsWithUserSessions(TestClusterDjangoSessionTests):
    pass


@override_settings(**CLUSTER)
class TestClusterMiddlewareFlows(MiddlewareFlows, SimpleTestCase):
    engine = "django_memopt.backends.redis"


class TestClusterMiddlewareFlowsThroughTheGate(TestClusterMiddlewareFlows):
    middleware = GATE_MIDDLEWARE


@pytest.mark.parametrize(
    "test",
    [
        store_tests.test_random_deltas_across_the_string_limit_match_a_model,
        store_tests.test_threads_writing_their_own_fields_across_the_limit_lose_nothing,
    ],
    ids=["random deltas across the string limit", "threads writing across the string limit"],
)
def test_the_string_and_hash_forms_on_a_cluster(test: Callable[[Any], None]) -> None:
    # Two of test_redis_store.py's tests on one server, here on the cluster (under the
    # default prefix, as they name keys).
    with override_settings(**CLUSTER), raw_client() as raw:
        test(SimpleNamespace(raw=raw, log=None))


# -- what only a cluster has -----------------------------------------------------------------


@contextmanager
def cluster_store(**settings: Any) -> Iterator[RedisClusterStore]:
    with RedisClusterStore.isolated(Path()) as store, override_settings(**settings):
        yield store


def primary_of(raw: ClusterClient, key: bytes) -> str:
    return str(raw.get_node_from_key(key).name)


def sessions_on_every_primary(raw: ClusterClient, prefix: str, per_primary: int) -> list[str]:
    """Session keys, created, ``per_primary`` of them on each primary."""
    by_primary: dict[str, list[str]] = {node.name: [] for node in raw.get_primaries()}
    while min(map(len, by_primary.values())) < per_primary:
        session = SessionStore()
        session["n"] = 0
        session.create()
        assert session.session_key is not None
        by_primary[primary_of(raw, hash_name(session.session_key, prefix))].append(
            session.session_key
        )
    return [key for keys in by_primary.values() for key in keys]


def test_sessions_spread_over_every_primary_and_listings_scan_them_all(tmp_path: Path) -> None:
    with cluster_store() as store:
        keys = sessions_on_every_primary(store.raw, store.prefix, 3)
        # One key per session, each on the primary its slot says.
        assert sorted(keys) == store.stored_keys()
        listed = dict(SessionStore.iter_sessions())
        assert set(listed) == set(keys)
        figures = SessionStore.store_figures(sample=10_000)
        assert figures["sessions"] == len(keys)
        assert not figures["sessions_estimated"]
        assert figures["sampled_sessions"] == len(keys)
        # A sample smaller than the sessions stops early and says it estimated.
        assert SessionStore.store_figures(sample=2)["sampled_sessions"] == 2
        # memopt_stats sums the primaries; memopt_rebuild_filter lists them all.
        report = io.StringIO()
        call_command("memopt_stats", "--json", stdout=report)
        assert json.loads(report.getvalue())["store"]["sessions"] == len(keys)
        with override_settings(MEMOPT_FILTER=True, MEMOPT_FILTER_PATH=str(tmp_path / "filter")):
            rebuilt = io.StringIO()
            call_command("memopt_rebuild_filter", stdout=rebuilt)
            assert rebuilt.getvalue().startswith(f"Added {len(keys)} live sessions")
        # The cache of the sessions works as a Django cache too, key by key.
        cache = caches["sessions"]
        cache.set(f"{store.prefix}~cache-test", [1, 2], 30)
        assert cache.get(f"{store.prefix}~cache-test") == [1, 2]


@override_settings(MEMOPT_USER_SESSIONS=True)
def test_a_users_index_is_in_one_slot_and_lists_sessions_of_every_shard() -> None:
    with cluster_store() as store:
        keys = [log_in(SessionStore, "7").session_key for _ in range(6)]
        assert len({primary_of(store.raw, hash_name(k, store.prefix)) for k in keys}) > 1
        hashed, until = (
            user_key(store.prefix, "user", "7"),
            user_key(store.prefix, "user-until", "7"),
        )
        assert store.raw.keyslot(hashed) == store.raw.keyslot(until)
        assert store.raw.hlen(hashed) == 6 and store.raw.zcard(until) == 6
        assert sorted(key for _, key, _ in SessionStore._user_entries("7")) == sorted(keys)
        assert len(sessions_of("7")) == 6
        # A session deleted: gone from the listing and from the index.
        SessionStore(keys[0]).delete()
        assert keys[0] not in {key for _, key, _ in SessionStore._user_entries("7")}
        assert store.raw.hlen(hashed) == 5
        # Every session of the user ended, on every shard.
        assert end_all_sessions("7") == 5
        assert not any(SessionStore().exists(key) for key in keys)
        assert store.index_size("7") == 0


@override_settings(MEMOPT_USER_SESSIONS=True)
def test_a_listing_racing_a_login_never_loses_its_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a cluster a session created logged in writes its entry, then the session, then
    the entry again: a listing in between finds the session not there yet and prunes the
    entry, yet the session is listed once the create is done."""
    with cluster_store() as store:
        write_session = engine._write_session
        during: list[tuple[list[Any], int]] = []

        def listed_meanwhile(*args: Any, **kwargs: Any) -> Any:
            during.append((SessionStore._user_entries("9"), store.index_size("9")))
            return write_session(*args, **kwargs)

        monkeypatch.setattr(engine, "_write_session", listed_meanwhile)
        session = SessionStore()  # created logged in: its entry comes with the create
        session["_auth_user_id"] = "9"
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session.create()
        monkeypatch.undo()
        assert during == [([], 0)]  # hidden, and pruned
        assert [key for _, key, _ in SessionStore._user_entries("9")] == [session.session_key]
        assert store.index_size("9") == 2
        # Gone, its entry is pruned by clearsessions.
        store.raw.delete(hash_name(session.session_key, store.prefix))
        SessionStore.clear_expired()
        assert store.index_size("9") == 0


def _node_id(client: redis.Redis) -> str:
    return client.execute_command("CLUSTER", "MYID").decode()


def test_slots_moving_under_the_client_are_followed_through_ask_and_moved() -> None:
    with cluster_store() as store:
        raw = store.raw
        SessionStore().exists("x" * 32)  # the engine's map of slots, learned now
        session = SessionStore()
        session["a"] = 1
        key = session._get_new_session_key()
        name = hash_name(key, store.prefix)
        slot = raw.keyslot(name)
        source = raw.get_node_from_key(name)
        target = next(node for node in raw.get_primaries() if node.name != source.name)
        with (
            redis.Redis(host=source.host, port=source.port) as src,
            redis.Redis(host=target.host, port=target.port, single_connection_client=True) as dst,
        ):
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(src))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(dst))
            # A new key of a migrating slot is made on the target: the source says ASK.
            session._session_key = key
            session.save(must_create=True)
            dst.execute_command("ASKING")  # the importing node answers for the slot once
            assert dst.exists(name)
            assert SessionStore(key)["a"] == 1  # read through ASK too
            # The slot handed over: the engine's map is stale, the source says MOVED.
            for node in raw.get_primaries():
                with redis.Redis(host=node.host, port=node.port) as each:
                    each.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _node_id(dst))
        loaded = SessionStore(key)
        assert loaded["a"] == 1
        loaded["b"] = 2
        loaded.save()
        assert stored_session(raw, name)[1].keys() >= {b"a", b"b"}
        assert primary_of(raw, name) == target.name


def test_writes_wait_for_the_replicas_asked_for() -> None:
    with cluster_store(MEMOPT_REDIS_WAIT_REPLICAS=1, MEMOPT_REDIS_WAIT_TIMEOUT=2000):
        session = SessionStore()
        session["a"] = 1
        session.create()
        session["b"] = 2
        session.save()
        assert SessionStore(session.session_key)["b"] == 2
    # Each shard has one replica: a write asking for two is on the primary only, and
    # fails, so that no caller takes it as safe.
    with cluster_store(MEMOPT_REDIS_WAIT_REPLICAS=2, MEMOPT_REDIS_WAIT_TIMEOUT=50):
        session = SessionStore()
        session["a"] = 1
        with pytest.raises(SessionStoreUnavailable, match="acknowledged by 1 of the 2"):
            session.create()


def test_checks_a_prefix_with_braces_and_the_client_cache_on_a_cluster() -> None:
    with override_settings(**CLUSTER, MEMOPT_REDIS_KEY_PREFIX="s{x}:"):
        assert "django_memopt.E030" in {m.id for m in run_checks()}
    with override_settings(**CLUSTER, MEMOPT_REDIS_CLIENT_CACHE=1 << 20):
        assert "django_memopt.W014" in {m.id for m in run_checks()}
        assert engine.client_cache() is None  # off, and the sessions work without it
        session = SessionStore()
        session["a"] = 1
        session.create()
        assert SessionStore(session.session_key)["a"] == 1
    with override_settings(**REDIS, MEMOPT_REDIS_KEY_PREFIX="s{x}:"):  # one server
        assert not {"django_memopt.E030", "django_memopt.W014"} & {m.id for m in run_checks()}


def test_a_primary_killed_mid_run_loses_no_acknowledged_write(
    redis_cluster: RedisCluster,
) -> None:
    """Writers on sessions of every shard; one primary is killed (SIGKILL): the sessions of
    the other shards keep working throughout, those of the failed shard work again once
    its replica took over (and the killed node came back as its replica), and every write
    the engine acknowledged is there, with ``MEMOPT_REDIS_WAIT_REPLICAS = 1``."""
    with cluster_store(MEMOPT_REDIS_WAIT_REPLICAS=1, MEMOPT_REDIS_WAIT_TIMEOUT=2000) as store:
        raw = store.raw
        keys = sessions_on_every_primary(raw, store.prefix, 2)
        victim_name = primary_of(raw, hash_name(keys[0], store.prefix))
        victim = next(
            node for node in redis_cluster.nodes if victim_name.endswith(f":{node.port}")
        )
        on_victim = {k for k in keys if primary_of(raw, hash_name(k, store.prefix)) == victim_name}
        acked: dict[str, list[int]] = {key: [] for key in keys}
        failed: dict[str, list[float]] = {key: [] for key in keys}
        stop = threading.Event()

        def write(key: str) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    session = SessionStore(key)
                    session[f"w{n}"] = n
                    session.save()
                except SessionStoreUnavailable:
                    failed[key].append(time.monotonic())
                    time.sleep(0.02)
                else:
                    acked[key].append(n)
                    time.sleep(0.005)

        writers = [threading.Thread(target=write, args=(key,)) for key in keys]
        for writer in writers:
            writer.start()
        try:
            time.sleep(0.3)
            redis_cluster.kill(victim)
            killed_at = time.monotonic()
            before = {key: len(acked[key]) for key in keys}
            # A replica takes over; the killed node comes back as its replica.
            deadline = time.monotonic() + 30
            while (
                victim in redis_cluster.primary_nodes() or len(redis_cluster.primary_nodes()) < 3
            ):
                assert time.monotonic() < deadline, "no replica took over"
                time.sleep(0.1)
            promoted_at = time.monotonic()
            victim.start()
            redis_cluster.wait_ok(redis_cluster.nodes)
            recovered = {key: len(acked[key]) for key in on_victim}
            deadline = time.monotonic() + 30
            while any(len(acked[key]) <= recovered[key] for key in on_victim):
                assert time.monotonic() < deadline, "the failed shard never recovered"
                time.sleep(0.05)
        finally:
            stop.set()
            for writer in writers:
                writer.join(30)
        assert on_victim and len(on_victim) < len(keys)
        for key in set(keys) - on_victim:
            # The other shards kept working throughout: no failure, progress meanwhile.
            assert failed[key] == [], key
            assert len(acked[key]) > before[key] + 5, key
        assert promoted_at > killed_at
        # The failed shard's slots are served by its former replica now, the killed node
        # is a replica.
        assert victim not in redis_cluster.primary_nodes()
        with raw_client() as fresh:
            assert all(
                primary_of(fresh, hash_name(key, store.prefix)) != victim_name for key in on_victim
            )
        for key in keys:
            stored = SessionStore(key)
            missing = [n for n in acked[key] if stored.get(f"w{n}") != n]
            assert missing == [], (key, missing)
