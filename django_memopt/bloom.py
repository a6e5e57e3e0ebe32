"""A Bloom filter of live session IDs in one file shared by a host's workers.

This module imports nothing from Django. :class:`SessionFilter` answers "might this cookie
name a live session?" without touching the store: ``False`` is definite, ``True`` means
"ask the store". It never answers ``False`` for a session added before the check began and
still live, and answers ``True`` for everything while the file is not *complete* (newly
created, re-created after damage, or from before a reboot) until :meth:`rebuild` ran.

The file is read with ``pread``, never mapped: a process reading a mapped file that
another program truncates is killed by SIGBUS, and a file in a shared directory is what
operators and temp cleaners remove, truncate and overwrite. Every process reads the same
pages of the page cache, so the host still holds the filter in memory once.

Layout: a *blocked* Bloom filter. An ID hashes to one block of :data:`BLOCK` positions
and to ``hashes`` positions inside it, so a check is one keyed BLAKE2s digest and one
``pread`` of one block. A position is one byte holding one bit per generation slot (so at
most 8). File (little-endian)::

    0     gate: magic (8) | incarnation (8, random per file) | seq (u64) | complete (u8) | 7 pad
    32    version, generations, capacity, fp_rate, window, positions, hashes, file size,
          hash key (16), boot id (16)
    116   8 slots: window number (i64), latest deadline (f64)
    244   BLAKE2b-128 of bytes 0-244
    4096  ``positions`` bytes, in blocks of ``BLOCK``

Sizing (:func:`sizing`): each generation is a filter of ``positions`` bits holding up to
``capacity`` IDs at ``p = fp_rate / generations``, so the target holds even when every live
generation is full: ``hashes = min(8, max(1, round(log2(1 / p))))`` and the fewest blocks
whose false-positive rate, with the IDs spread over blocks as a Poisson law spreads them,
is at most ``p`` (about 6% more positions than an unblocked filter).

A check trusts what it reads only to *pass* an ID. Before it turns one away it confirms,
in this order, that the header still carries the gate the live generations were computed
from (a file zeroed, re-created or completed in place changes it), and, unless the caller
vouches that the ID was minted well before this handle last saw the file at the path,
that the path still names the file it reads (one ``stat``): a file removed and re-created
by another process holds sessions this handle cannot see.

Writers serialise on ``flock`` of a sibling ``<path>.lock``, which also records the identity
(incarnation, device, inode) of the file the last owner created: a file at the path that
is not that file (a copy, a backup put back, another program's) is never trusted, however
valid its header. A process whose lock file was removed moves to the one now at its path.
Readers never lock. A writer updating the header never rewrites the file's identity (magic
and incarnation, written once, when the file is created): a file zeroed or truncated
between a writer's read of the header and its write stays damaged, instead of coming back
intact, even complete, with its bits gone. A handle expects the size its header gives, not
the size it found, so a file truncated as it was created or opened is never taken as intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple

__all__ = [
    "BLOCK",
    "FIRST_WRITE_GRACE",
    "FilterStats",
    "GenerationStats",
    "SessionFilter",
    "sizing",
]

MAGIC = b"MOSIDBF\x00"
VERSION = 2
DATA_AT = 4096  # the blocks start on a page boundary, so no block straddles two pages
BLOCK: Final = 512  # positions per block: one pread of 512 bytes per check
MAX_GENERATIONS = 8  # one bit of a position byte each
MAX_HASHES = 8
_BLOCK_MASK = BLOCK - 1
_BLOCK_BITS = BLOCK.bit_length() - 1
_GATE = struct.Struct("<8s8sQB7x")
_GATE_END = _GATE.size
# The file's identity, magic and incarnation: written once, by the process creating the file.
_IDENTITY_END = 16
_PARAMS = struct.Struct("<IIQddQIQ16s16s")
_SLOT = struct.Struct("<qd")
_RECORD = struct.Struct("<8sQQ")  # in the lock file: the created file's incarnation, dev, ino
_SLOTS_AT = _GATE_END + _PARAMS.size
_SUM_AT = _SLOTS_AT + MAX_GENERATIONS * _SLOT.size
_HEADER_END = _SUM_AT + 16
_UNUSED_SLOT = (-(2**63), -math.inf)
# A writer extending a deadline this close to passing bumps ``seq``, so that a reader whose
# clock already saw it pass reloads its live mask instead of ignoring the slot.
_BUMP_MARGIN = 60.0
_BATCH = 1024  # rebuild: IDs written per lock hold, so other writers interleave
_CHUNK = 1 << 20
#: Seconds a session's first write may follow the minting of its ID. A check told when an
#: ID was minted skips the ``stat`` before turning it away if the ID is older than this
#: much before the handle last found its file at the path: that session was recorded then.
FIRST_WRITE_GRACE: Final = 60.0
# A file being rewritten (a torn header) or damaged is looked at again this often.
_RECHECK_SECONDS = 0.05
_pread: Final = os.pread


def _block_fp_rate(capacity: int, blocks: int, hashes: int) -> float:
    """The false-positive rate of ``blocks`` blocks holding ``capacity`` IDs."""
    per_block = capacity / blocks
    miss = 1.0 - 1.0 / BLOCK
    rate, term, ids = 0.0, math.exp(-per_block), 0
    while True:  # Poisson(per_block) IDs in the block an unknown ID hashes to
        rate += term * (1.0 - miss ** (hashes * ids)) ** hashes
        ids += 1
        term *= per_block / ids
        if ids > per_block and term < 1e-12:
            return rate


def sizing(capacity: int, fp_rate: float, generations: int) -> tuple[int, int]:
    """``(positions, hashes)`` for the parameters (see the module docstring)."""
    per_generation = fp_rate / generations
    hashes = min(MAX_HASHES, max(1, round(math.log2(1 / per_generation))))
    # An unblocked filter's size is a lower bound; blocks only add to it.
    low = math.ceil(-hashes * capacity / math.log1p(-(per_generation ** (1 / hashes))) / BLOCK)
    high = 2 * low
    while _block_fp_rate(capacity, high, hashes) > per_generation:
        high *= 2
    while low < high:
        middle = (low + high) // 2
        if _block_fp_rate(capacity, middle, hashes) > per_generation:
            low = middle + 1
        else:
            high = middle
    return high * BLOCK, hashes


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
        header = cls._make((incarnation, seq, bool(complete), *params, slots))
        shape_ok = (
            2 <= header.generations <= MAX_GENERATIONS
            and 1 <= header.hashes <= MAX_HASHES
            and header.positions > 0
            and header.positions % BLOCK == 0
            and header.file_size == DATA_AT + header.positions
            and header.window > 0
        )
        return header if shape_ok else None


# Writers parse the header on every add; it changes rarely, so parse each version once.
_parse: Final = functools.lru_cache(maxsize=16)(_Header.unpack)

# A writer raising a slot's deadline raises it further (this, or a 16th of a window if
# less), so that the saves that follow, each a little later, find it high enough and leave
# the header alone. A deadline recorded late only keeps a generation a little longer.
_DEADLINE_SLACK: Final = 60.0


class _OpenFile:
    """A descriptor closed when the last reference goes: a thread may still be reading
    through it after another thread moved the handle to a new file."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _Shape(NamedTuple):
    """What hashing an ID needs, from a file's parameters."""

    blocks: int
    hasher: Callable[[], Any]  # a keyed BLAKE2b, copied per ID
    # digest -> words: the first picks the block (its bits above the first position's),
    # and the low bits of each are a position in the block.
    unpack: Callable[[bytes], tuple[int, ...]]


class _View(NamedTuple):
    """What a check reads, replaced whole so that a thread moving the handle to another
    file meanwhile cannot mix two files: the file, how IDs hash into it, the live-generation
    mask (-1: pass everything), until when that mask holds (this handle's clock), and the
    gate bytes it was computed from."""

    file: _OpenFile | None
    shape: _Shape | None
    live: int
    until: float
    gate: bytes


_NO_VIEW: Final = _View(None, None, -1, -math.inf, b"")


def _placed(shape: _Shape, session_key: str) -> tuple[int, tuple[int, ...]]:
    """Where ``session_key``'s block starts in the file, and the words whose low bits are
    its positions in the block."""
    digest = shape.hasher()
    digest.update(_encode(session_key))
    words = shape.unpack(digest.digest())
    return DATA_AT + (words[0] >> _BLOCK_BITS) % shape.blocks * BLOCK, words


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
    on a thread lock as well as on ``flock``.

    An *owner* (:meth:`open`) uses the file at the path if it has the owner's parameters,
    and otherwise creates one in its place. A *follower* (:meth:`follow`) records into
    whatever filter file is at the path, with that file's parameters, and never creates,
    replaces or removes one: for processes that do not ask the filter but must keep it
    complete for those that do.
    """

    __slots__ = (
        "_path", "_lock_fd", "_owner", "_clock", "_capacity", "_fp_rate", "_generations",
        "_window", "_positions", "_hashes", "_file", "_file_id", "_incarnation", "_shape",
        "_view", "_confirmed_at", "_thread_lock",
    )  # fmt: skip
    _file: _OpenFile | None
    _file_id: tuple[int, int, int]
    _incarnation: bytes
    _shape: _Shape

    def __init__(
        self,
        path: str,
        owner: bool,
        clock: Callable[[], float],
        params: tuple[int, float, int, float] = (1, 0.5, 2, 1.0),
    ) -> None:
        """Private: use :meth:`open` or :meth:`follow`."""
        self._path, self._owner, self._clock = path, owner, clock
        self._capacity, self._fp_rate, self._generations, self._window = params
        self._positions, self._hashes = sizing(*params[:3]) if owner else (0, 0)
        self._file, self._lock_fd = None, -1
        self._view, self._confirmed_at = _NO_VIEW, -math.inf
        self._thread_lock = threading.Lock()

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
        """Open the filter at ``path``, creating it (and its directory) if missing, or
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
        if capacity >= 2**36:
            raise ValueError("capacity too large")
        path = os.path.abspath(os.fspath(path))
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        params = (capacity, float(fp_rate), generations, float(window))
        self = cls(path, True, clock, params)
        try:
            self._lock_fd = self._open_lock()
            with self._writing():
                pass
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def follow(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> SessionFilter:
        """A follower of the filter at ``path`` (see the class docstring); no file need be
        there: :meth:`add` records nothing until one is."""
        return cls(os.path.abspath(os.fspath(path)), False, clock)

    def _open_lock(self) -> int:
        return os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # -- checks (no lock; one pread, more only before turning an ID away) -------------------

    def might_contain(self, session_key: str, issued_at: float | None = None) -> bool:
        """False only if the file is complete, still the one at the path, and no live
        generation holds ``session_key``.

        ``issued_at``: when the ID was minted (seconds, this handle's clock), if the caller
        knows; an ID minted long enough ago is turned away without a ``stat``.
        """
        view = self._view
        file, shape, found, until, gate = view
        if found < 0 or self._clock() >= until:
            view = self._load_view(view)
            if view.live < 0:
                return True
            file, shape, found, until, gate = view
        blocks, hasher, unpack = shape  # type: ignore[misc]
        digest = hasher()  # inlined _placed(): a call costs a tenth of a check
        try:
            digest.update(session_key.encode())
        except UnicodeEncodeError:
            digest.update(_encode(session_key))
        words = unpack(digest.digest())
        at = DATA_AT + (words[0] >> _BLOCK_BITS) % blocks * BLOCK
        try:
            block = _pread(file.fd, BLOCK, at)  # type: ignore[union-attr]
            for word in words:
                found &= block[word & _BLOCK_MASK]
                if not found:
                    # Inlined _confirm_absent() for an ID minted long ago: a flood's case.
                    if (
                        issued_at is not None
                        and issued_at + FIRST_WRITE_GRACE < self._confirmed_at
                        and _pread(file.fd, _GATE_END, 0) == gate  # type: ignore[union-attr]
                    ):
                        return False
                    return not self._confirm_absent(view, session_key, issued_at)
        except (OSError, IndexError):  # truncated under us: damaged, not a verdict
            return True
        return True

    @staticmethod
    def _holds(view: _View, session_key: str) -> bool:
        """Whether ``view``'s bits hold ``session_key`` in a live generation (or cannot be
        read: only a confirmed absence may turn an ID away)."""
        file, shape, found = view.file, view.shape, view.live
        assert file is not None and shape is not None  # live >= 0
        at, words = _placed(shape, session_key)
        try:
            block = _pread(file.fd, BLOCK, at)
            for word in words:
                found &= block[word & _BLOCK_MASK]
        except (OSError, IndexError):
            return True
        return bool(found)

    def _confirm_absent(self, view: _View, session_key: str, issued_at: float | None) -> bool:
        """Whether a miss in ``view`` may turn ``session_key`` away (see the module docstring)."""
        assert view.file is not None
        now = self._clock()
        try:
            gate = os.pread(view.file.fd, _GATE_END, 0)
        except OSError:
            return False
        if gate != view.gate:
            # Completed, re-created, zeroed or a slot came alive: look again, once.
            view = self._load_view(view)
            if view.live < 0 or self._holds(view, session_key):
                return False
        if issued_at is None or issued_at + FIRST_WRITE_GRACE >= self._confirmed_at:
            if not self._same_file():
                self._forget_view()
                return False
            self._confirmed_at = max(self._confirmed_at, now)
        return True

    def _same_file(self) -> bool:
        try:
            stat = os.stat(self._path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino, stat.st_size) == self._file_id

    def _load_view(self, view: _View) -> _View:
        """A fresh view of ``view``'s file; live -1 (pass everything for now) if it is
        incomplete, replaced, damaged, or caught mid-write."""
        file, shape = view.file, view.shape
        now = self._clock()
        data = b""
        if file is not None:
            with contextlib.suppress(OSError):
                data = os.pread(file.fd, _HEADER_END, 0)
        live, until = -1, now + _RECHECK_SECONDS
        if data[:16] == MAGIC + self._incarnation_or_none() and data[24:25] == b"\x01":
            header = _Header.unpack(data)
            if header is not None and header.incarnation == self._incarnation:
                live, until = 0, math.inf
                for slot, (_, deadline) in enumerate(header.slots[: header.generations]):
                    if now < deadline:
                        live, until = live | 1 << slot, min(until, deadline)
        # Until ``until`` the mask can only grow, and growing bumps ``seq`` in the gate.
        fresh = _View(file, shape, live, until, data[:_GATE_END])
        if self._view is view:  # else another thread moved the handle meanwhile: keep its view
            self._view = fresh
        return fresh

    def _incarnation_or_none(self) -> bytes:
        return self._incarnation if self._file is not None else b"-"

    def _forget_view(self) -> None:
        view = self._view
        self._view = view._replace(until=-math.inf)

    @property
    def path(self) -> str:
        """The file's absolute path."""
        return self._path

    @property
    def incarnation(self) -> bytes | None:
        """The random identity of the file this handle is on (a new one per file created)."""
        return self._incarnation if self._file is not None else None

    @property
    def complete(self) -> bool:
        """Whether checks filter (rather than pass everything) on this handle's file."""
        if self._file is None:
            return False
        try:
            gate = os.pread(self._file.fd, _GATE_END, 0)
        except OSError:
            return False
        return gate[:16] == MAGIC + self._incarnation and gate[24:25] == b"\x01"

    # -- writes (under the lock) ------------------------------------------------------------

    def add(self, session_key: str, expires_at: float) -> None:
        """Record ``session_key``, live until ``expires_at``, in the current generation.
        Call before every persisted write of the session (a follower: after it)."""
        item = [(session_key, _deadline(expires_at))]
        with self._thread_lock:
            if self._lock_fd < 0:
                if self._owner:
                    raise ValueError("the SessionFilter is closed")
                if not os.path.exists(self._path):
                    return
                self._lock_fd = self._open_lock()
            # As _writing(), without its two generators: this runs on every save.
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                if not self._current():
                    self._attach()
                self._write(item)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def rebuild(
        self, sessions: Iterable[tuple[str, float]], *, listed_for: bytes | None = None
    ) -> int:
        """Add every ``(session_key, expires_at)``, then mark the file complete; the count.

        ``sessions`` must be listed from the store after the file was there: lazily, or,
        for a list made earlier, with ``listed_for`` the :attr:`incarnation` of the file
        at the time (a listing made before another file took its place misses what was
        recorded only in the file it replaced). Writers keep adding meanwhile, so the site
        need not stop. If the file is re-created during the rebuild, the new file stays
        incomplete (``complete`` says so).
        """
        with self._writing():
            incarnation = self._incarnation
        count, batch = 0, []
        intact = listed_for is None or listed_for == incarnation
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
            return self._write(batch) and self._incarnation == incarnation

    def mark_complete(self) -> None:
        """Declare that every live session has been added to this handle's file. Does
        nothing (but move to the file at the path) if the file was re-created since."""
        self._mark_complete(self._incarnation)

    def _mark_complete(self, incarnation: bytes) -> None:
        with self._lock():
            if not self._current():
                self._attach()
            elif self._incarnation == incarnation:
                header = self._header()
                if header is not None and header.incarnation == incarnation:
                    self._write_header(header._replace(complete=True))

    def _header(self) -> _Header | None:
        assert self._file is not None
        return _parse(os.pread(self._file.fd, _HEADER_END, 0))

    def _header_for_writing(self) -> _Header | None:
        """This file's header (lock held), after moving to a new file if another program
        damaged this one since :meth:`_current` looked; None: a follower without a file."""
        header = None if self._file is None else self._header()
        if header is None or header.incarnation != self._incarnation:
            self._attach()
            header = None if self._file is None else self._header()
        return header

    def _write_header(self, header: _Header) -> None:
        """Write ``header`` (read from this handle's file, lock held) but for the file's
        identity (magic and incarnation), which only :meth:`_create` writes.

        Another program may zero or truncate the file between the read and this write,
        and a header written whole would bring such a file back intact, complete and
        with its bits gone: checks would turn its sessions away. Without its identity
        it stays damaged, and is replaced and refilled.
        """
        assert self._file is not None
        os.pwrite(self._file.fd, header.pack()[_IDENTITY_END:], _IDENTITY_END)

    def _write(self, items: list[tuple[str, float]]) -> bool:
        """Record ``items`` in this handle's file (lock held); whether every one was."""
        header = self._header_for_writing()
        if header is None or self._file is None:
            return False
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
            self._write_header(header._replace(seq=header.seq + bump, slots=tuple(slots)))
        fd, bit = self._file.fd, 1 << slot
        for key, _ in items:
            at, words = _placed(self._shape, key)
            block = bytearray(os.pread(fd, BLOCK, at))
            if len(block) < BLOCK:  # truncated under us: the next add re-creates the file
                return False
            for word in words:
                block[word & _BLOCK_MASK] |= bit
            os.pwrite(fd, block, at)
        return True

    def _clear(self, slot: int) -> None:
        assert self._file is not None
        table = bytes(value & ~(1 << slot) for value in range(256))
        for start in range(DATA_AT, DATA_AT + self._positions, _CHUNK):
            chunk = os.pread(self._file.fd, min(_CHUNK, DATA_AT + self._positions - start), start)
            os.pwrite(self._file.fd, chunk.translate(table), start)

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
        """The lock, with this handle on the file now at the path (moved to it if not)."""
        with self._lock():
            if not self._current():
                self._attach()
            yield

    # -- attaching to the file at the path --------------------------------------------------

    def refresh(self) -> None:
        """Move to the file at the path if the path now names another file (re-created by
        another process) or this one is damaged (an owner then re-creates it). One
        ``stat`` and one ``pread``; the caller calls it at most about once a second."""
        now = self._clock()
        if self._current():
            self._confirmed_at = max(self._confirmed_at, now)
        elif self._lock_fd >= 0:
            with self._lock():
                if not self._current():
                    self._attach()
        self._forget_view()

    def is_current(self) -> bool:
        """Whether this handle is on the file at the path, intact (one ``stat``).

        A writer asks after its store write: if the file was replaced meanwhile, the
        replacement may have been filled from the store before that write, so the write
        must be recorded there too (``add`` again).
        """
        return self._current()

    def _current(self) -> bool:
        """Whether this handle is on the file at the path and its header is intact."""
        if self._file is None or not self._same_file():
            return False
        header = self._header()
        return header is not None and header.incarnation == self._incarnation

    def _attach(self) -> None:
        """Move to the file at the path, or (an owner) a new one in its place (lock held)."""
        self._relock_if_replaced()
        try:
            old = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            old = -1
        try:
            header = self._usable(old)
            if header is not None:
                self._use(old, header)
                old = -1  # kept open by the handle
                return
            if not self._owner:
                self._file, self._view = None, _NO_VIEW
                return
            # Its header as written: another program may already have damaged the file at
            # the path (then this handle sees it at its next look and replaces it).
            fd, header = self._create()
            self._use(fd, header)
            # Handles still on the replaced inode see its magic gone: they pass all.
            if old >= 0 and os.fstat(old).st_size >= len(MAGIC):
                os.pwrite(old, bytes(len(MAGIC)), 0)
        finally:
            if old >= 0:
                os.close(old)

    def _relock_if_replaced(self) -> None:
        """If the lock file at the path is no longer the one this handle locks (removed,
        say, with the filter file), lock the one there now, so that every writer shares one
        lock and one record again (lock held; then held on the new one)."""
        lock_path = f"{self._path}.lock"
        mine = os.fstat(self._lock_fd)
        with contextlib.suppress(FileNotFoundError):
            there = os.stat(lock_path)
            if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                return
        os.makedirs(os.path.dirname(self._path), mode=0o700, exist_ok=True)
        fd = self._open_lock()
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(self._lock_fd)  # and with it the lock on the old file
        self._lock_fd = fd

    def _usable(self, fd: int) -> _Header | None:
        """The header of the file at ``fd`` if this handle may use it as it is."""
        if fd < 0:
            return None
        header = _Header.unpack(os.pread(fd, _HEADER_END, 0))
        stat = os.fstat(fd)
        recorded = os.pread(self._lock_fd, _RECORD.size, 0)
        if (
            header is None
            or stat.st_size != header.file_size
            or header.boot_id != _boot_id()
            or recorded != _RECORD.pack(header.incarnation, stat.st_dev, stat.st_ino)
        ):
            return None
        if not self._owner:
            return header
        expected = (self._generations, self._capacity, self._fp_rate, self._window,
                    self._positions, self._hashes, DATA_AT + self._positions)  # fmt: skip
        return header if header[3:10] == expected else None

    def _create(self) -> tuple[int, _Header]:
        """A new empty, incomplete file renamed into place and recorded in the lock file; its
        descriptor and the header written in it."""
        directory, name = os.path.split(self._path)
        os.makedirs(directory, mode=0o700, exist_ok=True)  # removed with its files, maybe
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            size = DATA_AT + self._positions
            os.posix_fallocate(fd, 0, size)  # no ENOSPC on a full disk later
            params = (self._generations, self._capacity, self._fp_rate, self._window)
            header = _Header(
                os.urandom(8), 0, False, *params, self._positions, self._hashes, size,
                os.urandom(16), _boot_id(), (_UNUSED_SLOT,) * MAX_GENERATIONS,
            )  # fmt: skip
            os.pwrite(fd, header.pack(), 0)
            stat = os.fstat(fd)
            os.rename(temporary, self._path)
            record = _RECORD.pack(header.incarnation, stat.st_dev, stat.st_ino)
            os.pwrite(self._lock_fd, record, 0)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return fd, header

    def _use(self, fd: int, header: _Header) -> None:
        stat = os.fstat(fd)
        self._capacity, self._fp_rate = header.capacity, header.fp_rate
        self._generations, self._window = header.generations, header.window
        self._positions, self._hashes = header.positions, header.hashes
        hasher = hashlib.blake2s(digest_size=6 + 2 * header.hashes, key=header.key)
        self._shape = _Shape(
            header.positions // BLOCK,
            hasher.copy,
            struct.Struct(f"<Q{header.hashes - 1}H").unpack,
        )
        # The old descriptor is not closed here: another thread may be reading through it.
        self._file = _OpenFile(fd)
        # The size the header gives, not the one found: a file truncated since it was
        # created or checked is then seen as damaged at the next look, never trusted.
        self._file_id = (stat.st_dev, stat.st_ino, header.file_size)
        self._incarnation = header.incarnation
        self._confirmed_at = self._clock()
        self._view = _View(self._file, self._shape, -1, -math.inf, b"")

    # -- reporting and lifetime -------------------------------------------------------------

    def stats(self) -> FilterStats:
        """The parameters and the state of the file at the path (moving to it if replaced)."""
        with self._writing():
            header = self._header_for_writing()
        if header is None:
            raise OSError(f"the session-ID filter {self._path!r} is damaged as it is read")
        now, live, miss = self._clock(), [], 1.0
        for slot, (window, deadline) in enumerate(header.slots[: self._generations]):
            if now < deadline:
                fill, rate = self._fill(slot)
                live.append(GenerationStats(slot, window * self._window, deadline, fill))
                miss *= 1 - rate
        return FilterStats(self._path, self._capacity, self._fp_rate, self._generations,
                           self._window, self._positions, self._hashes, self._file_id[2],
                           header.complete, tuple(live), 1 - miss)  # fmt: skip

    def _fill(self, slot: int) -> tuple[float, float]:
        """The share of the slot's bits set, and the false-positive rate they give: the mean
        over blocks of the block's share to the power ``hashes`` (the blocks' loads vary)."""
        assert self._file is not None
        table = bytes(1 if value & 1 << slot else 0 for value in range(256))
        end, ones, rate = DATA_AT + self._positions, 0, 0.0
        for start in range(DATA_AT, end, _CHUNK):
            chunk = _pread(self._file.fd, min(_CHUNK, end - start), start).translate(table)
            for at in range(0, len(chunk), BLOCK):
                in_block = chunk.count(1, at, at + BLOCK)
                ones += in_block
                rate += (in_block / BLOCK) ** self._hashes
        return ones / self._positions, rate / (self._positions // BLOCK)

    def close(self) -> None:
        """Release the file and the lock file; the handle is unusable afterwards."""
        self._file, self._view = None, _NO_VIEW
        if self._lock_fd >= 0:
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
