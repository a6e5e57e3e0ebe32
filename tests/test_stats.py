"""Counters per process, flushed to the store and summed by ``manage.py memopt_stats``."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import msgpack
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_memopt import stats
from django_memopt.backends.lmdb import SessionStore
from django_memopt.backends.redis import SessionStore as RedisSessionStore
from tests import stats_workers
from tests.processes import WAIT, children, finish, result_of

LMDB = "django_memopt.backends.lmdb"
REDIS = {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store"
    with override_settings(SESSION_ENGINE=LMDB, MEMOPT_LMDB_PATH=str(path)):
        yield path


def report(*args: str) -> str:
    output = StringIO()
    call_command("memopt_stats", *args, stdout=output)
    return output.getvalue()


def counted(before: dict[str, int]) -> dict[str, int]:
    after = stats.process_totals()
    return {name: after.get(name, 0) - before.get(name, 0) for name in stats.ENGINE_COUNTERS}


# -- what the engine counts ------------------------------------------------------------------


def test_a_typical_request_is_counted(store: Path) -> None:
    session = SessionStore()
    session.update({f"key{n}": "x" * 100 for n in range(10)})
    session.save()
    before = stats.process_totals()
    loaded = SessionStore(session.session_key)
    loaded.get("key1")
    loaded.get("key2")
    loaded["key3"] = "changed"
    loaded.save()
    numbers = counted(before)
    assert numbers["loads"] == 1 and numbers["misses"] == 0
    assert numbers["fields_loaded"] == 10
    assert numbers["fields_decoded"] == 2
    assert numbers["updates"] == 1 and numbers["creates"] == 0
    # One field sent; a rewrite would have sent all ten.
    assert 0 < numbers["bytes_written"] * 5 < numbers["bytes_rewrite"]
    SessionStore("a" * 32).load()
    assert counted(before)["misses"] == 1


def test_counts_from_threads_are_exact(store: Path) -> None:
    import threading

    before = stats.process_totals()

    def count() -> None:
        for _ in range(10_000):
            stats.add("loads")

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counted(before)["loads"] == 80_000


# -- across processes ------------------------------------------------------------------------


def run_stats_in_another_process(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"from tests import stats_workers; stats_workers.setup({str(path)!r}, None); "
        "from django.core.management import call_command; "
        f"call_command('memopt_stats', *{list(args)!r})"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT
    )


def test_workers_counters_are_summed_exactly_by_another_process(
    store: Path, tmp_path: Path
) -> None:
    # Workers that flush once an hour: all but their first request reach the store by the
    # flush at exit. (Plain interpreters: multiprocessing's children skip atexit.)
    requests = [40, 25, 60]
    results = [tmp_path / f"result-{n}.json" for n in range(len(requests))]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tests import stats_workers; "
                f"stats_workers.serve({str(store)!r}, {count}, 3600.0, {str(results[n])!r})",
            ],
            cwd=ROOT,
        )
        for n, count in enumerate(requests)
    ]
    assert [worker.wait(WAIT) for worker in workers] == [0] * len(workers)
    for path in results:
        result_of(path)
    done = run_stats_in_another_process(store, "--json")
    assert done.returncode == 0, done.stderr
    engine = json.loads(done.stdout)["engine"]
    reads = sum(requests) - len(requests)  # the first request of each worker creates
    assert engine["processes"] == len(requests)
    assert engine["creates"] == len(requests)
    assert engine["loads"] == reads
    assert engine["fields_loaded"] == reads
    assert engine["fields_decoded"] == reads
    assert engine["misses"] == 0


def test_a_killed_worker_loses_at_most_its_last_unflushed_interval(
    store: Path, tmp_path: Path
) -> None:
    # One flushes after every request, one at most once an hour: killed, the first has lost
    # nothing, the second all but its first request (its first flush).
    intervals = [0.0, 3600.0]
    done = [tmp_path / f"done-{n}" for n in range(2)]
    results = [tmp_path / f"result-{n}.json" for n in range(2)]
    with children() as start:
        processes = [
            start(
                stats_workers.serve_until_killed,
                str(store),
                30,
                interval,
                str(done[n]),
                str(results[n]),
            )
            for n, interval in enumerate(intervals)
        ]
        deadline = time.monotonic() + WAIT
        while not all(path.exists() for path in done):
            assert time.monotonic() < deadline, "the workers never finished their requests"
            time.sleep(0.02)
        pids = [process.pid for process in processes]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        finish(processes)
    records = stats.read_records(SessionStore.read_stats())
    by_pid = {record["pid"]: record["counts"] for record in records}
    every_request, first_only = (by_pid[pid] for pid in pids)
    assert every_request.get("loads") == 29 and every_request.get("creates") == 1
    assert first_only.get("creates") == 1 and "loads" not in first_only


# -- the command -----------------------------------------------------------------------------


def test_json_has_the_four_sections_with_store_figures(store: Path) -> None:
    for n in range(5):
        session = SessionStore()
        session.update({"a": n, "b": "x" * 50})
        session.save()
    expired = SessionStore()
    expired.update({"a": 1, "b": 2})
    expired.set_expiry(
        -120
    )  # a third field: "_session_expiry"  # stored with its deadline two minutes ago, until swept
    expired.save()
    data = json.loads(report("--json"))
    assert set(data) == {"store", "filter", "engine", "gc"}
    figures = data["store"]
    assert figures["engine"] == LMDB
    assert figures["sessions"] == 6
    assert figures["expired_not_swept"] == 1  # its minute bucket is over
    assert figures["live_sessions"] == 5
    assert figures["fields_per_session"] == pytest.approx(13 / 6)
    SessionStore.clear_expired()
    figures = json.loads(report("--json"))["store"]
    assert (figures["sessions"], figures["expired_not_swept"]) == (5, 0)
    assert 0 < figures["map_used"] <= figures["map_size"]
    assert data["filter"]["enabled"] is False


def test_prometheus_output_parses(store: Path) -> None:
    SessionStore().save()
    stats.flush()
    families = {
        family.name: family
        for family in text_string_to_metric_families(report("--format", "prometheus"))
    }
    assert families["memopt_engine_creates"].type == "counter"
    assert families["memopt_store_sessions"].type == "gauge"
    assert families["memopt_store_sessions"].samples[0].value == 1
    assert "memopt_gc_collections_gen0" in families


def test_text_output_names_every_section(store: Path) -> None:
    text = report()
    headings = [line.split(" ")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert [heading for heading in headings if heading] == ["store", "filter", "engine", "gc"]
    assert "  sessions " in text


def test_redis_store_figures_and_an_unreachable_store() -> None:
    with override_settings(**REDIS):
        session = RedisSessionStore()
        session.update({"_auth_user_hash": "h" * 64, "a": 1})
        session.save()
        try:
            figures = json.loads(report("--json"))["store"]
            assert figures["sessions"] >= 1
            assert figures["memory_per_session"] > 0
            assert figures["hash_encodings"]  # e.g. {"hashtable": n}
        finally:
            session.delete()
    dead = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    with (
        override_settings(CACHES={**settings.CACHES, "sessions": dead}, **REDIS),
        pytest.raises(CommandError, match="unreachable"),
    ):
        report("--json")


SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"


def test_memopt_stats_refuses_an_engine_that_is_not_memopts() -> None:
    with (
        override_settings(SESSION_ENGINE=SIGNED_COOKIES),
        pytest.raises(CommandError, match="not a django-memopt engine"),
    ):
        report("--json")
    with (
        override_settings(SESSION_ENGINE=SIGNED_COOKIES, MEMOPT_FILTER=True),
        pytest.raises(CommandError, match="not a django-memopt engine"),
    ):
        call_command("memopt_rebuild_filter", stdout=StringIO())


def test_counters_go_nowhere_when_the_engine_is_not_memopts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Installed for the collector tuning alone, the app must not fail every flush."""
    with override_settings(SESSION_ENGINE=SIGNED_COOKIES, MEMOPT_STATS_INTERVAL=0):
        stats.add("loads")
        stats.flush()
        stats._flush_when_due()
        stats._flush_at_exit()
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("engine", ["lmdb", "redis"])
def test_prune_forgets_only_processes_that_stopped_flushing(engine: str, tmp_path: Path) -> None:
    overrides = (
        {"SESSION_ENGINE": LMDB, "MEMOPT_LMDB_PATH": str(tmp_path / "store")}
        if engine == "lmdb"
        else {**REDIS, "MEMOPT_REDIS_KEY_PREFIX": f"prune-{os.getpid()}:"}
    )
    with override_settings(**overrides):
        store = RedisSessionStore if engine == "redis" else SessionStore
        now = time.time()
        for token, flushed, loads in (("gone", now - 7200, 5), ("live", now - 10, 7)):
            record = {"version": stats.RECORD_VERSION, "host": "h", "pid": 1, "flushed": flushed}
            store.write_stats(token, msgpack.packb({**record, "counts": {"loads": loads}}))
        assert json.loads(report("--json"))["engine"]["loads"] == 12
        errors = StringIO()
        call_command("memopt_stats", "--json", "--prune", "3600", stdout=StringIO(), stderr=errors)
        assert "1 of 2 processes" in errors.getvalue()
        assert set(store.read_stats()) == {"live"}
        assert json.loads(report("--json"))["engine"]["loads"] == 7
        store.remove_stats(["live"])
        with pytest.raises(CommandError, match="seconds"):
            report("--prune", "-1")
