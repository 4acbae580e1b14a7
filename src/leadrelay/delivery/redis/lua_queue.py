"""The queue scripts that take events in and hand them out: intake (ADD) and claim (with take-over
of dead consumers' events). Those that settle them: ``lua_settle``."""

from __future__ import annotations

from typing import Final

from leadrelay.delivery.redis.lua_common import SCHEMA_VERSION, script

ADD: Final = script("""
-- ARGV: P, now (received_at of the batch), then per item: key, state, reason, received_at,
-- lead, payload, notes, original ('' for none), nfields, field/value pairs.
-- Returns per item: its id, then 1 if this call stored it (new, or in place of an event Meta
-- never took), 0 if it was stored before.
local NEVER_SENT = {filtered = true, rejected = true, expired = true}
local function field_of(first, last, name)  -- an item's field, from its pairs in ARGV
  for j = first, last, 2 do
    if ARGV[j] == name then return ARGV[j + 1] end
  end
  return nil
end
-- store_rows.another_stage: another event of the CRM than the one stored under its key (by
-- the Facebook names when both have one, else by the user's event names) takes no place of it
-- (but for a payload in place of one never sent: Meta saw nothing)
local function another_stage(it, stored_name, stored_source)
  local name = field_of(it.fs, it.fe, 'n')
  if name and stored_name then return name ~= stored_name end
  return (field_of(it.fs, it.fe, 'se') or '') ~= (stored_source or '')
end
-- store_encoding.same_but_time: the payload Meta refused but for its event_time (the same
-- event read again, its time the clock's when it has none of its own)
local function same_but_time(body, refused)
  if body == refused then return true end
  if not body or not refused then return false end
  local pattern = '"event_time":%-?%d+'
  return string.gsub(body, pattern, '', 1) == string.gsub(refused, pattern, '', 1)
end
promote(ARGV[2])
local items, seen, fresh, queued = {}, {}, 0, 0
local i = 3
while i <= #ARGV do
  local i0 = i
  local it = {key = ARGV[i], state = ARGV[i + 1], at = ARGV[i + 3], lead = ARGV[i + 4], at_i = i}
  it.reason = ARGV[i + 2] ~= '' and ARGV[i + 2] or nil
  it.fs = i + 9
  i = it.fs + tonumber(ARGV[i + 8]) * 2
  it.fe = i - 1
  if it.key ~= '' and seen[it.key] then
    it.same = seen[it.key]  -- resent within the batch (RedisStore.add_new sends no such batch)
  else
    it.id = it.key ~= '' and redis.call('HGET', KEYMAP, it.key) or nil
    if not it.id then
      it.new = true
      fresh = fresh + 1
      if it.state == 'queued' then queued = queued + 1 end
    elseif it.state == 'queued' then
      -- a payload for a key stored as an event Meta never took takes its place, queued under
      -- its id: one never sent (filtered, refused by our rules), or one Meta refused when the
      -- payload differs from the one refused in more than its event_time (fixed at its source)
      local cur = redis.call('HMGET', EK(it.id), 's', 'a', 'r', 'ua', 'n', 'se')
      local never = NEVER_SENT[cur[1]] and tonumber(cur[2] or 0) == 0
      local refused = cur[1] == 'rejected' and string.sub(cur[3] or '', 1, 5) == 'meta_'
      if refused and another_stage(it, cur[5], cur[6]) then
        refused = false
      end
      if never or (refused and not same_but_time(ARGV[i0 + 5], redis.call('GET', PK(it.id)))) then
        it.again = cur
        queued = queued + 1
      end
    elseif NEVER_SENT[it.state] then
      -- a refusal takes the place of a stored event never sent when it says something else
      -- (a replay that still fails, for another reason): the store says the latest mapping
      local cur = redis.call('HMGET', EK(it.id), 's', 'a', 'r', 'ua', 'm', 'n', 'se')
      local never = NEVER_SENT[cur[1]] and tonumber(cur[2] or 0) == 0
        and not another_stage(it, cur[6], cur[7])
      local says = {cur[1], cur[3] or nil, cur[5] or nil}
      if never and (says[1] ~= it.state or says[2] ~= it.reason
          or says[3] ~= field_of(it.fs, it.fe, 'm')) then
        it.again = cur
      end
    end
    if it.key ~= '' then seen[it.key] = it end
  end
  items[#items + 1] = it
end
local next_id = fresh > 0 and redis.call('INCRBY', P .. 'seq', fresh) - fresh + 1
if fresh > 0 then  -- a Redis that lost its data meanwhile: status still finds the store
  redis.call('HSETNX', P .. 'meta', 'schema', '__SCHEMA__')
end
local next_order = queued > 0 and redis.call('INCRBY', ORDER, queued) - queued + 1
local blobs, keymap, ids = {}, {}, {}
for _, it in ipairs(items) do
  if it.new or it.again then
    local id = it.id
    if it.new then
      id = tostring(next_id)
      next_id = next_id + 1
      it.id = id
    else
      redis.call('DEL', EK(id))  -- its fields are the new event's, as for a new one
    end
    local ek = EK(id)
    if it.state == 'queued' then
      -- into the stream even behind an open event of its lead: claim parks it if need be,
      -- and events of one lead accepted together can then go out in one batch
      redis.call('ZADD', LK(it.lead), next_order, id)
      next_order = next_order + 1
      local sid = redis.call('XADD', STREAM, '*', 'i', id)
      redis.call('HSET', ek, 'sid', sid, unpack(ARGV, it.fs, it.fe))
    else
      redis.call('HSET', ek, unpack(ARGV, it.fs, it.fe))
    end
    local a = it.at_i
    for j, key in ipairs({PK(id), NK(id), OK(id)}) do
      if ARGV[a + 4 + j] ~= '' then
        blobs[#blobs + 1] = key
        blobs[#blobs + 1] = ARGV[a + 4 + j]
      elseif it.again then
        redis.call('DEL', key)
      end
    end
    if it.again then
      local was = it.again
      move(id, was[1], was[3], was[4], it.state, it.reason, it.at)
    else
      if it.key ~= '' then
        keymap[#keymap + 1] = it.key
        keymap[#keymap + 1] = id
      end
      move(id, nil, nil, nil, it.state, it.reason, it.at)
    end
  end
  ids[#ids + 1] = it.id or it.same.id
  -- 1: stored by this add; 0: found stored
  ids[#ids + 1] = (it.new or it.again) and 1 or 0
end
if #blobs > 0 then vcall({'MSET'}, blobs) end
if #keymap > 0 then vcall({'HSET', KEYMAP}, keymap) end
flush()
return ids
""").replace("__SCHEMA__", str(SCHEMA_VERSION))

CLAIM: Final = script("""
-- ARGV: P, group, consumer, now, limit, idle_ms, max_deliveries, dead-letter maxlen
local GROUP, ME, NOW, LIMIT = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local MAXD, DLMAX = tonumber(ARGV[7]), ARGV[8]
local now = tonumber(NOW)
-- 'hd': hand-outs taken back by RELEASE (a worker restarted under the same name), which
-- re-adds the entry and so resets the stream's own count of deliveries
local FIELDS = {'s', 'sid', 'na', 'l', 'r', 'ua', 'k', 'se', 'n', 't', 'a', 'hd'}
local function ensure_group()
  redis.pcall('XGROUP', 'CREATE', STREAM, GROUP, '0', 'MKSTREAM')
end
promote(NOW)
local out, taken = {}, {}
-- About to be handed out for the n-th time, more than max_deliveries, without a result: set
-- aside as dead (poison).
local function poisoned(id, ek, cur, sid, n)
  if n <= MAXD then return false end
  local msg = 'handed out ' .. (n - 1) .. ' times without a result being recorded (the workers '
    .. 'that took it stopped or were killed); set aside so it cannot stop the others'
  redis.call('HDEL', ek, 'c', 'sc', 'ft', 'rs', 'sid', 'con', 'na', 'hd')
  redis.call('HSET', ek, 's', 'dead', 'r', 'poison', 'm', msg, 'ua', NOW)
  move(id, cur[1], cur[5], cur[6], 'dead', 'poison', NOW)
  drop_entry(sid)
  finish(id, cur[4], cur[1] == 'queued')
  dead_letter(id, cur[7], 'poison', msg, NOW, DLMAX)
  return true
end
local function take(id, ek, cur)
  if cur[1] ~= 'in_flight' then move(id, cur[1], cur[5], cur[6], 'in_flight', cur[5], cur[6]) end
  redis.call('HSET', ek, 's', 'in_flight', 'con', ME)
  taken[id] = true
  out[#out + 1] = {id, cur}
end

-- 1. entries consumers left unacknowledged for longer than idle_ms (they died)
local cursor = redis.call('GET', P .. 'reclaim') or '0-0'
local rc = redis.pcall('XAUTOCLAIM', STREAM, GROUP, ME, ARGV[6], cursor, 'COUNT', LIMIT)
if rc.err then
  ensure_group()
  rc = {'0-0', {}}
end
if rc[1] ~= cursor then redis.call('SET', P .. 'reclaim', rc[1]) end  -- idle polls write nothing
for _, e in ipairs(rc[2]) do
  local sid = e[1]
  local id = e[2] and e[2][2]
  local ek = id and EK(id)
  local cur = id and redis.call('HMGET', ek, unpack(FIELDS)) or {}
  if cur[1] ~= 'in_flight' or cur[2] ~= sid then
    drop_entry(sid)
  else
    local n = redis.call('XPENDING', STREAM, GROUP, sid, sid, 1)[1][4]
    if poisoned(id, ek, cur, sid, n + tonumber(cur[12] or 0)) then
      -- set aside
    elseif may_go(id, cur[4], taken) then
      take(id, ek, cur)
    else  -- an earlier event of its lead is held elsewhere: wait behind it
      drop_entry(sid)
      redis.call('HDEL', ek, 'sid', 'con')
      redis.call('HSET', ek, 's', 'queued', 'h', '1')
      move(id, 'in_flight', cur[5], cur[6], 'queued', cur[5], cur[6])
    end
  end
end

-- 2. new entries; not due yet -> delayed, behind an open event of its lead -> parked
local budget = LIMIT * 4 + 100
while #out < LIMIT and budget > 0 do
  local args = {'XREADGROUP', 'GROUP', GROUP, ME, 'COUNT', LIMIT - #out, 'STREAMS', STREAM, '>'}
  local res = redis.pcall(unpack(args))
  if type(res) == 'table' and res.err then
    ensure_group()
    res = redis.call(unpack(args))
  end
  if not res then break end
  local entries = res[1][2]
  if #entries == 0 then break end
  budget = budget - #entries
  for _, e in ipairs(entries) do
    local sid, id = e[1], e[2][2]
    local ek = EK(id)
    local cur = redis.call('HMGET', ek, unpack(FIELDS))
    if cur[1] ~= 'queued' or cur[2] ~= sid then
      drop_entry(sid)
    elseif tonumber(cur[3]) > now then
      drop_entry(sid)
      redis.call('HDEL', ek, 'sid')
      redis.call('ZADD', DELAYED, cur[3], id)
    elseif not may_go(id, cur[4], taken) then
      drop_entry(sid)
      redis.call('HDEL', ek, 'sid')
      redis.call('HSET', ek, 'h', '1')
    elseif not (cur[12] and poisoned(id, ek, cur, sid, 1 + tonumber(cur[12]))) then
      take(id, ek, cur)
    end
  end
end
drop_entries(GROUP)
flush()
local blobs = {}
for _, o in ipairs(out) do
  blobs[#blobs + 1] = PK(o[1])
  blobs[#blobs + 1] = NK(o[1])
end
local got = #blobs > 0 and redis.call('MGET', unpack(blobs)) or {}
local rows = {}
for j, o in ipairs(out) do
  local c = o[2]
  rows[j] = {o[1], c[7], c[8], c[9], c[4], c[10], c[11], got[2 * j - 1], got[2 * j]}
end
return rows
""")
