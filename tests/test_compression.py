"""``django_memopt.compression`` on its own: the choice of method, round trips, and bounded
decompression of damaged bodies and bombs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest
import zstandard

from django_memopt import compression
from django_memopt.compression import (
    MAX_SIZE,
    MIN_SAVING,
    MIN_SIZE,
    PLAIN,
    ZLIB,
    ZSTD,
    DecompressionError,
    compress,
    compress_with,
    decompress,
)

BOMB_SIZE = 100 * 1024 * 1024
TEXT = b"".join(b"line %d of a cart, description of product %d; " % (n, n % 7) for n in range(600))


def test_imports_nothing_from_django() -> None:
    code = (
        "import sys, django_memopt.compression; "
        "loaded = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- choosing a method -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "method"),
    [(0, PLAIN), (MIN_SIZE - 1, PLAIN), (MIN_SIZE, ZSTD), (1024, ZSTD), (len(TEXT), ZSTD)],
)
def test_small_data_stays_plain_and_the_rest_is_zstd(size: int, method: int) -> None:
    data = TEXT[:size]
    chosen, body = compress(data)
    assert chosen == method
    assert decompress(chosen, body) == data
    if method == PLAIN:
        assert body is data
    else:
        assert len(body) + MIN_SAVING <= len(data)


def test_data_that_does_not_shrink_enough_stays_plain() -> None:
    for data in (os.urandom(200), os.urandom(5000)):
        assert compress(data) == (PLAIN, data)


def test_a_zstd_body_has_no_magic_number_and_a_zlib_body_no_header() -> None:
    data = TEXT[:4000]
    zstd_body = compress_with(ZSTD, data)
    assert not zstd_body.startswith(b"\x28\xb5\x2f\xfd")
    assert zstandard.ZstdDecompressor().decompress(b"\x28\xb5\x2f\xfd" + zstd_body) == data
    assert zlib.decompress(compress_with(ZLIB, data), -15) == data


@pytest.mark.parametrize("method", compression.METHODS)
@pytest.mark.parametrize("size", [0, 1, 127, 128, 1023, 1024, 70_000])
def test_every_method_round_trips(method: int, size: int) -> None:
    data = (TEXT * 3)[:size]
    body = compress_with(method, data)
    assert decompress(method, body) == data
    assert decompress(method, memoryview(body)) == data
    assert decompress(method, body, limit=size) == data  # exactly at the limit


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        compress_with(3, b"data")
    with pytest.raises(DecompressionError, match="unknown"):
        decompress(3, b"data")


def test_threads_compress_alongside_each_other() -> None:
    failures: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for n in range(200):
                data = TEXT[seed : seed + 1000 + 17 * n]
                method, body = compress(data)
                assert decompress(method, body) == data
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


# -- damaged bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("method", [ZLIB, ZSTD])
def test_a_truncated_body_is_refused(method: int) -> None:
    body = compress_with(method, TEXT[:3000])
    for cut in (0, 1, len(body) // 2, len(body) - 1):
        with pytest.raises(DecompressionError):
            decompress(method, body[:cut])


@pytest.mark.parametrize("method", [ZLIB, ZSTD])
def test_bytes_past_the_end_are_refused(method: int) -> None:
    body = compress_with(method, TEXT[:3000])
    with pytest.raises(DecompressionError):
        decompress(method, body + b"\0")
    with pytest.raises(DecompressionError):
        decompress(method, body + body)  # a second frame or stream


@pytest.mark.parametrize("method", [ZLIB, ZSTD])
def test_flipped_bits_never_escape_as_another_error(method: int) -> None:
    data = TEXT[:3000]
    body = compress_with(method, data)
    for index in range(0, len(body), max(1, len(body) // 50)):
        damaged = bytearray(body)
        damaged[index] ^= 0x41
        with contextlib.suppress(DecompressionError):
            assert len(decompress(method, bytes(damaged))) <= MAX_SIZE


def test_a_zstd_frame_without_its_size_is_refused() -> None:
    streamed = zstandard.ZstdCompressor().compressobj()
    frame = streamed.compress(TEXT) + streamed.flush()
    assert zstandard.frame_content_size(frame) == -1  # unknown
    with pytest.raises(DecompressionError, match="does not declare"):
        decompress(ZSTD, frame[4:])


@pytest.mark.parametrize("method", [PLAIN, ZLIB, ZSTD])
def test_more_than_the_limit_is_refused(method: int) -> None:
    data = TEXT[:5000]
    body = compress_with(method, data)
    with pytest.raises(DecompressionError, match="limit"):
        decompress(method, body, limit=len(data) - 1)


# -- bombs: 100 MiB held in a few hundred bytes ----------------------------------------------


def zeros(total: int) -> Iterator[bytes]:
    chunk = bytes(1024 * 1024)
    for _ in range(total // len(chunk)):
        yield chunk


@pytest.fixture(scope="module")
def zlib_bomb() -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    return b"".join([*map(deflater.compress, zeros(BOMB_SIZE)), deflater.flush()])


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    frame = zstandard.ZstdCompressor(level=19).compressobj(size=BOMB_SIZE)
    return b"".join([*map(frame.compress, zeros(BOMB_SIZE)), frame.flush()])


def peak_allocation(method: int, body: bytes) -> int:
    """Bytes allocated at most while ``decompress`` refuses ``body``."""
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionError, match="limit"):
            decompress(method, body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_zlib_bomb_stops_at_the_limit(zlib_bomb: bytes) -> None:
    assert len(zlib_bomb) < BOMB_SIZE // 500
    # Inflating stops one byte past the limit, never near the 100 MiB the body holds
    # (CPython's zlib joins the blocks it inflated into one bytes: twice the limit).
    assert peak_allocation(ZLIB, zlib_bomb) < 2 * MAX_SIZE + 2 * 1024 * 1024


def test_a_zstd_bomb_is_refused_before_allocating(zstd_bomb: bytes) -> None:
    assert zstandard.frame_content_size(zstd_bomb) == BOMB_SIZE
    assert len(zstd_bomb) < BOMB_SIZE // 500
    assert peak_allocation(ZSTD, zstd_bomb[4:]) < 2 * len(zstd_bomb) + 64 * 1024


# -- without zstd ----------------------------------------------------------------------------


def test_without_zstd_large_data_is_deflated_and_zstd_bodies_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = compress_with(ZSTD, TEXT)
    monkeypatch.setattr(compression, "ZSTD_AVAILABLE", False)
    method, deflated = compress(TEXT)
    assert method == ZLIB
    assert decompress(ZLIB, deflated) == TEXT
    with pytest.raises(DecompressionError, match="'zstandard' package"):
        decompress(ZSTD, body)
    with pytest.raises(RuntimeError, match="'zstandard' package"):
        compress_with(ZSTD, TEXT)
