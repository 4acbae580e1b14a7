"""The queue scripts that settle claimed events: results (COMPLETE), retries (RETRY), giving them
back (RELEASE), keeping them (RENEW) and a consumer leaving (LEAVE). Those that take events in
and hand them out: ``lua_queue``."""

from __future__ import annotations

from typing import Final

from leadrelay.delivery.redis.lua_common import script

COMPLETE: Final = script("""
-- ARGV: P, group, now, dead-letter maxlen, then per result:
-- id, state, attempts, reason, nfields, field/value pairs
local GROUP, NOW, DLMAX = ARGV[2], ARGV[3], ARGV[4]
local batch = {}
local i = 5
while i <= #ARGV do
  local id, state, att, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local fs = i + 5
  i = fs + tonumber(ARGV[i + 4]) * 2
  local ek = EK(id)
  local cur = redis.call('HMGET', ek, 's', 'r', 'ua', 'sid', 'l', 'k', 'h', 'a')
  if OPEN[cur[1]] then
    reason = reason ~= '' and reason or nil
    redis.call('HDEL', ek, 'r', 'm', 'c', 'sc', 'ft', 'rs', 'na', 'sid', 'con', 'hd')
    local set = {'HSET', ek, 's', state, 'ua', NOW, 'a', tonumber(cur[8] or 0) + tonumber(att)}
    for j = fs, i - 1 do set[#set + 1] = ARGV[j] end
    if state == 'queued' then
      set[#set + 1] = 'na'
      set[#set + 1] = NOW
    end
    redis.call(unpack(set))
    move(id, cur[1], cur[2], cur[3], state, reason, NOW)
    if cur[4] then drop_entry(cur[4]) end
    if state == 'queued' then
      if not cur[7] then enqueue(id, ek, cur[5], NOW, batch) end
    else
      if cur[7] then redis.call('HDEL', ek, 'h') end
      finish(id, cur[5], cur[1] == 'queued')
      if state == 'dead' then
        dead_letter(id, cur[6], reason, redis.call('HGET', ek, 'm'), NOW, DLMAX)
      end
    end
  end
end
drop_entries(GROUP)
flush()
return 0
""")

RETRY: Final = script("""
-- ARGV: P, group, next_attempt_at, now, attempts, reason, has_message, message, ids...
local GROUP, NEXT, NOW, ATT, REASON = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local batch = {}
for j = 9, #ARGV do
  local id = ARGV[j]
  local ek = EK(id)
  local cur = redis.call('HMGET', ek, 's', 'r', 'ua', 'sid', 'l', 'h', 'a')
  if OPEN[cur[1]] then
    redis.call('HDEL', ek, 'c', 'sc', 'ft', 'm', 'sid', 'con', 'hd')
    local set = {'HSET', ek, 's', 'queued', 'na', NEXT, 'ua', NOW, 'r', REASON}
    set[#set + 1] = 'a'
    set[#set + 1] = tonumber(cur[7] or 0) + ATT
    if ARGV[7] == '1' then
      set[#set + 1] = 'm'
      set[#set + 1] = ARGV[8]
    end
    redis.call(unpack(set))
    move(id, cur[1], cur[2], cur[3], 'queued', REASON, NOW)
    if cur[4] then drop_entry(cur[4]) end
    if not cur[6] then enqueue(id, ek, cur[5], NEXT, batch) end
  end
end
drop_entries(GROUP)
flush()
return 0
""")

RELEASE: Final = script("""
-- ARGV: P, group, consumer, count. Takes back what this consumer holds (a restart).
local GROUP = ARGV[2]
local pend = redis.pcall('XPENDING', STREAM, GROUP, '-', '+', ARGV[4], ARGV[3])
if pend.err then return {0, 0} end
local batch = {}
local n = 0
for _, p in ipairs(pend) do
  local sid = p[1]
  local e = redis.call('XRANGE', STREAM, sid, sid)[1]
  drop_entry(sid)
  local id = e and e[2][2]
  local ek = id and EK(id)
  local cur = id and redis.call('HMGET', ek, 's', 'sid', 'r', 'ua', 'l', 'na') or {}
  if cur[1] == 'in_flight' and cur[2] == sid then
    redis.call('HDEL', ek, 'sid', 'con')
    redis.call('HINCRBY', ek, 'hd', p[4])  -- the re-added entry starts its count again
    redis.call('HSET', ek, 's', 'queued')
    move(id, 'in_flight', cur[3], cur[4], 'queued', cur[3], cur[4])
    enqueue(id, ek, cur[5], cur[6] or cur[4], batch)
    n = n + 1
  end
end
drop_entries(GROUP)
flush()
return {n, #pend}
""")

RENEW: Final = script("""
-- ARGV: P, group, consumer, ids... Resets the idle time of entries this consumer still holds.
local n = 0
for j = 4, #ARGV do
  local cur = redis.call('HMGET', EK(ARGV[j]), 's', 'sid', 'con')
  if cur[1] == 'in_flight' and cur[3] == ARGV[3] and cur[2] then
    local got = redis.call('XCLAIM', STREAM, ARGV[2], ARGV[3], 0, cur[2], 'JUSTID')
    n = n + #got
  end
end
return n
""")

LEAVE: Final = script("""
-- ARGV: P, group, consumers... Removes from the group those that hold nothing.
local n = 0
for j = 3, #ARGV do
  local pend = redis.pcall('XPENDING', STREAM, ARGV[2], '-', '+', 1, ARGV[j])
  if not pend.err and #pend == 0 then
    redis.call('XGROUP', 'DELCONSUMER', STREAM, ARGV[2], ARGV[j])
    n = n + 1
  end
end
return n
""")
