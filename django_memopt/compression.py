"""Compression of stored bytes (zstd, or zlib without it), decompressed within a bound.

This module imports nothing from Django, and nothing else from this package. A caller
stores the method :func:`compress` chose beside the body (a format byte's low bits, a
record header) and hands both back to :func:`decompress`:

=========  =======================================================================
``PLAIN``  the data as it is: under ``MIN_SIZE`` bytes, or when compressing saves
           fewer than ``MIN_SAVING`` bytes
``ZSTD``   a zstd frame (level 1) with its content size and without its 4-byte
           magic number: what :func:`compress` chooses
``ZLIB``   raw deflate (level 1, no zlib header or checksum): what it chooses where
           zstd is not installed
=========  =======================================================================

Why zstd level 1, measured on session fields (msgpack; ``docs/engine.md`` has the
figures): with a context kept per thread, it compresses a 250-byte field in about 4 µs
and a 2 KB one in about 8.5 µs, to within 1-5% of the bytes of zstd level 3 and of zlib;
zlib sets up and frees about 256 KiB of state per call, which costs it about twice as
long on small fields. Decompressing takes about half as long as compressing.

zstd comes from the standard library's ``compression.zstd`` on Python 3.14 and later,
from the ``zstandard`` package before. Without either, :func:`compress` uses zlib alone
and :func:`decompress` refuses zstd bodies with an error naming the missing package.

Decompression never produces more than ``limit`` bytes, nor allocates for more: a zstd
frame's declared content size is checked before anything is allocated (a frame without
one is refused), and zlib output stops at the limit. Bodies come from storage that
someone else may have written; authenticate them before decompressing where that
matters.
"""

from __future__ import annotations

import importlib
import threading
import zlib
from typing import Any, Final

__all__ = [
    "MAX_SIZE",
    "METHODS",
    "PLAIN",
    "ZLIB",
    "ZSTD",
    "ZSTD_AVAILABLE",
    "DecompressionError",
    "compress",
    "compress_with",
    "decompress",
]

PLAIN: Final = 0
ZLIB: Final = 1
ZSTD: Final = 2
METHODS: Final = (PLAIN, ZLIB, ZSTD)

#: The default bound on decompressed bytes (a session field's limit).
MAX_SIZE: Final = 8 * 1024 * 1024
#: Data shorter than this is stored plain: a few dozen bytes rarely shrink.
MIN_SIZE: Final = 128
#: Compressed data is kept only if it is at least this much smaller.
MIN_SAVING: Final = 8
ZSTD_LEVEL: Final = 1
ZLIB_LEVEL: Final = 1

# Every zstd frame starts with it; the method stored beside the body already says what
# it is, so it is dropped when compressing and put back when decompressing.
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


def _module(name: str) -> Any:
    """The module ``name``, or ``None`` where it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# zstd is found by import, not by version: the standard library's module from Python 3.14,
# the zstandard package before (each typed Any, being absent on some Pythons).
_stdlib_zstd: Any = _module("compression.zstd")
_zstandard: Any = None if _stdlib_zstd is not None else _module("zstandard")
ZSTD_AVAILABLE: Final = _stdlib_zstd is not None or _zstandard is not None
_ZSTD_MISSING: Final = (
    "zstd-compressed data needs the 'zstandard' package (pip install zstandard) "
    "on Python before 3.14"
)


class DecompressionError(ValueError):
    """A body could not be decompressed, or would decompress past the limit."""


# Compressor contexts are not safe to share between threads; each thread keeps its own
# (making one costs more than compressing a small field).
_local = threading.local()


def _zstd_compressor() -> Any:
    compressor = getattr(_local, "zstd", None)
    if compressor is None:
        if _stdlib_zstd is not None:
            compressor = _stdlib_zstd.ZstdCompressor(level=ZSTD_LEVEL)
        else:
            compressor = _zstandard.ZstdCompressor(
                level=ZSTD_LEVEL, write_checksum=False, write_content_size=True
            )
        _local.zstd = compressor
    return compressor


def compress_with(method: int, data: bytes) -> bytes:
    """``data`` compressed with ``method``, whatever that saves; ``ValueError`` if the
    method is unknown, ``RuntimeError`` if it is zstd and zstd is not installed."""
    if method == ZLIB:
        return zlib.compress(data, ZLIB_LEVEL, -zlib.MAX_WBITS)  # raw deflate
    if method == ZSTD:
        if not ZSTD_AVAILABLE:
            raise RuntimeError(_ZSTD_MISSING)
        if _stdlib_zstd is not None:
            # A whole frame in one call: zstd then writes the content size it was given.
            frame = _zstd_compressor().compress(data, _stdlib_zstd.ZstdCompressor.FLUSH_FRAME)
        else:
            frame = _zstd_compressor().compress(data)
        return frame[len(_ZSTD_MAGIC) :]  # type: ignore[no-any-return]
    if method == PLAIN:
        return data
    raise ValueError(f"unknown compression method {method}")


def compress(data: bytes) -> tuple[int, bytes]:
    """The method and the body to store for ``data`` (see above)."""
    size = len(data)
    if size < MIN_SIZE:
        return PLAIN, data
    method = ZSTD if ZSTD_AVAILABLE else ZLIB
    body = compress_with(method, data)
    if len(body) + MIN_SAVING > size:
        return PLAIN, data
    return method, body


def decompress(method: int, body: bytes | memoryview, limit: int = MAX_SIZE) -> bytes:
    """The data ``body`` holds, stored with ``method``.

    Raises ``DecompressionError`` if the body is damaged, has bytes past its end, would
    decompress to more than ``limit`` bytes, or needs zstd where it is not installed.
    """
    if method == PLAIN:
        if len(body) > limit:
            raise DecompressionError(f"{len(body)} bytes, over the {limit}-byte limit")
        return bytes(body)
    if method == ZLIB:
        return _inflate(body, limit)
    if method == ZSTD:
        if not ZSTD_AVAILABLE:
            raise DecompressionError(_ZSTD_MISSING)
        return _unzstd(_ZSTD_MAGIC + body, limit)
    raise DecompressionError(f"unknown compression method {method}")


def _inflate(body: bytes | memoryview, limit: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        # One byte past the limit tells a body over it from one exactly at it.
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecompressionError(f"damaged zlib body: {exc}") from exc
    if len(data) > limit:
        raise DecompressionError(f"zlib body inflates past the {limit}-byte limit")
    if not inflater.eof or inflater.unused_data:
        raise DecompressionError("zlib body is truncated or has bytes past its end")
    return data


def _unzstd(frame: bytes, limit: int) -> bytes:
    if _stdlib_zstd is not None:
        error: type[Exception] = _stdlib_zstd.ZstdError
        try:
            size = _stdlib_zstd.get_frame_info(frame).decompressed_size
        except error as exc:
            raise DecompressionError(f"damaged zstd frame: {exc}") from exc
    else:
        error = _zstandard.ZstdError
        try:
            size = _zstandard.frame_content_size(frame)
        except error as exc:
            raise DecompressionError(f"damaged zstd frame: {exc}") from exc
        if size < 0:
            size = None  # CONTENTSIZE_UNKNOWN
    # Checked before anything is allocated: the frame's own claim bounds the output.
    if size is None:
        raise DecompressionError("zstd frame does not declare its size")
    if size > limit:
        raise DecompressionError(f"zstd frame declares {size} bytes, over the {limit}-byte limit")
    try:
        if _stdlib_zstd is not None:
            decompressor = _stdlib_zstd.ZstdDecompressor()
            data = decompressor.decompress(frame, size + 1)
            if not decompressor.eof or decompressor.unused_data:
                raise DecompressionError("zstd frame is truncated or has bytes past its end")
        else:
            data = _zstd_decompressor().decompress(frame, size, allow_extra_data=False)
    except error as exc:
        raise DecompressionError(f"damaged zstd frame: {exc}") from exc
    if len(data) != size:
        raise DecompressionError(f"zstd frame declares {size} bytes but holds {len(data)}")
    return data  # type: ignore[no-any-return]


def _zstd_decompressor() -> Any:
    decompressor = getattr(_local, "unzstd", None)
    if decompressor is None:
        decompressor = _local.unzstd = _zstandard.ZstdDecompressor()
    return decompressor
