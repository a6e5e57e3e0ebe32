"""Moving to django-memopt (docs/moving.md): the read-through fallback to the previous
engine (``MEMOPT_PREVIOUS_ENGINE``), ``manage.py memopt_import`` and their checks, on both
stores, from Django's ``db``, ``cached_db``, ``file`` and ``cache`` engines."""

from __future__ import annotations

import io
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.sessions.backends.base import SessionBase as DjangoSessionBase
from django.contrib.sessions.backends.file import SessionStore as FileSessionStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from django_memopt import previous as previous_module
from django_memopt.backends.base import (
    ADOPTED_AS,
    PREVIOUS_ENGINE_SINCE,
    SessionBase,
    session_ids,
)
from django_memopt.checks import check_settings
from django_memopt.previous import PreviousEngine, engine_for
from tests import moving_workers
from tests.processes import children, finish, result_of

DB = "django.contrib.sessions.backends.db"
CACHED_DB = "django.contrib.sessions.backends.cached_db"
FILE = "django.contrib.sessions.backends.file"
CACHE = "django.contrib.sessions.backends.cache"
GATE_MIDDLEWARE = "django_memopt.middleware.SessionMiddleware"
# The engines that encode their sessions and can list them (Django's cache engine can do
# neither: its entries are its cache backend's).
LISTABLE = [DB, CACHED_DB, FILE]

# The db engines' sessions live in the test database.
pytestmark = pytest.mark.django_db

# What Django's JSON serializer stores, and gets back: each type JSON has, nested.
JSON_VALUES: dict[str, Any] = {
    "_auth_user_id": "42",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "0123456789abcdef" * 4,
    "cart": [{"sku": "alpine-tea", "quantity": 2, "price": "4.50"}, {"sku": "mug"}],
    "ratio": 0.25,
    "big": 2**70,
    "negative": -7,
    "flag": True,
    "nothing": None,
    "text": "üñïçødé ✓",
    "nested": {"a": {"b": [1, [2, [3]]]}, "": "empty key"},
}


@pytest.fixture(params=["lmdb", "redis", "redis-client-cache"])
def store(request: pytest.FixtureRequest, settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Our engine, on a store of its own (and on Redis with a client-side cache, which
    holds a claim like any session it reads)."""
    if request.param == "lmdb":
        settings.SESSION_ENGINE = "django_memopt.backends.lmdb"
        settings.MEMOPT_LMDB_PATH = str(tmp_path / "lmdb")
    else:
        settings.SESSION_ENGINE = "django_memopt.backends.redis"
        settings.SESSION_CACHE_ALIAS = "sessions"
        settings.MEMOPT_REDIS_KEY_PREFIX = f"moving-{uuid.uuid4().hex[:8]}:"
        if request.param == "redis-client-cache":
            settings.MEMOPT_REDIS_CLIENT_CACHE = 1024**2
    found: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    yield found
    if request.param == "lmdb":
        from django_memopt.backends.lmdb import close_environments

        close_environments()


def _forget_file_path() -> None:
    # Django's file engine keeps SESSION_FILE_PATH on the class, once read.
    if "_storage_path" in vars(FileSessionStore):
        del FileSessionStore._storage_path


def _use_previous(engine: str, settings: Any, tmp_path: Path) -> Iterator[str]:
    if engine == FILE:
        (tmp_path / "files").mkdir()
        settings.SESSION_FILE_PATH = str(tmp_path / "files")
        _forget_file_path()
    settings.MEMOPT_PREVIOUS_ENGINE = engine
    yield engine
    _forget_file_path()


@pytest.fixture(params=[DB, CACHED_DB, FILE, CACHE])
def old_engine(
    request: pytest.FixtureRequest, settings: Any, tmp_path: Path, store: Any
) -> Iterator[str]:
    """The engine the site switched from, set as ``MEMOPT_PREVIOUS_ENGINE``."""
    yield from _use_previous(request.param, settings, tmp_path)


@pytest.fixture(params=LISTABLE)
def listable(
    request: pytest.FixtureRequest, settings: Any, tmp_path: Path, store: Any
) -> Iterator[str]:
    """A previous engine that can list its sessions, with the fallback on."""
    yield from _use_previous(request.param, settings, tmp_path)


def old_session(engine: str, data: dict[str, Any], expiry: int | None = None) -> str:
    """A session saved by ``engine`` (as the site saved it before the switch); its key."""
    session: DjangoSessionBase = import_module(engine).SessionStore()
    session.update(data)
    if expiry is not None:
        session.set_expiry(expiry)
    session.save()
    assert session.session_key is not None
    return session.session_key


def kept_aside(engine: str, session_key: str) -> Any:
    """What ``engine`` stores for ``session_key``, as it is; call the result to put it
    back (as if deleting it there had failed)."""
    if engine in (DB, CACHED_DB):
        row = Session.objects.get(pk=session_key)
        return lambda: Session.objects.create(
            session_key=session_key, session_data=row.session_data, expire_date=row.expire_date
        )
    if engine == FILE:
        path = Path(import_module(engine).SessionStore(session_key)._key_to_file())
        content = path.read_text()
        return lambda: path.write_text(content)
    session = import_module(engine).SessionStore(session_key)
    data = session._cache.get(session.cache_key)
    return lambda: session._cache.set(session.cache_key, data, 600)


def old_holds(engine: str, session_key: str) -> bool:
    return bool(import_module(engine).SessionStore(session_key).load())


def moved(store: Any, old_key: str) -> str | None:
    """The key a request with the cookie ``old_key`` ends up with (it reads the session)."""
    session = store(old_key)
    session.keys()
    return session.session_key  # type: ignore[no-any-return]


def is_signed(session_key: str | None) -> bool:
    return session_ids().check(session_key).status == "signed"


@pytest.fixture
def previous_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys looked up in the previous engine, in order."""
    reads: list[str] = []
    for reader in (PreviousEngine, *PreviousEngine.__subclasses__()):
        method = vars(reader).get("read")
        if method is None:
            continue

        def counted(self: Any, session_key: str, method: Any = method) -> Any:
            reads.append(session_key)
            return method(self, session_key)

        monkeypatch.setattr(reader, "read", counted)
    return reads


# -- the read-through fallback ---------------------------------------------------------------


def test_a_previous_session_is_copied_under_a_signed_id_once(store: Any, old_engine: str) -> None:
    old_key = old_session(old_engine, JSON_VALUES)
    session = store(old_key)
    assert dict(session.items()) == JSON_VALUES
    assert is_signed(session.session_key)
    assert session.modified is True  # so the response hands out the new cookie
    assert not old_holds(old_engine, old_key)  # moved, not copied twice
    # A fresh load of the new ID: the values came back as Django's JSON serializer gave them.
    again = store(session.session_key)
    assert dict(again.items()) == JSON_VALUES
    assert again.modified is False
    assert type(again["big"]) is int and type(again["ratio"]) is float


def test_the_old_cookie_then_leads_to_the_copy(store: Any, old_engine: str) -> None:
    old_key = old_session(old_engine, {"cart": ["tea"]})
    first = store(old_key)
    assert first["cart"] == ["tea"]
    # A request still carrying the old cookie (a second tab, sent before the first answered).
    second = store(old_key)
    assert second["cart"] == ["tea"]
    assert second.session_key == first.session_key
    assert second.modified is True
    second["cart"] = ["tea", "mug"]
    second.save()
    assert store(first.session_key)["cart"] == ["tea", "mug"]


@pytest.mark.parametrize("lifetime", [600, 7 * 86400])
def test_the_deadline_carries_over(store: Any, old_engine: str, lifetime: int) -> None:
    old_key = old_session(old_engine, {"a": 1}, expiry=lifetime)
    session = store(old_key)
    assert session["a"] == 1
    stored = store._read(session.session_key)
    assert stored is not None
    assert abs(stored.expires_at - (time.time() + lifetime)) < 5
    claim = store._read(old_key)
    assert claim is not None and set(claim.fields) == {ADOPTED_AS}
    assert abs(claim.expires_at - stored.expires_at) < 1


@pytest.mark.parametrize("old_engine", [DB, CACHED_DB], indirect=True)
def test_the_database_deadline_is_the_rows(store: Any, old_engine: str) -> None:
    old_key = old_session(old_engine, {"a": 1})
    Session.objects.filter(pk=old_key).update(
        expire_date=Session.objects.get(pk=old_key).expire_date - timedelta(days=3)
    )
    expected = Session.objects.get(pk=old_key).expire_date.timestamp()
    session = store(old_key)
    assert session["a"] == 1
    assert store._read(session.session_key).expires_at == pytest.approx(expected, abs=0.01)


def test_a_logout_is_final_even_if_the_previous_engine_kept_the_session(
    store: Any, old_engine: str
) -> None:
    old_key = old_session(old_engine, {"_auth_user_id": "1"})
    put_back = kept_aside(old_engine, old_key)
    session = store(old_key)
    assert session["_auth_user_id"] == "1"
    new_key = session.session_key
    session.flush()  # a logout
    put_back()  # as if deleting it there had failed
    assert old_holds(old_engine, old_key)
    replayed = store(old_key)
    assert dict(replayed.items()) == {}
    assert replayed.session_key is None
    assert not store().exists(new_key)


def test_an_unknown_cookie_costs_one_lookup_while_the_fallback_is_on_and_none_after(
    store: Any, old_engine: str, previous_reads: list[str], settings: Any
) -> None:
    unknown = "a" * 32
    session = store(unknown)
    assert dict(session.items()) == {}
    assert session.session_key is None
    assert previous_reads == [unknown]
    settings.MEMOPT_PREVIOUS_ENGINE = None
    assert dict(store(unknown).items()) == {}
    assert previous_reads == [unknown]


def test_signed_ids_are_never_looked_up_in_the_previous_engine(
    store: Any, old_engine: str, previous_reads: list[str]
) -> None:
    gone = session_ids().mint()  # ours, but no such session
    forged = gone[:-1] + ("0" if gone[-1] != "0" else "1")
    for key in (gone, forged):
        assert dict(store(key).items()) == {}
    assert previous_reads == []


def test_values_our_codec_cannot_store_leave_the_session_where_it_is(
    store: Any, settings: Any, tmp_path: Path, caplog: Any
) -> None:
    (tmp_path / "files").mkdir()
    settings.SESSION_FILE_PATH = str(tmp_path / "files")
    settings.MEMOPT_PREVIOUS_ENGINE = FILE
    _forget_file_path()
    try:
        # A field over the codec's 8 MiB limit (JSON holds it; we refuse it whole).
        old_key = old_session(FILE, {"huge": "x" * (9 * 1024 * 1024), "small": 1})
        with caplog.at_level("WARNING", "django_memopt.engine"):
            session = store(old_key)
            assert dict(session.items()) == {}
        assert "cannot be copied" in caplog.text
        assert old_holds(FILE, old_key)
        assert store._read(old_key) is None  # no claim: nothing was moved
    finally:
        _forget_file_path()


def test_async_load_reads_the_previous_engine_off_the_event_loop(
    store: Any, old_engine: str
) -> None:
    old_key = old_session(old_engine, {"cart": ["tea"]})
    session = store(old_key)

    async def load() -> Any:
        return await session.aget("cart")

    # Inline on the event loop, a database query would raise SynchronousOnlyOperation.
    assert async_to_sync(load)() == ["tea"]
    assert is_signed(session.session_key)


# -- hostile and damaged input ---------------------------------------------------------------


def corrupt_old_session(engine: str, payload: str) -> str:
    """A session of ``engine`` whose stored data is ``payload`` as it is."""
    old_key = old_session(engine, {"a": 1})
    if engine in (DB, CACHED_DB):
        Session.objects.filter(pk=old_key).update(session_data=payload)
        if engine == CACHED_DB:
            from django.conf import settings
            from django.core.cache import caches

            caches[settings.SESSION_CACHE_ALIAS].clear()
    else:
        assert engine == FILE
        path = import_module(engine).SessionStore(old_key)._key_to_file()
        Path(path).write_text(payload)
    return old_key


class Detonator:
    """Unpickling one calls :func:`detonate`: it must never happen."""

    def __reduce__(self) -> Any:
        return (detonate, ())


DETONATED: list[bool] = []


def detonate() -> str:
    DETONATED.append(True)
    return "unpickled"


class PickleSerializer:
    """Django's PickleSerializer (removed in 5.0), as a site may still configure it."""

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


@pytest.mark.parametrize("old_engine", LISTABLE, indirect=True)
@pytest.mark.parametrize("damage", ["garbage", "bad signature", "pickled"])
def test_a_damaged_or_pickled_session_gives_a_fresh_session_and_stays(
    store: Any, old_engine: str, damage: str, settings: Any
) -> None:
    # What the site's settings may still say: the fallback reads JSON regardless.
    settings.SESSION_SERIALIZER = f"{__name__}.PickleSerializer"
    salt = import_module(old_engine).SessionStore().key_salt
    payload = {
        "garbage": "not a session at all",
        "bad signature": signing.dumps({"a": 1}, salt=salt, key="another secret", compress=True),
        "pickled": signing.dumps(
            {"a": Detonator()}, salt=salt, serializer=PickleSerializer, compress=True
        ),
    }[damage]
    old_key = corrupt_old_session(old_engine, payload)
    if damage == "pickled":  # the payload is live: the engine itself would unpickle it
        assert import_module(old_engine).SessionStore().decode(payload) == {"a": "unpickled"}
        assert DETONATED == [True]
    DETONATED.clear()
    session = store(old_key)
    assert dict(session.items()) == {}
    assert session.session_key is None
    assert DETONATED == []
    assert store._read(old_key) is None  # no claim
    # Left where it was, for whoever wants to look at it.
    if old_engine in (DB, CACHED_DB):
        assert Session.objects.filter(pk=old_key).exists()
    else:
        assert Path(import_module(old_engine).SessionStore(old_key)._key_to_file()).exists()


def test_a_damaged_claim_leads_nowhere(store: Any, old_engine: str) -> None:
    old_key = old_session(old_engine, {"a": 1})
    new_key = moved(store, old_key)
    claim = store._read(old_key)
    sealed = claim.fields[ADOPTED_AS]
    sealed = sealed if isinstance(sealed, bytes) else sealed.sealed(ADOPTED_AS)
    from django_memopt.fields import Delta

    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    store._write(old_key, Delta({ADOPTED_AS: tampered}), claim.expires_at, create=False)
    session = store(old_key)
    assert dict(session.items()) == {}
    assert session.session_key is None
    assert store(new_key)["a"] == 1  # the copy itself is untouched


# -- two requests with one old cookie at once ------------------------------------------------


def test_two_requests_with_one_old_cookie_at_once_end_on_one_session(
    store: Any, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the previous engine's session before either has copied it, so both copy
    it; one claim wins, the other copy is removed, and each request's write survives."""
    (tmp_path / "files").mkdir()
    settings.SESSION_FILE_PATH = str(tmp_path / "files")
    settings.MEMOPT_PREVIOUS_ENGINE = FILE
    _forget_file_path()
    old_key = old_session(FILE, {"cart": ["tea"]})
    before = set(store.iter_session_keys())
    both_read = threading.Barrier(2, timeout=30)
    read = previous_module.FileSessions.read

    def read_then_wait(self: Any, session_key: str) -> Any:
        found = read(self, session_key)
        both_read.wait()
        return found

    monkeypatch.setattr(previous_module.FileSessions, "read", read_then_wait)
    keys: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def request(name: str) -> None:
        try:
            session = store(old_key)
            assert session["cart"] == ["tea"]
            session[name] = True
            session.save()
            keys[name] = session.session_key
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    _forget_file_path()
    assert errors == []
    assert keys["left"] == keys["right"] and is_signed(keys["left"])
    final = store(keys["left"])
    assert dict(final.items()) == {"cart": ["tea"], "left": True, "right": True}
    # One copy and its claim: the losing copy was removed.
    assert set(store.iter_session_keys()) - before == {keys["left"], old_key}
    assert not old_holds(FILE, old_key)


# -- the gate --------------------------------------------------------------------------------


@pytest.fixture
def gated(settings: Any) -> None:
    settings.MIDDLEWARE = [GATE_MIDDLEWARE]
    settings.MEMOPT_FILTER = True
    settings.MEMOPT_FILTER_PATH = str(Path(settings.MEMOPT_LMDB_PATH) / "filter")


def test_through_the_gate_the_old_cookie_is_replaced_by_a_signed_one(
    store: Any, old_engine: str, gated: None, settings: Any
) -> None:
    old_key = old_session(old_engine, {"name": "ada"})
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = old_key
    response = client.get("/read/name/")
    assert response.json() == {"value": "ada"}
    new_key = response.cookies[settings.SESSION_COOKIE_NAME].value
    assert is_signed(new_key)
    assert int(response.cookies[settings.SESSION_COOKIE_NAME]["max-age"]) > 0
    assert client.get("/read/name/").json() == {"value": "ada"}
    client.get("/store/name/grace/")
    assert store(new_key)["name"] == "grace"


def test_the_gate_still_refuses_malformed_and_forged_ids_first(
    store: Any, old_engine: str, gated: None, settings: Any, previous_reads: list[str]
) -> None:
    minted = session_ids().mint()
    forged = minted[:-1] + ("0" if minted[-1] != "0" else "1")
    for cookie in ("../../etc/passwd", "x" * 65, "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", forged):
        client = Client()
        client.cookies[settings.SESSION_COOKIE_NAME] = cookie
        assert client.get("/read/name/").json() == {"value": None}
    assert previous_reads == []
    # An unsigned ID goes on, past a complete filter that never saw it, to the lookup.
    call_command("memopt_rebuild_filter", stdout=io.StringIO())
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = "b" * 32
    assert client.get("/read/name/").json() == {"value": None}
    assert previous_reads == ["b" * 32]


def test_unsigned_ids_forced_off_turn_the_old_cookies_away(
    store: Any, old_engine: str, gated: None, settings: Any
) -> None:
    settings.MEMOPT_UNSIGNED_IDS = False
    old_key = old_session(old_engine, {"name": "ada"})
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = old_key
    assert client.get("/read/name/").json() == {"value": None}
    assert old_holds(old_engine, old_key)
    assert "django_memopt.W010" in [message.id for message in check_settings()]


# -- memopt_import ---------------------------------------------------------------------------


def run_import(*args: str) -> str:
    out = io.StringIO()
    call_command("memopt_import", *args, stdout=out)
    return out.getvalue()


def test_import_copies_every_live_session_keeping_its_deadline(store: Any, listable: str) -> None:
    keys = {old_session(listable, {"n": n}, expiry=600 + n): n for n in range(23)}
    damaged = corrupt_old_session(listable, "garbage")
    summary = run_import("--batch-size", "5")
    assert "23 sessions copied, 0 copied before, 1 gone or unreadable" in summary
    for old_key, n in keys.items():
        session = store(old_key)
        assert session["n"] == n
        assert is_signed(session.session_key)
        assert abs(store._read(session.session_key).expires_at - time.time() - 600 - n) < 5
        assert not old_holds(listable, old_key)
    assert store._read(damaged) is None
    # Again: nothing left to copy, nothing copied twice.
    before = set(store.iter_session_keys())
    assert "0 sessions copied" in run_import()
    assert set(store.iter_session_keys()) == before


def test_import_resumes_where_an_interrupted_run_stopped(
    store: Any, listable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = sorted(old_session(listable, {"n": n}) for n in range(12))
    adopt_many = store.adopt_many.__func__
    batches: list[list[str]] = []

    def stop_in_the_second_batch(cls: Any, old_keys: list[str]) -> Any:
        batches.append(old_keys)
        if len(batches) == 2:  # a Ctrl-C three sessions into the second batch
            for old_key in old_keys[:3]:
                cls.adopt(old_key)
            raise KeyboardInterrupt
        return adopt_many(cls, old_keys)

    monkeypatch.setattr(store, "adopt_many", classmethod(stop_in_the_second_batch))
    with pytest.raises(KeyboardInterrupt):
        run_import("--batch-size", "4")
    monkeypatch.undo()
    assert batches == [keys[:4], keys[4:8]]
    # The second run lists from the end of the first run's last finished batch (keys[4:]).
    listed: list[str] = []
    pages = type(engine_for(listable)).pages

    def spy(self: Any, after: str | None, size: int) -> Any:
        for batch, checkpoint in pages(self, after, size):
            listed.extend(batch)
            yield batch, checkpoint

    monkeypatch.setattr(type(engine_for(listable)), "pages", spy)
    summary = run_import("--batch-size", "4")
    assert f"Going on after {keys[3][:6]}..." in summary
    assert "5 sessions copied" in summary
    assert listed == keys[7:]
    for n, old_key in enumerate(keys):
        assert is_signed(moved(store, old_key)), n
    signed = [key for key in store.iter_session_keys() if is_signed(key)]
    assert len(signed) == 12  # each copied once


def test_import_finishes_a_copy_whose_old_session_was_not_deleted(
    store: Any, listable: str
) -> None:
    old_key = old_session(listable, {"a": 1})
    put_back = kept_aside(listable, old_key)
    new_key = moved(store, old_key)
    put_back()  # as if the request that copied it had stopped before deleting it
    assert "0 sessions copied, 1 copied before" in run_import()
    assert not old_holds(listable, old_key)
    assert moved(store, old_key) == new_key
    assert store(new_key)["a"] == 1


def test_import_from_djangos_cache_engine_says_the_fallback_is_the_way(
    store: Any, settings: Any
) -> None:
    settings.MEMOPT_PREVIOUS_ENGINE = CACHE
    with pytest.raises(CommandError, match="read-through fallback"):
        run_import()


def test_import_needs_the_fallback_on_for_that_engine(store: Any, settings: Any) -> None:
    with pytest.raises(CommandError, match="--from"):
        run_import()
    with pytest.raises(CommandError, match="Set MEMOPT_PREVIOUS_ENGINE"):
        run_import("--from", DB)


# -- checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "engine",
    [
        "django_memopt.backends.lmdb",
        "django.contrib.sessions.backends.signed_cookies",
        "no.such.engine",
        "django.contrib.sessions.models",
        "",
        42,
    ],
)
def test_an_engine_the_fallback_cannot_read_is_an_error(
    store: Any, settings: Any, engine: Any
) -> None:
    settings.MEMOPT_PREVIOUS_ENGINE = engine
    assert "django_memopt.E026" in [message.id for message in check_settings()]


def test_a_fallback_on_longer_than_the_cookie_age_is_a_warning(
    store: Any, old_engine: str, settings: Any
) -> None:
    ids = [message.id for message in check_settings()]
    assert "django_memopt.E026" not in ids and "django_memopt.W009" not in ids
    # The check started the clock; now as if that was longer ago than SESSION_COOKIE_AGE.
    since = store.read_value("meta", PREVIOUS_ENGINE_SINCE)
    assert since is not None and since.endswith(old_engine.encode())
    long_ago = time.time() - settings.SESSION_COOKIE_AGE - 60
    store.put_value("meta", PREVIOUS_ENGINE_SINCE, b"%d %s" % (long_ago, old_engine.encode()))
    assert "django_memopt.W009" in [message.id for message in check_settings()]
    # Another previous engine starts the clock anew.
    settings.MEMOPT_PREVIOUS_ENGINE = DB if old_engine != DB else FILE
    assert "django_memopt.W009" not in [message.id for message in check_settings()]


def test_processes_moving_the_same_sessions_at_once_end_on_one_copy_each(
    store: Any, settings: Any, tmp_path: Path
) -> None:
    """Three processes, each with the same twenty old cookies, all at once: every cookie
    ends on one session that holds each process's write, and nothing is copied twice."""
    files = tmp_path / "files"
    files.mkdir()
    for setting, value in (("SESSION_FILE_PATH", str(files)), ("MEMOPT_PREVIOUS_ENGINE", FILE)):
        setattr(settings, setting, value)
    _forget_file_path()
    try:
        old_keys = [old_session(FILE, {"cart": ["tea"]}) for _ in range(20)]
        before = set(store.iter_session_keys())
        if store.__module__.endswith("lmdb"):
            name, setup_args = "lmdb", (settings.MEMOPT_LMDB_PATH,)
        else:
            name, setup_args = (
                "redis",
                (settings.REDIS_TEST_PORT, settings.MEMOPT_REDIS_KEY_PREFIX),
            )
        writers = ["first", "second", "third"]
        gathering = tmp_path / "ready"
        gathering.mkdir()
        with children() as start:
            processes = [
                start(
                    moving_workers.move_sessions,
                    name,
                    setup_args,
                    str(files),
                    old_keys,
                    writer,
                    str(gathering),
                    len(writers),
                    str(tmp_path / f"{writer}.json"),
                )
                for writer in writers
            ]
            assert finish(processes) == [0, 0, 0]
        ended = [result_of(tmp_path / f"{writer}.json")["ended_on"] for writer in writers]
        for old_key in old_keys:
            new_keys = {ended_on[old_key] for ended_on in ended}
            assert len(new_keys) == 1, new_keys
            (new_key,) = new_keys
            assert is_signed(new_key)
            assert dict(store(new_key).items()) == {
                "cart": ["tea"],
                **dict.fromkeys(writers, True),
            }
            assert moved(store, old_key) == new_key
            assert not old_holds(FILE, old_key)
        copies = {ended_on[old_key] for ended_on in ended for old_key in old_keys}
        assert set(store.iter_session_keys()) - before == copies | set(old_keys)
    finally:
        _forget_file_path()


def test_import_while_requests_move_the_same_sessions(
    store: Any, settings: Any, tmp_path: Path
) -> None:
    """memopt_import walks the sessions in key order while requests come back in the
    other order, both at once: each session is moved once, and each request's write is in
    the session its old cookie leads to."""
    files = tmp_path / "files"
    files.mkdir()
    settings.SESSION_FILE_PATH = str(files)
    settings.MEMOPT_PREVIOUS_ENGINE = FILE
    _forget_file_path()
    try:
        keys = {old_session(FILE, {"n": n}): n for n in range(60)}
        before = set(store.iter_session_keys())
        ended_on: dict[str, str | None] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(2, timeout=30)

        def requests() -> None:
            try:
                start.wait()
                for old_key in sorted(keys, reverse=True):
                    session = store(old_key)
                    assert session["n"] == keys[old_key]
                    session["seen"] = True
                    session.save()
                    ended_on[old_key] = session.session_key
            except BaseException as exc:  # reported below
                errors.append(exc)

        def command() -> None:
            try:
                start.wait()
                run_import("--batch-size", "7")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=requests), threading.Thread(target=command)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        for old_key, n in keys.items():
            new_key = ended_on[old_key]
            assert is_signed(new_key) and moved(store, old_key) == new_key
            assert dict(store(new_key).items()) == {"n": n, "seen": True}
            assert not old_holds(FILE, old_key)
        assert set(store.iter_session_keys()) - before == set(ended_on.values()) | set(keys)
    finally:
        _forget_file_path()
