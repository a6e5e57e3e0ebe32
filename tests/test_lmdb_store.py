"""What only the LMDB store does, under stress and failure, on real LMDB files.

Writers killed with ``SIGKILL``, reader slots, ``fork()``, the expiry index, a full map
and its reserve, damaged records and layers, unusable paths, permissions and the
durability flags. What every store does (concurrent writers, a logout racing them,
damaged data, listings, store-wide values) is the store contract, run on LMDB by
``test_lmdb_contract.py``. Child processes are started with the "spawn" context and run
the entry points in ``tests/lmdb_workers.py``; each test has its own store directory.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import lmdb
import msgpack
import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.management import call_command
from django.core.signals import setting_changed
from django.test import override_settings

from django_memopt import compression, records
from django_memopt.backends import lmdb as lmdb_backend
from django_memopt.backends.base import Delta, SessionStoreError, SessionStoreFull
from django_memopt.backends.lmdb import SessionStore, close_environments, environment
from django_memopt.checks import check_settings
from django_memopt.codec import FieldCodec
from django_memopt.conf import conf
from tests import contract, lmdb_workers
from tests.contract import corruption_logged
from tests.processes import children, finish, result_of
from tests.test_lmdb_contract import (
    CORRUPTIONS,
    CORRUPTIONS_PAST_THE_FIRST_BYTES,
    STRAY_KEYS,
    LmdbStore,
    assert_index_matches_records,
    assert_indexed,
    deadline_ms,
    index_entries,
    maps_of,
    put_raw,
    raw_records,
)

# Seconds ahead at which sessions given 30 seconds have expired and are due in the expiry
# index (whatever its granularity), while sessions of the default age are still live.
LATER = 600


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """A fresh LMDB store directory, made the current ``MEMOPT_LMDB_PATH``."""
    path = str(tmp_path / "store")
    with override_settings(MEMOPT_LMDB_PATH=path):
        yield path


new_session = functools.partial(contract.new_session, SessionStore)


def reader_pids(env: Any) -> list[int]:
    """The pids holding reader slots, from ``env.readers()``."""
    lines = env.readers().splitlines()[1:]  # after the "pid thread txnid" heading
    return [int(line.split()[0]) for line in lines if line.split()]


# -- 1. a writer killed mid-write ------------------------------------------------------------


def _wait_for_lines(log: Path, count: int, process: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not log.exists() or log.read_bytes().count(b"\n") < count:
        assert process.is_alive(), f"the writer died on its own (exit code {process.exitcode})"
        assert time.monotonic() < deadline, (
            f"fewer than {count} commits in {timeout} s: is the write lock still held?"
        )
        time.sleep(0.002)


def _committed(log: Path) -> list[tuple[str, int]]:
    *lines, _partial = log.read_bytes().split(b"\n")  # a line cut by the kill is dropped
    return [(key, int(value)) for key, value in (line.decode().split() for line in lines)]


def _check_sessions(expected: dict[str, int], in_flight: int) -> list[str]:
    """Every committed session holds its last committed value (or, for at most one of them,
    the value of the write that was in flight when the writer died); all records are whole.
    Returns the keys whose in-flight write turned out to have committed."""
    moved_on = []
    for key, value in expected.items():
        session = SessionStore(key)
        stored = session.get("v")
        assert stored is not None, f"committed session {key} (v={value}) is lost"
        if stored != value:
            assert stored == in_flight, f"session {key}: committed {value}, stored {stored}"
            moved_on.append(key)
    assert len(moved_on) <= 1
    live = list(SessionStore.iter_session_keys())
    # At most one session per kill is not in the logs: created by the write in flight.
    assert set(expected) <= set(live)
    for key in live:
        session = SessionStore(key)
        stored = session["v"]
        assert session["blob"] == lmdb_workers.blob(stored), f"torn record {key}"
        assert isinstance(session["n"], int)
    assert_index_matches_records()
    return moved_on


def test_writer_killed_mid_write_loses_no_commit_and_leaves_no_lock(
    store: str, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    expected: dict[str, int] = {}
    unlogged_allowed = 0
    with children() as start:
        for round_ in range(3):
            log = tmp_path / f"commits-{round_}.log"
            first = (round_ + 1) * 1_000_000
            writer = start(lmdb_workers.write_until_killed, store, str(log), first, seed + round_)
            # The next writer committing at all shows the dead one left no write lock held.
            threshold = rng.randint(200, 600)
            _wait_for_lines(log, threshold, writer)
            time.sleep(rng.uniform(0, 0.004))
            os.kill(writer.pid, signal.SIGKILL)
            finish([writer], 10)
            assert writer.exitcode == -signal.SIGKILL
            committed = _committed(log)
            assert len(committed) >= threshold, f"seed {seed}"
            expected |= dict(committed)
            unlogged_allowed += 1
            close_environments()  # this process reopens, as a restarted worker would
            moved_on = _check_sessions(expected, in_flight=committed[-1][1] + 1)
            for key in moved_on:
                expected[key] = committed[-1][1] + 1
            assert len(list(SessionStore.iter_session_keys())) <= len(expected) + unlogged_allowed
        probe_result = tmp_path / "probe.json"
        probe = start(lmdb_workers.write_probe, store, str(probe_result))
        assert finish([probe], 30) == [0], "a new process could not write after the kills"
    probe_key = result_of(probe_result)["session_key"]
    assert SessionStore(probe_key)["probe"] == 2
    key = new_session(after="kills")
    assert SessionStore(key)["after"] == "kills"


def test_writer_killed_holding_the_write_lock_frees_it(store: str, tmp_path: Path) -> None:
    key = new_session(a=1)
    holder_log, probe_log = tmp_path / "holder.log", tmp_path / "probe.log"
    probe_result = tmp_path / "probe.json"
    with children() as start:
        holder = start(lmdb_workers.hold_write_transaction, store, str(holder_log), key)
        _wait_for_lines(holder_log, 1, holder)
        probe = start(lmdb_workers.write_probe, store, str(probe_result), str(probe_log))
        _wait_for_lines(probe_log, 1, probe)
        time.sleep(0.3)
        assert probe.is_alive() and not probe_result.exists(), "the write lock was not held"
        assert SessionStore(key)["a"] == 1  # readers never wait for the writer

        os.kill(holder.pid, signal.SIGKILL)
        finish([holder], 10)
        # The waiting writer takes over the dead holder's lock.
        assert finish([probe], 30) == [0], "a writer still waits for the killed one's lock"
    probe_key = result_of(probe_result)["session_key"]
    assert sorted(raw_records()) == sorted([key, probe_key])  # nothing uncommitted shows
    assert SessionStore(key)["a"] == 1
    assert SessionStore(probe_key)["probe"] == 2
    assert SessionStore(new_session(b=2))["b"] == 2
    assert_index_matches_records()


def test_killed_reader_slot_is_cleared(store: str, tmp_path: Path) -> None:
    key = new_session(a=1)
    env = environment().env  # this process has the store open before the readers die
    logs = [tmp_path / "reader-a.log", tmp_path / "reader-b.log"]
    with children() as start:
        readers = [start(lmdb_workers.hold_read_transaction, store, str(log), key) for log in logs]
        for log, reader in zip(logs, readers, strict=True):
            _wait_for_lines(log, 1, reader)
        pid_a, pid_b = (reader.pid for reader in readers)
        assert {pid_a, pid_b} <= set(reader_pids(env))

        # Reopening clears a dead reader's slot. Reader A still has the store open, so this
        # is not the first opener (LMDB resets the whole table only for that one).
        os.kill(pid_b, signal.SIGKILL)
        finish([readers[1]], 10)
        assert pid_b in reader_pids(env), "a killed reader's slot stays until checked"
        close_environments()
        env = environment().env
        assert pid_b not in reader_pids(env)
        assert pid_a in reader_pids(env), "a live reader's slot must be kept"

        os.kill(pid_a, signal.SIGKILL)
        finish([readers[0]], 10)
        assert pid_a in reader_pids(env)
        assert env.reader_check() == 1
        assert pid_a not in reader_pids(env)
    assert SessionStore(key)["a"] == 1
    assert SessionStore(new_session(b=2))["b"] == 2


# -- 2. fork ---------------------------------------------------------------------------------


def test_fork_after_use_child_and_parent_both_work(store: str, tmp_path: Path) -> None:
    # Forked from a fresh spawned process: no other thread, so no fork warning on 3.12+.
    parent_result, child_result = tmp_path / "parent.json", tmp_path / "child.json"
    with children() as start:
        process = start(lmdb_workers.fork_and_use, store, str(parent_result), str(child_result))
        exit_codes = finish([process])
    parent, child = result_of(parent_result), result_of(child_result)
    assert exit_codes == [0]
    assert parent["threads_at_fork"] == 1
    assert parent["child_exit"] == 0
    assert child["seen"] == "parent"
    assert child["reopened"] is True
    assert parent["same_environment"] is True
    assert parent["parent_sees"] == parent["child_pid"]
    assert parent["parent_sees_created"] == "child"
    # And a third process (this one) sees all of it.
    assert SessionStore(parent["parent_key"])["child"] == parent["child_pid"]
    assert SessionStore(child["created"])["by"] == "child"
    assert SessionStore(parent["after_key"])["by"] == "parent after fork"
    assert_index_matches_records()


def fork_during_transaction(
    store: str, tmp_path: Path, release_after: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    parent_result, child_result = tmp_path / "parent.json", tmp_path / "child.json"
    with children() as start:
        process = start(
            lmdb_workers.fork_during_transaction,
            store,
            str(parent_result),
            str(child_result),
            release_after,
        )
        assert finish([process]) == [0]
    return result_of(parent_result), result_of(child_result)


def test_fork_waits_for_a_transaction_in_flight(store: str, tmp_path: Path) -> None:
    # Another thread is inside a read transaction when the process forks. Closing the
    # inherited environment in the child would abort it and free the parent's reader slot
    # (writers could then reuse pages the parent is reading), so the fork waits for it.
    parent, child = fork_during_transaction(store, tmp_path, release_after=0.2)
    assert parent["pid"] in parent["before"]
    assert 0.15 <= parent["fork_waited"] < 0.5
    assert parent["child_exit"] == 0
    assert "created" in child, child
    assert parent["holder_read"] and parent["parent_still_works"]


def test_fork_during_a_long_transaction_leaves_the_parent_alone(
    store: str, tmp_path: Path
) -> None:
    # The transaction outlives the fork's wait: the child must not touch the inherited
    # environment, so it cannot use the store, and says so; the parent is unharmed.
    parent, child = fork_during_transaction(store, tmp_path, release_after=-1)
    assert parent["fork_waited"] >= 0.45
    assert parent["child_exit"] == 0
    assert "SessionStoreError" in child["error"] and "forked" in child["error"]
    assert parent["pid"] in parent["after"], "the child released the parent's reader slot"
    assert parent["holder_read"] and parent["parent_still_works"]


# -- 3. the expiry index and clear_expired ---------------------------------------------------


def test_clear_expired_removes_expired_only_without_reading_live_records(store: str) -> None:
    live = [new_session(n=n) for n in range(1000)]
    expired = []
    for n in range(10):
        session = SessionStore()
        session["n"] = n
        session.set_expiry(30)
        session.save()
        expired.append(session.session_key)
    live_before = {key: record for key, record in raw_records().items() if key in live}
    assert len(live_before) == len(live)
    assert {key for _, key in index_entries()} == set(live) | set(expired)

    counting = mock.Mock(wraps=records.deadline)
    with (
        mock.patch.object(records, "deadline", counting),
        mock.patch("time.time", return_value=time.time() + LATER),
    ):
        SessionStore.clear_expired()
    # The sweep looks at what has expired, not at every session.
    assert len(expired) <= counting.call_count <= 2 * len(expired)

    stored = raw_records()
    assert not set(expired) & set(stored)
    assert {key: record for key, record in stored.items() if key in live} == live_before
    assert set(stored) == set(live)
    assert {key for _, key in index_entries()} == set(live)
    assert_index_matches_records()
    assert all(SessionStore(key)["n"] == n for n, key in enumerate(live[:20]))


def test_clear_expired_removes_more_than_one_batch(store: str) -> None:
    count = 2 * lmdb_backend.SWEEP_BATCH + 7
    for n in range(count):
        session = SessionStore()
        session["n"] = n
        session.set_expiry(30)
        session.save()
    keep = new_session(keep=True)
    assert len(raw_records()) == count + 1
    with mock.patch("time.time", return_value=time.time() + LATER):
        SessionStore.clear_expired()
    assert list(raw_records()) == [keep]
    assert [key for _, key in index_entries()] == [keep]


def test_clearsessions_command(store: str) -> None:
    short = SessionStore()
    short["a"] = 1
    short.set_expiry(30)
    short.save()
    long = new_session(b=2)
    with mock.patch("time.time", return_value=time.time() + LATER):
        call_command("clearsessions")
    assert list(raw_records()) == [long]
    assert [key for _, key in index_entries()] == [long]


def test_extended_session_is_not_swept_at_its_old_deadline(store: str) -> None:
    now = time.time()
    age = django_settings.SESSION_COOKIE_AGE

    def created_expiring_in(seconds: int) -> str:
        with mock.patch("time.time", return_value=now - age + seconds):
            return new_session(a=1)

    touched = created_expiring_in(10)  # extended by an unmodified save: a touch
    old_deadline = deadline_ms(raw_records()[touched])
    session = SessionStore(touched)
    assert session["a"] == 1
    session.save()
    assert deadline_ms(raw_records()[touched]) > old_deadline + 3_600_000

    rewritten = created_expiring_in(10)  # extended by a save that changes a field
    session = SessionStore(rewritten)
    session["b"] = 2
    session.save()

    # A stale index entry left behind at the old deadline (as a crash between two
    # writes of an older version could leave) must not take the session with it.
    stale = created_expiring_in(10)
    (old_entry,) = [at for at, key in index_entries() if key == stale]
    session = SessionStore(stale)
    session["b"] = 2
    session.save()
    assert old_entry not in [at for at, key in index_entries() if key == stale]
    opened = environment()
    with opened.env.begin(write=True, db=opened.expiry) as txn:
        txn.put(old_entry.to_bytes(8, "big") + stale.encode(), b"")

    doomed = created_expiring_in(10)
    with mock.patch("time.time", return_value=now + LATER):
        SessionStore.clear_expired()
    stored = raw_records()
    assert sorted(stored) == sorted([touched, rewritten, stale])
    assert SessionStore(touched)["a"] == 1
    assert SessionStore(rewritten)["b"] == 2
    assert SessionStore(stale)["b"] == 2
    assert doomed not in stored
    assert_index_matches_records()  # the stale entry went, the current ones stayed


def test_a_session_saved_again_and_again_moves_its_index_entry_at_most_once_a_bucket(
    store: str,
) -> None:
    step = records.INDEX_GRANULARITY_MS / 1000
    start = (time.time() // step + 1) * step + 1  # just after a bucket begins
    with mock.patch("time.time", return_value=start):
        key = new_session(visits=0)
    (entry,) = index_entries()
    for n, later in enumerate((60, step / 2, step - 2), start=1):
        with mock.patch("time.time", return_value=start + later):
            session = SessionStore(key)
            session["visits"] = n
            session.save()
        assert index_entries() == [entry]  # still in the same bucket: not moved
    with mock.patch("time.time", return_value=start + step):
        session = SessionStore(key)
        session["visits"] = 4
        session.save()
    (moved,) = index_entries()
    assert moved[0] == entry[0] + records.INDEX_GRANULARITY_MS
    assert_index_matches_records()


def test_index_entries_of_an_earlier_granularity_are_moved_or_dropped_by_the_sweep(
    store: str,
) -> None:
    """The previous release rounded deadlines up to the minute. A sweep reaching such an
    entry deletes the session if it has expired, drops the entry if there is no session,
    and gives a session still live an entry at its deadline: none is lost from the index."""
    # Half past an hour to come: no deadline below falls in the last minute of an hour,
    # where rounding it up to the minute and to the hour agree.
    now = (time.time() // 3600 + 1) * 3600 + 1800
    minute = 60_000

    def old_entry(key: str, deadline_ms: int) -> None:
        opened = environment()
        with opened.env.begin(write=True, db=opened.expiry) as txn:
            for at, indexed in index_entries():
                if indexed == key:
                    txn.delete(records.index_key(at, key.encode()))
            at = -(-deadline_ms // minute) * minute
            txn.put(at.to_bytes(8, "big") + key.encode(), b"")

    with mock.patch("time.time", return_value=now - 3600):
        live = new_session(a=1)  # then saved again: its deadline moved an hour on
        extended = deadline_ms(raw_records()[live])
        gone = new_session(c=1)
    with mock.patch("time.time", return_value=now):
        session = SessionStore(live)
        session["a"] = 2
        session.save()
        old_entry(live, extended)
        expired = SessionStore()
        expired["b"] = 1
        expired.set_expiry(30)
        expired.save()
        old_entry(expired.session_key, deadline_ms(raw_records()[expired.session_key]))
        old_entry(gone, deadline_ms(raw_records()[gone]))
        SessionStore(gone).delete()
    assert len(index_entries()) == 3

    # Swept once the old entries are all due, before the live session's deadline.
    age = django_settings.SESSION_COOKIE_AGE
    with mock.patch("time.time", return_value=now - 3600 + age + 60):
        SessionStore.clear_expired()
    assert list(raw_records()) == [live]
    assert_index_matches_records()  # the live session has its entry at its deadline
    with mock.patch("time.time", return_value=now + age + 60):
        SessionStore.clear_expired()
    assert list(raw_records()) == []
    assert index_entries() == []


# -- 4. a full map ---------------------------------------------------------------------------


def test_full_map_raises_session_store_full_and_recovers(tmp_path: Path) -> None:
    with override_settings(MEMOPT_LMDB_PATH=str(tmp_path), MEMOPT_LMDB_MAP_SIZE=1024**2):
        saved: dict[str, bytes] = {}
        short_lived: list[str] = []
        error = None
        for n in range(200):
            session = SessionStore()
            session["blob"] = payload = os.urandom(40_000)
            if n % 2:
                session.set_expiry(30)
            try:
                session.save()
            except SessionStoreFull as exc:
                error = exc
                break
            saved[session.session_key] = payload
            if n % 2:
                short_lived.append(session.session_key)
        assert error is not None, "1 MiB never filled up"
        assert isinstance(error, SessionStoreError)
        assert "MEMOPT_LMDB_MAP_SIZE" in str(error)
        assert str(tmp_path) in str(error)
        assert len(saved) >= 10
        assert session.session_key is None or not session.exists(session.session_key)

        # An update that does not fit fails as a whole: the stored fields stay as they were.
        some_key = next(key for key in saved if key not in short_lived)
        update = SessionStore(some_key)
        update["blob"] = os.urandom(40_000)
        update["other"] = os.urandom(40_000)
        with pytest.raises(SessionStoreFull):
            update.save()
        for key, payload in saved.items():
            assert SessionStore(key)["blob"] == payload
        assert "other" not in SessionStore(some_key)

        long_lived = [key for key in saved if key not in short_lived]
        for key in long_lived[:3]:
            SessionStore(key).delete()
        with mock.patch("time.time", return_value=time.time() + LATER):
            SessionStore.clear_expired()
        remaining = long_lived[3:]
        assert sorted(SessionStore.iter_session_keys()) == sorted(remaining)

        for _ in range(5):
            payload = os.urandom(40_000)
            key = new_session(blob=payload)
            assert SessionStore(key)["blob"] == payload
        for key in remaining:
            assert SessionStore(key)["blob"] == saved[key]
        assert_index_matches_records()


MAP_SIZE = 1024**2  # a map small enough to fill quickly


def fill_map() -> tuple[list[str], list[str]]:
    """Sessions of 400, then 40 random bytes until thirty in a row do not fit: (long-lived,
    short-lived), every other one short-lived (30 seconds)."""
    long_lived: list[str] = []
    expiring: list[str] = []
    for size, failures in ((400, 1), (40, 30)):
        failed = 0
        while failed < failures:
            session = SessionStore()
            session["blob"] = os.urandom(size)
            expires = len(long_lived) > len(expiring)
            if expires:
                session.set_expiry(30)
            try:
                session.save()
            except SessionStoreFull:
                failed += 1
                continue
            failed = 0
            assert session.session_key is not None
            (expiring if expires else long_lived).append(session.session_key)
    return long_lived, expiring


@contextmanager
def pinned(store: str, tmp_path: Path, session_key: str) -> Iterator[Any]:
    """Another process reading session ``session_key``, whose snapshot keeps the pages
    every later write frees from being reused, so the map fills up for deletes too."""
    log = tmp_path / "pin.log"
    with children() as start:
        reader = start(lmdb_workers.hold_read_transaction, store, str(log), session_key)
        _wait_for_lines(log, 1, reader)
        yield reader


def delete_until_full(session_keys: list[str]) -> None:
    """Delete sessions from the end of ``session_keys``, as the store did before it had a
    reserve, until one does not fit; that one stays the last of the list."""
    opened = environment()
    while True:
        key = session_keys[-1].encode()
        try:
            with opened.env.begin(write=True) as txn:
                index_key = records.index_key(
                    deadline_ms(bytes(txn.get(key, db=opened.sessions))), key
                )
                txn.delete(key, db=opened.sessions)
                txn.delete(index_key, db=opened.expiry)
        except lmdb.MapFullError:
            return
        session_keys.pop()


def assert_refused(size: int) -> None:
    """A new session of ``size`` bytes does not fit: session writes never grow the map."""
    session = SessionStore()
    session["blob"] = os.urandom(size)
    with pytest.raises(SessionStoreFull, match="MEMOPT_LMDB_MAP_SIZE"):
        session.save()


def assert_map_not_grown() -> None:
    """This process maps no more than the configured size, or what the file holds."""
    info = environment().env.info()
    assert info["map_size"] <= max(MAP_SIZE, (info["last_pgno"] + 1) * 4096)


@pytest.mark.parametrize("sweep", ["clear_expired", "clearsessions"])
def test_logout_and_clearsessions_work_on_a_full_map(
    tmp_path: Path, sweep: str, settings: Any
) -> None:
    store = str(tmp_path / "store")
    settings.MEMOPT_LMDB_PATH, settings.MEMOPT_LMDB_MAP_SIZE = store, MAP_SIZE
    pin_key = new_session(pin=True)
    long_lived, expiring = fill_map()
    assert len(long_lived) > 200 and len(expiring) > 200
    with pinned(store, tmp_path, pin_key) as reader:
        more_long_lived, more_expiring = fill_map()  # what pages were still free
        long_lived += more_long_lived
        expiring += more_expiring
        assert_refused(4_000)

        # A logout: the session is gone, and the room it took is not left to writes.
        delete_until_full(long_lived)
        logged_out = long_lived.pop()
        session = SessionStore(logged_out)
        session.flush()
        assert not SessionStore().exists(logged_out)
        assert SessionStore._read(logged_out) is None
        assert logged_out not in raw_records()
        assert_map_not_grown()
        assert_refused(4_000)

        # The pinning reader is killed: its stale slot still pins the pages.
        os.kill(reader.pid, signal.SIGKILL)
        finish([reader], 10)
    # The sweep works with hundreds of expired sessions, more than it can delete in one
    # transaction on a full map.
    with mock.patch("time.time", return_value=time.time() + LATER):
        if sweep == "clearsessions":
            call_command("clearsessions")
        else:
            SessionStore.clear_expired()
    assert sorted(raw_records()) == sorted([*long_lived, pin_key])
    assert_map_not_grown()

    # Writes work again in the room the sweep freed, and the sessions are intact.
    for _ in range(len(expiring) // 4):
        payload = os.urandom(400)
        assert SessionStore(new_session(blob=payload))["blob"] == payload
    assert all(len(SessionStore(key)["blob"]) in (400, 40) for key in long_lived)
    assert_index_matches_records()


def read_meanwhile(session_keys: list[str], threads: int = 4) -> Any:
    """Threads loading, checking and listing sessions in a loop until the block ends: what
    each saw go wrong (``errors``) and how many loads they made (``loads``)."""

    @contextmanager
    def reading() -> Iterator[dict[str, Any]]:
        seen: dict[str, Any] = {"errors": [], "loads": 0}
        stop = threading.Event()

        def read(n: int) -> None:
            rng = random.Random(n)
            try:
                while not stop.is_set():
                    key = rng.choice(session_keys)
                    session = SessionStore(key)
                    blob = session.get("blob")
                    if blob is not None and len(blob) not in (400, 40, 40_000):
                        raise AssertionError(f"{key}: a blob of {len(blob)} bytes")
                    SessionStore().exists(key)
                    if rng.random() < 0.01:
                        SessionStore.store_figures(sample=10)
                    seen["loads"] += 1
            except Exception as exc:  # noqa: BLE001 - the test reports it
                seen["errors"].append(repr(exc))

        workers = [threading.Thread(target=read, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        try:
            yield seen
        finally:
            stop.set()
            for worker in workers:
                worker.join(30)

    return reading()


def test_reads_in_other_threads_while_a_logout_grows_the_map(
    tmp_path: Path, settings: Any
) -> None:
    store = str(tmp_path / "store")
    settings.MEMOPT_LMDB_PATH, settings.MEMOPT_LMDB_MAP_SIZE = store, MAP_SIZE
    pin_key = new_session(pin=True)
    long_lived, _ = fill_map()
    with pinned(store, tmp_path, pin_key):
        more, _ = fill_map()
        long_lived += more
        delete_until_full(long_lived)
        # Pinned: no page a logout frees is reused, so each one grows the map anew.
        logged_out, kept = long_lived[-20:], long_lived[:-20]
        with read_meanwhile(kept) as seen:
            for key in logged_out:
                SessionStore(key).flush()
                time.sleep(0.005)
        assert seen["errors"] == []
        assert seen["loads"] > 100
        info = environment().env.info()
        assert (info["last_pgno"] + 1) * 4096 > MAP_SIZE, "no logout needed the reserve"
        assert not any(SessionStore().exists(key) for key in logged_out)
        assert all(SessionStore().exists(key) for key in kept)
        assert_map_not_grown()


def test_refused_writes_do_not_wait_for_reads_in_other_threads(store: str) -> None:
    # A write refused by its own check (CreateError, UpdateError) aborts its transaction;
    # py-lmdb aborts one only once no other thread is inside an LMDB call.
    keys = [new_session(blob=os.urandom(400)) for _ in range(50)]
    stored = SessionStore._read(keys[0])
    assert stored is not None
    sealed = {"a": stored.fields["blob"]}
    refusals: list[str] = []

    def refuse() -> None:
        for _ in range(100):
            for session_key, create, refusal in (
                ("gone" + "0" * 28, False, UpdateError),
                (keys[1], True, CreateError),
            ):
                try:
                    SessionStore._write(
                        session_key, Delta(sealed), time.time() + 60, create=create
                    )
                except refusal:
                    refusals.append(refusal.__name__)

    with read_meanwhile(keys) as seen:
        refuser = threading.Thread(target=refuse)
        refuser.start()
        refuser.join(20)
        stuck, done = refuser.is_alive(), len(refusals)
    refuser.join(30)  # the readers have stopped: it goes on
    assert not stuck, f"refused writes waited for the readers ({done} of 200 done)"
    assert len(refusals) == 200
    assert seen["errors"] == []


def test_reads_in_other_threads_while_another_process_grows_the_file(
    tmp_path: Path, settings: Any
) -> None:
    store = str(tmp_path / "store")
    settings.MEMOPT_LMDB_PATH, settings.MEMOPT_LMDB_MAP_SIZE = store, MAP_SIZE
    mine = [new_session(blob=os.urandom(400)) for _ in range(50)]
    result = tmp_path / "grower.json"
    with children() as start, read_meanwhile(mine) as seen:
        # A process configured with a larger map writes well past this one's map.
        grower = start(
            lmdb_workers.grow_in_bursts, store, str(result), 16 * MAP_SIZE, 60, 40_000, 0.01
        )
        assert finish([grower]) == [0]
    assert seen["errors"] == []
    assert seen["loads"] > 100
    created = result_of(result)["created"]
    assert all(len(SessionStore(key)["blob"]) == 40_000 for key in created)
    assert all(len(SessionStore(key)["blob"]) == 400 for key in mine)
    assert_map_not_grown()


# -- 5. damaged records ----------------------------------------------------------------------


def corrupted(kind: str, **fields: Any) -> tuple[str, SessionStore]:
    """A session stored with ``fields`` and loaded; then its record is corrupted."""
    key = new_session(**fields)
    loaded = SessionStore(key)
    assert dict(loaded.items()) == fields
    put_raw(key, CORRUPTIONS[kind](raw_records()[key]))
    return key, loaded


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_update_over_corrupt_record_never_makes_it_readable(store: str, kind: str) -> None:
    # A save appends its layer after checking only the container's first bytes (reading
    # the whole record would cost what the layer saves), so damage further in may go
    # unnoticed by the save; what must hold is that the session stays absent.
    key, loaded = corrupted(kind, a=1)
    record = raw_records()[key]
    loaded["b"] = 2
    try:
        loaded.save()
    except UpdateError:
        assert raw_records()[key] == record  # refused, not half-applied
    assert SessionStore._read(key) is None
    assert SessionStore(key).load() == {}
    assert not SessionStore().exists(key)
    if kind not in CORRUPTIONS_PAST_THE_FIRST_BYTES:
        # Damage in the container's first bytes is caught by the save itself.
        with pytest.raises(UpdateError):
            loaded.save()


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_create_over_corrupt_record_works(store: str, kind: str) -> None:
    key, _ = corrupted(kind, a=1)
    session = SessionStore(key)
    try:
        session.save(must_create=True)  # a create under that very key
    except CreateError:
        pytest.fail(f"a create over a damaged record ({kind}) was refused as if it were live")
    assert session.session_key == key
    assert SessionStore._read(key) is not None
    session = SessionStore(key)
    session["new"] = "fields"
    session.save()
    assert dict(SessionStore(key).items()) == {"new": "fields"}
    assert_indexed(key, deadline_ms(raw_records()[key]), index_entries())


def test_entries_of_the_wrong_type_are_never_written_back(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    def tampered() -> tuple[str, dict[str, bytes]]:
        # Bad entries beside the good fields a and c (see LmdbStore.plant_bad_entries),
        # and the stored bytes of the good ones. The contract checks they read as absent.
        key = new_session(a=1, b="two", c=[3])
        block, first = maps_of(key)
        sealed = block | first
        LmdbStore(store).plant_bad_entries(key)
        return key, {name: sealed[name] for name in ("a", "c")}

    caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
    key, good = tampered()
    assert "n" not in SessionStore(key) and "b" not in SessionStore(key)
    assert SessionStore.store_figures()["fields_per_session"] == 2
    # An update adds a layer and leaves the bad entries as they are (still dropped on
    # reading); once the record is rewritten, they are gone from it.
    for n in range(2 * records.MAX_LAYERS):
        session = SessionStore(key)
        session["d"] = n
        session.save()
        assert dict(SessionStore(key).items()) == {"a": 1, "c": [3], "d": n}
        if len(maps_of(key)) == 2:
            break
    else:
        pytest.fail("the record was never rewritten")
    block, first = maps_of(key)
    assert set(block) | set(first) == {"a", "c", "d"}
    assert {name: (block | first)[name] for name in good} == good

    key, _ = tampered()
    session = SessionStore(key)
    session.cycle_key()
    assert session.session_key != key
    assert not SessionStore().exists(key)
    assert {name for rewritten in maps_of(session.session_key) for name in rewritten} == {"a", "c"}
    assert dict(SessionStore(session.session_key).items()) == {"a": 1, "c": [3]}
    assert_index_matches_records()


# -- 6. an unusable path ---------------------------------------------------------------------


def test_path_under_a_regular_file_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a directory")
    path = str(blocker / "sessions")
    with override_settings(MEMOPT_LMDB_PATH=path):
        with pytest.raises(SessionStoreError) as load_error:
            SessionStore("a" * 32).load()
        assert path in str(load_error.value)
        assert "MEMOPT_LMDB_PATH" in str(load_error.value)
        session = SessionStore()
        session["a"] = 1
        with pytest.raises(SessionStoreError, match="MEMOPT_LMDB_PATH"):
            session.save()  # still failing: no half-opened environment was kept
        errors = [message for message in check_settings() if message.id == "django_memopt.E002"]
        assert len(errors) == 1
        assert path in errors[0].msg
    with override_settings(MEMOPT_LMDB_PATH=str(tmp_path / "fine")):
        assert "django_memopt.E002" not in [message.id for message in check_settings()]
        assert SessionStore(new_session(a=1))["a"] == 1


def test_store_is_created_for_its_owner_only(tmp_path: Path) -> None:
    """Sessions are not encrypted and their IDs are credentials: other local users get no
    access to the directory or the files, whatever the umask."""
    path = tmp_path / "shared" / "sessions"
    old_umask = os.umask(0o022)
    try:
        with override_settings(MEMOPT_LMDB_PATH=str(path)):
            assert SessionStore(new_session(a=1))["a"] == 1
            assert [m.id for m in check_settings() if m.id == "django_memopt.W006"] == []
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert (path / name).stat().st_mode & 0o077 == 0, name


def test_damaged_data_file_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "data.mdb").write_bytes(b"\xab" * 16384)
    with (
        override_settings(MEMOPT_LMDB_PATH=str(tmp_path)),
        pytest.raises(SessionStoreError) as error,
    ):
        SessionStore().exists("a" * 32)
    assert str(tmp_path) in str(error.value)
    assert "MEMOPT_LMDB_PATH" in str(error.value)


# -- 7. durability ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("durability", "synced"), [(None, False), ("process", False), ("system", True)]
)
def test_durability_setting_sets_the_sync_flags(
    tmp_path: Path, durability: str | None, synced: bool
) -> None:
    overrides: dict[str, Any] = {"MEMOPT_LMDB_PATH": str(tmp_path)}
    if durability is not None:
        overrides["MEMOPT_LMDB_DURABILITY"] = durability
    with override_settings(**overrides):
        if durability is None:
            del django_settings.MEMOPT_LMDB_DURABILITY
        flags = environment().env.flags()
        assert flags["sync"] is synced
        assert flags["metasync"] is synced
        key = new_session(a=[1, 2])
        session = SessionStore(key)
        session["b"] = "x"
        session.save()
        close_environments()
        assert dict(SessionStore(key).items()) == {"a": [1, 2], "b": "x"}


# -- 8. listings and store-wide values -------------------------------------------------------


def test_a_session_past_its_deadline_is_not_listed_though_its_record_stays(store: str) -> None:
    live = [new_session(n=n) for n in range(5)]
    with mock.patch(
        "time.time", return_value=time.time() - 2 * django_settings.SESSION_COOKIE_AGE
    ):
        expired = new_session(n="expired")
    short = SessionStore()
    short["n"] = "short"
    short.set_expiry(30)
    short.save()
    assert expired in raw_records()  # until a sweep
    assert list(SessionStore.iter_session_keys()) == sorted([*live, short.session_key])
    with mock.patch("time.time", return_value=time.time() + LATER):
        assert list(SessionStore.iter_session_keys()) == sorted(live)
    assert short.session_key in raw_records()


@pytest.mark.parametrize("stray", STRAY_KEYS)
def test_small_batches_and_figures_skip_and_log_once_records_under_no_session_id(
    store: str, stray: str, caplog: pytest.LogCaptureFixture
) -> None:
    live = sorted(new_session(n=n) for n in range(3))
    LmdbStore(store).plant_strays(stray, 3)
    caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
    assert sorted(key for key, _ in SessionStore.iter_sessions(batch=2)) == live
    assert len(corruption_logged(caplog)) == 1, corruption_logged(caplog)
    caplog.clear()
    figures = SessionStore.store_figures()
    assert figures["sampled_sessions"] == 3  # records are read: a stray is no session
    assert len(corruption_logged(caplog)) == 1, corruption_logged(caplog)


def test_store_wide_values_stay_in_the_databases_of_the_previous_release(store: str) -> None:
    # The previous release wrote each process's counters to the named database "stats"
    # and values set once to "meta": an upgrade reads them where they are.
    key = new_session(a=1)
    opened = environment()
    for name, entries in (
        (b"stats", {b"host:1:token": b"counters"}),
        (b"meta", {b"unsigned-ids-until": b"0"}),
    ):
        with opened.env.begin(write=True, db=opened.env.open_db(name)) as txn:
            for entry, value in entries.items():
                txn.put(entry, value)
    close_environments()
    assert SessionStore.read_values("stats") == {"host:1:token": b"counters"}
    assert SessionStore.read_value("meta", "unsigned-ids-until") == b"0"
    assert SessionStore.add_value("meta", "unsigned-ids-until", b"9") == b"0"
    SessionStore.put_value("stats", "host:2:token", b"more")
    close_environments()
    opened = environment()
    with opened.env.begin(db=opened.env.open_db(b"stats")) as txn:
        assert dict(txn.cursor()) == {b"host:1:token": b"counters", b"host:2:token": b"more"}
    assert list(SessionStore.iter_session_keys()) == [key]


def test_spaces_beyond_the_databases_an_environment_holds_fail_clearly(store: str) -> None:
    for n in range(lmdb_backend.MAX_SPACES):
        SessionStore.put_value(f"space{n}", "a", b"%d" % n)
    with pytest.raises(SessionStoreError, match=store):
        SessionStore.put_value("onetoomany", "a", b"x")
    assert SessionStore.read_value(f"space{lmdb_backend.MAX_SPACES - 1}", "a") is not None
    assert SessionStore(new_session(a=1))["a"] == 1


# -- 9. the default path --------------------------------------------------------------------


def test_default_path_is_under_the_temp_dir_and_works(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del settings.MEMOPT_LMDB_PATH
    # Deleting a setting sends no setting_changed signal (Django's documented way neither):
    # say it, as Django's own setting-dependent caches need to be told too.
    setting_changed.send(sender=None, setting="MEMOPT_LMDB_PATH", value=None, enter=True)
    system_tmp = tempfile.gettempdir()
    default = conf.MEMOPT_LMDB_PATH
    assert os.path.commonpath([default, system_tmp]) == system_tmp
    assert default != system_tmp

    # The same default, with the temp dir (TMPDIR) pointing somewhere private to this test:
    # the store is really created there, and no other test run shares it.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    path = conf.MEMOPT_LMDB_PATH
    assert os.path.relpath(path, private_tmp) == os.path.relpath(default, system_tmp)
    try:
        key = new_session(a=1)
        assert environment().path == path
        assert os.path.isfile(os.path.join(path, "data.mdb"))
        close_environments()
        assert SessionStore(key)["a"] == 1
    finally:
        close_environments()


def test_reader_table_full_names_the_setting(store: str, settings: Any) -> None:
    settings.MEMOPT_LMDB_MAX_READERS = 2
    key = new_session(a=1)
    env = lmdb_backend.environment().env
    held = [env.begin(), env.begin()]  # every slot taken by open read transactions
    try:
        with pytest.raises(SessionStoreError, match="MEMOPT_LMDB_MAX_READERS"):
            SessionStore(key).load()
    finally:
        for txn in held:
            txn.abort()
        held.clear()  # py-lmdb frees a reader slot with the transaction object
    assert SessionStore(key)["a"] == 1


# -- 10. the record: the previous release's format, and sizes -------------------------------

# A session as the previous release stored it: a record of format 1 whose fields its codec
# sealed (format 1, 16-byte tags) for FROZEN_KEY under the test settings' SECRET_KEY:
# {"_auth_user_id": "42", "cart": [...], "visits": 7, "note": "n" * 40}, then a layer
# setting "visits" to 8 and deleting "cart"; deadline 2100-01-01.
FROZEN_KEY = "frozenformat1record0123456789abc"
FROZEN_FIELDS = {"_auth_user_id": "42", "visits": 8, "note": "n" * 40}
FROZEN_RECORD = bytes.fromhex(
    "01000003bb2cc3d8009284ad5f617574685f757365725f6964c41401350781e9e3c5426eb1a18da40272ae81"
    "a23432a463617274c41d0198441fffa0d9292bf07921c698c2e59392a56170706c65a470656172a676697369"
    "7473c41201399004fce616fc233d3a4e2d16383aad07a46e6f7465c43b01df1140e262c2238da87a8f1057fe"
    "f9a7d9286e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e"
    "82a463617274c0a6766973697473c41201cd22b6280f01f4d4c2e579d07eaa7c9508"
)


def put_frozen_record() -> None:
    put_raw(FROZEN_KEY, FROZEN_RECORD)
    opened = environment()
    with opened.env.begin(write=True, db=opened.expiry) as txn:
        txn.put(records.index_key(records.deadline(FROZEN_RECORD) or 0, FROZEN_KEY.encode()), b"")


def test_a_record_of_the_previous_release_loads_and_is_rewritten_at_its_next_save(
    store: str,
) -> None:
    put_frozen_record()
    assert dict(SessionStore(FROZEN_KEY).items()) == FROZEN_FIELDS
    assert SessionStore().exists(FROZEN_KEY)
    assert list(SessionStore.iter_session_keys()) == [FROZEN_KEY]
    stored = SessionStore._read(FROZEN_KEY)
    assert stored is not None
    # An expiry refresh moves the deadline alone, the format with it.
    SessionStore._touch(FROZEN_KEY, time.time() + 600)
    assert raw_records()[FROZEN_KEY][0] == 1
    assert dict(SessionStore(FROZEN_KEY).items()) == FROZEN_FIELDS

    session = SessionStore(FROZEN_KEY)
    session["visits"] = 9
    with mock.patch.object(FieldCodec, "unpack", side_effect=AssertionError("decoded")):
        session.save()  # nothing decoded, nothing sealed again but "visits"
    record = raw_records()[FROZEN_KEY]
    assert record[0] == records.FORMAT
    rewritten = SessionStore._read(FROZEN_KEY)
    assert rewritten is not None
    # The fields the save did not touch are carried over as they were stored.
    for name in ("_auth_user_id", "note"):
        assert rewritten.fields[name] == stored.fields[name]
        assert rewritten.fields[name] in FROZEN_RECORD
    assert dict(SessionStore(FROZEN_KEY).items()) == FROZEN_FIELDS | {"visits": 9}
    assert_index_matches_records()


_WORD_TEXT = (
    "account basket billing cart catalog checkout coffee coupon delivery discount garden gift "
    "invoice jacket kitchen lamp order package payment price product refund return review "
    "shipping shoes size sofa street summer table total voucher wallet winter wishlist"
)
WORDS = _WORD_TEXT.split()


def medium_session() -> dict[str, Any]:
    """A logged-in session of 20 keys, 3.2 KB as JSON."""
    rng = random.Random(13)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    return {
        "_auth_user_id": "104729",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": f"{rng.getrandbits(256):064x}",
        "visits": 17,
        "prefs": {"lang": "en", "currency": "EUR", "page_size": 50, "comment": text(20)},
        "cart": [
            {"id": rng.randrange(10**6), "title": text(5), "qty": 2, "price": "19.90"}
            for _ in range(6)
        ],
        "recently_viewed": [rng.randrange(10**6) for _ in range(30)],
        "last_search": text(12),
        "checkout_step": 2,
        "csrf_hint": f"{rng.getrandbits(128):032x}",
        "messages": [text(8) for _ in range(5)],
        "newsletter_seen": True,
        "wizard_data": {"step": 3, "notes": text(25)},
        "form_draft": text(60),
        "compare": [rng.randrange(10**6) for _ in range(12)],
        "coupon": "SUMMER-2026",
        "shipping": {"method": "express", "address": text(10)},
        "wishlist": [{"id": rng.randrange(10**6), "title": text(5)} for _ in range(6)],
        "banner_dismissed": False,
        "notes": text(40),
    }


# medium_session()'s record as the previous release stored it (format 1, its codec).
MEDIUM_RECORD_BEFORE = 3276


def test_a_medium_session_takes_less_than_in_the_previous_release(store: str) -> None:
    key = new_session(**medium_session())
    assert len(raw_records()[key]) < 0.75 * MEDIUM_RECORD_BEFORE
    assert dict(SessionStore(key).items()) == medium_session()


def test_small_fields_left_plain_by_the_codec_are_compressed_together_below_djangos_row(
    store: str,
) -> None:
    """The record's part: sealed without compression (as the codec leaves fields under
    its threshold), the small fields take less in the record's block than Django's ``db``
    engine takes for the whole session (its signed, compressed row)."""
    from django.contrib.sessions.backends.db import SessionStore as DatabaseStore

    payload = medium_session()
    key = "plainfields" + "0" * 21
    plain = FieldCodec([django_settings.SECRET_KEY], compression=compression.PLAIN)
    sealed = {name: plain.encode(key, name, value) for name, value in payload.items()}
    SessionStore._write(key, Delta(sealed, replace=True), time.time() + 600, create=True)
    record = raw_records()[key]
    assert len(record) <= len(DatabaseStore().encode(payload)) < MEDIUM_RECORD_BEFORE
    _appended, names, block, first = msgpack.unpackb(record[records.HEADER_SIZE :])
    assert block[0] == compression.ZSTD
    hot = {name for name, value in sealed.items() if len(value) <= records.HOT_FIELD_MAX}
    assert (
        set(first)
        == hot
        == {
            "_auth_user_id",
            "_auth_user_backend",
            "_auth_user_hash",
            "visits",
            "checkout_step",
            "csrf_hint",
            "coupon",
            "newsletter_seen",
            "banner_dismissed",
        }
    )
    assert set(names) == set(payload) - hot
    assert dict(SessionStore(key).items()) == payload


def test_a_request_that_reads_the_login_and_writes_a_counter_opens_no_block(store: str) -> None:
    """The fields most requests read are small, and stay out of the block: reading them,
    and saving a change to one, decompresses nothing; reading a field of the block opens
    it once."""
    key = new_session(**medium_session())
    assert msgpack.unpackb(raw_records()[key][records.HEADER_SIZE :])[2]  # it has a block
    with (
        mock.patch.object(compression, "decompress", wraps=compression.decompress) as decompress,
        mock.patch.object(compression, "compress_with") as compress,
    ):
        for visits in range(3 * records.MAX_LAYERS):
            session = SessionStore(key)
            assert session["_auth_user_id"] == "104729"
            assert session.get("_auth_user_hash") == medium_session()["_auth_user_hash"]
            assert session.get("_session_expiry") is None and "_messages" not in session
            session["visits"] = visits
            session.save()
        assert decompress.call_count == compress.call_count == 0
        session = SessionStore(key)
        assert "cart" in session  # checks the field's tag: opens the block
        assert session["notes"] == medium_session()["notes"]
        assert decompress.call_count == 1
    assert dict(SessionStore(key).items()) == medium_session() | {"visits": visits}


def test_a_damaged_block_loses_its_fields_alone(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_session(**medium_session())
    record = raw_records()[key]
    items = msgpack.unpackb(record[records.HEADER_SIZE :])
    items[2] = items[2][:-8] + bytes(8)
    put_raw(key, record[: records.HEADER_SIZE] + msgpack.packb(items))
    caplog.set_level(logging.WARNING, logger="django.security.SuspiciousSession")
    session = SessionStore(key)
    assert session["_auth_user_id"] == "104729"  # the session is there, its login too
    assert "prefs" not in session and session.get("notes") is None
    assert "block of small fields cannot be read" in caplog.text
    kept = {name: value for name, value in medium_session().items() if name not in items[1]}
    assert dict(session.items()) == kept
    session["visits"] = 99
    session.save()
    assert dict(SessionStore(key).items()) == kept | {"visits": 99}


@pytest.mark.parametrize("compress_from", [128, None, 1024])
def test_a_medium_session_is_below_djangos_row(
    store: str, settings: Any, compress_from: int | None
) -> None:
    """Whatever MEMOPT_COMPRESS_FROM says (128 is the default), the codec leaves the fields
    under about 1 KiB plain for the LMDB store, and the record compresses them together."""
    from django.contrib.sessions.backends.db import SessionStore as DatabaseStore

    settings.MEMOPT_COMPRESS_FROM = compress_from
    key = new_session(**medium_session())
    assert len(raw_records()[key]) <= len(DatabaseStore().encode(medium_session()))
    assert dict(SessionStore(key).items()) == medium_session()
