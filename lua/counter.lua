-- requires: lib/int64.lua lib/marks.lua lib/validate.lua
-- counter.lua: one atomic step on a plain counter (docs/api.md#counterservice; exactly-once
-- flush: docs/architecture.md).
--
-- KEYS[1]  a hash: "v"            the value, a canonical int64 decimal string (absent = 0)
--                  "s:<instance>" the dedup mark of a daemon process: "<seq>" or
--                                 "<seq>@<expiry ms>", seq the highest of its lax-flush seqs
--                                 already applied here, expiry (Redis time) when it may go
-- ARGV     instance, n, seq_1, delta_1, ..., seq_n, delta_n, op, comparator, operand, arg
--          [, sent_ms, bound_ms]
--          op: flush | get | inc | set | del;  comparator: "" | eq | ne | lt | le | gt | ge
--          sent_ms: Redis time (the caller's lower estimate) when the oldest carried entry was
--          first sent; bound_ms: how long after that the caller's entries may be applied. With
--          them, entries arriving later are refused ("stale") and the mark is written with the
--          expiry now + 2 × bound_ms (docs/design.md, "Dedup marks").
-- Returns  {status, cur, prev, applied, dropped, seen, now_ms, resolved}, status "ok" |
--          "overflow" | "notint" | "corrupt" | "stale" ("notint"/"corrupt": a value or our mark
--          that is not what we write, only the first six elements); cur and prev are decimal
--          strings, applied (0/1) and dropped are integers, seen is the highest seq of this
--          instance now applied here (decimal string, "0" for none): the daemon uses it to know
--          which of its deltas a value already contains. now_ms is Redis TIME in ms (the daemon's clock estimate). "stale":
--          nothing was written; resolved = 1 when seen is still authoritative (every carried
--          entry above it was never applied and never will be), 0 when its mark may be gone.
--
-- The int64-on-strings helpers (is_i64, i64_add, i64_cmp, is_comparator, holds, MARK_TTL_MS,
-- ...) come from lua/lib/int64.lua, fail and parse_seq from lua/lib/validate.lua, prepended to
-- this file when it is embedded (the "requires" line): values never become Lua numbers (exact
-- only up to 2^53). Errors are raised before the first write: Redis does not roll back.

local OPS = {flush = true, get = true, inc = true, set = true, del = true}

-- Validate all of ARGV first.
local key, instance = KEYS[1], ARGV[1]
if instance == nil or instance == "" then return fail("empty instance id") end
local n = ARGV[2] == "0" and 0 or parse_seq(ARGV[2])
if not n then return fail("bad entry count") end
local has_bound = #ARGV == 2 * n + 8
if #ARGV ~= 2 * n + 6 and not has_bound then
  return fail("ARGV count does not match the entry count")
end
local seqs, seq_strs, deltas = {}, {}, {}
for i = 1, n do
  local s, d = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  seqs[i] = parse_seq(s)
  if not seqs[i] then return fail("bad seq in entry " .. i) end
  if i > 1 and seqs[i] <= seqs[i - 1] then return fail("seqs not increasing at entry " .. i) end
  if not is_i64(d) then return fail("bad delta in entry " .. i) end
  seq_strs[i], deltas[i] = s, d
end
local op, cmp, operand, arg = ARGV[3 + 2 * n], ARGV[4 + 2 * n], ARGV[5 + 2 * n], ARGV[6 + 2 * n]
if not OPS[op] then return fail("unknown op") end
if not is_comparator(cmp) then return fail("unknown comparator") end
if not is_i64(operand) then return fail("bad operand") end
if not is_i64(arg) then return fail("bad arg") end
local sent_ms, bound_ms
if has_bound then
  sent_ms, bound_ms = tonumber(ARGV[7 + 2 * n]), tonumber(ARGV[8 + 2 * n])
  if not sent_ms or sent_ms < 0 or not bound_ms or bound_ms <= 0 then
    return fail("bad sent_ms or bound_ms")
  end
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A value we cannot read is left for a human: no write at all, not even the dedup mark, so the
-- lax entries are applied by a later retry once the value is fixed ("notint": a value that is
-- not an int64; "corrupt": our dedup mark is not a seq). Set without a condition and Del are
-- that fix: they overwrite the value, the mark, or a key of another Redis type (counted as 0).
local mark_field = "s:" .. instance
local repair = op == "del" or (op == "set" and cmp == "")
local fields
if repair then
  fields = redis.pcall("HMGET", key, "v", mark_field)
  if fields.err then
    if string.sub(fields.err, 1, 9) ~= "WRONGTYPE" then return fields end
    redis.call("DEL", key)
    fields = {false, false}
  end
else
  fields = redis.call("HMGET", key, "v", mark_field)
end
local stored, mark = fields[1], fields[2]
local broken = false -- repair: a value or mark that is overwritten below
if stored and not is_i64(stored) then
  if not repair then return {"notint", "0", "0", 0, 0, "0"} end
  stored, broken = "0", true
end
local last, mark_seq = 0, mark
if mark then
  local at = string.find(mark, "@", 1, true)
  if at then mark_seq = string.sub(mark, 1, at - 1) end
  last = parse_seq(mark_seq)
  if not last or (at and not tonumber(string.sub(mark, at + 1))) then
    if not repair then return {"corrupt", "0", "0", 0, 0, "0"} end
    last, mark, mark_seq, broken = 0, false, false, true
    redis.call("HDEL", key, mark_field)
  end
end
-- Entries past their bound are refused: a mark older than 2 × bound may be gone, so a late
-- resend could count twice. The caller learns which of them were applied (seen) and, while the
-- marks of applied entries surely still exist (1.5 × bound after sent_ms), that the rest never
-- were: it re-sends them under new seqs.
if has_bound and n > 0 and now > sent_ms + bound_ms then
  local resolved = now <= sent_ms + bound_ms * 1.5 and 1 or 0
  return {"stale", stored or "0", stored or "0", 0, 0, mark_seq or "0", now, resolved}
end

-- Lax entries: a seq <= last was applied by an earlier call whose reply got lost, so a retried
-- flush never counts twice. An entry that would overflow is dropped (other daemons' writes
-- moved the value), but its seq is still recorded so a retry does not try it again.
local before = stored or "0"
local cur, dropped, top = before, 0, nil
for i = 1, n do
  if seqs[i] > last then
    local nv = i64_add(cur, deltas[i])
    if nv then cur = nv else dropped = dropped + 1 end
    top = seq_strs[i]
  end
end

local prev, status, applied = cur, "ok", 0
if op == "inc" or op == "set" then
  if cmp == "" or holds(cmp, i64_cmp(cur, operand)) then
    local nv = op == "set" and arg or i64_add(cur, arg)
    if nv then cur, applied = nv, 1 else status = "overflow" end
  end
elseif op == "del" then
  cur, applied = "0", 1
end

-- One HSET for the mark and the value (a flush writes both): fewer calls per script.
local writes = {}
if top then
  writes[1], writes[2] = mark_field, has_bound and (top .. "@" .. (now + 2 * bound_ms)) or top
end
local has_v = stored ~= false
if op == "del" then
  redis.call("HDEL", key, "v")
  has_v = false
elseif cur ~= before or broken then
  writes[#writes + 1], writes[#writes + 2] = "v", cur
  has_v = true
end
if #writes > 0 then redis.call("HSET", key, unpack(writes)) end
-- Only a hash without a value can carry a TTL (see below): clear it when a value arrives.
if has_v and (not stored or broken) then redis.call("PERSIST", key) end
-- Without a value the hash only holds dedup marks: let them vanish by themselves. They only
-- need to outlive a flush retry, and a key that is never written again must not stay forever.
if (top or op == "del") and not has_v then redis.call("PEXPIRE", key, MARK_TTL_MS) end

-- Collect expired marks of other processes (gone, or idle on this key). Only when this process
-- writes its mark for the first time here or about once per bound, and at most ~100 fields:
-- bounded work on a hot key. Marks without an expiry (older daemons) are left alone.
if top and has_bound then
  collect_expired_marks(key, "s:*", mark_field, mark, now, bound_ms)
end

return {status, cur, prev, applied, dropped, top or mark_seq or "0", now}
