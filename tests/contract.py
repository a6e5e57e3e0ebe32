"""The session contract every django-memopt engine must honour.

Mix :class:`SessionContract` into a ``SimpleTestCase`` and set ``backend`` to an engine's
``SessionStore``. It holds what Django's own ``SessionTestsMixin`` checks (that mixin
also runs against each engine, see ``test_django_suite.py``) plus what django-memopt
promises on top: lazy decoding, delta saves, no lost updates, no resurrection, sealed
fields, hostile keys. Store state is inspected through the engine's own primitives
(``_read``/``_write``), so the same tests run unchanged against every store.

:class:`StoreContract` holds what every store must do on real files and servers, with
several processes: concurrent writers and a logout racing them, damaged and tampered
data, listings, store-wide values. A store joins it with one subclass of
:class:`StoreUnderTest` (how the tests reach that store's raw data) and one line::

    class TestStoreContract(StoreContract):
        store_type = MyStore
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Final
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from django_memopt import user_sessions
from django_memopt.backends.base import USER_ENTRY_FIELD, SessionBase
from django_memopt.codec import MAX_FIELD_SIZE, FieldCodec
from django_memopt.fields import Delta
from tests import session_workers
from tests.processes import SPAWN, WAIT, children, finish, result_of
from tests.session_workers import log_in

HOSTILE_KEYS = [
    "x" * 1240,
    "ünïcödé-session-key",
    "../../etc/passwd",
    "a/b/c/d/e/f",
    "a\\b\\c\\d\\e",
    "",
    "1234567",
    "ABCDEFGHIJKLMNOP",
    "abc def ghi jkl",
    "abcdefgh\x00ijklmnop",
    "\udcff\udcfe" * 8,
]


def same_type_equal(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (tuples may have become lists)."""
    a, b = (list(x) if isinstance(x, tuple) else x for x in (a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_type_equal, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_type_equal(a[k], b[k]) for k in a)
    if isinstance(a, datetime):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


class SessionContract:
    backend: ClassVar[type[SessionBase]]
    session: SessionBase

    # unittest assertion helpers, provided by the TestCase this is mixed into
    assertLogs: Any
    subTest: Any
    addCleanup: Any

    def setUp(self) -> None:
        self.session = self.backend()
        self.addCleanup(self.session.delete)

    def saved(self, **fields: Any) -> SessionBase:
        """A stored session holding ``fields``; returns a fresh, unloaded instance of it."""
        session = self.backend()
        session.update(fields)
        session.save()
        self.addCleanup(session.delete)
        return self.backend(session.session_key)

    def stored(self, session_key: str) -> dict[str, bytes]:
        record = self.backend._read(session_key)
        assert record is not None, "no such session in the store"
        return record.fields

    def overwrite_stored(self, session_key: str, **sealed: bytes) -> None:
        self.backend._write(session_key, Delta(sealed), time.time() + 600, create=False)

    @contextmanager
    def packed_names(self) -> Any:
        """Collect the names of the fields the codec packs inside the block."""
        names: list[str] = []
        original = FieldCodec.pack

        def spy(name: str, value: Any) -> bytes:
            names.append(name)
            return original(name, value)

        with mock.patch.object(FieldCodec, "pack", staticmethod(spy)):
            yield names

    @contextmanager
    def store_untouched(self) -> Any:
        """Fail if any storage primitive of the engine is called inside the block."""
        primitives = ["_read", "_write", "_touch", "_remove", "_contains"]
        with mock.patch.multiple(
            self.backend,
            **{name: mock.Mock(side_effect=AssertionError(name)) for name in primitives},
        ):
            yield

    # -- Django's dict API and flags ---------------------------------------------------

    def test_new_session_is_neither_accessed_nor_modified(self) -> None:
        assert self.session.modified is False
        assert self.session.accessed is False
        assert not hasattr(self.session, "_session_cache")

    def test_store_get_pop(self) -> None:
        self.session["cat"] = "dog"
        assert self.session.modified is True
        assert self.session.get("cat") == "dog"
        assert self.session.pop("cat") == "dog"
        assert self.session.pop("cat", "default") == "default"
        assert self.session.pop("cat", default=None) is None
        try:
            self.session.pop("cat")
        except KeyError:
            pass
        else:
            raise AssertionError("pop() of a missing key without default must raise KeyError")

    def test_pop_of_missing_key_does_not_modify(self) -> None:
        session = self.saved(a=1)
        session.pop("missing", None)
        assert session.accessed is True
        assert session.modified is False

    def test_setdefault_and_update(self) -> None:
        assert self.session.setdefault("foo", "bar") == "bar"
        assert self.session.setdefault("foo", "baz") == "bar"
        self.session.update({"update key": 1})
        assert self.session.modified is True
        assert self.session.get("update key") == 1

    def test_reading_does_not_modify(self) -> None:
        session = self.saved(x=1, y=2)
        assert "x" in session
        assert list(session.keys()) == ["x", "y"]
        assert list(session.values()) == [1, 2]
        assert list(session.items()) == [("x", 1), ("y", 2)]
        assert session.has_key("y")
        assert session.accessed is True
        assert session.modified is False

    def test_clear_does_not_load_and_replaces_on_save(self) -> None:
        session = self.saved(x=1, y=2)
        with self.store_untouched():
            session.clear()
        assert list(session.items()) == []
        assert session.accessed is True
        assert session.modified is True
        session["z"] = 3
        session.save()
        assert set(self.stored(session.session_key)) == {"z"}

    def test_save_exists_delete(self) -> None:
        self.session["a"] = 1
        self.session.save()
        key = self.session.session_key
        assert self.session.exists(key)
        self.session.delete()
        assert not self.session.exists(key)
        self.session.delete()  # deleting a deleted session is not an error
        self.session.delete("nosuchsessionkey")

    def test_flush(self) -> None:
        self.session["foo"] = "bar"
        self.session.save()
        key = self.session.session_key
        self.session.flush()
        assert not self.session.exists(key)
        assert self.session.session_key is None
        assert self.session.is_empty()
        assert self.session.modified is True
        assert self.session.accessed is True

    def test_cycle_key_moves_every_field(self) -> None:
        session = self.saved(a="c", b="d", big=list(range(100)))
        old_key = session.session_key
        session.cycle_key()
        assert session.session_key != old_key
        assert not session.exists(old_key)
        fresh = self.backend(session.session_key)
        self.addCleanup(fresh.delete)
        assert dict(fresh.items()) == {"a": "c", "b": "d", "big": list(range(100))}

    def test_cycle_key_decodes_nothing(self) -> None:
        session = self.saved(a="c", b=[1, 2])
        with self.packed_names() as packed:
            session.cycle_key()
        self.addCleanup(session.delete)
        assert packed == []
        assert session._session_cache.decoded_count == 0

    def test_cycle_key_of_new_session_creates_it(self) -> None:
        self.session["k"] = "v"
        self.session.cycle_key()
        assert self.session.exists(self.session.session_key)
        assert self.backend(self.session.session_key).get("k") == "v"

    def test_save_keeps_data(self) -> None:
        self.session["a"] = "b"
        self.session.save()
        assert self.session["a"] == "b"
        self.session.save()
        assert self.backend(self.session.session_key)["a"] == "b"

    def test_invalid_key_gets_a_new_key(self) -> None:
        session = self.backend("1")
        session.save()
        self.addCleanup(session.delete)
        assert session.session_key not in (None, "1")

    def test_unknown_key_is_not_adopted_nor_created(self) -> None:
        session = self.backend("someunknownkey")
        assert session.load() == {}
        assert session.session_key is None
        assert not session.exists("someunknownkey")
        session["x"] = 1
        session.save()
        self.addCleanup(session.delete)
        assert session.session_key != "someunknownkey"
        assert not session.exists("someunknownkey")

    def test_session_key_validation(self) -> None:
        self.session._session_key = "12345678"
        assert self.session.session_key == "12345678"
        for bad in HOSTILE_KEYS:
            with self.subTest(key=bad):
                self.session._session_key = bad
                assert self.session.session_key is None

    def test_session_key_is_read_only(self) -> None:
        try:
            self.session.session_key = "abcdefgh"  # type: ignore[misc]
        except AttributeError:
            return
        raise AssertionError("session_key must be read-only")

    # -- expiry ------------------------------------------------------------------------

    def test_default_expiry(self) -> None:
        from django.conf import settings

        assert self.session.get_expiry_age() == settings.SESSION_COOKIE_AGE
        self.session.set_expiry(0)
        assert self.session.get_expiry_age() == settings.SESSION_COOKIE_AGE

    def test_custom_expiry(self) -> None:
        for value in (10, timedelta(seconds=10), timezone.now() + timedelta(seconds=10)):
            with self.subTest(value=value):
                self.session.set_expiry(value)
                assert 9 <= self.session.get_expiry_age() <= 10
                delta = self.session.get_expiry_date() - timezone.now()
                assert 9 <= delta.seconds <= 10
        self.session.set_expiry(None)
        assert "_session_expiry" not in self.session

    def test_custom_expiry_survives_save(self) -> None:
        self.session.set_expiry(timedelta(minutes=5))
        self.session["a"] = 1
        self.session.save()
        again = self.backend(self.session.session_key)
        assert 295 <= again.get_expiry_age() <= 300
        stored_for = self.backend._read(self.session.session_key)
        assert stored_for is not None
        assert 295 <= stored_for.expires_at - time.time() <= 301

    def test_iter_sessions_lists_live_sessions_with_their_deadlines(self) -> None:
        short, long, gone = self.backend(), self.backend(), self.backend()
        for session, lifetime in ((short, 600), (long, 30 * 86400), (gone, 600)):
            session["a"] = 1
            session.set_expiry(lifetime)
            session.save()
        gone.delete()
        listed = dict(self.backend.iter_sessions())
        for session in (short, long):
            expected = time.time() + session.get_expiry_age()
            assert abs(listed[session.session_key] - expected) < 5, session.get_expiry_age()
        assert gone.session_key not in listed
        assert set(self.backend.iter_session_keys()) == set(listed)

    def test_expire_at_browser_close(self) -> None:
        for setting in (False, True):
            with (
                self.subTest(setting=setting),
                override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=setting),
            ):
                self.session.set_expiry(None)
                assert self.session.get_expire_at_browser_close() is setting
                self.session.set_expiry(10)
                assert self.session.get_expire_at_browser_close() is False
                self.session.set_expiry(0)
                assert self.session.get_expire_at_browser_close() is True

    def test_past_expiry_expires_at_once(self) -> None:
        self.session["foo"] = "bar"
        self.session.set_expiry(-timedelta(seconds=10))
        self.session.save()
        again = self.backend(self.session.session_key)
        assert "foo" not in again
        assert not again.exists(self.session.session_key)

    def test_expired_session_reads_as_absent(self) -> None:
        # Real time: each store keeps its own clock (Redis expires keys server-side).
        self.session["foo"] = "bar"
        self.session.set_expiry(1)
        self.session.save()
        key = self.session.session_key
        time.sleep(1.1)
        assert not self.session.exists(key)
        assert self.backend(key).get("foo") is None
        try:
            self.session.save()
        except UpdateError:
            pass
        else:
            raise AssertionError("saving an expired session must raise UpdateError")

    # -- laziness ----------------------------------------------------------------------

    def test_fields_are_decoded_on_first_read_only(self) -> None:
        session = self.saved(**{f"k{i}": {"n": i} for i in range(20)})
        fields = session._session
        assert fields.loaded_count == 20
        assert fields.decoded_count == 0
        assert "k3" in session and len(list(session.keys())) == 20
        assert fields.decoded_count == 0
        assert session["k3"] == {"n": 3}
        assert session.get("k4") == {"n": 4}
        assert fields.decoded_count == 2
        dict(session.items())
        assert fields.decoded_count == 20

    # -- the delta ---------------------------------------------------------------------

    def test_save_writes_only_what_changed(self) -> None:
        session = self.saved(untouched="u", read="r", changed="c", gone="g")
        before = self.stored(session.session_key)
        assert session["read"] == "r"
        session["changed"] = "C"
        del session["gone"]
        delta = session._session.delta(session.session_key)
        assert set(delta.sets) == {"changed"}
        assert delta.deletes == {"gone"}
        with self.packed_names() as packed:
            session.save()
        assert packed == ["changed"]  # a decoded str cannot have changed in place
        after = self.stored(session.session_key)
        assert after["untouched"] == before["untouched"]
        assert after["read"] == before["read"]
        assert "gone" not in after
        assert self.backend(session.session_key)["changed"] == "C"

    def test_in_place_mutation_is_saved(self) -> None:
        session = self.saved(cart=["apple"], other={"a": 1})
        session["cart"].append("pear")
        session["other"]  # read, not changed
        session.modified = True
        delta = session._session.delta(session.session_key)
        assert set(delta.sets) == {"cart"}
        session.save()
        assert self.backend(session.session_key)["cart"] == ["apple", "pear"]

    def test_in_place_change_after_an_earlier_save_is_saved(self) -> None:
        # As when a view fills a cart, logs in (cycle_key saves), then adds to the cart.
        self.session["cart"] = ["apple"]
        self.session["other"] = {"n": 1}
        self.session.save()
        self.session.cycle_key()
        self.session["cart"].append("pear")
        self.session["other"]["n"] = 2
        self.session.modified = True
        self.session.save()
        stored = self.backend(self.session.session_key)
        assert dict(stored.items()) == {"cart": ["apple", "pear"], "other": {"n": 2}}

    def test_nothing_changed_writes_no_field(self) -> None:
        session = self.saved(a=1, b=[1, 2])
        before = self.stored(session.session_key)
        session["b"]
        session.modified = True
        session.save()
        assert self.stored(session.session_key) == before

    def test_concurrent_writers_keep_each_others_keys(self) -> None:
        key = self.saved(shared=0).session_key
        first, second = self.backend(key), self.backend(key)
        first["shared"], second["shared"]  # both loaded before either saves
        first["from_first"] = 1
        second["from_second"] = 2
        first.save()
        second.save()
        final = self.backend(key)
        assert dict(final.items()) == {"shared": 0, "from_first": 1, "from_second": 2}

    def test_concurrent_delete_and_set_both_apply(self) -> None:
        key = self.saved(a=1, b=2).session_key
        first, second = self.backend(key), self.backend(key)
        del first["a"]
        second["c"] = 3
        second.save()
        first.save()
        assert dict(self.backend(key).items()) == {"b": 2, "c": 3}

    def test_create_refuses_a_taken_key(self) -> None:
        key = self.saved(a=1).session_key
        intruder = self.backend(key)
        intruder._session_cache = intruder._new_fields()
        intruder["a"] = 2
        try:
            intruder.save(must_create=True)
        except CreateError:
            pass
        else:
            raise AssertionError("a create over a live session must raise CreateError")
        assert self.backend(key)["a"] == 1

    # -- no resurrection ---------------------------------------------------------------

    def test_save_does_not_resurrect_a_deleted_session(self) -> None:
        for change in ("set", "delete", "clear", "nothing"):
            with self.subTest(change=change):
                session = self.saved(a=1, b=2)
                session["a"]
                self.backend(session.session_key).delete()
                if change == "set":
                    session["a"] = 2
                elif change == "delete":
                    del session["b"]
                elif change == "clear":
                    session.clear()
                try:
                    session.save()
                except UpdateError:
                    pass
                else:
                    raise AssertionError("a save after a concurrent delete must raise UpdateError")
                assert not session.exists(session.session_key)
                assert self.backend(session.session_key).load() == {}

    async def test_asave_does_not_resurrect_a_deleted_session(self) -> None:
        session = self.backend()
        await session.aset("k", "v1")
        await session.asave(must_create=True)
        await self.backend(session.session_key).adelete()
        await session.aset("k", "v2")
        try:
            await session.asave()
        except UpdateError:
            pass
        else:
            raise AssertionError("asave after a concurrent delete must raise UpdateError")
        assert await self.backend(session.session_key).aload() == {}

    # -- touch -------------------------------------------------------------------------

    def deadline(self, session_key: str) -> float:
        record = self.backend._read(session_key)
        assert record is not None
        return record.expires_at - time.time()  # seconds left

    def test_unmodified_save_refreshes_expiry_only(self) -> None:
        with override_settings(SESSION_COOKIE_AGE=100):
            session = self.saved(a=1)
            key = session.session_key
            fields = self.stored(key)
            assert 98 <= self.deadline(key) <= 100
        with override_settings(SESSION_COOKIE_AGE=1000):
            session.save()
        assert 998 <= self.deadline(key) <= 1000
        assert self.stored(key) == fields

    def test_touch_is_throttled(self) -> None:
        with override_settings(SESSION_COOKIE_AGE=1000):
            session = self.saved(a=1)
            key = session.session_key
            session["a"]
        with override_settings(MEMOPT_TOUCH_INTERVAL=60):
            with override_settings(SESSION_COOKIE_AGE=1030):
                session.save()  # would move the deadline 30 s: not worth a write
            assert 997 <= self.deadline(key) <= 1000
            with override_settings(SESSION_COOKIE_AGE=1090):
                session.save()
            assert 1087 <= self.deadline(key) <= 1090

    # -- sealed fields -----------------------------------------------------------------

    def test_tampered_field_is_absent_and_logged(self) -> None:
        session = self.saved(good="g", bad="b")
        key = session.session_key
        stored = self.stored(key)
        tampered = bytearray(stored["bad"])
        tampered[-1] ^= 0x01
        self.overwrite_stored(key, bad=bytes(tampered))
        session = self.backend(key)
        with self.assertLogs("django.security.SuspiciousSession", "WARNING") as logs:
            assert session.get("bad") is None
        assert "Session data corrupted" in logs.output[0]
        assert session["good"] == "g"
        assert "bad" not in session

    def test_garbage_field_is_absent(self) -> None:
        key = self.saved(good="g").session_key
        for garbage in (b"", b"\x01", b"\x02" + bytes(40), b"\x01" + bytes(16) + b"\xc1"):
            with self.subTest(garbage=garbage):
                self.overwrite_stored(key, junk=garbage)
                session = self.backend(key)
                with self.assertLogs("django.security.SuspiciousSession", "WARNING"):
                    assert dict(session.items()) == {"good": "g"}

    def test_field_copied_from_another_session_is_rejected(self) -> None:
        admin = self.saved(_auth_user_id="1")
        mallory = self.saved(_auth_user_id="666")
        self.overwrite_stored(
            mallory.session_key, _auth_user_id=self.stored(admin.session_key)["_auth_user_id"]
        )
        with self.assertLogs("django.security.SuspiciousSession", "WARNING"):
            assert self.backend(mallory.session_key).get("_auth_user_id") is None

    def test_field_moved_to_another_name_is_rejected(self) -> None:
        session = self.saved(role="user", other="admin")
        self.overwrite_stored(session.session_key, role=self.stored(session.session_key)["other"])
        with self.assertLogs("django.security.SuspiciousSession", "WARNING"):
            assert self.backend(session.session_key).get("role") is None

    def test_cycle_key_does_not_launder_a_forged_field(self) -> None:
        session = self.saved(good="g")
        forged = FieldCodec.from_secrets(["not the secret key"]).encode(
            session.session_key, "is_admin", True
        )
        self.overwrite_stored(session.session_key, is_admin=forged)
        session = self.backend(session.session_key)
        with self.assertLogs("django.security.SuspiciousSession", "WARNING"):
            session.cycle_key()
        self.addCleanup(session.delete)
        assert set(self.stored(session.session_key)) == {"good"}

    def test_secret_key_rotation_keeps_sessions_with_fallbacks(self) -> None:
        key = self.saved(a=1).session_key
        from django.conf import settings

        with (
            override_settings(SECRET_KEY="a-new-secret-key-" * 4, SECRET_KEY_FALLBACKS=[]),
            self.assertLogs("django.security.SuspiciousSession", "WARNING"),
        ):
            assert self.backend(key).get("a") is None

        with override_settings(
            SECRET_KEY="a-new-secret-key-" * 4, SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]
        ):
            session = self.backend(key)
            assert session["a"] == 1
            session["b"] = 2
            session.save()
        with override_settings(SECRET_KEY="a-new-secret-key-" * 4, SECRET_KEY_FALLBACKS=[]):
            assert self.backend(key)["b"] == 2

    # -- hostile input -----------------------------------------------------------------

    def test_hostile_session_keys_get_a_fresh_session_without_store_access(self) -> None:
        for bad in HOSTILE_KEYS:
            with self.subTest(key=bad):
                with self.store_untouched():
                    session = self.backend(bad)
                    assert session.session_key is None
                    assert session.get("anything") is None
                    assert session.load() == {}
                    assert session.exists(bad) is False
                    session.delete(bad)
                session["fresh"] = True
                session.save()
                self.addCleanup(session.delete)
                assert session.session_key not in (None, bad)

    def test_non_str_session_key_names_are_refused(self) -> None:
        for name in (1, None, ("a",)):
            with self.subTest(name=name):
                try:
                    self.session[name] = "v"  # type: ignore[index]
                except TypeError:
                    pass
                else:
                    raise AssertionError("a non-str session key must raise TypeError")

    # -- values ------------------------------------------------------------------------

    SUPPORTED_VALUES: ClassVar[dict[str, Any]] = {
        "none": None,
        "bools": [True, False],
        "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**200, -(2**200)],
        "float": 1.5,
        "nan": float("nan"),
        "str": "héllo wörld ✓",
        "bytes": b"\x00\xffbinary",
        "list": [1, "a", [2, [3]]],
        "tuple": (1, 2),
        "dict": {"a": 1, "nested": {"b": [1, 2]}},
        "int keys": {1: "one", 2: "two"},
        "naive datetime": datetime(2026, 11, 24, 12, 30, 15, 123456),
        "utc datetime": datetime(2026, 11, 24, 12, 30, tzinfo=UTC),
        "zoned datetime": datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),
        "offset datetime": datetime.fromisoformat("2026-01-01T10:00:00+05:45"),
        "date": date(2026, 2, 28),
        "time": dt_time(23, 59, 59, 999999),
        "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
        "decimal": Decimal("-1234.5678901234567890"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "empty": [],
    }

    def test_supported_values_round_trip_with_their_types(self) -> None:
        self.session.update(self.SUPPORTED_VALUES)
        self.session.save()
        loaded = self.backend(self.session.session_key)
        for name, value in self.SUPPORTED_VALUES.items():
            with self.subTest(name=name):
                assert same_type_equal(value, loaded[name]), (value, loaded[name])

    def test_unsupported_value_names_the_key(self) -> None:
        for value in (object(), {1, 2}, {("tuple", "key"): 1}, [lambda: 1]):
            with self.subTest(value=value):
                session = self.backend()
                session["offending"] = value
                try:
                    session.save()
                except TypeError as exc:
                    assert "'offending'" in str(exc)
                else:
                    raise AssertionError(f"{value!r} must be refused")
                assert session.session_key is None or not session.exists(session.session_key)

    def test_oversized_and_too_deep_values_are_refused(self) -> None:
        deep: list[Any] = []
        for _ in range(1100):
            deep = [deep]
        for value in (b"x" * (MAX_FIELD_SIZE + 1), deep):
            with self.subTest(kind=type(value).__name__):
                session = self.backend()
                session["huge"] = value
                try:
                    session.save()
                except ValueError as exc:
                    assert "'huge'" in str(exc)
                else:
                    raise AssertionError("the value must be refused")

    # -- async -------------------------------------------------------------------------

    async def test_async_api(self) -> None:
        session = self.backend()
        assert await session.aget("cat") is None
        await session.aset("cat", "dog")
        assert await session.asetdefault("fox", "hen") == "hen"
        await session.aupdate({"a": 1})
        assert await session.ahas_key("a")
        assert sorted(await session.akeys()) == ["a", "cat", "fox"]
        await session.asave()
        key = session.session_key
        assert await session.aexists(key)
        loaded = self.backend(key)
        assert await loaded.aget("cat") == "dog"
        assert dict(await loaded.aitems()) == {"cat": "dog", "fox": "hen", "a": 1}
        assert await loaded.apop("a") == 1
        await loaded.asave()
        assert "a" not in await self.backend(key).aload()
        await loaded.acycle_key()
        assert not await loaded.aexists(key)
        assert await self.backend(loaded.session_key).aget("cat") == "dog"
        new_key = loaded.session_key
        await loaded.aflush()
        assert loaded.session_key is None
        assert not await loaded.aexists(new_key)

    async def test_async_expiry_and_test_cookie(self) -> None:
        session = self.backend()
        await session.aset_expiry(timedelta(seconds=30))
        assert 29 <= await session.aget_expiry_age() <= 30
        assert await session.aget_expire_at_browser_close() is False
        await session.aset_test_cookie()
        assert await session.atest_cookie_worked()
        await session.adelete_test_cookie()
        assert not await session.atest_cookie_worked()


DJANGO_MIDDLEWARE: Final = "django.contrib.sessions.middleware.SessionMiddleware"
GATE_MIDDLEWARE: Final = "django_memopt.middleware.SessionMiddleware"


class MiddlewareFlows:
    """Requests through a session middleware (Django's, unless ``middleware`` says
    django-memopt's) with the engine ``engine``."""

    engine: ClassVar[str]
    middleware: ClassVar[str] = DJANGO_MIDDLEWARE
    client: Any
    enterContext: Any

    def setUp(self) -> None:
        from django.conf import settings

        super().setUp()  # type: ignore[misc]
        stack = [self.middleware if m == DJANGO_MIDDLEWARE else m for m in settings.MIDDLEWARE]
        self.enterContext(override_settings(SESSION_ENGINE=self.engine, MIDDLEWARE=stack))

    @property
    def store(self) -> type[SessionBase]:
        from importlib import import_module

        return import_module(self.engine).SessionStore  # type: ignore[no-any-return]

    def cookie(self, response: Any) -> Any:
        from django.conf import settings

        return response.cookies.get(settings.SESSION_COOKIE_NAME)

    def test_new_session_sets_a_cookie_for_a_stored_session(self) -> None:
        response = self.client.get("/store/a/1/")
        key = self.cookie(response).value
        assert self.store(key)["a"] == "1"
        assert "Cookie" in response["Vary"]

    def test_update_keeps_the_key_and_merges(self) -> None:
        key = self.cookie(self.client.get("/store/a/1/")).value
        response = self.client.get("/store/b/2/")
        assert self.cookie(response).value == key
        assert dict(self.store(key).items()) == {"a": "1", "b": "2"}

    def test_read_only_request_sets_no_cookie(self) -> None:
        self.client.get("/store/a/1/")
        response = self.client.get("/read/a/")
        assert response.json() == {"value": "1"}
        assert self.cookie(response) is None
        assert "Cookie" in response["Vary"]
        untouched = self.client.get("/untouched/")
        assert self.cookie(untouched) is None
        assert not untouched.has_header("Vary")

    def test_no_save_on_a_500(self) -> None:
        key = self.cookie(self.client.get("/store/a/1/")).value
        response = self.client.get("/fail/a/2/")
        assert response.status_code == 500
        assert self.cookie(response) is None
        assert self.store(key)["a"] == "1"

    def test_flush_deletes_the_cookie_and_the_session(self) -> None:
        key = self.cookie(self.client.get("/store/a/1/")).value
        response = self.client.get("/flush/")
        cookie = self.cookie(response)
        assert cookie.value == ""
        assert cookie["max-age"] == 0
        assert not self.store().exists(key)

    def test_concurrent_logout_interrupts_and_stays_logged_out(self) -> None:
        from django.contrib.sessions.exceptions import SessionInterrupted

        key = self.cookie(self.client.get("/store/a/1/")).value
        with self.assertLogs("django.request", "WARNING") as logs:
            response = self.client.get("/logged-out-meanwhile/a/2/")
        assert response.status_code == 400  # SessionInterrupted is a BadRequest
        assert SessionInterrupted.__name__ in logs.output[0] or "deleted" in logs.output[0]
        assert self.cookie(response) is None
        assert not self.store().exists(key)

    def test_in_place_change_with_modified_flag(self) -> None:
        self.client.get("/append/cart/apple/")
        response = self.client.get("/append/cart/pear/")
        key = self.cookie(response).value
        assert self.store(key)["cart"] == ["apple", "pear"]

    def test_forged_cookie_gets_a_fresh_session(self) -> None:
        from django.conf import settings

        for forged in ("someunknownsessionkey0000000000", "../../etc/passwd", "x" * 1240):
            with self.subTest(forged=forged):
                self.client.cookies[settings.SESSION_COOKIE_NAME] = forged
                response = self.client.get("/store/a/1/")
                key = self.cookie(response).value
                assert key != forged
                assert self.store(key)["a"] == "1"
                assert not self.store().exists(forged)

    def test_save_every_request_refreshes_an_unmodified_session(self) -> None:
        with override_settings(SESSION_COOKIE_AGE=100):
            key = self.cookie(self.client.get("/store/a/1/")).value
        before = self.store._read(key)
        assert before is not None
        with override_settings(SESSION_SAVE_EVERY_REQUEST=True, SESSION_COOKIE_AGE=1000):
            response = self.client.get("/read/a/")
        after = self.store._read(key)
        assert self.cookie(response).value == key
        assert after is not None
        assert after.fields == before.fields
        assert after.expires_at >= before.expires_at + 899


# -- the store contract ----------------------------------------------------------------------


def new_session(store: type[SessionBase], **fields: Any) -> str:
    """The key of a new session of ``store`` holding ``fields``."""
    session = store()
    session.update(fields)
    session.save()
    assert session.session_key is not None
    return session.session_key


def corruption_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The "Session data corrupted" lines logged so far, as Django logs bad session data."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "django.security.SuspiciousSession"
        and "Session data corrupted" in record.getMessage()
    ]


def start_worker(
    start: Any,
    store: StoreUnderTest,
    worker: Any,
    args: tuple[Any, ...],
    barrier: Any,
    result: Path,
) -> Any:
    """``worker`` of ``tests/session_workers.py`` started by ``start`` (see
    ``processes.children``) in a child configured for ``store``, reporting to ``result``."""
    return start(worker, store.name, store.setup_args, *args, barrier, str(result))


class StoreUnderTest:
    """One store as the store contract sees it: a store of the test's own, and its raw data.

    A subclass per store says how to reach beneath the engine: to list what is stored, to
    damage it, to plant what no save writes.
    """

    #: ``django_memopt.backends.<name>``; ``tests/<name>_workers.py`` configures a child.
    name: ClassVar[str]
    SessionStore: ClassVar[type[SessionBase]]
    #: Ways to damage a stored session (:meth:`damage`), after which it reads as absent.
    corruptions: ClassVar[tuple[str, ...]]
    #: Whether a listing logs a session it skips as damaged (else it skips it silently).
    listing_logs_damage: ClassVar[bool]
    #: Kinds of entries that are no session, where listings look (:meth:`plant_strays`).
    strays: ClassVar[tuple[str, ...]]

    #: The arguments of this store's ``setup()`` in a child process (see session_workers).
    setup_args: tuple[Any, ...]

    @classmethod
    def isolated(cls, tmp_path: Path) -> AbstractContextManager[StoreUnderTest]:
        """This store, empty, of this test's own, as the configured engine meanwhile."""
        raise NotImplementedError

    def stored_keys(self) -> list[str]:
        """The keys of every session with data in the store (expired or damaged too), sorted."""
        raise NotImplementedError

    def stored_names(self, session_key: str) -> set[str | bytes]:
        """The names of every field entry stored for the session, whatever their type."""
        raise NotImplementedError

    def check_consistent(self) -> None:
        """Assert that the store's own bookkeeping (indexes, expiries) matches its sessions."""

    def reopen(self) -> None:
        """Drop this process's handles on the store, as a restarted worker would."""
        raise NotImplementedError

    def damage(self, session_key: str, kind: str) -> None:
        """Damage the stored session as ``kind`` (one of :attr:`corruptions`) says."""
        raise NotImplementedError

    def plant_bad_entries(self, session_key: str) -> tuple[set[str], int]:
        """Add field entries no save writes to the stored session (turning some of its
        fields into such entries, maybe); the names of the fields left good, and how many
        entries are bad."""
        raise NotImplementedError

    def plant_strays(self, kind: str, count: int) -> None:
        """Store ``count`` entries of ``kind`` (one of :attr:`strays`) where listings look."""
        raise NotImplementedError

    def index_size(self, user: str) -> int:
        """How many entries the store holds in ``user``'s index (expired or not), counting
        each place an entry is kept (so a consistent index holds twice its sessions)."""
        raise NotImplementedError

    def tamper_index(self, user: str) -> None:
        """Flip the last byte of every sealed entry in ``user``'s index."""
        raise NotImplementedError


class StoreContract:
    """What every store does, on a real store of each test's own. Subclass with
    ``store_type`` set to the store's :class:`StoreUnderTest`."""

    store_type: ClassVar[type[StoreUnderTest]]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        for argument, kinds in (
            ("corruption", self.store_type.corruptions),
            ("stray", self.store_type.strays),
        ):
            if argument in metafunc.fixturenames:
                metafunc.parametrize(argument, kinds)

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[StoreUnderTest]:
        with self.store_type.isolated(tmp_path) as store:
            yield store

    # -- many writers, one session: no lost updates -----------------------------------

    def test_processes_and_threads_writing_one_session_lose_no_update(
        self, store: StoreUnderTest, tmp_path: Path
    ) -> None:
        processes, threads, rounds = 4, 8, 25
        SessionStore = store.SessionStore
        key = new_session(SessionStore, base="kept")
        names = [[f"p{p}t{t}" for t in range(threads)] for p in range(processes)]
        results = [tmp_path / f"result-{p}.json" for p in range(processes)]
        barrier = SPAWN.Barrier(processes)
        with children() as start:
            worker = session_workers.update_own_fields
            workers = [
                start_worker(start, store, worker, (key, names[p], rounds), barrier, results[p])
                for p in range(processes)
            ]
            exit_codes = finish(workers)
        saves = [result_of(path)["saves"] for path in results]
        assert exit_codes == [0] * processes
        assert saves == [threads * rounds] * processes
        expected = {"base": "kept"} | {name: rounds for group in names for name in group}
        assert dict(SessionStore(key).items()) == expected
        assert list(SessionStore.iter_session_keys()) == [key]
        assert store.stored_keys() == [key]
        store.check_consistent()

    def test_threads_writing_one_session_lose_no_update(self, store: StoreUnderTest) -> None:
        threads, rounds = 12, 25
        SessionStore = store.SessionStore
        key = new_session(SessionStore, base="kept")
        names = [f"t{t}" for t in range(threads)]
        saves, errors = session_workers.hammer(SessionStore, key, names, rounds)
        assert errors == []
        assert saves == threads * rounds
        expected = {"base": "kept"} | dict.fromkeys(names, rounds)
        assert dict(SessionStore(key).items()) == expected

    # -- a logout racing updates: no resurrection -------------------------------------

    def test_logout_racing_updates_stays_logged_out(
        self, store: StoreUnderTest, tmp_path: Path
    ) -> None:
        SessionStore = store.SessionStore
        key = new_session(SessionStore, user="someone")
        late = SessionStore(key)
        assert late["user"] == "someone"  # a request that loaded the session before the logout
        names = [[f"p{p}t{t}" for t in range(4)] for p in range(2)]
        all_names = [name for group in names for name in group]
        results = [tmp_path / f"writer-{p}.json" for p in range(2)]
        deleter_result = tmp_path / "deleter.json"
        barrier = SPAWN.Barrier(3)
        with children() as start:
            worker = session_workers.update_until_deleted
            workers = [
                start_worker(start, store, worker, (key, names[p], 2000), barrier, results[p])
                for p in range(2)
            ]
            deleter = start_worker(
                start,
                store,
                session_workers.delete_when_busy,
                (key, all_names),
                barrier,
                deleter_result,
            )
            exit_codes = finish([*workers, deleter])
        outcomes: dict[str, str] = {}
        for path in results:
            outcomes |= result_of(path)["outcomes"]
        assert result_of(deleter_result)["deleted"] is True
        assert exit_codes == [0, 0, 0]
        assert sorted(outcomes) == sorted(all_names)
        # Every writer stopped because of the logout: its save was refused, or its load
        # found nothing (a request would then start a new session under a new key).
        assert set(outcomes.values()) <= {"UpdateError", "gone at load"}, outcomes
        assert "UpdateError" in outcomes.values(), outcomes
        assert not SessionStore().exists(key)
        assert SessionStore._read(key) is None
        assert store.stored_keys() == []
        # And a save from a request that loaded the session before the logout is refused.
        late["after"] = "logout"
        with pytest.raises(UpdateError):
            late.save()
        assert store.stored_keys() == []
        store.check_consistent()

    # -- damaged and tampered data ----------------------------------------------------

    def damaged(self, store: StoreUnderTest, corruption: str, **fields: Any) -> str:
        """A session stored with ``fields`` and loaded; then damaged as ``corruption``."""
        key = new_session(store.SessionStore, **fields)
        assert dict(store.SessionStore(key).items()) == fields
        store.damage(key, corruption)
        return key

    def test_damaged_session_loads_as_a_fresh_session_and_is_logged(
        self, store: StoreUnderTest, corruption: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = self.damaged(store, corruption, a=1, b="two")
        caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
        session = store.SessionStore(key)
        assert dict(session.items()) == {}
        assert session.session_key is None  # a save creates a new session, under a new key
        assert len(corruption_logged(caplog)) == 1, corruption_logged(caplog)
        session["c"] = 3
        session.save()
        assert session.session_key not in (None, key)
        assert dict(store.SessionStore(session.session_key).items()) == {"c": 3}

    def test_damaged_session_is_not_listed_as_a_live_session(
        self, store: StoreUnderTest, corruption: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = self.damaged(store, corruption, a=1)
        other = new_session(store.SessionStore, b=2)
        assert store.SessionStore().exists(key) is False
        caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
        assert list(store.SessionStore.iter_session_keys()) == [other]
        logged = corruption_logged(caplog)
        assert len(logged) == (1 if store.listing_logs_damage else 0), logged

    def test_entries_of_the_wrong_type_are_absent_and_logged_the_others_load(
        self, store: StoreUnderTest, caplog: pytest.LogCaptureFixture
    ) -> None:
        SessionStore = store.SessionStore
        fields: dict[str, Any] = {"a": 1, "b": "two", "c": [3]}
        key = new_session(SessionStore, **fields)
        good, bad = store.plant_bad_entries(key)
        kept = {name: value for name, value in fields.items() if name in good}
        caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
        session = SessionStore(key)
        assert session.get("a") == 1
        assert session.session_key == key
        assert dict(session.items()) == kept
        assert sorted(session.keys()) == sorted(kept)
        assert all(name not in session for name in set(fields) - good)
        assert len(corruption_logged(caplog)) == bad, corruption_logged(caplog)
        assert SessionStore().exists(key)
        assert list(SessionStore.iter_session_keys()) == [key]

        # The session goes on: what it does not name stays as stored; a bad entry is
        # never copied.
        session["d"] = 4
        session.save()
        assert dict(SessionStore(key).items()) == kept | {"d": 4}
        session = SessionStore(key)
        session.cycle_key()
        assert session.session_key != key
        assert not SessionStore().exists(key)
        assert store.stored_names(session.session_key) == {*good, "d"}
        assert dict(SessionStore(session.session_key).items()) == kept | {"d": 4}
        store.check_consistent()

    # -- listings ---------------------------------------------------------------------

    def test_iter_session_keys_lists_exactly_the_live_sessions(
        self, store: StoreUnderTest
    ) -> None:
        SessionStore = store.SessionStore
        assert list(SessionStore.iter_session_keys()) == []
        live = [new_session(SessionStore, n=n) for n in range(1100)]  # more than one batch
        deleted = new_session(SessionStore, n="deleted")
        SessionStore(deleted).delete()
        with mock.patch(
            "time.time", return_value=time.time() - 2 * django_settings.SESSION_COOKIE_AGE
        ):
            expired = new_session(SessionStore, n="expired")
        listed = list(SessionStore.iter_session_keys())
        assert len(listed) == len(set(listed))
        assert sorted(listed) == sorted(live)
        assert expired not in listed and deleted not in listed
        deadline = time.time() + django_settings.SESSION_COOKIE_AGE
        for _key, expires_at in SessionStore.iter_sessions():
            assert deadline - 60 <= expires_at <= deadline + 1

    def test_listings_skip_and_log_once_entries_that_are_no_session(
        self, store: StoreUnderTest, stray: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        SessionStore = store.SessionStore
        live = sorted(new_session(SessionStore, n=n) for n in range(3))
        store.plant_strays(stray, 3)  # several: a listing logs once, not once per entry
        caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
        assert sorted(SessionStore.iter_session_keys()) == live
        assert len(corruption_logged(caplog)) == 1, corruption_logged(caplog)
        caplog.clear()
        assert sorted(key for key, _ in SessionStore.iter_sessions()) == live
        assert len(corruption_logged(caplog)) == 1, corruption_logged(caplog)
        assert SessionStore.store_figures()["sampled_sessions"] >= len(live)

        out = io.StringIO()
        with override_settings(MEMOPT_FILTER=True, MEMOPT_FILTER_PATH=str(tmp_path / "filter")):
            call_command("memopt_rebuild_filter", stdout=out)
        assert "Added 3 live sessions" in out.getvalue()

    # -- store-wide values ------------------------------------------------------------

    def test_the_first_store_wide_value_wins_and_is_kept_apart_from_sessions(
        self, store: StoreUnderTest, tmp_path: Path
    ) -> None:
        SessionStore = store.SessionStore
        assert SessionStore.read_value("meta", "window") is None
        key = new_session(SessionStore, a=1)
        processes, threads = 4, 4
        values = [[f"p{p}t{t}" for t in range(threads)] for p in range(processes)]
        results = [tmp_path / f"meta-{p}.json" for p in range(processes)]
        barrier = SPAWN.Barrier(processes)
        with children() as start:
            worker = session_workers.add_value_racing
            racers = [
                start_worker(start, store, worker, ("meta", "window", values[p]), barrier, path)
                for p, path in enumerate(results)
            ]
            assert finish(racers) == [0] * processes
        returned = [value for path in results for value in result_of(path)["returned"]]
        assert len(returned) == processes * threads
        winner = returned[0]
        assert set(returned) == {winner}, "two callers got different values"
        assert winner in {value for group in values for value in group}
        assert SessionStore.read_value("meta", "window") == winner.encode()
        assert SessionStore.add_value("meta", "window", b"too late") == winner.encode()
        assert SessionStore.add_value("meta", "other", b"\x00\xff") == b"\x00\xff"

        # Kept across a reopen and a sweep, never expired, and never a session.
        store.reopen()
        with mock.patch("time.time", return_value=time.time() + 10 * 600):
            SessionStore.clear_expired()
        assert SessionStore.read_values("meta") == {
            "window": winner.encode(),
            "other": b"\x00\xff",
        }
        assert list(SessionStore.iter_session_keys()) == [key]
        assert SessionStore.store_figures()["sessions"] == 1
        assert store.stored_keys() == [key]

    def test_store_wide_values_are_set_replaced_and_removed_by_space(
        self, store: StoreUnderTest
    ) -> None:
        SessionStore = store.SessionStore
        assert SessionStore.read_values("stats") == {}
        SessionStore.remove_values("stats", ["never set"])  # not an error
        SessionStore.put_value("stats", "worker-1", b"\x00first")
        SessionStore.put_value("stats", "worker-1", b"\x00second")  # replaced
        SessionStore.put_value("stats", "wörker-2", b"")
        SessionStore.put_value("stats_v2", "worker-1", b"another space")
        assert SessionStore.add_value("meta", "worker-1", b"set once") == b"set once"
        assert SessionStore.read_values("stats") == {"worker-1": b"\x00second", "wörker-2": b""}
        assert SessionStore.read_value("stats", "wörker-2") == b""
        assert SessionStore.read_value("stats", "worker-3") is None
        assert SessionStore.read_values("stats_v2") == {"worker-1": b"another space"}
        assert SessionStore.read_value("meta", "worker-1") == b"set once"

        SessionStore.remove_values("stats", iter(["worker-1", "worker-3"]))
        assert SessionStore.read_values("stats") == {"wörker-2": b""}
        assert SessionStore.read_value("stats_v2", "worker-1") == b"another space"
        assert SessionStore.read_value("meta", "worker-1") == b"set once"
        store.reopen()
        assert SessionStore.read_values("stats") == {"wörker-2": b""}
        assert list(SessionStore.iter_session_keys()) == []
        assert store.stored_keys() == []

        # A space's name can never be a session key, nor a store's own.
        for space in ("sessions", "expiry", "Stats", "", "a~b", "x" * 33, "1abc", "é"):
            for primitive, *args in (
                (SessionStore.read_values,),
                (SessionStore.read_value, "a"),
                (SessionStore.put_value, "a", b"v"),
                (SessionStore.add_value, "a", b"v"),
                (SessionStore.remove_values, ["a"]),
            ):
                with pytest.raises(ValueError, match="space"):
                    primitive(space, *args)


# -- the index of a user's sessions (every store) ------------------------------------------


class UserSessionsContract:
    """``django_memopt.user_sessions`` on a real store of each test's own. Subclass with
    ``store_type`` set to the store's :class:`StoreUnderTest`."""

    store_type: ClassVar[type[StoreUnderTest]]

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[StoreUnderTest]:
        with (
            self.store_type.isolated(tmp_path) as store,
            override_settings(MEMOPT_USER_SESSIONS=True),
        ):
            yield store

    def test_login_lists_the_session_with_its_client_and_logout_unlists_it(
        self, store: StoreUnderTest
    ) -> None:
        before = int(time.time())
        first = log_in(store.SessionStore, "7", cart=[1])
        second = log_in(store.SessionStore, "7")
        other = log_in(store.SessionStore, "8")
        anonymous = new_session(store.SessionStore, a=1)
        listed = user_sessions.sessions_of("7", current=first)
        assert [session.current for session in listed] == [True, False]
        assert {session.handle for session in listed} == {
            first[USER_ENTRY_FIELD][3],
            second[USER_ENTRY_FIELD][3],
        }
        for session in listed:
            assert session.ip == "203.0.113.7"
            assert session.user_agent is not None and session.user_agent.startswith("Browser/")
            assert before <= session.created.timestamp() <= time.time()
            assert session.created <= session.last_seen
            # The handle is opaque: not the key, nor part of it.
            assert session.handle not in (first.session_key, second.session_key)
            assert session.handle not in str(first.session_key) + str(second.session_key)
        assert store.index_size("7") == 4
        first.flush()  # logout()
        assert store.index_size("7") == 2  # dropped by the delete itself, not by a listing
        assert [s.handle for s in user_sessions.sessions_of("7")] == [second[USER_ENTRY_FIELD][3]]
        second.flush()
        assert store.index_size("7") == 0
        assert user_sessions.sessions_of("7") == []
        assert len(user_sessions.sessions_of("8")) == 1
        assert store.SessionStore().exists(anonymous)
        assert other.session_key is not None

    def test_metadata_is_recorded_as_the_settings_say(self, store: StoreUnderTest) -> None:
        with override_settings(MEMOPT_USER_SESSIONS_METADATA=("user_agent",)):
            log_in(store.SessionStore, "7")
        with override_settings(MEMOPT_USER_SESSIONS_METADATA=()):
            log_in(store.SessionStore, "8")
        [seven] = user_sessions.sessions_of("7")
        assert (seven.ip, seven.user_agent is not None) == (None, True)
        [eight] = user_sessions.sessions_of("8")
        assert (eight.ip, eight.user_agent) == (None, None)

    def test_cycle_key_moves_the_entry_and_keeps_when_it_was_created(
        self, store: StoreUnderTest
    ) -> None:
        session = log_in(store.SessionStore, "7")
        [before] = user_sessions.sessions_of("7")
        old_key = session.session_key
        session.cycle_key()  # update_session_auth_hash() after a password change
        [after] = user_sessions.sessions_of("7", current=session)
        assert after.current and after.handle != before.handle
        assert after.created == before.created
        assert store.index_size("7") == 2
        assert not store.SessionStore().exists(old_key)

    def test_a_typical_save_leaves_the_index_alone_until_the_refresh_is_due(
        self, store: StoreUnderTest
    ) -> None:
        session = log_in(store.SessionStore, "7")
        marker = session[USER_ENTRY_FIELD]
        [entry] = store.SessionStore._user_entries("7")
        for value in range(3):
            again = store.SessionStore(session.session_key)
            again["count"] = value
            again.save()
        assert store.SessionStore._user_entries("7") == [entry]
        assert store.SessionStore(session.session_key)[USER_ENTRY_FIELD] == marker
        # Once the session's deadline would pass the entry's, the entry is rewritten, its
        # deadline moved on by MEMOPT_USER_SESSIONS_REFRESH.
        again = store.SessionStore(session.session_key)
        again.set_expiry(django_settings.SESSION_COOKIE_AGE + 400)
        again.save()
        refreshed = store.SessionStore(session.session_key)[USER_ENTRY_FIELD]
        assert refreshed[1] >= marker[1] + 100_000
        assert refreshed[0] == marker[0] and refreshed[2:] == marker[2:]
        assert store.index_size("7") == 2
        assert len(user_sessions.sessions_of("7")) == 1

    def test_a_typical_save_writes_as_without_the_index_and_decodes_nothing_more(
        self, store: StoreUnderTest
    ) -> None:
        session = log_in(store.SessionStore, "7", a=1, b=[2])
        original = store.SessionStore._write
        for enabled in (True, False):
            again = store.SessionStore(session.session_key)
            again["count"] = enabled
            with (
                override_settings(MEMOPT_USER_SESSIONS=enabled),
                mock.patch.object(store.SessionStore, "_write", wraps=original) as write,
            ):
                again.save()
            [call] = write.call_args_list
            assert "index" not in call.kwargs
            assert sorted(call.args[1].sets) == ["count"]
            assert again._session_cache.decoded_count == 0

    def test_the_async_api_does_what_the_sync_one_does(self, store: StoreUnderTest) -> None:
        here, there = log_in(store.SessionStore, "7"), log_in(store.SessionStore, "7")

        async def view() -> None:
            listed = await user_sessions.asessions_of("7", current=here)
            assert [session.current for session in listed] == [True, False]
            assert await user_sessions.aend_session("7", listed[1].handle) is True
            assert await user_sessions.aend_other_sessions("7", here) == 0
            assert await user_sessions.aend_all_sessions("7") == 1
            assert await user_sessions.asessions_of("7") == []

        async_to_sync(view)()
        assert not store.SessionStore().exists(there.session_key)

    def test_changing_or_removing_the_user_moves_or_drops_the_entry(
        self, store: StoreUnderTest
    ) -> None:
        session = log_in(store.SessionStore, "7")
        session["_auth_user_id"] = "8"
        session.save()
        assert user_sessions.sessions_of("7") == []
        assert len(user_sessions.sessions_of("8")) == 1
        assert (store.index_size("7"), store.index_size("8")) == (0, 2)
        del session["_auth_user_id"]
        session.save()
        assert user_sessions.sessions_of("8") == []
        assert USER_ENTRY_FIELD not in store.SessionStore(session.session_key)
        again = log_in(store.SessionStore, "9")
        again.clear()
        again.save()
        assert user_sessions.sessions_of("9") == [] and store.index_size("9") == 0

    def test_end_one_others_and_all(self, store: StoreUnderTest) -> None:
        here, there, elsewhere = (log_in(store.SessionStore, "7") for _ in range(3))
        theirs = log_in(store.SessionStore, "8")
        handle = there[USER_ENTRY_FIELD][3]
        assert user_sessions.end_session("8", handle) is False  # another user's handle
        assert user_sessions.end_session("7", handle) is True
        assert user_sessions.end_session("7", handle) is False
        assert not store.SessionStore().exists(there.session_key)
        assert user_sessions.end_other_sessions("7", here) == 1
        assert not store.SessionStore().exists(elsewhere.session_key)
        listed = user_sessions.sessions_of("7", current=here.session_key)
        assert [session.current for session in listed] == [True]
        # A late save of an ended session does not bring it back, nor its entry.
        elsewhere["late"] = True
        with pytest.raises(UpdateError):
            elsewhere.save()
        assert user_sessions.end_all_sessions("7") == 1
        assert store.index_size("7") == 0
        assert store.SessionStore(here.session_key).load() == {}
        assert store.SessionStore().exists(theirs.session_key)

    def test_ending_from_another_process_is_final_here_at_once(
        self, store: StoreUnderTest, tmp_path: Path
    ) -> None:
        session = log_in(store.SessionStore, "7", cart=[1, 2])
        key = session.session_key
        assert store.SessionStore(key)["cart"] == [1, 2]  # held by a client-side cache, if any
        result = tmp_path / "ender.json"
        barrier = SPAWN.Barrier(1)
        with children() as start:
            ender = start_worker(start, store, session_workers.end_all_of, ("7",), barrier, result)
            assert finish([ender]) == [0]
        assert result_of(result)["ended"] == 1
        loaded = store.SessionStore(key)
        assert loaded.get("cart") is None and loaded.session_key is None
        assert store.index_size("7") == 0

    def test_expiry_unlists_a_session_and_clearsessions_cleans_the_index(
        self, store: StoreUnderTest
    ) -> None:
        short = log_in(store.SessionStore, "7")
        short.set_expiry(1)
        short.save()
        kept = log_in(store.SessionStore, "7")
        brief = log_in(store.SessionStore, "8")
        brief.set_expiry(1)
        brief.save()
        time.sleep(1.2)
        listed = user_sessions.sessions_of("7")
        assert [session.handle for session in listed] == [kept[USER_ENTRY_FIELD][3]]
        call_command("clearsessions")
        assert store.index_size("7") == 2
        assert store.index_size("8") == 0  # its session expired: pruned
        assert user_sessions.sessions_of("8") == []

    def test_a_user_with_thousands_of_sessions(self, store: StoreUnderTest) -> None:
        count = 2000
        sessions = [log_in(store.SessionStore, "7") for _ in range(count)]
        started = time.perf_counter()
        listed = user_sessions.sessions_of("7", current=sessions[0])
        listing = time.perf_counter() - started
        assert len(listed) == count and listed[0].current
        assert len({session.handle for session in listed}) == count
        assert listing < 5, listing
        assert user_sessions.end_other_sessions("7", sessions[0]) == count - 1
        assert [session.current for session in user_sessions.sessions_of("7", sessions[0])] == [
            True
        ]
        assert store.index_size("7") == 2
        assert store.stored_keys() == [sessions[0].session_key]

    def test_logins_logouts_and_expiry_racing_index_reads(
        self, store: StoreUnderTest, tmp_path: Path
    ) -> None:
        processes, rounds = 2, 15
        results = [tmp_path / f"worker-{p}.json" for p in range(processes)]
        barrier = SPAWN.Barrier(processes + 1)
        seen: set[str] = set()
        reads = 0
        with children() as start:
            workers = [
                start_worker(
                    start, store, session_workers.log_in_and_out, ("7", rounds), barrier, path
                )
                for path in results
            ]
            # Sessions expiring meanwhile, in this process.
            expiring = []
            for _ in range(3):
                session = log_in(store.SessionStore, "7")
                session.set_expiry(1)
                session.save()
                expiring.append(session[USER_ENTRY_FIELD][3])
            barrier.wait(WAIT)
            while any(worker.is_alive() for worker in workers):
                listed = user_sessions.sessions_of("7")
                seen.update(session.handle for session in listed)
                reads += 1
            exit_codes = finish(workers)
        assert exit_codes == [0] * processes
        kept = [key for path in results for key in result_of(path)["kept"]]
        assert len(kept) == 3 * processes
        time.sleep(1.1)  # the sessions set to expire have
        live = {store.SessionStore(key)[USER_ENTRY_FIELD][3] for key in kept}
        assert {session.handle for session in user_sessions.sessions_of("7")} == live
        assert reads > 0 and seen  # the listings ran while the workers did
        call_command("clearsessions")
        assert store.index_size("7") == 2 * len(live)
        assert sorted(store.stored_keys()) == sorted(kept)

    def test_hostile_input_gets_a_clear_error_or_nothing(self, store: StoreUnderTest) -> None:
        session = log_in(store.SessionStore, "7")
        handle = session[USER_ENTRY_FIELD][3]
        for user in (None, object(), 1.5, b"7", [7], True):
            with pytest.raises(TypeError):
                user_sessions.sessions_of(user)
            with pytest.raises(TypeError):
                user_sessions.end_all_sessions(user)
        for user in ("", "x" * 256, "é" * 128):
            with pytest.raises(ValueError):
                user_sessions.sessions_of(user)
        for user in ("8", "7\x00", "7 ", "*", "7:*", "../7", "\udcff"):
            assert user_sessions.sessions_of(user) == []
            assert user_sessions.end_all_sessions(user) == 0
        for bad in ("", "x", handle.upper(), handle + "0", handle[:-1], "*", None, 7, [handle]):
            assert user_sessions.end_session("7", bad) is False  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            user_sessions.end_other_sessions("7", 42)  # type: ignore[arg-type]
        assert user_sessions.end_other_sessions("7", "not-a-key") == 1
        assert not store.SessionStore().exists(session.session_key)

    def test_a_tampered_index_entry_is_left_out_and_logged(
        self, store: StoreUnderTest, caplog: pytest.LogCaptureFixture
    ) -> None:
        session = log_in(store.SessionStore, "7")
        store.tamper_index("7")
        caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
        assert user_sessions.sessions_of("7") == []
        assert user_sessions.end_all_sessions("7") == 0
        assert len(corruption_logged(caplog)) == 2, corruption_logged(caplog)
        assert store.SessionStore().exists(session.session_key)

    def test_a_session_saved_before_the_feature_was_on_is_listed_at_its_next_save(
        self, store: StoreUnderTest
    ) -> None:
        with override_settings(MEMOPT_USER_SESSIONS=False):
            session = log_in(store.SessionStore, "7")
        assert user_sessions.sessions_of("7") == [] and store.index_size("7") == 0
        again = store.SessionStore(session.session_key)
        again["seen"] = True
        again.save()
        assert len(user_sessions.sessions_of("7")) == 1
