"""The pages the command writes, each from the results of the scenarios it needs.

A page is written when every scenario it names ran in this command and the first of them
succeeded; a later one that failed is marked *not measured* on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import overview
from benchmarks.harness import report
from benchmarks.harness.report import Run, Span, us
from benchmarks.scenarios import (
    SCENARIOS,
    asgi,
    client_cache,
    collector,
    engines_page,
    filter_check,
    gate,
    memory,
    moving,
    pooling,
    redis_page,
    session_ids,
    site,
    user_sessions,
)

Results = dict[str, Any]


@dataclass(frozen=True)
class PageSpec:
    file: str
    title: str
    scenarios: tuple[str, ...]
    intro: str
    body: Callable[[Results, dict[str, str], str], list[str]]  # results, failed, directory
    # What the "Machine and run" section adds of the scenarios' own setting.
    machine: Callable[[Results], list[str]] = lambda results: []

    def ready(self, results: Results, ran: set[str]) -> bool:
        return set(self.scenarios) <= ran and results.get(self.scenarios[0]) is not None


def engine_lines(results: Results) -> list[str]:
    """What the "Machine and run" section says of the engine comparison's own setting."""
    run = results.get("engines")
    if run is None:
        return []
    return [
        f"- redis-server {run.redis['redis-server']} (allocator `{run.redis['allocator']}`) on "
        f"the same machine over loopback TCP; Redis and the benchmark were {run.placement}",
        f"- One Redis round trip (`PING`, median of 2,000): {us(run.round_trips[0])} µs at the "
        f"start of the engine comparison, {us(run.round_trips[1])} µs at its end",
    ]


def _plots(directory: str) -> str:
    return os.path.join(directory, "_static", "benchmarks")


def _one_run(results: Results, failed: dict[str, str], directory: str) -> list[str]:
    images = overview.draw(results["engines"], _plots(directory), directory)
    if results.get("site") is not None:
        images["site"] = site.draw(results["site"], _plots(directory), directory)
    return overview.Overview(results, failed, images).body()


def _site(results: Results, failed: dict[str, str], directory: str) -> list[str]:
    image = site.draw(results["site"], _plots(directory), directory)
    return [
        "## Requests per second, median and p99 by engine\n",
        site.section(results["site"], image),
    ]


def _measured(results: Results, name: str, section: Callable[[Any], str]) -> str:
    found = results.get(name)
    return section(found) if found is not None else f"Not measured: `{name}` failed.\n"


def _gate(results: Results, failed: dict[str, str], directory: str) -> list[str]:
    return [
        report.render(
            "gate-page",
            gate=gate.section(results["gate"]),
            filter_check=_measured(results, "filter_check", filter_check.section),
            session_ids=_measured(results, "session_ids", session_ids.section),
        )
    ]


PAGES = (
    PageSpec(
        "benchmarks.md",
        "Benchmarks: every engine and every claim, side by side in one run",
        tuple(SCENARIOS),  # every one
        "",
        _one_run,
        engine_lines,
    ),
    PageSpec(
        "benchmarks-lmdb.md",
        "Benchmarks: django-memopt's LMDB engine against Django's session engines",
        ("engines",),
        "Re-run the command on your own hardware: absolute times depend on the machine, the "
        "ratios much less.",
        lambda results, failed, directory: engines_page.lmdb_body(results["engines"]),
        engine_lines,
    ),
    PageSpec(
        "benchmarks-redis.md",
        "Benchmarks: django-memopt's Redis engine against Django's session engines on Redis",
        ("engines", "memory"),
        "Re-run the command on your own hardware: absolute times depend on the machine and the "
        "network to Redis, the ratios less. The LMDB engine has its own page, "
        "[benchmarks-lmdb.md](benchmarks-lmdb.md), measured in the same run.",
        lambda results, failed, directory: redis_page.redis_body(
            results["engines"], results.get("memory")
        ),
        engine_lines,
    ),
    PageSpec(
        "benchmarks-client-cache.md",
        "Benchmark: the Redis engine's client-side cache, in one process and in workers",
        ("client_cache",),
        "Re-run the command on your own hardware: absolute times depend on the machine and the "
        "network to Redis, the ratios less.",
        lambda results, failed, directory: [
            "## The cache against a round trip per load\n",
            client_cache.section(results["client_cache"]),
        ],
    ),
    PageSpec(
        "memory.md",
        "Memory: what a session takes in each store, what a save costs Redis, and what the "
        "workers take",
        ("memory",),
        "",
        lambda results, failed, directory: memory.memory_body(results["memory"]),
        lambda results: memory.machine_lines(results["memory"]),
    ),
    PageSpec(
        "benchmarks-gate.md",
        "Benchmark: the session-ID gate against a flood of unknown and forged IDs",
        ("gate", "filter_check", "session_ids"),
        "",
        _gate,
    ),
    PageSpec(
        "benchmarks-gc.md",
        "Benchmark: the garbage collector under gunicorn, with and without the app's tuning",
        ("collector",),
        "",
        lambda results, failed, directory: [collector.section(results["collector"])],
    ),
    PageSpec(
        "benchmarks-user-sessions.md",
        "Benchmark: what the index of users' sessions adds to a request",
        ("user_sessions",),
        "",
        lambda results, failed, directory: [user_sessions.section(results["user_sessions"])],
    ),
    PageSpec(
        "benchmarks-moving.md",
        "Benchmark: moving in from Django's db engine without logging anyone out",
        ("moving",),
        "",
        lambda results, failed, directory: [moving.section(results["moving"])],
    ),
    PageSpec(
        "benchmarks-site.md",
        "Benchmark: the whole site under a load generator, on every engine",
        ("site",),
        "Re-run the command on your own hardware: absolute figures depend on the machine, and "
        "here the load generator shares it with the servers; the ratios much less.",
        _site,
    ),
    PageSpec(
        "benchmarks-asgi.md",
        "Benchmark: an async view under uvicorn, native asyncio against the thread hop",
        ("asgi",),
        "Re-run the command on your own hardware: absolute figures depend on the machine, and "
        "here the load generator shares it with the servers; the ratios much less.",
        lambda results, failed, directory: [
            "## Requests per second and p99 by setup and concurrency\n",
            asgi.section(results["asgi"]),
        ],
    ),
    PageSpec(
        "benchmarks-pooling.md",
        "Benchmark: memory pools and object pooling on django-memopt's hot paths",
        ("pooling",),
        "",
        lambda results, failed, directory: [pooling.section(results["pooling"])],
    ),
)


def write(
    spec: PageSpec,
    results: Results,
    failed: dict[str, str],
    spans: dict[str, Span],
    run: Run,
    directory: str,
) -> str:
    """Render ``spec`` into ``directory``; the file written."""
    intro = overview.intro(failed) if spec.file == "benchmarks.md" else spec.intro
    ran = [name for name in spec.scenarios if name in spans]
    extra = spec.machine(results)
    text = report.page(
        spec.title,
        intro,
        ran,
        run,
        spec.body(results, failed, directory),
        [spans[name] for name in ran],
        extra,
    )
    path = os.path.join(directory, spec.file)
    with open(path, "w", encoding="utf-8") as page:
        page.write(text)
    return path
