"""Property-based tests: the lazy mapping is a dict, and every supported value round-trips."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from django_memopt.backends.lmdb import SessionStore
from django_memopt.codec import FieldCodec
from django_memopt.fields import SessionFields
from tests.contract import same_type_equal

SESSION_KEY = "k" * 32
codec = FieldCodec.from_secrets(["property tests"])

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


def stored_form(data: dict[str, Any]) -> dict[str, bytes]:
    return {name: codec.encode(SESSION_KEY, name, value) for name, value in data.items()}


@settings(max_examples=1500, deadline=None)
@given(initial=st.dictionaries(names, values, max_size=5), ops=st.lists(operations, max_size=25))
def test_lazy_mapping_behaves_like_a_dict(initial: dict[str, Any], ops: list[Any]) -> None:
    stored = stored_form(initial)
    fields = SessionFields(codec, SESSION_KEY, stored)
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
@given(initial=st.dictionaries(names, values, min_size=1, max_size=5), data=st.data())
def test_unread_fields_are_never_rewritten(initial: dict[str, Any], data: st.DataObject) -> None:
    stored = stored_form(initial)
    fields = SessionFields(codec, SESSION_KEY, stored)
    read = data.draw(st.sets(st.sampled_from(sorted(initial))))
    for name in read:
        fields[name]
    delta = fields.delta(SESSION_KEY)
    assert not delta.sets and not delta.deletes and not delta.replace
    assert fields.decoded_count == len(read)


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
