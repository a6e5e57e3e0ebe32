"""Scenario ``overhead``: what the statistics counters and the engine's write hooks (the
session-ID gate's) add to a typical request on a medium LMDB session.

One process, one LMDB store of medium sessions. Blocks of typical requests alternate, in
a shuffled order, between the engine as it is and the engine with its counters (all but
the one of decoded fields, which the field mapping keeps) and its write hooks replaced
by no-ops; the filter is off, as by default.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness import timing, workload
from benchmarks.harness.report import render

AS_IT_IS, WITHOUT = "as it is", "without counters and hooks"
SESSIONS = 200


@dataclass
class Result:
    rounds: int
    block: int  # typical requests per arm and round
    median_us: dict[str, float]


def _no_ops() -> dict[str, Any]:
    """The engine module's counting and hook names, each with a no-op of the same shape
    (whichever of them this version of the engine has)."""
    sink: Counter[str] = Counter()
    return {
        "counter": lambda: sink,
        "count": lambda *args: None,
        "_hooks": (),
        "_delta_size": lambda delta: 0,
    }


@contextmanager
def _without_counters() -> Iterator[None]:
    from django_memopt.backends import base

    found = {name: value for name, value in _no_ops().items() if hasattr(base, name)}
    if not found:
        raise SystemExit("overhead: the engine has none of the counting names this replaces")
    saved = {name: getattr(base, name) for name in found}
    for name, value in found.items():
        setattr(base, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(base, name, value)


def measure(quick: bool) -> Result:
    rounds, block = (4, 100) if quick else (30, 300)
    base = tempfile.mkdtemp(prefix="memopt-bench-overhead-")
    try:
        config = registry.make_config(base, "redis://127.0.0.1:9/0", 9)  # Redis is not used
        engine = registry.setup(config, [registry.MEMOPT_LMDB])[0]
        payloads = workload.make_payloads()
        keys = []
        for n in range(SESSIONS):
            session = engine.store()
            session.update(workload.session_payload(payloads, "medium", n))
            session.save()
            keys.append(session.session_key)

        def serve(arm: str, _: Any) -> list[float]:
            timings = []
            with _without_counters() if arm == WITHOUT else nullcontext():
                for n in range(block):
                    start = timing.perf_ns()
                    workload.typical(engine.store, keys[n % SESSIONS], n)
                    timings.append(timing.perf_ns() - start)
            return timings

        samples = timing.interleaved([AS_IT_IS, WITHOUT], rounds, random.Random(1), serve)
        medians = {arm: statistics.median(values) / 1000 for arm, values in samples.items()}
        return Result(rounds, block, medians)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def section(found: Result) -> str:
    with_them, without = found.median_us[AS_IT_IS], found.median_us[WITHOUT]
    return render(
        "overhead",
        rounds=found.rounds,
        block=found.block,
        with_us=with_them,
        without_us=without,
        added_us=with_them - without,
        added=with_them / without - 1,
    )
