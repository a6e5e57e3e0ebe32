"""A Bloom filter of live session IDs in one memory-mapped file shared by a host's workers.

This module imports nothing from Django. :class:`SessionFilter` answers "might this cookie
name a live session?" without touching the store: ``False`` is definite, ``True`` means
"ask the store". It never answers ``False`` for a session added before the check began and
still live, and answers ``True`` for everything while the file is not *complete* (newly
created, re-created after damage, or from before a reboot) until :meth:`rebuild` ran.

Layout: one byte per bit position, one bit of it per generation slot (so at most 8). A
check is one keyed BLAKE2b digest, cut into ``k`` 64-bit words, and ``k`` byte reads ANDed
together with the mask of live generations. File (little-endian)::

    0      gate: magic (8) | incarnation (8, random per file) | seq (u64) | complete (u8) | 7 pad
    32     version, generations, capacity, fp_rate, window, positions, hashes, file size,
           hash key (16), boot id (16)
    116    8 slots: window number (i64), latest deadline (f64)
    244    BLAKE2b-128 of bytes 0-244
    65536  ``positions`` bytes

Sizing (:func:`sizing`): each generation is a filter of ``positions`` bits and ``hashes``
hash functions holding up to ``capacity`` IDs at ``p = fp_rate / generations``, so the
target holds even when every live generation is full::

    hashes = min(8, max(1, round(log2(1 / p))))
    positions = ceil(-hashes * capacity / ln(1 - p ** (1 / hashes)))

Writers serialise on ``flock`` of a sibling ``<path>.lock`` that is never replaced; readers
never lock and make no system call per check.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import math
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple

__all__ = ["FilterStats", "GenerationStats", "SessionFilter", "sizing"]

MAGIC = b"MOSIDBF\x00"
VERSION = 1
HEADER_SIZE = 65536  # the bits start on a page boundary for any page size up to 64 KiB
MAX_GENERATIONS = 8  # one bit of a position byte each
MAX_HASHES = 8  # 8 x 64-bit words: one 64-byte BLAKE2b digest
_GATE = struct.Struct("<8s8sQB7x")
_GATE_END = _GATE.size
_PARAMS = struct.Struct("<IIQddQIQ16s16s")
_SLOT = struct.Struct("<qd")
_SLOTS_AT = _GATE_END + _PARAMS.size
_SUM_AT = _SLOTS_AT + MAX_GENERATIONS * _SLOT.size
_HEADER_END = _SUM_AT + 16
_UNUSED_SLOT = (-(2**63), -math.inf)
# A writer extending a deadline this close to passing bumps ``seq``, so that a reader whose
# clock already saw it pass reloads its live mask instead of ignoring the slot.
_BUMP_MARGIN = 60.0
_BATCH = 1024  # rebuild: IDs written per lock hold, so other writers interleave
_CHUNK = 1 << 20


def sizing(capacity: int, fp_rate: float, generations: int) -> tuple[int, int]:
    """``(positions, hashes)`` for the parameters (formula in the module docstring)."""
    per_generation = fp_rate / generations
    hashes = min(MAX_HASHES, max(1, round(math.log2(1 / per_generation))))
    positions = math.ceil(-hashes * capacity / math.log1p(-(per_generation ** (1 / hashes))))
    return positions, hashes


@functools.cache
def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as file:
            return hashlib.blake2b(file.read().strip(), digest_size=16).digest()
    except OSError:
        return bytes(16)


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16, person=b"memopt-sidgate").digest()


def _encode(key: str) -> bytes:
    try:
        return key.encode()
    except UnicodeEncodeError:  # a lone surrogate from a mangled cookie
        return key.encode("utf-8", "surrogatepass")


class _Header(NamedTuple):
    incarnation: bytes
    seq: int
    complete: bool
    generations: int
    capacity: int
    fp_rate: float
    window: float
    positions: int
    hashes: int
    file_size: int
    key: bytes
    boot_id: bytes
    slots: tuple[tuple[int, float], ...]

    def pack(self) -> bytes:
        body = (
            _GATE.pack(MAGIC, self.incarnation, self.seq, self.complete)
            + _PARAMS.pack(VERSION, *self[3:12])
            + b"".join(_SLOT.pack(*slot) for slot in self.slots)
        )
        return body + _checksum(body)

    @classmethod
    def unpack(cls, data: bytes) -> _Header | None:
        """The header at the start of ``data``; None if damaged, torn or of another format."""
        if len(data) < _HEADER_END or data[_SUM_AT:_HEADER_END] != _checksum(data[:_SUM_AT]):
            return None
        magic, incarnation, seq, complete = _GATE.unpack_from(data)
        version, *params = _PARAMS.unpack_from(data, _GATE_END)
        slots = tuple(
            _SLOT.unpack_from(data, _SLOTS_AT + n * _SLOT.size) for n in range(MAX_GENERATIONS)
        )
        if magic != MAGIC or version != VERSION or complete > 1:
            return None
        return cls._make((incarnation, seq, bool(complete), *params, slots))


# Writers parse the header on every add; it changes rarely, so parse each version once.
_parse: Final = functools.lru_cache(maxsize=16)(_Header.unpack)

# A writer raising a slot's deadline raises it further (this, or a 16th of a window if
# less), so that the saves that follow, each a little later, find it high enough and leave
# the header alone. A deadline recorded late only keeps a generation a little longer.
_DEADLINE_SLACK: Final = 60.0


@dataclass(frozen=True)
class GenerationStats:
    slot: int
    window_start: float  # of the latest window written into the slot
    deadline: float  # the latest session deadline recorded in it
    fill_ratio: float  # fraction of its bits set


@dataclass(frozen=True)
class FilterStats:
    path: str
    capacity: int
    fp_rate: float  # the target
    generations: int
    window: float
    positions: int  # bits per generation
    hashes: int
    file_size: int  # bytes
    complete: bool  # False: might_contain() passes everything
    live: tuple[GenerationStats, ...]
    estimated_fp_rate: float  # P(an unknown ID hits a live generation), from the fill ratios


class SessionFilter:
    """One process's handle on the shared filter file; writes from its threads serialise
    on a thread lock as well as on ``flock``."""

    __slots__ = (
        "_path", "_lock_fd", "_capacity", "_fp_rate", "_generations", "_window", "_clock",
        "_positions", "_hashes", "_unpack", "_mapped", "_head", "_bits", "_file_id",
        "_incarnation", "_hasher", "_view", "_thread_lock",
    )  # fmt: skip
    _head: mmap.mmap
    _bits: mmap.mmap
    _hasher: Callable[[], hashlib.blake2b]
    _file_id: tuple[int, int, int]
    _incarnation: bytes
    # What a check reads, as one tuple so that a thread remapping meanwhile cannot mix two
    # files: (head, bits, hasher, gate bytes the mask was computed from, live mask, mask
    # valid until).
    _view: tuple[mmap.mmap, mmap.mmap, Callable[[], hashlib.blake2b], bytes, int, float]

    def __init__(
        self,
        path: str,
        lock_fd: int,
        capacity: int,
        fp_rate: float,
        generations: int,
        window: float,
        clock: Callable[[], float],
    ) -> None:
        """Private: use :meth:`open`."""
        self._path, self._lock_fd, self._clock = path, lock_fd, clock
        self._capacity, self._fp_rate = capacity, fp_rate
        self._generations, self._window = generations, window
        self._positions, self._hashes = sizing(capacity, fp_rate, generations)
        self._unpack = struct.Struct(f"<{self._hashes}Q").unpack
        self._mapped, self._thread_lock = False, threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        capacity: int,
        fp_rate: float,
        generations: int,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> SessionFilter:
        """Map the filter at ``path``, creating it (and its directory) if missing, or
        re-creating it, empty and incomplete, if damaged, of other parameters, or written
        before the last reboot (its latest bits may have died with the page cache).

        ``capacity``: distinct IDs written per ``window`` seconds (at least the live
        sessions); ``fp_rate``: the false-positive target at that load; ``generations``:
        2 to 8 slots; ``clock``: seconds, shared by every process (``time.time``).
        """
        if not 2 <= generations <= MAX_GENERATIONS or capacity < 1:
            raise ValueError("need 2 <= generations <= 8 and capacity >= 1")
        if not 0 < fp_rate < 1 or not 0 < window < math.inf:
            raise ValueError("need 0 < fp_rate < 1 and a finite window > 0")
        if sizing(capacity, fp_rate, generations)[0] >= 2**40:
            raise ValueError("capacity too large")
        path, fp_rate, window = os.path.abspath(os.fspath(path)), float(fp_rate), float(window)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self = cls(path, lock_fd, capacity, fp_rate, generations, window, clock)
        try:
            with self._writing():
                pass
        except BaseException:
            self.close()
            raise
        return self

    # -- checks (no lock, no system call) ---------------------------------------------------

    def might_contain(self, session_key: str) -> bool:
        """False only if the file is complete, still this handle's file, and no live
        generation holds ``session_key``."""
        view = self._view
        head, bits, hasher, gate, found, until = view
        if head[:_GATE_END] != gate or self._clock() >= until:
            live = self._load_view(view)
            if live is None:
                return True
            found = live
        digest = hasher()
        try:  # inlined _encode(): a call costs a tenth of a check
            digest.update(session_key.encode())
        except UnicodeEncodeError:
            digest.update(_encode(session_key))
        positions = self._positions
        for word in self._unpack(digest.digest()):
            found &= bits[word % positions]
            if not found:
                return False
        return True

    def _load_view(self, view: tuple[mmap.mmap, mmap.mmap, Any, bytes, int, float]) -> int | None:
        """The live-generation mask of ``view``'s file, cached with its gate; ``None``: pass
        everything for now (incomplete, replaced, damaged, or a header caught mid-write)."""
        head, bits, hasher = view[:3]
        data = head[:_HEADER_END]
        if data[:16] != MAGIC + self._incarnation or not data[24]:
            return None  # replaced, or not complete: no need to parse the rest
        header = _Header.unpack(data)
        if header is None or not header.complete or header.incarnation != self._incarnation:
            return None
        now, live, until = self._clock(), 0, math.inf
        for slot, (_, deadline) in enumerate(header.slots[: self._generations]):
            if now < deadline:
                live, until = live | 1 << slot, min(until, deadline)
        # Until ``until`` the mask can only grow, and growing bumps ``seq`` in the gate.
        if self._view is view:  # else another thread remapped meanwhile: leave its view
            self._view = (head, bits, hasher, data[:_GATE_END], live, until)
        return live

    def _forget_view(self) -> None:
        if self._mapped:
            self._view = (self._head, self._bits, self._hasher, b"", 0, -math.inf)

    @property
    def path(self) -> str:
        """The file's absolute path."""
        return self._path

    @property
    def complete(self) -> bool:
        """Whether checks filter (rather than pass everything) on this handle's file."""
        gate = self._head[:_GATE_END]
        return gate[:16] == MAGIC + self._incarnation and gate[24] == 1

    # -- writes (under the lock) ------------------------------------------------------------

    def add(self, session_key: str, expires_at: float) -> None:
        """Record ``session_key``, live until ``expires_at``, in the current generation.
        Call before every persisted write of the session."""
        item = [(session_key, _deadline(expires_at))]
        if self._lock_fd < 0:
            raise ValueError("the SessionFilter is closed")
        # As _writing(), without its two generators: this runs before every save.
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                if not self._current():
                    self._attach()
                self._write(item)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def rebuild(self, sessions: Iterable[tuple[str, float]]) -> int:
        """Add every ``(session_key, expires_at)``, then mark the file complete; the count.

        Writers keep adding meanwhile, so the site need not stop. If the file is re-created
        during the rebuild, the new file stays incomplete (``complete`` says so).
        """
        with self._writing():
            incarnation = self._incarnation
        count, intact, batch = 0, True, []
        for key, expires_at in sessions:
            batch.append((key, _deadline(expires_at)))
            if len(batch) == _BATCH:
                intact = self._write_batch(batch, incarnation) and intact
                count, batch = count + len(batch), []
        if batch:
            intact = self._write_batch(batch, incarnation) and intact
            count += len(batch)
        if intact:
            self._mark_complete(incarnation)
        return count

    def _write_batch(self, batch: list[tuple[str, float]], incarnation: bytes) -> bool:
        with self._writing():
            self._write(batch)
            return self._incarnation == incarnation

    def mark_complete(self) -> None:
        """Declare that every live session has been added to this handle's file. Does
        nothing (but remap) if the file was re-created since this handle mapped it."""
        self._mark_complete(self._incarnation)

    def _mark_complete(self, incarnation: bytes) -> None:
        with self._lock():
            if not self._current():
                self._attach()
            elif self._incarnation == incarnation:
                header = _Header.unpack(self._head[:_HEADER_END])
                assert header is not None  # _current() checked it
                self._head[:_HEADER_END] = header._replace(complete=True).pack()

    def _write(self, items: list[tuple[str, float]]) -> None:
        header = _parse(self._head[:_HEADER_END])
        assert header is not None  # _writing() checked it
        now = self._clock()
        number = math.floor(now / self._window)
        slot = number % self._generations
        window, deadline = header.slots[slot]
        retire = window != number and deadline <= now
        if retire:  # nothing in the slot is live: reuse it
            self._clear(slot)
            deadline = -math.inf
        # Else a live older generation shares the slot: bits accumulate, nothing is lost.
        latest = max(expires_at for _, expires_at in items)
        if retire or window != number or latest > deadline:
            latest = max(deadline, latest + min(_DEADLINE_SLACK, self._window / 16))
            bump = retire or deadline <= now + _BUMP_MARGIN
            slots = list(header.slots)
            slots[slot] = (number, latest)
            # The header goes first: a reader that sees the new bits sees the slot live.
            header = header._replace(seq=header.seq + bump, slots=tuple(slots))
            self._head[:_HEADER_END] = header.pack()
        bits, positions, bit = self._bits, self._positions, 1 << slot
        for key, _ in items:
            hasher = self._hasher()
            hasher.update(_encode(key))
            for word in self._unpack(hasher.digest()):
                bits[word % positions] |= bit

    def _clear(self, slot: int) -> None:
        table = bytes(value & ~(1 << slot) for value in range(256))
        for start in range(0, self._positions, _CHUNK):
            end = min(start + _CHUNK, self._positions)
            self._bits[start:end] = self._bits[start:end].translate(table)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if self._lock_fd < 0:
            raise ValueError("the SessionFilter is closed")
        # flock() excludes other open files, not other threads sharing this one.
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The lock, with this handle mapping the file now at the path (remapped if not)."""
        with self._lock():
            if not self._current():
                self._attach()
            yield

    # -- mapping ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Remap if the path now names another file (re-created by another process) or the
        header is damaged (then the file is re-created). One ``stat``; the caller calls it at
        most about once a second. Until then a replaced or damaged file passes everything."""
        if not self._current():
            with self._lock():
                if not self._current():
                    self._attach()
        self._forget_view()

    def is_current(self) -> bool:
        """Whether this handle still maps the file at the path, intact (one ``stat``).

        A writer asks after its store write: if the file was replaced meanwhile, the
        replacement may have been filled from the store before that write, so the write
        must be recorded there too (``add`` again).
        """
        return self._current()

    def _current(self) -> bool:
        """Whether this handle maps the file at the path and its header is intact."""
        if not self._mapped:
            return False
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return False
        if (stat.st_dev, stat.st_ino, stat.st_size) != self._file_id:
            return False
        header = _parse(self._head[:_HEADER_END])
        return header is not None and header.incarnation == self._incarnation

    def _attach(self) -> None:
        """Map the file at the path, or a new one in its place (lock held)."""
        try:
            old = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            old = -1
        try:
            if old >= 0 and self._usable(old):
                self._map(old)
                return
            fd = self._create()
            try:
                self._map(fd)
            finally:
                os.close(fd)
            # Handles still mapping the replaced inode see its magic gone: they pass all.
            if old >= 0 and os.fstat(old).st_size >= len(MAGIC):
                os.pwrite(old, bytes(len(MAGIC)), 0)
        finally:
            if old >= 0:
                os.close(old)

    def _usable(self, fd: int) -> bool:
        size = os.fstat(fd).st_size
        header = _Header.unpack(os.pread(fd, _HEADER_END, 0))
        expected = (self._generations, self._capacity, self._fp_rate, self._window,
                    self._positions, self._hashes, HEADER_SIZE + self._positions)  # fmt: skip
        return (
            header is not None
            and header[3:10] == expected
            and size == HEADER_SIZE + self._positions
            and header.boot_id == _boot_id()
        )

    def _create(self) -> int:
        """A new empty, incomplete file renamed into place; its descriptor."""
        directory, name = os.path.split(self._path)
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            size = HEADER_SIZE + self._positions
            os.posix_fallocate(fd, 0, size)  # no SIGBUS on a full disk later
            params = (self._generations, self._capacity, self._fp_rate, self._window)
            header = _Header(
                os.urandom(8), 0, False, *params, self._positions, self._hashes, size,
                os.urandom(16), _boot_id(), (_UNUSED_SLOT,) * MAX_GENERATIONS,
            )  # fmt: skip
            os.pwrite(fd, header.pack(), 0)
            os.rename(temporary, self._path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return fd

    def _map(self, fd: int) -> None:
        stat = os.fstat(fd)
        head = mmap.mmap(fd, HEADER_SIZE)
        bits = mmap.mmap(fd, self._positions, offset=HEADER_SIZE)
        header = _Header.unpack(head[:_HEADER_END])
        assert header is not None  # checked or written under the lock
        # The old maps are not closed: another thread may be checking against them. They
        # close when the last reference goes.
        self._head, self._bits, self._mapped = head, bits, True
        self._file_id = (stat.st_dev, stat.st_ino, stat.st_size)
        self._incarnation = header.incarnation
        self._hasher = hashlib.blake2b(digest_size=8 * self._hashes, key=header.key).copy
        self._forget_view()

    def _unmap(self) -> None:
        if self._mapped:
            self._head.close()
            self._bits.close()
            self._mapped = False

    # -- reporting and lifetime -------------------------------------------------------------

    def stats(self) -> FilterStats:
        """The parameters and the state of the file at the path (remapping if replaced)."""
        with self._writing():
            header = _Header.unpack(self._head[:_HEADER_END])
        assert header is not None
        now, live, miss = self._clock(), [], 1.0
        for slot, (window, deadline) in enumerate(header.slots[: self._generations]):
            if now < deadline:
                fill = self._count(slot) / self._positions
                live.append(GenerationStats(slot, window * self._window, deadline, fill))
                miss *= 1 - fill**self._hashes
        return FilterStats(self._path, self._capacity, self._fp_rate, self._generations,
                           self._window, self._positions, self._hashes, self._file_id[2],
                           header.complete, tuple(live), 1 - miss)  # fmt: skip

    def _count(self, slot: int) -> int:
        without = bytes(value for value in range(256) if not value & 1 << slot)
        return sum(
            len(self._bits[start : start + _CHUNK].translate(None, without))
            for start in range(0, self._positions, _CHUNK)
        )

    def close(self) -> None:
        """Unmap and release the lock file; the handle is unusable afterwards."""
        if self._lock_fd >= 0:
            self._unmap()
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> SessionFilter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _deadline(expires_at: float) -> float:
    if math.isnan(expires_at):
        raise ValueError("expires_at is NaN")
    return float(expires_at)
