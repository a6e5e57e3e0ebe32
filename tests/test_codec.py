"""The per-field codec on its own, without a store."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import tracemalloc
from collections import OrderedDict, namedtuple
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum, IntEnum, IntFlag, StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack
import pytest
import zstandard
from django.core.signing import JSONSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from django_memopt import compression
from django_memopt.codec import (
    HEADER_SIZE,
    MAX_FIELD_SIZE,
    TAG_SIZE,
    CorruptField,
    FieldCodec,
    derive_key,
)
from django_memopt.compression import PLAIN, ZLIB, ZSTD
from django_memopt.fields import SessionFields
from tests.contract import same_type_equal

codec = FieldCodec.from_secrets(["secret"])
# A cart line of the example shop: about 2 KB of msgpack, text that compresses.
CART_LINE = {
    "sku": "TEA-01",
    "name": "Green tea",
    "unit_cents": 450,
    "quantity": 2,
    "description": " ".join(f"leaf {n % 13} of a tea picked by hand" for n in range(60)),
}


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


def test_verify_checks_the_tag_and_decode_is_open_then_unpack() -> None:
    stored = codec.encode("sessionkey1", "field", {"a": [1]})
    codec.verify("sessionkey1", "field", stored)
    assert codec.payload(stored) == codec.open("sessionkey1", "field", stored)
    assert codec.unpack(codec.payload(stored)) == codec.decode("sessionkey1", "field", stored)
    with pytest.raises(CorruptField, match="tag"):
        codec.verify("sessionkey1", "other", stored)


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
    [
        b"",
        b"\x01",
        b"\x01" + bytes(15),
        b"\x20" + bytes(7),
        b"\x02" + bytes(20),
        b"\x23" + bytes(20),
        b"\x00" * 17,
    ],
    ids=[
        "empty",
        "format only",
        "short tag",
        "short tag, format 2",
        "unknown format",
        "unknown compression",
        "zero format",
    ],
)
def test_malformed_stored_bytes(stored: bytes) -> None:
    with pytest.raises(CorruptField):
        codec.decode("k" * 32, "f", stored)


def test_oversized_stored_bytes_are_refused_before_any_work() -> None:
    with pytest.raises(CorruptField, match="size"):
        codec.open("k" * 32, "f", b"\x01" + bytes(MAX_FIELD_SIZE))


def test_unknown_extension_types_are_corrupt_never_guessed() -> None:
    for code in (0, 9, 42, 127):  # 1-8 are the types this release knows
        payload = msgpack.packb(msgpack.ExtType(code, b"data"))
        with pytest.raises(CorruptField, match="extension"):
            codec.decode("k" * 32, "f", codec.seal("k" * 32, "f", payload))


def test_truncated_payload_is_corrupt() -> None:
    payload = codec.pack("f", {"a": [1, 2, 3]})[:-2]
    with pytest.raises(CorruptField):
        codec.decode("k" * 32, "f", codec.seal("k" * 32, "f", payload))


# -- format 2: the layout, compression, hex strings -------------------------------------------


def test_a_small_field_is_stored_as_it_is_behind_an_8_byte_tag() -> None:
    payload = codec.pack("f", {"a": [1]})
    stored = codec.seal("k" * 32, "f", payload)
    assert (stored[0], len(stored)) == (0x20, 1 + TAG_SIZE + len(payload))
    assert TAG_SIZE == 8 and HEADER_SIZE == 9
    assert stored[HEADER_SIZE:] == payload


def test_a_large_field_is_compressed_and_flagged() -> None:
    payload = codec.pack("cart", CART_LINE)
    stored = codec.seal("k" * 32, "cart", payload)
    assert stored[0] == 0x20 | ZSTD
    assert len(stored) < len(payload) // 2
    assert codec.open("k" * 32, "cart", stored) == payload
    assert codec.decode("k" * 32, "cart", stored) == CART_LINE


@pytest.mark.parametrize("compress_from", [None, 10**6])
def test_compression_can_start_later_or_never(compress_from: int | None) -> None:
    # MEMOPT_COMPRESS_FROM: the LMDB record can then compress small fields together.
    later = FieldCodec.from_secrets(["secret"], compress_from=compress_from)
    payload = later.pack("cart", CART_LINE)
    stored = later.seal("k" * 32, "cart", payload)
    assert stored[0] == 0x20 and stored[HEADER_SIZE:] == payload
    assert later.decode("k" * 32, "cart", stored) == CART_LINE
    # Fields compressed under another setting still read.
    compressed = FieldCodec(["secret"]).seal("k" * 32, "cart", payload)
    assert later.decode("k" * 32, "cart", compressed) == CART_LINE
    # A threshold below the compressor's own floor changes nothing for small payloads.
    small = FieldCodec.from_secrets(["secret"], compress_from=1)
    assert small.seal("k" * 32, "f", b"\x01")[0] == 0x20


def test_a_field_that_does_not_shrink_is_stored_as_it_is() -> None:
    noise = b"".join(hashlib.sha512(bytes([n])).digest() for n in range(16))
    stored = codec.encode("k" * 32, "f", noise)
    assert stored[0] == 0x20 and stored[HEADER_SIZE:] == codec.pack("f", noise)


@pytest.mark.parametrize("method", [PLAIN, ZLIB, ZSTD])
def test_every_compression_round_trips_and_every_byte_is_tagged(method: int) -> None:
    forced = FieldCodec(["secret"], compression=method)
    stored = forced.encode("k" * 32, "cart", CART_LINE)
    assert stored[0] == 0x20 | method
    assert codec.decode("k" * 32, "cart", stored) == CART_LINE  # any codec reads any method
    for position in range(0, len(stored), 7):
        flipped = bytearray(stored)
        flipped[position] ^= 0x04
        with pytest.raises(CorruptField):
            codec.open("k" * 32, "cart", bytes(flipped))


def test_the_tag_is_checked_before_anything_is_decompressed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = bytearray(codec.encode("k" * 32, "cart", CART_LINE))
    stored[-1] ^= 0x01
    monkeypatch.setattr("django_memopt.codec.decompress", lambda *args: pytest.fail("inflated"))
    with pytest.raises(CorruptField, match="tag"):
        codec.open("k" * 32, "cart", bytes(stored))


def zstd_bomb(size: int) -> bytes:
    """A zstd body (no magic number) declaring and holding ``size`` zero bytes."""
    frame = zstandard.ZstdCompressor(level=19).compressobj(size=size)
    chunk = bytes(1024 * 1024)
    parts = [frame.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join([*parts, frame.flush()])[4:]


def test_a_tagged_bomb_is_refused_without_allocating_it() -> None:
    # Even under a good tag (someone holding the key): 100 MiB declared is refused.
    bomb = codec._sealed("k" * 32, "f", 0x20 | ZSTD, zstd_bomb(100 * 1024 * 1024))
    codec.verify("k" * 32, "f", bomb)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptField, match="limit"):
            codec.payload(bomb)
        assert tracemalloc.get_traced_memory()[1] < 2 * len(bomb) + 64 * 1024
    finally:
        tracemalloc.stop()


def test_without_zstd_reading_a_zstd_field_names_the_package_and_writing_deflates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = codec.encode("k" * 32, "cart", CART_LINE)
    monkeypatch.setattr(compression, "ZSTD_AVAILABLE", False)
    codec.verify("k" * 32, "cart", stored)  # the tag still checks
    with pytest.raises(CorruptField, match="'zstandard' package"):
        codec.decode("k" * 32, "cart", stored)
    deflated = codec.encode("k" * 32, "cart", CART_LINE)
    assert deflated[0] == 0x20 | ZLIB
    assert codec.decode("k" * 32, "cart", deflated) == CART_LINE


HEX_64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize("value", [HEX_64, "ab" * 16, "0f" * 128])
def test_a_lowercase_hex_string_is_stored_as_its_bytes(value: str) -> None:
    payload = codec.pack("_auth_user_hash", value)
    assert payload == msgpack.packb(msgpack.ExtType(8, bytes.fromhex(value)))
    back = codec.unpack(payload)
    assert back == value and type(back) is str


class HexStr(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        HEX_64.upper(),  # not lowercase: would come back lowercase
        HEX_64[:-1],  # odd length
        "ab" * 15,  # shorter than 32
        "ab" * 129,  # longer than 256
        HEX_64[:-2] + " 0",  # bytes.fromhex() would skip the space
        HEX_64[:-1] + "g",
        HexStr(HEX_64),  # only a str itself
    ],
)
def test_anything_else_stays_a_string(value: str) -> None:
    payload = codec.pack("f", value)
    assert payload == msgpack.packb(str(value))
    assert codec.unpack(payload) == value


def test_a_hex_string_inside_a_container_stays_a_string() -> None:
    assert codec.pack("f", [HEX_64]) == msgpack.packb([HEX_64])
    assert codec.pack("f", {"hash": HEX_64}) == msgpack.packb({"hash": HEX_64})


def test_a_thread_drops_a_packer_a_large_value_grew() -> None:
    from django_memopt import codec as codec_module

    codec.pack("f", "small")
    kept = codec_module._local.packer
    codec.pack("f", "small")
    assert codec_module._local.packer is kept
    codec.pack("f", b"x" * 300_000)
    assert codec_module._local.packer is None
    assert codec.unpack(codec.pack("f", [1, (2, 3)])) == [1, [2, 3]]


# -- format 1: fields sealed by the previous release -----------------------------------------

FORMAT_1_SECRET = "format-1 fixture secret"
FORMAT_1_SESSION = "f1" * 16
# Sealed by the previous release's codec, with FORMAT_1_SECRET, for FORMAT_1_SESSION.
FORMAT_1_FIELDS = {
    "_auth_user_id": bytes.fromhex("01b4f3004ba96abedec0ae6015fea4867ba23432"),
    "_auth_user_hash": bytes.fromhex(
        "0107c5d965ed1d655392f24165b1435095d940396638366430383138383463376436353961326665"
        "61613063353561643031356133626634663162326230623832326364313564366331356230663030"
        "613038"
    ),
    "cart": bytes.fromhex(
        "01c8d0f5ccba753bb9f75b090e97e1c5ac9383a3736b75a65445412d3031a87175616e7469747902"
        "a57072696365d605342e353083a3736b75a65445412d3031a87175616e7469747902a57072696365"
        "d605342e353083a3736b75a65445412d3031a87175616e7469747902a57072696365d605342e3530"
    ),
    "seen": bytes.fromhex(
        "019760f8408b44f6108b812c16703e5c32c71b0191b9323032362d31312d32345431303a30303a30"
        "302b30303a3030"
    ),
}
FORMAT_1_VALUES = {
    "_auth_user_id": "42",
    "_auth_user_hash": HEX_64,
    "cart": [{"sku": "TEA-01", "quantity": 2, "price": Decimal("4.50")}] * 3,
    "seen": datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
}


def seal_format_1(secret: str, session_key: str, field: str, payload: bytes) -> bytes:
    """How the previous release sealed a field (format 1), kept here to write such fields."""
    key = hmac.digest(secret.encode(), b"django_memopt.codec.field-tag.v1", "sha256")
    tag = hashlib.blake2b(key=key, digest_size=16)
    name = field.encode("utf-8", "surrogatepass")
    tag.update(b"%d:%s" % (len(session_key), session_key.encode()))
    tag.update(b"%d:%s%s" % (len(name), name, payload))
    return b"\x01" + tag.digest() + payload


def test_the_fixture_is_what_the_format_1_sealing_writes() -> None:
    for name, stored in FORMAT_1_FIELDS.items():
        assert seal_format_1(FORMAT_1_SECRET, FORMAT_1_SESSION, name, stored[17:]) == stored


def test_format_1_fields_read_and_verify_for_good() -> None:
    current = FieldCodec.from_secrets([FORMAT_1_SECRET])
    rotated = FieldCodec.from_secrets(["a newer secret", FORMAT_1_SECRET])
    for reader in (current, rotated):
        for name, stored in FORMAT_1_FIELDS.items():
            back = reader.decode(FORMAT_1_SESSION, name, stored)
            assert same_type_equal(back, FORMAT_1_VALUES[name]), name
    stored = FORMAT_1_FIELDS["_auth_user_id"]
    for session_key, name in [("f2" * 16, "_auth_user_id"), (FORMAT_1_SESSION, "cart")]:
        with pytest.raises(CorruptField, match="tag"):
            current.open(session_key, name, stored)
    with pytest.raises(CorruptField, match="tag"):
        codec.open(FORMAT_1_SESSION, "_auth_user_id", stored)  # another secret
    for position in range(len(stored)):
        flipped = bytearray(stored)
        flipped[position] ^= 0x40
        with pytest.raises(CorruptField):
            current.open(FORMAT_1_SESSION, "_auth_user_id", bytes(flipped))


def test_format_1_and_format_2_tags_never_share_a_key() -> None:
    payload = codec.pack("f", "value")
    old = seal_format_1("secret", "k" * 32, "f", payload)
    new = codec.seal("k" * 32, "f", payload)
    assert derive_key("secret") != hmac.digest(
        b"secret", b"django_memopt.codec.field-tag.v1", "sha256"
    )
    # Either tag behind the other format's byte does not verify.
    with pytest.raises(CorruptField):
        codec.open("k" * 32, "f", b"\x01" + new[1:9] + old[9:17] + payload)
    with pytest.raises(CorruptField):
        codec.open("k" * 32, "f", b"\x20" + old[1:9] + payload)
    assert codec.open("k" * 32, "f", old) == codec.open("k" * 32, "f", new) == payload


def test_carrying_a_format_1_field_to_a_new_key_seals_format_2_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = FieldCodec.from_secrets([FORMAT_1_SECRET])
    monkeypatch.setattr(FieldCodec, "unpack", lambda payload: pytest.fail("decoded"))
    moved = {
        name: current.reseal(FORMAT_1_SESSION, "n" * 32, name, stored)
        for name, stored in FORMAT_1_FIELDS.items()
    }
    monkeypatch.undo()
    for name, stored in moved.items():
        assert stored[0] & 0xFC == 0x20
        assert current.open("n" * 32, name, stored) == FORMAT_1_FIELDS[name][17:]
        assert same_type_equal(current.decode("n" * 32, name, stored), FORMAT_1_VALUES[name])
    with pytest.raises(CorruptField):
        current.reseal("other" * 4, "n" * 32, "cart", FORMAT_1_FIELDS["cart"])


def test_a_session_of_format_1_fields_loads_saves_and_cycles() -> None:
    current = FieldCodec.from_secrets([FORMAT_1_SECRET])
    fields = SessionFields(current, FORMAT_1_SESSION, FORMAT_1_FIELDS)
    assert same_type_equal(fields.copy(), FORMAT_1_VALUES)
    fields["cart"].append({"sku": "MUG-02", "quantity": 1, "price": Decimal("9")})
    delta = fields.delta(FORMAT_1_SESSION)
    # Only the changed field is written, as format 2; the others stay as they are stored.
    assert set(delta.sets) == {"cart"} and delta.sets["cart"][0] & 0xFC == 0x20
    untouched = SessionFields(current, FORMAT_1_SESSION, FORMAT_1_FIELDS)
    assert untouched.delta(FORMAT_1_SESSION, full=True).sets == FORMAT_1_FIELDS
    cycled = untouched.delta("n" * 32).sets
    assert untouched.decoded_count == 0
    assert {stored[0] & 0xFC for stored in cycled.values()} == {0x20}
    reread = {name: current.decode("n" * 32, name, stored) for name, stored in cycled.items()}
    assert same_type_equal(reread, FORMAT_1_VALUES)


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


# -- subclasses are stored as the value their base type holds ---------------------------------
#
# Each strategy below draws (value, plain): a value holding subclasses, and what it must come
# back as, built from the same parts without them.


class Colour(str, Enum):  # noqa: UP042 (the mixin whose __str__ is "Colour.RED")
    RED = "red"
    ACCENT = "é"
    EMPTY = ""


class Shade(StrEnum):
    DARK = "dark"


class Level(IntEnum):
    LOW = -1
    HIGH = 3
    HUGE = 2**70  # beyond msgpack's 64 bits


class Permission(IntFlag):
    READ = 4
    WRITE = 2
    RUN = 1


class Ratio(float, Enum):
    HALF = 0.5
    TINY = 5e-324
    ENDLESS = float("inf")


class LoudStr(str):
    def __str__(self) -> str:
        return self.upper() + "!"

    def __repr__(self) -> str:
        return f"LoudStr({str.__repr__(self)})"


class OddInt(int):
    def __int__(self) -> int:
        return 7

    def __index__(self) -> int:
        return 8

    def __str__(self) -> str:
        return "odd"

    def __repr__(self) -> str:
        return f"OddInt({int.__repr__(self)})"


class OddFloat(float):
    def __float__(self) -> float:
        return 7.0

    def __str__(self) -> str:
        return "odd"

    def __repr__(self) -> str:
        return f"OddFloat({float.__repr__(self)})"


class OddBytes(bytes):
    def __bytes__(self) -> bytes:
        return b"odd"

    def __str__(self) -> str:
        return "odd"


class OddBytearray(bytearray):
    def __bytes__(self) -> bytes:
        return b"odd"


class OddList(list):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        return f"OddList({list.__repr__(self)})"


class OddTuple(tuple):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        return f"OddTuple({tuple.__repr__(self)})"


class OddDict(dict):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        return f"OddDict({dict.__repr__(self)})"


Pair = namedtuple("Pair", "first second")


class OddDatetime(datetime):
    tzinfo = property(lambda self: None)  # type: ignore[assignment]
    fold = property(lambda self: 0)  # type: ignore[assignment]

    def isoformat(self, *args: Any, **kwargs: Any) -> str:
        return "2000-01-01T00:00:00"


class OddDate(date):
    def isoformat(self) -> str:
        return "2000-01-01"


class OddTime(time):
    def isoformat(self, *args: Any, **kwargs: Any) -> str:
        return "00:00:00"


class OddTimedelta(timedelta):
    days = property(lambda self: 0)  # type: ignore[assignment]
    seconds = property(lambda self: 0)  # type: ignore[assignment]
    microseconds = property(lambda self: 0)  # type: ignore[assignment]


class OddDecimal(Decimal):
    def __str__(self) -> str:
        return "0"


class OddUUID(UUID):
    bytes = property(lambda self: b"\0" * 16)  # type: ignore[assignment]

    def __int__(self) -> int:
        return 0

    def __str__(self) -> str:
        return "odd"


def members(enum: type[Enum]) -> st.SearchStrategy[tuple[Any, Any]]:
    return st.sampled_from([(member, member.value) for member in enum])


zones = st.sampled_from([None, UTC, ZoneInfo("Europe/Paris"), ZoneInfo("Asia/Kathmandu")])
# Hashable, and of the key types a session's dicts may have.
subclassed_keys = st.one_of(
    members(Colour),
    members(Shade),
    members(Level),
    members(Ratio),
    st.integers(0, 7).map(lambda n: (Permission(n), n)),
    st.text(max_size=5).map(lambda text: (LoudStr(text), text)),
    st.integers().map(lambda n: (OddInt(n), n)),
    st.floats(allow_nan=False).map(lambda x: (OddFloat(x), x)),
)
subclassed_scalars = st.one_of(
    subclassed_keys,
    st.binary().map(lambda data: (OddBytes(data), data)),
    st.binary().map(lambda data: (OddBytearray(data), data)),
    st.datetimes(timezones=zones).map(
        lambda d: (OddDatetime(*d.timetuple()[:6], d.microsecond, d.tzinfo, fold=d.fold), d)
    ),
    st.dates().map(lambda d: (OddDate(d.year, d.month, d.day), d)),
    st.times(timezones=st.sampled_from([None, UTC])).map(
        lambda t: (OddTime(t.hour, t.minute, t.second, t.microsecond, t.tzinfo, fold=t.fold), t)
    ),
    st.timedeltas().map(lambda d: (OddTimedelta(d.days, d.seconds, d.microseconds), d)),
    st.decimals(allow_nan=False).map(lambda d: (OddDecimal(d), d)),
    st.uuids().map(lambda u: (OddUUID(int=u.int), u)),
)


def containers(items: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    """Lists, tuples and dicts of ``items``, and subclasses of each."""

    def sequence(kind: Any, drawn: list[Any]) -> tuple[Any, Any]:
        # Tuples come back as lists, as with Django's JSON serializer.
        return kind(value for value, _ in drawn), [plain for _, plain in drawn]

    def mapping(kind: Any, drawn: list[Any]) -> tuple[Any, Any]:
        value = kind((key, item) for (key, _), (item, _) in drawn)
        return value, {plain_key: plain for (_, plain_key), (_, plain) in drawn}

    # Keys unique by their plain values: keys with equal plain values are one key.
    entries = st.lists(st.tuples(subclassed_keys, items), max_size=4, unique_by=lambda e: e[0][1])
    return st.one_of(
        st.builds(
            sequence,
            st.sampled_from([list, OddList, tuple, OddTuple]),
            st.lists(items, max_size=4),
        ),
        st.builds(sequence, st.just(Pair._make), st.lists(items, min_size=2, max_size=2)),
        st.builds(mapping, st.sampled_from([dict, OddDict, OrderedDict]), entries),
    )


subclassed_values = st.recursive(subclassed_scalars, containers, max_leaves=10)


def json_able(plain: Any) -> bool:
    """Whether Django's JSON serializer stores ``plain`` as it is (lists, str keys, scalars)."""
    if isinstance(plain, list):
        return all(map(json_able, plain))
    if isinstance(plain, dict):
        return all(type(key) is str and json_able(item) for key, item in plain.items())
    return isinstance(plain, str | int | float)


def round_trip(value: Any) -> Any:
    return codec.unpack(codec.pack("f", value))


def assert_stored_as(value: Any, plain: Any) -> None:
    back = round_trip(value)
    assert same_type_equal(back, plain), (value, back, plain)
    if json_able(plain):
        serializer = JSONSerializer()
        assert same_type_equal(back, serializer.loads(serializer.dumps(value))), value


@settings(max_examples=400, deadline=None)
@given(drawn=subclassed_scalars)
def test_a_subclass_is_stored_as_its_base_value_anywhere(drawn: tuple[Any, Any]) -> None:
    value, plain = drawn
    assert_stored_as(value, plain)
    assert_stored_as([value, [value]], [plain, [plain]])
    assert_stored_as({"k": value}, {"k": plain})
    if isinstance(value, str | int | float):
        assert_stored_as({value: "v"}, {plain: "v"})
        assert_stored_as({"k": {value: [value]}}, {"k": {plain: [plain]}})


@settings(max_examples=400, deadline=None)
@given(drawn=subclassed_values)
def test_values_holding_subclasses_are_stored_as_plain_values(drawn: tuple[Any, Any]) -> None:
    assert_stored_as(*drawn)


def test_enum_members_are_stored_as_their_values_as_with_json() -> None:
    serializer = JSONSerializer()
    value = {"colour": Colour.RED, "levels": [Level.HIGH, Permission.READ | Permission.RUN]}
    assert round_trip(value) == {"colour": "red", "levels": [3, 5]}
    assert round_trip(value) == serializer.loads(serializer.dumps(value))
    assert round_trip({Colour.RED: Ratio.HALF, Level.HIGH: 1}) == {"red": 0.5, 3: 1}
