"""Scenario ``redis_memory``: what a session takes in Redis, and the Redis engine's page.

``MEMORY USAGE`` and ``OBJECT ENCODING`` of one session of each size in every engine that
keeps sessions in Redis, and the encoding django-memopt's sessions get under
``hash-max-listpack-value`` (``hash-max-ziplist-value`` before Redis 7). The Redis page
takes its latency, bytes and lost-update figures from the ``engines`` scenario.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness import servers, workload
from benchmarks.harness.engines import (
    CACHED_DB,
    FLOOR,
    MEMOPT_REDIS,
    REDIS_CACHE,
    REDIS_SESSIONS,
)
from benchmarks.harness.report import met, render, table, us
from benchmarks.harness.servers import text
from benchmarks.harness.workload import COLD, OPERATIONS, SIZES
from benchmarks.scenarios import engines_page
from benchmarks.scenarios.engines import Result as Engines

REDIS_PAGE = [MEMOPT_REDIS, REDIS_CACHE, CACHED_DB, REDIS_SESSIONS, FLOOR]
SETTING_VALUES = (64, 256)
_TOKEN = "3f9c2a7e5b1d4c6a8e0f2b4d6a8c0e1f"
# Sessions for the hash encoding table, beside the workload's sessions.
ENCODING_SESSIONS: dict[str, dict[str, Any]] = {
    "anonymous: 5 short values": {
        "visits": 3,
        "cart_id": _TOKEN,
        "checkout_step": 2,
        "currency": "EUR",
        "last_search": "leather jacket",
    },
    "logged in: the login trio and `visits`": {
        "_auth_user_id": "48213",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": "9b1e" * 16,
        "visits": 3,
    },
}


@dataclass
class Encoding:
    session: str
    largest: int  # the longest sealed field of the session (bytes)
    cells: dict[int, tuple[str, int]] = field(default_factory=dict)  # setting -> (encoding, B)
    cache_usage: int = 0  # the same session in Django's cache engine (a string)


@dataclass
class Result:
    memory: dict[str, dict[str, tuple[int, str]]]  # engine -> size -> (MEMORY USAGE, encoding)
    encodings: list[Encoding]
    setting: str  # the name this server gives hash-max-listpack-value
    entries: int  # its hash-max-*-entries
    hash_sealed: int  # bytes of a sealed 64-character _auth_user_hash
    allocator: str


def _saved(engine: registry.Engine, payload: dict[str, Any]) -> str:
    """A new session of ``payload`` in ``engine``: its session key."""
    session = engine.store(None)
    session.update(payload)
    session.save()
    return str(session.session_key)


def _usage(admin: Any, engine: registry.Engine, session_key: str) -> tuple[int, str]:
    """``MEMORY USAGE`` and ``OBJECT ENCODING`` of the session's key."""
    name = registry.redis_key(engine, session_key)
    return int(admin.memory_usage(name, samples=0)), text(admin.object("encoding", name))


def _setting(admin: Any) -> str:
    for name in ("hash-max-listpack-value", "hash-max-ziplist-value"):
        if admin.config_get(name):
            return name
    raise SystemExit("redis-server knows neither hash-max-listpack-value nor its older name")


def _encodings(
    engines: list[registry.Engine], payloads: workload.Payloads, admin: Any, setting: str
) -> list[Encoding]:
    """Each session written afresh under each value of ``setting`` (decided at write time)."""
    memopt, cache = (registry.named(engines, n) for n in (MEMOPT_REDIS, REDIS_CACHE))
    sessions = dict(ENCODING_SESSIONS)
    for size in SIZES:
        sessions[f"workload {size} session"] = workload.session_payload(payloads, size, 0)
    found = {label: Encoding(label, 0) for label in sessions}
    original = text(admin.config_get(setting)[setting])
    try:
        for value in SETTING_VALUES:
            admin.config_set(setting, value)
            for label, payload in sessions.items():
                key = _saved(memopt, payload)
                found[label].largest = max(map(len, registry.sealed_fields(memopt, key).values()))
                usage, encoding = _usage(admin, memopt, key)
                found[label].cells[value] = (encoding, usage)
                admin.delete(registry.redis_key(memopt, key))
                if not found[label].cache_usage:
                    other = _saved(cache, payload)
                    found[label].cache_usage = _usage(admin, cache, other)[0]
                    admin.delete(registry.redis_key(cache, other))
    finally:
        admin.config_set(setting, original)
    return list(found.values())


def measure(quick: bool) -> Result:
    from django_memopt.backends.base import field_codec

    base = tempfile.mkdtemp(prefix="memopt-bench-redis-")
    with servers.redis_server() as server:
        try:
            config = registry.make_config(base, server.url, server.port)
            names = [MEMOPT_REDIS, REDIS_CACHE, REDIS_SESSIONS]
            engines = registry.setup(config, names)
            admin = servers.client(server.url)
            payloads = workload.make_payloads()
            memory = {
                engine.name: {
                    size: _usage(
                        admin, engine, _saved(engine, workload.session_payload(payloads, size, 0))
                    )
                    for size in SIZES
                }
                for engine in engines
            }
            setting = _setting(admin)
            entries = setting.replace("-value", "-entries")
            return Result(
                memory,
                _encodings(engines, payloads, admin, setting),
                setting,
                int(text(admin.config_get(entries)[entries])),
                len(field_codec().encode("k" * 32, "_auth_user_hash", "0" * 64)),
                servers.versions(admin)["allocator"],
            )
        finally:
            shutil.rmtree(base, ignore_errors=True)


# -- the Redis page --------------------------------------------------------------------------


def memory_section(found: Result) -> str:
    rows = [
        [f"`{name}`", *(f"{usage:,} ({encoding})" for usage, encoding in sizes.values())]
        for name, sizes in found.memory.items()
    ]
    default = SETTING_VALUES[0]
    header = ["session", "largest sealed field (B)"]
    header += [f"at {v}" + " (default)" * (v == default) for v in SETTING_VALUES]
    encodings = [
        [enc.session, f"{enc.largest:,}"]
        + [f"{enc.cells[v][1]:,} B ({enc.cells[v][0]})" for v in SETTING_VALUES]
        + [f"{enc.cache_usage:,}"]
        for enc in found.encodings
    ]
    return render(
        "redis-memory",
        allocator=found.allocator,
        memory=table(["engine", *(f"{size} session" for size in SIZES)], rows),
        setting=found.setting,
        compact="listpack" if "listpack" in found.setting else "ziplist",
        default=default,
        entries=found.entries,
        hash_sealed=found.hash_sealed,
        encodings=table([*header, "same session in `cache` (B)"], encodings),
    )


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


def redis_body(run: Engines, found: Result | None) -> list[str]:
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
            memory=memory_section(found) if found is not None else "",
            lost=engines_page.lost_updates(run, REDIS_PAGE),
            verdicts=_verdicts(run),
        )
    ]
