"""The report's catalogue: every figure has a label, a unit, a meaning and a group; the
machine formats keep their names; the docs and the Grafana dashboard agree with both."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_memopt import counters, report, stats
from django_memopt.backends.lmdb import SessionStore
from django_memopt.backends.redis import SessionStore as RedisSessionStore
from django_memopt.gc_tuning import figures as collector_figures

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DASHBOARD = DOCS / "grafana" / "django-memopt.json"
LMDB = "django_memopt.backends.lmdb"
REDIS = {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"}


def some_activity(store: type[Any]) -> None:
    """Sessions created, loaded and updated, cookies checked, and a flush."""
    session = store()
    session.update({"a": 1, "b": "x" * 100})
    session.save()
    loaded = store(session.session_key)
    loaded.get("a")
    loaded["c"] = 3
    loaded.save()
    stats.add("checked", 4)
    stats.add("passed", 3)
    stats.add("rejected_forged")
    stats.flush()


@pytest.fixture
def lmdb_report(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The report of an LMDB store with the filter on and some activity."""
    with override_settings(
        SESSION_ENGINE=LMDB,
        MEMOPT_LMDB_PATH=str(tmp_path / "store"),
        MEMOPT_FILTER=True,
        MEMOPT_FILTER_PATH=str(tmp_path / "filter"),
        MEMOPT_STATS_INTERVAL=10,
    ):
        some_activity(SessionStore)
        yield report.collect()


@pytest.fixture
def redis_report() -> Iterator[dict[str, Any]]:
    """The report of a Redis store with some activity."""
    with override_settings(**REDIS, MEMOPT_REDIS_KEY_PREFIX=f"report-{os.getpid()}:"):
        some_activity(RedisSessionStore)
        try:
            yield report.collect()
        finally:
            RedisSessionStore.remove_values("stats", list(RedisSessionStore.read_values("stats")))


# -- the catalogue ---------------------------------------------------------------------------


def test_every_counter_has_a_figure() -> None:
    for name in counters.ENGINE_COUNTERS:
        assert ("engine", name) in report.FIGURES, f"engine counter {name!r} has no figure"
    for name in counters.GATE_COUNTERS:
        assert ("filter", name) in report.FIGURES, f"gate counter {name!r} has no figure"
    for name in counters.CLIENT_CACHE_COUNTERS:
        key = name.removeprefix("cache_")
        assert ("client_cache", key) in report.FIGURES, f"cache counter {name!r} has no figure"
    for name in collector_figures():
        assert ("gc", name) in report.FIGURES, f"collector figure {name!r} has no figure"


def test_the_client_cache_figures_sum_what_the_processes_counted(tmp_path: Path) -> None:
    # This process's counters hold the other tests' counts too: compare with before.
    with override_settings(
        SESSION_ENGINE=LMDB, MEMOPT_LMDB_PATH=str(tmp_path / "store"), MEMOPT_STATS_INTERVAL=10
    ):
        stats.flush()
        before = report.collect()["client_cache"]
        stats.add("cache_hits", 9)
        stats.add("cache_misses", 3)
        stats.add("cache_invalidations", 2)
        stats.add("cache_bytes", 5000)
        stats.add("cache_bytes", -1200)
        stats.flush()
        found = report.collect()
    cache = found["client_cache"]
    assert cache["configured"] is False  # MEMOPT_REDIS_CLIENT_CACHE is 0 here
    added = {key: cache[key] - before[key] for key in ("hits", "misses", "invalidations")}
    assert added == {"hits": 9, "misses": 3, "invalidations": 2}
    assert cache["bytes"] - before["bytes"] == 3800
    assert cache["largest_process_bytes"] == cache["bytes"]  # one process
    rows = dict(report.rows(found))
    group = next(group for group in report.GROUPS if group.slug == "client-cache")
    shown = {row.figure.key: row.shown for row in rows[group]}
    share = cache["hits"] / (cache["hits"] + cache["misses"])
    assert shown["local_share"] == report.RATIO.show(share)
    text = report.as_prometheus(found)
    assert f"memopt_client_cache_hits_total {cache['hits']}" in text
    assert f"memopt_client_cache_bytes {cache['bytes']}" in text


def test_every_figure_a_report_holds_is_described(
    lmdb_report: dict[str, Any], redis_report: dict[str, Any]
) -> None:
    for found in (lmdb_report, redis_report):
        for section in report.SECTIONS:
            for key in found[section]:
                assert (section, key) in report.FIGURES, f"{section}.{key} has no figure"
        assert [group.slug for group, _ in report.rows(found)] == [
            group.slug for group in report.GROUPS
        ]  # no group of figures not described


def test_every_figure_has_a_label_a_unit_a_meaning_and_one_group() -> None:
    figures = [figure for group in report.GROUPS for figure in group.figures]
    assert len(figures) == len(report.FIGURES), "a figure is in two groups"
    labels = [figure.label for figure in figures]
    assert len(labels) == len(set(labels)), "two figures with one label"
    for figure in figures:
        assert figure.label and figure.label[0].isupper(), figure
        assert figure.unit in report.UNITS, figure
        assert re.fullmatch(r"[A-Z][^\n]*\.", figure.meaning), figure
        assert figure.section in report.SECTIONS, figure
        if figure.share_of is not None:
            assert (figure.section, figure.share_of) in report.FIGURES, figure


def test_derived_figures_are_not_in_the_machine_formats(lmdb_report: dict[str, Any]) -> None:
    derived = [figure for figure in report.FIGURES.values() if figure.derive is not None]
    assert {figure.key for figure in derived} >= {"hit_share", "rejected", "time_per_request_ns"}
    for figure in derived:
        assert figure.key not in lmdb_report[figure.section]
    assert "memopt_filter_rejected_total" not in report.as_prometheus(lmdb_report)


def test_units_are_shown_as_people_read_them() -> None:
    assert report.BYTES.show(38) == "38 B"
    assert report.BYTES.show(4096) == "4.0 KB"
    assert report.BYTES.show(15 * 1024**2) == "15.0 MB"
    assert report.BYTES.show(1024**3) == "1.0 GB"
    assert report.NANOSECONDS.show(850) == "850 ns"
    assert report.NANOSECONDS.show(67_800) == "67.8 µs"
    assert report.NANOSECONDS.show(12_345_678) == "12.3 ms"
    assert report.RATIO.show(0.5352) == "53.5%"
    assert report.RATIO.show(0.01) == "1.00%"
    assert report.RATIO.show(0) == "0%"
    assert report.RATIO.show(5e-7) == "<0.01%"
    assert report.RATIOS.show([0.5, 0.25]) == "50.0%, 25.0%"
    assert report.SECONDS.show(4.04) == "4.0 s"
    assert report.SECONDS.show(600) == "600 s"
    assert report.SECONDS.show(7200) == "2.0 h"
    assert report.COUNTS_BY_KEY.show({"listpack": 3}) == "listpack 3"
    assert report.GENERATION.show(-1) == "none yet"


def test_rows_show_rates_as_shares_of_what_they_count(lmdb_report: dict[str, Any]) -> None:
    # This process's counters hold the other tests' counts too: these figures, exactly.
    gate = dict.fromkeys(counters.GATE_COUNTERS, 0)
    lmdb_report["filter"].update(gate, checked=4, passed=3, rejected_forged=1)
    lmdb_report["engine"].update(loads=5, misses=0, decoded_share=0.5)
    shown = {row.figure.key: row.shown for _, found in report.rows(lmdb_report) for row in found}
    assert shown["checked"] == "4"
    assert shown["passed"] == "3 (75.0% of cookies checked)"
    assert shown["rejected"] == "1 (25.0% of cookies checked)"
    assert shown["rejected_forged"] == "1 (25.0% of cookies checked)"
    assert shown["rejected_unknown"] == "0"
    assert shown["hit_share"] == "100.0%"
    assert shown["decoded_share"] == "50.0%"
    assert shown["enabled"] == "yes"
    assert shown["map_size"] == "1.0 GB"


def test_a_figure_not_in_the_catalogue_is_still_shown(lmdb_report: dict[str, Any]) -> None:
    lmdb_report["store"]["something_new"] = 12345
    text = report.as_text(lmdb_report)
    assert "Not described yet" in text
    assert re.search(r"^  store\.something_new +12,345$", text, re.MULTILINE)


# -- the machine formats keep their names ----------------------------------------------------

# What scripts and dashboards read: changing any of these breaks them.
JSON_KEYS = {
    "store": {
        "engine", "sessions", "live_sessions", "session_bytes", "expired_not_swept",
        "expired_not_swept_capped", "fields_per_session", "sampled_sessions", "map_size",
        "map_used", "readers_used", "readers_max",
    },
    "filter": {
        "enabled", *counters.GATE_COUNTERS, "path", "complete", "capacity", "target_fp_rate",
        "estimated_fp_rate", "file_size", "live_generations", "fill_ratios",
    },
    "engine": {*counters.ENGINE_COUNTERS, "decoded_share", "written_share", "processes", "hosts"},
    "client_cache": {
        "configured", "hits", "misses", "bypasses", "invalidations", "flushes", "refusals",
        "bytes", "largest_process_bytes",
    },
    "flushes": {"interval_seconds", "newest_age_seconds", "oldest_age_seconds", "processes"},
}  # fmt: skip
PROMETHEUS_NAMES = {
    "memopt_store_sessions", "memopt_store_live_sessions", "memopt_store_session_bytes",
    "memopt_store_expired_not_swept", "memopt_store_expired_not_swept_capped",
    "memopt_store_fields_per_session", "memopt_store_sampled_sessions", "memopt_store_map_size",
    "memopt_store_map_used", "memopt_store_readers_used", "memopt_store_readers_max",
    "memopt_filter_enabled", "memopt_filter_checked_total", "memopt_filter_passed_total",
    "memopt_filter_rejected_malformed_total", "memopt_filter_rejected_forged_total",
    "memopt_filter_rejected_unsigned_total", "memopt_filter_rejected_unknown_total",
    "memopt_filter_filter_unavailable_total", "memopt_filter_complete", "memopt_filter_capacity",
    "memopt_filter_target_fp_rate", "memopt_filter_estimated_fp_rate", "memopt_filter_file_size",
    "memopt_filter_live_generations", "memopt_filter_fill_ratios",
    "memopt_engine_loads_total", "memopt_engine_misses_total", "memopt_engine_creates_total",
    "memopt_engine_updates_total", "memopt_engine_touches_total",
    "memopt_engine_fields_loaded_total", "memopt_engine_fields_decoded_total",
    "memopt_engine_bytes_written_total", "memopt_engine_bytes_rewrite_total",
    "memopt_engine_decoded_share", "memopt_engine_written_share", "memopt_engine_processes",
    "memopt_engine_hosts",
    "memopt_client_cache_configured", "memopt_client_cache_hits_total",
    "memopt_client_cache_misses_total", "memopt_client_cache_bypasses_total",
    "memopt_client_cache_invalidations_total", "memopt_client_cache_flushes_total",
    "memopt_client_cache_refusals_total",
    "memopt_client_cache_bytes", "memopt_client_cache_largest_process_bytes",
    *(f"memopt_gc_{figure}_gen{n}_total" for figure in ("collections", "time_ns", "collected")
      for n in range(3)),
    "memopt_gc_in_request_time_ns_total", "memopt_gc_between_requests_time_ns_total",
    "memopt_gc_requests_finished_total", "memopt_gc_out_of_band_collections_total",
    "memopt_gc_worst_pause_ns", "memopt_gc_worst_pause_generation", "memopt_gc_out_of_band_every",
    "memopt_gc_threshold0", "memopt_gc_threshold1", "memopt_gc_threshold2",
    "memopt_gc_frozen_objects",
    "memopt_flushes_interval_seconds", "memopt_flushes_newest_age_seconds",
    "memopt_flushes_oldest_age_seconds",
}  # fmt: skip


def sample_names(text: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_json_keys_and_prometheus_names_stay_as_they_were(lmdb_report: dict[str, Any]) -> None:
    for section, keys in JSON_KEYS.items():
        assert set(lmdb_report[section]) == keys, section
    assert set(lmdb_report["gc"]) == set(collector_figures())
    assert sample_names(report.as_prometheus(lmdb_report)) == PROMETHEUS_NAMES


def test_every_prometheus_metric_has_its_meaning_as_help(
    lmdb_report: dict[str, Any], redis_report: dict[str, Any]
) -> None:
    for found in (lmdb_report, redis_report):
        for family in text_string_to_metric_families(report.as_prometheus(found)):
            assert family.documentation, family.name
    families = {
        family.name: family
        for family in text_string_to_metric_families(report.as_prometheus(redis_report))
    }
    assert families["memopt_store_hash_encodings"].samples[0].labels["key"]
    assert families["memopt_engine_loads"].documentation == "Requests that read their session."


def test_the_collector_gives_a_registry_the_same_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(report.PrometheusCollector())
    with override_settings(SESSION_ENGINE=LMDB, MEMOPT_LMDB_PATH=str(tmp_path / "store")):
        some_activity(SessionStore)
        exposed = generate_latest(registry).decode()
        direct = report.as_prometheus(report.collect())
    assert sample_names(exposed) == sample_names(direct)
    assert "# HELP memopt_engine_loads_total Requests that read their session." in exposed


def test_the_collector_leaves_its_figures_out_when_the_store_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    registry = CollectorRegistry()
    registry.register(report.PrometheusCollector())
    with override_settings(CACHES={**settings.CACHES, "sessions": dead}, **REDIS):
        assert generate_latest(registry) == b""
    [record] = [r for r in caplog.records if r.name == "django_memopt.report"]
    assert record.levelno == logging.WARNING and "left out" in record.getMessage()


# -- the docs and the dashboard agree --------------------------------------------------------


def figure_table(group: report.Group) -> str:
    """The table of ``group`` as docs/stats.md shows it."""
    lines = ["| Figure | Unit | JSON · Prometheus | Meaning |", "|---|---|---|---|"]
    for figure in group.figures:
        if figure.derive is not None:
            names = "derived"
        elif figure.unit in (report.TEXT, report.PROCESSES):
            names = f"`{figure.section}.{figure.key}`"
        else:
            metric = report.metric_name(figure.section, figure.key)
            names = f"`{figure.section}.{figure.key}` · `{metric}`"
        lines.append(f"| {figure.label} | {figure.unit.name} | {names} | {figure.meaning} |")
    return "\n".join(lines) + "\n"


def test_the_docs_list_every_figure_as_the_catalogue_has_it() -> None:
    text = (DOCS / "stats.md").read_text()
    for group in report.GROUPS:
        table = figure_table(group)
        assert f"### {group.question}\n" in text
        assert table in text, f"docs/stats.md: the table of {group.question!r} should be\n{table}"


def dashboard_metrics() -> set[str]:
    """Every metric name in the PromQL of the dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(queries) >= 20
    return {name for query in queries for name in re.findall(r"\bmemopt_\w+", query)}


def test_the_grafana_dashboard_uses_only_metrics_the_endpoint_serves(
    lmdb_report: dict[str, Any], redis_report: dict[str, Any]
) -> None:
    served = sample_names(report.as_prometheus(lmdb_report)) | sample_names(
        report.as_prometheus(redis_report)
    )
    used = dashboard_metrics()
    assert used, "no metric in the dashboard's queries"
    assert used <= served, f"not served: {sorted(used - served)}"
    # Each question has its panels.
    titles = [panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
    for group in report.GROUPS:
        assert group.question in titles
