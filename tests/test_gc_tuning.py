"""Garbage-collector tuning: applied once at startup, measured, version-aware.

The test process has run ``ready()`` already, so ``apply()`` is exercised in fresh
interpreters (``tests/gc_workers.py``); the checks' version awareness is tested here with
``sys.version_info`` patched.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.test import override_settings

from django_memopt import gc_tuning
from django_memopt.checks import check_settings
from tests import gc_workers
from tests.processes import children, finish, result_of

# Out-of-band mode on, every 4 requests.
OUT_OF_BAND = {"MEMOPT_GC_OUT_OF_BAND": 4}


def run(tmp_path: Path, target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run ``target(*args, result_path)`` in a spawned child; what it reported."""
    result_path = tmp_path / f"{target.__name__}.json"
    with children() as start:
        child = start(target, *args, str(result_path))
        assert finish([child]) == [0]
    return result_of(result_path)


def ids(**overrides: Any) -> list[str | None]:
    with override_settings(**overrides):
        return [message.id for message in check_settings()]


# -- startup: applied once -------------------------------------------------------------------


def test_defaults_freeze_and_keep_pythons_thresholds(tmp_path: Path) -> None:
    result = run(tmp_path, gc_workers.startup, {})
    # Python 3.12 starts with a few hundred static objects frozen already.
    assert result["frozen"] > result["python_frozen"] + 1000
    assert result["thresholds"] == result["python_thresholds"]
    assert result["checks"] == []
    assert result["callbacks"] == 1
    figures = result["figures"]
    assert figures["frozen_objects"] == result["frozen"]
    assert [figures[f"threshold{n}"] for n in range(3)] == result["python_thresholds"]
    assert figures["out_of_band_every"] == 0


def test_thresholds_applied_once_and_never_undone(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        gc_workers.startup,
        {"MEMOPT_GC_THRESHOLDS": (123, 7, 9), "MEMOPT_GC_FREEZE": False},
    )
    assert result["python_thresholds"] != [123, 7, 9]
    assert result["thresholds"] == [123, 7, 9]
    assert result["frozen"] == result["python_frozen"]  # MEMOPT_GC_FREEZE = False
    # A second apply(), even under other settings, changes nothing: no new thresholds, no
    # out-of-band mode, no freeze, no second callback.
    assert result["thresholds_again"] == [123, 7, 9]
    assert result["thresholds_overridden"] == [123, 7, 9]
    assert result["thresholds_after_override"] == [123, 7, 9]
    assert result["frozen_again"] == result["frozen_overridden"] == result["python_frozen"]
    assert result["callbacks"] == 1
    assert result["checks"] == []


def test_second_apply_does_not_freeze_again(tmp_path: Path) -> None:
    result = run(tmp_path, gc_workers.startup, {})
    # The child made 10,000 new objects before calling apply() again: a second freeze would
    # take them in. (Frozen objects that are freed leave the count, so it may only drop.)
    assert result["frozen_again"] <= result["frozen"]
    assert result["frozen_overridden"] <= result["frozen"]


def test_one_threshold_keeps_the_others(tmp_path: Path) -> None:
    result = run(tmp_path, gc_workers.startup, {"MEMOPT_GC_THRESHOLDS": [321]})
    assert result["thresholds"] == [321, *result["python_thresholds"][1:]]


@pytest.mark.parametrize("thresholds", [(0, 10, 10), (700, -1), "700", (700, 10, 10, 10)])
def test_invalid_thresholds_are_refused_and_not_applied(
    tmp_path: Path, thresholds: object
) -> None:
    result = run(tmp_path, gc_workers.startup, {"MEMOPT_GC_THRESHOLDS": thresholds})
    assert result["thresholds"] == result["python_thresholds"]
    assert [message["id"] for message in result["checks"]] == ["django_memopt.E019"]
    assert (
        "MEMOPT_GC_THRESHOLDS must be None or a tuple of 1 to 3 ints"
        in (result["checks"][0]["msg"])
    )
    assert result["frozen"] > result["python_frozen"]  # the rest still applies


def test_invalid_out_of_band_and_freeze_are_not_applied(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        gc_workers.startup,
        {"MEMOPT_GC_OUT_OF_BAND": 0, "MEMOPT_GC_FREEZE": "yes"},
    )
    assert result["thresholds"] == result["python_thresholds"]
    assert result["frozen"] == result["python_frozen"]
    assert result["figures"]["out_of_band_every"] == 0
    assert sorted(message["id"] for message in result["checks"]) == [
        "django_memopt.E018",
        "django_memopt.E021",
    ]


# -- out-of-band collection ------------------------------------------------------------------


def test_never_is_the_largest_threshold_python_takes() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(saved[0], saved[1], gc_tuning.NEVER)
        assert gc.get_threshold()[2] == gc_tuning.NEVER
        with pytest.raises(OverflowError):
            gc.set_threshold(saved[0], saved[1], gc_tuning.NEVER + 1)
    finally:
        gc.set_threshold(*saved)


def test_out_of_band_collects_once_per_n_requests(tmp_path: Path) -> None:
    every = 4
    result = run(tmp_path, gc_workers.out_of_band, every, 3 * every + 2)
    assert result["thresholds"][2] == gc_tuning.NEVER
    sequential = result["sequential"]
    assert sequential["requests_finished"] == 3 * every + 2
    assert sequential["out_of_band_collections"] == 3
    # The only full collections are the out-of-band ones.
    assert sequential["collections_gen2"] == 3
    assert sequential["between_requests_time_ns"] > 0


def test_no_out_of_band_collection_while_a_request_is_in_flight(tmp_path: Path) -> None:
    every = 4
    result = run(tmp_path, gc_workers.out_of_band, every, every + 2)
    # The first phase left 2 finished requests towards the next collection.
    while_in_flight = result["while_in_flight"]
    assert while_in_flight["requests_finished"] == 3 * every
    assert while_in_flight["out_of_band_collections"] == 0
    assert while_in_flight["collections_gen2"] == 0
    # One collection when the last request in flight finishes, however many were due.
    after = result["after_it_finished"]
    assert after["requests_finished"] == 3 * every + 1
    assert after["out_of_band_collections"] == 1
    assert after["collections_gen2"] == 1
    # A finish without a start (a response closed twice) is not a request.
    assert result["unmatched_finish"]["requests_finished"] == 0
    assert result["unmatched_finish"]["out_of_band_collections"] == 0


WORKLOAD = 30_000


def test_without_out_of_band_the_collector_starts_full_collections(tmp_path: Path) -> None:
    """The control for the next test: this workload does make full collections."""
    result = run(tmp_path, gc_workers.workload, {"MEMOPT_GC_THRESHOLDS": (100, 2, 2)}, WORKLOAD)
    assert result["thresholds"] == [100, 2, 2]
    assert result["delta"]["collections_gen0"] > 0
    assert result["delta"]["collections_gen2"] > 0


def test_with_out_of_band_the_collector_never_starts_a_full_collection(
    tmp_path: Path,
) -> None:
    result = run(
        tmp_path,
        gc_workers.workload,
        {"MEMOPT_GC_THRESHOLDS": (100, 2, 2), **OUT_OF_BAND},
        WORKLOAD,
    )
    assert result["thresholds"] == [100, 2, gc_tuning.NEVER]
    assert result["delta"]["collections_gen0"] > 0
    assert result["delta"]["collections_gen1"] > 0
    assert result["delta"]["collections_gen2"] == 0


# -- measurement -----------------------------------------------------------------------------


def test_measurement(tmp_path: Path) -> None:
    result = run(tmp_path, gc_workers.measurement)
    gen0, gen2 = result["gen0"], result["gen2"]
    assert gen0["collections_gen0"] == 1 and gen0["time_ns_gen0"] > 0
    assert gen0["collections_gen2"] == 0 and gen0["time_ns_gen2"] == 0
    assert gen2["collections_gen2"] == 1 and gen2["time_ns_gen2"] > 0
    assert gen2["between_requests_time_ns"] > 0 and gen2["in_request_time_ns"] == 0
    assert result["garbage"]["collected_gen2"] >= 1000
    # A collection started with a request in flight counts as in-request time.
    in_request = result["in_request"]
    assert in_request["collections_gen1"] == 1
    assert in_request["in_request_time_ns"] > 0
    assert in_request["between_requests_time_ns"] == 0
    assert result["after_request"]["requests_finished"] == 1
    assert result["after_request"]["between_requests_time_ns"] > 0
    figures = result["figures"]
    assert figures["worst_pause_ns"] > 0
    assert figures["worst_pause_ns"] <= max(figures[f"time_ns_gen{n}"] for n in range(3))
    assert figures["worst_pause_generation"] in (0, 1, 2)


def test_a_forked_child_counts_from_zero(tmp_path: Path) -> None:
    result = run(tmp_path, gc_workers.measurement)
    forked = result["forked"]
    assert result["figures"]["collections_gen2"] > 0
    at_fork = forked["at_fork"]
    for key in ("collections_gen0", "collections_gen2", "time_ns_gen2", "requests_finished"):
        assert at_fork[key] == 0, key
    assert at_fork["worst_pause_generation"] == -1
    # The tuning itself is inherited; the measurement still works.
    assert at_fork["frozen_objects"] > 0
    assert forked["after_collect"]["collections_gen0"] == 1
    assert forked["after_collect"]["time_ns_gen0"] > 0
    # The parent's figures are its own.
    assert result["parent_after_fork"]["collections_gen2"] >= result["figures"]["collections_gen2"]


def test_figures_keys_are_stable() -> None:
    keys = list(gc_tuning.figures())
    assert keys == [
        "collections_gen0",
        "collections_gen1",
        "collections_gen2",
        "time_ns_gen0",
        "time_ns_gen1",
        "time_ns_gen2",
        "collected_gen0",
        "collected_gen1",
        "collected_gen2",
        "worst_pause_ns",
        "worst_pause_generation",
        "in_request_time_ns",
        "between_requests_time_ns",
        "requests_finished",
        "out_of_band_collections",
        "out_of_band_every",
        "frozen_objects",
        "threshold0",
        "threshold1",
        "threshold2",
    ]


def test_measuring_in_the_test_process() -> None:
    """ready() installed the measurement here too: every collection is counted."""
    before = gc_tuning.figures()
    gc.collect(0)
    after = gc_tuning.figures()
    assert after["collections_gen0"] > before["collections_gen0"]
    assert after["time_ns_gen0"] > before["time_ns_gen0"]


# -- versions --------------------------------------------------------------------------------


def test_incremental_collector_versions() -> None:
    for version, incremental in [
        ((3, 11, 7), False),
        ((3, 13, 0), False),
        ((3, 14, 0), True),
        ((3, 14, 4), True),
        ((3, 14, 5), False),
        ((3, 15, 0), False),
    ]:
        with mock.patch.object(sys, "version_info", version):
            assert gc_tuning.incremental_collector() is incremental, version


def test_thresholds_on_the_incremental_collector_are_refused(tmp_path: Path) -> None:
    with mock.patch.object(sys, "version_info", (3, 14, 2)):
        with override_settings(MEMOPT_GC_THRESHOLDS=(700, 10, 10)):
            [message] = check_settings()
        assert message.id == "django_memopt.E020"
        assert "3.14.2" in message.msg and "incremental" in message.msg
        assert ids(MEMOPT_GC_OUT_OF_BAND=10) == ["django_memopt.W005"]
        # Invalid values are reported as such, whatever the version.
        assert ids(MEMOPT_GC_THRESHOLDS=(0,)) == ["django_memopt.E019"]
        assert ids(MEMOPT_GC_OUT_OF_BAND=0) == ["django_memopt.E021"]
    # ...and apply() leaves the collector alone there.
    result = run(
        tmp_path,
        gc_workers.patched_version,
        [3, 14, 2],
        {"MEMOPT_GC_THRESHOLDS": (123, 4, 5), **OUT_OF_BAND},
    )
    assert result["thresholds"] == result["python_thresholds"]
    assert result["figures"]["out_of_band_every"] == 0
    assert [message["id"] for message in result["checks"]] == [
        "django_memopt.E020",
        "django_memopt.W005",
    ]


def test_large_first_threshold_warns_from_313() -> None:
    for version in [(3, 13, 0), (3, 14, 5)]:
        with mock.patch.object(sys, "version_info", version):
            assert ids(MEMOPT_GC_THRESHOLDS=(50_000, 20, 20)) == ["django_memopt.W004"], version
            assert ids(MEMOPT_GC_THRESHOLDS=(2001,)) == ["django_memopt.W004"], version
            assert ids(MEMOPT_GC_THRESHOLDS=(2000, 10, 10)) == [], version
            assert ids(MEMOPT_GC_OUT_OF_BAND=10) == [], version
    for version in [(3, 11, 7), (3, 12, 1)]:
        with mock.patch.object(sys, "version_info", version):
            assert ids(MEMOPT_GC_THRESHOLDS=(50_000, 20, 20)) == [], version


def test_a_large_first_threshold_is_still_applied_on_313(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        gc_workers.patched_version,
        [3, 13, 0],
        {"MEMOPT_GC_THRESHOLDS": (50_000, 20, 20)},
    )
    assert result["thresholds"] == [50_000, 20, 20]
    assert [message["id"] for message in result["checks"]] == ["django_memopt.W004"]
