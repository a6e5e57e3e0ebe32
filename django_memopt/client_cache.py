"""A per-process cache of the Redis engine's sessions, kept coherent by Redis's tracking.

A load of a session this process holds costs no round trip: the cache keeps each session
as Redis returned it (sealed fields, never decoded values; the deadline; the version
token), in least-recently-used order, within ``MEMOPT_REDIS_CLIENT_CACHE`` bytes.

Coherence: each process opens one connection of its own, the **channel**, made as the
data pool makes its connections (``pool.connection_class(**pool.connection_kwargs)``:
address, password, TLS, Sentinel), and turns it into a RESP2 subscriber that Redis tells
of every write under the key prefix::

    CLIENT ID                      -> id
    CLIENT TRACKING ON REDIRECT <id> BCAST PREFIX <MEMOPT_REDIS_KEY_PREFIX>
    SUBSCRIBE __redis__:invalidate

Redis then sends the name of every key written under the prefix (by any client, script,
expiry or eviction) to the channel, and a null for ``FLUSHDB``/``FLUSHALL``. In BCAST mode
it writes that message to the channel's socket *before* it writes the writer's reply
(the invalidations of an event-loop cycle go out first), so on one host a process that
takes in whatever its channel holds before serving (``poll(0)``, then a read only if
something is there: well under a microsecond when nothing is) sees every write whose
reply came back before: that is the guarantee. Nothing is ever sent on the channel while
serving (output queued for it during another client's command would lose that order),
except the lag fence below.

The cache serves only while the channel is **confirmed**: a heartbeat key of this process
(``<prefix>~hb:<random>``, the prefix's last ``:`` left out: outside the sessions' prefix,
tracked on a prefix of its own, so only this process hears of it), written every
``HEARTBEAT`` seconds *through the data pool* and not replicated, came back on the channel
less than ``MAX_SILENCE`` seconds ago. That proves the channel is alive, tracking is on,
and the data pool and the channel talk to the same server (not a replica of it, which
would hear writes late). The heartbeat and a reconnect are round trips: one thread makes
each, outside the lock, while the others go on (serving while the last confirmation is
recent, bypassing while the channel is down). The channel tracks with itself as its
redirect target, so a redirect cannot break on its own (Redis's
``tracking-redir-broken``): the channel's end is its socket's. A drain that read a lot
(``LAG_BYTES``, or a socket queue near its receive buffer) means Redis may be holding
messages back: the channel sends a ``PING`` and the cache serves nothing until its
``PONG``, which comes after everything held back.

Own writes: the save and refresh scripts return the version token they replaced. The
writer patches its copy only if that is the token it held (no write came between its copy
and its save), and holds the patched copy *unverified*: BCAST merges the keys written in
one event-loop cycle, so a foreign write right after ours comes back as the same message
as our own. A **probe** (the token read on a second connection of this process, sent
without waiting) verifies the copy; a load of it waits for that reply.

A caller on an event loop (the engine's async API) passes ``wait=False``: the upkeep due
(a reconnect, a heartbeat) then runs in a thread of its own that nobody waits for, and a
copy of an own write whose probe has not answered yet is a miss rather than a wait. Serving
from the cache costs such a caller the same non-blocking poll as any other.

Failure is safe: the channel or the probe closed or reset, a heartbeat not back in
``MAX_SILENCE``, a lag fence not answered in ``MAX_SILENCE``: the cache is flushed and
bypassed, and reconnected at most every ``RECONNECT_EVERY`` seconds. A null message
(``FLUSHDB``) flushes it. A server that refuses ``CLIENT TRACKING`` (an ACL, a proxy, a
managed service) or runs threaded I/O (which loses the order above) leaves this process
without a cache, said once in the log. A forked child drops its parent's cache and
connections.

Counted (``django_memopt.counters``, ``CLIENT_CACHE_COUNTERS``): loads served from the
cache, loads not served though the cache was usable, loads while it was not (bypasses),
invalidations received for held sessions, flushes, and the bytes held (added and taken
away as entries come and go, so the sum over threads is the current total).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, Final

import hiredis

from django_memopt.counters import CLIENT_CACHE_COUNTERS
from django_memopt.counters import add as count

__all__ = ["CLIENT_CACHE_COUNTERS", "CachedSession", "ClientCache", "Probe", "tracking_refusal"]

logger: Final = logging.getLogger("django_memopt.client_cache")

INVALIDATE_CHANNEL: Final = b"__redis__:invalidate"
_PING: Final = b"*1\r\n$4\r\nPING\r\n"  # the lag fence, in Redis's protocol
#: Seconds between heartbeat writes (one small ``SET`` through the data pool).
HEARTBEAT: Final = 0.5
#: Seconds without a confirmed heartbeat (or with a lag fence unanswered) after which the
#: cache stops serving, and then flushes and reconnects.
MAX_SILENCE: Final = 2.0
#: Seconds between attempts to connect the channel after a failure.
RECONNECT_EVERY: Final = 1.0
#: Seconds between attempts on a server that refused tracking (not logged again).
REFUSED_RETRY: Final = 300.0
#: A drain that read this many bytes may have left messages in Redis's buffers.
LAG_BYTES: Final = 32 * 1024
#: A socket queue using at least 1/LAG_FRACTION of its receive buffer counts as lagging.
LAG_FRACTION: Final = 4
# getsockopt(SOL_SOCKET, SO_MEMINFO): the kernel's memory for a socket's queues (Linux).
_SO_MEMINFO: Final = 55 if sys.platform.startswith("linux") else None
#: A session whose deadline is less than this many ms ahead is never served: Redis
#: expires by its own clock, this process by its own.
EXPIRY_MARGIN_MS: Final = 1000
# Bytes an entry takes beyond its key, fields dict and fields (measured with tracemalloc
# on CPython 3.11: the entry object, its token and deadline, the LRU's slot and link).
ENTRY_OVERHEAD: Final = 224


class CachedSession:
    """A session as the cache holds it: sealed fields (never decoded), deadline, token."""

    __slots__ = ("deadline_ms", "fields", "size", "stored_size", "token", "verified")

    def __init__(
        self,
        key: bytes,
        fields: dict[str, bytes],
        deadline_ms: int,
        token: bytes,
        stored_size: int = 0,
    ) -> None:
        self.fields = fields
        self.deadline_ms = deadline_ms
        self.token = token
        self.stored_size = stored_size  # the bytes it takes in Redis, about (statistics)
        self.verified = True
        # What it costs this process, not only its stored bytes: the bound is on memory.
        self.size = (
            ENTRY_OVERHEAD
            + sys.getsizeof(key)
            + sys.getsizeof(fields)
            + sum(sys.getsizeof(name) + sys.getsizeof(value) for name, value in fields.items())
        )

    def patched(
        self, sets: Mapping[str, bytes], deletes: Iterable[str], deadline_ms: int, token: bytes
    ) -> CachedSession:
        """A copy with a write applied, unverified; its size reckoned from this one's."""
        fields = dict(self.fields)
        size = self.size - sys.getsizeof(self.fields)
        for name, value in sets.items():
            old = fields.get(name)
            if old is None:
                size += sys.getsizeof(name) + sys.getsizeof(value)
            else:
                size += sys.getsizeof(value) - sys.getsizeof(old)
            fields[name] = value
        for name in deletes:
            old = fields.pop(name, None)
            if old is not None:
                size -= sys.getsizeof(name) + sys.getsizeof(old)
        copy = CachedSession.__new__(CachedSession)
        copy.fields, copy.deadline_ms, copy.token = fields, deadline_ms, token
        copy.stored_size, copy.verified = self.stored_size, False
        copy.size = size + sys.getsizeof(fields)
        return copy


class Probe:
    """How the store reads a session's version token: ``packed(key)``, the commands to send
    in Redis's protocol (sent together; one of them may answer ``WRONGTYPE``), ``replies``,
    how many replies they get, and ``token(replies)``, the token in them (``None``: no
    session, or none with a token)."""

    def __init__(
        self,
        packed: Callable[[bytes], bytes],
        replies: int,
        token: Callable[[list[Any]], bytes | None],
    ) -> None:
        self.packed = packed
        self.replies = replies
        self.token = token


class _Refused(Exception):
    """The server will not track for this process."""


class _Link:
    """A connection of this process's own, as the data pool makes them, read without
    blocking through a hiredis reader once set up."""

    def __init__(self, pool: Any) -> None:
        kwargs = dict(pool.connection_kwargs)
        kwargs["protocol"] = 2  # invalidations as Pub/Sub messages, whatever the pool uses
        self.connection = pool.connection_class(**kwargs)
        self.connection.connect()
        self.sock: socket.socket = self.connection._sock
        self._tls = hasattr(self.sock, "pending")
        self.reader = hiredis.Reader()
        self._poller = select.poll()  # not select(): a process may hold fds past 1024
        self._poller.register(self.sock.fileno(), select.POLLIN)

    def call(self, *command: Any) -> Any:
        """Redis's reply to ``command`` (an error reply raised), waiting for it."""
        self.connection.send_command(*command)
        return self.connection.read_response()

    def send_packed(self, data: bytes) -> None:
        """Send commands already in Redis's protocol, without waiting for their replies."""
        self.sock.sendall(data)

    def tls_pending(self) -> bool:
        """Whether TLS holds bytes it decrypted that were not read yet (the socket may be
        quiet meanwhile)."""
        pending = getattr(self.sock, "pending", None)
        return bool(pending and pending())

    def readable(self) -> bool:
        return self.tls_pending() or bool(self._poller.poll(0))

    def drain(self) -> tuple[list[Any], int]:
        """The replies that have arrived, and how many bytes that read; ``ConnectionError``
        if the server closed the connection."""
        read = 0
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            read += len(data)
            self.reader.feed(data)
            # A plain TCP read returns all that is queued, up to its size: a short one
            # emptied the queue. TLS returns a record at a time, so it looks again.
            if len(data) < 65536 and not self._tls:
                break
            if not self.readable():
                break
        replies = []
        while (reply := self.reader.gets()) is not False:
            replies.append(reply)
        return replies, read

    def read_one(self) -> Any:
        """The next reply, waiting for it (within the connection's socket timeout)."""
        while (reply := self.reader.gets()) is False:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.reader.feed(data)
        return reply

    def queued(self) -> tuple[int, int] | None:
        """The bytes this socket's receive queue holds and its receive buffer (Linux)."""
        if _SO_MEMINFO is None:
            return None
        try:
            held, buffer = struct.unpack_from(
                "2I", self.sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36)
            )
        except OSError:
            return None
        return held, buffer

    def close(self) -> None:
        # redis-py shuts the socket down only in the process that opened it: a forked
        # child closes its copy and leaves the parent's connection alone.
        self.connection.disconnect()


class _Load:
    """A load in flight: whether its key was invalidated meanwhile."""

    __slots__ = ("epoch", "invalidated")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.invalidated = False


class ClientCache:
    """This process's cache of the sessions under ``prefix`` in the Redis of ``pool()``.

    ``heartbeat(name)`` writes the key ``name`` through the data pool; ``probe`` reads a
    session's token. Every method is thread-safe; none raises for a Redis failure (the
    cache is then bypassed: the data path reports the failure).
    """

    def __init__(
        self,
        pool: Callable[[], Any],
        heartbeat: Callable[[bytes], object],
        probe: Probe,
        prefix: str,
        max_bytes: int,
    ) -> None:
        self._pool = pool
        self._heartbeat = heartbeat
        self._probe = probe
        self.prefix = prefix.encode()
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self.entries: OrderedDict[bytes, CachedSession] = OrderedDict()
        self.used = 0
        self.epoch = 0  # one more at every flush
        self._loads: dict[bytes, list[_Load]] = {}
        self._channel: _Link | None = None
        self._prober: _Link | None = None
        self._poller = select.poll()
        self._probes: list[tuple[bytes, CachedSession]] = []  # awaiting a reply, in order
        self._probe_replies: list[Any] = []  # the first replies of a probe not all in
        self._confirmed_at = 0.0  # when the last heartbeat that came back was written
        self._heartbeat_sent: float | None = None
        self._heartbeat_key = b""
        self._fence_sent: float | None = None  # a lag fence's PING, until its PONG
        self._next_connect = 0.0
        self._connecting = False  # a thread is opening the channel, outside the lock
        self._tending = False  # a thread of _tend(wait=False) is running
        self.refused: str | None = None

    # -- the cache's entries ---------------------------------------------------------------

    def _put(self, key: bytes, entry: CachedSession) -> None:
        self._drop(key, invalidate_loads=False)
        if entry.size > self.max_bytes:
            return
        self.entries[key] = entry
        self.used += entry.size
        count("cache_bytes", entry.size)
        while self.used > self.max_bytes:
            _, oldest = self.entries.popitem(last=False)
            self.used -= oldest.size
            count("cache_bytes", -oldest.size)

    def _drop(self, key: bytes, invalidate_loads: bool = True) -> bool:
        """Forget ``key``; a load of it in flight will not fill the cache. Whether it was
        held."""
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.used -= entry.size
            count("cache_bytes", -entry.size)
        if invalidate_loads:
            for load in self._loads.get(key, ()):
                load.invalidated = True
        return entry is not None

    def _flush(self) -> None:
        if self.used:
            count("cache_bytes", -self.used)
        self.entries.clear()
        self.used = 0
        self.epoch += 1
        for loads in self._loads.values():
            for load in loads:
                load.invalidated = True
        count("cache_flushes")

    def drop(self, key: bytes) -> None:
        """Forget ``key`` (a delete, a failed write), after taking in what has arrived."""
        with self._lock:
            self._usable()
            self._drop(key)

    # -- the channel -----------------------------------------------------------------------

    def _tend(self, wait: bool = True) -> None:
        """The round trips that keep the cache usable, when due: a reconnect, then a
        heartbeat. Called without the lock and run outside it, by one thread at a time;
        meanwhile the others go on without waiting: serving while the last confirmation
        is recent enough, else bypassing. Without ``wait`` (an event loop's caller), they
        run in a thread of their own, not waited for: at most one such thread at a time."""
        if self._channel is not None and (
            self._heartbeat_sent is not None or time.monotonic() - self._confirmed_at <= HEARTBEAT
        ):
            return  # nothing due (read without the lock; decided again under it)
        if wait:
            self._reconnect()
            self._beat()
            return
        with self._lock:
            if self._tending:
                return
            self._tending = True
        threading.Thread(target=self._tend_aside, name="memopt-client-cache", daemon=True).start()

    def _tend_aside(self) -> None:
        try:
            self._reconnect()
            self._beat()
        finally:
            with self._lock:
                self._tending = False

    def _reconnect(self) -> None:
        """Open the channel and the probe connection if they are down and may be tried
        again. A flush or a close while they were being opened discards them."""
        with self._lock:
            self._after_fork()
            now = time.monotonic()
            if self._channel is not None or self._connecting or now < self._next_connect:
                return
            self._connecting = True  # the other threads bypass meanwhile
            self._next_connect = now + (REFUSED_RETRY if self.refused else RECONNECT_EVERY)
            epoch = self.epoch
        links: tuple[_Link, _Link] | None = None
        refusal = None
        heartbeat_key = heartbeat_key_for(self.prefix)
        try:
            links = _open_links(self._pool(), self.prefix, heartbeat_key)
        except _Refused as exc:
            refusal = str(exc)
        except Exception:  # unreachable, timed out, closed: tried again later
            pass
        finally:
            with self._lock:
                self._connecting = False
                if links is not None and epoch == self.epoch:
                    self._install(*links, heartbeat_key)
                    links = None
                elif refusal is not None:
                    if self.refused is None:
                        logger.warning(
                            "The Redis client-side session cache is off in this process: %s",
                            refusal,
                        )
                        count("cache_refusals")
                    self.refused = refusal
                    self._next_connect = time.monotonic() + REFUSED_RETRY
            for link in links or ():  # flushed or closed meanwhile: never used
                with suppress(Exception):
                    link.close()

    def _install(self, channel: _Link, prober: _Link, heartbeat_key: bytes) -> None:
        self.refused = None
        self._channel, self._prober = channel, prober
        self._poller = select.poll()
        self._poller.register(channel.sock.fileno(), select.POLLIN)
        self._poller.register(prober.sock.fileno(), select.POLLIN)
        self._heartbeat_key = heartbeat_key
        self._confirmed_at = 0.0
        self._heartbeat_sent = self._fence_sent = None

    def _beat(self) -> None:
        """Write the heartbeat if one is due, outside the lock; the other threads see it
        outstanding and send none. If it fails, the channel it was for is brought down."""
        with self._lock:
            self._usable()  # first take in what came: the last heartbeat may be back
            channel, now = self._channel, time.monotonic()
            if (
                channel is None
                or self._heartbeat_sent is not None
                or now - self._confirmed_at <= HEARTBEAT
            ):
                return
            self._heartbeat_sent = now  # before it is written: its echo confirms it
            key = self._heartbeat_key
        try:
            self._heartbeat(key)
        except Exception:  # the data pool's failure, which its own loads report
            with self._lock:
                if self._channel is channel:
                    self._down()

    def _down(self) -> None:
        """The channel is lost or not to be trusted: flush, and reconnect later."""
        for link in (self._channel, self._prober):
            if link is not None:
                with suppress(Exception):
                    link.close()
        self._channel = self._prober = None
        self._probes.clear()
        self._probe_replies.clear()
        self._flush()

    def close(self) -> None:
        """Close the connections and forget every entry."""
        with self._lock:
            self._down()

    def _take_in(self, ready: set[int]) -> None:
        """Read and apply whatever the channel and the probe connection hold (``ready``:
        the descriptors a poll just found readable)."""
        channel, prober = self._channel, self._prober
        assert channel is not None and prober is not None
        if channel.sock.fileno() in ready or channel.tls_pending():
            queued = channel.queued()
            replies, read = channel.drain()
            self._apply(replies)
            if queued is not None:
                held, buffer = queued
                lagging = held * LAG_FRACTION >= buffer
            else:
                lagging = False
            if (lagging or read >= LAG_BYTES) and self._fence_sent is None:
                self._fence_sent = time.monotonic()
                channel.send_packed(_PING)
        # Probe replies; or its end, seen even with none awaited.
        if prober.sock.fileno() in ready or prober.tls_pending():
            self._verify(prober.drain()[0])

    def _apply(self, messages: list[Any]) -> None:
        for message in messages:
            kind = message[0]
            if kind == b"message":
                keys = message[2]
                if keys is None:  # FLUSHDB, FLUSHALL: everything
                    self._flush()
                    continue
                for key in keys:
                    if key == self._heartbeat_key:
                        if self._heartbeat_sent is not None:
                            self._confirmed_at = self._heartbeat_sent
                            self._heartbeat_sent = None
                    elif self._drop(key):
                        count("cache_invalidations")
            elif kind == b"pong":  # the lag fence: everything held back has been read
                self._fence_sent = None

    def _verify(self, replies: list[Any]) -> None:
        """Apply probe replies (each probe's commands' replies, in order; a probe whose
        replies are not all in yet waits for the rest)."""
        if not self._probes:
            return  # nothing awaited: nothing else is ever sent on that connection
        self._probe_replies += replies
        per_probe = self._probe.replies
        while self._probes and len(self._probe_replies) >= per_probe:
            key, entry = self._probes.pop(0)
            replied = self._probe_replies[:per_probe]
            del self._probe_replies[:per_probe]
            current = self._probe.token(replied) == entry.token
            if self.entries.get(key) is entry:
                if current:
                    entry.verified = True
                else:
                    self._drop(key)

    def _await_probe(self, entry: CachedSession) -> None:
        """Read probe replies until ``entry``'s is in."""
        prober = self._prober
        assert prober is not None
        while any(waiting is entry for _, waiting in self._probes):
            self._verify([prober.read_one()])

    def _after_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's connections are not ours
            for link in (self._channel, self._prober):
                if link is not None:
                    link.close()
            self._reset()

    def _usable(self) -> bool:
        """Take in what reached this process; whether the cache may serve now. Under the
        lock, and never waits for Redis: a reconnect or a heartbeat due is ``_tend()``'s."""
        self._after_fork()
        channel, prober = self._channel, self._prober
        if channel is None or prober is None:
            return False
        try:
            ready = self._poller.poll(0)
            if ready or channel.tls_pending() or prober.tls_pending():
                self._take_in({fd for fd, _ in ready})
            now = time.monotonic()
            if self._heartbeat_sent is not None and now - self._heartbeat_sent > MAX_SILENCE:
                raise ConnectionError("the heartbeat did not come back")
            if self._fence_sent is not None and now - self._fence_sent > MAX_SILENCE:
                raise ConnectionError("the lag fence was not answered")
        except Exception:  # the channel or the probe failed, or went silent: not trusted
            self._down()
            return False
        return self._fence_sent is None and now - self._confirmed_at < MAX_SILENCE

    # -- what the store calls ---------------------------------------------------------------

    def get(self, key: bytes, *, wait: bool = True) -> CachedSession | None:
        """The session at ``key`` if the cache holds a current copy that may be served.

        Without ``wait`` (a caller on an event loop), it never waits on Redis: the upkeep
        due runs in a thread (see :meth:`_tend`), and a copy of an own write whose probe
        has not answered yet is a miss, not waited for."""
        self._tend(wait)
        with self._lock:
            if not self._usable():
                count("cache_bypasses")
                return None
            entry = self.entries.get(key)
            if entry is not None and not entry.verified and wait:
                try:
                    self._await_probe(entry)
                except Exception:
                    self._down()
                entry = self.entries.get(key)
            if (
                entry is None
                or not entry.verified
                or entry.deadline_ms - time.time() * 1000 < EXPIRY_MARGIN_MS
            ):
                count("cache_misses")
                return None
            self.entries.move_to_end(key)
            count("cache_hits")
            return entry

    @contextmanager
    def loading(
        self, key: bytes, *, wait: bool = True
    ) -> Iterator[Callable[[CachedSession], None]]:
        """Around a load from Redis: gives ``fill(entry)``, which keeps what was loaded
        unless ``key`` was written meanwhile or the cache could not be trusted for the
        whole load. ``wait``: as for :meth:`get`."""
        self._tend(wait)
        with self._lock:
            usable = self._usable()
            load = _Load(self.epoch)
            self._loads.setdefault(key, []).append(load)

        def fill(entry: CachedSession) -> None:
            with self._lock:
                # The reply is in: every write before it has reached the channel.
                if usable and self._usable() and not load.invalidated and load.epoch == self.epoch:
                    self._put(key, entry)

        try:
            yield fill
        finally:
            with self._lock:
                loads = self._loads.get(key, [])
                if load in loads:
                    loads.remove(load)
                if not loads:
                    self._loads.pop(key, None)

    @contextmanager
    def writing(
        self, key: bytes, *, wait: bool = True
    ) -> Iterator[Callable[[bytes | None, bytes, int, Mapping[str, bytes], Iterable[str]], None]]:
        """Around an own write of ``key``: gives ``written(replaced, token, deadline_ms,
        sets, deletes)``, to call with what the write script reported. The held copy is
        patched if ``replaced`` is its token (held unverified until the probe's reply),
        else dropped; it is dropped too if the write fails. ``wait``: as for :meth:`get`."""
        self._tend(wait)
        with self._lock:
            usable = self._usable()
            held = self.entries.get(key) if usable else None
            epoch = self.epoch
        done = False

        def written(
            replaced: bytes | None,
            token: bytes,
            deadline_ms: int,
            sets: Mapping[str, bytes],
            deletes: Iterable[str],
        ) -> None:
            nonlocal done
            done = True
            with self._lock:
                # Takes in this write's own invalidation (and any merged with it).
                if (
                    held is None
                    or replaced is None
                    or replaced != held.token
                    or not self._usable()
                    or epoch != self.epoch
                ):
                    self._drop(key)
                    return
                patched = held.patched(sets, deletes, deadline_ms, token)
                try:
                    assert self._prober is not None
                    self._prober.send_packed(self._probe.packed(key))
                except Exception:
                    self._down()
                    return
                self._put(key, patched)
                self._probes.append((key, patched))

        try:
            yield written
        finally:
            if not done:
                self.drop(key)


def heartbeat_key_for(prefix: bytes) -> bytes:
    """A new heartbeat key for a process whose sessions are under ``prefix``: next to them
    (``memopt:session:`` gives ``memopt:session~hb:<random>``), so that an ACL's key
    pattern for them covers it, but outside the prefix where it can be, so that Redis
    tells only this process of its heartbeats, not every process of every one."""
    return prefix.removesuffix(b":") + b"~hb:" + os.urandom(8).hex().encode()


def _open_links(pool: Any, prefix: bytes, heartbeat_key: bytes) -> tuple[_Link, _Link]:
    """A new channel, tracking the sessions' ``prefix`` and ``heartbeat_key`` and
    subscribed, and a probe connection, to the server ``pool`` connects to now;
    ``_Refused`` if that server will not track for us."""
    prefixes: list[Any] = ["PREFIX", prefix]
    if not heartbeat_key.startswith(prefix):  # Redis refuses overlapping prefixes
        prefixes += ["PREFIX", heartbeat_key]
    channel = prober = None
    try:
        channel = _Link(pool)
        try:
            client_id = channel.call("CLIENT", "ID")
            channel.call("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *prefixes)
        except Exception as exc:  # an error reply: NOPERM, unknown command, a proxy's
            if _is_connection_error(exc):
                raise
            raise _Refused(f"CLIENT TRACKING refused: {exc}") from exc
        channel.call("SUBSCRIBE", INVALIDATE_CHANNEL)
        prober = _Link(pool)
        if _threaded_io(prober):
            raise _Refused("the server runs threaded I/O (io-threads above 1)")
    except BaseException:
        for link in (channel, prober):
            if link is not None:
                with suppress(Exception):
                    link.close()
        raise
    return channel, prober


def tracking_refusal(pool: Any, prefix: str) -> str | None:
    """Why the server ``pool`` connects to would leave a process without this cache, or
    ``None`` if it would track for it: the cache's own connections opened and closed. A
    connection error is raised."""
    try:
        links = _open_links(pool, prefix.encode(), heartbeat_key_for(prefix.encode()))
    except _Refused as exc:
        return str(exc)
    for link in links:
        link.close()
    return None


def _is_connection_error(exc: Exception) -> bool:
    from redis import exceptions

    return isinstance(exc, (exceptions.ConnectionError, exceptions.TimeoutError, OSError))


def _threaded_io(link: _Link) -> bool:
    """Whether the server may write replies from several threads (``io-threads`` above 1):
    Redis's order of invalidations before replies no longer holds then."""
    try:
        found = link.call("CONFIG", "GET", "io-threads")
        if found and len(found) == 2:
            return int(found[1]) > 1
    except Exception as exc:
        if _is_connection_error(exc):
            raise
    # CONFIG refused (a managed service): whether threads are on now.
    info = link.call("INFO", "stats")
    text = info.decode("ascii", "replace") if isinstance(info, bytes) else str(info)
    return "io_threads_active:1" in text
