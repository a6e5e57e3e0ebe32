"""The Redis engine's async API on the event loop (redis.asyncio), with no thread.

The whole session contract once more with every storage call made through the async
API; proof that no thread is involved (what fails if the hop comes back); concurrent
``asave()`` calls on one session; Redis down, a script flush, Sentinel and the client-side
cache seen from the async path; and the middleware's async path under an async view,
against Django's own middleware.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from http.cookies import Morsel
from typing import Any
from unittest import mock

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse
from django.test import SimpleTestCase, override_settings
from django.urls import path
from django_redis.pool import ConnectionFactory

from django_memopt.backends import base as base_module
from django_memopt.backends import redis as redis_backend
from django_memopt.backends.base import UpdateError
from django_memopt.backends.redis import (
    SessionStore,
    SessionStoreUnavailable,
    async_native,
    connection,
)
from tests.contract import DJANGO_MIDDLEWARE, GATE_MIDDLEWARE, SessionContract
from tests.redis_server import RedisServer, free_port, sentinel_for
from tests.test_client_cache import cached_redis, counted, name, new_session
from tests.test_redis_contract import DJANGO_REDIS_CACHE, REDIS, hash_name
from tests.test_redis_store import caches_with, redis_cache

ENGINE = "django_memopt.backends.redis"


@pytest.fixture(autouse=True)
def _forget_new_connection_pools() -> Iterator[None]:
    """django-redis keeps one pool per URL for the life of the process: those a test made
    for servers of its own are disconnected and forgotten after it."""
    pools: dict[str, Any] = ConnectionFactory._pools
    known = set(pools)
    yield
    for url in set(pools) - known:
        pools.pop(url).disconnect()


# Set while the async API runs for AsyncDrivenStore: a sync method called then (the async
# API handing another engine's key to the sync one, in a thread) is the engine's own.
_driving: ContextVar[bool] = ContextVar("driving", default=False)


def _driven(method: Any, *args: Any) -> Any:
    async def drive() -> Any:
        _driving.set(True)
        return await method(*args)

    return async_to_sync(drive)()


class AsyncDrivenStore(SessionStore):
    """The engine, every storage call of the sync API made through the async one, each
    on an event loop of its own (as a fresh request's would be)."""

    def load(self) -> Any:
        return super().load() if _driving.get() else _driven(self.aload)

    def exists(self, session_key: str | None) -> bool:
        return (
            super().exists(session_key) if _driving.get() else _driven(self.aexists, session_key)
        )  # type: ignore[no-any-return]

    def create(self) -> None:
        return super().create() if _driving.get() else _driven(self.acreate)  # type: ignore[no-any-return]

    def save(self, must_create: bool = False) -> None:
        return super().save(must_create) if _driving.get() else _driven(self.asave, must_create)  # type: ignore[no-any-return]

    def delete(self, session_key: str | None = None) -> None:
        return (
            super().delete(session_key) if _driving.get() else _driven(self.adelete, session_key)
        )  # type: ignore[no-any-return]

    def cycle_key(self) -> None:
        return super().cycle_key() if _driving.get() else _driven(self.acycle_key)  # type: ignore[no-any-return]


@contextmanager
def no_thread_hop() -> Iterator[list[int]]:
    """Fails if the engine hands its work to a thread, or waits on the sync I/O layer on
    an event loop's thread (the client-side cache's upkeep may, in its own thread); gives
    the threads the async I/O ran on."""
    threads: list[int] = []
    real_async, real_sync = redis_backend._aon_connection, redis_backend._on_connection

    async def recorded(action: Any) -> Any:
        threads.append(threading.get_ident())
        return await real_async(action)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async path handed its work to a thread")

    def sync_io(action: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return real_sync(action)
        raise AssertionError("the async path waited on the sync I/O layer on the loop")

    with (
        mock.patch.object(base_module, "sync_to_async", refused),
        mock.patch.object(redis_backend, "_on_connection", sync_io),
        mock.patch.object(redis_backend, "_aon_connection", recorded),
    ):
        yield threads


@override_settings(**REDIS)
class TestAsyncContract(SessionContract, SimpleTestCase):
    """Django's contract, every load, save, create, delete, exists and key cycle awaited."""

    backend = AsyncDrivenStore

    def setUp(self) -> None:
        super().setUp()
        assert async_native()


@override_settings(MEMOPT_USER_SESSIONS=True)
class TestAsyncContractWithUserSessions(TestAsyncContract):
    """The same with the index of users' sessions kept (its scripts, on the loop)."""


@override_settings(**REDIS)
def test_the_async_api_runs_on_the_loop_thread_with_no_thread_hop() -> None:
    async def scenario() -> tuple[int, str]:
        with no_thread_hop() as threads:
            session = SessionStore()
            await session.aset("a", 1)
            await session.asave()
            key = session.session_key
            assert key is not None and await session.aexists(key)
            loaded = SessionStore(key)
            assert await loaded.aget("a") == 1
            await loaded.aset("b", 2)
            await loaded.asave()
            await loaded.acycle_key()
            assert not await loaded.aexists(key)
            await loaded.aflush()
            assert threads and set(threads) == {threading.get_ident()}
        return threading.get_ident(), key

    loop_thread, key = async_to_sync(scenario)()
    assert loop_thread != threading.get_ident()  # it really ran on a loop of its own
    assert not SessionStore().exists(key)


@override_settings(**REDIS)
def test_concurrent_asaves_on_one_session_lose_no_update() -> None:
    session = SessionStore()
    session["start"] = 0
    session.save()
    key = session.session_key
    writers = 60

    async def write(n: int) -> None:
        mine = SessionStore(key)
        await mine.aload()  # every writer loaded the session before any saved
        await asyncio.sleep(0)
        await mine.aset(f"k{n}", n)
        await mine.asave()

    async def scenario() -> None:
        with no_thread_hop():
            await asyncio.gather(*(write(n) for n in range(writers)))

    async_to_sync(scenario)()
    stored = dict(SessionStore(key).items())
    assert stored == {"start": 0, **{f"k{n}": n for n in range(writers)}}


def test_more_requests_at_once_than_connections_wait_for_one() -> None:
    """A loop runs as many requests at once as come: past the pool's max_connections
    (django-redis's ``CONNECTION_POOL_KWARGS``), they wait for a connection."""
    cache = redis_cache(f"redis://127.0.0.1:{django_settings.REDIS_TEST_PORT}/0")
    cache["OPTIONS"]["CONNECTION_POOL_KWARGS"] = {"max_connections": 2}
    with override_settings(
        CACHES=caches_with("narrow", cache), SESSION_ENGINE=ENGINE, SESSION_CACHE_ALIAS="narrow"
    ):
        try:

            async def one(n: int) -> str:
                session = SessionStore()
                await session.aset("n", n)
                await session.asave()
                assert await SessionStore(session.session_key).aget("n") == n
                return session.session_key  # type: ignore[return-value]

            async def scenario() -> list[str]:
                with no_thread_hop():
                    return await asyncio.gather(*(one(n) for n in range(30)))

            keys = async_to_sync(scenario)()
            assert len(set(keys)) == 30
            for key in keys:
                SessionStore(key).delete()
        finally:
            connection().connection_pool.disconnect()


@override_settings(**REDIS)
def test_asave_after_a_delete_elsewhere_raises_update_error_and_writes_nothing() -> None:
    async def scenario() -> str:
        with no_thread_hop():
            session = SessionStore()
            await session.aset("a", 1)
            await session.asave()
            key = session.session_key
            assert key is not None
            await SessionStore(key).adelete()
            await session.aset("a", 2)
            with pytest.raises(UpdateError):
                await session.asave()
            return key

    key = async_to_sync(scenario)()
    assert not SessionStore().exists(key)


def test_redis_down_is_session_store_unavailable_from_the_async_path() -> None:
    server = RedisServer(free_port())
    try:
        server.start()
        with override_settings(
            CACHES=caches_with("down", redis_cache(server.url)),
            SESSION_ENGINE=ENGINE,
            SESSION_CACHE_ALIAS="down",
        ):
            key = new_session(a=1)

            async def attempt(action: str) -> BaseException | None:
                session = SessionStore(key)
                try:
                    if action == "aload":
                        await session.aload()
                    elif action == "asave":
                        session._session_cache = session._new_fields()
                        await session.aset("b", 2)
                        await session.asave()
                    elif action == "aexists":
                        await session.aexists(key)
                    else:
                        await session.adelete()
                except BaseException as exc:
                    return exc
                return None

            async def scenario() -> list[BaseException | None]:
                assert await SessionStore(key).aget("a") == 1  # pooled connections open
                server.stop()
                return [
                    await attempt(action) for action in ("aload", "asave", "aexists", "adelete")
                ]

            for error in async_to_sync(scenario)():
                assert isinstance(error, SessionStoreUnavailable), repr(error)
                assert "(cache 'down') is unavailable" in str(error)
            server.start()  # and back (empty): the next loop's pool connects again
            assert async_to_sync(SessionStore().aexists)(new_session(a=1))
            connection().connection_pool.disconnect()
    finally:
        server.cleanup()


@override_settings(**REDIS)
def test_a_script_flush_is_survived_the_scripts_loaded_again() -> None:
    raw = redis.Redis(port=django_settings.REDIS_TEST_PORT, single_connection_client=True)
    try:
        key = new_session(a=1, b=2)

        async def scenario() -> None:
            with no_thread_hop():
                session = SessionStore(key)
                await session.aset("a", 3)  # a delta save: UPDATE_SCRIPT
                raw.script_flush()
                await session.asave()
                assert raw.script_exists(redis_backend._SHAS[redis_backend.UPDATE_SCRIPT]) == [
                    True
                ]
                raw.script_flush()
                session = SessionStore(key)
                await session.aload()
                with override_settings(SESSION_SAVE_EVERY_REQUEST=True, MEMOPT_TOUCH_INTERVAL=0):
                    await session.asave()  # a touch: TOUCH_SCRIPT

        async_to_sync(scenario)()
        assert raw.script_exists(redis_backend._SHAS[redis_backend.TOUCH_SCRIPT]) == [True]
        assert dict(SessionStore(key).items()) == {"a": 3, "b": 2}
    finally:
        raw.close()


def test_the_async_pool_is_made_like_the_sync_one_and_closed_with_its_loop() -> None:
    server = RedisServer(free_port())
    try:
        server.start()
        cache = redis_cache(f"redis://127.0.0.1:{server.port}/3")
        cache["OPTIONS"]["CONNECTION_POOL_KWARGS"] = {"client_name": "memopt-async-test"}
        with override_settings(
            CACHES=caches_with("secret", cache),
            SESSION_ENGINE=ENGINE,
            SESSION_CACHE_ALIAS="secret",
        ):
            raw = redis.Redis(port=server.port, db=3)

            async def scenario() -> dict[str, Any]:
                session = SessionStore()
                await session.aset("a", 1)
                await session.asave()
                pool = await redis_backend._apool()
                names = [client["name"] for client in raw.client_list()]
                assert "memopt-async-test" in names  # the loop's pool's (the sync one has none)
                return pool.connection_kwargs

            try:
                kwargs = async_to_sync(scenario)()
                # Database, name and timeouts carried over: the session is in db 3.
                assert (kwargs["db"], kwargs["client_name"]) == (3, "memopt-async-test")
                assert kwargs["socket_timeout"] == 1
                assert len(raw.keys("memopt:session:*")) == 1
                # The loop is gone: so are its pool and its connections.
                assert not redis_backend._apools
                assert len(raw.client_list()) == 1 + len(
                    connection().connection_pool._available_connections
                )
            finally:
                connection().connection_pool.disconnect()
                raw.close()
    finally:
        server.cleanup()


def test_a_cluster_client_keeps_the_thread() -> None:
    """A client redis.asyncio has no counterpart for here (a cluster client): the sync
    primitives in a thread, as before."""

    class NotPlainRedis:
        connection_pool = None

    with (
        override_settings(**REDIS),
        mock.patch.object(redis_backend, "connection", NotPlainRedis),
    ):
        redis_backend._native = redis_backend._UNKNOWN
        try:
            assert not SessionStore.async_native()
        finally:
            redis_backend._native = redis_backend._UNKNOWN
    assert redis_backend._async_pool_maker(NotPlainRedis()) is None


def test_sessions_through_sentinel_from_the_async_path() -> None:
    primary = RedisServer(free_port())
    try:
        primary.start()
        with (
            sentinel_for(primary) as sentinel_port,
            redis.Redis(port=primary.port, single_connection_client=True) as raw,
        ):
            cache = {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": "redis://mymaster/0",
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.SentinelClient",
                    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                    "SENTINELS": [("127.0.0.1", sentinel_port)],
                    "SOCKET_CONNECT_TIMEOUT": 1,
                    "SOCKET_TIMEOUT": 1,
                },
            }
            with override_settings(
                CACHES=caches_with("sentinel", cache),
                SESSION_ENGINE=ENGINE,
                SESSION_CACHE_ALIAS="sentinel",
            ):

                async def scenario() -> str:
                    with no_thread_hop():
                        session = SessionStore()
                        await session.aset("a", 1)
                        await session.asave()
                        key = session.session_key
                        assert key is not None
                        loaded = SessionStore(key)
                        assert await loaded.aget("a") == 1
                        await loaded.aset("b", [2])
                        await loaded.asave()
                        return key

                try:
                    key = async_to_sync(scenario)()
                    assert raw.exists(hash_name(key, "memopt:session:"))  # in the primary
                    assert dict(SessionStore(key).items()) == {"a": 1, "b": [2]}
                finally:
                    connection().connection_pool.disconnect()
    finally:
        primary.cleanup()


def test_the_client_cache_serves_the_async_path_and_stays_coherent() -> None:
    with cached_redis() as cached:
        key = new_session(a=1)
        heartbeats: list[int] = []
        cache = cached.cache()
        real_heartbeat = cache._heartbeat

        def heartbeat(name: bytes) -> None:
            heartbeats.append(threading.get_ident())
            real_heartbeat(name)

        cache._heartbeat = heartbeat

        async def fields() -> dict[str, Any] | None:
            session = SessionStore(key)
            found = dict(await session.aitems())
            return None if session.session_key is None else found

        async def served() -> bool:
            before = counted().get("cache_hits", 0)
            await fields()
            return counted().get("cache_hits", 0) > before

        async def scenario() -> None:
            with no_thread_hop():
                deadline = time.monotonic() + 10
                # Its upkeep (connect, heartbeat) runs in a thread: served once confirmed.
                while not await served():
                    assert time.monotonic() < deadline, "never served from the cache"
                    await asyncio.sleep(0.02)
                # Past a heartbeat's interval: its upkeep again, in a thread.
                await asyncio.sleep(0.6)
                while not heartbeats:
                    assert time.monotonic() < deadline, "no heartbeat from the async path"
                    await served()
                    await asyncio.sleep(0.02)
                # Written by another client: the very next load sees it.
                cached.raw.pexpire(name(key), 600_000)
                assert not await served()
                assert await served()
                # Own writes keep the held copy current; it is served again once verified.
                for value in range(2, 6):
                    session = SessionStore(key)
                    await session.aset("a", value)
                    await session.asave()
                    assert await fields() == {"a": value}
                assert await served()
                # A logout elsewhere: gone at once.
                cached.raw.delete(name(key))
                assert await fields() is None
            assert heartbeats and threading.get_ident() not in heartbeats

        async_to_sync(scenario)()


# -- the middleware's async path ----------------------------------------------------------


async def store_view(request: HttpRequest, key: str, value: str) -> HttpResponse:
    await request.session.aset(key, value)
    return HttpResponse("stored")


async def read_view(request: HttpRequest, key: str) -> HttpResponse:
    return HttpResponse(str(await request.session.aget(key)))


async def untouched_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("untouched")


async def flush_view(request: HttpRequest) -> HttpResponse:
    await request.session.aflush()
    return HttpResponse("flushed")


async def failing_view(request: HttpRequest, key: str, value: str) -> HttpResponse:
    await request.session.aset(key, value)
    return HttpResponse("failed", status=500)


async def logged_out_meanwhile_view(request: HttpRequest) -> HttpResponse:
    await request.session.aget("a")  # loaded; then logged out by another request
    await SessionStore(request.session.session_key).adelete()
    await request.session.aset("late", 1)
    return HttpResponse("too late")


urlpatterns = [
    path("store/<str:key>/<str:value>/", store_view),
    path("read/<str:key>/", read_view),
    path("untouched/", untouched_view),
    path("flush/", flush_view),
    path("fail/<str:key>/<str:value>/", failing_view),
    path("logged-out-meanwhile/", logged_out_meanwhile_view),
]

FLOW = [
    "/untouched/",
    "/read/a/",
    "/store/a/1/",
    "/read/a/",
    "/untouched/",
    "/fail/b/2/",
    "/store/c/3/",
    "/flush/",
    "/read/a/",
]


def cookie_attributes(morsel: Morsel[str] | None) -> dict[str, Any] | None:
    """What a response says of the session cookie, less its value and exact expiry."""
    if morsel is None:
        return None
    said = {name: morsel[name] for name in ("path", "domain", "samesite", "secure", "httponly")}
    said["max-age"] = morsel["max-age"]
    said["deleted"] = morsel.value == ""
    said["expires"] = bool(morsel["expires"])
    return said


@override_settings(**REDIS, ROOT_URLCONF=__name__, SESSION_COOKIE_SAMESITE="Strict")
class TestAsyncMiddleware(SimpleTestCase):
    """Our middleware's async path answers as Django's own middleware does, with the
    engine's async API and no thread."""

    async def run_flow(self, middleware: str) -> list[tuple[int, str, Any, Any]]:
        stack = [middleware if m == DJANGO_MIDDLEWARE else m for m in django_settings.MIDDLEWARE]
        seen = []
        with override_settings(MIDDLEWARE=stack):
            client = self.async_client_class()
            for url in FLOW:
                response = await client.get(url)
                cookie = response.cookies.get(django_settings.SESSION_COOKIE_NAME)
                body = response.content.decode()
                seen.append(
                    (response.status_code, response.get("Vary"), body, cookie_attributes(cookie))
                )
        return seen

    async def test_answers_as_django_s_middleware(self) -> None:
        theirs = await self.run_flow(DJANGO_MIDDLEWARE)
        with (
            no_thread_hop(),
            mock.patch.object(SessionStore, "save", side_effect=AssertionError("sync save")),
            mock.patch.object(SessionStore, "load", side_effect=AssertionError("sync load")),
        ):
            ours = await self.run_flow(GATE_MIDDLEWARE)
        assert ours == theirs
        # What the flow shows: a cookie set with the value, kept, none on a 5xx, deleted
        # by the flush, and the session gone after it.
        assert [step[2] for step in ours] == [
            "untouched",
            "None",
            "stored",
            "1",
            "untouched",
            "failed",
            "stored",
            "flushed",
            "None",
        ]
        cookies = [step[3] for step in ours]
        assert cookies[0] is None and cookies[2] is not None and not cookies[2]["deleted"]
        assert cookies[5] is None
        assert cookies[7] is not None and cookies[7]["deleted"]

    async def test_save_every_request_and_browser_close_cookies_as_django(self) -> None:
        with override_settings(
            SESSION_SAVE_EVERY_REQUEST=True, SESSION_EXPIRE_AT_BROWSER_CLOSE=True
        ):
            theirs = await self.run_flow(DJANGO_MIDDLEWARE)
            with no_thread_hop():
                ours = await self.run_flow(GATE_MIDDLEWARE)
        assert ours == theirs
        assert ours[3][3] is not None and ours[3][3]["max-age"] == ""  # a browser-session cookie

    async def test_a_session_deleted_meanwhile_is_interrupted(self) -> None:
        with override_settings(
            MIDDLEWARE=[
                GATE_MIDDLEWARE if m == DJANGO_MIDDLEWARE else m
                for m in django_settings.MIDDLEWARE
            ]
        ):
            client = self.async_client_class()
            await client.get("/store/a/1/")
            with no_thread_hop():
                response = await client.get("/logged-out-meanwhile/")
        assert response.status_code == 400  # SessionInterrupted, as Django answers it
        key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        assert not await SessionStore().aexists(key)


@override_settings(MEMOPT_REDIS_CLIENT_CACHE=1 << 20)
class TestAsyncContractCached(TestAsyncContract):
    """The same through this process's client-side cache."""


@override_settings(CACHES=DJANGO_REDIS_CACHE)
class TestAsyncContractOnDjangoCache(TestAsyncContract):
    """The same, the connection (and so the event loop's pool) made from Django's own
    ``RedisCache``."""

    def test_the_pool_comes_from_djangos_cache(self) -> None:
        from django.core.cache import caches

        from django_memopt.backends.redis import async_native, connection

        assert async_native()
        assert connection().connection_pool is caches["sessions"]._cache._get_connection_pool(True)

        async def scenario() -> None:
            with no_thread_hop() as threads:
                session = SessionStore()
                await session.aset("a", 1)
                await session.asave()
                assert await SessionStore(session.session_key).aget("a") == 1
                assert threads and set(threads) == {threading.get_ident()}

        async_to_sync(scenario)()
