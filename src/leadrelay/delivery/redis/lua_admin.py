"""The replay, retention and read scripts: requeue, purge, counts, events, open events among
spans of ids and what became of them, the fleet pause."""

from __future__ import annotations

from typing import Final

from leadrelay.delivery.redis.lua_common import script

REQUEUE: Final = script("""
-- ARGV: P, now, then per id: id, lead, payload, notes, nfields, field/value pairs
-- (lead '': keep the stored payload)
local NOW = ARGV[2]
local REPLAYABLE = {dead = true, rejected = true, expired = true, filtered = true}
local batch = {}
local n = 0
local i = 3
while i <= #ARGV do
  local id, lead, payload, notes = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local fs = i + 5
  i = fs + tonumber(ARGV[i + 4]) * 2
  local ek = EK(id)
  local cur = redis.call('HMGET', ek, 's', 'r', 'ua', 'l')
  if REPLAYABLE[cur[1]] and (lead ~= '' or redis.call('EXISTS', PK(id)) == 1) then
    redis.call('HDEL', ek, 'r', 'm', 'f', 'v', 'c', 'sc', 'ft', 'rs', 'h', 'sid', 'con', 'hd')
    if lead ~= '' then
      redis.call('HSET', ek, unpack(ARGV, fs, i - 1))
      redis.call('SET', PK(id), payload)
      if notes ~= '' then redis.call('SET', NK(id), notes) else redis.call('DEL', NK(id)) end
    else
      lead = cur[4]
    end
    redis.call('HSET', ek, 's', 'queued', 'na', NOW, 'ua', NOW, 'a', '0')
    move(id, cur[1], cur[2], cur[3], 'queued', nil, NOW)
    redis.call('ZADD', LK(lead), redis.call('INCR', ORDER), id)
    enqueue(id, ek, lead, NOW, batch)
    n = n + 1
  end
end
flush()
return n
""")

PURGE: Final = script("""
-- ARGV: P, updated_before, drop_originals ('1'/'0'), after_id, chunk, state (delivered or
-- filtered: a final state whose events are no dead letters)
local BEFORE, S = tonumber(ARGV[2]), ARGV[6]
local ids = state_ids(S, ARGV[4], tonumber(ARGV[5]))
local n = 0
for _, id in ipairs(ids) do
  local ek = EK(id)
  local cur = redis.call('HMGET', ek, 'ua', 'k', 'r')
  if cur[1] and tonumber(cur[1]) < BEFORE then
    if ARGV[3] == '1' then
      if redis.call('DEL', PK(id), OK(id), NK(id)) > 0 then n = n + 1 end
    else
      redis.call('DEL', ek, PK(id), OK(id), NK(id))
      set_member(S, id, false)
      if cur[2] and cur[2] ~= '' and redis.call('HGET', KEYMAP, cur[2]) == tostring(id) then
        redis.call('HDEL', KEYMAP, cur[2])
      end
      bump(S, cur[3], cur[1], -1)
      n = n + 1
    end
  end
end
flush()
return {n, ids[#ids] or 0, #ids}
""")

COUNTS: Final = script("""
-- ARGV: P, since ('' for all time), then the bucket sizes to use, ascending.
-- Returns {queued, in_flight, oldest received_at, counters}: of the first queued and the first
-- in flight (an outage's retries are in flight most of the time); counters is the flat totals
-- hash for all time, else {size, start, flat hash, ...} for the buckets since `since`.
local function backlog()
  local oldest = false
  for _, state in ipairs({'queued', 'in_flight'}) do
    local first = redis.call('ZRANGE', SK(state), 0, 0)[1]
    local at = first and redis.call('HGET', EK(first), 'ra')
    if at and (not oldest or tonumber(at) < tonumber(oldest)) then oldest = at end
  end
  return {redis.call('ZCARD', SK('queued')), redis.call('ZCARD', SK('in_flight')), oldest}
end
local out = backlog()
if ARGV[2] == '' then
  out[4] = redis.call('HGETALL', TOTALS)
  return out
end
local ttl = {}
for _, lv in ipairs(LEVELS) do ttl[lv[1]] = lv[2] end
local gs = {}
for j = 3, #ARGV do gs[#gs + 1] = tonumber(ARGV[j]) end
-- [since, next minute) from second buckets, [.., next hour) from minute buckets, then hours;
-- a level whose buckets no longer reach back to `since` hands over to the next, coarser one.
local found = {}
local start = math.floor(tonumber(ARGV[2]))
for k, g in ipairs(gs) do
  local idx = P .. 'bi' .. g
  local hi = '+inf'
  local covered = true
  if k < #gs then
    local ng = gs[k + 1]
    local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')[2]
    if top and start < tonumber(top) - ttl[g] then
      covered = false
      start = math.floor(start / ng) * ng
    else
      hi = '(' .. int(math.ceil(start / ng) * ng)
    end
  end
  if covered then
    for _, b in ipairs(redis.call('ZRANGEBYSCORE', idx, int(start), hi)) do
      local h = redis.call('HGETALL', P .. 'b' .. g .. ':' .. b)
      if #h > 0 then
        found[#found + 1] = g
        found[#found + 1] = b
        found[#found + 1] = h
      end
    end
    if k < #gs then start = math.ceil(start / gs[k + 1]) * gs[k + 1] end
  end
end
out[4] = found
return out
""")

EVENTS: Final = script("""
-- ARGV: P, after_id, limit, budget, has_reason, reason, since ('' for none), states...
-- Returns {done, last id looked at, ids...}: ids by ascending id over the given states.
local AFTER, LIMIT, BUDGET = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local HASR, REASON, SINCE = ARGV[5] == '1', ARGV[6], tonumber(ARGV[7])
local cand, cut = {}, false
for j = 8, #ARGV do
  local ids = state_ids(ARGV[j], AFTER, BUDGET)
  cut = cut or #ids >= BUDGET
  for _, id in ipairs(ids) do cand[#cand + 1] = id end
end
table.sort(cand)
-- when a state had more ids than the budget, only the first `budget` of the union are sure to
-- have no smaller id left out
local n = cut and math.min(#cand, BUDGET) or #cand
local out = {cut and 0 or 1, tonumber(AFTER)}
local found = 0
for j = 1, n do
  local id = cand[j]
  out[2] = id
  local ok = true
  if HASR or SINCE then
    local cur = redis.call('HMGET', EK(id), 'r', 'ua')
    ok = (not HASR or cur[1] == REASON) and (not SINCE or (cur[2] and tonumber(cur[2]) >= SINCE))
  end
  if ok then
    out[#out + 1] = id
    found = found + 1
    if found >= LIMIT then
      if j < #cand then out[1] = 0 end
      break
    end
  end
end
return out
""")

OPEN_AMONG: Final = script("""
-- ARGV: P, then first and last id of each span. How many events of the spans are open.
local n = 0
for j = 2, #ARGV, 2 do
  for _, s in ipairs({'queued', 'in_flight'}) do
    n = n + redis.call('ZCOUNT', SK(s), ARGV[j], ARGV[j + 1])
  end
end
return n
""")

ACCOUNT_AMONG: Final = script("""
-- ARGV: P, list open and delivered ids ('1') or count them only ('0'), then first and last id
-- of each span. At one instant: how many of the spans' events are open, how many delivered,
-- and each settled one as id and state letter (r rejected, e expired, x dead; and, when
-- listed, d delivered, q queued, i in flight).
local list_all = ARGV[2] == '1'
local open, delivered, out = 0, 0, {}
local letters = {delivered = 'd', rejected = 'r', expired = 'e', dead = 'x'}
for j = 3, #ARGV, 2 do
  local first, last = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  for s, letter in pairs({queued = 'q', in_flight = 'i'}) do
    open = open + redis.call('ZCOUNT', SK(s), first, last)
    if list_all then
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', SK(s), first, last)) do
        out[#out + 1] = id
        out[#out + 1] = letter
      end
    end
  end
  for _, s in ipairs({'delivered', 'rejected', 'expired', 'dead'}) do
    if s == 'delivered' then
      delivered = delivered + redis.call('BITCOUNT', SK(s), first, last, 'BIT')
    end
    if s ~= 'delivered' or list_all then
      local pos = first
      while pos <= last do
        local found = redis.call('BITPOS', SK(s), 1, pos, last, 'BIT')
        if found < 0 then break end
        out[#out + 1] = int(found)
        out[#out + 1] = letters[s]
        pos = found + 1
      end
    end
  end
end
return {open, delivered, out}
""")

OUTCOME_FIELDS: Final = (
    b"s", b"k", b"se", b"n", b"l", b"a", b"r", b"m", b"c", b"sc", b"ft", b"ra", b"ua"
)  # fmt: skip
"""The fields of an event's hash a report row says (the state first), and when it was received
and last changed (``delivery.own``: by this run, or by another process while it ran), as
``OUTCOMES_OF`` reads them."""

OUTCOMES_OF: Final = script(
    """
-- ARGV: P, then ids. As one JSON array: for each id, the fields of its hash a report row says
-- (in OUTCOME_FIELDS' order; false where there is none), or false for an id no longer stored.
-- One string, not nested replies: a client parses it at once (replies of 11 values an event
-- took redis-py some 40 us an event).
local fields = {__FIELDS__}
local out = {}
for j = 2, #ARGV do
  local values = redis.call('HMGET', EK(ARGV[j]), unpack(fields))
  out[#out + 1] = values[1] and values or false
end
return cjson.encode(out)
""".replace("__FIELDS__", ", ".join(f"'{f.decode()}'" for f in OUTCOME_FIELDS))
)

PAUSE: Final = """
-- KEYS: the pause key. ARGV: until, reason, ttl_ms. Only ever extends a pause.
local cur = redis.call('GET', KEYS[1])
if cur then
  local u = tonumber(string.match(cur, '^([^|]*)'))
  if u and u >= tonumber(ARGV[1]) then return cur end
end
local v = ARGV[1] .. '|' .. ARGV[2]
redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
return v
"""
