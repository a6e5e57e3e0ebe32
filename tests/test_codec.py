"""The per-field codec on its own: no Django, no store."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgpack
import pytest

from django_memopt.codec import HEADER_SIZE, MAX_FIELD_SIZE, CorruptField, FieldCodec, derive_key

codec = FieldCodec.from_secrets(["secret"])


def test_imports_nothing_from_django() -> None:
    code = (
        "import sys, django_memopt.codec, django_memopt.fields; "
        "loaded = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_payload_is_deterministic_and_order_sensitive() -> None:
    value = {"b": [1, 2.5, "x"], "a": {"when": datetime(2026, 1, 1, tzinfo=UTC)}}
    assert codec.pack("f", value) == codec.pack("f", dict(value))
    assert codec.pack("f", {"a": 1, "b": 2}) != codec.pack("f", {"b": 2, "a": 1})


def test_tag_binds_session_key_field_and_payload() -> None:
    stored = codec.encode("sessionkey1", "field", "value")
    assert codec.decode("sessionkey1", "field", stored) == "value"
    for session_key, field in [("sessionkey2", "field"), ("sessionkey1", "other")]:
        with pytest.raises(CorruptField, match="tag"):
            codec.open(session_key, field, stored)
    # The framing is length-prefixed: shifting characters between key and name fails.
    with pytest.raises(CorruptField):
        codec.open("sessionkey", "1field", stored)
    for position in range(len(stored)):
        flipped = bytearray(stored)
        flipped[position] ^= 0x40
        with pytest.raises(CorruptField):
            codec.open("sessionkey1", "field", bytes(flipped))


def test_fallback_keys_open_but_do_not_seal() -> None:
    old = FieldCodec.from_secrets(["old"])
    rotated = FieldCodec.from_secrets(["new", "old"])
    stored = old.encode("k" * 32, "f", 1)
    assert rotated.decode("k" * 32, "f", stored) == 1
    resealed = rotated.seal("k" * 32, "f", codec.pack("f", 1))
    assert FieldCodec.from_secrets(["new"]).decode("k" * 32, "f", resealed) == 1
    with pytest.raises(CorruptField):
        old.open("k" * 32, "f", resealed)
    with pytest.raises(CorruptField):
        FieldCodec.from_secrets(["other"]).open("k" * 32, "f", stored)


def test_keys_are_derived_not_used_raw() -> None:
    assert derive_key("secret") != b"secret"
    assert derive_key("secret") == derive_key(b"secret")
    assert len(derive_key("x")) == 32
    with pytest.raises(ValueError):
        FieldCodec([])


def test_reseal_moves_a_field_to_another_session_without_decoding() -> None:
    stored = codec.encode("a" * 32, "f", [1, 2])
    moved = codec.reseal("a" * 32, "b" * 32, "f", stored)
    assert moved[HEADER_SIZE:] == stored[HEADER_SIZE:]
    assert codec.decode("b" * 32, "f", moved) == [1, 2]
    with pytest.raises(CorruptField):
        codec.reseal("c" * 32, "b" * 32, "f", stored)


@pytest.mark.parametrize(
    "stored",
    [b"", b"\x01", b"\x01" + bytes(15), b"\x02" + bytes(20), b"\x00" * 17],
    ids=["empty", "format only", "short tag", "unknown format", "zero format"],
)
def test_malformed_stored_bytes(stored: bytes) -> None:
    with pytest.raises(CorruptField):
        codec.decode("k" * 32, "f", stored)


def test_oversized_stored_bytes_are_refused_before_any_work() -> None:
    with pytest.raises(CorruptField, match="size"):
        codec.open("k" * 32, "f", b"\x01" + bytes(MAX_FIELD_SIZE))


def test_unknown_extension_types_are_corrupt_never_guessed() -> None:
    for code in (0, 8, 42, 127):
        payload = msgpack.packb(msgpack.ExtType(code, b"data"))
        with pytest.raises(CorruptField, match="extension"):
            codec.decode("k" * 32, "f", codec.seal("k" * 32, "f", payload))


def test_truncated_payload_is_corrupt() -> None:
    payload = codec.pack("f", {"a": [1, 2, 3]})[:-2]
    with pytest.raises(CorruptField):
        codec.decode("k" * 32, "f", codec.seal("k" * 32, "f", payload))


def test_zoned_datetime_keeps_zone_wall_time_and_fold() -> None:
    paris = ZoneInfo("Europe/Paris")
    for value in (
        datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=0),
        datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=1),
        datetime(2026, 3, 29, 2, 30, tzinfo=paris),  # in the spring gap
    ):
        back = codec.unpack(codec.pack("f", value))
        assert (back, back.tzinfo, back.fold) == (value, value.tzinfo, value.fold)


def test_unknown_zone_falls_back_to_the_offset() -> None:
    payload = msgpack.packb(
        msgpack.ExtType(1, msgpack.packb(("2026-01-01T10:00:00+01:00", "No/Such_Zone", 0)))
    )
    back = codec.unpack(payload)
    assert back == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert back.utcoffset().total_seconds() == 3600


def test_subclasses_are_stored_as_their_base_type() -> None:
    from collections import OrderedDict, namedtuple
    from enum import IntEnum, StrEnum

    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    point = namedtuple("point", "x y")
    value = [Colour.RED, Level.HIGH, OrderedDict(a=1), point(1, 2)]
    assert codec.unpack(codec.pack("f", value)) == ["red", 3, {"a": 1}, [1, 2]]


def test_decimal_special_values() -> None:
    for text in ("Infinity", "-Infinity", "1E+400", "-0.000"):
        assert str(codec.unpack(codec.pack("f", Decimal(text)))) == str(Decimal(text))
