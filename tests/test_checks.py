"""Every system check ID fires for the configuration it names, and only then."""

from __future__ import annotations

import os
import tempfile
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import CheckMessage, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_memopt.checks import check_middleware, check_settings


def messages(**overrides: Any) -> list[CheckMessage]:
    """What the checks report, less what SILENCED_SYSTEM_CHECKS silences, as ``manage.py
    check`` does (tests/settings.py silences W007: it keeps Django's middleware)."""
    with override_settings(**overrides):
        found = check_settings() + check_middleware()
        return [message for message in found if message.id not in settings.SILENCED_SYSTEM_CHECKS]


def ids(**overrides: Any) -> list[str]:
    return [message.id for message in messages(**overrides)]


def test_default_configuration_passes() -> None:
    assert ids() == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"MEMOPT_LMDB_PATH": ""}, "django_memopt.E001"),
        ({"MEMOPT_LMDB_PATH": 42}, "django_memopt.E001"),
        ({"MEMOPT_LMDB_MAP_SIZE": 1000}, "django_memopt.E003"),
        ({"MEMOPT_LMDB_MAP_SIZE": "1GB"}, "django_memopt.E003"),
        ({"MEMOPT_LMDB_MAP_SIZE": True}, "django_memopt.E003"),
        ({"MEMOPT_LMDB_MAX_READERS": 0}, "django_memopt.E004"),
        ({"MEMOPT_LMDB_DURABILITY": "fsync"}, "django_memopt.E005"),
        ({"MEMOPT_TOUCH_INTERVAL": -1}, "django_memopt.E006"),
        ({"MEMOPT_TOUCH_INTERVAL": 1.5}, "django_memopt.E006"),
        ({"MEMOPT_STATS_INTERVAL": -1}, "django_memopt.E022"),
        ({"MEMOPT_STATS_INTERVAL": "10"}, "django_memopt.E022"),
        ({"MEMOPT_COMPRESS_FROM": 0}, "django_memopt.E024"),
        ({"MEMOPT_COMPRESS_FROM": "1k"}, "django_memopt.E024"),
        ({"MEMOPT_COMPRESS_FROM": True}, "django_memopt.E024"),
        (
            {"SESSION_SERIALIZER": "django.core.signing.JSONSerializer"},
            "django_memopt.W001",
        ),
        ({"MEMOPT_USER_SESSIONS": "yes"}, "django_memopt.E027"),
        ({"MEMOPT_USER_SESSIONS": 1}, "django_memopt.E027"),
        ({"MEMOPT_USER_SESSIONS_METADATA": "ip"}, "django_memopt.E028"),
        ({"MEMOPT_USER_SESSIONS_METADATA": ("ip", "cookies")}, "django_memopt.E028"),
        ({"MEMOPT_USER_SESSIONS_METADATA": None}, "django_memopt.E028"),
        ({"MEMOPT_USER_SESSIONS_REFRESH": -1}, "django_memopt.E029"),
        ({"MEMOPT_USER_SESSIONS_REFRESH": 60.0}, "django_memopt.E029"),
        ({"MEMOPT_USER_SESSIONS_REFRESH": True}, "django_memopt.E029"),
        ({"MEMOPT_REDIS_WAIT_REPLICAS": -1}, "django_memopt.E031"),
        ({"MEMOPT_REDIS_WAIT_REPLICAS": 1.0}, "django_memopt.E031"),
        ({"MEMOPT_REDIS_WAIT_REPLICAS": True}, "django_memopt.E031"),
        ({"MEMOPT_REDIS_WAIT_TIMEOUT": 0}, "django_memopt.E032"),
        ({"MEMOPT_REDIS_WAIT_TIMEOUT": 0.5}, "django_memopt.E032"),
        (
            {
                "MEMOPT_USER_SESSIONS": True,
                "SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies",
            },
            "django_memopt.W012",
        ),
        ({"MEMOPT_USER_SESSIONS": True}, "django_memopt.W013"),
    ],
)
def test_each_misconfiguration_has_its_id(overrides: dict[str, Any], expected: str) -> None:
    assert ids(**overrides) == [expected]


def test_unwritable_lmdb_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert ids(MEMOPT_LMDB_PATH=str(blocker / "sessions")) == ["django_memopt.E002"]
    # A path that does not exist yet is fine when it can be created.
    assert ids(MEMOPT_LMDB_PATH=str(tmp_path / "new" / "sessions")) == []
    assert ids(MEMOPT_LMDB_PATH=tmp_path / "as-a-pathlib-path") == []


@pytest.mark.parametrize("path", ["/proc/x", "/proc/self/sessions", "/proc/x/sessions"])
def test_a_store_that_cannot_be_opened_is_found_as_the_engine_would_find_it(path: str) -> None:
    """As root, ``os.access`` says yes to these; the first request would answer 500."""
    [message] = messages(MEMOPT_LMDB_PATH=path)
    assert message.id == "django_memopt.E002"
    assert f"Cannot open the LMDB session store at {path!r}" in message.msg
    assert "No such file or directory" in message.msg  # the OS's own words
    # Not under an engine that does not use the path; not with the settings it opens with
    # wrong (they have their own errors).
    assert ids(MEMOPT_LMDB_PATH=path, SESSION_ENGINE="django_memopt.backends.redis") == [
        "django_memopt.E008"
    ]
    assert ids(MEMOPT_LMDB_PATH=path, MEMOPT_LMDB_MAX_READERS=0) == ["django_memopt.E004"]


def test_the_store_the_check_opened_serves_requests(tmp_path: Path) -> None:
    from django_memopt.backends.lmdb import SessionStore

    with override_settings(MEMOPT_LMDB_PATH=str(tmp_path / "sessions")):
        assert ids() == []
        assert (tmp_path / "sessions" / "data.mdb").exists()  # tried, not guessed
        session = SessionStore()
        session["a"] = 1
        session.save()
        assert SessionStore(session.session_key).load() == {"a": 1}
    assert (tmp_path / "sessions").stat().st_mode & 0o777 == 0o700


def test_lmdb_directory_open_to_other_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "sessions"
    store.mkdir()
    store.chmod(0o755)
    assert ids(MEMOPT_LMDB_PATH=str(store)) == ["django_memopt.W006"]
    store.chmod(0o700)
    assert ids(MEMOPT_LMDB_PATH=str(store)) == []
    # Owned by somebody else (not root), even with mode 0700.
    if os.geteuid() == 0:
        os.chown(store, 54321, -1)
    else:
        monkeypatch.setattr(os, "geteuid", lambda: store.stat().st_uid + 1)
    assert ids(MEMOPT_LMDB_PATH=str(store)) == ["django_memopt.W006"]
    redis = ids(MEMOPT_LMDB_PATH=str(store), SESSION_ENGINE="django_memopt.backends.redis")
    assert "django_memopt.W006" not in redis


def test_path_is_only_checked_for_the_lmdb_engine(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert (
        ids(
            MEMOPT_LMDB_PATH=str(blocker / "x"),
            SESSION_ENGINE="django.contrib.sessions.backends.db",
        )
        == []
    )


def test_serializer_warning_only_with_a_memopt_engine() -> None:
    assert (
        ids(
            SESSION_SERIALIZER="django.core.signing.JSONSerializer",
            SESSION_ENGINE="django.contrib.sessions.backends.db",
        )
        == []
    )


def test_checks_are_registered_and_fail_the_check_command() -> None:
    with override_settings(MEMOPT_LMDB_DURABILITY="bogus"):
        assert "django_memopt.E005" in [message.id for message in run_checks()]
        with pytest.raises(SystemCheckError, match="django_memopt.E005"):
            call_command("check")
    with tempfile.TemporaryDirectory() as path, override_settings(MEMOPT_LMDB_PATH=path):
        call_command("check")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"MEMOPT_REDIS_KEY_PREFIX": ""}, ["django_memopt.E007"]),
        ({"MEMOPT_REDIS_KEY_PREFIX": b"bytes:"}, ["django_memopt.E007"]),
        ({"SESSION_ENGINE": "django_memopt.backends.redis"}, ["django_memopt.E008"]),
        (
            {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "nope"},
            ["django_memopt.E008"],
        ),
        (
            {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"},
            [],
        ),
        ({"MEMOPT_REDIS_CLIENT_CACHE": -1}, ["django_memopt.E025"]),
        ({"MEMOPT_REDIS_CLIENT_CACHE": "64M"}, ["django_memopt.E025"]),
        ({"MEMOPT_REDIS_CLIENT_CACHE": 1.5}, ["django_memopt.E025"]),
        ({"MEMOPT_REDIS_CLIENT_CACHE": True}, ["django_memopt.E025"]),
        ({"MEMOPT_REDIS_CLIENT_CACHE": None}, ["django_memopt.E025"]),
        # Set with another engine: no effect, said so; 0 (off) is fine anywhere.
        ({"MEMOPT_REDIS_CLIENT_CACHE": 2**26}, ["django_memopt.W008"]),
        ({"MEMOPT_REDIS_CLIENT_CACHE": 0}, []),
        (
            {
                "SESSION_ENGINE": "django_memopt.backends.redis",
                "SESSION_CACHE_ALIAS": "sessions",
                "MEMOPT_REDIS_CLIENT_CACHE": 2**26,
            },
            [],
        ),
    ],
)
def test_redis_configuration(overrides: dict[str, Any], expected: list[str]) -> None:
    assert ids(**overrides) == expected


DJANGO_REDIS_CACHE = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": f"redis://127.0.0.1:{settings.REDIS_TEST_PORT}/0",
}


def test_redis_engine_on_djangos_own_redis_cache() -> None:
    caches = {**settings.CACHES, "sessions": DJANGO_REDIS_CACHE}
    redis_engine = {"SESSION_ENGINE": "django_memopt.backends.redis", "CACHES": caches}
    assert ids(**redis_engine, SESSION_CACHE_ALIAS="sessions") == []
    # Any other cache is named in the error, with the two that are supported.
    [message] = messages(**redis_engine, SESSION_CACHE_ALIAS="default")
    assert message.id == "django_memopt.E008"
    assert "LocMemCache" in message.msg
    assert "django.core.cache.backends.redis.RedisCache" in str(message.hint)
    assert "django_redis.cache.RedisCache" in str(message.hint)


def test_redis_engine_without_its_libraries() -> None:
    import sys
    from unittest import mock

    caches = {**settings.CACHES, "django": DJANGO_REDIS_CACHE}
    redis_engine = {"SESSION_ENGINE": "django_memopt.backends.redis", "CACHES": caches}
    with mock.patch.dict(sys.modules, {"django_redis": None, "django_redis.cache": None}):
        # A django-redis cache needs django-redis; Django's own does not.
        [message] = messages(**redis_engine, SESSION_CACHE_ALIAS="sessions")
        assert message.id == "django_memopt.E009"
        assert "needs django-redis," in message.msg
        assert ids(**redis_engine, SESSION_CACHE_ALIAS="django") == []
    with mock.patch.dict(sys.modules, {"redis": None}):
        for alias in ("sessions", "django"):
            [message] = messages(**redis_engine, SESSION_CACHE_ALIAS=alias)
            assert message.id == "django_memopt.E009"
            assert "needs redis-py," in message.msg


DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
GATE_MIDDLEWARE = "django_memopt.middleware.SessionMiddleware"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"MEMOPT_FILTER": "yes"}, "django_memopt.E012"),
        ({"MEMOPT_FILTER": None}, "django_memopt.E012"),
        ({"MEMOPT_UNSIGNED_IDS": 0}, "django_memopt.E017"),
        ({"MEMOPT_UNSIGNED_IDS": "auto"}, "django_memopt.E017"),
        ({"MEMOPT_FILTER_PATH": ""}, "django_memopt.E013"),
        ({"MEMOPT_FILTER_CAPACITY": 0}, "django_memopt.E015"),
        ({"MEMOPT_FILTER_CAPACITY": 1e6}, "django_memopt.E015"),
        ({"MEMOPT_FILTER_FP_RATE": 0.0}, "django_memopt.E016"),
        ({"MEMOPT_FILTER_FP_RATE": 0.9}, "django_memopt.E016"),
        ({"MEMOPT_FILTER_FP_RATE": 1}, "django_memopt.E016"),
    ],
)
def test_each_filter_misconfiguration_has_its_id(overrides: dict[str, Any], expected: str) -> None:
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], **overrides) == [expected]


@pytest.mark.parametrize("unsigned_ids", [None, True, False])
def test_unsigned_ids_may_be_automatic_or_forced(unsigned_ids: bool | None) -> None:
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], MEMOPT_UNSIGNED_IDS=unsigned_ids) == []


def test_unsigned_ids_error_names_the_three_values() -> None:
    [message] = messages(MIDDLEWARE=[GATE_MIDDLEWARE], MEMOPT_UNSIGNED_IDS="auto")
    assert message.id == "django_memopt.E017"
    assert "None" in message.msg and "True" in message.msg and "False" in message.msg
    assert "'auto'" in message.msg


@pytest.mark.parametrize("engine", ["django_memopt.backends.lmdb", "django_memopt.backends.redis"])
def test_a_memopt_engine_behind_djangos_middleware_says_the_gate_is_off(engine: str) -> None:
    configured = {
        "SESSION_ENGINE": engine,
        "SESSION_CACHE_ALIAS": "sessions",
        "SILENCED_SYSTEM_CHECKS": [],
    }
    [message] = messages(MIDDLEWARE=[DJANGO_MIDDLEWARE], **configured)
    assert message.id == "django_memopt.W007"
    assert message.hint is not None and GATE_MIDDLEWARE in message.hint
    assert "without asking the store" in message.hint
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], **configured) == []
    assert ids(MIDDLEWARE=[], **configured) == []  # no sessions at all: nothing to say
    # Both middlewares: E010 says so. Another engine: nothing to gate.
    assert ids(MIDDLEWARE=[DJANGO_MIDDLEWARE, GATE_MIDDLEWARE], **configured) == [
        "django_memopt.E010"
    ]
    db = {**configured, "SESSION_ENGINE": "django.contrib.sessions.backends.db"}
    assert ids(MIDDLEWARE=[DJANGO_MIDDLEWARE], **db) == []
    # Registered, and silenced as any warning is (tests/settings.py keeps Django's middleware).
    assert "django_memopt.W007" in [message.id for message in run_checks()]
    output = StringIO()
    call_command("check", stdout=output, stderr=output)
    assert "W007" not in output.getvalue() and "1 silenced" in output.getvalue()


def test_both_session_middlewares() -> None:
    assert ids(MIDDLEWARE=[DJANGO_MIDDLEWARE, GATE_MIDDLEWARE]) == ["django_memopt.E010"]
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE]) == []


def test_the_gate_in_front_of_another_engine() -> None:
    for engine in (
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cache",
    ):
        assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], SESSION_ENGINE=engine) == ["django_memopt.E011"]
    assert (
        ids(MIDDLEWARE=[DJANGO_MIDDLEWARE], SESSION_ENGINE="django.contrib.sessions.backends.db")
        == []
    )


def test_filter_settings_without_the_gate() -> None:
    assert ids(MIDDLEWARE=[DJANGO_MIDDLEWARE], MEMOPT_FILTER_CAPACITY=5000) == [
        "django_memopt.W002"
    ]
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], MEMOPT_FILTER_CAPACITY=5000) == []
    assert ids(MIDDLEWARE=[DJANGO_MIDDLEWARE]) == []


def test_filter_forced_on_with_redis() -> None:
    redis = {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"}
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], MEMOPT_FILTER=True, **redis) == ["django_memopt.W003"]
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], **redis) == []
    assert ids(MIDDLEWARE=[GATE_MIDDLEWARE], MEMOPT_FILTER=False, **redis) == []


def test_unwritable_filter_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    gate = {"MIDDLEWARE": [GATE_MIDDLEWARE], "MEMOPT_FILTER": True}
    assert ids(MEMOPT_FILTER_PATH=str(blocker / "filter"), **gate) == ["django_memopt.E014"]
    assert (
        ids(MEMOPT_FILTER_PATH=str(blocker / "filter"), **{**gate, "MEMOPT_FILTER": False}) == []
    )
    assert ids(MEMOPT_FILTER_PATH=str(tmp_path / "new" / "filter"), **gate) == []
    assert not list((tmp_path / "new").iterdir())  # the file it tried is gone


@pytest.mark.parametrize("path", ["/proc/session-filter", "/proc/x/session-filter"])
def test_a_filter_directory_that_cannot_be_written_is_found_by_trying(path: str) -> None:
    gate = {"MIDDLEWARE": [GATE_MIDDLEWARE], "MEMOPT_FILTER": True}
    [message] = messages(MEMOPT_FILTER_PATH=path, **gate)
    assert message.id == "django_memopt.E014"
    assert "No such file or directory" in message.msg


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"MEMOPT_GC_FREEZE": "yes"}, "django_memopt.E018"),
        ({"MEMOPT_GC_FREEZE": None}, "django_memopt.E018"),
        ({"MEMOPT_GC_THRESHOLDS": (0, 10, 10)}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": ()}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": (700, 10, 10, 10)}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": 700}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": "700"}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": (700.0,)}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": (True, 10)}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": (700, -1)}, "django_memopt.E019"),
        ({"MEMOPT_GC_THRESHOLDS": (700, 10, 2**31)}, "django_memopt.E019"),
        ({"MEMOPT_GC_OUT_OF_BAND": 0}, "django_memopt.E021"),
        ({"MEMOPT_GC_OUT_OF_BAND": -5}, "django_memopt.E021"),
        ({"MEMOPT_GC_OUT_OF_BAND": 2.5}, "django_memopt.E021"),
        ({"MEMOPT_GC_OUT_OF_BAND": True}, "django_memopt.E021"),
        ({"MEMOPT_GC_OUT_OF_BAND": "100"}, "django_memopt.E021"),
    ],
)
def test_each_gc_misconfiguration_has_its_id(overrides: dict[str, Any], expected: str) -> None:
    assert ids(**overrides) == [expected]


@pytest.mark.parametrize(
    "overrides",
    [
        {"MEMOPT_GC_FREEZE": False},
        {"MEMOPT_GC_THRESHOLDS": (700, 10, 10)},
        {"MEMOPT_GC_THRESHOLDS": [1000]},
        {"MEMOPT_GC_THRESHOLDS": (1, 0, 0)},
        {"MEMOPT_GC_THRESHOLDS": None},
        {"MEMOPT_GC_OUT_OF_BAND": 1},
        {"MEMOPT_GC_OUT_OF_BAND": None},
    ],
)
def test_valid_gc_settings(overrides: dict[str, Any]) -> None:
    import sys
    from unittest import mock

    # On a 3.12 collector: no version warning, whatever Python runs the tests.
    with mock.patch.object(sys, "version_info", (3, 12, 1)):
        assert ids(**overrides) == []


def test_a_zero_first_gc_threshold_points_to_gc_disable() -> None:
    [message] = messages(MEMOPT_GC_THRESHOLDS=(0, 10, 10))
    assert message.id == "django_memopt.E019"
    assert message.hint is not None and "gc.disable()" in message.hint
    [message] = messages(MEMOPT_GC_THRESHOLDS=(700, -1))
    assert message.hint is not None and "gc.disable()" not in message.hint


def test_gc_settings_against_the_pythons_collector() -> None:
    import sys
    from unittest import mock

    large = {"MEMOPT_GC_THRESHOLDS": (50_000, 10, 10)}
    expected = {
        (3, 12, 1): [],
        (3, 13, 0): ["django_memopt.W004"],
        (3, 14, 2): ["django_memopt.E020"],
        (3, 14, 5): ["django_memopt.W004"],
    }
    for version, found in expected.items():
        with mock.patch.object(sys, "version_info", version):
            assert ids(**large) == found, version
            assert ids(MEMOPT_GC_OUT_OF_BAND=100) == (
                ["django_memopt.W005"] if version == (3, 14, 2) else []
            ), version


def test_user_sessions_with_the_gate_middleware_or_no_metadata_pass() -> None:
    gate = [
        "django_memopt.middleware.SessionMiddleware" if "sessions" in name else name
        for name in settings.MIDDLEWARE
    ]
    assert ids(MEMOPT_USER_SESSIONS=True, MIDDLEWARE=gate) == []
    assert ids(MEMOPT_USER_SESSIONS=True, MEMOPT_USER_SESSIONS_METADATA=()) == []
    assert ids(MEMOPT_USER_SESSIONS_METADATA=["user_agent"], MEMOPT_USER_SESSIONS_REFRESH=0) == []
