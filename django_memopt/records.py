"""A session as one record: its deadline, its small fields compressed together, then layers
of sealed fields. Bytes in, bytes out.

This module imports nothing from Django. Every record starts with the same header::

    FORMAT (1 byte) | deadline (8 bytes: epoch milliseconds, big-endian) | body

A record of format 2, the one this release writes, has for body a msgpack array::

    [appended (uint), names (array), block (bin), layer (map), layer (map), ...]

``block`` holds the values of the session's small fields: its first byte is the
:mod:`django_memopt.compression` method, the rest what that method made of a msgpack
array of their sealed bytes (bin, see :mod:`django_memopt.codec`), in the order of
``names`` (an empty bin and an empty array: no block). A small field is one the codec
did not compress, of more than ``HOT_FIELD_MAX`` and at most ``SMALL_FIELD_MAX`` sealed
bytes, as many as fit in ``BLOCK_MAX`` bytes: such fields compress poorly one by one and
well together, and a field the codec compressed would not shrink again. The small fields
take ``BLOCK_COMPRESS_FROM`` bytes or more, and compressing them saves at least
1/``BLOCK_SAVING`` of that, or there is no block. Each layer maps a field name to its
sealed bytes or to nil (deleted by that layer). The first layer, written with the block,
holds the other fields (all of them if there is no block, which reads as cheaply as
format 1); the later ones were added by saves, and ``appended`` is how many bytes they
take, at the end.

The block is opened only when one of its fields is read (:class:`Block`): the names are
stored plainly so that a session's names are known without it, and the fields most
requests read are kept out of it, being small (the login's three, counters, flags,
tokens: ``HOT_FIELD_MAX`` sealed bytes or fewer). So a request that reads those and
writes some never decompresses anything. Reading merges the layers over the block in
order, decoding no value. A save adds its delta as a layer and copies the names, the
block and the first layer as they are, so it neither decompresses nor compresses
anything: it appends the layer, or, past ``MAX_LAYERS`` layers or 1/``LAYER_SHARE`` of
the record, merges it with the layers added before it into one, so that a counter
changed by every request never costs more. Only when even that one layer would be too
large is the record rewritten whole, its block opened and its layers merged into a new
block and first layer.

Format 1, the previous release's, has for body a msgpack array of 1 to ``MAX_LAYERS``
layers alone, nothing compressed. It is still read, and rewritten in format 2 at its next
save, its sealed bytes carried over as they are.

Format versions: ``_LAYERS_READERS`` holds, for each format this release reads, how to
read its body into layers. A later format adds its reader beside these, so the records
this release wrote stay readable; a layer is added to a record of the format written now
only, so an older record is rewritten in it at its next save. A record of a format no
reader knows is damaged: it reads as absent.

What no save writes (a name that is not text, a value that is neither bytes nor nil) is
left out of every read and handed to the caller's ``on_bad_entry``, never raised. A block
that cannot be opened (damaged, or a decompression bomb: more than ``BLOCK_MAX`` bytes)
holds no field: each of its fields reads as missing, the others as they are.

The expiry index of a store that keeps one (LMDB's) is here too: its keys sort by
deadline rounded up to ``INDEX_GRANULARITY_MS``, so a sweep reads only what has expired
or expires within the bucket under way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgpack

from django_memopt import compression

__all__ = [
    "BLOCK_COMPRESS_FROM",
    "BLOCK_MAX",
    "BLOCK_SAVING",
    "FORMAT",
    "HOT_FIELD_MAX",
    "HEADER",
    "HEADER_SIZE",
    "INDEX_GRANULARITY_MS",
    "LAYER_SHARE",
    "MAX_LAYERS",
    "SMALL_FIELD_MAX",
    "BadEntry",
    "Block",
    "Compressed",
    "Sealed",
    "deadline",
    "fields",
    "index_bucket",
    "index_key",
    "merged",
    "pack",
    "updated",
    "with_deadline",
    "with_layer",
]

#: The format this release writes.
FORMAT: Final = 2
#: Every format's header: the format's number, then the deadline in epoch ms.
HEADER: Final = struct.Struct(">BQ")
HEADER_SIZE: Final = HEADER.size
#: At most this many layers per record (format 2: beside the block).
MAX_LAYERS: Final = 8
#: A field whose sealed bytes are at most this long goes into the block (unless the codec
#: compressed it, or it is at most HOT_FIELD_MAX long).
SMALL_FIELD_MAX: Final = 1024
#: A field whose sealed bytes are at most this long stays out of the block: what most
#: requests read is small (the login's user ID, backend and hash; counters; tokens), and
#: reading it must not open the block.
HOT_FIELD_MAX: Final = 64
#: The most bytes a block holds decompressed; small fields beyond it go into the first
#: layer. A block that would decompress to more is damaged (a decompression bomb).
BLOCK_MAX: Final = 64 * 1024
#: A block is compressed from this many bytes, and kept so only if that saves at least
#: 1/BLOCK_SAVING of them: a load that reads one of its fields decompresses it.
BLOCK_COMPRESS_FROM: Final = 128
BLOCK_SAVING: Final = 4
#: The layers added since the last rewrite take at most 1/LAYER_SHARE of the block and
#: the first layer.
LAYER_SHARE: Final = 8
#: The expiry index groups deadlines by the hour: a session saved again and again moves
#: its entry at most once an hour, and a sweep reads the entries of the hour under way.
INDEX_GRANULARITY_MS: Final = 3_600_000

_FIXARRAY: Final = 0x90
# The items of a format-2 body before its appended layers: appended, names, block, and
# the first layer.
_ITEMS: Final = 4
_ARRAY_MARKERS: Final = frozenset((*range(_FIXARRAY, _FIXARRAY + 16), 0xDC, 0xDD))
_UINT_MARKERS: Final = frozenset((0xCC, 0xCD, 0xCE))
# An upper bound of msgpack's bytes for a small field in the names and the block (its name
# and its value, each with its header), a name's characters counted at UTF-8's widest.
_ENTRY_OVERHEAD: Final = 10
_NAME_WIDTH: Final = 4

#: Told of each entry no save writes, which a read leaves out: its name and its value.
BadEntry = Callable[[str | bytes, object], None]
#: Whether the codec compressed a field's sealed bytes.
Compressed = Callable[[bytes], bool]
# A format's reader: its body -> its layers, oldest first, and whether the first one is
# what a rewrite wrote (its values are taken as they are); None: damaged.
LayersReader = Callable[[bytes | memoryview], tuple[list[Any], int] | None]


def _ignore(name: str | bytes, stored: object) -> None:
    pass


def _layers_v1(body: bytes | memoryview) -> tuple[list[Any], int] | None:
    """A format-1 body: an array of maps, the first one written by a rewrite."""
    try:
        layers = msgpack.unpackb(body)
    except Exception:  # any msgpack error: the record is damaged
        return None
    if type(layers) is not list or not layers or type(layers[0]) is not dict:
        return None
    return layers, 1


class Block:
    """The block of a record: the sealed bytes of its small fields, decompressed the first
    time one of them is asked for. Not shared between threads (a session's mapping is
    not)."""

    __slots__ = ("_data", "_names", "_values")

    def __init__(self, names: list[str], data: bytes) -> None:
        self._names = names
        self._data = data  # the method's byte, then the compressed array of values
        self._values: dict[str, bytes] | None = None

    def sealed(self, name: str) -> bytes | None:
        """The sealed bytes of ``name``; ``None`` if the block cannot be opened or does
        not hold it."""
        values = self._values
        if values is None:
            values = self._values = self._opened()
        return values.get(name)

    def _opened(self) -> dict[str, bytes]:
        data = self._data
        try:
            values = msgpack.unpackb(
                compression.decompress(data[0], memoryview(data)[1:], BLOCK_MAX)
            )
        except Exception:  # any msgpack or decompression error: the block is damaged
            return {}
        if type(values) is not list or len(values) != len(self._names):
            return {}
        pairs = zip(self._names, values, strict=True)
        return {name: value for name, value in pairs if type(value) is bytes}


#: A field as a read returns it: its sealed bytes, or the block that holds them.
Sealed = bytes | Block


def _layers_v2(body: bytes | memoryview) -> tuple[list[Any], int] | None:
    """A format-2 body: the block's names, each for the block (not opened), then the
    layers; the block and the first layer were written by a rewrite."""
    try:
        items = msgpack.unpackb(body)
    except Exception:  # any msgpack error: the record is damaged
        return None
    if type(items) is not list or len(items) < _ITEMS:
        return None
    names, data = items[1], items[2]
    if type(names) is not list or type(data) is not bytes or type(items[3]) is not dict:
        return None
    if not names:
        if data:
            return None
        del items[:3]  # no block: the first layer is what the last rewrite wrote
        return items, 1
    try:
        "".join(names)  # are all the names text?
    except TypeError:
        return None
    if not data:
        return None
    # The block's fields, then the first layer over them: what the last rewrite wrote.
    written = dict.fromkeys(names, Block(names, data))
    written.update(items[3])
    del items[:3]
    items[0] = written
    return items, 1


# Each format this release reads -> its reader.
_LAYERS_READERS: Final[dict[int, LayersReader]] = {1: _layers_v1, 2: _layers_v2}


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
) -> dict[str, Sealed] | None:
    """The sealed fields of a record, its layers merged; ``None`` if it is unreadable.

    A field of the block maps to the :class:`Block`, which gives its sealed bytes when
    asked (opening the block once for all its fields), or ``None`` if it cannot be
    opened: the field is then missing.

    An entry no save writes is left out and handed to ``on_bad_entry``: a name that is
    not text, or a value that is neither bytes nor nil. The values of the maps a rewrite
    wrote (format 2: the block and the first layer; format 1: the first layer), when
    their names are all text, are not looked at (that would cost every load): the codec
    refuses a value that is not bytes, and :func:`merged` drops it.
    """
    reader = _LAYERS_READERS.get(stored[0]) if len(stored) >= HEADER_SIZE else None
    read = None if reader is None else reader(stored[HEADER_SIZE:])
    if read is None:
        return None
    layers, rewritten = read
    for layer in layers:
        if type(layer) is not dict:
            return None
    result: dict[str, Sealed] = {}
    if rewritten:
        try:
            "".join(layers[0])  # names are text or bytes (strict_map_key): are all text?
        except TypeError:
            pass  # then every entry is checked, as in an appended layer
        else:
            result = layers[0]
            if len(layers) == 1:
                return result
            layers = layers[1:]
    for layer in layers:
        for name, sealed in layer.items():
            if type(name) is not str or (
                sealed is not None and type(sealed) is not bytes and type(sealed) is not Block
            ):
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
    to ``on_bad_entry``), never written back as if it were a sealed field; so is each
    field of a block that cannot be opened."""
    found = fields(stored, on_bad_entry)
    if found is None:
        return None
    result: dict[str, bytes] = {}
    for name, sealed in found.items():
        if name in sets:  # set again: not opened for a value replaced, kept in its place
            result[name] = sets[name]
            continue
        value = sealed.sealed(name) if type(sealed) is Block else sealed
        if type(value) is bytes:
            result[name] = value
        else:
            on_bad_entry(name, sealed)
    result.update(sets)
    for name in deletes:
        result.pop(name, None)
    return result


def _bin(data: bytes) -> bytes:
    """``data`` as a msgpack bin."""
    size = len(data)
    if size < 0x100:
        return b"\xc4%c%s" % (size, data)
    if size < 0x10000:
        return b"\xc5" + size.to_bytes(2, "big") + data
    return b"\xc6" + size.to_bytes(4, "big") + data


def _compressed_block(small: Mapping[str, bytes]) -> bytes | None:
    """The block of ``small``'s values, as a msgpack bin; ``None`` if compressing it would
    not pay for the decompression a load that reads one of them makes."""
    data = msgpack.packb(list(small.values()))
    if len(data) < BLOCK_COMPRESS_FROM:
        return None
    # zstd where it is installed: it decompresses several times faster than zlib.
    method = compression.ZSTD if compression.ZSTD_AVAILABLE else compression.ZLIB
    body = compression.compress_with(method, data)
    if len(body) > len(data) - len(data) // BLOCK_SAVING:
        return None
    return _bin(b"%c%s" % (method, body))


def _never(sealed: bytes) -> bool:
    return False


def pack(expires_ms: int, sealed: Mapping[str, bytes], compressed: Compressed = _never) -> bytes:
    """A record, in the current format, of ``sealed``: the small fields in the block (as
    many as fit in ``BLOCK_MAX``), the others in one layer; or, if the block would not be
    worth compressing, every field in that layer and the block empty. A field
    ``compressed`` says the codec compressed stays out of the block: compressing it again
    would gain nothing and cost every load that reads it."""
    small: dict[str, bytes] = {}
    large: dict[str, bytes] = {}
    room = BLOCK_MAX - _ENTRY_OVERHEAD
    for name, value in sealed.items():
        size = len(value)
        if HOT_FIELD_MAX < size <= SMALL_FIELD_MAX and not compressed(value):
            size += _NAME_WIDTH * len(name) + _ENTRY_OVERHEAD
            if size <= room:
                small[name] = value
                room -= size
                continue
        large[name] = value
    block = _compressed_block(small) if small else None
    if block is None:
        names, block, large = b"\x90", b"\xc4\x00", dict(sealed)
    else:
        names = msgpack.packb(list(small))
    return b"".join(
        (
            HEADER.pack(FORMAT, expires_ms),
            b"\x94\x00",  # four items, the first: no layer added
            names,
            block,
            msgpack.packb(large),
        )
    )


def _layout(stored: bytes | memoryview) -> tuple[int, int, int] | None:
    """How many layers were appended to a format-2 record, how many bytes they take, and
    where its names start (the names, the block and the first layer are copied as they
    are); ``None`` if it does not start as such a record does."""
    if len(stored) < HEADER_SIZE + 5 or stored[0] != FORMAT:
        return None
    layers = stored[HEADER_SIZE] - _FIXARRAY - _ITEMS
    marker = stored[HEADER_SIZE + 1]
    names_at = HEADER_SIZE + 2
    if marker < 0x80:  # a positive fixint
        appended = marker
    elif marker in _UINT_MARKERS:
        width = 1 << (marker - 0xCC)
        appended = int.from_bytes(stored[names_at : names_at + width], "big")
        names_at += width
    else:
        return None
    if (
        not 0 <= layers < MAX_LAYERS
        or names_at >= len(stored)
        or stored[names_at] not in _ARRAY_MARKERS
        or appended > len(stored) - names_at
    ):
        return None
    return layers, appended, names_at


def _assembled(expires_ms: int, layers: int, appended: int, *parts: bytes | memoryview) -> bytes:
    return b"".join(
        (
            HEADER.pack(FORMAT, expires_ms),
            bytes((_FIXARRAY + _ITEMS + layers,)),
            msgpack.packb(appended),
            *parts,
        )
    )


def with_layer(
    stored: bytes | memoryview, expires_ms: int, sets: Mapping[str, bytes], deletes: Iterable[str]
) -> bytes | None:
    """``stored`` with ``sets`` and ``deletes`` as a new layer, under the deadline
    ``expires_ms``, the block and the first layer copied as they are; ``None`` if it must
    be rewritten whole instead (:func:`merged`, :func:`pack`).

    The layer is appended, unless that would make ``MAX_LAYERS`` layers or make the
    appended layers take more than 1/``LAYER_SHARE`` of the block and the first layer;
    then it is merged with the layers appended before it into one (so a field that
    changes at every save, a counter, never costs a rewrite), and if even that one would
    take more, or the record is of another format than the current one, the record must
    be rewritten.

    Only the container's first bytes are checked (an array of a count and a block), and
    the appended layers when they are merged: a record damaged further in stays
    unreadable, as it already was, and an entry no save writes stays as it was, left out
    of every read, until a rewrite drops it.
    """
    layout = _layout(stored)
    if layout is None:
        return None
    layers, appended, names_at = layout
    layer: dict[str | bytes, bytes | None] = dict.fromkeys(deletes)
    layer.update(sets)
    packed = msgpack.packb(layer)
    kept = len(stored) - appended  # the appended layers start there
    budget = (kept - names_at) // LAYER_SHARE
    if layers + 1 < MAX_LAYERS and appended + len(packed) <= budget:
        return _assembled(
            expires_ms, layers + 1, appended + len(packed), stored[names_at:], packed
        )
    try:
        earlier = msgpack.unpackb(bytes((_FIXARRAY + layers,)) + stored[kept:])
    except Exception:  # any msgpack error: the layers are damaged; a rewrite will tell
        return None
    for old in reversed(earlier):
        if type(old) is not dict:
            return None
        for name, sealed in old.items():
            layer.setdefault(name, sealed)
    packed = msgpack.packb(layer)
    if len(packed) > budget:
        return None
    return _assembled(expires_ms, 1, len(packed), stored[names_at:kept], packed)


def updated(
    stored: bytes | memoryview,
    expires_ms: int,
    sets: Mapping[str, bytes],
    deletes: Iterable[str],
    on_bad_entry: BadEntry = _ignore,
    compressed: Compressed = _never,
) -> bytes | None:
    """``stored`` with ``sets`` and ``deletes`` applied under the deadline ``expires_ms``,
    in the current format: a layer appended where :func:`with_layer` may, else the record
    rewritten whole (:func:`pack`), its bad entries dropped; ``None`` if it is
    unreadable."""
    deletes = tuple(deletes)
    appended = with_layer(stored, expires_ms, sets, deletes)
    if appended is not None:
        return appended
    result = merged(stored, sets, deletes, on_bad_entry)
    return None if result is None else pack(expires_ms, result, compressed)


def with_deadline(stored: bytes | memoryview, expires_ms: int) -> bytes:
    """``stored`` under the deadline ``expires_ms``, its format and body as they are.

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
