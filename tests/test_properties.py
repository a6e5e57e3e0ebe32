"""Property-based tests: the lazy mapping is a dict, and every supported value round-trips.

A corrupt field (its tag does not verify) is absent: the mapping behaves as a dict without
it, whatever is asked first, checking each tag once and decoding only what is read. Each
holds whichever way a field's body is stored (plain, zlib, zstd).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_memopt.backends.lmdb import SessionStore
from django_memopt.codec import HEADER_SIZE, CorruptField, FieldCodec
from django_memopt.compression import PLAIN, ZLIB, ZSTD
from django_memopt.fields import SessionFields
from tests.contract import same_type_equal

SESSION_KEY = "k" * 32
codec = FieldCodec.from_secrets(["property tests"])
# Codecs that store every field one way, even the smallest: None chooses by size.
COMPRESSIONS = [None, PLAIN, ZLIB, ZSTD]
codecs = {method: FieldCodec(["property tests"], compression=method) for method in COMPRESSIONS}
compressions = st.sampled_from(COMPRESSIONS)

names = st.sampled_from(["a", "b", "c", "_auth_user_id", "ü", ""])
zones = st.sampled_from([None, UTC, timezone(timedelta(hours=-3, minutes=-30))])
zoneinfos = st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kathmandu"]).map(ZoneInfo)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.one_of(zones, zoneinfos)),
    st.dates(),
    st.times(timezones=zones),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=4),
    ),
    max_leaves=12,
)

operations = st.one_of(
    st.tuples(st.just("set"), names, values),
    st.tuples(st.just("get"), names),
    st.tuples(st.just("getitem"), names),
    st.tuples(st.just("del"), names),
    st.tuples(st.just("pop"), names),
    st.tuples(st.just("pop_default"), names),
    st.tuples(st.just("setdefault"), names, values),
    st.tuples(st.just("update"), st.dictionaries(names, values, max_size=3)),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("clear")),
    st.tuples(st.just("contains"), names),
    st.tuples(st.just("mutate"), names),
    st.tuples(st.just("views")),
    st.tuples(st.just("len")),
    st.tuples(st.just("iter")),
    st.tuples(st.just("reversed")),
    st.tuples(st.just("bool")),
    st.tuples(st.just("repr")),
    st.tuples(st.just("keys_contain"), names),
    # Saves and in-place changes interact (a value saved, then mutated): drawn more often.
    *[st.tuples(st.just("save")), st.tuples(st.just("mutate"), names)] * 3,
)


def apply(mapping: Any, operation: tuple[Any, ...]) -> Any:
    """Run one operation; return what it returned, or the exception type it raised."""
    kind, *args = operation
    try:
        if kind == "set":
            mapping[args[0]] = args[1]
        elif kind == "get":
            return mapping.get(args[0], "default")
        elif kind == "getitem":
            return mapping[args[0]]
        elif kind == "del":
            del mapping[args[0]]
        elif kind == "pop":
            return mapping.pop(args[0])
        elif kind == "pop_default":
            return mapping.pop(args[0], None)
        elif kind == "setdefault":
            return mapping.setdefault(args[0], args[1])
        elif kind == "update":
            mapping.update(args[0])
        elif kind == "popitem":
            return mapping.popitem()
        elif kind == "clear":
            mapping.clear()
        elif kind == "contains":
            return args[0] in mapping
        elif kind == "mutate":
            value = mapping.get(args[0])
            if isinstance(value, list):
                value.append("mutated")
            elif isinstance(value, dict):
                value["mutated"] = True
        elif kind == "views":
            return (
                list(mapping.keys()),
                list(mapping.values()),
                list(mapping.items()),
                len(mapping),
            )
        elif kind == "len":
            return len(mapping)
        elif kind == "iter":
            return list(mapping)
        elif kind == "reversed":
            return list(reversed(mapping))
        elif kind == "bool":
            return bool(mapping)
        elif kind == "repr":
            repr(mapping)
        elif kind == "keys_contain":
            return args[0] in mapping.keys()  # noqa: SIM118 (the view's own membership)
    except KeyError:
        return KeyError
    return None


def apply_delta(stored: dict[str, bytes], fields: SessionFields) -> dict[str, bytes]:
    """What a store holds after a save of ``fields`` onto ``stored``."""
    delta = fields.delta(SESSION_KEY)
    after = dict(delta.sets) if delta.replace else {**stored, **delta.sets}
    for name in delta.deletes:
        after.pop(name, None)
    fields.saved(SESSION_KEY, delta)
    return after


def stored_form(data: dict[str, Any], sealer: FieldCodec = codec) -> dict[str, bytes]:
    return {name: sealer.encode(SESSION_KEY, name, value) for name, value in data.items()}


@settings(max_examples=1500, deadline=None)
@given(
    initial=st.dictionaries(names, values, max_size=5),
    ops=st.lists(operations, max_size=25),
    compression=compressions,
)
def test_lazy_mapping_behaves_like_a_dict(
    initial: dict[str, Any], ops: list[Any], compression: int | None
) -> None:
    # Saves and in-place changes ("mutate") end with what reads back compared to the
    # model: a change missed by the check against the decompressed payload fails here.
    stored = stored_form(initial, codecs[compression])
    fields = SessionFields(codecs[compression], SESSION_KEY, stored)
    model = {name: codec.decode(SESSION_KEY, name, raw) for name, raw in stored.items()}
    for operation in ops:
        if operation == ("save",):  # saves along the way, as cycle_key() does in a request
            stored = apply_delta(stored, fields)
            continue
        assert same_type_equal(apply(model, operation), apply(fields, operation)), operation
        assert list(fields) == list(model)
    assert same_type_equal(model, fields.copy())
    assert fields == model

    # What the saves applied onto what was stored gives exactly the final mapping.
    after = apply_delta(stored, fields)
    reloaded = {name: codec.decode(SESSION_KEY, name, raw) for name, raw in after.items()}
    assert same_type_equal(dict(sorted(model.items())), dict(sorted(reloaded.items())))


@settings(max_examples=200, deadline=None)
@given(
    initial=st.dictionaries(names, values, min_size=1, max_size=5),
    data=st.data(),
    compression=compressions,
)
def test_unread_fields_are_never_rewritten(
    initial: dict[str, Any], data: st.DataObject, compression: int | None
) -> None:
    stored = stored_form(initial, codecs[compression])
    fields = SessionFields(codecs[compression], SESSION_KEY, stored)
    read = data.draw(st.sets(st.sampled_from(sorted(initial))))
    for name in read:
        fields[name]
    delta = fields.delta(SESSION_KEY)
    assert not delta.sets and not delta.deletes and not delta.replace
    assert fields.decoded_count == len(read)


@settings(max_examples=400, deadline=None)
@given(value=values, compression=st.sampled_from([PLAIN, ZLIB, ZSTD]))
def test_values_round_trip_through_format_2_with_every_compression(
    value: Any, compression: int
) -> None:
    stored = codecs[compression].encode(SESSION_KEY, "f", value)
    assert stored[0] == 0x20 | compression
    back = codec.decode(SESSION_KEY, "f", stored)  # whichever codec sealed it
    assert same_type_equal(value, back), (value, back)


@settings(max_examples=400, deadline=None)
@given(value=values, compression=compressions, data=st.data())
def test_any_damage_to_a_sealed_field_makes_it_corrupt(
    value: Any, compression: int | None, data: st.DataObject
) -> None:
    stored = codecs[compression].encode(SESSION_KEY, "f", value)
    damage = data.draw(st.sampled_from(["flip", "cut", "append"]))
    if damage == "flip":  # the format byte, the tag or the body
        damaged = bytearray(stored)
        damaged[data.draw(st.integers(0, len(stored) - 1))] ^= data.draw(st.integers(1, 255))
    elif damage == "cut":
        damaged = bytearray(stored[: data.draw(st.integers(0, len(stored) - 1))])
    else:
        damaged = bytearray(stored + data.draw(st.binary(min_size=1, max_size=9)))
    with pytest.raises(CorruptField):
        codec.open(SESSION_KEY, "f", bytes(damaged))


@settings(max_examples=150, deadline=None)
@given(value=values)
def test_values_round_trip_through_the_store_with_their_types(value: Any) -> None:
    session = SessionStore()
    session["value"] = value
    session.save()
    try:
        loaded = SessionStore(session.session_key)["value"]
        assert same_type_equal(value, loaded), (value, loaded)
    finally:
        session.delete()


# -- corrupt fields ----------------------------------------------------------------------------


class CountingCodec(FieldCodec):
    """A codec that counts the tag checks, by field, and the payloads decoded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verified: Counter[str] = Counter()
        self.unpacked = 0

    def verify(self, session_key: str, field: str, stored: bytes) -> None:
        self.verified[field] += 1
        super().verify(session_key, field, stored)

    def unpack(self, payload: bytes | memoryview) -> Any:  # type: ignore[override]
        self.unpacked += 1
        return super().unpack(payload)


def flipped(stored: bytes, at: int) -> bytes:
    damaged = bytearray(stored)
    damaged[at] ^= 0x01
    return bytes(damaged)


# Ways a stored field goes bad: (name, value) -> stored bytes whose tag does not verify.
CORRUPTIONS: dict[str, Callable[[str, Any], bytes]] = {
    "payload byte": lambda name, value: flipped(codec.encode(SESSION_KEY, name, value), -1),
    "tag byte": lambda name, value: flipped(codec.encode(SESSION_KEY, name, value), 3),
    "truncated": lambda name, value: codec.encode(SESSION_KEY, name, value)[: HEADER_SIZE - 1],
    "other session": lambda name, value: codec.encode("o" * 32, name, value),
    "other field": lambda name, value: codec.encode(SESSION_KEY, name + "~", value),
    "other secret": lambda name, value: FieldCodec.from_secrets(["forger"]).encode(
        SESSION_KEY, name, value
    ),
}


def damaged_store(
    drawn: dict[str, tuple[Any, str | None]],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The stored fields of ``drawn`` (value, corruption or None), and the dict they read as."""
    stored = {
        name: CORRUPTIONS[damage](name, value)
        if damage
        else codec.encode(SESSION_KEY, name, value)
        for name, (value, damage) in drawn.items()
    }
    good = {name: value for name, (value, damage) in drawn.items() if damage is None}
    return stored, {name: codec.decode(SESSION_KEY, name, stored[name]) for name in good}


def readable(stored: dict[str, bytes]) -> dict[str, Any]:
    """What a fresh load of ``stored`` reads: the fields whose tags verify."""
    model = {}
    for name, raw in stored.items():
        with contextlib.suppress(CorruptField):
            model[name] = codec.decode(SESSION_KEY, name, raw)
    return model


fields_with_damage = st.dictionaries(
    names, st.tuples(values, st.none() | st.sampled_from(sorted(CORRUPTIONS))), max_size=5
)


@settings(max_examples=1500, deadline=None)
@given(drawn=fields_with_damage, ops=st.lists(operations, max_size=25))
def test_corrupt_fields_are_absent_whatever_is_asked_first(
    drawn: dict[str, tuple[Any, str | None]], ops: list[Any]
) -> None:
    stored, model = damaged_store(drawn)
    counting = CountingCodec.from_secrets(["property tests"])
    logged: list[str] = []
    fields = SessionFields(counting, SESSION_KEY, stored, lambda name, error: logged.append(name))
    for operation in ops:
        if operation == ("save",):
            stored = apply_delta(stored, fields)
            continue
        # Only what each operation returns is compared: the mapping's whole key set is not
        # looked at between operations, so each one may be the first to meet a bad field.
        assert same_type_equal(apply(model, operation), apply(fields, operation)), operation
    assert list(fields) == list(model)
    assert same_type_equal(model, fields.copy())

    corrupt = {name for name, (_, damage) in drawn.items() if damage}
    assert set(logged) <= corrupt and len(logged) == len(set(logged)), logged
    assert max(counting.verified.values(), default=0) <= 1, counting.verified  # each once
    assert counting.unpacked == fields.decoded_count <= len(drawn)

    # The saves keep every bad field out of what reads back (nothing laundered).
    after = apply_delta(stored, fields)
    assert same_type_equal(dict(sorted(model.items())), dict(sorted(readable(after).items())))


def test_one_name_checks_one_tag_and_the_key_set_checks_each_once() -> None:
    counting = CountingCodec.from_secrets(["property tests"])
    stored = {f"k{i}": codec.encode(SESSION_KEY, f"k{i}", {"n": i}) for i in range(50)}
    stored["k9"] = CORRUPTIONS["payload byte"]("k9", {"n": 9})
    logged: list[str] = []
    fields = SessionFields(counting, SESSION_KEY, stored, lambda name, error: logged.append(name))

    assert "k7" in fields and "k9" not in fields
    assert counting.verified == {"k7": 1, "k9": 1} and counting.unpacked == 0
    assert fields["k7"] == {"n": 7} and fields.get("k8") == {"n": 8}
    assert counting.verified == {"k7": 1, "k8": 1, "k9": 1} and counting.unpacked == 2

    assert len(fields) == 49 and "k9" not in list(fields)
    assert set(counting.verified) == set(stored) and set(counting.verified.values()) == {1}
    assert counting.unpacked == 2  # the names were shown, nothing more was decoded
    assert len(fields.keys()) == 49 and "k9" not in repr(fields)
    assert len(dict(fields.items())) == 49
    assert set(counting.verified.values()) == {1} and counting.unpacked == 49
    assert logged == ["k9"]


@pytest.mark.parametrize(
    "first",
    ["in", "get", "getitem", "del", "pop", "len", "iter", "keys", "items", "values", "repr"],
)
def test_a_bad_field_is_absent_from_the_first_question_on(first: str) -> None:
    stored = {
        "good": codec.encode(SESSION_KEY, "good", "g"),
        "_auth_user_id": CORRUPTIONS["other secret"]("_auth_user_id", "1"),
    }
    logged: list[str] = []
    fields = SessionFields(codec, SESSION_KEY, stored, lambda name, error: logged.append(name))
    name = "_auth_user_id"
    asks: dict[str, Callable[[], Any]] = {
        "in": lambda: name in fields,
        "get": lambda: fields.get(name),
        "getitem": lambda: fields[name],
        "del": lambda: fields.__delitem__(name),
        "pop": lambda: fields.pop(name),
        "values": lambda: list(fields.values()),
        "len": lambda: len(fields),
        "iter": lambda: list(fields),
        "keys": lambda: list(fields.keys()),
        "items": lambda: list(fields.items()),
        "repr": lambda: repr(fields),
    }
    with contextlib.suppress(KeyError):
        asks[first]()
    assert name not in fields and name not in fields.keys()  # noqa: SIM118
    assert fields.get(name) is None and fields.get(name, "absent") == "absent"
    with pytest.raises(KeyError):
        fields[name]
    with pytest.raises(KeyError):
        del fields[name]
    assert fields.pop(name, "absent") == "absent"
    assert list(fields) == ["good"] and len(fields) == 1
    assert dict(fields.items()) == {"good": "g"} and list(fields.values()) == ["g"]
    assert logged == [name]
    # The bad field stays in the store, and never follows the session to a new key.
    delta = fields.delta(SESSION_KEY)
    assert name not in delta.sets and name not in delta.deletes
    assert set(fields.delta("n" * 32).sets) == {"good"}


@pytest.mark.parametrize("assign", ["set", "setdefault", "update"])
def test_assigning_over_a_bad_field_adds_the_name_as_a_dict_would(assign: str) -> None:
    stored = {
        "bad": CORRUPTIONS["tag byte"]("bad", 1),
        "good": codec.encode(SESSION_KEY, "good", "g"),
    }
    logged: list[str] = []
    fields = SessionFields(codec, SESSION_KEY, stored, lambda name, error: logged.append(name))
    if assign == "set":
        fields["bad"] = 2
    elif assign == "setdefault":
        assert fields.setdefault("bad", 2) == 2
    else:
        fields.update(bad=2)
    assert list(fields) == ["good", "bad"] and fields["bad"] == 2 and logged == ["bad"]
    assert codec.decode(SESSION_KEY, "bad", fields.delta(SESSION_KEY).sets["bad"]) == 2


def test_a_good_tag_over_an_undecodable_payload_is_dropped_when_read() -> None:
    # Sealed with the key, so only a release that knows more types could have written it:
    # it counts as present until it is read, then it is absent like any bad field.
    payload = msgpack.packb(msgpack.ExtType(100, b"a type from the future"))
    stored = {"future": codec.seal(SESSION_KEY, "future", payload)}
    logged: list[str] = []
    fields = SessionFields(codec, SESSION_KEY, stored, lambda name, error: logged.append(name))
    assert "future" in fields and len(fields) == 1
    with pytest.raises(KeyError):
        fields["future"]
    assert "future" not in fields and len(fields) == 0 and logged == ["future"]


# -- the in-place check against decompressed payloads ------------------------------------------


class PayloadCountingCodec(FieldCodec):
    """A codec that counts the payloads taken out of stored bytes (decompressed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened = 0

    def payload(self, stored: bytes) -> bytes:  # type: ignore[override]
        self.opened += 1
        return super().payload(stored)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_change_in_place_is_found_without_decompressing_again(compression: int | None) -> None:
    sealer = PayloadCountingCodec(["property tests"], compression=compression)
    cart = [{"sku": f"SKU-{n}", "note": "a line of text " * 8} for n in range(12)]
    stored = stored_form({"cart": cart, "prefs": {"a": 1}, "other": [1]}, sealer)
    fields = SessionFields(sealer, SESSION_KEY, stored)
    fields["cart"].append({"sku": "NEW"})
    fields["prefs"]  # read, not changed
    assert sealer.opened == 2
    delta = fields.delta(SESSION_KEY)
    assert set(delta.sets) == {"cart"} and sealer.opened == 2  # "other" never read, nor opened
    assert codec.decode(SESSION_KEY, "cart", delta.sets["cart"]) == [*cart, {"sku": "NEW"}]

    fields.saved(SESSION_KEY, delta)
    assert not fields.delta(SESSION_KEY)  # what was written is the new baseline
    fields["cart"].pop()
    fields["prefs"]["b"] = 2
    after = fields.delta(SESSION_KEY)
    assert set(after.sets) == {"cart", "prefs"}
    assert codec.decode(SESSION_KEY, "cart", after.sets["cart"]) == cart


def test_a_value_assigned_then_saved_is_compared_with_what_was_written() -> None:
    stored = stored_form({"cart": ["apple"]}, codecs[ZSTD])
    fields = SessionFields(codecs[ZSTD], SESSION_KEY, stored)
    fields["cart"]  # decoded: its payload is kept
    fields["cart"] = ["pear"]
    fields.saved(SESSION_KEY, fields.delta(SESSION_KEY))
    fields["cart"].append("apple")  # not the payload first decoded, nor what was saved
    fields["cart"].remove("pear")
    assert set(fields.delta(SESSION_KEY).sets) == {"cart"}
