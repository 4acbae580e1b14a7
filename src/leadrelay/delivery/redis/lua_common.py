"""What every Lua script of the Redis store shares: key names, counters, queue and lead helpers.

Every state change is one atomic script, one round trip. Each script gets the queue stream as
``KEYS[1]`` (so Redis Cluster routes it to the right node) and the key prefix as ``ARGV[1]``;
every other key is derived from the prefix, whose hash tag puts them all in the stream's slot.
Values travel as strings and stay strings: lead ids are never turned into Lua numbers (doubles),
so 17-digit ids survive exactly. Times are compared with ``tonumber`` only, and stored as the
client sent them.

Event hash ``e:<id>`` fields: k key, s state, se source_event, n event_name, l lead_id,
t event_time, ra received_at, ua updated_at, na next_attempt_at, a attempts, r reason,
m message, f field, v value, c code, sc subcode, ft fbtrace_id, rs response; while queued or in
flight: sid (its stream entry), con (the consumer holding it), h (parked behind an earlier event
of its lead). The large values live in their own string keys, ``p:<id>`` (payload), ``n:<id>``
(notes) and ``o:<id>`` (original), so the hash stays small (listpack-encoded) and dropping them is
a DEL. Ids per state: a sorted set for queued and in_flight (small, counted with ZCARD), a bitmap
for the final states (one bit per id: millions of delivered events cost megabytes, not
gigabytes).
"""

from __future__ import annotations

from typing import Final

from leadrelay.delivery.redis.counters import BUCKET_LEVELS

SCHEMA_VERSION: Final = 1
"""The layout of the keys, kept in ``{prefix}:meta`` (field ``schema``)."""

COMMON: Final = """
local P = ARGV[1]
local STREAM = KEYS[1]
local DELAYED = P .. 'delayed'
local TOTALS = P .. 'totals'
local KEYMAP = P .. 'keys'
local ORDER = P .. 'order'
local DEADS = P .. 'dead'
local OPEN = {queued = true, in_flight = true}
local LEVELS = {__LEVELS__}
local function EK(id) return P .. 'e:' .. id end
local function PK(id) return P .. 'p:' .. id end
local function NK(id) return P .. 'n:' .. id end
local function OK(id) return P .. 'o:' .. id end
local function SK(s) return P .. 's:' .. s end
local function LK(l) return P .. 'l:' .. l end
local function int(x) return string.format('%d', x) end

-- One command with many arguments (head..., then `list`), in chunks that unpack can take.
local function vcall(head, list)
  for a = 1, #list, 4000 do
    local args = {unpack(head)}
    for j = a, math.min(a + 3999, #list) do args[#args + 1] = list[j] end
    redis.call(unpack(args))
  end
end

-- Up to n ids of state s greater than `after`, ascending, as numbers.
local function state_ids(s, after, n)
  local out = {}
  if OPEN[s] then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', SK(s), '(' .. after, '+inf', 'LIMIT', 0, n)) do
      out[#out + 1] = tonumber(id)
    end
    return out
  end
  local pos = tonumber(after) + 1
  while #out < n do
    local found = redis.call('BITPOS', SK(s), 1, pos, -1, 'BIT')
    if found < 0 then break end
    out[#out + 1] = found
    pos = found + 1
  end
  return out
end

-- Changes to the per-state id sets and the counters are gathered during a call and written by
-- flush(), a few commands per call instead of several per event.
local member, totals, buckets, at_keys = {}, {}, {}, {}
local function bump(state, reason, at, n)
  local f = state .. '|' .. (reason or '')
  totals[f] = (totals[f] or 0) + n
  if not at then return end
  local ds = at_keys[at]  -- most events of a call share their time: work the buckets out once
  if not ds then
    ds = {}
    local t = tonumber(at)
    for _, lv in ipairs(LEVELS) do
      local b = math.floor(t / lv[1]) * lv[1]
      local key = P .. 'b' .. lv[1] .. ':' .. int(b)
      local d = buckets[key]
      if not d then
        d = {g = lv[1], b = b, ttl = lv[2], f = {}}
        buckets[key] = d
      end
      ds[#ds + 1] = d
    end
    at_keys[at] = ds
  end
  for _, d in ipairs(ds) do d.f[f] = (d.f[f] or 0) + n end
end

local function set_member(state, id, yes)
  member[state] = member[state] or {}
  member[state][tostring(id)] = yes
end

local function move(id, old_s, old_r, old_at, new_s, new_r, new_at)
  if old_s ~= new_s then
    if old_s then set_member(old_s, id, false) end
    set_member(new_s, id, true)
  end
  if old_s then bump(old_s, old_r, old_at, -1) end
  bump(new_s, new_r, new_at, 1)
end

local function flush()
  for s, ids in pairs(member) do
    local add, rem = {}, {}
    for id, yes in pairs(ids) do
      if OPEN[s] then
        if yes then add[#add + 1] = id; add[#add + 1] = id else rem[#rem + 1] = id end
      else
        add[#add + 1] = 'SET'; add[#add + 1] = 'u1'; add[#add + 1] = id
        add[#add + 1] = yes and 1 or 0
      end
    end
    if OPEN[s] then
      if #add > 0 then vcall({'ZADD', SK(s)}, add) end
      if #rem > 0 then vcall({'ZREM', SK(s)}, rem) end
    elseif #add > 0 then
      vcall({'BITFIELD', SK(s)}, add)
    end
  end
  for f, n in pairs(totals) do
    if n ~= 0 then redis.call('HINCRBY', TOTALS, f, n) end
  end
  for key, d in pairs(buckets) do
    -- an expired bucket is not brought back by the decrements of events leaving it
    local exists = redis.call('EXISTS', key) == 1
    local grew = false
    for f, n in pairs(d.f) do
      if n > 0 or (n < 0 and exists) then
        redis.call('HINCRBY', key, f, n)
        grew = grew or n > 0
      end
    end
    if grew then
      redis.call('EXPIRE', key, d.ttl + 3600)
      local idx = P .. 'bi' .. d.g
      redis.call('ZADD', idx, d.b, int(d.b))
      redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. int(d.b - d.ttl))
    end
  end
end

-- Stream entries to acknowledge and delete, at the end of the call.
local done_entries = {}
local function drop_entry(sid) done_entries[#done_entries + 1] = sid end
local function drop_entries(group)
  if #done_entries > 0 then
    vcall({'XACK', STREAM, group}, done_entries)
    vcall({'XDEL', STREAM}, done_entries)
  end
end

local function add_to_stream(ek, id)
  redis.call('HSET', ek, 'sid', redis.call('XADD', STREAM, '*', 'i', id))
end

-- Per-lead order: an event may go out when every open event of its lead accepted before it is
-- in the same claim (taken). Checking the direct predecessor is enough: it was itself only
-- taken once its own predecessor was.
local function may_go(id, lead, taken)
  if not lead then return true end
  local lk = LK(lead)
  while true do
    local r = redis.call('ZRANK', lk, id)
    if not r or r == 0 then return true end
    local pred = redis.call('ZRANGE', lk, r - 1, r - 1)[1]
    if taken[pred] then return true end
    if OPEN[redis.call('HGET', EK(pred), 's')] then return false end
    redis.call('ZREM', lk, pred)  -- defensive: a finished event left behind
  end
end

-- A queued event that is not in the stream: due at `due` if first of its lead (or right behind
-- one enqueued by the same call: a retried batch stays together), else parked.
local function enqueue(id, ek, lead, due, batch)
  if may_go(id, lead, batch) then
    batch[id] = true
    redis.call('HDEL', ek, 'h')
    redis.call('ZADD', DELAYED, due, id)
  else
    redis.call('HSET', ek, 'h', '1')
    redis.call('ZREM', DELAYED, id)
  end
end

-- After an event of `lead` finished: the parked events now first in line go back to the stream.
local function unpark(lead)
  local lk = LK(lead)
  local rank = 0
  while rank < 1000 do
    local m = redis.call('ZRANGE', lk, rank, rank)[1]
    if not m then return end
    local ek = EK(m)
    local st = redis.call('HMGET', ek, 's', 'h')
    if not OPEN[st[1]] then
      redis.call('ZREM', lk, m)
    elseif st[2] then
      redis.call('HDEL', ek, 'h')
      add_to_stream(ek, m)
      rank = rank + 1
    else
      return
    end
  end
end

-- An event reached a final state: out of its lead's line, letting the next ones go.
local function finish(id, lead, was_queued)
  if was_queued then redis.call('ZREM', DELAYED, id) end
  if lead then
    redis.call('ZREM', LK(lead), id)
    unpark(lead)
  end
end

local function dead_letter(id, key, reason, message, now, maxlen)
  redis.call('XADD', DEADS, 'MAXLEN', '~', maxlen, '*', 'i', id, 'k', key or '',
    'r', reason or '', 'm', message or '', 'at', now)
end

-- Retries that fell due go (back) into the stream, in due order, then by id.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 10000)
  if #due == 0 then return end
  local items, ids = {}, {}
  for j = 1, #due, 2 do
    items[#items + 1] = {tonumber(due[j + 1]), tonumber(due[j]), due[j]}
    ids[#ids + 1] = due[j]
  end
  table.sort(items, function(x, y) return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2]) end)
  vcall({'ZREM', DELAYED}, ids)
  for _, it in ipairs(items) do
    local ek = EK(it[3])
    local st = redis.call('HMGET', ek, 's', 'h')
    if st[1] == 'queued' and not st[2] then add_to_stream(ek, it[3]) end
  end
end
""".replace("__LEVELS__", ", ".join(f"{{{g}, {ttl}}}" for g, ttl in BUCKET_LEVELS))


def script(body: str) -> str:
    """A script: the shared helpers, then ``body``."""
    return COMMON + body
