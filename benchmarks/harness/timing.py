"""The interleaved timing loop every benchmark here uses, and the statistics it reports.

On a shared, noisy machine a figure measured a minute after another is not comparable
with it: the neighbours changed. So every benchmark interleaves what it compares: in
each round every *arm* (an engine, a setup, a variant) runs once, in a freshly shuffled
order, and the noise of the moment falls on all of them alike. Ratios within one run are
then trustworthy even when absolute times drift.
"""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
import timeit
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

Arm = TypeVar("Arm", bound=Hashable)

perf_ns = time.perf_counter_ns


def interleaved(
    arms: Sequence[Arm],
    rounds: int,
    rng: random.Random,
    serve: Callable[[Arm, Any], Iterable[float]],
    *,
    warmup: int = 0,
    drop_first: bool = False,
    before_round: Callable[[], Any] | None = None,
) -> dict[Arm, list[float]]:
    """The samples of every arm over ``warmup + rounds`` rounds, arms shuffled each round.

    ``serve(arm, context)`` runs the arm's turn and returns its timings (one or a burst);
    ``context`` is what ``before_round()`` made for this round (the same for every arm:
    e.g. which sessions to ask for). ``drop_first`` leaves out the first timing of each
    turn (it pays for the switch from the previous arm). Warm-up rounds are not recorded.
    """
    samples: dict[Arm, list[float]] = {arm: [] for arm in arms}
    order = list(arms)
    gc.collect()
    for round_no in range(warmup + rounds):
        rng.shuffle(order)
        context = before_round() if before_round is not None else None
        for arm in order:
            timings = list(serve(arm, context))
            if round_no >= warmup:
                samples[arm].extend(timings[1:] if drop_first else timings)
    return samples


def medians(samples: dict[Arm, list[float]]) -> dict[Arm, float]:
    return {arm: statistics.median(values) for arm, values in samples.items()}


def median_interval(values: Sequence[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval of the median of ``values``.

    The order statistics at ranks n/2 ± 1.96·√n/2: whatever the shape of the timings
    (they have long tails), the true median lies between them 95 times in 100.
    """
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half))
    return ordered[low], ordered[high]


def relative_noise(values: Sequence[float]) -> float:
    """Half the width of :func:`median_interval`, as a share of the median."""
    low, high = median_interval(values)
    return (high - low) / 2 / statistics.median(values)


def ns_per_call(statement: Callable[[], Any], number: int) -> float:
    """One ``timeit`` loop of ``number`` calls: ns per call (the loop's overhead included)."""
    return timeit.Timer(statement).timeit(number) / number * 1e9


def loop_ns(call: Callable[[Any], Any], items: Sequence[Any]) -> float:
    """Mean ns per ``call(item)`` over ``items``, in one timed loop."""
    start = perf_ns()
    for item in items:
        call(item)
    return (perf_ns() - start) / len(items)


def interleaved_calls(
    arms: dict[Arm, Callable[[], float]], rounds: int, rng: random.Random
) -> dict[Arm, float]:
    """Median over ``rounds`` of each arm's own figure (a loop it times), interleaved."""
    samples = interleaved(list(arms), rounds, rng, lambda arm, _: [arms[arm]()])
    return medians(samples)
