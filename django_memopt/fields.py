"""The fields of one session: kept as stored bytes until read, with a record of changes.

This module imports nothing from Django. :class:`SessionFields` is what a session's
``_session_cache`` holds. It behaves as a ``dict`` (the property tests hold it to that),
decodes a field the first time it is read, and at save time works out the delta:

* a field **assigned** or **deleted** during the request is written or deleted;
* a field **decoded** during the request is written only if re-encoding it gives other
  bytes than were loaded, which catches ``session["cart"].append(x)``;
* a field never read is never decoded nor re-encoded; a full write carries its stored
  bytes over (re-sealed when the session key changed, still without decoding).
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from dataclasses import dataclass, field
from typing import Any, Final

from .codec import CorruptField, FieldCodec

__all__ = ["Delta", "SessionFields"]


class _Unread:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unread>"


_UNREAD: Final = _Unread()
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

    ``stored`` maps field names to stored bytes as the store returned them, sealed for
    session ``sealed_for``. A field whose tag or payload is bad is treated as absent: it
    is handed to ``on_corrupt``, dropped from this mapping and left in the store.
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
        "_replace",
        "_sealed_for",
        "_stored",
        "_values",
    )

    def __init__(
        self,
        codec: FieldCodec,
        sealed_for: str | None = None,
        stored: Mapping[str, bytes] | None = None,
        on_corrupt: CorruptHandler = _ignore_corrupt,
        counts: MutableMapping[str, int] | None = None,
    ) -> None:
        self._codec = codec
        self._sealed_for = sealed_for
        self._stored: dict[str, bytes] = dict(stored) if stored else {}
        self._values: dict[str, Any] = dict.fromkeys(self._stored, _UNREAD)
        self._assigned: set[str] = set()
        self._deleted: set[str] = set()
        # Names whose value is in memory and whose stored bytes are known: decoded, or
        # written by a save. Only these can have been changed in place.
        self._held: set[str] = set()
        self._decode_count = 0
        self._replace = False
        self._on_corrupt = on_corrupt
        self._counts = counts

    # -- the dict interface --------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        if value is _UNREAD:
            try:
                value = self._codec.decode(self._sealed_for or "", name, self._stored[name])
            except CorruptField as error:
                del self._values[name], self._stored[name]
                self._on_corrupt(name, error)
                raise KeyError(name) from None
            self._values[name] = value
            self._held.add(name)
            self._decode_count += 1
            if self._counts is not None:
                self._counts["fields_decoded"] += 1
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"session keys must be str, not {type(name).__name__}")
        self._values[name] = value
        self._assigned.add(name)
        self._deleted.discard(name)

    def __delitem__(self, name: str) -> None:
        del self._values[name]
        self._assigned.discard(name)
        self._held.discard(name)
        self._deleted.add(name)

    def get(self, name: str, default: Any = None) -> Any:
        # Without raising KeyError for a missing name: Django asks for absent keys
        # ("_session_expiry") several times per request.
        value = self._values.get(name, _MISSING)
        if value is _MISSING:
            return default
        if value is _UNREAD:
            try:
                return self[name]
            except KeyError:
                return default
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"

    def values(self) -> ValuesView[Any]:
        self.decode_all()
        return super().values()

    def items(self) -> ItemsView[str, Any]:
        self.decode_all()
        return super().items()

    def popitem(self) -> tuple[str, Any]:
        # Last in, first out, as dict.popitem (MutableMapping's pops the first).
        for name in reversed(self._values):
            value = self.pop(name, _UNREAD)
            if value is not _UNREAD:
                return name, value
        raise KeyError("popitem(): session is empty")

    def clear(self) -> None:
        # Without decoding anything: the next save replaces whatever is stored.
        self._values.clear()
        self._assigned.clear()
        self._held.clear()
        self._deleted.clear()
        self._replace = True

    def copy(self) -> dict[str, Any]:
        self.decode_all()
        return dict(self._values)

    # -- lazy decoding -------------------------------------------------------------------

    def decode_all(self) -> None:
        """Decode every unread field, dropping the corrupt ones."""
        for name in [name for name, value in self._values.items() if value is _UNREAD]:
            self.get(name)

    @property
    def decoded_count(self) -> int:
        """How many stored fields have been decoded so far."""
        return self._decode_count

    @property
    def loaded_count(self) -> int:
        """How many fields came from the store."""
        return len(self._stored)

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
                if value is not _UNREAD:
                    sets[name] = codec.seal(session_key, name, codec.pack(name, value))
                    continue
                carried = self._carry_over(session_key, name, self._stored[name])
                if carried is not None:
                    sets[name] = carried
            return Delta(sets, replace=True)
        # Only fields assigned, or held and changed in place, differ from what is stored.
        for name in self._assigned:
            sets[name] = codec.seal(session_key, name, codec.pack(name, self._values[name]))
        for name in self._held - self._assigned:
            if not codec.unchanged(self._values[name], self._stored[name]):
                payload = codec.pack(name, self._values[name])
                sets[name] = codec.seal(session_key, name, payload)
        return Delta(sets, frozenset(self._deleted - sets.keys()))

    def _carry_over(self, session_key: str, name: str, stored: bytes) -> bytes | None:
        """``stored`` sealed for ``session_key``; ``None`` if it fails its tag check."""
        if self._sealed_for == session_key:
            return stored
        try:
            return self._codec.reseal(self._sealed_for or "", session_key, name, stored)
        except CorruptField as error:
            # Never launder a bad field into a good tag: it stays behind.
            del self._values[name], self._stored[name]
            self._on_corrupt(name, error)
            return None

    def saved(self, session_key: str, delta: Delta) -> None:
        """Record that ``delta`` was applied: it is the new baseline for changes."""
        written = [name for name in delta.sets if self._values[name] is not _UNREAD]
        if delta.replace:
            self._stored = dict(delta.sets)
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
