"""Scenario ``collector``: request latency and garbage-collector time under gunicorn, with
and without the app's tuning.

The example project runs under gunicorn (``--preload``, sync workers) once per setup, all
at the same time, each with a store of its own:

* ``Django defaults``: the collector as Python sets it up (``MEMOPT_GC_FREEZE = False``);
* ``freeze`` (the app's default): ``gc.collect()`` then ``gc.freeze()`` in the master,
  before the workers are forked;
* ``freeze + out-of-band``: also ``MEMOPT_GC_OUT_OF_BAND = 100``.

A load generator (threads of this process, one session each) sends ``GET /`` to one setup
at a time, in rounds that rotate the setups, and times every response. The collector's
figures come from the workers themselves (``manage.py memopt_stats --json``, after the
servers have stopped and flushed).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import timing
from benchmarks.harness.report import render, table
from benchmarks.harness.servers import ROOT
from benchmarks.harness.shop import Served, environment, get, launch, manage, stop

CLIENTS, WORKERS = 4, 2


@dataclass(eq=False)  # hashed by identity: an arm of the interleaved rounds
class Setup(Served):
    latencies_ns: list[float] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def in_request_ms(self) -> float:
        return float(self.figures.get("in_request_time_ns", 0)) / 1e6

    @property
    def between_ms(self) -> float:
        return float(self.figures.get("between_requests_time_ns", 0)) / 1e6

    @property
    def pause_ms(self) -> float:
        return float(self.figures.get("worst_pause_ns", 0)) / 1e6

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ns) / 1e6


def _setups() -> list[Setup]:
    return [
        Setup("Django defaults", "MEMOPT_GC_FREEZE = False"),
        Setup("freeze (the app's default)", "MEMOPT_GC_FREEZE = True"),
        Setup(
            "freeze + out-of-band every 100 requests",
            "MEMOPT_GC_FREEZE = True\nMEMOPT_GC_OUT_OF_BAND = 100",
        ),
    ]


@dataclass
class Result:
    rounds: int
    per_round: int  # requests per setup and round
    setups: list[Setup]


def _load(setup: Setup, requests: int) -> list[float]:
    """``requests`` requests from ``CLIENTS`` threads, each keeping a session of its own."""
    found: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        cookie = get(setup.port, None)  # a session of its own, not timed
        timings = []
        for _ in range(requests // CLIENTS):
            start = timing.perf_ns()
            cookie = get(setup.port, cookie)
            timings.append(timing.perf_ns() - start)
        with lock:
            found.extend(timings)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def _stop_and_collect(base: str, index: int, setup: Setup) -> None:
    stop(setup)
    report = json.loads(manage(environment(base, index, setup), "memopt_stats", "--json"))
    setup.figures = {**report["gc"], "requests": report["engine"]["loads"]}


def measure(quick: bool, seed: int = 1) -> Result:
    rounds, per_round = (2, 200) if quick else (10, 1000)
    setups = _setups()
    base = tempfile.mkdtemp(prefix="memopt-bench-gc-")
    sys.path[:0] = [ROOT]
    try:
        for index, setup in enumerate(setups):
            launch(base, index, setup, WORKERS)
        for setup in setups:
            _load(setup, per_round // 4)  # warm-up, not recorded
        samples = timing.interleaved(
            setups, rounds, random.Random(seed), lambda setup, _: _load(setup, per_round)
        )
        for index, setup in enumerate(setups):
            setup.latencies_ns = samples[setup]
            _stop_and_collect(base, index, setup)
        return Result(rounds, per_round, setups)
    finally:
        for setup in setups:
            stop(setup)
        shutil.rmtree(base, ignore_errors=True)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def section(found: Result) -> str:
    rows = []
    for setup in found.setups:
        finished = setup.figures.get("requests_finished", 0) or 1
        rows.append(
            [setup.name, f"{len(setup.latencies_ns):,}", f"{setup.median_ms:.2f}"]
            + [f"{_p99(setup.latencies_ns) / 1e6:.2f}", f"{setup.in_request_ms:.1f}"]
            + [f"{setup.in_request_ms / finished * 1000:.1f}", f"{setup.between_ms:.1f}"]
            + [str(setup.figures.get("collections_gen2", 0)), f"{setup.pause_ms:.2f}"]
            + [f"{setup.figures.get('frozen_objects', 0):,}"]
        )
    header = ["setup", "requests", "median ms", "p99 ms", "GC ms in requests"]
    header += ["GC µs per request", "GC ms between requests", "full collections"]
    header += ["worst pause ms", "frozen objects"]
    return render(
        "collector",
        workers=WORKERS,
        clients=CLIENTS,
        rounds=found.rounds,
        per_round=found.per_round,
        table=table(header, rows),
    )
