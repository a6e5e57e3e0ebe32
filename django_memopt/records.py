"""A session as one record: its deadline, then layers of sealed fields. Bytes in, bytes out.

This module imports nothing from Django. A record of format 1, the one this release
writes::

    FORMAT (1 byte) | deadline (8 bytes: epoch milliseconds, big-endian) | layers (msgpack)

``layers`` is a msgpack array of 1 to ``MAX_LAYERS`` maps, oldest first, each mapping a
field name (str) to its sealed bytes (bin, see :mod:`django_memopt.codec`) or to nil (the
field was deleted by that layer). Reading merges the layers in order, decoding no value.
A save appends its delta as a new layer, copying the stored bytes as they are, so its
cost does not grow with what it did not touch; past ``MAX_LAYERS`` the layers are merged
into one and the record is written whole.

Format versions: every format begins with the same header (its number, then the
deadline), and ``_LAYERS_READERS`` holds, for each format this release reads, how to read
its layers. A later format adds its reader beside format 1's, so the records this release
wrote stay readable; appending a layer (:func:`with_layer`) works on the format written
now only, so an older record is rewritten in it at its next save. A record of a format no
reader knows is damaged: it reads as absent.

What no save writes (a name that is not text, a value that is neither bytes nor nil) is
left out of every read and handed to the caller's ``on_bad_entry``, never raised.

The expiry index of a store that keeps one (LMDB's) is here too: its keys sort by
deadline rounded up to ``INDEX_GRANULARITY_MS``, so a sweep reads only what has expired.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgpack

__all__ = [
    "FORMAT",
    "HEADER",
    "HEADER_SIZE",
    "INDEX_GRANULARITY_MS",
    "MAX_LAYERS",
    "BadEntry",
    "deadline",
    "fields",
    "index_bucket",
    "index_key",
    "merged",
    "pack",
    "with_deadline",
    "with_layer",
]

#: The format this release writes.
FORMAT: Final = 1
#: Every format's header: the format's number, then the deadline in epoch ms.
HEADER: Final = struct.Struct(">BQ")
HEADER_SIZE: Final = HEADER.size
#: At most this many layers per record (a one-byte msgpack array header holds 15).
MAX_LAYERS: Final = 8
_FIXARRAY: Final = 0x90
INDEX_GRANULARITY_MS: Final = 60_000

#: Told of each entry no save writes, which a read leaves out: its name and its value.
BadEntry = Callable[[str | bytes, object], None]


def _ignore(name: str | bytes, stored: object) -> None:
    pass


def _layers_v1(body: bytes | memoryview) -> list[Any] | None:
    """The layers of a format-1 body; ``None`` if it is no array of maps."""
    try:
        layers = msgpack.unpackb(body)
    except Exception:  # any msgpack error: the record is damaged
        return None
    if type(layers) is not list or not layers or type(layers[0]) is not dict:
        return None
    return layers


# Each format this release reads -> the layers of a body of that format (None: damaged).
_LAYERS_READERS: Final[dict[int, Callable[[bytes | memoryview], list[Any] | None]]] = {
    1: _layers_v1,
}


def deadline(stored: bytes | memoryview | None) -> int | None:
    """The record's deadline in epoch ms; ``None`` for no record or one of no known format.

    Reads the header only: a record damaged further in still has its deadline (so a
    sweep can find it), and :func:`fields` says whether it can be read.
    """
    if stored is None or len(stored) < HEADER_SIZE:
        return None
    record_format, expires_ms = HEADER.unpack_from(stored)
    return expires_ms if record_format in _LAYERS_READERS else None


def fields(
    stored: bytes | memoryview, on_bad_entry: BadEntry = _ignore
) -> dict[str, bytes] | None:
    """The sealed fields of a record, its layers merged; ``None`` if it is unreadable.

    An entry no save writes is left out and handed to ``on_bad_entry``: a name that is
    not text, or a value that is neither bytes nor nil. The values of a first layer whose
    names are all text are not looked at (that would cost every load): the codec refuses
    a value that is not bytes, and :func:`merged` drops it.
    """
    reader = _LAYERS_READERS.get(stored[0]) if len(stored) >= HEADER_SIZE else None
    layers = None if reader is None else reader(stored[HEADER_SIZE:])
    if layers is None:
        return None
    result: dict[str, bytes] = layers[0]
    try:
        "".join(result)  # names are text or bytes (msgpack's strict_map_key): are all text?
    except TypeError:
        result = {}
    else:
        layers = layers[1:]
    for layer in layers:
        if type(layer) is not dict:
            return None
        for name, sealed in layer.items():
            if type(name) is not str or (sealed is not None and type(sealed) is not bytes):
                on_bad_entry(name, sealed)
            elif sealed is None:
                result.pop(name, None)
            else:
                result[name] = sealed
    return result


def merged(
    stored: bytes | memoryview,
    sets: Mapping[str, bytes],
    deletes: Iterable[str],
    on_bad_entry: BadEntry = _ignore,
) -> dict[str, bytes] | None:
    """The fields of ``stored`` with ``sets`` and ``deletes`` applied, for a rewrite;
    ``None`` if it is unreadable. Every entry is checked: a bad one is dropped (and handed
    to ``on_bad_entry``), never written back as if it were a sealed field."""
    result = fields(stored, on_bad_entry)
    if result is None:
        return None
    for name, sealed in list(result.items()):
        if type(sealed) is not bytes:
            on_bad_entry(name, sealed)
            del result[name]
    result.update(sets)
    for name in deletes:
        result.pop(name, None)
    return result


def pack(expires_ms: int, sealed: Mapping[str, bytes]) -> bytes:
    """A record, in the current format, of one layer holding ``sealed``."""
    return HEADER.pack(FORMAT, expires_ms) + msgpack.packb([sealed])


def _is_map_marker(byte: int) -> bool:
    return 0x80 <= byte <= 0x8F or byte in (0xDE, 0xDF)


def with_layer(
    stored: bytes | memoryview, expires_ms: int, sets: Mapping[str, bytes], deletes: Iterable[str]
) -> bytes | None:
    """``stored`` with ``sets`` and ``deletes`` appended as a layer, under the deadline
    ``expires_ms``; ``None`` if it must be rewritten whole instead (:func:`merged`): it
    has ``MAX_LAYERS`` layers, or is of another format than the current one.

    Only the container's first bytes are checked (an array of maps): a record damaged
    further in stays unreadable, as it already was, and an entry no save writes stays as
    it was, left out of every read, until a merge drops it.
    """
    if (
        len(stored) < HEADER_SIZE + 2
        or stored[0] != FORMAT
        or not _is_map_marker(stored[HEADER_SIZE + 1])
    ):
        return None
    layers = stored[HEADER_SIZE] - _FIXARRAY
    if not 1 <= layers < MAX_LAYERS:
        return None
    layer: dict[str, bytes | None] = dict.fromkeys(deletes)
    layer.update(sets)
    return b"".join(
        (
            HEADER.pack(FORMAT, expires_ms),
            bytes((_FIXARRAY + layers + 1,)),
            stored[HEADER_SIZE + 1 :],
            msgpack.packb(layer),
        )
    )


def with_deadline(stored: bytes | memoryview, expires_ms: int) -> bytes:
    """``stored`` under the deadline ``expires_ms``, its format and layers as they are.

    For a record :func:`deadline` reads (the header is the same in every format).
    """
    return HEADER.pack(stored[0], expires_ms) + bytes(stored[HEADER_SIZE:])


def index_bucket(expires_ms: int) -> int:
    """The deadline rounded up, so a bucket that has passed holds only expired sessions."""
    return -(-expires_ms // INDEX_GRANULARITY_MS) * INDEX_GRANULARITY_MS


def index_key(expires_ms: int, key: bytes) -> bytes:
    """The expiry index's key for the session stored under ``key``: its bucket (8 bytes,
    big-endian, so keys sort by deadline), then ``key``."""
    return index_bucket(expires_ms).to_bytes(8, "big") + key
