"""Scenario ``pooling``: do "memory pool" and "object pooling" help on django-memopt's own
hot paths?

The ideas come from the list the app grew out of (a memory pool for "40% faster
allocation", object pooling for "30% faster memory ops"). Each row times what a request
does today against the same work with the idea applied, on the objects the app really
makes: a session's field mapping, a field's msgpack payload, an LMDB record, the small
result objects.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import timing
from benchmarks.harness.report import render, table

TODAY, POOLED = "today", "pooled"


@dataclass
class Row:
    idea: str  # "memory pool" or "object pooling"
    what: str
    today_ns: float
    pooled_ns: float


@dataclass
class Result:
    number: int  # calls per timeit loop
    repeat: int  # loops per variant
    rows: list[Row]


def _variants() -> list[tuple[str, str, Callable[[], Any], Callable[[], Any]]]:
    """(idea, what, today's way, the pooled way) for each row."""
    import msgpack

    from django_memopt import records
    from django_memopt.backends.base import StoredSession
    from django_memopt.codec import FieldCodec, derive_key
    from django_memopt.fields import Delta, SessionFields

    codec = FieldCodec([derive_key("benchmark")])
    value = {"items": [{"sku": f"sku-{n}", "qty": n, "price": "9.99"} for n in range(5)], "n": 3}
    stored = {
        f"key{n}": codec.seal("k" * 48, f"key{n}", codec.pack(f"key{n}", value)) for n in range(20)
    }
    pooled_fields = SessionFields(codec, "k" * 48, stored)
    packer = msgpack.Packer(strict_types=True, autoreset=True)
    stored_session, delta = StoredSession(stored, 0.0), Delta({"visits": b"x"})
    scratch = bytearray()
    free: list[list[Any]] = [[] for _ in range(64)]

    def new_small() -> None:
        StoredSession(stored, 1.0)
        Delta({"visits": b"x"})

    def reused_small() -> None:
        stored_session.fields, stored_session.expires_at = stored, 1.0
        delta.sets, delta.deletes, delta.replace = {"visits": b"x"}, frozenset(), False

    def scratch_record() -> None:
        scratch.clear()
        scratch.extend(records.HEADER.pack(records.FORMAT, 1_900_000_000_000))
        scratch.extend(packer.pack([stored]))
        bytes(scratch)  # LMDB's put() takes a bytes-like; it copies into the map anyway

    def pooled_list() -> None:
        items = free.pop()
        items.extend((1, 2, 3))
        items.clear()
        free.append(items)

    return [
        (
            "object pooling",
            "`SessionFields` of 20 stored fields: a new one per request, or one re-initialised",
            lambda: SessionFields(codec, "k" * 48, stored),
            lambda: pooled_fields.__init__(codec, "k" * 48, stored),
        ),  # type: ignore[misc]
        (
            "object pooling",
            "a field's msgpack payload: `packb()` (a new Packer each time), or one Packer reused",
            lambda: msgpack.packb(value, strict_types=True),
            lambda: packer.pack(value),
        ),
        (
            "object pooling",
            "a load's `StoredSession` and a save's `Delta`: new ones, or pooled ones reset",
            new_small,
            reused_small,
        ),
        (
            "memory pool",
            "an LMDB record of 20 fields: new bytes, or built in a reused scratch buffer",
            lambda: records.pack(1_900_000_000_000, stored),
            scratch_record,
        ),
        (
            "memory pool",
            "a small list per operation: allocated by CPython (pymalloc), or from a free list",
            lambda: [1, 2, 3],
            pooled_list,
        ),
    ]


def measure(quick: bool) -> Result:
    number, repeat = (2000, 5) if quick else (20000, 15)
    variants = _variants()
    arms = {
        (n, way): (lambda call=call: timing.ns_per_call(call, number))
        for n, (_idea, _what, today, pooled) in enumerate(variants)
        for way, call in ((TODAY, today), (POOLED, pooled))
    }
    found = timing.interleaved_calls(arms, repeat, random.Random(1))
    rows = [
        Row(idea, what, found[(n, TODAY)], found[(n, POOLED)])
        for n, (idea, what, _today, _pooled) in enumerate(variants)
    ]
    return Result(number, repeat, rows)


def section(found: Result) -> str:
    rows = [
        [row.idea, row.what, f"{row.today_ns:,.0f}", f"{row.pooled_ns:,.0f}"]
        + [f"{row.pooled_ns / row.today_ns - 1:+.0%}"]
        for row in found.rows
    ]
    header = ["idea", "what", "today ns", "pooled ns", "change"]
    table_text = table(header, rows, "llrrr")
    return render("pooling", repeat=found.repeat, number=found.number, table=table_text)
