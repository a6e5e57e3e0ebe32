"""The metrics view: who may read it, what it serves, and its setting's check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_memopt import report, stats
from django_memopt.backends.lmdb import SessionStore
from django_memopt.checks import check_settings

TOKEN = "t0ken-of-at-least-32-characters-for-the-scraper"
REDIS = {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store"
    with override_settings(
        SESSION_ENGINE="django_memopt.backends.lmdb", MEMOPT_LMDB_PATH=str(path)
    ):
        SessionStore().save()
        stats.flush()
        yield path


def scrape(client: Client, **headers: Any) -> Any:
    return client.get("/metrics/", headers=headers)


def test_anonymous_requests_are_refused(store: Path, client: Client) -> None:
    response = scrape(client)
    assert response.status_code == 403
    assert b"memopt_" not in response.content


@pytest.mark.django_db
def test_staff_users_get_the_prometheus_text(
    store: Path, client: Client, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    client.force_login(user)
    response = scrape(client)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "no-cache" in response["Cache-Control"]
    families = {
        family.name: family for family in text_string_to_metric_families(response.content.decode())
    }
    assert families["memopt_store_sessions"].samples[0].value == 2  # with the staff user's
    assert families["memopt_engine_creates"].type == "counter"
    assert families["memopt_engine_creates"].documentation == "Saves that created a session."
    # What the command prints.
    command = text_string_to_metric_families(report.as_prometheus(report.collect()))
    assert set(families) == {family.name for family in command}


@pytest.mark.django_db
def test_users_who_are_not_staff_or_not_active_are_refused(
    store: Path, client: Client, django_user_model: Any
) -> None:
    client.force_login(django_user_model.objects.create_user("shopper", password="x"))
    assert scrape(client).status_code == 403
    gone = django_user_model.objects.create_user("gone", password="x", is_staff=True)
    client.force_login(gone)
    gone.is_active = False
    gone.save()
    assert scrape(client).status_code == 403


def test_the_bearer_token_opens_the_view(store: Path, client: Client) -> None:
    with override_settings(MEMOPT_METRICS_TOKEN=TOKEN):
        assert scrape(client, authorization=f"Bearer {TOKEN}").status_code == 200
        assert scrape(client, authorization=f"bearer {TOKEN}").status_code == 200
        for wrong in ("", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer "):
            refused = scrape(client, authorization=wrong)
            assert refused.status_code == 401, wrong
            assert refused["WWW-Authenticate"].startswith("Bearer ")
    # Without the setting, no token opens it.
    assert scrape(client, authorization=f"Bearer {TOKEN}").status_code == 403


def test_only_get_and_head(store: Path, client: Client) -> None:
    with override_settings(MEMOPT_METRICS_TOKEN=TOKEN):
        authorized = {"authorization": f"Bearer {TOKEN}"}
        assert client.head("/metrics/", headers=authorized).status_code == 200
        assert client.post("/metrics/", headers=authorized).status_code == 405


def test_a_store_that_is_down_fails_the_scrape(client: Client) -> None:
    dead = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    with override_settings(
        CACHES={**settings.CACHES, "sessions": dead}, MEMOPT_METRICS_TOKEN=TOKEN, **REDIS
    ):
        response = scrape(client, authorization=f"Bearer {TOKEN}")
    assert response.status_code == 503
    assert b"unavailable" in response.content


def test_an_engine_that_is_not_memopts_fails_the_scrape(client: Client) -> None:
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        MEMOPT_METRICS_TOKEN=TOKEN,
    ):
        response = scrape(client, authorization=f"Bearer {TOKEN}")
    assert response.status_code == 503
    assert b"not a django-memopt engine" in response.content


@pytest.mark.parametrize(
    ("token", "valid"),
    [
        (None, True),
        (TOKEN, True),
        ("x" * 32, True),
        ("", False),
        ("x" * 31, False),
        ("a token with spaces in it, long enough", False),
        ("ünïcode-ünïcode-ünïcode-ünïcode-ü", False),
        (b"x" * 40, False),
    ],
)
def test_the_token_setting_is_checked(token: object, valid: bool) -> None:
    with override_settings(MEMOPT_METRICS_TOKEN=token):
        found = [message.id for message in check_settings()]
    assert ("django_memopt.E023" not in found) is valid
