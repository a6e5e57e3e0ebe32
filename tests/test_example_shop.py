"""The example shop's session-cost panel, driven with Django's test client in this process.

The shop's settings are its own (``example_project/example_project/settings.py``, read
under the environment each test gives it), but for what the suite keeps: its database, its
host and secret, no statistics flushes. Its Redis is a real ``redis-server`` of this
module's own. The headless-browser tests of the shop are ``tests/browser/``.
"""

from __future__ import annotations

import html
import os
import re
import runpy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, override_settings
from django_redis.pool import ConnectionFactory

from tests.redis_server import RedisServer, free_port

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "example_project"
# What the suite keeps of its own: its in-memory database, the test client's host, its
# secret, and no flush of the statistics (at exit the suite's store is gone).
SUITE_SETTINGS = frozenset(
    {"DATABASES", "ALLOWED_HOSTS", "DEBUG", "SECRET_KEY", "MEMOPT_STATS_INTERVAL", "LOGGING"}
)
SERVED_LOCALLY = "served locally (no round trip)"
LOADED_FROM_REDIS = "loaded from Redis (not held / invalidated)"
BYPASSED = "loaded from Redis (cache bypassed: channel not confirmed)"
CACHE_OFF = "loaded from Redis (client-side cache off)"
CACHE_BYTES = 1 << 20


@pytest.fixture(scope="module")
def shop_redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port()).start()
    yield server
    server.cleanup()


@contextmanager
def shop_settings(
    monkeypatch: pytest.MonkeyPatch, var_dir: Path, **environment: str
) -> Iterator[None]:
    """The shop's settings, as its settings module makes them under ``environment``."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))  # the shop app and its URLconf
    for name in [name for name in os.environ if name.startswith("EXAMPLE_")]:
        monkeypatch.delenv(name)  # the shop's settings from this test's environment alone
    monkeypatch.setenv("EXAMPLE_VAR_DIR", str(var_dir))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    made = runpy.run_path(str(EXAMPLE_DIR / "example_project" / "settings.py"))
    shop = {name: value for name, value in made.items() if name.isupper()}
    pools: dict[str, Any] = ConnectionFactory._pools
    known = set(pools)
    try:
        taken = {name: value for name, value in shop.items() if name not in SUITE_SETTINGS}
        with override_settings(**taken):
            yield
    finally:
        for gone in set(pools) - known:  # the shop's connections to this module's server
            pools.pop(gone).disconnect()


@pytest.fixture
def shopper(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("shopper", password="x")


def panel_line(response: HttpResponse, line: str = "cost-load") -> str | None:
    """The text of the panel's line ``line`` (``None`` if the panel has no such line)."""
    page = response.content.decode()
    assert 'id="cost-gate"' in page, "no session-cost panel on the page"
    found = re.search(rf'<dd id="{line}">([^<]*)</dd>', page)
    return None if found is None else html.unescape(found[1])


def first_sku(response: HttpResponse) -> str:
    found = re.search(r'name="sku" value="([^"]+)"', response.content.decode())
    assert found is not None, "no product on the home page"
    return found[1]


@pytest.mark.django_db
def test_on_redis_with_the_client_side_cache_the_panel_says_where_the_load_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shop_redis: RedisServer, shopper: Any
) -> None:
    environment = {
        "EXAMPLE_SESSION_STORE": "redis",
        "EXAMPLE_REDIS_URL": shop_redis.url,
        "EXAMPLE_REDIS_CLIENT_CACHE": str(CACHE_BYTES),
    }
    with (
        shop_settings(monkeypatch, tmp_path, **environment),
        redis.Redis(port=shop_redis.port) as other_client,
    ):
        client = Client()
        # No session cookie: nothing loaded, nothing said about it.
        assert panel_line(client.get("/accounts/log-in/")) is None

        client.force_login(shopper)  # a new session: written, not held
        assert panel_line(client.get("/")) == LOADED_FROM_REDIS
        home = client.get("/")
        assert panel_line(home) == SERVED_LOCALLY

        # A form's POST (held) and the page it redirected to (held since the POST's save).
        added = client.post("/cart/add/", {"sku": first_sku(home), "next": "/cart/"}, follow=True)
        assert panel_line(added, "redirected-cost-load") == SERVED_LOCALLY
        assert panel_line(added) == SERVED_LOCALLY

        # Another client's write (any write of the key: Redis tracks keys, not fields)
        # drops the held copy, so the next load is Redis's; the one after is held again.
        session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
        assert other_client.pexpire(settings.MEMOPT_REDIS_KEY_PREFIX + session_key, 600_000)
        assert panel_line(client.get("/cart/")) == LOADED_FROM_REDIS
        assert panel_line(client.get("/cart/")) == SERVED_LOCALLY


@pytest.mark.django_db
def test_on_redis_with_the_client_side_cache_bypassed_the_panel_says_so(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shopper: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Threaded I/O loses the order of invalidations and replies: the cache never serves.
    server = RedisServer(free_port(), "--io-threads", "2", "--io-threads-do-reads", "yes")
    environment = {
        "EXAMPLE_SESSION_STORE": "redis",
        "EXAMPLE_REDIS_URL": server.url,
        "EXAMPLE_REDIS_CLIENT_CACHE": str(CACHE_BYTES),
    }
    try:
        server.start()
        with shop_settings(monkeypatch, tmp_path, **environment):
            client = Client()
            client.force_login(shopper)
            assert panel_line(client.get("/")) == BYPASSED
            assert panel_line(client.get("/")) == BYPASSED
    finally:
        server.cleanup()
    assert "threaded I/O" in caplog.text


@pytest.mark.django_db
def test_on_redis_without_the_client_side_cache_the_panel_says_it_is_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shop_redis: RedisServer, shopper: Any
) -> None:
    environment = {"EXAMPLE_SESSION_STORE": "redis", "EXAMPLE_REDIS_URL": shop_redis.url}
    with shop_settings(monkeypatch, tmp_path, **environment):
        assert settings.MEMOPT_REDIS_CLIENT_CACHE == 0
        client = Client()
        assert panel_line(client.get("/accounts/log-in/")) is None
        client.force_login(shopper)
        assert panel_line(client.get("/")) == CACHE_OFF
        assert panel_line(client.get("/")) == CACHE_OFF


@pytest.mark.django_db
def test_on_lmdb_the_panel_says_nothing_of_where_the_load_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shopper: Any
) -> None:
    with shop_settings(monkeypatch, tmp_path, EXAMPLE_SESSION_STORE="lmdb"):
        client = Client()
        client.force_login(shopper)
        home = client.get("/")
        assert panel_line(home, "cost-loads") == "1"
        assert panel_line(home) is None
