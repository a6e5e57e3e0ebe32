"""The per-field codec: one msgpack payload per session field, sealed with a keyed tag.

This module imports nothing from Django. A stored field is::

    FORMAT (1 byte) | tag (16 bytes) | payload (msgpack)

The tag is a keyed BLAKE2b of the session key, the field name and the payload, so a
field cannot be forged, altered, moved to another field or copied into another session
without the key. Each field's tag is checked on its own (:meth:`FieldCodec.verify`), apart
from decoding its payload: a request that reads one field of fifty pays for one check and
one decode.

Supported values (each comes back as the same type):

=====================================  ==============================================
``None``, ``bool``, ``int``, ``float``   as is (any size of ``int``)
``str``, ``bytes``                       as is; ``bytearray`` and ``memoryview`` come
                                         back as ``bytes``
``list``, ``tuple``                      ``list`` (as with Django's JSON serializer)
``dict``                                 ``dict``; keys may be ``str``, ``int``,
                                         ``float``, ``bool`` or ``None`` and keep their
                                         type (JSON would turn them into ``str``)
``datetime.datetime``                    naive stays naive; aware keeps its UTC offset,
                                         and a ``zoneinfo.ZoneInfo`` zone comes back as
                                         the same zone
``datetime.date``, ``datetime.time``,    as is
``datetime.timedelta``
``decimal.Decimal``, ``uuid.UUID``       as is
=====================================  ==============================================

Subclasses of these (``str`` and ``int`` enums, ``OrderedDict``, named tuples...) are
stored as the value their base type holds, as Django's JSON serializer stores them: an
enum member as its value, never as what an overridden ``__str__`` or ``__int__`` returns.
Anything else raises ``TypeError`` naming the field. Nothing is ever unpickled: decoding
only builds the types above.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack

__all__ = [
    "MAX_DEPTH",
    "MAX_FIELD_SIZE",
    "CorruptField",
    "FieldCodec",
]

FORMAT: Final = 1
TAG_SIZE: Final = 16
HEADER_SIZE: Final = 1 + TAG_SIZE

#: A stored field larger than this is refused when saving and treated as corrupt when read.
MAX_FIELD_SIZE: Final = 8 * 1024 * 1024
#: Containers nested deeper than this are refused when saving (msgpack's own limit).
MAX_DEPTH: Final = 1023

_EXT_DATETIME: Final = 1
_EXT_DATE: Final = 2
_EXT_TIME: Final = 3
_EXT_TIMEDELTA: Final = 4
_EXT_DECIMAL: Final = 5
_EXT_UUID: Final = 6
_EXT_BIGINT: Final = 7

# Separates the keys derived here from any other use of the same secret.
_KEY_CONTEXT: Final = b"django_memopt.codec.field-tag.v1"


class CorruptField(ValueError):
    """A stored field failed its tag check or could not be decoded."""


def _default(obj: object) -> object:
    """Map a value msgpack does not know to an extension type or its base type.

    msgpack calls this for every value it meets, at any depth (dict keys too). A subclass
    is stored as the value its base type holds, read through the base type's own methods
    (unbound), as Django's JSON serializer reads it: an override of ``__str__``,
    ``__int__``, ``isoformat`` and the like never changes what is stored.
    """
    if isinstance(obj, datetime):
        # A ZoneInfo zone is kept by name (with fold, for the repeated hour), so the value
        # comes back as the same zone and wall time, not only the same UTC offset.
        tzinfo = datetime.tzinfo.__get__(obj)
        zone = tzinfo.key if isinstance(tzinfo, ZoneInfo) else None
        text = datetime.isoformat(obj)
        stamp = (text, zone, datetime.fold.__get__(obj)) if zone else (text,)
        return msgpack.ExtType(_EXT_DATETIME, msgpack.packb(stamp))
    if isinstance(obj, date):
        return msgpack.ExtType(_EXT_DATE, date.isoformat(obj).encode())
    if isinstance(obj, time):
        return msgpack.ExtType(_EXT_TIME, time.isoformat(obj).encode())
    if isinstance(obj, timedelta):
        parts = (
            timedelta.days.__get__(obj),
            timedelta.seconds.__get__(obj),
            timedelta.microseconds.__get__(obj),
        )
        return msgpack.ExtType(_EXT_TIMEDELTA, msgpack.packb(parts))
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, Decimal.__str__(obj).encode())
    if isinstance(obj, UUID):
        return msgpack.ExtType(_EXT_UUID, UUID.__int__(obj).to_bytes(16, "big"))
    # Subclasses of the types msgpack knows (packing is strict about types, see _pack);
    # each unbound method returns a plain instance holding the same value.
    if isinstance(obj, int):
        value = int.__int__(obj)
        if -(2**63) <= value < 2**64:
            return value
        return msgpack.ExtType(_EXT_BIGINT, int.__repr__(value).encode())  # beyond 64 bits
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, bytes):
        return bytes.__bytes__(obj)
    if isinstance(obj, bytearray):
        return bytearray.copy(obj)
    # Containers are copied through their iteration, as Django's JSON serializer reads
    # them; msgpack then stores their items by the rules above.
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    raise TypeError(f"values of type {type(obj).__name__!r} cannot be stored in a session")


def _ext_hook(code: int, data: bytes) -> object:
    """Rebuild an extension type; an unknown code is corrupt data, never guessed at."""
    if code == _EXT_DATETIME:
        text, *zoned = msgpack.unpackb(data)
        value = datetime.fromisoformat(text)
        if zoned:
            zone, fold = zoned
            try:
                return value.replace(tzinfo=ZoneInfo(zone), fold=fold)
            except (ZoneInfoNotFoundError, ValueError):
                pass  # The zone is unknown on this host; the UTC offset is still right.
        return value
    if code == _EXT_DATE:
        return date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return time.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        days, seconds, microseconds = msgpack.unpackb(data)
        return timedelta(days=days, seconds=seconds, microseconds=microseconds)
    if code == _EXT_DECIMAL:
        return Decimal(data.decode())
    if code == _EXT_UUID:
        return UUID(bytes=data)
    if code == _EXT_BIGINT:
        return int(data.decode())
    raise ValueError(f"unknown extension type {code}")


def _pack(value: Any) -> bytes:
    """The msgpack payload of ``value``; raises ``TypeError`` or ``ValueError``.

    Packing is strict about types so that tuples reach the ``default`` hook: a tuple used
    as a dict key packs but cannot be read back, so only a payload that held a tuple is
    read back to check it. Everything else costs one ``packb``.
    """
    saw_tuple = False

    def default(obj: object) -> object:
        nonlocal saw_tuple
        if isinstance(obj, tuple):
            saw_tuple = True
            return list(obj)
        return _default(obj)

    payload: bytes = msgpack.packb(value, default=default, strict_types=True)
    if saw_tuple:
        _unpack(payload)
    return payload


def _unpack(payload: bytes | memoryview) -> Any:
    return msgpack.unpackb(
        payload,
        ext_hook=_ext_hook,
        strict_map_key=False,  # int keys are allowed, as Django's JSON serializer allows them
        timestamp=0,
    )


def derive_key(secret: str | bytes) -> bytes:
    """The 32-byte tag key for one secret (Django's ``SECRET_KEY`` or a fallback)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.digest(secret, _KEY_CONTEXT, "sha256")


class FieldCodec:
    """Packs, seals, opens and unpacks session fields.

    ``keys`` are tag keys from :func:`derive_key`: the first seals, all of them open, so a
    secret can be rotated without losing sessions.
    """

    __slots__ = ("_hashers", "_session")

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._hashers = tuple(hashlib.blake2b(key=key, digest_size=TAG_SIZE) for key in keys)
        if not self._hashers:
            raise ValueError("FieldCodec needs at least one key")
        # The hashers of the last session key, already fed its framing: a request seals
        # and opens several fields of one session. One tuple, replaced whole, so threads
        # sharing the codec never see half an update.
        self._session: tuple[str, tuple[Any, ...]] = ("", ())

    @classmethod
    def from_secrets(cls, secrets: Iterable[str | bytes]) -> FieldCodec:
        return cls(derive_key(secret) for secret in secrets)

    # -- values <-> payloads -------------------------------------------------------------

    @staticmethod
    def pack(field: str, value: Any) -> bytes:
        """The msgpack payload of ``value``.

        Raises ``TypeError`` (unsupported type) or ``ValueError`` (too large, too deep),
        naming ``field``. The payload of a value is always the same bytes, which is what
        lets a save tell a value mutated in place from an untouched one.
        """
        try:
            payload = _pack(value)
        except TypeError as exc:
            raise TypeError(f"session key {field!r}: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"session key {field!r}: {exc}") from exc
        if len(payload) + HEADER_SIZE > MAX_FIELD_SIZE:
            raise ValueError(
                f"session key {field!r}: the value takes {len(payload)} bytes, "
                f"over the {MAX_FIELD_SIZE}-byte limit for one session field"
            )
        return payload

    @staticmethod
    def unpack(payload: bytes | memoryview) -> Any:
        """The value of a payload from :meth:`pack`; raises ``CorruptField``."""
        try:
            return _unpack(payload)
        except Exception as exc:  # msgpack raises many types; all mean the same here
            raise CorruptField(f"undecodable payload: {exc}") from exc

    @staticmethod
    def unchanged(value: Any, stored: bytes) -> bool:
        """Whether ``value``, decoded from ``stored``, still encodes to the same payload.

        Only lists and dicts can change in place; any other decoded value is immutable.
        """
        if not isinstance(value, list | dict):
            return True
        try:
            return _pack(value) == stored[HEADER_SIZE:]
        except (TypeError, ValueError):
            return False  # now holds something unsupported: pack() will say what

    # -- payloads <-> stored bytes -------------------------------------------------------

    def _session_hashers(self, session_key: str) -> tuple[Any, ...]:
        cached_key, hashers = self._session
        if cached_key != session_key or not hashers:
            # Length-prefixed framing, so no two (session key, field) pairs frame alike.
            frame = b"%d:%s" % (len(session_key), session_key.encode())
            prefixed = []
            for hasher in self._hashers:
                prefixed.append(hasher.copy())
                prefixed[-1].update(frame)
            hashers = tuple(prefixed)
            self._session = (session_key, hashers)
        return hashers

    @staticmethod
    def _tag(hasher: Any, field: str, payload: bytes) -> bytes:
        h = hasher.copy()
        name = field.encode("utf-8", "surrogatepass")
        h.update(b"%d:%s%s" % (len(name), name, payload))
        return h.digest()  # type: ignore[no-any-return]

    def seal(self, session_key: str, field: str, payload: bytes) -> bytes:
        """The stored form of ``payload`` for ``field`` of session ``session_key``."""
        tag = self._tag(self._session_hashers(session_key)[0], field, payload)
        return b"%c%s%s" % (FORMAT, tag, payload)

    def verify(self, session_key: str, field: str, stored: bytes) -> None:
        """Check the tag of ``stored`` for ``field`` of session ``session_key``.

        Raises ``CorruptField``. Hashes the payload without decoding it, so a field's
        presence can be checked on its own.
        """
        if type(stored) is not bytes:
            raise CorruptField(f"stored field is a {type(stored).__name__}, not bytes")
        if not HEADER_SIZE <= len(stored) <= MAX_FIELD_SIZE:
            raise CorruptField(f"stored field has an impossible size ({len(stored)} bytes)")
        if stored[0] != FORMAT:
            raise CorruptField(f"unknown field format {stored[0]}")
        tag, payload = stored[1:HEADER_SIZE], stored[HEADER_SIZE:]
        name = field.encode("utf-8", "surrogatepass")
        framed = b"%d:%s%s" % (len(name), name, payload)
        for hasher in self._session_hashers(session_key):
            h = hasher.copy()
            h.update(framed)
            if hmac.compare_digest(tag, h.digest()):
                return
        raise CorruptField("authentication tag does not match")

    @staticmethod
    def payload(stored: bytes) -> bytes:
        """The payload inside ``stored``, unchecked: for bytes :meth:`verify` accepted."""
        return stored[HEADER_SIZE:]

    def open(self, session_key: str, field: str, stored: bytes) -> bytes:
        """The payload inside ``stored`` after checking its tag; raises ``CorruptField``."""
        self.verify(session_key, field, stored)
        return self.payload(stored)

    def reseal(self, old_key: str, new_key: str, field: str, stored: bytes) -> bytes:
        """``stored`` checked under ``old_key`` and sealed for ``new_key``, not decoded."""
        return self.seal(new_key, field, self.open(old_key, field, stored))

    # -- both steps ----------------------------------------------------------------------

    def encode(self, session_key: str, field: str, value: Any) -> bytes:
        return self.seal(session_key, field, self.pack(field, value))

    def decode(self, session_key: str, field: str, stored: bytes) -> Any:
        return self.unpack(self.open(session_key, field, stored))
