"""Do "memory pool" and "object pooling" help on django-memopt's own hot paths? Measured.

Run from the repository root::

    python benchmarks/bench_pooling.py
    python benchmarks/bench_pooling.py --output docs/benchmarks-pooling.md

The ideas come from the list the app grew out of (a memory pool for "40% faster
allocation", object pooling for "30% faster memory ops"). Each row times what a request
does today against the same work with the idea applied, on the objects the app really
makes: a session's field mapping, a field's msgpack payload, an LMDB record, the small
result objects. Times are the median over repeats of ``timeit`` loops, in ns per operation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bench_engines as be  # noqa: E402
import msgpack  # noqa: E402

from django_memopt.backends import lmdb as lmdb_store  # noqa: E402
from django_memopt.backends.base import StoredSession  # noqa: E402
from django_memopt.codec import FieldCodec, derive_key  # noqa: E402
from django_memopt.fields import Delta, SessionFields  # noqa: E402

CODEC = FieldCodec([derive_key("benchmark")])
VALUE = {"items": [{"sku": f"sku-{n}", "qty": n, "price": "9.99"} for n in range(5)], "n": 3}
STORED = {
    f"key{n}": CODEC.seal("k" * 48, f"key{n}", CODEC.pack(f"key{n}", VALUE)) for n in range(20)
}


def median_ns(statement: Callable[[], Any], number: int, repeat: int) -> float:
    timer = timeit.Timer(statement)
    return statistics.median(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def rows(number: int, repeat: int) -> list[tuple[str, str, float, float]]:
    found = []

    # Object pooling: a session's field mapping, made per request, or re-initialised.
    pooled_fields = SessionFields(CODEC, "k" * 48, STORED)

    def new_fields() -> None:
        SessionFields(CODEC, "k" * 48, STORED)

    def reused_fields() -> None:
        pooled_fields.__init__(CODEC, "k" * 48, STORED)  # type: ignore[misc]

    found.append(
        (
            "object pooling",
            "`SessionFields` of 20 stored fields: a new one per request, or one re-initialised",
            median_ns(new_fields, number, repeat),
            median_ns(reused_fields, number, repeat),
        )
    )

    # Object pooling: msgpack's Packer, made by every packb(), or one kept and reused.
    packer = msgpack.Packer(strict_types=True, autoreset=True)
    found.append(
        (
            "object pooling",
            "a field's msgpack payload: `packb()` (a new Packer each time), or one Packer reused",
            median_ns(lambda: msgpack.packb(VALUE, strict_types=True), number, repeat),
            median_ns(lambda: packer.pack(VALUE), number, repeat),
        )
    )

    # Object pooling: the small result objects a load and a save make.
    stored_session = StoredSession(STORED, 0.0)
    delta = Delta({"visits": b"x"})

    def new_small() -> None:
        StoredSession(STORED, 1.0)
        Delta({"visits": b"x"})

    def reused_small() -> None:
        stored_session.fields, stored_session.expires_at = STORED, 1.0
        delta.sets, delta.deletes, delta.replace = {"visits": b"x"}, frozenset(), False

    found.append(
        (
            "object pooling",
            "a load's `StoredSession` and a save's `Delta`: new ones, or pooled ones reset",
            median_ns(new_small, number, repeat),
            median_ns(reused_small, number, repeat),
        )
    )

    # Memory pool: an LMDB record built as new bytes, or in a scratch buffer kept for reuse.
    scratch = bytearray()
    header = lmdb_store._HEADER

    def new_record() -> None:
        lmdb_store._record(1_900_000_000_000, STORED)

    def scratch_record() -> None:
        scratch.clear()
        scratch.extend(header.pack(lmdb_store.RECORD_FORMAT, 1_900_000_000_000))
        scratch.extend(packer.pack([STORED]))
        bytes(scratch)  # LMDB's put() takes a bytes-like; it copies into the map anyway

    found.append(
        (
            "memory pool",
            "an LMDB record of 20 fields: new bytes, or built in a reused scratch buffer",
            median_ns(new_record, number, repeat),
            median_ns(scratch_record, number, repeat),
        )
    )

    # Memory pool: CPython's own allocator already pools small objects; a free list of ours.
    free: list[list[Any]] = [[] for _ in range(64)]

    def new_list() -> None:
        items = [1, 2, 3]
        del items

    def pooled_list() -> None:
        items = free.pop()
        items.extend((1, 2, 3))
        items.clear()
        free.append(items)

    found.append(
        (
            "memory pool",
            "a small list per operation: allocated by CPython (pymalloc), or from a free list",
            median_ns(new_list, number, repeat),
            median_ns(pooled_list, number, repeat),
        )
    )
    return found


def table_lines(found: list[tuple[str, str, float, float]]) -> list[str]:
    """The Markdown table of ``rows()``' results, one line per row."""
    lines = ["| idea | what | today ns | pooled ns | change |", "|:---|:---|---:|---:|---:|"]
    for idea, what, today, pooled in found:
        lines.append(
            f"| {idea} | {what} | {today:,.0f} | {pooled:,.0f} | {pooled / today - 1:+.0%} |"
        )
    return lines


def render(found: list[tuple[str, str, float, float]], argv: list[str]) -> str:
    lines = [
        "# Benchmark: memory pools and object pooling on django-memopt's hot paths",
        "",
        "Generated by `benchmarks/bench_pooling.py`. Median ns per operation; *change*: the "
        "pooled time against today's (below 0%: the idea helps).",
        "",
        *table_lines(found),
        "",
        *be.machine_and_run(
            argv,
            "benchmarks/bench_pooling.py",
            f"msgpack {'.'.join(map(str, msgpack.version))}",
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", help="write the report to this Markdown file")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    found = rows(number=2000 if args.quick else 20000, repeat=5 if args.quick else 15)
    report = render(found, sys.argv[1:] if argv is None else argv)
    be.publish(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
