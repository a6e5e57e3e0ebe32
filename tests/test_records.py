"""The session record container, ``django_memopt.records``, on its own: bytes in, bytes out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any
from unittest import mock

import msgpack
import pytest

from django_memopt import records
from django_memopt.records import HEADER, HEADER_SIZE, MAX_LAYERS

DEADLINE = 1_900_000_000_123  # epoch ms
SEALED = {"a": b"\x01sealed-a", "b": b"\x01sealed-b", "ключ": b"\x01" + bytes(300)}


def reported() -> tuple[list[tuple[Any, Any]], Callable[[Any, Any], None]]:
    """A list, and an ``on_bad_entry`` that appends each entry it is told of to it."""
    entries: list[tuple[Any, Any]] = []
    return entries, lambda name, stored: entries.append((name, stored))


def layered(*layers: dict[Any, Any], record_format: int = records.FORMAT) -> bytes:
    """A record holding ``layers`` as given, well-formed or not."""
    return HEADER.pack(record_format, DEADLINE) + msgpack.packb(list(layers))


def layer_count(record: bytes) -> int:
    return len(msgpack.unpackb(record[HEADER_SIZE:]))


def test_imports_nothing_from_django() -> None:
    code = (
        "import sys, django_memopt.records; "
        "loaded = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [SEALED, {}], ids=["fields", "empty"])
def test_a_packed_record_reads_back_its_deadline_and_fields(fields: dict[str, bytes]) -> None:
    record = records.pack(DEADLINE, fields)
    assert record[0] == records.FORMAT
    for view in (record, memoryview(record)):
        assert records.deadline(view) == DEADLINE
        assert records.fields(view) == fields
    assert layer_count(record) == 1


def test_with_deadline_moves_the_deadline_alone() -> None:
    record = records.with_layer(records.pack(DEADLINE, SEALED), DEADLINE, {"c": b"c"}, ["a"])
    assert record is not None
    moved = records.with_deadline(memoryview(record), DEADLINE + 5)
    assert records.deadline(moved) == DEADLINE + 5
    assert moved[HEADER_SIZE:] == record[HEADER_SIZE:]
    assert moved[0] == record[0]


# -- layers ----------------------------------------------------------------------------------


def test_a_layer_applies_sets_and_deletes_over_the_stored_fields() -> None:
    record = records.pack(DEADLINE, SEALED)
    layered_record = records.with_layer(record, DEADLINE + 1, {"a": b"new a", "c": b"c"}, ["b"])
    assert layered_record is not None
    assert layered_record.startswith(HEADER.pack(records.FORMAT, DEADLINE + 1))
    # The stored layer is copied as it is, byte for byte, and the delta follows it.
    assert record[HEADER_SIZE + 1 :] in layered_record
    assert layer_count(layered_record) == 2
    assert records.fields(layered_record) == {"a": b"new a", "ключ": SEALED["ключ"], "c": b"c"}
    # A field deleted, then set again in a later layer, is back.
    again = records.with_layer(layered_record, DEADLINE, {"b": b"b again"}, [])
    assert again is not None
    assert records.fields(again) == records.fields(layered_record) | {"b": b"b again"}


def test_past_max_layers_the_record_is_merged_into_one() -> None:
    record = records.pack(DEADLINE, SEALED)
    expected = dict(SEALED)
    for n in range(1, MAX_LAYERS):
        appended = records.with_layer(record, DEADLINE, {f"n{n}": b"%d" % n}, ["a"])
        assert appended is not None
        record = appended
        expected[f"n{n}"] = b"%d" % n
        expected.pop("a", None)
        assert layer_count(record) == n + 1
    assert records.fields(record) == expected
    assert records.with_layer(record, DEADLINE, {"last": b"x"}, []) is None
    merged = records.merged(record, {"last": b"x"}, ["b"])
    assert merged == {name: sealed for name, sealed in expected.items() if name != "b"} | {
        "last": b"x"
    }
    rewritten = records.pack(DEADLINE, merged)
    assert layer_count(rewritten) == 1
    assert records.fields(rewritten) == merged


# -- format versions -------------------------------------------------------------------------


def test_a_record_of_another_known_format_is_read_by_its_own_reader() -> None:
    """The seam a later format uses: its reader beside format 1's. Its records keep being
    read, are moved by a touch as they are, and are rewritten in the current format by
    the next save (never appended to)."""

    def read_format_2(body: bytes | memoryview) -> list[Any] | None:
        return [msgpack.unpackb(bytes(body)[::-1])]

    body = msgpack.packb({"a": b"from format 2"})[::-1]
    old = HEADER.pack(2, DEADLINE) + body
    assert records.deadline(old) is None  # unknown to this release: damaged
    assert records.fields(old) is None
    with mock.patch.dict(records._LAYERS_READERS, {2: read_format_2}):
        assert records.deadline(old) == DEADLINE
        assert records.fields(old) == {"a": b"from format 2"}
        touched = records.with_deadline(old, DEADLINE + 1)
        assert touched == HEADER.pack(2, DEADLINE + 1) + body
        assert records.with_layer(old, DEADLINE, {"b": b"b"}, []) is None
        merged = records.merged(old, {"b": b"b"}, [])
        assert merged == {"a": b"from format 2", "b": b"b"}
        assert records.pack(DEADLINE, merged)[0] == records.FORMAT


# -- damaged records -------------------------------------------------------------------------

GOOD = records.pack(DEADLINE, SEALED)
DAMAGED: dict[str, bytes] = {
    "garbage body": GOOD[:HEADER_SIZE] + b"\xc1 not msgpack",
    "truncated body": GOOD[:-3],
    "body not an array": GOOD[:HEADER_SIZE] + msgpack.packb({"a": b"x"}),
    "no layer": GOOD[:HEADER_SIZE] + msgpack.packb([]),
    "first layer not a map": GOOD[:HEADER_SIZE] + msgpack.packb([[1, 2, 3]]),
    "later layer not a map": layered(SEALED, {"c": b"c"}, [b"x"]),
    "trailing bytes": GOOD + b"\x00",
    "a number as a name": layered(SEALED, {7: b"x"}),
    "no body": GOOD[:HEADER_SIZE],
}
DAMAGED_HEADERS: dict[str, bytes] = {
    "unknown format": b"\xde" * HEADER_SIZE + GOOD[HEADER_SIZE:],
    "format 0": b"\x00" + GOOD[1:],
    "truncated header": GOOD[:5],
    "empty": b"",
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_body_reads_as_absent_but_keeps_its_deadline(kind: str) -> None:
    record = DAMAGED[kind]
    entries, on_bad_entry = reported()
    assert records.deadline(record) == DEADLINE  # a sweep still finds it
    assert records.fields(record, on_bad_entry) is None
    assert records.fields(memoryview(record)) is None
    assert records.merged(record, {"a": b"a"}, []) is None
    assert entries == []


@pytest.mark.parametrize("kind", DAMAGED_HEADERS)
def test_a_damaged_header_reads_as_no_record(kind: str) -> None:
    record = DAMAGED_HEADERS[kind]
    assert records.deadline(record) is None
    assert records.fields(record) is None
    assert records.with_layer(record, DEADLINE, {"a": b"a"}, []) is None
    assert records.deadline(None) is None


@pytest.mark.parametrize(
    "kind", ["garbage body", "body not an array", "no layer", "no body", "unknown format"]
)
def test_a_layer_is_appended_only_to_an_array_of_maps(kind: str) -> None:
    record = {**DAMAGED, **DAMAGED_HEADERS}[kind]
    assert records.with_layer(record, DEADLINE, {"a": b"a"}, []) is None


def test_damage_past_the_first_bytes_is_left_to_the_next_read() -> None:
    # Appending checks only the container's first bytes (reading it all would cost what a
    # layer saves): a record damaged further in stays unreadable, as it was.
    appended = records.with_layer(DAMAGED["truncated body"], DEADLINE, {"c": b"c"}, [])
    assert appended is not None
    assert records.fields(appended) is None


# -- entries no save writes ------------------------------------------------------------------


def test_entries_of_the_wrong_type_are_left_out_and_reported() -> None:
    record = layered(
        {"a": SEALED["a"], b"b": SEALED["b"], "c": b"c", "n": 5, "m": ["x"]},
        {b"late": b"x", "o": {"no": "bytes"}, "c": b"c2", "gone": None},
    )
    entries, on_bad_entry = reported()
    # A name that is not text in the first layer: its values are checked too.
    assert records.fields(record, on_bad_entry) == {"a": SEALED["a"], "c": b"c2"}
    assert entries == [
        (b"b", SEALED["b"]),
        ("n", 5),
        ("m", ["x"]),
        (b"late", b"x"),
        ("o", {"no": "bytes"}),
    ]
    assert records.fields(record) == {"a": SEALED["a"], "c": b"c2"}  # reported to nobody


def test_a_first_layer_of_text_names_is_taken_as_is_and_a_merge_drops_its_bad_values() -> None:
    # Looking at every value of the first layer would cost every load: the codec refuses
    # a value that is not bytes, and a rewrite drops it.
    record = layered({"a": SEALED["a"], "n": 5, "m": ["x"]}, {"c": b"c"})
    entries, on_bad_entry = reported()
    taken = records.fields(record, on_bad_entry)
    assert taken == {"a": SEALED["a"], "n": 5, "m": ["x"], "c": b"c"}
    assert entries == []
    merged = records.merged(record, {"d": b"d"}, ["c"], on_bad_entry)
    assert merged == {"a": SEALED["a"], "d": b"d"}
    assert entries == [("n", 5), ("m", ["x"])]
    rewritten = records.pack(DEADLINE, merged)
    assert msgpack.unpackb(rewritten[HEADER_SIZE:]) == [{"a": SEALED["a"], "d": b"d"}]


# -- the expiry index ------------------------------------------------------------------------


def test_index_buckets_round_deadlines_up_and_keys_sort_by_deadline() -> None:
    step = records.INDEX_GRANULARITY_MS
    assert records.index_bucket(5 * step) == 5 * step
    assert records.index_bucket(5 * step + 1) == 6 * step
    assert records.index_bucket(6 * step - 1) == 6 * step
    key = b"abcdefgh" * 4
    assert records.index_key(5 * step + 1, key) == (6 * step).to_bytes(8, "big") + key
    deadlines = [DEADLINE + n * 7 * step for n in (3, 0, 2, 1)]
    index = sorted(records.index_key(at, b"z" * 32) for at in deadlines)
    assert [int.from_bytes(entry[:8], "big") for entry in index] == sorted(
        records.index_bucket(at) for at in deadlines
    )
