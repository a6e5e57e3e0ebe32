"""``SESSION_ENGINE = "django_memopt.backends.redis"``: sessions in Redis, for many hosts.

The connection is that of the cache named by ``SESSION_CACHE_ALIAS``, django-redis's or
Django's own ``RedisCache``, so Redis is configured once, in ``CACHES`` (pooling,
password, TLS; Sentinel through django-redis), and is always the primary, never a
replica. Requires Redis 6.2 or later (``SET ... PXAT``).

Layout: one key per session, ``MEMOPT_REDIS_KEY_PREFIX`` + session key, and every command
touches that key alone (one Redis Cluster slot). The key holds one of two forms:

- a **string** while the session is small (at most ``STRING_LIMIT`` bytes):
  ``STRING_FORMAT`` (1 byte), the deadline (epoch milliseconds, 8 bytes big-endian), the
  version token (8 bytes), then a msgpack map of field name (str) to sealed field (bin);
- a **hash** past that: field = the session key's name (UTF-8), value = the sealed field,
  and field ``MARKER`` holding the deadline (epoch milliseconds in ASCII digits), then
  ``:`` and the version token. This is the previous release's only layout (format 1,
  whose marker holds the deadline alone): its sessions load as they are.

The version token is 8 random bytes that every write replaces (a create, a save, an expiry
refresh): the scripts return the token they replaced, so a writer can tell whether the
copy it holds was the current one (the client-side cache's own writes). A session of the
previous release has none until its next save.

The sealed fields are opaque here: the store moves their bytes and never re-seals them.
The deadline is also the key's expiry. A load is ``GET`` and ``HGETALL`` in one round trip
(the one of the wrong type answers ``WRONGTYPE``). A create, or a save that replaces the
whole session, is one ``SET ... NX`` (``XX``) ``PXAT`` of the string form, whatever its
size: one round trip, and no script (a script would hash every byte it is given). A delta
save is one
``EVALSHA`` of ``UPDATE_SCRIPT``, which applies it only to a session that is there: it
splices a string (reading entry headers and names only, copying untouched entries as they
are), turning it into a hash when the result outgrows ``STRING_LIMIT`` (a session created
large is a string until its first save that is not written in place), or sets and deletes fields
of a hash, folding a small hash (a format-1 session) into a string. Lua scripts, not
``MULTI``, where a write depends on what is stored.

Beside the sessions, under names no session key can take (no session key has a ``~``):
one hash without expiry per space of store-wide values, ``<prefix>~<space>`` (such as
``~stats``, each process's counters, and ``~meta``, values set once), and the heartbeat
keys of the client-side cache, ``<prefix>~hb:<random>`` (with ``<prefix>``'s trailing
``:`` left out, which puts them outside the sessions' prefix).

With ``MEMOPT_REDIS_CLIENT_CACHE`` set, loads, saves and deletes also go through this
process's :class:`~django_memopt.client_cache.ClientCache` (see that module).

The index of each user's sessions (``MEMOPT_USER_SESSIONS``) is two keys per user, beside
the sessions: a hash ``<prefix>~user:<user ID>`` (handle -> the session key's length in
one byte, the session key, then the sealed entry) and a sorted set
``<prefix>~user-until:<user ID>`` (handle by the entry's deadline, never earlier than the
session's), both expiring with their last entry. A save or delete that changes the index
runs as one script with the session's write (``_indexed()``), and prunes the entries past
their deadline on the way; a listing prunes them too, and those whose session is gone.

On a Redis Cluster (the cache's client a ``redis.cluster.RedisCluster``, as
``django_memopt.redis_cluster.ClusterConnectionFactory`` makes it), the same commands go
to the primary serving each key's slot (``_on_cluster()``: ``MOVED``, ``ASK`` and failover
handled there), listings ``SCAN`` every primary, and the client-side cache is off. A
user's index keys are ``<prefix>~user:{<user ID>}`` and ``<prefix>~user-until:{<user
ID>}`` (one slot, by the hash tag), written apart from the session, each entry's value
holding a state byte after the session key (``PENDING`` before the session's write,
``CONFIRMED`` after): see ``_cluster_index()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import struct
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

import msgpack
import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry as AsyncRetry
from redis.cluster import RedisCluster

from django_memopt.backends.base import (
    SESSION_KEY_RE,
    CreateError,
    Delta,
    IndexChange,
    SessionStoreError,
    SessionStoreFull,
    StoredSession,
    UpdateError,
    check_space,
    log_corrupt_record,
    security_logger,
)
from django_memopt.backends.base import SessionBase as _SessionBase
from django_memopt.client_cache import CachedSession, ClientCache, Probe
from django_memopt.conf import conf

__all__ = [
    "ReplicasBehind",
    "SessionStore",
    "SessionStoreUnavailable",
    "connection",
    "is_cluster",
]

T = TypeVar("T")

# Present in every session hash, holding the deadline (epoch ms) and the version token: an
# emptied session still exists, and a load learns both without a second command. No
# session key name encodes to it: the byte 0xFF never occurs in UTF-8.
MARKER: Final = b"\xff"
#: Between the deadline and the version token in a hash's ``MARKER`` (digits never hold it).
TOKEN_SEPARATOR: Final = b":"
#: The version token's length: random bytes, replaced by every write.
TOKEN_SIZE: Final = 8
# A deadline in epoch milliseconds has at most this many digits (10**15 ms: the year 33658).
DEADLINE_DIGITS: Final = 15
#: The first byte of a session's string form (a hash is format 1, the previous layout).
STRING_FORMAT: Final = 2
#: The string form's header: its format, the deadline in epoch ms, the version token.
HEADER: Final = struct.Struct(f">BQ{TOKEN_SIZE}s")
#: A session is a string while that takes at most this many bytes, else a hash. A string
#: costs the least memory, but a delta save reads and rewrites it whole in Lua, whose cost
#: grows with its size; a hash's costs the same at any size (docs/redis.md: measured).
STRING_LIMIT: Final = 4096
#: A hash taking at most this much memory (``MEMORY USAGE``) is read whole at its next
#: delta save and folded into a string if it then fits ``STRING_LIMIT``: a format-1
#: session, or a large one that shrank. A hash takes more memory than its fields' bytes,
#: so such a read is small; and a hash just past the limit rarely takes this little (one
#: that does pays that read at each save, about the cost of splicing a string as large).
FOLD_MEMORY: Final = 5120
# A delta save. KEYS[1]: the session. ARGV: the deadline (epoch ms); the string form's
# header for it (with the new version token); STRING_LIMIT; FOLD_MEMORY; the number of
# fields to set; their names and sealed values; then the names to delete. Returns
# {1, the version token it replaced (nil if the session had none)}, or {-1, nil} if there
# is no session to update (none, or no record a save writes): then nothing is written. A
# deadline in the past deletes the session.
UPDATE_SCRIPT: Final = r"""
local key = KEYS[1]
local deadline, header = ARGV[1], ARGV[2]
local limit, fold_memory, nsets = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local first_delete = 6 + 2 * nsets
local byte, sub, char, floor = string.byte, string.sub, string.char, math.floor
-- The string form's map starts right after the header; the header ends with the token.
local body_at = #header + 1
local token = sub(header, body_at - 8)
-- The version token this save replaces.
local old = false

-- msgpack, as Python's msgpack writes it: names are str, sealed fields bin.
local function big_endian(n, width)
  local out = {}
  for i = width, 1, -1 do out[i] = char(n % 256); n = floor(n / 256) end
  return table.concat(out)
end
local function str_header(n)
  if n < 32 then return char(0xa0 + n) end
  if n < 256 then return char(0xd9, n) end
  if n < 65536 then return char(0xda) .. big_endian(n, 2) end
  return char(0xdb) .. big_endian(n, 4)
end
local function bin_header(n)
  if n < 256 then return char(0xc4, n) end
  if n < 65536 then return char(0xc5) .. big_endian(n, 2) end
  return char(0xc6) .. big_endian(n, 4)
end
local function map_header(n)
  if n < 16 then return char(0x80 + n) end
  if n < 65536 then return char(0xde) .. big_endian(n, 2) end
  return char(0xdf) .. big_endian(n, 4)
end
local function entry(name, value)
  return str_header(#name) .. name .. bin_header(#value) .. value
end

-- Appends the delta's sets to parts as entries; the bytes they take.
local function add_sets(parts)
  local size = 0
  for i = 6, first_delete - 1, 2 do
    parts[#parts + 1] = entry(ARGV[i], ARGV[i + 1])
    size = size + #parts[#parts]
  end
  return size
end
-- The session as a string of count entries, parts[2..] (parts[1] is for the header),
-- if that takes at most limit bytes (size: the entries' bytes); else nil.
local function as_string(count, parts, size, call)
  parts[1] = header .. map_header(count)
  if size + #parts[1] > limit then return nil end
  call('SET', key, table.concat(parts), 'PXAT', deadline)
  return 1
end
local function hset(list, first, last)
  for at = first, last, 1000 do
    redis.call('HSET', key, unpack(list, at, math.min(at + 999, last)))
  end
end
-- The delta applied to the hash, and the deadline.
local function update_hash()
  hset(ARGV, 6, first_delete - 1)
  for at = first_delete, #ARGV, 1000 do
    redis.call('HDEL', key, unpack(ARGV, at, math.min(at + 999, #ARGV)))
  end
  redis.call('HSET', key, '\255', deadline .. ':' .. token)
  redis.call('PEXPIREAT', key, deadline)
  return 1
end

local kind = redis.call('TYPE', key)['ok']
if kind == 'hash' then
  -- The marker: the deadline's digits, then ':' and the token (none in format 1).
  local marker = redis.call('HGET', key, '\255')
  local separator = marker and string.find(marker, ':', 1, true)
  if separator then old = sub(marker, separator + 1) end
  update_hash()
  -- Small now (a format-1 session, or a large one that shrank): folded into a string, its
  -- fields' bytes as they are. MEMORY USAGE walks a hashtable's fields, which past about
  -- 40 costs as much as the save: only a hash of at most fold_memory / 128 fields is
  -- asked (one of more seldom fits a string). pcall: a server that forbids MEMORY folds
  -- nothing.
  local ok, used = false, nil
  if redis.call('HLEN', key) <= fold_memory / 128 then
    ok, used = pcall(redis.call, 'MEMORY', 'USAGE', key, 'SAMPLES', '0')
  end
  if ok and type(used) == 'number' and used <= fold_memory then
    local stored = redis.call('HGETALL', key)
    local parts, count, size = {''}, 0, 0
    for i = 1, #stored, 2 do
      if stored[i] ~= '\255' then
        parts[#parts + 1] = entry(stored[i], stored[i + 1])
        size = size + #parts[#parts]
        count = count + 1
      end
    end
    -- The save is done: a fold Redis refuses (out of memory) leaves it a hash.
    as_string(count, parts, size, redis.pcall)
  end
  return {1, old}
end
if kind ~= 'string' then return {-1, false} end

-- A string: spliced. Entries are walked by their headers; a name is read only if it is as
-- long as one the delta sets or deletes; runs of the other entries are copied as they are,
-- whatever they hold.
local s = redis.call('GET', key)
if byte(s, 1) ~= byte(header, 1) or #s < #header then return {-1, false} end
old = sub(s, body_at - 8, body_at - 1)
-- The names the delta sets (to their new value) or deletes (to false), and their lengths.
local changed, lengths = {}, {}
for i = 6, first_delete - 1, 2 do changed[ARGV[i]] = ARGV[i + 1]; lengths[#ARGV[i]] = true end
for i = first_delete, #ARGV do changed[ARGV[i]] = false; lengths[#ARGV[i]] = true end
local function uint(at, width)
  local n = 0
  for i = at, at + width - 1 do
    local b = byte(s, i)
    if not b then return nil end
    n = n * 256 + b
  end
  return n
end
-- The length and header size of the str or bin at `at`; nil if something else is there.
local function blob(at)
  local b = byte(s, at)
  if not b then return nil end
  if b >= 0xa0 and b <= 0xbf then return b - 0xa0, 1 end
  if b == 0xd9 or b == 0xc4 then return uint(at + 1, 1), 2 end
  if b == 0xda or b == 0xc5 then return uint(at + 1, 2), 3 end
  if b == 0xdb or b == 0xc6 then return uint(at + 1, 4), 5 end
  return nil
end
-- Past any other msgpack object at `at` (an entry no save writes); nil if damaged.
local function skip(at)
  local ok, after = pcall(cmsgpack.unpack_one, s, at - 1)
  if not ok then return nil end
  if after == -1 then return #s + 1 end
  return after + 1
end

-- Walk the entries: where those the delta changes are (entry from, to, value from, value
-- length, name); with `fields`, collect there the others that a save writes (name, value,
-- ...), for a hash. nil if the string is no session record.
local function walk(fields)
  local b, count, pos = byte(s, body_at), nil, nil
  if b and b >= 0x80 and b <= 0x8f then count, pos = b - 0x80, body_at + 1
  elseif b == 0xde then count, pos = uint(body_at + 1, 2), body_at + 3
  elseif b == 0xdf then count, pos = uint(body_at + 1, 4), body_at + 5 end
  if not count then return nil end
  local found, last = {first = pos, count = count}, #s + 1
  for _ = 1, count do
    local at, name_len, head, name_at, value_len, value_at = pos, nil, nil, nil, nil, nil
    b = byte(s, pos)
    if b and b >= 0xa0 and b <= 0xbf then name_len, head = b - 0xa0, 1
    else name_len, head = blob(pos) end
    if name_len then
      name_at = pos + head
      pos = name_at + name_len
    else
      pos = skip(pos)
      if not pos then return nil end
    end
    b = byte(s, pos)
    if b == 0xc4 then value_len, head = byte(s, pos + 1), 2
    else value_len, head = blob(pos) end
    if value_len then
      value_at = pos + head
      pos = value_at + value_len
    else
      pos = skip(pos)
    end
    if not pos or pos > last then return nil end
    local name = name_len and lengths[name_len] and sub(s, name_at, name_at + name_len - 1)
    if name and changed[name] ~= nil then
      found[#found + 1] = {at, pos - 1, value_at, value_len, name}
    elseif fields and name_len and value_len then
      fields[#fields + 1] = sub(s, name_at, name_at + name_len - 1)
      fields[#fields + 1] = sub(s, value_at, pos - 1)
    end
  end
  if pos ~= last then return nil end
  return found
end

local found = walk()
if not found then return {-1, false} end
-- Each field set is there once, as long as its new value, and none deleted is there:
-- the new values are written in place (the common save: a counter, a token, a time).
local in_place = #found == nsets
for _, at in ipairs(found) do
  local value = changed[at[5]]
  if not value or at[4] ~= #value then in_place = false end
end
if in_place then
  local seen = {}
  for _, at in ipairs(found) do
    if seen[at[5]] then in_place = false end
    seen[at[5]] = true
  end
end
if in_place then
  for _, at in ipairs(found) do redis.call('SETRANGE', key, at[3] - 1, changed[at[5]]) end
  redis.call('SETRANGE', key, 0, header)
  redis.call('PEXPIREAT', key, deadline)
  return {1, old}
end

-- Else rewritten: the runs of entries the delta leaves, copied as they are, then the sets.
local parts, size, run = {''}, 0, found.first
for _, at in ipairs(found) do
  if at[1] > run then parts[#parts + 1] = sub(s, run, at[1] - 1); size = size + at[1] - run end
  run = at[2] + 1
end
if run <= #s then parts[#parts + 1] = sub(s, run, #s); size = size + #s + 1 - run end
if as_string(found.count - #found + nsets, parts, size + add_sets(parts), redis.call) then
  return {1, old}
end

-- Grown past the limit: a hash from now on, of the fields a save writes. A write Redis
-- refuses when it is out of memory comes first, and changes nothing: without it, the DEL
-- (allowed then, as it frees memory) could go through and the HSET be refused, the
-- session lost.
local fields = {}
walk(fields)
redis.call('SETRANGE', key, 0, sub(header, 1, 1))
redis.call('DEL', key)
hset(fields, 1, #fields)
update_hash()
return {1, old}
"""

# An expiry refresh, with a new version token. KEYS[1]: the session; ARGV: the new deadline
# in epoch ms, then the same as 8 bytes big-endian followed by the new token (the string
# header's bytes after its format). The fields are not touched. Returns {1, the token it
# replaced (nil if the session had none)}, or {0, nil} if no session is there.
TOUCH_SCRIPT: Final = r"""
local kind = redis.call('TYPE', KEYS[1])['ok']
local old = false
if kind == 'string' then
  old = redis.call('GETRANGE', KEYS[1], 9, 16)
  if #old ~= 8 then old = false end
  redis.call('SETRANGE', KEYS[1], 1, ARGV[2])
elseif kind == 'hash' then
  local marker = redis.call('HGET', KEYS[1], '\255')
  local separator = marker and string.find(marker, ':', 1, true)
  if separator then old = string.sub(marker, separator + 1) end
  redis.call('HSET', KEYS[1], '\255', ARGV[1] .. ':' .. string.sub(ARGV[2], 9))
else
  return {0, false}
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return {1, old}
"""

# KEYS[1]: a space's hash; ARGV: a name and a value. The value the name then holds.
ADD_VALUE_SCRIPT: Final = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""


# The client-side cache's heartbeat (django_memopt.client_cache). KEYS[1]: the process's
# heartbeat key, set for a minute. Not replicated: a channel left on a replica of the server
# the data pool writes to (a demoted primary, a DNS name moved by a failover) would hear a
# replicated write late, and must never be confirmed by it.
HEARTBEAT_SCRIPT: Final = """
redis.replicate_commands()
redis.set_repl(redis.REPL_NONE)
return redis.call('SET', KEYS[1], '1', 'PX', 60000)
"""


# The index of users' sessions, in Lua, for the scripts that write a session and its entry
# at once (see _indexed()). KEYS[2], KEYS[3]: the hash and the sorted set of the user whose
# index lists the session now; KEYS[4], KEYS[5]: those of the user whose entry is dropped.
# Entries past their deadline are pruned first (their sessions have expired), and both
# keys expire with their last entry.
INDEX_LUA: Final = r"""
local function prune(h, z, now)
  while true do
    local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 1000)
    if #dead == 0 then return end
    redis.call('ZREM', z, unpack(dead))
    redis.call('HDEL', h, unpack(dead))
  end
end
local function settle(h, z)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', h, z)
  else
    redis.call('PEXPIREAT', h, last[2])
    redis.call('PEXPIREAT', z, last[2])
  end
end
-- a: now (epoch ms), the handle to put ('' for none), its deadline, its value, the handle
-- to drop ('' for none).
local function apply_index(a)
  if a[5] ~= '' then
    redis.call('HDEL', KEYS[4], a[5])
    redis.call('ZREM', KEYS[5], a[5])
    prune(KEYS[4], KEYS[5], a[1])
    settle(KEYS[4], KEYS[5])
  end
  if a[2] ~= '' then
    prune(KEYS[2], KEYS[3], a[1])
    redis.call('HSET', KEYS[2], a[2], a[4])
    redis.call('ZADD', KEYS[3], a[3], a[2])
    settle(KEYS[2], KEYS[3])
  end
end
"""
#: How many arguments of an indexed script, at the end of ``ARGV``, are the index's.
INDEX_ARGS: Final = 5


def _indexed(script: str, success: str) -> str:
    """``script``, whose result then applies the index change if the Lua expression
    ``success`` holds of it (``result``): one script, so both or neither are written.
    ``script`` sees ``ARGV`` without the index's arguments."""
    return INDEX_LUA + (
        f"""
local index_args, args = {{}}, {{}}
for i = #ARGV - {INDEX_ARGS} + 1, #ARGV do index_args[#index_args + 1] = ARGV[i] end
for i = 1, #ARGV - {INDEX_ARGS} do args[i] = ARGV[i] end
local ARGV = args
local function write()
{script}
end
local result = write()
if {success} then apply_index(index_args) end
return result
"""
    )


#: A delta save and the index change.
UPDATE_INDEXED_SCRIPT: Final = _indexed(UPDATE_SCRIPT, "result[1] == 1")
#: A create (``NX``) or whole replace (``XX``) and the index change. ARGV: the string
#: form, ``NX`` or ``XX``, the deadline (epoch ms). Returns 1, or 0 if not written.
SET_INDEXED_SCRIPT: Final = _indexed(
    """
if redis.call('SET', KEYS[1], ARGV[1], ARGV[2], 'PXAT', ARGV[3]) then return 1 end
return 0
""",
    "result == 1",
)
#: A delete and the index change (its entry dropped, whether the session was there or not).
DELETE_INDEXED_SCRIPT: Final = _indexed("return redis.call('DEL', KEYS[1])", "true")
# A listing of a user's index. KEYS[1], KEYS[2]: the user's hash and sorted set; ARGV: now
# (epoch ms), the sessions' key prefix. Prunes the entries past their deadline and those
# whose session is gone; returns the others, handle and value, flat. (The sessions' keys
# are not declared: issue 16, Cluster.)
LIST_SCRIPT: Final = (
    INDEX_LUA
    + r"""
prune(KEYS[1], KEYS[2], ARGV[1])
local entries = redis.call('HGETALL', KEYS[1])
local live, gone = {}, {}
for i = 1, #entries, 2 do
  local value = entries[i + 1]
  local n = string.byte(value, 1)
  local key = n and string.sub(value, 2, n + 1)
  if key and #key == n and redis.call('EXISTS', ARGV[2] .. key) == 1 then
    live[#live + 1] = entries[i]
    live[#live + 1] = value
  else
    gone[#gone + 1] = entries[i]
  end
end
for at = 1, #gone, 1000 do
  local chunk = {unpack(gone, at, math.min(at + 999, #gone))}
  redis.call('HDEL', KEYS[1], unpack(chunk))
  redis.call('ZREM', KEYS[2], unpack(chunk))
end
settle(KEYS[1], KEYS[2])
return live
"""
)

# On a Redis Cluster, the index is written apart from the sessions (its keys are in their
# user's slot, a session in its own): these scripts touch one user's two keys only. An
# entry's value there is the session key's length in one byte, the session key, its state
# (one byte: PENDING before the session's write, CONFIRMED after), then the sealed entry.
#
# A put or a drop. KEYS: the user's hash and sorted set; ARGV: as apply_index() takes.
CLUSTER_INDEX_SCRIPT: Final = (
    "local KEYS = {false, KEYS[1], KEYS[2], KEYS[1], KEYS[2]}\n"
    + INDEX_LUA
    + """
apply_index(ARGV)
return 1
"""
)
# A listing. KEYS: the user's hash and sorted set; ARGV: now (epoch ms). Prunes the entries
# past their deadline; returns the others, handle and value, flat.
CLUSTER_LIST_SCRIPT: Final = (
    INDEX_LUA
    + """
prune(KEYS[1], KEYS[2], ARGV[1])
settle(KEYS[1], KEYS[2])
return redis.call('HGETALL', KEYS[1])
"""
)
# The entries of sessions found gone. KEYS: the user's hash and sorted set; ARGV: handles
# and the values they held when listed, flat. An entry written again since (another value)
# is kept. Returns how many were dropped.
CLUSTER_PRUNE_SCRIPT: Final = (
    INDEX_LUA
    + """
local dropped = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    dropped = dropped + 1
  end
end
settle(KEYS[1], KEYS[2])
return dropped
"""
)
#: On a Redis Cluster, an entry's state before its session's write: a listing may prune it
#: (its session is not there yet), and the write after the session's puts it back.
PENDING: Final = b"\x00"
#: An entry's state once its session's write is done. It differs from ``PENDING`` so that
#: a listing that read the pending entry cannot prune the confirmed one (the prune
#: compares values).
CONFIRMED: Final = b"\x01"


class SessionStoreUnavailable(SessionStoreError):
    """Redis could not be reached, or did not answer in time."""


class ReplicasBehind(SessionStoreUnavailable):
    """A write was not acknowledged by as many replicas as ``MEMOPT_REDIS_WAIT_REPLICAS``
    asks for, within ``MEMOPT_REDIS_WAIT_TIMEOUT``: it is on the primary only."""


_client: Any = None
# Whether _client is a redis.cluster.RedisCluster: commands are then routed by key slot
# (_on_cluster). Set with _client.
_cluster = False


def connection() -> Any:
    """The redis-py client of the primary of the cache ``SESSION_CACHE_ALIAS``: a
    django-redis cache, or Django's own ``django.core.cache.backends.redis.RedisCache``
    (whose first ``LOCATION`` is the one it writes to). Anything else is refused (system
    check ``django_memopt.E008`` says so at startup). On a Redis Cluster it is a
    ``redis.cluster.RedisCluster`` (see :func:`is_cluster`).

    Looked up once per process: redis-py clients are thread-safe and their connection
    pools reset themselves after a fork.
    """
    global _client, _cluster
    if _client is None:
        from django.core.cache import caches
        from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

        alias = settings.SESSION_CACHE_ALIAS
        cache = caches[alias]
        if isinstance(cache, DjangoRedisCache):
            _client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
        else:
            from django_redis import get_redis_connection

            _client = get_redis_connection(alias, write=True)
        _cluster = isinstance(_client, RedisCluster)
    return _client


def is_cluster() -> bool:
    """Whether the cache ``SESSION_CACHE_ALIAS`` is a Redis Cluster (its client a
    ``redis.cluster.RedisCluster``)."""
    if _client is None:
        connection()
    return _cluster


_client_cache: ClientCache | None = None


def client_cache() -> ClientCache | None:
    """This process's client-side cache of sessions (``django_memopt.client_cache``), or
    ``None`` if ``MEMOPT_REDIS_CLIENT_CACHE`` is 0."""
    global _client_cache
    if not conf.MEMOPT_REDIS_CLIENT_CACHE:
        return None
    if _cluster or (_client is None and is_cluster()):
        return None  # it needs CLIENT TRACKING on one server: off (check W014)
    if _client_cache is None:
        _client_cache = ClientCache(
            lambda: connection().connection_pool,
            _heartbeat,
            PROBE,
            conf.MEMOPT_REDIS_KEY_PREFIX,
            conf.MEMOPT_REDIS_CLIENT_CACHE,
        )
    return _client_cache


@receiver(setting_changed)
def _forget_client(*, setting: str, **kwargs: Any) -> None:
    global _client, _cluster, _client_cache, _wait
    if setting in ("CACHES", "SESSION_CACHE_ALIAS"):
        _client, _cluster = None, False
        _forget_async_pools()
    if setting in ("MEMOPT_REDIS_WAIT_REPLICAS", "MEMOPT_REDIS_WAIT_TIMEOUT"):
        _wait = None
    if setting in (
        "CACHES",
        "SESSION_CACHE_ALIAS",
        "MEMOPT_REDIS_KEY_PREFIX",
        "MEMOPT_REDIS_CLIENT_CACHE",
    ):
        if _client_cache is not None:
            _client_cache.close()
        _client_cache = None


def _heartbeat(name: bytes) -> None:
    # Through the data pool: the client-side cache's proof that its channel hears the
    # server the pool writes to, itself (HEARTBEAT_SCRIPT). Rewritten twice a second.
    _run_script(HEARTBEAT_SCRIPT, name)


def _probe_token(replies: list[Any]) -> bytes | None:
    string_token, marker = replies
    if type(string_token) is bytes and len(string_token) == TOKEN_SIZE:
        return string_token
    found = _marker(marker)
    return None if found is None else found[1]


#: How the client-side cache reads a session's token: the string header's last bytes, or
#: the hash's marker (one of the two answers ``WRONGTYPE``).
PROBE: Final = Probe(
    lambda key: (
        _packed(("GETRANGE", key, HEADER.size - TOKEN_SIZE, HEADER.size - 1))
        + _packed(("HGET", key, MARKER))
    ),
    2,
    _probe_token,
)


_SHAS: Final = {
    script: hashlib.sha1(script.encode()).hexdigest()
    for script in (
        UPDATE_SCRIPT,
        TOUCH_SCRIPT,
        ADD_VALUE_SCRIPT,
        HEARTBEAT_SCRIPT,
        UPDATE_INDEXED_SCRIPT,
        SET_INDEXED_SCRIPT,
        DELETE_INDEXED_SCRIPT,
        LIST_SCRIPT,
        CLUSTER_INDEX_SCRIPT,
        CLUSTER_LIST_SCRIPT,
        CLUSTER_PRUNE_SCRIPT,
    )
}


def _on_connection(action: Callable[[Any], T]) -> T:
    """``action(connection)`` on a pooled connection to the primary.

    The pool, the connection (password, TLS, Sentinel) and the retry policy are the
    client's, as configured in ``CACHES``. redis-py's per-command layer (reply callbacks,
    metrics) is skipped: it costs more than the rest of a load's Python work. So replies
    come unconverted: a hash as a flat list of names and values (a dict under RESP3),
    ``SCAN`` as ``[cursor, keys]``.
    """
    pool = connection().connection_pool
    conn = pool.get_connection()
    try:
        done: T = conn.retry.call_with_retry(lambda: action(conn), lambda _e: conn.disconnect())
        return done
    finally:
        pool.release(conn)


def _packed(command: tuple[Any, ...]) -> bytes:
    """``command`` in Redis's protocol. Its arguments are bytes, str or int, as this module
    sends them; packing them here costs a tenth of what redis-py's general packer does,
    which is a few µs of every load."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if type(arg) is int:
            arg = b"%d" % arg
        elif type(arg) is str:
            arg = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _execute(*command: Any) -> Any:
    """Redis's reply to ``command`` (an error reply raised)."""

    def send(conn: Any) -> Any:
        conn.send_packed_command((_packed(command),))
        return conn.read_response()

    if _client is None:
        connection()
    if _cluster:
        reply = _on_cluster(_routing_key(command), [command])[0]
        if isinstance(reply, redis_errors.ResponseError):
            raise reply
        return reply
    return _on_connection(send)


def _routing_key(command: tuple[Any, ...]) -> bytes:
    """The key whose slot ``command`` goes to: its first key (every command of this
    module names at most one slot)."""
    if command[0] == "EVALSHA":
        return command[3]  # type: ignore[no-any-return]
    return command[1]  # type: ignore[no-any-return]


#: On a Redis Cluster, how often a command is tried while its shard fails over (its
#: primary unreachable, the cluster down): the waits between them add up to about 3 s.
CLUSTER_ATTEMPTS: Final = 7
#: The first wait between attempts, in seconds; each next one is twice as long.
CLUSTER_BACKOFF: Final = 0.05
# The error replies _on_cluster() acts on (MOVED is an AskError).
CLUSTER_RETRIED: Final = (
    redis_errors.AskError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
)


def _on_cluster(key: bytes, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The replies to ``commands`` (on ``key``'s slot), sent at once to the primary
    serving that slot in the cluster, on a pooled connection as :func:`_on_connection`
    takes one; an error reply is returned in its place (see :func:`_replies`).

    A ``MOVED`` reply (the slot moved: a resharding, a failover) refreshes the client's
    map of slots and sends them again; ``ASK`` (the slot being migrated) sends them to the
    node named, each after ``ASKING``. A connection that fails (the primary killed), or
    ``CLUSTERDOWN`` / ``TRYAGAIN``, waits (``CLUSTER_BACKOFF``, doubling), refreshes the
    map and tries again, ``CLUSTER_ATTEMPTS`` times in all; then the error is raised
    (``SessionStoreUnavailable`` from :func:`_call`). A write whose connection broke
    after it was sent may be sent twice, as redis-py's own retries do on one server.
    """
    cluster = _client
    manager = cluster.nodes_manager
    asked: Any = None
    for attempt in range(CLUSTER_ATTEMPTS):
        pool = conn = None
        try:
            node = asked if asked is not None else cluster.get_node_from_key(key)
            pool = cluster.get_redis_connection(node).connection_pool
            conn = pool.get_connection()
            if asked is None:
                replies = _replies(conn, commands)
            else:  # ASKING lets the one command after it in
                asked = None
                asking = [c for command in commands for c in (("ASKING",), command)]
                replies = _replies(conn, asking)[1::2]
            for reply in replies:  # redirected, or to be tried again: raised for below
                if isinstance(reply, CLUSTER_RETRIED):
                    raise reply
            return replies
        except redis_errors.MovedError:  # before AskError, which it subclasses
            _refresh_slots(manager)
        except redis_errors.AskError as exc:
            asked = cluster.get_node(host=exc.host or node.host, port=exc.port)
            if asked is None:
                _refresh_slots(manager)
        except (
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            redis_errors.ClusterDownError,
            redis_errors.TryAgainError,
            redis_errors.SlotNotCoveredError,  # the map refreshed while a shard was down
        ):
            if conn is not None:
                conn.disconnect()
            if attempt == CLUSTER_ATTEMPTS - 1:
                raise
            time.sleep(CLUSTER_BACKOFF * 2**attempt)
            _refresh_slots(manager)
        finally:
            if pool is not None and conn is not None:
                pool.release(conn)
    raise redis_errors.ClusterError(f"too many redirections for the key {key[:80]!r}")


def _refresh_slots(manager: Any) -> None:
    """The cluster's map of slots asked again (``CLUSTER SLOTS`` of a node that answers);
    left as it was if none does (the next attempt tells)."""
    with contextlib.suppress(redis_errors.RedisError, redis_errors.RedisClusterException):
        manager.initialize()


def _primaries() -> list[Any]:
    """A redis-py client per primary: the one of ``connection()``, or on a Redis Cluster
    one per primary (for the listings that ``SCAN`` every key)."""
    client = connection()
    if not _cluster:
        return [client]
    return [client.get_redis_connection(node) for node in client.get_primaries()]


def _execute_on(client: Any, *command: Any) -> Any:
    """Redis's reply to ``command`` from the server of ``client`` (one of
    :func:`_primaries`)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:

        def send() -> Any:
            conn.send_packed_command((_packed(command),))
            return conn.read_response()

        return conn.retry.call_with_retry(send, lambda _e: conn.disconnect())
    finally:
        pool.release(conn)


_wait: tuple[int, int] | None = None


def _wait_command() -> tuple[Any, ...] | None:
    """``WAIT`` for ``MEMOPT_REDIS_WAIT_REPLICAS`` replicas, or ``None`` if it is 0."""
    global _wait
    if _wait is None:
        _wait = (conf.MEMOPT_REDIS_WAIT_REPLICAS, conf.MEMOPT_REDIS_WAIT_TIMEOUT)
    replicas, timeout_ms = _wait
    return ("WAIT", replicas, timeout_ms) if replicas else None


def _execute_write(*command: Any) -> Any:
    """:func:`_execute` for a write that sessions depend on: with
    ``MEMOPT_REDIS_WAIT_REPLICAS``, followed by ``WAIT`` on the same connection, and
    ``SessionStoreUnavailable`` raised if fewer replicas acknowledged it in time (the
    write is then on the primary only, and may be lost if it fails)."""
    wait = _wait_command()
    if wait is None:
        return _execute(*command)
    if _client is None:
        connection()
    if _cluster:
        reply, acked = _on_cluster(_routing_key(command), [command, wait])
    else:
        reply, acked = _on_connection(lambda conn: _replies(conn, [command, wait]))
    return _acknowledged(reply, acked, wait)


def _acknowledged(reply: Any, acked: Any, wait: tuple[Any, ...]) -> Any:
    """The reply of a write followed by ``wait``, once ``WAIT`` answered ``acked``; an
    error reply raised, and ``ReplicasBehind`` if too few replicas acknowledged it."""
    if isinstance(reply, redis_errors.ResponseError):
        raise reply
    if isinstance(acked, redis_errors.ResponseError):
        raise acked
    if acked < wait[1]:
        raise ReplicasBehind(
            f"a write was acknowledged by {acked} of the {wait[1]} replicas "
            f"MEMOPT_REDIS_WAIT_REPLICAS asks for within {wait[2]} ms"
        )
    return reply


def _replies(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Redis's replies to ``commands``, sent at once: one round trip. An error reply is
    returned in its place, not raised, once every reply is read."""
    conn.send_packed_command((b"".join(map(_packed, commands)),))
    replies = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except redis_errors.ResponseError as exc:
            replies.append(exc)
    return replies


def _execute_all(*commands: tuple[Any, ...]) -> list[Any]:
    """The replies to ``commands`` on one key, sent at once (see :func:`_replies`)."""
    if _client is None:
        connection()
    if _cluster:
        return _on_cluster(_routing_key(commands[0]), list(commands))
    return _on_connection(lambda conn: _replies(conn, list(commands)))


def _run_script(script: str, key: bytes, *args: Any) -> Any:
    return _run_script_on(script, [key], *args)


def _run_script_on(
    script: str, keys: list[bytes], *args: Any, execute: Callable[..., Any] = _execute
) -> Any:
    """``script`` run on ``keys`` (all in one Cluster slot) with ``args``, by ``execute``
    (:func:`_execute_write` for a write sessions depend on)."""
    try:
        return execute("EVALSHA", _SHAS[script], len(keys), *keys, *args)
    except redis_errors.NoScriptError:  # after SCRIPT FLUSH or a Redis restart: load it once more
        if _cluster:  # on every primary (redis-py sends it to each)
            _client.script_load(script)
        else:
            _execute("SCRIPT", "LOAD", script)
        return execute("EVALSHA", _SHAS[script], len(keys), *keys, *args)


def _call(action: Callable[[], T]) -> T:
    """Run ``action``; Redis's own failures become ``SessionStoreError``."""
    try:
        return action()
    except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
        raise _store_error(exc, _too_old) from exc


#: Failures that mean the store cannot be reached now: a connection lost or timed out, or a
#: Redis Cluster's shard failing over (past the retries of _on_cluster).
UNAVAILABLE: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.TryAgainError,
    redis_errors.RedisClusterException,
)


def _store_error(
    exc: redis_errors.RedisError | redis_errors.RedisClusterException,
    too_old: Callable[[redis_errors.RedisError], str | None],
) -> SessionStoreError:
    """What a failure ``exc`` of Redis is raised as; ``too_old(exc)`` tells the server's
    version if it refused a command as one before 6.2 would (asked only then)."""
    alias = settings.SESSION_CACHE_ALIAS
    if isinstance(exc, UNAVAILABLE):
        return SessionStoreUnavailable(
            f"The Redis session store (cache {alias!r}) is unavailable: {exc}"
        )
    if isinstance(exc, redis_errors.OutOfMemoryError):
        said = str(exc) if str(exc).startswith("OOM") else f"OOM {exc}"  # Redis's words
        return SessionStoreFull(
            f"The Redis session store (cache {alias!r}) is full: {said} Raise Redis's "
            "maxmemory, or let it evict (volatile-ttl suits sessions)."
        )
    version = too_old(exc)
    if version:
        return SessionStoreError(
            f"The Redis session store (cache {alias!r}) needs Redis 6.2 or later "
            f"(SET ... PXAT); that server runs Redis {version}."
        )
    return SessionStoreError(f"The Redis session store (cache {alias!r}): {exc}")


def _too_old(error: redis_errors.RedisError) -> str | None:
    """The server's version if ``error`` is a server before 6.2 refusing ``PXAT``."""
    if not _maybe_too_old(error):
        return None
    try:
        info = _execute("INFO", "server")
    except redis_errors.RedisError:
        return None
    return _old_version(info)


def _maybe_too_old(error: redis_errors.RedisError) -> bool:
    """Whether ``error`` may be a server before 6.2 refusing ``PXAT`` (``INFO`` tells)."""
    return isinstance(error, redis_errors.ResponseError) and "syntax error" in str(error)


def _old_version(info: Any) -> str | None:
    """The server's version in the reply to ``INFO server`` if it is before 6.2."""
    text = info.decode("ascii", "replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("redis_version:"):
            version = line.partition(":")[2].strip()
            try:
                major, minor = (int(part) for part in version.split(".")[:2])
            except ValueError:
                return None
            return version if (major, minor) < (6, 2) else None
    return None


def _key(session_key: str) -> bytes:
    return (conf.MEMOPT_REDIS_KEY_PREFIX + session_key).encode()


def _marker(stored: Any) -> tuple[int, bytes | None] | None:
    """The deadline and the version token a marker field holds (the token ``None`` in a
    format-1 session's); ``None`` if it holds no deadline our writes could have stored
    (absent, not a hash, not a count of milliseconds: negative, NaN, huge, ...), or a
    token of another length."""
    if type(stored) is not bytes:
        return None
    digits, separator, token = stored.partition(TOKEN_SEPARATOR)
    if not (digits.isdigit() and len(digits) <= DEADLINE_DIGITS):
        return None
    if not separator:
        return int(digits), None
    return (int(digits), token) if len(token) == TOKEN_SIZE else None


def _deadline_ms(stored: Any) -> int | None:
    """The deadline a marker field holds (see :func:`_marker`)."""
    marker = _marker(stored)
    return None if marker is None else marker[0]


def new_token() -> bytes:
    """A fresh version token."""
    return os.urandom(TOKEN_SIZE)


def _string_deadline(value: bytes) -> int | None:
    """The deadline of a session's string form; ``None`` if the header is no header our
    saves write (the body is not looked at)."""
    if len(value) <= HEADER.size or value[0] != STRING_FORMAT:
        return None
    deadline: int = HEADER.unpack_from(value)[1]
    return deadline if 0 < deadline < 10**DEADLINE_DIGITS else None


def _string_fields(value: bytes) -> dict[str, bytes] | None:
    """The sealed fields in a session's string form (its header checked apart); ``None``
    if the body is no msgpack map. An entry whose name is not text is dropped and logged;
    a value that is not bytes is left to the codec, which refuses it when it is read."""
    body = memoryview(value)[HEADER.size :]
    try:
        fields = msgpack.unpackb(body, unicode_errors="surrogatepass")
        if type(fields) is dict:
            "".join(fields)  # names are text, or bytes (a bin): are all text?
            return fields
        return None
    except (ValueError, TypeError):  # not UTF-8, bytes among the names, or damaged
        pass
    try:
        fields = msgpack.unpackb(body, raw=True, strict_map_key=False)
    except Exception:  # any msgpack error: the session is damaged
        return None
    return _text_named(fields) if type(fields) is dict else None


def _text_named(stored: dict[Any, Any]) -> dict[str, Any]:
    """The fields whose name is UTF-8 text; the others are dropped and logged."""
    fields = {}
    for name, value in stored.items():
        try:
            fields[name.decode("utf-8", "surrogatepass")] = value
        except (UnicodeDecodeError, AttributeError):
            security_logger.warning(
                "Session data corrupted: field %r (its name is not UTF-8)", repr(name)[:64]
            )
    return fields


def _string_value(deadline_ms: int, token: bytes, sets: dict[str, bytes]) -> bytes:
    """A session's string form."""
    return HEADER.pack(STRING_FORMAT, deadline_ms, token) + msgpack.packb(
        sets, unicode_errors="surrogatepass"
    )


def _wrong_type(reply: Any) -> bool:
    return isinstance(reply, redis_errors.ResponseError) and str(reply).startswith("WRONGTYPE")


def _form(value: Any, hashed: Any) -> tuple[str, Any]:
    """What a key holds, from the replies to ``GET`` and to a hash command on it, sent
    together (the one of the wrong type answers ``WRONGTYPE``): ``("string", value)``,
    ``("hash", reply)`` (an empty reply if the key went meanwhile), ``("none", None)``, or
    ``("other", None)`` if both answered ``WRONGTYPE``."""
    if not _wrong_type(value):
        if isinstance(value, Exception):
            raise value
        return ("none", None) if value is None else ("string", value)
    if not _wrong_type(hashed):
        if isinstance(hashed, Exception):
            raise hashed
        return "hash", hashed
    return "other", None


def _fetch(key: bytes, *hash_command: Any) -> tuple[str, Any]:
    """What the session key holds (see :func:`_form`), in one round trip: ``GET`` and
    ``hash_command`` on the key. A hash folded into a string between the two commands
    answers ``WRONGTYPE`` twice: it is asked again; a key of another type stays
    ``"other"``."""
    command = (hash_command[0], key, *hash_command[1:])
    for _ in range(2):
        form = _form(*_execute_all(("GET", key), command))
        if form[0] != "other":
            break
    return form


# What _deadline_of() answers for a key that holds no session a load would read.
NO_SESSION: Final = -1


def _deadline_of(form: str, reply: Any) -> int | None:
    """The deadline of a session as ``_fetch(key, "HGET", MARKER)`` found it: ``None`` if
    there is no key, ``NO_SESSION`` if the key holds no session a load would read."""
    if form == "none":
        return None
    if form == "string":
        deadline_ms = _string_deadline(reply)
        if deadline_ms is None or _string_body(reply) is None:
            return NO_SESSION
        return deadline_ms
    if form == "hash":
        if reply is None:  # gone meanwhile
            return None
        deadline_ms = _deadline_ms(reply)
        return NO_SESSION if deadline_ms is None else deadline_ms
    return NO_SESSION


def _string_body(value: bytes) -> dict[Any, Any] | None:
    """The body of a session's string form, names unchecked; ``None`` if it is no map."""
    try:
        body = msgpack.unpackb(memoryview(value)[HEADER.size :], raw=True, strict_map_key=False)
    except Exception:  # any msgpack error: the session is damaged
        return None
    return body if type(body) is dict else None


def _log_stray_key(key: bytes) -> None:
    security_logger.warning(
        "Session data corrupted: keys under session names that hold no session (not a "
        "session record, or no valid deadline; such as %r) are left out of this listing "
        "of sessions",
        key[:80],
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _deadline(expires_at: float) -> int:
    return max(1, int(expires_at * 1000))  # PXAT refuses 0 and less


def _user_keys(user: str) -> list[bytes]:
    """The hash and the sorted set of ``user``'s index. On a Redis Cluster, the user ID is
    a hash tag, ``{<user ID>}``, so that both are in one slot (check E030 keeps braces
    out of the prefix, whose first ``{`` would otherwise open the tag)."""
    prefix, name = conf.MEMOPT_REDIS_KEY_PREFIX.encode(), user.encode("utf-8", "surrogatepass")
    if is_cluster():
        name = b"{" + name + b"}"
    return [prefix + b"~user:" + name, prefix + b"~user-until:" + name]


def _index_script_args(session_key: str, change: IndexChange) -> tuple[list[bytes], list[Any]]:
    """The keys (after the session's) and the arguments (after the write's) that apply
    ``change`` for ``session_key`` in an indexed script."""
    put, drop = change.put, change.drop
    put_keys = None if put is None else _user_keys(put.user)
    drop_keys = None if drop is None else _user_keys(drop[0])
    keys = [*(put_keys or drop_keys or ()), *(drop_keys or put_keys or ())]
    key = session_key.encode()
    return keys, [
        int(time.time() * 1000),
        "" if put is None else put.handle,
        0 if put is None else put.until_ms,
        b"" if put is None else bytes((len(key),)) + key + put.sealed,
        "" if drop is None else drop[1],
    ]


def _cluster_index(change: IndexChange, session_key: str, *, done: bool) -> None:
    """On a Redis Cluster, the half of ``change`` that goes before the session's write
    (not ``done``: the entry put, ``PENDING``) or after it (``done``: the entry put again,
    ``CONFIRMED``, and the entry to drop dropped), each one script on its user's keys.

    So a listing never shows a session that is gone (the drop comes after the delete)
    and never loses one that is there: a listing that found the pending entry's session
    not there yet may prune the entry, but not the confirmed one (its prune compares the
    value it read), and the confirmed one is put whatever the listing did.
    """
    now = _now_ms()
    put = change.put
    drop = change.drop
    calls: list[tuple[list[bytes], list[Any]]] = []
    put_args: list[Any] = ["", 0, b""]
    if put is not None:
        key = session_key.encode()
        state = CONFIRMED if done else PENDING
        value = bytes((len(key),)) + key + state + put.sealed
        put_args = [put.handle, put.until_ms, value]
    if not done:
        if put is not None:
            calls.append((_user_keys(put.user), [now, *put_args, ""]))
    elif drop is not None and put is not None and drop[0] == put.user:
        calls.append((_user_keys(put.user), [now, *put_args, drop[1]]))
    else:
        if put is not None:
            calls.append((_user_keys(put.user), [now, *put_args, ""]))
        if drop is not None:
            calls.append((_user_keys(drop[0]), [now, "", 0, b"", drop[1]]))
    for keys, args in calls:
        _call(
            lambda keys=keys, args=args: _run_script_on(  # type: ignore[misc]
                CLUSTER_INDEX_SCRIPT, keys, *args, execute=_execute_write
            )
        )


def _cluster_entries(keys: list[bytes]) -> list[tuple[bytes, bytes, bytes]]:
    """On a Redis Cluster, the entries of the user's index at ``keys`` (its hash and
    sorted set) whose session is there: ``(handle, session key, sealed entry)``.

    Entries past their deadline are pruned by the listing script; those whose session is
    gone (or not there yet: see :func:`_cluster_index`) by a second script, unless
    written again meanwhile. Each session is asked with ``EXISTS`` in its own slot.
    """
    prefix = conf.MEMOPT_REDIS_KEY_PREFIX.encode()
    reply = _call(lambda: _run_script_on(CLUSTER_LIST_SCRIPT, keys, _now_ms()))
    live: list[tuple[bytes, bytes, bytes]] = []
    gone: list[bytes] = []
    for handle, value in zip(reply[::2], reply[1::2], strict=True):
        length = value[0] if value else 0
        session_key = value[1 : 1 + length]
        if length == 0 or len(value) < 2 + length:  # no value this module writes
            gone += (handle, value)
        elif _call(lambda session_key=session_key: _execute("EXISTS", prefix + session_key)):  # type: ignore[misc]
            live.append((handle, session_key, value[2 + length :]))
        else:
            gone += (handle, value)
    if gone:
        _call(lambda: _run_script_on(CLUSTER_PRUNE_SCRIPT, keys, *gone, execute=_execute_write))
    return live


def _write_session(
    key: bytes,
    delta: Delta,
    expires_at: float,
    *,
    create: bool,
    index: tuple[list[bytes], list[Any]] | None = None,
) -> tuple[bytes | None, bytes]:
    """``SessionStore._write()`` of the session at ``key``: the version token it replaced
    (``None`` for a create or a whole replace, and for a session that had none) and the
    one it wrote. ``index``: the keys and arguments of the index change to apply with it
    (:func:`_index_script_args`)."""
    script, keys, args, token = _write_request(key, delta, expires_at, create, index)
    if script is None:
        reply = _call(lambda: _execute_write(*args))
    else:
        reply = _call(lambda: _run_script_on(script, keys, *args, execute=_execute_write))
    return _written(reply, token, create=create, whole=create or delta.replace)


#: What a write sends: the script to run (``None``: the command in the arguments), its
#: keys, its arguments, and the version token it writes.
WriteRequest = tuple[str | None, list[bytes], list[Any], bytes]


def _write_request(
    key: bytes,
    delta: Delta,
    expires_at: float,
    create: bool,
    index: tuple[list[bytes], list[Any]] | None,
) -> WriteRequest:
    """What :func:`_write_session` sends (the sync and async paths share it)."""
    deadline_ms = _deadline(expires_at)
    token = new_token()
    if create or delta.replace:  # a create, or a whole replace: one SET, no script
        value = _string_value(deadline_ms, token, delta.sets)
        guard = "NX" if create else "XX"
        if index is None:
            return None, [], ["SET", key, value, guard, "PXAT", deadline_ms], token
        keys, index_args = index  # with the index: one script
        return (
            SET_INDEXED_SCRIPT,
            [key, *keys],
            [value, guard, deadline_ms, *index_args],
            token,
        )
    args: list[Any] = [
        deadline_ms,
        HEADER.pack(STRING_FORMAT, deadline_ms, token),
        STRING_LIMIT,
        FOLD_MEMORY,
        len(delta.sets),
    ]
    for name, sealed in delta.sets.items():
        args += (name.encode("utf-8", "surrogatepass"), sealed)
    args += (name.encode("utf-8", "surrogatepass") for name in delta.deletes)
    if index is None:
        return UPDATE_SCRIPT, [key], args, token
    keys, index_args = index
    return UPDATE_INDEXED_SCRIPT, [key, *keys], [*args, *index_args], token


def _written(reply: Any, token: bytes, *, create: bool, whole: bool) -> tuple[bytes | None, bytes]:
    """What a write answered, as :func:`_write_session` returns it (``whole``: a create or
    a whole replace); ``CreateError`` or ``UpdateError`` if it wrote nothing."""
    if whole:
        if not reply:  # None from SET, 0 from the script
            raise CreateError if create else UpdateError
        return None, token
    status, replaced = reply
    if status != 1:
        raise UpdateError
    return replaced, token


def _touch_session(key: bytes, expires_at: float) -> tuple[bytes | None, bytes]:
    """``SessionStore._touch()`` of the session at ``key``: the version token it replaced
    (``None`` if the session had none) and the one it wrote."""
    args, token = _touch_request(expires_at)
    reply = _call(lambda: _run_script_on(TOUCH_SCRIPT, [key], *args, execute=_execute_write))
    return _written(reply, token, create=False, whole=False)


def _touch_request(expires_at: float) -> tuple[list[Any], bytes]:
    """The arguments of ``TOUCH_SCRIPT`` after the key, and the version token it writes."""
    deadline_ms = _deadline(expires_at)
    token = new_token()
    # The string header's bytes after its format: the deadline, then the new token.
    return [deadline_ms, deadline_ms.to_bytes(8, "big") + token], token


def _load(key: bytes) -> StoredSession | None:
    """The session at ``key`` as Redis holds it (``SessionStore._read()`` without the
    client-side cache)."""
    return _stored(*_call(lambda: _fetch(key, "HGETALL")))


def _stored(form: str, reply: Any) -> StoredSession | None:
    """The session in what ``_fetch(key, "HGETALL")`` found (``None``: none, or damaged:
    logged)."""
    if form == "string":
        deadline_ms = _string_deadline(reply)
        fields = None if deadline_ms is None else _string_fields(reply)
        if fields is None or deadline_ms is None:
            log_corrupt_record()
            return None
        token: bytes | None = HEADER.unpack_from(reply)[2]
        return StoredSession(fields, deadline_ms / 1000, len(reply), token)
    if not reply:  # no such key, or one that is no session
        if form == "other":
            log_corrupt_record()
        return None
    if not isinstance(reply, dict):  # RESP2: a flat list of names and values
        reply = dict(zip(reply[::2], reply[1::2], strict=True))
    stored: dict[bytes, bytes] = reply
    marker = _marker(stored.pop(MARKER, None))
    if marker is None:
        log_corrupt_record()
        return None
    deadline_ms, token = marker
    try:
        fields = {name.decode("utf-8", "surrogatepass"): value for name, value in stored.items()}
    except UnicodeDecodeError:
        fields = _text_named(stored)
    size = sum(map(len, stored)) + sum(map(len, stored.values()))
    return StoredSession(fields, deadline_ms / 1000, size, token)


def _held(held: CachedSession) -> StoredSession:
    """A session the client-side cache holds, as a load returns it."""
    return StoredSession(held.fields, held.deadline_ms / 1000, held.stored_size, held.token)


def _to_cache(key: bytes, stored: StoredSession) -> CachedSession:
    """A session loaded from Redis (with a version token), as the client-side cache
    holds it."""
    assert stored.version is not None
    return CachedSession(
        key,
        stored.fields,  # type: ignore[arg-type]  # bytes: read from Redis
        round(stored.expires_at * 1000),
        stored.version,
        stored.size,
    )


class SessionStore(_SessionBase):
    """Sessions in the Redis of the cache ``SESSION_CACHE_ALIAS``."""

    # A session's key holds no link to its index entry that a script can read (its fields
    # are sealed): a delete is told which entry to drop.
    remove_needs_entry = True

    @classmethod
    def _read(cls, session_key: str) -> StoredSession | None:
        key = _key(session_key)
        cache = client_cache()
        if cache is None:
            return _load(key)
        held = cache.get(key)
        if held is not None:
            return _held(held)
        with cache.loading(key) as fill:
            stored = _load(key)
            if stored is not None and stored.version is not None:
                fill(_to_cache(key, stored))
        return stored

    @classmethod
    def _write(
        cls,
        session_key: str,
        delta: Delta,
        expires_at: float,
        *,
        create: bool,
        index: IndexChange | None = None,
    ) -> None:
        key = _key(session_key)
        script_args = None
        if index is not None and (index.put is not None or index.drop is not None):
            if is_cluster():  # the index's keys are in other slots: written apart
                _cluster_index(index, session_key, done=False)
                _write_session(key, delta, expires_at, create=create)
                _cluster_index(index, session_key, done=True)
                return
            script_args = _index_script_args(session_key, index)
        cache = client_cache()
        if cache is None:
            _write_session(key, delta, expires_at, create=create, index=script_args)
            return
        with cache.writing(key) as written:
            replaced, token = _write_session(
                key, delta, expires_at, create=create, index=script_args
            )
            if not (create or delta.replace):  # else the held copy is dropped
                written(replaced, token, _deadline(expires_at), delta.sets, delta.deletes)

    @classmethod
    def _touch(cls, session_key: str, expires_at: float) -> None:
        key = _key(session_key)
        cache = client_cache()
        if cache is None:
            _touch_session(key, expires_at)
            return
        with cache.writing(key) as written:
            replaced, token = _touch_session(key, expires_at)
            written(replaced, token, _deadline(expires_at), {}, ())

    @classmethod
    def _remove(cls, session_key: str, listed_as: tuple[str, str] | None = None) -> None:
        key = _key(session_key)
        try:
            if listed_as is None:
                _call(lambda: _execute_write("DEL", key))
            elif is_cluster():  # the session first, then its entry (docs/user-sessions.md)
                _call(lambda: _execute_write("DEL", key))
                _cluster_index(IndexChange(None, listed_as), session_key, done=True)
            else:
                keys, args = _index_script_args(session_key, IndexChange(None, listed_as))
                _call(
                    lambda: _run_script_on(
                        DELETE_INDEXED_SCRIPT, [key, *keys], *args, execute=_execute_write
                    )
                )
        finally:
            cache = client_cache()
            if cache is not None:
                cache.drop(key)

    @classmethod
    def _contains(cls, session_key: str) -> bool:
        # The deadline, as _read() checks it: a key holding no valid one is no session.
        form, reply = _call(lambda: _fetch(_key(session_key), "HGET", MARKER))
        deadline_ms = _deadline_of(form, reply)
        return deadline_ms is not None and deadline_ms != NO_SESSION

    # -- async primitives: the same, on the event loop (see "asyncio" at the end) ---------

    @classmethod
    def async_native(cls) -> bool:
        return async_native()

    @classmethod
    async def _aread(cls, session_key: str) -> StoredSession | None:
        key = _key(session_key)
        cache = client_cache()
        if cache is None:
            return await _aload(key)
        # wait=False: the cache's upkeep runs in a thread, and an own write's copy not yet
        # verified is loaded, not waited for: the loop never waits on the cache's links.
        held = cache.get(key, wait=False)
        if held is not None:
            return _held(held)
        with cache.loading(key, wait=False) as fill:
            stored = await _aload(key)
            if stored is not None and stored.version is not None:
                fill(_to_cache(key, stored))
        return stored

    @classmethod
    async def _awrite(
        cls,
        session_key: str,
        delta: Delta,
        expires_at: float,
        *,
        create: bool,
        index: IndexChange | None = None,
    ) -> None:
        key = _key(session_key)
        script_args = None
        if index is not None and (index.put is not None or index.drop is not None):
            script_args = _index_script_args(session_key, index)
        cache = client_cache()
        if cache is None:
            await _awrite_session(key, delta, expires_at, create=create, index=script_args)
            return
        with cache.writing(key, wait=False) as written:
            replaced, token = await _awrite_session(
                key, delta, expires_at, create=create, index=script_args
            )
            if not (create or delta.replace):  # else the held copy is dropped
                written(replaced, token, _deadline(expires_at), delta.sets, delta.deletes)

    @classmethod
    async def _atouch(cls, session_key: str, expires_at: float) -> None:
        key = _key(session_key)
        cache = client_cache()
        if cache is None:
            await _atouch_session(key, expires_at)
            return
        with cache.writing(key, wait=False) as written:
            replaced, token = await _atouch_session(key, expires_at)
            written(replaced, token, _deadline(expires_at), {}, ())

    @classmethod
    async def _aremove(cls, session_key: str, listed_as: tuple[str, str] | None = None) -> None:
        key = _key(session_key)
        try:
            if listed_as is None:
                await _acall(_aexecute_write("DEL", key))
            else:
                keys, args = _index_script_args(session_key, IndexChange(None, listed_as))
                await _acall(
                    _arun_script_on(
                        DELETE_INDEXED_SCRIPT, [key, *keys], *args, execute=_aexecute_write
                    )
                )
        finally:
            cache = client_cache()
            if cache is not None:
                cache.drop(key)

    @classmethod
    async def _acontains(cls, session_key: str) -> bool:
        deadline_ms = _deadline_of(*await _acall(_afetch(_key(session_key), "HGET", MARKER)))
        return deadline_ms is not None and deadline_ms != NO_SESSION

    @classmethod
    def clear_expired(cls) -> None:
        """Redis expires sessions itself; this prunes the users' indexes (``SCAN`` of
        every primary) of the entries of sessions expired or gone."""
        prefix = conf.MEMOPT_REDIS_KEY_PREFIX.encode()
        pattern = _glob_escape(conf.MEMOPT_REDIS_KEY_PREFIX) + "~user:*"
        skip = len(prefix + b"~user:")
        for client in _call(_primaries):
            cursor = 0
            while True:
                reply = _call(
                    lambda at=cursor, client=client: _execute_on(  # type: ignore[misc]
                        client, "SCAN", at, "MATCH", pattern, "COUNT", 1000
                    )
                )
                cursor = int(reply[0])
                for name in reply[1]:
                    keys = [name, prefix + b"~user-until:" + name[skip:]]
                    if _cluster:
                        _cluster_entries(keys)
                    else:
                        _call(
                            lambda keys=keys: _run_script_on(LIST_SCRIPT, keys, _now_ms(), prefix)  # type: ignore[misc]
                        )
                if not cursor:
                    break

    @classmethod
    def _user_entries(cls, user: str) -> list[tuple[str, str, bytes]]:
        keys = _user_keys(user)
        if _cluster:  # _user_keys() resolved the client
            listed = _cluster_entries(keys)
        else:
            prefix = conf.MEMOPT_REDIS_KEY_PREFIX.encode()
            reply = _call(lambda: _run_script_on(LIST_SCRIPT, keys, _now_ms(), prefix))
            listed = []
            for handle, value in zip(reply[::2], reply[1::2], strict=True):
                length = value[0]
                listed.append((handle, value[1 : 1 + length], value[1 + length :]))
        found = []
        for handle, key, sealed in listed:
            session_key = key.decode("ascii", "replace")
            if SESSION_KEY_RE.match(session_key):
                found.append((handle.decode("ascii", "replace"), session_key, sealed))
        return found

    @classmethod
    def store_figures(cls, sample: int = 1000) -> dict[str, Any]:
        """What Redis knows of the sessions (sampled: see :func:`_store_figures`)."""
        return _store_figures(sample)

    # -- store-wide values: one hash per space -------------------------------------------

    @classmethod
    def read_values(cls, space: str) -> dict[str, bytes]:
        key = _space_key(space)
        reply = _call(lambda: _execute("HGETALL", key))
        if not isinstance(reply, dict):  # RESP2: a flat list of names and values
            reply = dict(zip(reply[::2], reply[1::2], strict=True))
        return {name.decode("utf-8", "replace"): value for name, value in reply.items()}

    @classmethod
    def read_value(cls, space: str, name: str) -> bytes | None:
        key = _space_key(space)
        value: bytes | None = _call(lambda: _execute("HGET", key, name))
        return value

    @classmethod
    def put_value(cls, space: str, name: str, value: bytes) -> None:
        key = _space_key(space)
        _call(lambda: _execute("HSET", key, name, value))

    @classmethod
    def add_value(cls, space: str, name: str, value: bytes) -> bytes:
        """One script (``HSETNX``, then ``HGET``), which Redis runs alone: the first wins."""
        key = _space_key(space)
        stored: bytes = _call(lambda: _run_script(ADD_VALUE_SCRIPT, key, name, value))
        return stored

    @classmethod
    def remove_values(cls, space: str, names: Iterable[str]) -> None:
        key = _space_key(space)
        listed = list(names)
        if listed:
            _call(lambda: _execute("HDEL", key, *listed))

    @classmethod
    def iter_sessions(cls) -> Iterator[tuple[str, float]]:
        """The live sessions' keys and deadlines (``SCAN``: never blocks Redis).

        Keys under the prefix whose rest is no session key (another site's longer prefix,
        the hashes of store-wide values) are skipped; so is a session that expires
        between its listing and its reading. A key under a session's name that holds no
        session a load would read (another type, a damaged string, a hash without a
        valid deadline) is skipped and logged (once per listing). A string is read whole
        to tell (at most ``STRING_LIMIT`` bytes), a hash by its deadline field.
        """
        pattern = _glob_escape(conf.MEMOPT_REDIS_KEY_PREFIX) + "*"
        skip = len(conf.MEMOPT_REDIS_KEY_PREFIX.encode())

        def page(client: Any, at: int) -> Callable[[], list[Any]]:
            return lambda: _execute_on(client, "SCAN", at, "MATCH", pattern, "COUNT", 1000)

        def deadlines(client: Any, keys: list[bytes]) -> Callable[[], list[int | None]]:
            def read() -> list[int | None]:
                commands = [(name, key, *args) for key in keys for name, *args in READS]
                pool = client.connection_pool
                conn = pool.get_connection()
                try:
                    replies = _replies(conn, commands)
                finally:
                    pool.release(conn)
                found = []
                for key, value, hashed in zip(keys, replies[::2], replies[1::2], strict=True):
                    # On a Cluster, a key whose slot moved since the SCAN is asked where
                    # it is now.
                    moved = isinstance(value, redis_errors.AskError) or isinstance(
                        hashed, redis_errors.AskError
                    )
                    form = ("other", None) if moved else _form(value, hashed)
                    if form[0] == "other":  # another type, or a hash folded meanwhile
                        form = _fetch(key, "HGET", MARKER)
                    found.append(_deadline_of(*form))
                return found

            return read

        logged = False
        for client in _call(_primaries):
            cursor = 0
            while True:
                reply = _call(page(client, cursor))
                cursor = int(reply[0])
                listed = [
                    (key, session_key)
                    for key in reply[1]
                    if SESSION_KEY_RE.match(session_key := key[skip:].decode("ascii", "replace"))
                ]
                if listed:
                    found = _call(deadlines(client, [key for key, _ in listed]))
                    for (key, session_key), deadline_ms in zip(listed, found, strict=True):
                        if deadline_ms is not None and deadline_ms != NO_SESSION:
                            yield session_key, deadline_ms / 1000
                        elif deadline_ms is not None and not logged:  # None: expired since SCAN
                            _log_stray_key(key)
                            logged = True
                if not cursor:
                    break


# A listing's reads of each key: its string form, or its hash's deadline.
READS: Final = (("GET",), ("HGET", MARKER))


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _space_key(space: str) -> bytes:
    # "~" never occurs in a session key, so no session hash can take this name.
    check_space(space)
    return f"{conf.MEMOPT_REDIS_KEY_PREFIX}~{space}".encode()


def _map_size(head: Any) -> int | None:
    """How many entries the msgpack map starting with ``head`` holds; ``None`` if none."""
    if type(head) is not bytes or not head:
        return None
    if 0x80 <= head[0] <= 0x8F:
        return head[0] - 0x80
    if head[0] in (0xDE, 0xDF):
        width = 2 if head[0] == 0xDE else 4
        return int.from_bytes(head[1 : 1 + width], "big") if len(head) > width else None
    return None


def _store_figures(sample: int) -> dict[str, Any]:
    """Sessions, memory and encodings, from ``SCAN`` pages until ``sample`` sessions.

    The session count is exact when the scan finished, else estimated from the share of
    sessions among the keys scanned (``DBSIZE`` counts every key of the database). On a
    Redis Cluster, every primary is scanned in turn (until ``sample`` sessions in all),
    and the figures are its primaries' (memory and ``DBSIZE`` summed).
    """
    prefix = conf.MEMOPT_REDIS_KEY_PREFIX.encode()
    found: list[bytes] = []
    scanned = 0
    cursor = 0
    # (client, its sampled keys), per primary scanned; the primaries not reached.
    sampled: list[tuple[Any, list[bytes]]] = []
    primaries = _call(_primaries)
    for client in primaries:
        own: list[bytes] = []
        cursor = 0
        while True:
            reply = _call(
                lambda at=cursor, client=client: _execute_on(  # type: ignore[misc]
                    client, "SCAN", at, "COUNT", 1000
                )
            )
            cursor = int(reply[0])
            scanned += len(reply[1])
            own += [
                key
                for key in reply[1]
                if key.startswith(prefix)
                and SESSION_KEY_RE.match(key[len(prefix) :].decode("ascii", "replace"))
            ]
            if not cursor or len(found) + len(own) >= sample:
                break
        sampled.append((client, own[: sample - len(found)]))
        found += own
        if len(found) >= sample:
            break
    unscanned = bool(cursor) or len(sampled) < len(primaries)
    keys = [key for _, own in sampled for key in own]
    per_key = 5

    def details() -> list[Any]:
        # The sampled keys' figures in the order of keys (sampled follows primaries), then
        # DBSIZE and memory summed over the primaries.
        replies: list[Any] = []
        dbsize, used, maxmemory = 0, 0, 0
        for at, client in enumerate(primaries):
            *figures, size, memory = node_details(
                client, sampled[at][1] if at < len(sampled) else []
            )
            replies += figures
            dbsize += size
            used += int(memory.get("used_memory", 0))
            maxmemory += int(memory.get("maxmemory", 0))
        return [*replies, dbsize, {"used_memory": used, "maxmemory": maxmemory}]

    def node_details(client: Any, keys: list[bytes]) -> list[Any]:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key, samples=0)
                pipe.object("encoding", key)
                pipe.type(key)
                pipe.hlen(key)
                # The map header after the string form's header: how many fields.
                pipe.getrange(key, HEADER.size, HEADER.size + 4)
            pipe.dbsize()
            pipe.info("memory")
            # A key of the other type answers HLEN or GETRANGE with an error, not the
            # whole sample.
            replies: list[Any] = pipe.execute(raise_on_error=False)
        for reply in replies[-2:]:
            if isinstance(reply, Exception):
                raise reply
        return replies

    replies = _call(details)
    dbsize, memory = replies[-2], replies[-1]
    usage: list[int] = []
    encodings: Counter[str] = Counter()
    lengths: list[int] = []
    for at in range(0, len(keys) * per_key, per_key):
        size, encoding, kind, hash_length, head = replies[at : at + per_key]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in ("string", "hash") or type(size) is not int:
            continue  # gone since the scan, or no session at all
        usage.append(size)
        if isinstance(encoding, (bytes, str)):
            encodings[encoding.decode() if isinstance(encoding, bytes) else encoding] += 1
        if kind == "hash" and type(hash_length) is int and hash_length:
            lengths.append(hash_length - 1)  # less the marker
        elif kind == "string" and (entries := _map_size(head)) is not None:
            lengths.append(entries)
    sessions = len(found) if not unscanned else round(dbsize * len(found) / max(scanned, 1))
    per_session = sum(usage) / len(usage) if usage else 0.0
    return {
        "sessions": sessions,
        "live_sessions": sessions,  # Redis expires sessions itself: every one is live
        "sessions_estimated": unscanned,
        "memory_per_session": per_session,
        "session_bytes": round(per_session * sessions),
        "fields_per_session": sum(lengths) / len(lengths) if lengths else 0.0,
        # OBJECT ENCODING of every sampled session: raw or embstr for the string form,
        # listpack (ziplist before Redis 7) or hashtable for a hash.
        "hash_encodings": dict(encodings),
        "sampled_sessions": len(keys),
        "used_memory": int(memory.get("used_memory", 0)),
        "maxmemory": int(memory.get("maxmemory", 0)),
    }


# -- asyncio: the same commands through redis.asyncio, a pool per event loop ---------------
#
# The async API (SessionBase.aload() and the rest) awaits these instead of running the sync
# primitives in a thread. They send the same packed commands and scripts, read the same
# replies through the same pure functions (_form, _stored, _write_request, _written, ...),
# and map failures the same way (_store_error). asyncio connections belong to the loop
# that opened them: each running loop gets a pool of its own, made from the sync client's
# (same class of connection, address, credentials, TLS, timeouts, retries; Sentinel
# through redis.asyncio.sentinel), and disconnected when that loop shuts down (asyncio.run
# and asgiref close a loop's async generators first: see _apool()). A client that is no
# plain redis.Redis (a cluster client) has no such pool: the engine then keeps the thread.


class _LoopPool:
    """The asyncio pool of one event loop, and the generator that closes it."""

    __slots__ = ("closer", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.closer: Any = None


_apools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = (
    weakref.WeakKeyDictionary()
)
_UNKNOWN: Final = object()
# Whether the sync client's pool has an asyncio counterpart (the async API is native):
# decided once per client.
_native: Any = _UNKNOWN


def async_native() -> bool:
    """Whether the async API talks to Redis on the event loop: the client is a plain
    ``redis.Redis`` whose connections redis.asyncio can make (TCP, TLS, a unix socket,
    Sentinel). Otherwise (a cluster client, a custom connection class) it runs the sync
    primitives in a thread."""
    global _native
    if _native is _UNKNOWN:
        try:
            _native = _async_pool_maker(connection()) is not None
        except Exception:  # django-redis could not make the client: the sync path says why
            return False
    return bool(_native)


def _async_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The sync connection's ``kwargs`` that the asyncio connection class ``cls`` takes,
    its retry policy made asyncio's."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            accepted.update(inspect.signature(init).parameters)
    # Objects of the sync world (a parser, an event dispatcher, a callback) are not carried.
    skipped = {
        "parser_class",
        "retry",
        "event_dispatcher",
        "redis_connect_func",
        "connection_pool",
    }
    made = {k: v for k, v in kwargs.items() if k in accepted and k not in skipped}
    retry = kwargs.get("retry")
    if retry is not None:
        made["retry"] = AsyncRetry(retry._backoff, retry._retries, tuple(retry._supported_errors))
    return made


def _async_pool_maker(client: Any) -> Callable[[], Any] | None:
    """What makes an asyncio pool like ``client``'s, or ``None`` if there is none."""
    from redis import connection as sync_connection
    from redis import sentinel as sync_sentinel
    from redis.asyncio import connection as async_connection
    from redis.asyncio import sentinel as async_sentinel

    if not isinstance(client, redis.Redis):  # a cluster client, or another library's
        return None
    pool = client.connection_pool
    if isinstance(pool, sync_sentinel.SentinelConnectionPool):
        manager = pool.sentinel_manager
        addresses = [
            (
                s.connection_pool.connection_kwargs["host"],
                s.connection_pool.connection_kwargs["port"],
            )
            for s in manager.sentinels
        ]
        connection_cls = async_sentinel.SentinelManagedConnection
        kwargs = _async_kwargs(connection_cls, pool.connection_kwargs)
        sentinel_kwargs = _async_kwargs(async_connection.Connection, manager.sentinel_kwargs)
        service, is_master = pool.service_name, pool.is_master
        if not is_master:
            return None  # never a replica: the sync client would not be one either

        def sentinel_pool() -> Any:
            sentinels = async_sentinel.Sentinel(
                addresses, manager.min_other_sentinels, sentinel_kwargs, **kwargs
            )
            return async_sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
                service, sentinels, connection_class=connection_cls, is_master=True, **kwargs
            )

        return sentinel_pool
    counterparts = (
        (sync_connection.SSLConnection, async_connection.SSLConnection),
        (sync_connection.UnixDomainSocketConnection, async_connection.UnixDomainSocketConnection),
        (sync_connection.Connection, async_connection.Connection),
    )
    for sync_cls, async_cls in counterparts:
        if pool.connection_class is sync_cls:
            kwargs = _async_kwargs(async_cls, pool.connection_kwargs)
            max_connections = pool.max_connections
            # A blocking pool: a loop runs as many requests at once as come (a worker's
            # threads are few), so past max_connections a command waits for a connection
            # (as long as the socket timeout allows) rather than failing.
            return lambda: async_connection.BlockingConnectionPool(
                max_connections=max_connections,
                timeout=kwargs.get("socket_timeout"),
                connection_class=async_cls,
                **kwargs,
            )
    return None  # a connection class of its own: redis.asyncio cannot make it


async def _apool() -> Any:
    """The asyncio pool of the running loop, made on first use."""
    loop = asyncio.get_running_loop()
    held = _apools.get(loop)
    if held is not None:
        return held.pool
    maker = _async_pool_maker(connection())
    assert maker is not None  # async_native() said so
    held = _apools[loop] = _LoopPool(maker())
    # Closed when the loop shuts down: the loop closes the async generators it started
    # (loop.shutdown_asyncgens(), which asyncio.run() and asgiref call) before it closes.
    held.closer = _close_at_shutdown(loop, held)
    await held.closer.__anext__()
    return held.pool


async def _close_at_shutdown(
    loop: asyncio.AbstractEventLoop, held: _LoopPool
) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if _apools.get(loop) is held:
            del _apools[loop]
        await held.pool.disconnect()
        # A Sentinel pool's clients of the sentinels themselves.
        for sentinel in getattr(getattr(held.pool, "sentinel_manager", None), "sentinels", ()):
            await sentinel.aclose()


async def _adisconnect_all() -> None:
    """Disconnect the running loop's pool (its connections are made anew on next use)."""
    held = _apools.get(asyncio.get_running_loop())
    if held is not None:
        await held.pool.disconnect()


def _forget_async_pools() -> None:
    """Forget every loop's pool (the client's settings changed). Each is still closed
    with its loop, by its closing generator (or, once nothing holds that generator, by the
    loop's finalizer of async generators)."""
    global _native
    _native = _UNKNOWN
    _apools.clear()


async def _aon_connection(action: Callable[[Any], Awaitable[T]]) -> T:
    """:func:`_on_connection` on the running loop's pool: ``await action(connection)``."""
    pool = await _apool()
    conn = await pool.get_connection()
    try:
        done: T = await conn.retry.call_with_retry(
            lambda: action(conn), lambda _e: conn.disconnect()
        )
        return done
    except asyncio.CancelledError:
        # Cancelled between a command and its reply: the connection's next reply would be
        # this one's. It is dropped.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


async def _aexecute(*command: Any) -> Any:
    """:func:`_execute` on the running loop."""

    async def send(conn: Any) -> Any:
        await conn.send_packed_command(_packed(command))
        return await conn.read_response()

    return await _aon_connection(send)


async def _aexecute_all(*commands: tuple[Any, ...]) -> list[Any]:
    """:func:`_execute_all` on the running loop."""

    async def send(conn: Any) -> list[Any]:
        await conn.send_packed_command(b"".join(map(_packed, commands)))
        replies = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except redis_errors.ResponseError as exc:
                replies.append(exc)
        return replies

    return await _aon_connection(send)


async def _aexecute_write(*command: Any) -> Any:
    """:func:`_execute_write` on the running loop."""
    wait = _wait_command()
    if wait is None:
        return await _aexecute(*command)
    reply, acked = await _aexecute_all(command, wait)
    return _acknowledged(reply, acked, wait)


async def _arun_script_on(
    script: str,
    keys: list[bytes],
    *args: Any,
    execute: Callable[..., Awaitable[Any]] = _aexecute,
) -> Any:
    """:func:`_run_script_on` on the running loop."""
    try:
        return await execute("EVALSHA", _SHAS[script], len(keys), *keys, *args)
    except redis_errors.NoScriptError:  # after SCRIPT FLUSH or a Redis restart: load it once more
        await _aexecute("SCRIPT", "LOAD", script)
        return await execute("EVALSHA", _SHAS[script], len(keys), *keys, *args)


async def _acall(action: Awaitable[T]) -> T:
    """:func:`_call` of an awaitable."""
    try:
        return await action
    except redis_errors.RedisError as exc:
        version = None
        if _maybe_too_old(exc):  # a server too old for PXAT: ask it what it runs
            with contextlib.suppress(redis_errors.RedisError):
                version = _old_version(await _aexecute("INFO", "server"))
        raise _store_error(exc, lambda _exc: version) from exc


async def _afetch(key: bytes, *hash_command: Any) -> tuple[str, Any]:
    """:func:`_fetch` on the running loop."""
    command = (hash_command[0], key, *hash_command[1:])
    for _ in range(2):
        form = _form(*await _aexecute_all(("GET", key), command))
        if form[0] != "other":
            break
    return form


async def _aload(key: bytes) -> StoredSession | None:
    """:func:`_load` on the running loop."""
    return _stored(*await _acall(_afetch(key, "HGETALL")))


async def _awrite_session(
    key: bytes,
    delta: Delta,
    expires_at: float,
    *,
    create: bool,
    index: tuple[list[bytes], list[Any]] | None = None,
) -> tuple[bytes | None, bytes]:
    """:func:`_write_session` on the running loop."""
    script, keys, args, token = _write_request(key, delta, expires_at, create, index)
    if script is None:
        reply = await _acall(_aexecute_write(*args))
    else:
        reply = await _acall(_arun_script_on(script, keys, *args, execute=_aexecute_write))
    return _written(reply, token, create=create, whole=create or delta.replace)


async def _atouch_session(key: bytes, expires_at: float) -> tuple[bytes | None, bytes]:
    """:func:`_touch_session` on the running loop."""
    args, token = _touch_request(expires_at)
    reply = await _acall(_arun_script_on(TOUCH_SCRIPT, [key], *args, execute=_aexecute_write))
    return _written(reply, token, create=False, whole=False)
