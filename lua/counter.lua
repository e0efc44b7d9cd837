-- counter.lua: one atomic step on a plain counter (product.md §4.1, §4.4, §5 exactly-once flush).
--
-- KEYS[1]  a hash: "v"            the value, a canonical int64 decimal string (absent = 0)
--                  "s:<instance>" the highest lax-flush seq of that daemon already applied here
-- ARGV     instance, n, seq_1, delta_1, ..., seq_n, delta_n, op, comparator, operand, arg
--          op: flush | get | inc | set | del;  comparator: "" | eq | ne | lt | le | gt | ge
-- Returns  {status, cur, prev, applied, dropped, seen}, status "ok" | "overflow" | "notint";
--          cur and prev are decimal strings, applied (0/1) and dropped are integers, seen is the
--          highest seq of this instance now applied here (decimal string, "0" for none): the
--          daemon uses it to know which of its deltas a value already contains.
--
-- Lua 5.1 numbers are doubles, exact only up to 2^53, so an int64 never becomes a Lua number
-- here: values stay decimal strings and are added in base-10^7 chunks (every intermediate sum
-- stays far below 2^53). Errors are raised before the first write: Redis does not roll back.

local BASE = 10000000
local MAX_POS = "9223372036854775807" -- 2^63 - 1
local MAX_NEG = "9223372036854775808" -- |-2^63|
local TWO_53 = 9007199254740992
local MARK_TTL_MS = 86400000

local function fail(what)
  return redis.error_reply("ERR distkit: " .. what)
end

-- "12345678901" -> {5678901, 1234}, least significant chunk first.
local function chunks(digits)
  local t = {}
  for i = #digits, 1, -7 do
    t[#t + 1] = tonumber(string.sub(digits, math.max(1, i - 6), i))
  end
  return t
end

local function unchunk(t)
  local n = #t
  while n > 1 and t[n] == 0 do n = n - 1 end
  local parts = {string.format("%d", t[n])}
  for i = n - 1, 1, -1 do parts[#parts + 1] = string.format("%07d", t[i]) end
  return table.concat(parts)
end

-- Compares magnitudes without leading zeros. Not with '<' on strings: Lua uses strcoll for that.
local function mag_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  for i = 1, #a, 7 do
    local x, y = tonumber(string.sub(a, i, i + 6)), tonumber(string.sub(b, i, i + 6))
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end

-- |a| + s * |b| with s = 1, or s = -1 when |a| >= |b|.
local function mag_add(a, b, s)
  local x, y, r, carry = chunks(a), chunks(b), {}, 0
  for i = 1, math.max(#x, #y) do
    local d = (x[i] or 0) + s * (y[i] or 0) + carry
    carry = 0
    if d >= BASE then
      d, carry = d - BASE, 1
    elseif d < 0 then
      d, carry = d + BASE, -1
    end
    r[i] = d
  end
  r[#r + 1] = carry -- 0 or 1
  return unchunk(r)
end

local function split(v) -- "-12" -> true, "12"
  if string.sub(v, 1, 1) == "-" then return true, string.sub(v, 2) end
  return false, v
end

-- Canonical int64: no '+', no leading zeros, no "-0", within range.
local function is_i64(v)
  if type(v) ~= "string" then return false end
  if v == "0" then return true end
  local neg, mag = split(v)
  if #mag > 19 or not string.find(mag, "^[1-9]%d*$") then return false end
  return mag_cmp(mag, neg and MAX_NEG or MAX_POS) <= 0
end

-- Up to 15 characters ("-" included) a value is below 10^15 in magnitude: Lua's doubles hold
-- it, and the sum of two of them, exactly. Most counters live there, so take the cheap path.
local function short(a, b) return #a <= 15 and #b <= 15 end

local function i64_cmp(a, b)
  if short(a, b) then
    local x, y = tonumber(a), tonumber(b)
    return x < y and -1 or (x > y and 1 or 0)
  end
  local na, ma = split(a)
  local nb, mb = split(b)
  if na ~= nb then return na and -1 or 1 end
  local c = mag_cmp(ma, mb)
  return na and -c or c
end

-- a + b as a canonical string, or nil when the sum leaves the int64 range.
local function i64_add(a, b)
  if short(a, b) then return string.format("%d", tonumber(a) + tonumber(b)) end
  local na, ma = split(a)
  local nb, mb = split(b)
  local neg, mag
  if na == nb then
    neg, mag = na, mag_add(ma, mb, 1)
  elseif mag_cmp(ma, mb) >= 0 then
    neg, mag = na, mag_add(ma, mb, -1)
  else
    neg, mag = nb, mag_add(mb, ma, -1)
  end
  if mag == "0" then return "0" end
  if mag_cmp(mag, neg and MAX_NEG or MAX_POS) > 0 then return nil end
  return (neg and "-" or "") .. mag
end

-- A seq (or entry count) is a canonical decimal in [1, 2^53), exact as a Lua number.
local function parse_seq(s)
  if type(s) ~= "string" or #s > 16 or not string.find(s, "^[1-9]%d*$") then return nil end
  local n = tonumber(s)
  if n >= TWO_53 then return nil end
  return n
end

local CONDITIONS = {
  [""] = function(c) return true end,
  eq = function(c) return c == 0 end,
  ne = function(c) return c ~= 0 end,
  lt = function(c) return c < 0 end,
  le = function(c) return c <= 0 end,
  gt = function(c) return c > 0 end,
  ge = function(c) return c >= 0 end,
}
local OPS = {flush = true, get = true, inc = true, set = true, del = true}

-- Validate all of ARGV first.
local key, instance = KEYS[1], ARGV[1]
if instance == nil or instance == "" then return fail("empty instance id") end
local n = ARGV[2] == "0" and 0 or parse_seq(ARGV[2])
if not n then return fail("bad entry count") end
if #ARGV ~= 2 * n + 6 then return fail("ARGV count does not match the entry count") end
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
if not CONDITIONS[cmp] then return fail("unknown comparator") end
if not is_i64(operand) then return fail("bad operand") end
if not is_i64(arg) then return fail("bad arg") end

-- A value we cannot read is left for a human: no write at all, not even the dedup mark, so the
-- lax entries are applied by a later retry once the value is fixed.
local mark_field = "s:" .. instance
local fields = redis.call("HMGET", key, "v", mark_field)
local stored, mark = fields[1], fields[2]
if stored and not is_i64(stored) then return {"notint", "0", "0", 0, 0, "0"} end
local last = 0
if mark then
  last = parse_seq(mark)
  if not last then return fail("corrupt " .. mark_field) end
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
  if cmp == "" or CONDITIONS[cmp](i64_cmp(cur, operand)) then
    local nv = op == "set" and arg or i64_add(cur, arg)
    if nv then cur, applied = nv, 1 else status = "overflow" end
  end
elseif op == "del" then
  cur, applied = "0", 1
end

if top then redis.call("HSET", key, mark_field, top) end
local has_v = stored ~= false
if op == "del" then
  redis.call("HDEL", key, "v")
  has_v = false
elseif cur ~= before then
  redis.call("HSET", key, "v", cur)
  -- Only a hash without a value can carry a TTL (see below): clear it when a value arrives.
  if not stored then redis.call("PERSIST", key) end
  has_v = true
end
-- Without a value the hash only holds dedup marks: let them vanish by themselves. They only
-- need to outlive a flush retry, and a key that is never written again must not stay forever.
if (top or op == "del") and not has_v then redis.call("PEXPIRE", key, MARK_TTL_MS) end

return {status, cur, prev, applied, dropped, top or mark or "0"}
