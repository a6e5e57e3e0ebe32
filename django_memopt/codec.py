"""The per-field codec: one msgpack payload per session field, sealed with a keyed tag.

This module imports nothing from Django. A stored field is::

    format (1 byte) | tag (8 bytes) | body

The format byte is ``0x20`` plus how the body is stored, in its two low bits (see
:mod:`django_memopt.compression`): ``0x20`` the payload as it is, ``0x21`` deflated,
``0x22`` zstd. A payload under 128 bytes, or one that compression shrinks by less than 8
bytes, is stored as it is.

The tag is a keyed BLAKE2b of the session key and the field name (each length-prefixed),
the format byte and the body as stored, so a field cannot be forged, altered, moved to
another field or copied into another session without the key, and a body is only ever
decompressed after its tag is checked. Each field's tag is checked on its own
(:meth:`FieldCodec.verify`), apart from decoding its payload: a request that reads one
field of fifty pays for one check and one decode.

Fields sealed by earlier releases (format 1: the byte ``0x01``, a 16-byte tag under a key
of its own, the payload uncompressed) are read and verified as they were, for good;
every field written is sealed as format 2, and one carried to a new session key is
sealed again as format 2 without decoding its payload.

Supported values (each comes back as the same type):

=====================================  ==============================================
``None``, ``bool``, ``int``, ``float``   as is (any size of ``int``)
``str``, ``bytes``                       as is; ``bytearray`` and ``memoryview`` come
                                         back as ``bytes``. A field's value that is
                                         a lowercase hex ``str`` of 32 to 256
                                         characters (``_auth_user_hash``) is
                                         stored as the bytes it spells
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
import re
import threading
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack

from .compression import (
    METHODS,
    MIN_SIZE,
    PLAIN,
    DecompressionError,
    compress,
    compress_with,
    decompress,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_FIELD_SIZE",
    "CorruptField",
    "FieldCodec",
]

#: The format byte of a field sealed now, before its compression bits (format 2).
FORMAT: Final = 0x20
TAG_SIZE: Final = 8
HEADER_SIZE: Final = 1 + TAG_SIZE
_COMPRESSION_BITS: Final = 0x03
# The format bytes of format 2, each as a byte string to join a stored field from.
_FORMATS: Final = {FORMAT | method: bytes((FORMAT | method,)) for method in METHODS}

# Fields sealed by earlier releases: read and verified, never written.
FORMAT_1: Final = 0x01
TAG_SIZE_1: Final = 16
HEADER_SIZE_1: Final = 1 + TAG_SIZE_1

#: A stored field larger than this, or whose payload decompresses past it, is refused when
#: saving and treated as corrupt when read.
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
_EXT_HEX: Final = 8

# Separates the keys derived here from any other use of the same secret, and the keys of
# the two formats from each other.
_KEY_CONTEXT: Final = b"django_memopt.codec.field-tag.v2"
_KEY_CONTEXT_1: Final = b"django_memopt.codec.field-tag.v1"

# A field's value stored as the bytes it spells: the length of a hex digest or token.
_HEX_SIZES: Final = range(32, 257, 2)
_LOWER_HEX: Final = re.compile(r"[0-9a-f]+")
# A thread keeps its msgpack packer (making one costs as much as packing a small field),
# unless a large payload grew its buffer past this.
_PACKER_KEEPS: Final = 256 * 1024


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
    if code == _EXT_HEX:  # first: every logged-in session has one (_auth_user_hash)
        return data.hex()
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


_local = threading.local()


def _default_noting_tuples(obj: object) -> object:
    if isinstance(obj, tuple):
        _local.saw_tuple = True
        return list(obj)
    return _default(obj)


def _pack(value: Any) -> bytes:
    """The msgpack payload of ``value``; raises ``TypeError`` or ``ValueError``.

    Packing is strict about types so that tuples reach the ``default`` hook: a tuple used
    as a dict key packs but cannot be read back, so only a payload that held a tuple is
    read back to check it. Everything else costs one ``pack``, with this thread's packer.
    """
    if type(value) is str and len(value) in _HEX_SIZES and _LOWER_HEX.fullmatch(value):
        # What msgpack makes of ExtType(_EXT_HEX, raw), without building an ExtType
        # (which costs more than the rest): fixext 16, else ext 8 (17 to 128 bytes).
        raw = bytes.fromhex(value)
        if len(raw) == 16:
            return b"\xd8%c%s" % (_EXT_HEX, raw)
        return b"\xc7%c%c%s" % (len(raw), _EXT_HEX, raw)
    local = _local
    packer = getattr(local, "packer", None)
    if packer is None:
        packer = msgpack.Packer(default=_default_noting_tuples, strict_types=True)
        local.packer = packer
    local.saw_tuple = False
    payload: bytes = packer.pack(value)  # on an error msgpack empties the packer's buffer
    if len(payload) > _PACKER_KEEPS:
        local.packer = None
    if local.saw_tuple:
        _unpack(payload)
    return payload


def _unpack(payload: bytes | memoryview) -> Any:
    return msgpack.unpackb(
        payload,
        ext_hook=_ext_hook,
        strict_map_key=False,  # int keys are allowed, as Django's JSON serializer allows them
        timestamp=0,
    )


def derive_key(secret: str | bytes, context: bytes = _KEY_CONTEXT) -> bytes:
    """The 32-byte tag key for one secret (Django's ``SECRET_KEY`` or a fallback)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.digest(secret, context, "sha256")


# _head() of the field names met lately: a request names the same few fields again and
# again. Emptied when full, so names from stored sessions cannot make it grow.
_heads: dict[tuple[str, int], bytes] = {}
_HEADS_KEPT: Final = 512


def _head(field: str, fmt: int) -> bytes:
    """What a format-2 tag covers after the session key and before the body: the field
    name, length-prefixed, and the format byte."""
    head = _heads.get((field, fmt))
    if head is None:
        name = field.encode("utf-8", "surrogatepass")
        head = b"%d:%s%c" % (len(name), name, fmt)
        if len(_heads) >= _HEADS_KEPT:
            _heads.clear()
        _heads[field, fmt] = head
    return head


class FieldCodec:
    """Packs, seals, opens and unpacks session fields.

    Tag keys are derived from ``secrets``: the first seals, all of them open, so a secret
    can be rotated without losing sessions. ``compression`` forces one method of
    :mod:`django_memopt.compression` for every field sealed (for tests and measurements);
    by default :func:`~django_memopt.compression.compress` chooses for payloads of at least
    ``compress_from`` bytes (``None``: none is compressed).
    """

    __slots__ = (
        "_compress_from",
        "_compression",
        "_hashers",
        "_hashers_1",
        "_session",
        "_session_1",
    )

    def __init__(
        self,
        secrets: Iterable[str | bytes],
        *,
        compression: int | None = None,
        compress_from: int | None = MIN_SIZE,
    ) -> None:
        secrets = tuple(secrets)
        if not secrets:
            raise ValueError("FieldCodec needs at least one secret")
        self._hashers = tuple(
            hashlib.blake2b(key=derive_key(secret), digest_size=TAG_SIZE) for secret in secrets
        )
        self._hashers_1 = tuple(
            hashlib.blake2b(key=derive_key(secret, _KEY_CONTEXT_1), digest_size=TAG_SIZE_1)
            for secret in secrets
        )
        self._compression = compression
        # A payload shorter than this is stored as it is, without a call.
        self._compress_from = max(MIN_SIZE, compress_from) if compress_from else MAX_FIELD_SIZE + 1
        # The hashers of the last two session keys, already fed their framing: a request
        # seals and opens several fields of one session, and cycle_key() alternates
        # between the old key and the new one. One tuple, replaced whole, so threads
        # sharing the codec never see half an update.
        self._session: tuple[tuple[str, tuple[Any, ...]], ...] = ()
        self._session_1: tuple[str, tuple[Any, ...]] = ("", ())

    @classmethod
    def from_secrets(
        cls, secrets: Iterable[str | bytes], *, compress_from: int | None = MIN_SIZE
    ) -> FieldCodec:
        return cls(secrets, compress_from=compress_from)

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
    def unchanged(value: Any, payload: bytes) -> bool:
        """Whether ``value``, decoded from ``payload`` (as :meth:`payload` returned it,
        decompressed), still packs to the same payload.

        Only lists and dicts can change in place; any other decoded value is immutable.
        """
        if not isinstance(value, list | dict):
            return True
        try:
            return _pack(value) == payload
        except (TypeError, ValueError):
            return False  # now holds something unsupported: pack() will say what

    # -- payloads <-> stored bytes -------------------------------------------------------

    def _session_hashers(self, session_key: str) -> tuple[Any, ...]:
        cached = self._session
        for cached_key, hashers in cached:
            if cached_key == session_key:
                return hashers
        # Length-prefixed, as the field name is in _head(), so no two (session key, field)
        # pairs frame alike.
        key = session_key.encode("utf-8", "surrogatepass")
        frame = b"%d:%s" % (len(key), key)
        prefixed = []
        for hasher in self._hashers:
            prefixed.append(hasher.copy())
            prefixed[-1].update(frame)
        hashers = tuple(prefixed)
        self._session = ((session_key, hashers), *cached[:1])
        return hashers

    def _session_hashers_1(self, session_key: str) -> tuple[Any, ...]:
        cached_key, hashers = self._session_1
        if cached_key != session_key or not hashers:
            # Format 1 framed the key by its length in characters.
            frame = b"%d:%s" % (len(session_key), session_key.encode())
            prefixed = []
            for hasher in self._hashers_1:
                prefixed.append(hasher.copy())
                prefixed[-1].update(frame)
            hashers = tuple(prefixed)
            self._session_1 = (session_key, hashers)
        return hashers

    def _sealed(self, session_key: str, field: str, fmt: int, body: bytes | memoryview) -> bytes:
        h = self._session_hashers(session_key)[0].copy()
        h.update(_head(field, fmt))
        h.update(body)  # the stored body itself, not a copy framed with the head
        return b"".join((_FORMATS[fmt], h.digest(), body))

    def seal(self, session_key: str, field: str, payload: bytes) -> bytes:
        """The stored form of ``payload`` for ``field`` of session ``session_key``:
        compressed if that pays, then tagged (so the tag hashes the smaller body)."""
        if self._compression is not None:
            method, body = self._compression, compress_with(self._compression, payload)
        elif len(payload) < self._compress_from:
            method, body = PLAIN, payload  # the common case, without a call
        else:
            method, body = compress(payload)
        return self._sealed(session_key, field, FORMAT | method, body)

    def verify(self, session_key: str, field: str, stored: bytes) -> None:
        """Check the tag of ``stored`` for ``field`` of session ``session_key``.

        Raises ``CorruptField``. Hashes the body without decompressing or decoding it, so
        a field's presence can be checked on its own.
        """
        if type(stored) is not bytes:
            raise CorruptField(f"stored field is a {type(stored).__name__}, not bytes")
        size = len(stored)
        if not 0 < size <= MAX_FIELD_SIZE:
            raise CorruptField(f"stored field has an impossible size ({size} bytes)")
        fmt = stored[0]
        if fmt in _FORMATS:
            hashers = self._session_hashers(session_key)
            header_size = HEADER_SIZE
            head = _head(field, fmt)
        elif fmt == FORMAT_1:
            hashers = self._session_hashers_1(session_key)
            header_size = HEADER_SIZE_1
            name = field.encode("utf-8", "surrogatepass")
            head = b"%d:%s" % (len(name), name)
        else:
            raise CorruptField(f"unknown field format {fmt}")
        if size < header_size:
            raise CorruptField(f"stored field has an impossible size ({size} bytes)")
        tag = stored[1:header_size]
        # A copy: cheaper than a memoryview up to a few KiB, and a tenth of the hashing.
        body = stored[header_size:]
        for hasher in hashers:
            h = hasher.copy()
            h.update(head)
            h.update(body)
            if hmac.compare_digest(tag, h.digest()):
                return
        raise CorruptField("authentication tag does not match")

    @staticmethod
    def payload(stored: bytes) -> bytes:
        """The payload inside ``stored``, decompressed but unchecked: for bytes
        :meth:`verify` accepted. Raises ``CorruptField`` if it cannot be decompressed."""
        fmt = stored[0]
        if fmt == FORMAT_1:
            return stored[HEADER_SIZE_1:]
        method = fmt & _COMPRESSION_BITS
        if method == PLAIN:
            return stored[HEADER_SIZE:]
        try:
            return decompress(method, memoryview(stored)[HEADER_SIZE:], MAX_FIELD_SIZE)
        except DecompressionError as exc:
            raise CorruptField(str(exc)) from exc

    def open(self, session_key: str, field: str, stored: bytes) -> bytes:
        """The payload inside ``stored`` after checking its tag; raises ``CorruptField``."""
        self.verify(session_key, field, stored)
        return self.payload(stored)

    def carry(self, session_key: str, field: str, stored: bytes) -> bytes:
        """``stored``, which :meth:`verify` accepted for another session key, sealed for
        ``session_key`` without decoding: a format-2 body is kept as it is, a format-1
        payload is sealed as format 2."""
        fmt = stored[0]
        if fmt == FORMAT_1:
            return self.seal(session_key, field, stored[HEADER_SIZE_1:])
        return self._sealed(session_key, field, fmt, memoryview(stored)[HEADER_SIZE:])

    def reseal(self, old_key: str, new_key: str, field: str, stored: bytes) -> bytes:
        """``stored`` checked under ``old_key`` and sealed for ``new_key``, not decoded."""
        self.verify(old_key, field, stored)
        return self.carry(new_key, field, stored)

    # -- both steps ----------------------------------------------------------------------

    def encode(self, session_key: str, field: str, value: Any) -> bytes:
        return self.seal(session_key, field, self.pack(field, value))

    def decode(self, session_key: str, field: str, stored: bytes) -> Any:
        return self.unpack(self.open(session_key, field, stored))
