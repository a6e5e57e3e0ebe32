"""The session-ID gate in ``django_memopt.middleware.SessionMiddleware``: what it turns away,
what it must never turn away, across processes, restarts and damaged filter files."""

from __future__ import annotations

import os
import random
import string
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncRequestFactory, RequestFactory, override_settings

from django_memopt import gate, stats
from django_memopt.backends.lmdb import SessionStore
from django_memopt.backends.redis import SessionStore as RedisSessionStore
from django_memopt.backends.redis import connection
from django_memopt.middleware import SessionMiddleware
from django_memopt.session_ids import SessionIds
from tests import gate_workers
from tests.contract import GATE_MIDDLEWARE, HOSTILE_KEYS
from tests.processes import children, finish, result_of

LMDB = "django_memopt.backends.lmdb"
REDIS = "django_memopt.backends.redis"
PRIMITIVES = ("_read", "_write", "_touch", "_remove", "_contains")
ALPHABET = string.ascii_lowercase + string.digits


def random_ids(count: int, length: int = 32) -> list[str]:
    """IDs of no session in the form of Django's own (and legacy) ones: no tag."""
    return ["".join(random.choices(ALPHABET, k=length)) for _ in range(count)]


def unknown_ids(count: int) -> list[str]:
    """Signed IDs of no session, as a deleted or expired session's cookie carries."""
    return [gate.session_ids().mint() for _ in range(count)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """An LMDB store of this test's own, with its filter beside it, and the gate in front."""
    path = tmp_path / "store"
    middleware = [GATE_MIDDLEWARE if "sessions" in m else m for m in settings.MIDDLEWARE]
    with override_settings(
        SESSION_ENGINE=LMDB, MEMOPT_LMDB_PATH=str(path), MIDDLEWARE=middleware, MEMOPT_FILTER=True
    ):
        yield path


def new_session(store: type[Any] = SessionStore, **fields: Any) -> str:
    session = store()
    session.update(fields or {"a": 1})
    session.save()
    assert session.session_key is not None
    return str(session.session_key)


def filter_now() -> Any:
    found = gate.session_filter()
    assert found is not None
    return found


def read_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"a": request.session.get("a")})


def through_middleware(session_key: str | None) -> tuple[HttpRequest, HttpResponse]:
    request = RequestFactory().get("/")
    if session_key is not None:
        request.COOKIES[settings.SESSION_COOKIE_NAME] = session_key
    response = SessionMiddleware(read_view)(request)
    return request, response


class StoreCalls:
    """Counts the engine's storage primitives while active (they still run)."""

    def __init__(self, store: type[Any]) -> None:
        self.calls: list[str] = []
        self._patches = [
            mock.patch.object(store, name, side_effect=self._recorder(store, name))
            for name in PRIMITIVES
        ]

    def _recorder(self, store: type[Any], name: str) -> Any:
        original = getattr(store, name)

        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return original(*args, **kwargs)

        return record

    def __enter__(self) -> StoreCalls:
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for patch in self._patches:
            patch.stop()


# -- signed session IDs ----------------------------------------------------------------------


def test_engines_mint_signed_ids(store: Path) -> None:
    session_key = new_session()
    check = gate.session_ids().check(session_key)
    assert check.status == "signed"
    assert len(session_key) == 48


def test_hostile_cookies_get_a_fresh_session_without_store_access(store: Path) -> None:
    signed = new_session()
    bad_tag = signed[:-1] + ("0" if signed[-1] != "0" else "1")
    other_key = SessionIds.from_secrets(["another-secret-key" * 3]).mint()
    for cookie in [*HOSTILE_KEYS, bad_tag, other_key, "", "x" * 100_000]:
        with StoreCalls(SessionStore) as store_calls:
            request, response = through_middleware(cookie)
        assert store_calls.calls == [], cookie[:80]
        assert request.session.session_key is None
        assert response.content == b'{"a": null}'
        # Deleted exactly as Django deletes the cookie of an empty session.
        morsel = response.cookies[settings.SESSION_COOKIE_NAME]
        assert morsel.value == "" and morsel["max-age"] == 0


def test_a_live_session_passes_and_loads(store: Path) -> None:
    session_key = new_session(a=7)
    request, response = through_middleware(session_key)
    assert request.session.session_key == session_key
    assert response.content == b'{"a": 7}'


def test_a_session_signed_with_a_fallback_key_passes(store: Path) -> None:
    session_key = new_session(a=3)
    with override_settings(
        SECRET_KEY="a-new-secret-key-" * 4, SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]
    ):
        assert gate.admits(session_key)
        _request, response = through_middleware(session_key)
    assert response.content == b'{"a": 3}'


# -- the filter ------------------------------------------------------------------------------


def test_unknown_ids_are_turned_away_by_the_filter_without_store_access(store: Path) -> None:
    new_session()
    assert filter_now().complete
    unknown = unknown_ids(200)
    before = stats.process_totals().get("rejected_unknown", 0)
    with StoreCalls(SessionStore) as store_calls:
        admitted = [key for key in unknown if gate.admits(key)]
    # A false positive goes on to the store, which finds nothing: that is all it costs.
    assert len(admitted) <= 10
    assert store_calls.calls == []
    rejected = stats.process_totals()["rejected_unknown"] - before
    assert rejected == len(unknown) - len(admitted)


def test_a_filter_not_known_complete_passes_everything(store: Path) -> None:
    session_keys = [new_session() for _ in range(20)]
    call_command("memopt_rebuild_filter", stdout=StringIO())
    path = settings.MEMOPT_FILTER_PATH if hasattr(settings, "MEMOPT_FILTER_PATH") else None
    path = path or str(store / "session-filter")
    with override_settings(MEMOPT_FILTER_CAPACITY=1234):  # new parameters: a new, empty file
        with mock.patch.object(gate, "AUTOMATIC_REBUILD_LIMIT", 5):  # too many to fill at once
            found = filter_now()
            assert not found.complete
            assert all(gate.admits(key) for key in unknown_ids(100) + session_keys)
        call_command("memopt_rebuild_filter", stdout=StringIO())
        gate.session_filter().refresh()  # type: ignore[union-attr]
        assert filter_now().complete
        assert all(gate.admits(key) for key in session_keys)
        assert sum(gate.admits(key) for key in unknown_ids(200)) <= 10
    assert os.path.exists(path)


def test_a_fresh_filter_is_filled_from_a_small_store_at_once(store: Path) -> None:
    session_keys = [new_session() for _ in range(30)]
    os.unlink(filter_now().path)
    gate._state.filter = None  # a new process
    found = filter_now()
    assert found.complete
    assert all(found.might_contain(key) for key in session_keys)


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "garbage header"])
def test_a_damaged_filter_never_turns_away_a_live_session(store: Path, damage: str) -> None:
    session_keys = [new_session() for _ in range(50)]
    path = Path(filter_now().path)
    size = path.stat().st_size
    if damage == "truncated":
        os.truncate(path, size // 2)
    elif damage == "zeroed":
        path.write_bytes(bytes(size))
    else:
        with open(path, "r+b") as file:
            file.write(os.urandom(64))
    gate._state.filter = None  # a process starting now, or ...
    with mock.patch.object(gate, "AUTOMATIC_REBUILD_LIMIT", 5):
        assert all(gate.admits(key) for key in session_keys)
        assert not filter_now().complete
    call_command("memopt_rebuild_filter", stdout=StringIO())
    filter_now().refresh()
    assert all(gate.admits(key) for key in session_keys)
    assert sum(gate.admits(key) for key in unknown_ids(200)) <= 10


def test_a_filter_damaged_under_a_running_process_is_not_trusted(store: Path) -> None:
    session_keys = [new_session() for _ in range(50)]
    path = Path(filter_now().path)
    with open(path, "r+b") as file:
        file.write(os.urandom(64))
    # ... or one already running: its next check sees the header is no longer valid.
    assert all(gate.admits(key) for key in session_keys)


def test_a_filter_file_removed_is_recreated_and_refilled(store: Path) -> None:
    session_keys = [new_session() for _ in range(20)]
    os.unlink(filter_now().path)
    gate._state.refresh_at = 0  # the once-a-second look for a replaced file is due
    assert all(gate.admits(key) for key in session_keys)
    session_key = new_session()  # a write re-creates the file, and it is filled again
    assert os.path.exists(filter_now().path)
    assert all(gate.admits(key) for key in [*session_keys, session_key])


def test_rebuild_command_reports_what_it_did(store: Path) -> None:
    for _ in range(3):
        new_session()
    output = []
    with mock.patch("sys.stdout") as stdout:
        stdout.write.side_effect = output.append
        call_command("memopt_rebuild_filter", stdout=stdout)
    assert "Added 3 live sessions" in "".join(output)


def test_rebuild_command_refuses_when_the_filter_is_off(store: Path) -> None:
    from django.core.management import CommandError

    with override_settings(MEMOPT_FILTER=False), pytest.raises(CommandError, match="off"):
        call_command("memopt_rebuild_filter")


def test_an_expiry_refresh_is_recorded_in_the_filter(store: Path) -> None:
    session_key = new_session()
    with (
        mock.patch("django_memopt.gate.record_write", wraps=gate.record_write) as record,
        override_settings(SESSION_SAVE_EVERY_REQUEST=True),
    ):
        through_middleware(session_key)
    assert [call.args[0] for call in record.call_args_list] == [session_key]


# -- processes and restarts ------------------------------------------------------------------


def test_processes_creating_and_requesting_sessions_see_no_false_negative(
    store: Path, tmp_path: Path
) -> None:
    assert filter_now().complete  # made and filled (empty) before the children start
    creators, per_creator = 4, 2_600
    logs = [str(tmp_path / f"created-{n}.log") for n in range(creators)]
    results = [tmp_path / f"result-{n}.json" for n in range(creators + 2)]
    with children() as start:
        processes = [
            start(gate_workers.create_sessions, str(store), logs[n], per_creator, str(results[n]))
            for n in range(creators)
        ]
        processes += [
            start(gate_workers.request_logged_sessions, str(store), logs, str(results[n]))
            for n in (creators, creators + 1)
        ]
        assert finish(processes, timeout=120) == [0] * len(processes)
    assert sum(result_of(path)["created"] for path in results[:creators]) >= 10_000
    for path in results[creators:]:
        checked = result_of(path)
        assert checked["sent"] == creators * per_creator
        assert checked["lost"] == 0
        assert checked["rejected"] == {}
        assert checked["unknown_passed"] <= 50  # the filter was filtering all along


def test_a_restarted_process_admits_every_live_session(store: Path, tmp_path: Path) -> None:
    session_keys = [new_session() for _ in range(500)]
    keys_path = tmp_path / "keys.txt"
    keys_path.write_text("\n".join(session_keys))
    result = tmp_path / "result.json"
    with children() as start:
        process = start(gate_workers.reopen_and_check, str(store), str(keys_path), str(result))
        assert finish([process]) == [0]
    outcome = result_of(result)
    assert outcome["complete"] is True
    assert outcome["admitted"] == len(session_keys)


# -- the filter file's lifecycle --------------------------------------------------------------


def test_a_filter_file_removed_under_a_running_process_turns_away_no_new_session(
    store: Path, tmp_path: Path
) -> None:
    """The file is removed (by an operator, a temp cleaner); another process saves sessions
    into the new file it creates; this process, still reading the old one, admits them."""
    new_session()
    found = filter_now()
    assert found.complete
    gate._state.refresh_at = float("inf")  # no once-a-second look for a new file meanwhile
    os.unlink(found.path)
    log, result = tmp_path / "created.log", tmp_path / "result.json"
    with children() as start:
        process = start(gate_workers.create_sessions, str(store), str(log), 50, str(result))
        assert finish([process]) == [0]
    created = [line.split()[0] for line in log.read_text().splitlines()[:-1]]
    assert len(created) == 50
    assert all(gate.admits(key) for key in created)
    assert found.path == filter_now().path and not found.is_current()
    gate._state.refresh_at = 0  # once it has moved to the new file, it filters again
    assert filter_now().is_current() and filter_now().complete
    assert all(gate.admits(key) for key in created)
    assert sum(gate.admits(key) for key in unknown_ids(200)) <= 10


@pytest.mark.parametrize("size", ["nothing", "half", "a few bytes"])
def test_a_filter_file_truncated_under_a_running_process_kills_nothing(
    store: Path, tmp_path: Path, size: str
) -> None:
    """A reading process must notice a truncated file, never die of it (SIGBUS)."""
    session_keys = [new_session() for _ in range(200)]
    path = Path(filter_now().path)
    keys, ready, truncated = tmp_path / "keys", tmp_path / "ready", tmp_path / "truncated"
    keys.write_text("\n".join(session_keys))
    result = tmp_path / "result.json"
    with children() as start:
        process = start(
            gate_workers.check_after_truncation,
            str(store), str(keys), str(ready), str(truncated), str(result),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.is_alive() and time.monotonic() < deadline
            time.sleep(0.005)
        os.truncate(
            path, {"nothing": 0, "half": path.stat().st_size // 2, "a few bytes": 100}[size]
        )
        truncated.touch()
        assert finish([process]) == [0]  # -7 is a death by SIGBUS
    assert result_of(result)["admitted"] == len(session_keys)


def test_a_vandalised_filter_file_turns_away_no_live_session_and_kills_nothing(
    store: Path, tmp_path: Path
) -> None:
    """Three processes create sessions and ask the gate about every session any of them
    created, while a fourth removes, replaces, truncates and zeroes the file in a loop."""
    seconds, churners = 12.0, 3
    logs = tmp_path / "logs"
    logs.mkdir()
    results = [tmp_path / f"result-{n}.json" for n in range(churners + 1)]
    with children() as start:
        processes = [
            start(gate_workers.churn, str(store), str(logs), n, seconds, str(results[n]))
            for n in range(churners)
        ]
        processes.append(
            start(
                gate_workers.vandalise,
                str(store / "session-filter"),
                seconds,
                str(results[churners]),
            )  # fmt: skip
        )
        exit_codes = finish(processes, timeout=seconds + 60)
    assert exit_codes == [0] * (churners + 1)  # -7: killed by SIGBUS
    outcomes = [result_of(path) for path in results[:churners]]
    assert [outcome["examples"] for outcome in outcomes] == [[]] * churners
    assert sum(outcome["turned_away"] for outcome in outcomes) == 0
    assert sum(outcome["checked"] for outcome in outcomes) >= 1_000
    assert sum(outcome["unknown_turned_away"] for outcome in outcomes) > 0  # it did filter
    assert len(result_of(results[churners])["done"]) == 7  # every kind of damage, done


# -- IDs without a tag: the migration window -------------------------------------------------


def legacy_session(store: type[Any] = SessionStore, **fields: Any) -> str:
    """A session stored under an unsigned ID, as one from before signed IDs."""
    session = store()
    session.update(fields or {"a": 1})
    session._session_key = random_ids(1)[0]
    session.save(must_create=True)
    return str(session.session_key)


def window_end(store: type[Any] = SessionStore) -> float:
    stored = store.read_value("meta", gate.UNSIGNED_WINDOW)
    assert stored is not None
    return float(stored)


def test_a_fresh_store_turns_unsigned_ids_away_without_reading_a_session(store: Path) -> None:
    with StoreCalls(SessionStore) as store_calls:
        assert not any(gate.admits(key) for key in random_ids(100))
    assert store_calls.calls == []
    assert window_end() == 0  # decided once, for every process: no window
    assert gate.admits(new_session())


def test_a_store_of_signed_ids_only_opens_no_window(store: Path) -> None:
    session_keys = [new_session() for _ in range(20)]
    assert not gate.admits(random_ids(1)[0])
    assert window_end() == 0
    assert all(gate.admits(key) for key in session_keys)


def test_a_store_holding_an_unsigned_id_opens_the_window_for_the_cookie_age(
    store: Path, tmp_path: Path
) -> None:
    new_session()
    legacy = legacy_session(a=5)
    before = time.time()
    assert gate.admits(legacy)
    _request, response = through_middleware(legacy)
    assert response.content == b'{"a": 5}'
    age = settings.SESSION_COOKIE_AGE
    assert before + age - 1 <= window_end() <= time.time() + age + 1
    # Another process reads the recorded end instead of deciding again.
    keys_path, result = tmp_path / "keys.txt", tmp_path / "result.json"
    keys_path.write_text(legacy)
    with children() as start:
        process = start(gate_workers.reopen_and_check, str(store), str(keys_path), str(result))
        assert finish([process]) == [0]
    assert result_of(result)["admitted"] == 1


def test_a_store_too_large_to_look_through_opens_the_window(store: Path) -> None:
    for _ in range(6):
        new_session()
    with mock.patch.object(gate, "WINDOW_SCAN_LIMIT", 5):
        assert gate.unsigned_ids_admitted()
    assert window_end() > time.time()


def test_after_the_window_unsigned_ids_are_turned_away_without_a_store_read(
    store: Path,
) -> None:
    legacy = legacy_session()
    SessionStore.add_value("meta", gate.UNSIGNED_WINDOW, b"%d" % (time.time() - 1))  # it has ended
    with StoreCalls(SessionStore) as store_calls:
        assert not gate.admits(legacy)
        _request, response = through_middleware(legacy)
    assert store_calls.calls == []
    assert response.content == b'{"a": null}'


def test_the_setting_forces_either_behaviour(store: Path) -> None:
    legacy = legacy_session()
    SessionStore.add_value("meta", gate.UNSIGNED_WINDOW, b"%d" % (time.time() + 3600))  # open
    assert gate.admits(legacy)
    with override_settings(MEMOPT_UNSIGNED_IDS=False):
        assert not gate.admits(legacy)
    with (
        override_settings(MEMOPT_UNSIGNED_IDS=True),
        mock.patch.object(
            SessionStore, "read_value", side_effect=AssertionError("asked the store")
        ),
    ):
        assert gate.admits(legacy)


def test_a_store_that_cannot_tell_the_window_lets_ids_through_and_asks_again_later(
    store: Path,
) -> None:
    from django_memopt.backends.base import SessionStoreError

    legacy = legacy_session()
    with (
        mock.patch.object(SessionStore, "read_value", side_effect=SessionStoreError("down")),
        mock.patch.object(gate.logger, "warning") as logged,
    ):
        assert gate.admits(legacy)  # the store is asked for the session, and answers
        assert gate.admits(legacy)
    assert logged.call_count == 1  # once, then not again until the retry is due
    gate._state.window_retry_at = 0
    assert gate.admits(legacy)
    assert window_end() > time.time()


# -- async, counters, Redis ------------------------------------------------------------------


def test_the_gate_works_in_async_middleware(store: Path) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        return JsonResponse({"a": await request.session.aget("a")})

    middleware = SessionMiddleware(view)
    assert middleware.async_mode
    live = new_session(a=9)
    forged = SessionIds.from_secrets(["another-secret-key" * 3]).mint()
    for cookie, body in ((live, b'{"a": 9}'), (forged, b'{"a": null}')):
        request = AsyncRequestFactory().get("/")
        request.COOKIES[settings.SESSION_COOKIE_NAME] = cookie
        with StoreCalls(SessionStore) as store_calls:
            response = async_to_sync(middleware)(request)
        assert response.content == body
        assert store_calls.calls == (["_read"] if cookie == live else [])
    assert response.cookies[settings.SESSION_COOKIE_NAME]["max-age"] == 0


def test_counters_count_checks_passes_and_rejects_by_reason(store: Path) -> None:
    live = new_session()
    forged = SessionIds.from_secrets(["another-secret-key" * 3]).mint()
    before = stats.process_totals()
    for cookie in (live, forged, "not a key", live, unknown_ids(1)[0], random_ids(1)[0]):
        through_middleware(cookie)
    after = stats.process_totals()
    counted = {name: after.get(name, 0) - before.get(name, 0) for name in stats.GATE_COUNTERS}
    assert counted == {
        "checked": 6,
        "passed": 2,
        "rejected_malformed": 1,
        "rejected_forged": 1,
        "rejected_unsigned": 1,  # a store of signed IDs only: no migration window
        "rejected_unknown": 1,
        "filter_unavailable": 0,
    }


def test_with_redis_the_filter_is_off_and_forged_ids_are_still_turned_away() -> None:
    with override_settings(SESSION_ENGINE=REDIS, SESSION_CACHE_ALIAS="sessions"):
        assert gate.session_filter() is None
        session_key = new_session(RedisSessionStore, a=5)
        assert gate.admits(session_key)
        forged = SessionIds.from_secrets(["another-secret-key" * 3]).mint()
        unknown = unknown_ids(1)[0]
        with StoreCalls(RedisSessionStore) as store_calls:
            assert not gate.admits(forged)
        assert store_calls.calls == []
        # Without a filter an unknown ID goes to the store, which finds nothing.
        assert gate.admits(unknown)
        RedisSessionStore(session_key).delete()


def test_a_process_with_the_filter_off_keeps_the_file_and_records_into_it(store: Path) -> None:
    """A process of another configuration (a rolling deploy, a one-off command) neither
    removes the file the site's processes read nor writes sessions they cannot see."""
    new_session()
    with gate.open_filter() as running:  # a process with the filter on, still running
        assert running.complete
        with override_settings(MEMOPT_FILTER=False):
            apps.get_app_config("django_memopt").ready()  # a process starting with it off
            assert os.path.exists(running.path)
            written_while_off = new_session()
        assert running.is_current() and running.complete
        assert running.might_contain(written_while_off, issued_at=0.0)  # its bits, no stat
    assert gate.admits(written_while_off)


def test_a_process_with_the_filter_off_creates_no_file(store: Path) -> None:
    path = filter_now().path
    os.unlink(path)
    with override_settings(MEMOPT_FILTER=False):
        new_session()
        assert not os.path.exists(path)


def test_an_unopenable_filter_fails_saves_clearly_and_lets_ids_through(
    store: Path, tmp_path: Path
) -> None:
    from django_memopt.backends.base import SessionStoreError

    session_key = new_session(a=2)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with override_settings(MEMOPT_FILTER_PATH=str(blocker / "filter")):
        session = SessionStore()
        session["a"] = 1
        with pytest.raises(SessionStoreError, match="MEMOPT_FILTER_PATH"):
            session.save()
        with mock.patch.object(gate.logger, "warning") as logged:
            _request, response = through_middleware(session_key)
            assert response.content == b'{"a": 2}'
            through_middleware(session_key)
        assert logged.call_count == 1  # once, not once per request


def test_unsigned_ids_are_refused_in_front_of_redis_without_a_filter_or_store_access() -> None:
    """With the defaults, on a fresh Redis store (its own key prefix): what a flood of
    random IDs in Django's form costs the store is one read of the window, per process."""
    prefix = f"gate-{random_ids(1)[0]}:"
    redis = {"SESSION_ENGINE": REDIS, "SESSION_CACHE_ALIAS": "sessions"}
    with override_settings(MEMOPT_REDIS_KEY_PREFIX=prefix, **redis):
        session_key = new_session(RedisSessionStore, a=4)  # signed: still admitted
        assert gate.session_filter() is None
        read_value = RedisSessionStore.read_value
        with (
            StoreCalls(RedisSessionStore) as store_calls,
            mock.patch.object(RedisSessionStore, "read_value", wraps=read_value) as window_reads,
        ):
            assert not any(gate.admits(key) for key in random_ids(2_000))
        assert store_calls.calls == []
        assert window_reads.call_count == 1
        assert gate.admits(session_key)
        RedisSessionStore(session_key).delete()
        connection().delete(f"{prefix}~meta")


def test_a_save_racing_a_filter_replacement_is_recorded_in_the_new_file(store: Path) -> None:
    """Another process replaces the filter and fills it from the store between this
    save's record and its store write: the save records itself in the new file too."""
    new_session()
    filter_now()
    write = SessionStore._write.__func__  # type: ignore[attr-defined]

    def write_after_a_replacement(cls: Any, *args: Any, **kwargs: Any) -> None:
        with open(filter_now().path, "r+b") as file:
            file.write(os.urandom(64))  # damaged: the next opener re-creates it ...
        with gate.open_filter() as other:  # ... and fills it from the store
            other.rebuild(SessionStore.iter_sessions())
        write(cls, *args, **kwargs)

    with mock.patch.object(SessionStore, "_write", classmethod(write_after_a_replacement)):
        session_key = new_session(a=6)
    gate._state.refresh_at = 0  # this process's once-a-second look for a new file
    assert filter_now().complete
    assert sum(gate.admits(key) for key in unknown_ids(200)) <= 10  # it is filtering
    assert gate.admits(session_key)


def test_the_filter_in_front_of_redis_on_one_host(tmp_path: Path) -> None:
    with override_settings(SESSION_ENGINE=REDIS, SESSION_CACHE_ALIAS="sessions"):
        session_keys = [new_session(RedisSessionStore, a=n) for n in range(20)]
        with override_settings(MEMOPT_FILTER=True, MEMOPT_FILTER_PATH=str(tmp_path / "f")):
            with mock.patch.object(gate, "AUTOMATIC_REBUILD_LIMIT", 0):
                assert not filter_now().complete  # the suite's Redis holds other sessions
            output = StringIO()
            call_command("memopt_rebuild_filter", stdout=output)
            assert "live sessions" in output.getvalue()
            gate._state.refresh_at = 0
            assert filter_now().complete
            assert all(gate.admits(key) for key in session_keys)
            later = new_session(RedisSessionStore, a=99)  # recorded by its save
            assert gate.admits(later)
            with StoreCalls(RedisSessionStore) as store_calls:
                assert sum(gate.admits(key) for key in unknown_ids(200)) <= 10
            assert len(store_calls.calls) == 0  # the gate never reads the store itself
        for session_key in [*session_keys, later]:
            RedisSessionStore(session_key).delete()
