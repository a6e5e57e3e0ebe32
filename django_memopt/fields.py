"""The fields of one session: kept as stored bytes until read, with a record of changes.

This module imports nothing from Django. :class:`SessionFields` is what a session's
``_session_cache`` holds. It behaves as a ``dict`` (the property tests hold it to that),
decodes a field the first time it is read, and at save time works out the delta:

* a field **assigned** or **deleted** during the request is written or deleted;
* a field **decoded** during the request is written only if packing its value again gives
  another payload than the one decoded, which catches ``session["cart"].append(x)``;
* a field never read is never decoded nor re-encoded; a full write carries its stored
  bytes over (re-sealed when the session key changed, still without decoding).

A stored field may come as the object that holds it (a record's block of small fields,
see :mod:`django_memopt.records`) instead of its bytes: it is asked for them the first
time the field is named, and a field it cannot give is absent, as a corrupt one is.

A field whose tag does not verify is absent, alike through every method and at every
moment. Its tag is checked once, without decoding, the first time the field is named
(``in``, reading, assigning, deleting) or the mapping shows its names (iteration, ``len``,
``keys()``, ``repr``); decoding it later does not check it again.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .codec import CorruptField, FieldCodec

__all__ = ["Delta", "Holder", "SessionFields"]


class Holder(Protocol):
    """What holds a stored field's bytes until they are asked for."""

    def sealed(self, name: str) -> bytes | None:
        """The sealed bytes of field ``name``; ``None`` if they cannot be had."""


class _Unread:
    """What the mapping holds for a stored field not decoded yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unread>"


_UNREAD: Final = _Unread()  # its tag has been checked
_UNCHECKED: Final = _Unread()  # its tag has not been checked yet: it may be corrupt
_MISSING: Final = object()

CorruptHandler = Callable[[str, CorruptField], None]


def _ignore_corrupt(name: str, error: CorruptField) -> None:
    pass


@dataclass(slots=True)
class Delta:
    """What one save applies to the stored session.

    ``replace`` means the stored fields are dropped first, so ``sets`` is the whole
    session (a create, a key change, or a save after ``clear()``).
    """

    sets: dict[str, bytes] = field(default_factory=dict)
    deletes: frozenset[str] = frozenset()
    replace: bool = False

    def __bool__(self) -> bool:
        return bool(self.sets or self.deletes or self.replace)


class SessionFields(MutableMapping[str, Any]):
    """A session's fields, decoded on first read.

    ``stored`` maps field names to stored bytes as the store returned them (or to what
    holds them, a :class:`Holder`), sealed for session ``sealed_for``. A field whose tag
    is bad is treated as absent: the first time its tag is checked, it is handed to
    ``on_corrupt``, dropped from this mapping and left in the store (a full write does
    not carry it over). A field whose tag is good but whose
    payload cannot be decoded (written by a release that knows more types) counts as
    present until it is read, then is dropped the same way.
    Each field decoded adds 1 to ``counts["fields_decoded"]`` when ``counts`` is given.
    """

    __slots__ = (
        "_assigned",
        "_codec",
        "_decode_count",
        "_deleted",
        "_held",
        "_on_corrupt",
        "_counts",
        "_payloads",
        "_replace",
        "_sealed_for",
        "_stored",
        "_unchecked",
        "_values",
    )

    def __init__(
        self,
        codec: FieldCodec,
        sealed_for: str | None = None,
        stored: Mapping[str, bytes | Holder] | None = None,
        on_corrupt: CorruptHandler = _ignore_corrupt,
        counts: MutableMapping[str, int] | None = None,
    ) -> None:
        self._codec = codec
        self._sealed_for = sealed_for
        # A Holder is replaced by the bytes it gives when the field's tag is checked.
        self._stored: dict[str, Any] = dict(stored) if stored else {}
        self._values: dict[str, Any] = dict.fromkeys(self._stored, _UNCHECKED)
        # Whether some field may still be _UNCHECKED, so not known to be present.
        self._unchecked = bool(self._stored)
        self._assigned: set[str] = set()
        self._deleted: set[str] = set()
        # Names whose value is in memory and whose stored bytes are known: decoded, or
        # written by a save. Only these can have been changed in place.
        self._held: set[str] = set()
        # The payloads lists and dicts were decoded from (held names only): what a save
        # compares their values with, without decompressing the stored bytes again.
        self._payloads: dict[str, bytes] = {}
        self._decode_count = 0
        self._replace = False
        self._on_corrupt = on_corrupt
        self._counts = counts

    # -- the dict interface --------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        if value is _UNCHECKED:
            if not self._verify(name):
                raise KeyError(name)
            value = _UNREAD
        if value is _UNREAD:
            codec = self._codec
            try:
                payload = codec.payload(self._stored[name])
                value = codec.unpack(payload)
            except CorruptField as error:
                self._drop(name, error)
                raise KeyError(name) from None
            if isinstance(value, list | dict):
                self._payloads[name] = payload
            self._values[name] = value
            self._held.add(name)
            self._decode_count += 1
            if self._counts is not None:
                self._counts["fields_decoded"] += 1
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"session keys must be str, not {type(name).__name__}")
        if self._values.get(name) is _UNCHECKED:
            # A dict keeps a present name in its place but appends an absent one.
            self._verify(name)
        self._values[name] = value
        self._assigned.add(name)
        self._deleted.discard(name)
        self._payloads.pop(name, None)

    def __delitem__(self, name: str) -> None:
        if self._values[name] is _UNCHECKED and not self._verify(name):
            raise KeyError(name)
        del self._values[name]
        self._assigned.discard(name)
        self._held.discard(name)
        self._payloads.pop(name, None)
        self._deleted.add(name)

    def get(self, name: str, default: Any = None) -> Any:
        # Without raising KeyError for a missing name: Django asks for absent keys
        # ("_session_expiry") several times per request.
        value = self._values.get(name, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, _Unread):
            try:
                return self[name]
            except KeyError:
                return default
        return value

    def __contains__(self, name: Any) -> bool:
        value = self._values.get(name, _MISSING)
        if value is _UNCHECKED:
            return self._verify(name)
        return value is not _MISSING

    def __iter__(self) -> Iterator[str]:
        self._verify_all()
        return iter(self._values)

    def __reversed__(self) -> Iterator[str]:
        self._verify_all()
        return reversed(self._values)

    def __len__(self) -> int:
        self._verify_all()
        return len(self._values)

    def __repr__(self) -> str:
        self._verify_all()
        return f"{type(self).__name__}({self._values!r})"

    def values(self) -> ValuesView[Any]:
        self.decode_all()
        return super().values()

    def items(self) -> ItemsView[str, Any]:
        self.decode_all()
        return super().items()

    def popitem(self) -> tuple[str, Any]:
        # Last in, first out, as dict.popitem (MutableMapping's pops the first). Over a
        # copy: a field that cannot be decoded is dropped on the way.
        for name in reversed(list(self)):
            value = self.pop(name, _MISSING)
            if value is not _MISSING:
                return name, value
        raise KeyError("popitem(): session is empty")

    def clear(self) -> None:
        # Without decoding anything: the next save replaces whatever is stored.
        self._values.clear()
        self._unchecked = False
        self._assigned.clear()
        self._held.clear()
        self._payloads.clear()
        self._deleted.clear()
        self._replace = True

    def copy(self) -> dict[str, Any]:
        self.decode_all()
        return dict(self._values)

    # -- lazy checking and decoding ------------------------------------------------------

    def _verify(self, name: str) -> bool:
        """Check the tag of ``name``, still _UNCHECKED; whether it is good (else dropped)."""
        stored = self._stored[name]
        try:
            holder = None if type(stored) is bytes else getattr(stored, "sealed", None)
            if holder is not None:
                stored = holder(name)
                if stored is None:
                    raise CorruptField("the record's block of small fields cannot be read")
                self._stored[name] = stored
            self._codec.verify(self._sealed_for or "", name, stored)
        except CorruptField as error:
            self._drop(name, error)
            return False
        self._values[name] = _UNREAD
        return True

    def _drop(self, name: str, error: CorruptField) -> None:
        del self._values[name], self._stored[name]
        self._on_corrupt(name, error)

    def _verify_all(self) -> None:
        """Check every tag not checked yet, dropping the corrupt fields, without decoding."""
        if self._unchecked:
            for name in [name for name, value in self._values.items() if value is _UNCHECKED]:
                self._verify(name)
            self._unchecked = False

    def decode_all(self) -> None:
        """Decode every unread field, dropping the corrupt ones."""
        for name in [name for name, value in self._values.items() if isinstance(value, _Unread)]:
            self.get(name)

    @property
    def decoded_count(self) -> int:
        """How many stored fields have been decoded so far."""
        return self._decode_count

    @property
    def loaded_count(self) -> int:
        """How many fields came from the store."""
        return len(self._stored)

    def changes(self, name: str, session_key: str) -> bool:
        """Whether a save of this mapping as session ``session_key`` may change field
        ``name``: it was assigned or deleted, or the save is a whole write (see
        :meth:`delta`). Fields changed in place are not looked at: for fields holding
        immutable values (such as Django's ``_auth_user_id``)."""
        return (
            name in self._assigned
            or name in self._deleted
            or self._replace
            or self._sealed_for != session_key
        )

    def holds(self, name: str) -> bool:
        """Whether field ``name`` is in this mapping, its tag unchecked: a check that costs
        no hashing and no decompression (``in`` checks the tag). A corrupt field is
        present here until it is read."""
        return name in self._values

    def stored_value(self, name: str) -> Any:
        """The value field ``name`` has in the store as loaded (or last saved), whatever
        this mapping did to it since; ``None`` if it has none or it is corrupt."""
        stored = self._stored.get(name)
        if stored is None:
            return None
        if not (name in self._assigned or name in self._deleted or self._replace):
            return self.get(name)
        try:
            if type(stored) is not bytes:
                stored = stored.sealed(name)
                if stored is None:
                    return None
            return self._codec.decode(self._sealed_for or "", name, stored)
        except CorruptField:
            return None

    # -- saving --------------------------------------------------------------------------

    def delta(self, session_key: str, *, full: bool = False) -> Delta:
        """What a save of this mapping as session ``session_key`` must apply.

        ``full`` asks for every field (a create). A save under another key than the one
        the fields were loaded for, or after ``clear()``, is always full.
        """
        codec = self._codec
        sets: dict[str, bytes] = {}
        if full or self._replace or self._sealed_for != session_key:
            for name, value in list(self._values.items()):
                if not isinstance(value, _Unread):
                    sets[name] = codec.seal(session_key, name, codec.pack(name, value))
                    continue
                carried = self._carry_over(session_key, name, value)
                if carried is not None:
                    sets[name] = carried
            return Delta(sets, replace=True)
        # Only fields assigned, or held and changed in place, differ from what is stored.
        for name in self._assigned:
            sets[name] = codec.seal(session_key, name, codec.pack(name, self._values[name]))
        for name in self._held - self._assigned:
            payload = self._payloads.get(name)
            if payload is None:  # written by an earlier save of this mapping
                payload = codec.payload(self._stored[name])
            if not codec.unchanged(self._values[name], payload):
                payload = codec.pack(name, self._values[name])
                sets[name] = codec.seal(session_key, name, payload)
        return Delta(sets, frozenset(self._deleted - sets.keys()))

    def _carry_over(self, session_key: str, name: str, value: _Unread) -> bytes | None:
        """The stored bytes of ``name`` sealed for ``session_key``; ``None`` if corrupt."""
        if value is _UNCHECKED and not self._verify(name):
            return None  # never launder a bad field into a good tag: it stays behind
        stored: bytes = self._stored[name]  # checked, so bytes
        if self._sealed_for == session_key:
            return stored
        return self._codec.carry(session_key, name, stored)

    def saved(self, session_key: str, delta: Delta) -> None:
        """Record that ``delta`` was applied: it is the new baseline for changes."""
        written = [name for name in delta.sets if not isinstance(self._values[name], _Unread)]
        for name in delta.sets:
            self._payloads.pop(name, None)  # now stored as what this save packed
        if delta.replace:
            self._stored = dict(delta.sets)
            self._unchecked = False  # the delta checked every field it carried over
            self._held = set(written)
        else:
            self._stored.update(delta.sets)
            for name in delta.deletes:
                self._stored.pop(name, None)
            self._held.update(written)
        self._sealed_for = session_key
        self._assigned.clear()
        self._deleted.clear()
        self._replace = False
