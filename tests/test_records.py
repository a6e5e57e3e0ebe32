"""The session record container, ``django_memopt.records``, on its own: bytes in, bytes out."""

from __future__ import annotations

import random
import subprocess
import sys
import zlib
from collections.abc import Callable
from typing import Any
from unittest import mock

import msgpack
import pytest
import zstandard

from django_memopt import compression, records
from django_memopt.records import (
    BLOCK_COMPRESS_FROM,
    BLOCK_MAX,
    HEADER,
    HEADER_SIZE,
    HOT_FIELD_MAX,
    LAYER_SHARE,
    MAX_LAYERS,
    SMALL_FIELD_MAX,
)

DEADLINE = 1_900_000_000_123  # epoch ms
SEALED = {"a": b"\x01sealed-a", "b": b"\x01sealed-b", "ключ": b"\x01" + bytes(300)}
# Small fields that compress well together (as the text of a session's fields does).
WORDY = {
    f"field{n}": b"\x20" + bytes(range(n, n + 8)) + b"checkout basket coupon %d " % n * 6
    for n in range(12)
}
LARGE = b"\x22" + random.Random(1).randbytes(3000)


def reported() -> tuple[list[tuple[Any, Any]], Callable[[Any, Any], None]]:
    """A list, and an ``on_bad_entry`` that appends each entry it is told of to it."""
    entries: list[tuple[Any, Any]] = []
    return entries, lambda name, stored: entries.append((name, stored))


def body(record: bytes) -> list[Any]:
    """A format-2 record's body, as msgpack gives it back (the block still compressed)."""
    items: list[Any] = msgpack.unpackb(record[HEADER_SIZE:])
    return items


def block_of(record: bytes) -> tuple[int, dict[str, bytes]]:
    """A format-2 record's block: how it is stored, and the fields it holds."""
    names, block = body(record)[1:3]
    if not block:
        return compression.PLAIN, {}
    values = msgpack.unpackb(compression.decompress(block[0], block[1:], BLOCK_MAX))
    return block[0], dict(zip(names, values, strict=True))


def read(record: bytes | memoryview, on_bad_entry: records.BadEntry = records._ignore) -> Any:
    """The sealed bytes of a record's fields, the block opened; None if it is unreadable."""
    found = records.fields(record, on_bad_entry)
    if found is None:
        return None
    result = {}
    for name, sealed in found.items():
        if isinstance(sealed, records.Block):
            sealed = sealed.sealed(name)
        if sealed is not None:
            result[name] = sealed
    return result


def record_of(
    *layers: Any, names: Any = (), block: bytes | None = None, appended: int = 0
) -> bytes:
    """A format-2 record of ``layers`` as given, well-formed or not; the block holds
    nothing unless given (method byte first), for ``names``."""
    items = [appended, list(names), b"" if block is None else block, *layers]
    return HEADER.pack(records.FORMAT, DEADLINE) + msgpack.packb(items)


def plain_block(values: list[Any]) -> bytes:
    return bytes((compression.PLAIN,)) + msgpack.packb(values)


def in_block(fields: dict[str, bytes]) -> dict[str, bytes]:
    """The fields of ``fields`` that go into a block: neither hot nor large."""
    return {n: v for n, v in fields.items() if HOT_FIELD_MAX < len(v) <= SMALL_FIELD_MAX}


def v1_record(*layers: dict[Any, Any]) -> bytes:
    """A record of format 1, as the previous release's ``records.pack`` and
    ``records.with_layer`` wrote it: the header, then the layers."""
    return HEADER.pack(1, DEADLINE) + msgpack.packb(list(layers))


def test_imports_nothing_from_django() -> None:
    code = (
        "import sys, django_memopt.records; "
        "loaded = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- round trips -----------------------------------------------------------------------------

FIELD_SETS: dict[str, dict[str, bytes]] = {
    "empty": {},
    "small fields": SEALED,
    "small fields that compress": WORDY,
    "a large field": {"cart": LARGE},
    "all kinds": {**SEALED, **WORDY, "cart": LARGE},
}


@pytest.mark.parametrize("fields", FIELD_SETS.values(), ids=FIELD_SETS)
def test_a_packed_record_reads_back_its_deadline_and_fields(fields: dict[str, bytes]) -> None:
    record = records.pack(DEADLINE, fields)
    assert record[0] == records.FORMAT == 2
    for view in (record, memoryview(record)):
        assert records.deadline(view) == DEADLINE
        assert read(view) == fields
    appended, _names, _block, first, *later = body(record)
    assert appended == 0
    assert later == []
    _method, small = block_of(record)
    assert small | first == fields
    assert not set(small) & set(first)


def test_small_fields_go_into_the_block_compressed_when_that_pays() -> None:
    record = records.pack(DEADLINE, {**WORDY, **SEALED, "cart": LARGE})
    method, small = block_of(record)
    assert method == compression.ZSTD
    assert small == WORDY | {"ключ": SEALED["ключ"]}
    # The small fields most requests read stay out of the block, and so do large ones.
    assert body(record)[3] == {"a": SEALED["a"], "b": SEALED["b"], "cart": LARGE}
    whole = len(msgpack.packb(WORDY | SEALED | {"cart": LARGE}))
    assert len(record) < whole - len(msgpack.packb(WORDY)) // 2

    # Under BLOCK_COMPRESS_FROM bytes, or compressing poorly: no block (none to
    # decompress), every field in the first layer.
    short = {"a": SEALED["a"], "t": b"\x20" + bytes(70)}
    assert len(msgpack.packb([short["t"]])) < BLOCK_COMPRESS_FROM
    noise = {f"n{n}": random.Random(n).randbytes(900) for n in range(4)}
    for fields in (short, noise, {**noise, "cart": LARGE}):
        record = records.pack(DEADLINE, fields)
        assert body(record)[1:] == [[], b"", fields]


def test_fields_the_codec_compressed_stay_out_of_the_block() -> None:
    compressed = {"c1": b"\x22" + b"z" * 40, "c2": b"\x21" + b"y" * 600}
    record = records.pack(DEADLINE, {**WORDY, **compressed}, lambda sealed: sealed[0] != 0x20)
    assert block_of(record)[1] == WORDY
    assert body(record)[3] == compressed
    assert read(record) == {**WORDY, **compressed}


def test_small_fields_beyond_the_block_limit_go_into_the_first_layer() -> None:
    many = {f"f{n:04d}": b"\x20" + n.to_bytes(4, "big") * 250 for n in range(100)}
    assert all(len(sealed) <= SMALL_FIELD_MAX for sealed in many.values())
    record = records.pack(DEADLINE, many)
    _method, small = block_of(record)
    first = body(record)[3]
    assert len(msgpack.packb(list(small.values()))) <= BLOCK_MAX
    assert 50 < len(small) < len(many)
    assert small | first == many
    assert not set(small) & set(first)
    assert read(record) == many


def test_with_deadline_moves_the_deadline_alone() -> None:
    record = records.with_layer(records.pack(DEADLINE, WORDY), DEADLINE, {"c": b"c"}, ["a"])
    assert record is not None
    moved = records.with_deadline(memoryview(record), DEADLINE + 5)
    assert records.deadline(moved) == DEADLINE + 5
    assert moved[HEADER_SIZE:] == record[HEADER_SIZE:]
    assert moved[0] == record[0]


# -- layers ----------------------------------------------------------------------------------


def test_a_layer_is_appended_without_decompressing_the_block() -> None:
    record = records.pack(DEADLINE, {**WORDY, **SEALED, "cart": LARGE})
    assert block_of(record)[0] == compression.ZSTD
    with (
        mock.patch.object(compression, "decompress", side_effect=AssertionError),
        mock.patch.object(compression, "compress_with", side_effect=AssertionError),
    ):
        layered = records.with_layer(record, DEADLINE + 1, {"a": b"new a", "c": b"c"}, ["b"])
    assert layered is not None
    assert layered.startswith(HEADER.pack(records.FORMAT, DEADLINE + 1))
    # The block and the first layer are copied as they are, byte for byte.
    assert record[HEADER_SIZE + 2 :] in layered
    appended, _names, _block, _first, layer = body(layered)
    assert layer == {"b": None, "a": b"new a", "c": b"c"}
    assert appended == len(msgpack.packb(layer))
    expected = {**WORDY, **SEALED, "cart": LARGE, "a": b"new a", "c": b"c"}
    del expected["b"]
    assert read(layered) == expected
    # A field deleted, then set again in a later layer, is back.
    again = records.with_layer(layered, DEADLINE, {"b": b"b again"}, [])
    assert again is not None
    assert read(again) == expected | {"b": b"b again"}


def test_past_max_layers_the_appended_layers_are_merged_into_one() -> None:
    record = records.pack(DEADLINE, {**WORDY, "cart": LARGE})
    for n in range(1, 3 * MAX_LAYERS):
        layered = records.with_layer(record, DEADLINE, {"visits": b"%d" % n}, ["field0"])
        assert layered is not None
        record = layered
        layers = len(body(record)) - 3
        assert 2 <= layers <= MAX_LAYERS
        assert read(record) == {
            **{name: sealed for name, sealed in WORDY.items() if name != "field0"},
            "cart": LARGE,
            "visits": b"%d" % n,
        }
    # The counter never cost a rewrite: the block is the one written first.
    assert body(record)[2] == body(records.pack(DEADLINE, {**WORDY, "cart": LARGE}))[2]
    assert body(record)[-1] == {"field0": None, "visits": b"%d" % (3 * MAX_LAYERS - 1)}


def test_layers_take_at_most_a_share_of_the_record_then_it_is_rewritten() -> None:
    record = records.pack(DEADLINE, WORDY)
    rest = len(record) - HEADER_SIZE - 2
    fitting = {"x": b"x" * (rest // LAYER_SHARE - 20)}
    layered = records.with_layer(record, DEADLINE, fitting, [])
    assert layered is not None
    too_many = {"y": b"y" * (rest // LAYER_SHARE)}
    assert records.with_layer(layered, DEADLINE, too_many, []) is None
    rewritten = records.updated(layered, DEADLINE, too_many, ["field1"])
    assert rewritten is not None
    assert len(body(rewritten)) == 4  # one layer again
    expected = {**WORDY, **fitting, **too_many}
    del expected["field1"]
    assert read(rewritten) == expected
    assert block_of(rewritten)[1] == in_block(expected)


def test_updates_read_as_a_dict_would_and_the_record_stays_bounded() -> None:
    rng = random.Random(13)
    names = [f"k{n}" for n in range(30)]
    model: dict[str, bytes] = {}
    record = records.pack(DEADLINE, model)
    for step in range(600):
        sets = {
            name: b"\x20" + rng.randbytes(8) + b"v%d " % step * rng.choice((1, 5, 40, 400))
            for name in rng.sample(names, rng.choice((1, 1, 1, 2, 5)))
        }
        # As in a save's delta, a name is either set or deleted.
        deletes = [
            name for name in rng.sample(names, rng.choice((0, 0, 0, 1))) if name not in sets
        ]
        updated = records.updated(record, DEADLINE + step, sets, deletes)
        assert updated is not None
        record = updated
        for name in deletes:
            model.pop(name, None)
        model.update(sets)
        assert records.deadline(record) == DEADLINE + step
        assert read(record) == model, step
        appended, *_ = body(record)
        rest = len(record) - len(msgpack.packb(appended)) - HEADER_SIZE - 1 - appended
        assert appended <= rest // LAYER_SHARE
        assert len(body(record)) - 3 <= MAX_LAYERS


# -- format 1 and other formats --------------------------------------------------------------


def test_a_format_1_record_is_read_and_rewritten_in_format_2_with_its_bytes_as_they_are() -> None:
    # What the previous release's records.pack(DEADLINE, SEALED) and then with_layer(...,
    # {"c": b"\x01sealed-c"}, ["b"]) wrote, byte for byte.
    old = bytes.fromhex(
        "01000001ba60d3387b9283a161c409017365616c65642d61a162c409017365616c65642d62a8d0bad0"
        "bbd18ed187c5012d01" + "00" * 300 + "82a162c0a163c409017365616c65642d63"
    )
    assert old == v1_record(dict(SEALED), {"b": None, "c": b"\x01sealed-c"})
    expected = {"a": SEALED["a"], "ключ": SEALED["ключ"], "c": b"\x01sealed-c"}
    assert records.deadline(old) == DEADLINE
    assert records.fields(old) == expected
    assert records.fields(memoryview(old)) == expected
    # A touch keeps its format; a save rewrites it, never appends to it.
    assert records.with_deadline(old, DEADLINE + 1)[:1] == b"\x01"
    assert records.with_layer(old, DEADLINE, {"d": b"d"}, []) is None
    new = records.updated(old, DEADLINE + 2, {"d": b"\x01sealed-d"}, ["a"])
    assert new is not None
    assert new[0] == records.FORMAT
    assert records.deadline(new) == DEADLINE + 2
    assert read(new) == {
        "ключ": SEALED["ключ"],
        "c": b"\x01sealed-c",
        "d": b"\x01sealed-d",
    }
    for sealed in read(new).values():  # carried over as they were stored
        assert sealed in old or sealed == b"\x01sealed-d"


def test_a_record_of_another_known_format_is_read_by_its_own_reader() -> None:
    """The seam a later format uses: its reader beside these. Its records keep being
    read, are moved by a touch as they are, and are rewritten in the current format by
    the next save (never appended to)."""

    def read_format_9(body: bytes | memoryview) -> tuple[list[Any], int] | None:
        return [msgpack.unpackb(bytes(body)[::-1])], 1

    payload = msgpack.packb({"a": b"from format 9"})[::-1]
    old = HEADER.pack(9, DEADLINE) + payload
    assert records.deadline(old) is None  # unknown to this release: damaged
    assert records.fields(old) is None
    with mock.patch.dict(records._LAYERS_READERS, {9: read_format_9}):
        assert records.deadline(old) == DEADLINE
        assert records.fields(old) == {"a": b"from format 9"}
        touched = records.with_deadline(old, DEADLINE + 1)
        assert touched == HEADER.pack(9, DEADLINE + 1) + payload
        assert records.with_layer(old, DEADLINE, {"b": b"b"}, []) is None
        new = records.updated(old, DEADLINE, {"b": b"b"}, [])
        assert new is not None and new[0] == records.FORMAT
        assert records.fields(new) == {"a": b"from format 9", "b": b"b"}


# -- damaged records -------------------------------------------------------------------------

GOOD = records.pack(DEADLINE, {**WORDY, **SEALED})
assert block_of(GOOD)[0] == compression.ZSTD
_NAMES, _ZSTD_BLOCK = body(GOOD)[1:3]
_BOMB = zstandard.ZstdCompressor(level=3).compress(bytes(100 * 1024 * 1024))[4:]
_deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
_ZLIB_BOMB = _deflater.compress(bytes(100 * 1024 * 1024)) + _deflater.flush()
DAMAGED: dict[str, bytes] = {
    "garbage body": GOOD[:HEADER_SIZE] + b"\xc1 not msgpack",
    "truncated body": GOOD[:-3],
    "body not an array": GOOD[:HEADER_SIZE] + msgpack.packb({"a": b"x"}),
    "no block": GOOD[:HEADER_SIZE] + msgpack.packb([0, _NAMES]),
    "no layer": GOOD[:HEADER_SIZE] + msgpack.packb([0, _NAMES, _ZSTD_BLOCK]),
    "names not an array": GOOD[:HEADER_SIZE] + msgpack.packb([0, {}, b"", {}]),
    "a name of the block not text": record_of({}, names=["a", 7], block=_ZSTD_BLOCK),
    "names without a block": record_of({}, names=["a"]),
    "a block without names": record_of({}, block=_ZSTD_BLOCK),
    "block not bytes": GOOD[:HEADER_SIZE] + msgpack.packb([0, ["a"], {}, {}]),
    "first layer not a map": record_of([1, 2, 3]),
    "later layer not a map": record_of({}, {"c": b"c"}, [b"x"]),
    "trailing bytes": GOOD + b"\x00",
    "a number as a name": record_of({}, {7: b"x"}),
    "no body": GOOD[:HEADER_SIZE],
}
DAMAGED_HEADERS: dict[str, bytes] = {
    "unknown format": b"\xde" * HEADER_SIZE + GOOD[HEADER_SIZE:],
    "format 0": b"\x00" + GOOD[1:],
    "truncated header": GOOD[:5],
    "empty": b"",
}
# Blocks that cannot be opened, each with the names of GOOD's block.
DAMAGED_BLOCKS: dict[str, bytes] = {
    "of an unknown method": b"\x07" + _ZSTD_BLOCK[1:],
    "damaged": _ZSTD_BLOCK[:-6] + bytes(6),
    "truncated": _ZSTD_BLOCK[:-6],
    "with bytes past its end": _ZSTD_BLOCK + b"\x00",
    "not an array": plain_block({"field0": b"x"}),  # type: ignore[arg-type]
    "of fewer values than names": plain_block([b"x"]),
    "not msgpack": b"\x00\xc1",
    "a zstd bomb": bytes((compression.ZSTD,)) + _BOMB,
    "a zlib bomb": bytes((compression.ZLIB,)) + _ZLIB_BOMB,
    "plain, over the limit": plain_block([bytes(BLOCK_MAX)] * len(_NAMES)),
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


@pytest.mark.parametrize("kind", DAMAGED_BLOCKS)
def test_the_fields_of_a_block_that_cannot_be_opened_are_missing_the_others_read(
    kind: str,
) -> None:
    block = DAMAGED_BLOCKS[kind]
    record = record_of({"a": SEALED["a"]}, {"c": b"c"}, names=_NAMES, block=block)
    found = records.fields(record)
    assert found is not None and set(found) == {*_NAMES, "a", "c"}
    assert read(record) == {"a": SEALED["a"], "c": b"c"}
    # A rewrite drops them, and says so for each.
    entries, on_bad_entry = reported()
    assert records.merged(record, {"field1": b"new"}, [], on_bad_entry) == {
        "a": SEALED["a"],
        "c": b"c",
        "field1": b"new",
    }
    assert [name for name, _ in entries] == [name for name in _NAMES if name != "field1"]
    assert all(isinstance(stored, records.Block) for _, stored in entries)


def test_a_good_block_is_opened_once_and_only_when_asked() -> None:
    found = records.fields(GOOD)
    assert found is not None
    with mock.patch.object(compression, "decompress", wraps=compression.decompress) as opened:
        assert found["a"] == SEALED["a"]  # out of the block: nothing decompressed
        assert opened.call_count == 0
        block = found["field3"]
        assert isinstance(block, records.Block)
        assert block.sealed("field3") == WORDY["field3"]
        assert block.sealed("field4") == WORDY["field4"]
        assert block.sealed("no such field") is None
        assert opened.call_count == 1


def test_a_decompression_bomb_is_refused_before_it_is_inflated() -> None:
    # The zstd frame declares 100 MiB: refused on that claim, nothing allocated.
    bomb = record_of({}, names=_NAMES, block=DAMAGED_BLOCKS["a zstd bomb"])
    with mock.patch.object(
        zstandard.ZstdDecompressor, "decompress", side_effect=AssertionError("inflated")
    ):
        assert read(bomb) == {}
    assert len(DAMAGED_BLOCKS["a zlib bomb"]) < 200_000
    assert read(record_of({}, names=_NAMES, block=DAMAGED_BLOCKS["a zlib bomb"])) == {}


@pytest.mark.parametrize("kind", DAMAGED_HEADERS)
def test_a_damaged_header_reads_as_no_record(kind: str) -> None:
    record = DAMAGED_HEADERS[kind]
    assert records.deadline(record) is None
    assert records.fields(record) is None
    assert records.with_layer(record, DEADLINE, {"a": b"a"}, []) is None
    assert records.updated(record, DEADLINE, {"a": b"a"}, []) is None
    assert records.deadline(None) is None


@pytest.mark.parametrize(
    "kind",
    ["garbage body", "body not an array", "no block", "names not an array", "no body"],
)
def test_a_layer_is_added_only_to_a_count_and_names(kind: str) -> None:
    record = DAMAGED[kind]
    assert records.with_layer(record, DEADLINE, {"a": b"a"}, []) is None
    assert records.updated(record, DEADLINE, {"a": b"a"}, []) is None


def test_damage_past_the_first_bytes_is_left_to_the_next_read() -> None:
    # Adding a layer checks only the container's first bytes (reading it all would cost
    # what a layer saves): a record damaged further in stays unreadable, as it was.
    for kind in ("truncated body", "a name of the block not text"):
        appended = records.with_layer(DAMAGED[kind], DEADLINE, {"c": b"c"}, [])
        assert appended is not None, kind
        assert records.fields(appended) is None, kind


def test_damaged_appended_layers_are_left_to_a_rewrite_which_finds_them() -> None:
    record = records.pack(DEADLINE, {**WORDY, "cart": LARGE})
    for n in range(MAX_LAYERS - 1):
        appended = records.with_layer(record, DEADLINE, {"v": b"%d" % n}, [])
        assert appended is not None
        record = appended
    assert len(body(record)) == 3 + MAX_LAYERS  # the next layer merges the appended ones
    damaged = record[:-2]  # the last layer cut short
    assert records.with_layer(damaged, DEADLINE, {"v": b"x"}, []) is None
    assert records.updated(damaged, DEADLINE, {"v": b"x"}, []) is None


# -- entries no save writes ------------------------------------------------------------------


def test_entries_of_the_wrong_type_are_left_out_and_reported() -> None:
    record = record_of(
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


def test_the_maps_a_rewrite_wrote_are_taken_as_they_are_and_a_rewrite_drops_bad_values() -> None:
    # Looking at every value of the first layer would cost every load: the codec refuses
    # a value that is not bytes, and a rewrite drops it. The block's values are looked at
    # when it is opened: one that is not bytes is missing.
    record = record_of(
        {"f": b"f", "n": 5},
        {"c": b"c"},
        names=["a", "m"],
        block=plain_block([SEALED["a"], ["x"]]),
    )
    entries, on_bad_entry = reported()
    assert read(record, on_bad_entry) == {"a": SEALED["a"], "f": b"f", "n": 5, "c": b"c"}
    assert entries == []
    rewritten = records.updated(record, DEADLINE, {"d": b"d"}, ["c"], on_bad_entry)
    assert rewritten is not None
    assert read(rewritten) == {"a": SEALED["a"], "f": b"f", "d": b"d"}
    assert [name for name, _ in entries] == ["m", "n"]


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
