"""Counters per process, flushed to the store and summed by ``manage.py memopt_stats``."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

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
from tests.redis_server import free_port

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
    records = stats.read_records(SessionStore.read_values("stats"))
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
    assert set(data) == {"store", "filter", "engine", "client_cache", "gc", "flushes"}
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


def test_text_output_follows_the_groups_with_labels_and_units(store: Path) -> None:
    SessionStore().save()
    stats.flush()
    text = report()
    headings = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert [heading.split(" (")[0] for heading in headings] == [
        "Are sessions fast?",
        "Is the store healthy?",
        "Is the gate working?",
        "Is the client-side cache serving?",
        "Is GC hurting?",
        "How fresh are these figures?",
    ]
    assert re.search(r"^  Sessions stored +1$", text, re.MULTILINE)
    assert re.search(r"^  Map size +1\.0 GB$", text, re.MULTILINE)
    assert re.search(r"^  Worst pause +[\d.,]+ (ns|µs|ms)$", text, re.MULTILINE)
    assert "  sessions " not in text  # labels, not the JSON keys
    # -v 2: each figure's meaning under it.
    explained = StringIO()
    call_command("memopt_stats", verbosity=2, stdout=explained)
    assert "Requests that read their session." in explained.getvalue()
    assert "Requests that read their session." not in text


def test_the_report_says_how_old_each_process_figures_are(store: Path) -> None:
    now = time.time()
    for token, pid, age in (("gone", 11, 600.0), ("live", 12, 4.0)):
        record = {"version": stats.RECORD_VERSION, "host": "web", "pid": pid, "flushed": now - age}
        SessionStore.put_value("stats", token, msgpack.packb({**record, "counts": {"loads": 1}}))
    with override_settings(MEMOPT_STATS_INTERVAL=10):
        flushes = json.loads(report("--json"))["flushes"]
        text = report()
        families = {
            family.name: family
            for family in text_string_to_metric_families(report("--format", "prometheus"))
        }
    # JSON: every process, newest flush first, and the interval that bounds what is missing.
    assert flushes["interval_seconds"] == 10
    assert [(found["host"], found["pid"]) for found in flushes["processes"]] == [
        ("web", 12),
        ("web", 11),
    ]
    assert flushes["processes"][1]["flushed"] == pytest.approx(now - 600)
    assert flushes["newest_age_seconds"] == pytest.approx(4, abs=2)
    assert flushes["oldest_age_seconds"] == pytest.approx(600, abs=2)
    assert flushes["processes"][0]["age_seconds"] == flushes["newest_age_seconds"]
    # Text: the same, and what may be missing.
    note = "each live process's last 10 s of activity, MEMOPT_STATS_INTERVAL, may be missing"
    assert note in text
    live = text.index("    web pid 12: last flushed 4")
    assert live < text.index("    web pid 11: last flushed 60")
    # Prometheus: the summary only (a series per process ID would pile up over restarts).
    assert families["memopt_flushes_interval_seconds"].samples[0].value == 10
    assert "missing" in families["memopt_flushes_interval_seconds"].documentation
    assert families["memopt_flushes_oldest_age_seconds"].type == "gauge"
    assert families["memopt_flushes_oldest_age_seconds"].samples[0].value == pytest.approx(
        600, abs=2
    )
    assert families["memopt_flushes_newest_age_seconds"].samples[0].value == pytest.approx(
        4, abs=2
    )
    assert not [name for name in families if name.startswith("memopt_flushes_processes")]
    # Counters not flushed where the command runs: it says so.
    assert "MEMOPT_STATS_INTERVAL is None" in report()


def test_the_flushes_of_an_empty_store(store: Path) -> None:
    flushes = json.loads(report("--json"))["flushes"]
    assert flushes == {
        "interval_seconds": None,
        "newest_age_seconds": None,
        "oldest_age_seconds": None,
        "processes": [],
    }
    assert "memopt_flushes" not in report("--format", "prometheus").replace("# HELP", "").replace(
        "# TYPE", ""
    )


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
            store.put_value("stats", token, msgpack.packb({**record, "counts": {"loads": loads}}))
        assert json.loads(report("--json"))["engine"]["loads"] == 12
        errors = StringIO()
        call_command("memopt_stats", "--json", "--prune", "3600", stdout=StringIO(), stderr=errors)
        assert "1 of 2 processes" in errors.getvalue()
        assert set(store.read_values("stats")) == {"live"}
        assert json.loads(report("--json"))["engine"]["loads"] == 7
        store.remove_values("stats", ["live"])
        with pytest.raises(CommandError, match="seconds"):
            report("--prune", "-1")


DEAD_REDIS = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}


def test_a_store_that_is_down_is_one_warning_per_failed_flush(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each interval, and at exit: one line naming the store's error, no traceback."""
    with override_settings(
        CACHES={**settings.CACHES, "sessions": DEAD_REDIS}, MEMOPT_STATS_INTERVAL=0, **REDIS
    ):
        stats.add("loads")
        stats._flush_when_due()
        stats._flush_when_due()
        stats._flush_at_exit()
    logged = [record for record in caplog.records if record.name == "django_memopt.stats"]
    assert [record.levelno for record in logged] == [logging.WARNING] * 3
    assert [record.exc_info for record in logged] == [None] * 3
    for record in logged:
        assert "SessionStoreUnavailable" in record.getMessage()
        assert "is unavailable" in record.getMessage()
    assert "at exit" in logged[2].getMessage()


def test_an_unexpected_flush_error_keeps_its_traceback(
    store: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(stats, "flush", broken)
    with override_settings(MEMOPT_STATS_INTERVAL=0):
        stats._flush_when_due()
    [record] = [record for record in caplog.records if record.name == "django_memopt.stats"]
    assert record.levelno == logging.ERROR and record.exc_info is not None


# -- SIGTERM ---------------------------------------------------------------------------------


def wait_for(path: Path, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert process.poll() is None, f"the child ended early ({process.returncode})"
        assert time.monotonic() < deadline, f"the child never wrote {path.name}"
        time.sleep(0.02)


def counts_of(pid: int) -> dict[str, int]:
    """The counts process ``pid`` flushed last to the store of the current settings."""
    [counts] = [
        record["counts"]
        for record in stats.read_records(SessionStore.read_values("stats"))
        if record["pid"] == pid
    ]
    return dict(counts)


def serve_then_sigterm(
    store: Path, tmp_path: Path, interval: float | None, **options: Any
) -> subprocess.Popen[Any]:
    """A plain interpreter that serves 4 requests, then gets SIGTERM; waited for."""
    ready, result = tmp_path / "ready", tmp_path / "result.json"
    arguments = ", ".join(f"{name}={value!r}" for name, value in options.items())
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tests import stats_workers; stats_workers.serve_until_terminated("
            f"{str(store)!r}, 4, {interval!r}, {str(ready)!r}, {str(result)!r}, {arguments})",
        ],
        cwd=ROOT,
    )
    try:
        wait_for(ready, worker)
        result_of(result)
        worker.send_signal(signal.SIGTERM)
        worker.wait(WAIT)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return worker


def test_sigterm_flushes_and_ends_the_process(store: Path, tmp_path: Path) -> None:
    # An hour between flushes: only the first request's counts were flushed before SIGTERM.
    worker = serve_then_sigterm(store, tmp_path, 3600.0)
    assert counts_of(worker.pid).get("loads") == 3
    assert worker.returncode == stats.SIGTERM_EXIT_STATUS == 143


def test_sigterm_inside_a_write_transaction_still_flushes(store: Path, tmp_path: Path) -> None:
    """The main thread is saving (LMDB write transactions) when SIGTERM lands: the flush,
    itself a write transaction, must neither fail nor wait forever."""
    for trial in range(5):
        ready = tmp_path / f"ready-{trial}"
        code = (
            "from tests import stats_workers; "
            f"stats_workers.save_until_terminated({str(store)!r}, {str(ready)!r})"
        )
        worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        try:
            wait_for(ready, worker)
            time.sleep(trial * 0.01)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(WAIT) == 143  # 128 + SIGTERM
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        counts = counts_of(worker.pid)
        assert counts["creates"] == 1 and counts["updates"] >= 49, counts


def test_sigterm_kills_as_before_when_there_is_nothing_to_flush(
    store: Path, tmp_path: Path
) -> None:
    # Counters off: no handler, SIGTERM's own action.
    assert serve_then_sigterm(store, tmp_path, None).returncode == -signal.SIGTERM


def test_sigterm_ends_a_process_that_swallows_system_exit(store: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    worker = serve_then_sigterm(store, tmp_path, 3600.0, swallow_exit=True)
    assert worker.returncode == -signal.SIGTERM  # after the grace, SIGTERM's own action
    assert time.monotonic() - started < WAIT / 2


def test_a_sigterm_handler_already_installed_is_kept(store: Path, tmp_path: Path) -> None:
    """Servers (gunicorn, uvicorn) exit on SIGTERM their own way; atexit then flushes."""
    called = tmp_path / "handler-called"
    worker = serve_then_sigterm(store, tmp_path, 3600.0, handler_path=str(called))
    assert called.read_text() == "called"
    assert worker.returncode == 0
    assert counts_of(worker.pid).get("loads") == 3


def test_runserver_stopped_with_sigterm_keeps_its_counts(store: Path, tmp_path: Path) -> None:
    """The report: four requests under runserver, SIGTERM, and memopt_stats said loads 0."""
    (tmp_path / "sigterm_settings.py").write_text(
        "import os\n"
        "from tests.settings import *\n"
        "os.rmdir(MEMOPT_LMDB_PATH)  # the default store tests.settings made\n"
        f"MEMOPT_LMDB_PATH = {str(store)!r}\n"
        "MEMOPT_STATS_INTERVAL = 3600.0\n"
        "ALLOWED_HOSTS = ['127.0.0.1']\n"
    )
    port = free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sigterm_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    command = [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                browser.open(f"{base}/untouched/", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "runserver never answered"
                time.sleep(0.1)
        browser.open(f"{base}/store/a/1/", timeout=5).read()
        for _ in range(3):
            assert json.loads(browser.open(f"{base}/read/a/", timeout=5).read()) == {"value": "1"}
        server.send_signal(signal.SIGTERM)
        server.wait(WAIT)
    finally:
        if server.poll() is None:
            server.kill()
        output, errors = server.communicate()
    counts = counts_of(server.pid)
    assert (counts.get("creates"), counts.get("loads")) == (1, 3), errors.decode()
    assert server.returncode == 143
    assert b"Traceback" not in errors, errors.decode()


@pytest.fixture
def sigterm_disposition() -> Iterator[None]:
    """Whatever a test sets for SIGTERM in this process is undone."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.usefixtures("sigterm_disposition")
def test_the_sigterm_handler_is_installed_once_from_the_main_thread_with_counters_on() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with override_settings(MEMOPT_STATS_INTERVAL=None):
        stats._flush_on_sigterm()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with override_settings(MEMOPT_STATS_INTERVAL=10):
        thread = threading.Thread(target=stats._flush_on_sigterm)
        thread.start()
        thread.join()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        stats._flush_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) is stats._exit_on_sigterm
        stats._flush_on_sigterm()  # again: nothing changes
        assert signal.getsignal(signal.SIGTERM) is stats._exit_on_sigterm
        for theirs in (signal.SIG_IGN, signal.default_int_handler):
            signal.signal(signal.SIGTERM, theirs)
            stats._flush_on_sigterm()
            assert signal.getsignal(signal.SIGTERM) is theirs


def test_a_sigterm_disposition_set_in_c_is_kept(tmp_path: Path) -> None:
    """Python's own record says "default"; the kernel's says otherwise: keep the latter."""
    code = (
        "from tests import stats_workers; "
        f"stats_workers.sigterm_handler_under_a_c_level_ignore({str(tmp_path / 'store')!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "survived"
