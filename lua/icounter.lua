-- icounter.lua: one atomic step on an instance-aware counter (product.md §3.1, §4.2; layout and
-- protocol in docs/instance_counters.md).
--
-- KEYS[1]  the counter hash:
--            "e"            the key's epoch, a positive int64 string (absent: no slice can exist)
--            "c"            the cumulative = the sum of the s:* values (absent = 0)
--            "s:<id>"       the slice of instance <id>: "<epoch>|<incarnation>|<value>"
--            "q:<dedup id>" the highest lax-flush seq of that daemon process applied here
-- ARGV     id, incarnation, dedup_id, n, (seq, kind, value) x n, op, comparator, operand, arg,
--          [op-specific...]
--            kind: "add" (lax delta: slice += value) | "set" (pending lax SetOnInstance:
--                  slice := value, whatever happened to the slice meanwhile)
--            op: get | inc | set | set_on_instance | del | del_on_instance    (no extra args)
--                reap    dead_id, dead_incarnation
--                restore epoch, value
--            comparator: "" | eq | ne | lt | le | gt | ge; only inc, set (on the cumulative) and
--            set_on_instance (on this instance's slice) take one, the other ops need "".
--            operand and arg are canonical int64s (arg is the delta or value; ignored by the
--            ops that take none).
-- Returns  {status, cumulative, instance, previous_cumulative, previous_instance, applied,
--           epoch, seen, dropped, before}: status "ok" | "overflow" | "notint"; int64s and the epoch
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
-- changes nothing of the op. int64 helpers: lua/lib/int64.lua, prepended at build time.

local OPS = {
  get = {extra = 0},
  inc = {extra = 0, cond = true},
  set = {extra = 0, cond = true},
  set_on_instance = {extra = 0, cond = true},
  del = {extra = 0},
  del_on_instance = {extra = 0},
  reap = {extra = 2},
  restore = {extra = 2},
}
local KINDS = {add = true, set = true}

-- A positive canonical int64 (an epoch).
local function is_epoch(v)
  return is_i64(v) and v ~= "0" and string.sub(v, 1, 1) ~= "-"
end

-- "<epoch>|<incarnation>|<value>" -> {ep, inc (number), incs, val}, or nil when corrupt.
local function parse_slice(raw)
  local ep, incs, val = string.match(raw, "^([^|]*)|([^|]*)|(.*)$")
  if not ep or not is_epoch(ep) or not is_i64(val) then return nil end
  local inc = parse_seq(incs)
  if not inc then return nil end
  return {ep = ep, inc = inc, incs = incs, val = val}
end

-- ---- validate all of ARGV first ----
local key = KEYS[1]
local id, inc_str, dedup = ARGV[1], ARGV[2], ARGV[3]
if id == nil or id == "" then return fail("empty instance id") end
local my_inc = parse_seq(inc_str)
if not my_inc then return fail("bad incarnation") end
if dedup == nil or dedup == "" then return fail("empty dedup id") end
local n = ARGV[4] == "0" and 0 or parse_seq(ARGV[4])
if not n then return fail("bad entry count") end
if #ARGV < 3 * n + 8 then return fail("ARGV count does not match the entry count") end
local seqs, seq_strs, kinds, values = {}, {}, {}, {}
for i = 1, n do
  local s, k, v = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  seqs[i] = parse_seq(s)
  if not seqs[i] then return fail("bad seq in entry " .. i) end
  if i > 1 and seqs[i] <= seqs[i - 1] then return fail("seqs not increasing at entry " .. i) end
  if not KINDS[k] then return fail("bad kind in entry " .. i) end
  if not is_i64(v) then return fail("bad value in entry " .. i) end
  seq_strs[i], kinds[i], values[i] = s, k, v
end
local base = 3 * n + 4
local op, cmp, operand, arg = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
local spec = OPS[op]
if not spec then return fail("unknown op") end
if #ARGV ~= base + 4 + spec.extra then return fail("ARGV count does not match the op") end
if not CONDITIONS[cmp] then return fail("unknown comparator") end
if cmp ~= "" and not spec.cond then return fail("op " .. op .. " takes no condition") end
if not is_i64(operand) then return fail("bad operand") end
if not is_i64(arg) then return fail("bad arg") end
local dead_id, dead_inc, restore_epoch, restore_value
if op == "reap" then
  dead_id, dead_inc = ARGV[base + 5], ARGV[base + 6]
  if dead_id == "" then return fail("empty dead instance id") end
  if not parse_seq(dead_inc) then return fail("bad dead incarnation") end
elseif op == "restore" then
  restore_epoch, restore_value = ARGV[base + 5], ARGV[base + 6]
  if not is_i64(restore_epoch) or string.sub(restore_epoch, 1, 1) == "-" then
    return fail("bad restore epoch")
  end
  if not is_i64(restore_value) then return fail("bad restore value") end
end

-- ---- read ----
-- Stored data we cannot read is left for a human: no write at all, not even the dedup mark, so
-- the lax entries are applied by a later retry once the data is fixed.
local NOTINT = {"notint", "0", "0", "0", "0", 0, "0", "0", 0, "0"}
local own_field, mark_field = "s:" .. id, "q:" .. dedup
local dead_field = dead_id and dead_id ~= id and "s:" .. dead_id or nil
local got = redis.call("HMGET", key, "c", "e", mark_field, own_field, dead_field or "e")
local stored_c, e, mark, own_raw, dead_raw = got[1], got[2], got[3], got[4], got[5]
if stored_c and not is_i64(stored_c) then return NOTINT end
if e and not is_epoch(e) then return NOTINT end
local last = 0
if mark then
  last = parse_seq(mark)
  if not last then return fail("corrupt " .. mark_field) end
end
local own_slice, dead_slice
if own_raw then
  own_slice = parse_slice(own_raw)
  if not own_slice then return NOTINT end
end
if dead_field and dead_raw then
  dead_slice = parse_slice(dead_raw)
  if not dead_slice then return NOTINT end
end
-- A slice of another epoch is garbage (counts 0) and is removed unless rewritten.
local own_stale = own_slice ~= nil and own_slice.ep ~= e
local dead_stale = dead_slice ~= nil and dead_slice.ep ~= e

-- ---- compute (in memory; nothing is written before the end) ----
local c = stored_c or "0"
-- own_val: what s:<id> contributes to c; own_inc/own_incs: its incarnation (nil = no slice).
local own_val, own_inc, own_incs = "0", nil, nil
if own_slice and not own_stale then
  own_val, own_inc, own_incs = own_slice.val, own_slice.inc, own_slice.incs
end
local own_dirty = false

-- This incarnation's view of its slice: one left by an older incarnation is not ours.
local function my_slice()
  if own_inc and own_inc >= my_inc then return own_val end
  return "0"
end

-- The slice is written with the caller's incarnation, or with a newer one it already carries
-- (a straggler of an older incarnation of a live daemon adds to the live incarnation's slice).
local function claim_own()
  if not (own_inc and own_inc >= my_inc) then own_inc, own_incs = my_inc, inc_str end
end

-- The own slice becomes `v`: c moves by v minus what the field counted so far (an older
-- incarnation's value included: it is replaced). False, changing nothing, on overflow.
local function write_own(v)
  if not v then return false end
  local nc = i64_sub_add(c, own_val, v)
  if not nc then return false end
  c, own_val, own_dirty = nc, v, true
  claim_own()
  return true
end

-- Lax entries: a seq <= last was applied by an earlier call whose reply got lost, so a retried
-- flush never counts twice. An entry that would overflow is dropped, but its seq is recorded so
-- a retry does not try it again.
local before = my_slice()
local dropped, top = 0, nil
for i = 1, n do
  if seqs[i] > last then
    local v = values[i] -- "set"
    if kinds[i] == "add" then v = i64_add(my_slice(), values[i]) end -- nil on overflow
    if not write_own(v) then dropped = dropped + 1 end
    top = seq_strs[i]
  end
end

local prev_c, prev_own = c, my_slice()
local status, applied = "ok", 0
local delete_all, dead_delete = false, dead_stale

local function holds(value) return CONDITIONS[cmp](i64_cmp(value, operand)) end

-- Redis TIME in µs, as a decimal string (read at most once).
local now
local function now_us()
  if not now then
    local t = redis.call("TIME")
    now = t[1] .. string.format("%06d", tonumber(t[2]))
  end
  return now
end

-- The epoch after a set/del: max(e + 1, now µs); nil (overflow) when e is the largest int64,
-- which µs epochs never reach. A key without an epoch has no slice to outdate: it gets one
-- only if a value is stored (below).
local new_e = e
local function bump_epoch()
  if not e then return true end
  local next_e = i64_add(e, "1")
  if not next_e then return false end
  new_e = i64_cmp(next_e, now_us()) >= 0 and next_e or now_us()
  return true
end

if op == "inc" then
  if holds(c) then
    if write_own(i64_add(prev_own, arg)) then applied = 1 else status = "overflow" end
  end
elseif op == "set" then
  if holds(c) then
    if bump_epoch() then
      delete_all, applied = true, 1
      c, own_val, own_dirty = arg, arg, true
      claim_own()
    else
      status = "overflow"
    end
  end
elseif op == "set_on_instance" then
  if holds(prev_own) then
    if write_own(arg) then applied = 1 else status = "overflow" end
  end
elseif op == "del" then
  if bump_epoch() then
    delete_all, applied = true, 1
    c, own_val, own_inc, own_incs, own_dirty = "0", "0", nil, nil, true
  else
    status = "overflow"
  end
elseif op == "del_on_instance" then
  if write_own("0") then applied = 1 else status = "overflow" end
elseif op == "reap" then
  if dead_id == id then
    if own_inc and own_incs == dead_inc then
      if write_own("0") then applied = 1 else status = "overflow" end
    end
  elseif dead_slice and not dead_stale and dead_slice.incs == dead_inc then
    local nc = i64_sub(c, dead_slice.val)
    if nc then c, dead_delete, applied = nc, true, 1 else status = "overflow" end
  end
elseif op == "restore" then
  if e and e == restore_epoch then
    if write_own(restore_value) then applied = 1 else status = "overflow" end
  end
end
-- On overflow nothing of the op was applied: c and own_* still hold the state after the entries.

-- The first stored value creates the epoch: max(1, now µs), so a key that expired and comes back
-- gets an epoch no old slice can match.
if not new_e and (c ~= "0" or own_val ~= "0") then new_e = now_us() end

-- ---- write ----
local wrote = false
local function hdel_all(fields)
  for i = 1, #fields, 1000 do
    redis.call("HDEL", key, unpack(fields, i, math.min(i + 999, #fields)))
  end
  if #fields > 0 then wrote = true end
end
local function slices()
  local out = {}
  for _, f in ipairs(redis.call("HKEYS", key)) do
    if string.sub(f, 1, 2) == "s:" then out[#out + 1] = f end
  end
  return out
end

if delete_all then hdel_all(slices()) end
if own_dirty and own_val ~= "0" then
  redis.call("HSET", key, own_field, new_e .. "|" .. own_incs .. "|" .. own_val)
  wrote = true
elseif own_raw and not delete_all and (own_dirty or own_stale) then
  redis.call("HDEL", key, own_field)
  wrote = true
end
if dead_delete then
  redis.call("HDEL", key, dead_field)
  wrote = true
end
if c ~= (stored_c or "0") then
  if c == "0" then redis.call("HDEL", key, "c") else redis.call("HSET", key, "c", c) end
  wrote = true
end
if new_e ~= e then
  redis.call("HSET", key, "e", new_e)
  wrote = true
end
if top then
  redis.call("HSET", key, mark_field, top)
  wrote = true
end
-- Only a hash without c and s:* may carry a TTL: it holds nothing but bookkeeping then (e and
-- q:*), which only needs to outlive retries, and a key never written again must not stay
-- forever (a re-created key gets a new time-based epoch, larger than the old one).
if wrote then
  if c ~= "0" or own_val ~= "0" or (not delete_all and #slices() > 0) then
    if not stored_c then redis.call("PERSIST", key) end
  else
    redis.call("PEXPIRE", key, MARK_TTL_MS)
  end
end

return {status, c, my_slice(), prev_c, prev_own, applied, new_e or "0", top or mark or "0",
        dropped, before}
