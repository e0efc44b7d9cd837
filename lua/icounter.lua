-- requires: lib/int64.lua lib/marks.lua lib/validate.lua
-- icounter.lua: one atomic step on an instance-aware counter
-- (docs/api.md#instancecounterservice; layout and protocol in docs/instance_counters.md).
--
-- KEYS[1]  the counter hash:
--            "e"            the key's epoch, a positive int64 string (absent: no slice can exist)
--            "c"            the cumulative = the sum of the s:* values (absent = 0)
--            "s:<id>"       the slice of instance <id>: "<epoch>|<incarnation>|<value>"
--            "q:<dedup id>" the dedup mark of a daemon process: "<seq>" or "<seq>@<expiry ms>",
--                           seq the highest of its lax-flush seqs applied here, expiry (Redis
--                           time) when it may go (as counter.lua's s: marks)
-- ARGV     id, incarnation, dedup_id, n, (seq, kind, value) x n, op, comparator, operand, arg,
--          [op-specific...] [, sent_ms, bound_ms]
--            kind: "add" (lax delta: slice += value) | "set" (pending lax SetOnInstance:
--                  slice := value, whatever happened to the slice meanwhile)
--            op: get | inc | set | set_on_instance | del | del_on_instance    (no extra args)
--                reap    dead_id, dead_incarnation
--                restore epoch, value
--            comparator: "" | eq | ne | lt | le | gt | ge; only inc, set (on the cumulative) and
--            set_on_instance (on this instance's slice) take one, the other ops need "".
--            operand and arg are canonical int64s (arg is the delta or value; ignored by the
--            ops that take none).
--            sent_ms, bound_ms: as in counter.lua (the oldest carried entry's first send, Redis
--            time; entries later than sent_ms + bound_ms are refused: "stale"; the mark gets the
--            expiry now + 2 x bound_ms and expired q: marks of other processes are collected).
-- Returns  {status, cumulative, instance, previous_cumulative, previous_instance, applied,
--           epoch, seen, dropped, before [, now_ms, resolved]}: status "ok" | "overflow" |
--          "notint" | "corrupt" | "stale" (nothing written; resolved as in counter.lua; now_ms:
--          Redis TIME, with a bound only); int64s and the epoch
--          ("0" = the key has none) are decimal strings; applied (0/1) and dropped (lax
--          entries refused because they would overflow) are integers; seen is the highest lax
--          seq of dedup_id now applied here ("0" for none). "previous" is the state after the
--          lax entries, just before the op; "instance" is this id's slice as this incarnation
--          sees it (a slice left by an older incarnation of the id reads 0: it is the reaper's);
--          "before" is that slice before the lax entries (the daemon compares it with the value
--          it believes its slice holds to notice a reaper removed it: recovery).
--
-- Invariant kept by every call: every s:* field carries the current epoch and c is the sum of
-- their values. set/del move to a new epoch (max(e + 1, now µs), never backwards, never
-- repeating) and delete every s:*. A slice is written with the caller's incarnation, replacing
-- (c -= it) one left by an older incarnation of the same id, exactly what the reaper would do;
-- a straggler from an older incarnation adds to the newer one's slice. A slice whose epoch is
-- not the current one (should never exist) counts 0 and is removed when touched. Zero values
-- are not stored. A hash left with no c and no s:* (only e and/or q:*) expires after 24 h.
-- All checks run before the first write (Redis does not roll back); overflow anywhere in the op
-- changes nothing of the op. int64 helpers: lua/lib/int64.lua (fail, parse_seq:
-- lua/lib/validate.lua), prepended at build time.
--
-- Cost: this runs for every STRICT op and every flush. Redis runs the whole chunk each time, and
-- each table or closure it creates is an allocation for the Lua GC, so the common paths (inc, and
-- get carrying a few "add" entries) create none but the HSET argument list and the reply, keep
-- the int64 fast paths (lua/lib/int64.lua), and on a key holding a value make two Redis calls:
-- one HMGET, one HSET of every changed field (plus one TIME with a resend bound).

-- ---- validate all of ARGV first ----
local key = KEYS[1]
local id, inc_str, dedup = ARGV[1], ARGV[2], ARGV[3]
if id == nil or id == "" then return fail("empty instance id") end
local my_inc = parse_seq(inc_str)
if not my_inc then return fail("bad incarnation") end
if dedup == nil or dedup == "" then return fail("empty dedup id") end
local n = ARGV[4] == "0" and 0 or parse_seq(ARGV[4])
if not n then return fail("bad entry count") end
local argc = #ARGV
if argc < 3 * n + 8 then return fail("ARGV count does not match the entry count") end
-- Entry i is ARGV[3i + 2] (seq), ARGV[3i + 3] (kind), ARGV[3i + 4] (value).
local prev_seq = 0
for i = 1, n do
  local j = 3 * i
  local seq = parse_seq(ARGV[j + 2])
  if not seq then return fail("bad seq in entry " .. i) end
  if seq <= prev_seq then return fail("seqs not increasing at entry " .. i) end
  prev_seq = seq
  local kind = ARGV[j + 3]
  if kind ~= "add" and kind ~= "set" then return fail("bad kind in entry " .. i) end
  if not is_i64(ARGV[j + 4]) then return fail("bad value in entry " .. i) end
end
local base = 3 * n + 4
local op, cmp, operand, arg = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
-- extra: how many op-specific arguments follow; takes_cond: whether a comparator is allowed.
local extra, takes_cond = 0, false
if op == "inc" or op == "set" or op == "set_on_instance" then
  takes_cond = true
elseif op == "reap" or op == "restore" then
  extra = 2
elseif op ~= "get" and op ~= "del" and op ~= "del_on_instance" then
  return fail("unknown op")
end
local has_bound = argc == base + 6 + extra
if argc ~= base + 4 + extra and not has_bound then
  return fail("ARGV count does not match the op")
end
if cmp ~= "" then
  if not is_comparator(cmp) then return fail("unknown comparator") end
  if not takes_cond then return fail("op " .. op .. " takes no condition") end
end
if not is_i64(operand) then return fail("bad operand") end
if not is_i64(arg) then return fail("bad arg") end
local dead_id, dead_inc, restore_epoch, restore_value
if op == "reap" then
  dead_id, dead_inc = ARGV[base + 5], ARGV[base + 6]
  if dead_id == "" then return fail("empty dead instance id") end
  if not parse_seq(dead_inc) then return fail("bad dead incarnation") end
elseif op == "restore" then
  restore_epoch, restore_value = ARGV[base + 5], ARGV[base + 6]
  if not is_i64(restore_epoch) or string.byte(restore_epoch, 1) == 45 then
    return fail("bad restore epoch")
  end
  if not is_i64(restore_value) then return fail("bad restore value") end
end
local sent_ms, bound_ms, now
if has_bound then
  sent_ms, bound_ms = tonumber(ARGV[base + 5 + extra]), tonumber(ARGV[base + 6 + extra])
  if not sent_ms or sent_ms < 0 or not bound_ms or bound_ms <= 0 then
    return fail("bad sent_ms or bound_ms")
  end
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ---- read ----
-- Stored data we cannot read is left for a human: no write at all, not even the dedup mark, so
-- the lax entries are applied by a later retry once the data is fixed (reply "notint"; "corrupt"
-- for our dedup mark). Set without a condition and Del are that fix: they overwrite c, e, the
-- slices, the mark, or a key of another Redis type (what cannot be read counts 0; e restarts
-- from the time, as for a new key).
local own_field, mark_field = "s:" .. id, "q:" .. dedup
local dead_field = dead_id and dead_id ~= id and "s:" .. dead_id or nil
local repair = op == "del" or (op == "set" and cmp == "")
local got
if dead_field then
  got = redis.call("HMGET", key, "c", "e", mark_field, own_field, dead_field)
elseif repair then
  got = redis.pcall("HMGET", key, "c", "e", mark_field, own_field)
  if got.err then
    if string.sub(got.err, 1, 9) ~= "WRONGTYPE" then return got end
    redis.call("DEL", key)
    got = {false, false, false, false}
  end
else
  got = redis.call("HMGET", key, "c", "e", mark_field, own_field)
end
local stored_c, e, mark, own_raw, dead_raw = got[1], got[2], got[3], got[4], got[5]
local bad_e = false -- repair: e is unreadable, a new one is written below
-- e must be a positive int64 (up to 18 digits every one is in range).
if (stored_c and not is_i64(stored_c)) or
    (e and not (string.find(e, "^[1-9]%d*$") and (#e <= 18 or is_i64(e)))) then
  if not repair then return {"notint", "0", "0", "0", "0", 0, "0", "0", 0, "0"} end
  if stored_c and not is_i64(stored_c) then stored_c = "!" end -- not "0": c gets rewritten
  if e and not (string.find(e, "^[1-9]%d*$") and (#e <= 18 or is_i64(e))) then
    e, bad_e = nil, true
  end
end
local last, mark_seq = 0, mark
if mark then
  local at = string.find(mark, "@", 1, true)
  if at then mark_seq = string.sub(mark, 1, at - 1) end
  last = parse_seq(mark_seq)
  if not last or (at and not tonumber(string.sub(mark, at + 1))) then
    if not repair then return {"corrupt", "0", "0", "0", "0", 0, "0", "0", 0, "0"} end
    last, mark, mark_seq = 0, false, false
    redis.call("HDEL", key, mark_field)
  end
end
-- A slice "<epoch>|<incarnation>|<value>" is readable when its epoch is a positive int64, its
-- incarnation a seq and its value an int64. One of another epoch is garbage (counts 0) and is
-- removed unless rewritten.
-- own_val: what s:<id> contributes to c; own_inc/own_incs: its incarnation (nil = no slice).
local own_val, own_inc, own_incs, own_stale = "0", nil, nil, false
if own_raw then
  -- Usually the slice is "<e>|<the caller's incarnation>|<a non-zero value of at most 18
  -- characters>": the first pattern alone proves it readable (e and the incarnation are
  -- validated already, such a value is an int64). Anything else gets every check.
  local ep, incs, val = string.match(own_raw, "^([^|]*)|([^|]*)|(%-?[1-9]%d*)$")
  if ep and ep == e and incs == inc_str and #val <= 18 then
    own_val, own_inc, own_incs = val, my_inc, incs
  else
    ep, incs, val = string.match(own_raw, "^([^|]*)|([^|]*)|(.*)$")
    local inc = parse_seq(incs)
    if not (ep and inc and (ep == e or (is_i64(ep) and ep ~= "0" and string.byte(ep, 1) ~= 45))
            and is_i64(val)) then
      if not repair then return {"notint", "0", "0", "0", "0", 0, "0", "0", 0, "0"} end
      own_stale = true -- deleted with every slice below
    elseif ep == e then
      own_val, own_inc, own_incs = val, inc, incs
    else
      own_stale = true
    end
  end
end
local dead_val, dead_incs, dead_stale = nil, nil, false
if dead_field and dead_raw then
  local ep, incs, val = string.match(dead_raw, "^([^|]*)|([^|]*)|(.*)$")
  if not (ep and parse_seq(incs) and
          (ep == e or (is_i64(ep) and ep ~= "0" and string.byte(ep, 1) ~= 45)) and is_i64(val)) then
    return {"notint", "0", "0", "0", "0", 0, "0", "0", 0, "0"}
  end
  if ep == e then dead_val, dead_incs = val, incs else dead_stale = true end
end

-- ---- compute (in memory; nothing is written before the end) ----
-- This incarnation's view of its slice: one left by an older incarnation is not ours, it reads
-- 0 ("mine" below). A written slice carries the caller's incarnation, or a newer one it already
-- carries (a straggler of an older incarnation of a live daemon adds to the live incarnation's
-- slice). Writing the own slice moves c by the new value minus what the field counted so far (an
-- older incarnation's value included: it is replaced); on overflow nothing changes.
local c = stored_c or "0"
if c == "!" then c = "0" end
local own_dirty = false
local mine = own_inc ~= nil and own_inc >= my_inc

-- Entries past their bound are refused, nothing written (counter.lua says why): the caller
-- learns which were applied (seen) and, while their marks surely exist, that the rest never were.
if has_bound and n > 0 and now > sent_ms + bound_ms then
  local resolved = now <= sent_ms + bound_ms * 1.5 and 1 or 0
  local inst = mine and own_val or "0"
  return {"stale", c, inst, c, inst, 0, e or "0", mark_seq or "0", 0, inst, now, resolved}
end

-- Lax entries: a seq <= last was applied by an earlier call whose reply got lost, so a retried
-- flush never counts twice. An entry that would overflow is dropped, but its seq is recorded so
-- a retry does not try it again.
local before = mine and own_val or "0"
local dropped, top = 0, nil
for i = 1, n do
  local j = 3 * i
  local seq = ARGV[j + 2]
  if seq + 0 > last then -- a validated seq: the same number as parse_seq's
    local v = ARGV[j + 4] -- "set"
    if ARGV[j + 3] == "add" then v = i64_add(mine and own_val or "0", v) end -- nil on overflow
    local nc = v and i64_sub_add(c, own_val, v)
    if nc then
      c, own_val, own_dirty = nc, v, true
      if not mine then own_inc, own_incs, mine = my_inc, inc_str, true end
    else
      dropped = dropped + 1
    end
    top = seq
  end
end

local prev_c, prev_own = c, mine and own_val or "0"
local status, applied = "ok", 0
local delete_all, dead_delete = false, dead_stale
local new_e = e
-- Ops that write the own slice set `target` (nil: the op overflowed before the write).
local writes_own, target = false, nil

if op == "inc" then
  if cmp == "" or holds(cmp, i64_cmp(c, operand)) then
    writes_own, target = true, i64_add(prev_own, arg)
  end
elseif op == "set_on_instance" then
  if cmp == "" or holds(cmp, i64_cmp(prev_own, operand)) then writes_own, target = true, arg end
elseif op == "set" or op == "del" then
  if op == "del" or cmp == "" or holds(cmp, i64_cmp(c, operand)) then
    -- The new epoch: max(e + 1, now µs); overflow when e is the largest int64, which µs epochs
    -- never reach. A key without an epoch has no slice to outdate: it gets one only if a value
    -- is stored (below).
    local bumped = true
    if e then
      local next_e = i64_add(e, "1")
      if next_e then
        local t = redis.call("TIME")
        local now = t[1] .. string.format("%06d", tonumber(t[2]))
        new_e = i64_cmp(next_e, now) >= 0 and next_e or now
      else
        bumped = false
      end
    end
    if not bumped then
      status = "overflow"
    elseif op == "set" then
      delete_all, applied = true, 1
      c, own_val, own_dirty = arg, arg, true
      if not mine then own_inc, own_incs, mine = my_inc, inc_str, true end
    else
      delete_all, applied = true, 1
      c, own_val, own_inc, own_incs, own_dirty, mine = "0", "0", nil, nil, true, false
    end
  end
elseif op == "del_on_instance" then
  writes_own, target = true, "0"
elseif op == "reap" then
  if dead_id == id then
    if own_inc and own_incs == dead_inc then writes_own, target = true, "0" end
  elseif dead_val and dead_incs == dead_inc then
    local nc = i64_sub(c, dead_val)
    if nc then c, dead_delete, applied = nc, true, 1 else status = "overflow" end
  end
elseif op == "restore" then
  if e and e == restore_epoch then writes_own, target = true, restore_value end
end
if writes_own then
  local nc = target and i64_sub_add(c, own_val, target)
  if nc then
    c, own_val, own_dirty, applied = nc, target, true, 1
    if not mine then own_inc, own_incs, mine = my_inc, inc_str, true end
  else
    status = "overflow"
  end
end
-- On overflow nothing of the op was applied: c and own_* still hold the state after the entries.

-- The first stored value creates the epoch: max(1, now µs), so a key that expired and comes back
-- gets an epoch no old slice can match.
if not new_e and (c ~= "0" or own_val ~= "0" or bad_e) then
  local t = redis.call("TIME")
  new_e = t[1] .. string.format("%06d", tonumber(t[2]))
end

-- ---- write: every deletion in HDELs (slices first), then one HSET of every changed field ----
local function slices(key)
  local out = {}
  for _, f in ipairs(redis.call("HKEYS", key)) do
    if string.sub(f, 1, 2) == "s:" then out[#out + 1] = f end
  end
  return out
end

local dels = delete_all and slices(key) or nil
local sets, ns = {nil, nil, nil, nil, nil, nil, nil, nil}, 0 -- room for 4 fields, no regrowth
if own_dirty and own_val ~= "0" then
  sets[1], sets[2], ns = own_field, new_e .. "|" .. own_incs .. "|" .. own_val, 2
elseif own_raw and not delete_all and (own_dirty or own_stale) then
  dels = {own_field}
end
if dead_delete then
  dels = dels or {}
  dels[#dels + 1] = dead_field
end
if c ~= (stored_c or "0") then
  if c == "0" then
    dels = dels or {}
    dels[#dels + 1] = "c"
  else
    sets[ns + 1], sets[ns + 2], ns = "c", c, ns + 2
  end
end
if new_e ~= e then sets[ns + 1], sets[ns + 2], ns = "e", new_e, ns + 2 end
if top then
  sets[ns + 1], sets[ns + 2] = mark_field, has_bound and (top .. "@" .. (now + 2 * bound_ms)) or top
  ns = ns + 2
end
local wrote = ns > 0
if dels then
  for i = 1, #dels, 1000 do
    redis.call("HDEL", key, unpack(dels, i, math.min(i + 999, #dels)))
  end
  if #dels > 0 then wrote = true end
end
if ns > 0 then redis.call("HSET", key, unpack(sets, 1, ns)) end
-- Collect expired q: marks of other processes, as counter.lua does (first mark write here or
-- about once per bound, one HSCAN of ~100 fields); only q:* fields are ever matched.
if top and has_bound then
  collect_expired_marks(key, "q:*", mark_field, mark, now, bound_ms)
end
-- Only a hash without c and s:* may carry a TTL: it holds nothing but bookkeeping then (e and
-- q:*), which only needs to outlive retries, and a key never written again must not stay
-- forever (a re-created key gets a new time-based epoch, larger than the old one).
if wrote then
  if c ~= "0" or own_val ~= "0" or (not delete_all and #slices(key) > 0) then
    if not stored_c then redis.call("PERSIST", key) end
  else
    redis.call("PEXPIRE", key, MARK_TTL_MS)
  end
end

return {status, c, mine and own_val or "0", prev_c, prev_own, applied, new_e or "0",
        top or mark_seq or "0", dropped, before, now}
