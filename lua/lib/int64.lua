-- lib/int64.lua: int64 arithmetic on decimal strings, for the scripts that declare
-- "-- requires: lib/int64.lua" (counter, icounter, ratelimit_hybrid). At build time each
-- lua/*.lua script is embedded with the lua/lib files it requires prepended (in the order it
-- lists them; CMakeLists.txt, cmake/compose_lua.cmake), so these locals are in scope in the
-- script's own code. Libraries only define locals: no Redis calls here.
--
-- Lua 5.1 numbers are doubles, exact only up to 2^53, so an int64 never becomes a Lua number
-- here: values stay decimal strings and are added in base-10^7 chunks (every intermediate sum
-- stays far below 2^53).
--
-- Cost: this file runs in full on every script call, and every closure, upvalue and table it
-- creates is an allocation the Lua GC then has to reclaim. So it defines few functions, and the
-- arbitrary-precision helpers (only needed for values of 10^15 and more, rare) are built on
-- their first use in a call. The fast paths let Lua coerce the strings in arithmetic ("12" + 1),
-- the same conversion as tonumber, in one step.

-- How long a hash that holds only bookkeeping (dedup marks, an epoch) lives after its last write.
local MARK_TTL_MS = 86400000

-- The arbitrary-precision helpers, built by bignum() on first use.
local big

local function bignum()
  if big then return big end
  local BASE = 10000000
  local MAX_POS = "9223372036854775807" -- 2^63 - 1
  local MAX_NEG = "9223372036854775808" -- |-2^63|

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

  -- Exact a + b of canonical signed decimals of any length (no range check): for sums of
  -- several int64s whose intermediate results may leave the range while the final one does not.
  local function add(a, b)
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
    return (neg and "-" or "") .. mag
  end

  big = {
    add = add,
    neg = function(a)
      if a == "0" then return "0" end
      local neg, mag = split(a)
      return neg and mag or "-" .. mag
    end,
    -- Whether a canonical decimal (any length) is within the int64 range.
    fits = function(v)
      local neg, mag = split(v)
      return mag_cmp(mag, neg and MAX_NEG or MAX_POS) <= 0
    end,
    -- Compares canonical decimals of any length.
    cmp = function(a, b)
      local na, ma = split(a)
      local nb, mb = split(b)
      if na ~= nb then return na and -1 or 1 end
      local c = mag_cmp(ma, mb)
      return na and -c or c
    end,
  }
  return big
end

-- Canonical int64: no '+', no leading zeros, no "-0", within range. Up to 18 characters every
-- such decimal is in range, so only longer ones need the comparison with the bounds.
local function is_i64(v)
  if type(v) ~= "string" then return false end
  if v == "0" then return true end
  local len = #v
  if len > 20 or not string.find(v, "^%-?[1-9]%d*$") then return false end
  return len <= 18 or bignum().fits(v)
end

-- Up to 15 characters ("-" included) a value is below 10^15 in magnitude: Lua's doubles hold
-- it, and the sum of two or three of them, exactly. Most counters live there, so take the cheap
-- path, written out in each function (a call costs more than the test).

local function i64_cmp(a, b)
  if #a <= 15 and #b <= 15 then
    local d = a - b -- exact
    return d < 0 and -1 or (d > 0 and 1 or 0)
  end
  return bignum().cmp(a, b)
end

-- a + b as a canonical string, or nil when the sum leaves the int64 range.
local function i64_add(a, b)
  if #a <= 15 and #b <= 15 then return string.format("%d", a + b) end
  local B = bignum()
  local sum = B.add(a, b)
  if B.fits(sum) then return sum end
  return nil
end

-- a - b as a canonical string, or nil when the difference leaves the int64 range.
local function i64_sub(a, b)
  if #a <= 15 and #b <= 15 then return string.format("%d", a - b) end
  local B = bignum()
  local d = B.add(a, B.neg(b))
  if B.fits(d) then return d end
  return nil
end

-- a - b + d as a canonical string, or nil when the result leaves the int64 range (intermediate
-- results may: a cumulative minus one slice plus its new value).
local function i64_sub_add(a, b, d)
  if #a <= 15 and #b <= 15 and #d <= 15 then
    return string.format("%d", a - b + d) -- < 3 * 10^15: exact
  end
  local B = bignum()
  local r = B.add(B.add(a, B.neg(b)), d)
  if B.fits(r) then return r end
  return nil
end

-- Comparators on the result of i64_cmp(value, operand); "" is no condition.
local function is_comparator(cmp)
  return cmp == "" or cmp == "eq" or cmp == "ne" or cmp == "lt" or cmp == "le" or cmp == "gt" or
           cmp == "ge"
end

-- Whether comparator `cmp` (valid) accepts `r` = i64_cmp(value, operand).
local function holds(cmp, r)
  if cmp == "" then return true end
  if cmp == "eq" then return r == 0 end
  if cmp == "ne" then return r ~= 0 end
  if cmp == "lt" then return r < 0 end
  if cmp == "le" then return r <= 0 end
  if cmp == "gt" then return r > 0 end
  return r >= 0 -- ge
end
