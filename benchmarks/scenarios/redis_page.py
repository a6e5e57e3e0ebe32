"""The Redis engine's page: its latency, bytes and lost-update figures from the
``engines`` scenario, its memory per session from the ``memory`` scenario."""

from __future__ import annotations

from benchmarks.harness.engines import (
    CACHED_DB,
    FLOOR,
    MEMOPT_REDIS,
    REDIS_CACHE,
    REDIS_SESSIONS,
)
from benchmarks.harness.report import met, render, us
from benchmarks.harness.workload import COLD, OPERATIONS, SIZES
from benchmarks.scenarios import engines_page, memory
from benchmarks.scenarios.engines import Result as Engines

REDIS_PAGE = [MEMOPT_REDIS, REDIS_CACHE, CACHED_DB, REDIS_SESSIONS, FLOOR]


def _verdicts(run: Engines) -> str:
    def at(op: str, size: str, name: str) -> float:
        return run.ns(op, size, name)

    def versus(op: str, other: str, label: str) -> str:
        return (
            f"`{MEMOPT_REDIS}` took {us(at(op, 'medium', MEMOPT_REDIS))} µs, {label} "
            f"{us(at(op, 'medium', other))} µs"
        )

    cache_x = {op: run.ratio(op, "medium", REDIS_CACHE, MEMOPT_REDIS) for op in ("typical", COLD)}
    floor_x = {op: run.ratio(op, "medium", MEMOPT_REDIS, FLOOR) for op in ("typical", COLD)}
    large = {
        op: run.ratio(op, "large", REDIS_CACHE, MEMOPT_REDIS)
        for op in ("typical", "read-only", COLD)
    }
    slower = [
        f"{op} {size} ({run.ratio(op, size, MEMOPT_REDIS, REDIS_CACHE):.2f}x `cache`'s time)"
        for op in OPERATIONS
        for size in SIZES
        if at(op, size, MEMOPT_REDIS) > at(op, size, REDIS_CACHE)
    ]
    memopt = run.bytes_of(MEMOPT_REDIS)
    share = memopt.written / (memopt.rewrite or 1)
    lost, errors, runs = engines_page.lost_total(run, [MEMOPT_REDIS])
    others = [n for n in REDIS_PAGE if n not in (MEMOPT_REDIS, FLOOR) and n in run.names]
    gap = {op: us(at(op, "medium", MEMOPT_REDIS) - at(op, "medium", FLOOR)) for op in floor_x}
    parts = [
        f"- Typical request on a medium session, `{MEMOPT_REDIS}` at least 2x faster than "
        f"Django's `cache` engine on django-redis: {met(cache_x['typical'] >= 2)}: "
        f"{versus('typical', REDIS_CACHE, '`cache`')} ({cache_x['typical']:.2f}x); cold, "
        f"{met(cache_x[COLD] >= 2)}: {versus(COLD, REDIS_CACHE, '`cache`')} "
        f"({cache_x[COLD]:.2f}x). `cache` makes three round trips (`GET` to load, `GET` again "
        "before saving, `SET`) where the floor makes two, and the floor itself was "
        f"{run.ratio('typical', 'medium', REDIS_CACHE, FLOOR):.2f}x faster than `cache`: while "
        "the round trip is most of the time, 2x asks for an engine that costs next to nothing "
        "above its round trips.",
        f"- Typical request on a medium session, `{MEMOPT_REDIS}` within 1.5x of the "
        f"two-round-trip floor: {met(floor_x['typical'] <= 1.5)}: "
        f"{versus('typical', FLOOR, 'the floor')} ({floor_x['typical']:.2f}x; {gap['typical']} "
        f"µs of session work above the two round trips); cold, "
        f"{met(floor_x[COLD] <= 1.5)}: {versus(COLD, FLOOR, 'the floor')} "
        f"({floor_x[COLD]:.2f}x; {gap[COLD]} µs).",
        f"- Large session, `{MEMOPT_REDIS}` at least 5x faster than Django's `cache` engine: "
        f"{met(large['typical'] >= 5)} for the typical request: `{MEMOPT_REDIS}` took "
        f"{us(at('typical', 'large', MEMOPT_REDIS))} µs, `cache` "
        f"{us(at('typical', 'large', REDIS_CACHE))} µs ({large['typical']:.2f}x); read-only "
        f"{large['read-only']:.2f}x, typical cold {large[COLD]:.2f}x. The floor, which like "
        f"`{MEMOPT_REDIS}` fetches the whole session, took "
        f"{us(at('typical', 'large', FLOOR))} µs: "
        f"{run.ratio('typical', 'large', REDIS_CACHE, FLOOR):.2f}x faster than `cache`.",
    ]
    if slower:
        parts.append(
            f"- Where `{MEMOPT_REDIS}` was slower than `cache`: " + ", ".join(slower) + ". A "
            "request that saves nothing (read-only, miss) is one round trip for both engines, so "
            "the code around it decides; a create seals every field with its own keyed tag, "
            "which costs more than one pickle of the whole session."
        )
    parts += [
        "- Bytes per save with one small key changed in a medium session at most 10% of a "
        f"whole-session rewrite: {met(share <= 0.10)}: the save sent "
        f"{memopt.written:,.0f} B against {memopt.rewrite or 0:,.0f} B for the rewrite "
        f"({100 * share:.1f}%), and replaced {memopt.stored:,.0f} B in Redis. Django's engines "
        "send the whole session every time ("
        + ", ".join(f"`{n}` {run.bytes_of(n).written:,.0f} B" for n in others)
        + ").",
        f"- Zero lost updates for `{MEMOPT_REDIS}`: {met(lost == 0)}: {lost} final "
        f"values lost and {errors} errors over {runs} runs. The other engines lost: "
        f"{engines_page.lost_by(run, others)}.",
    ]
    if run.skipped is not None:
        parts.append(f"- `{REDIS_SESSIONS}` could not be measured: {run.skipped}.")
    return "\n".join(parts) + "\n"


def redis_body(run: Engines, found: memory.Result | None) -> list[str]:
    columns = ["sent", "rewrite", "share", "value", "load"]
    return [
        render(
            "redis-page",
            request=render("request"),
            engines=engines_page.engine_list(run, REDIS_PAGE),
            placement=run.placement,
            method=engines_page.method(run, "Django's encoding (redis-sessions, cached_db's row)"),
            latency=engines_page.latency(run, REDIS_PAGE, [MEMOPT_REDIS]),
            bytes_samples=run.profile.bytes_samples,
            bytes=engines_page.save_bytes(run, REDIS_PAGE, columns),
            memory=memory.redis_section(found) if found is not None else "",
            lost=engines_page.lost_updates(run, REDIS_PAGE),
            verdicts=_verdicts(run),
        )
    ]
