-- ratelimit.lua: one atomic step of the REDIS rate limiter (product.md §4.3; the semantics and
-- the layout are explained in docs/rate_limiting.md, section REDIS).
--
-- KEYS[1]  dk:{TTTTTTTT}:r:<a|s>:<namespace>:<key>, a HASH, one per (namespace, key, strategy):
--            b:<ts>  units observed in the bucket opened at <ts> (ms of Redis TIME)
--            x:<ts>  declined units of that bucket (SUPPRESSED only; absent = 0)
--            t       sum of the live b:* (ABSOLUTE: used units; SUPPRESSED: observed units)
--            d       sum of the live x:* (SUPPRESSED only)
--            o       timestamp of the oldest bucket (every other bucket is younger)
--            n       timestamp of the bucket new units join (the last one opened)
--            r       rate of the last Inc (SUPPRESSED only: Get computes its factor with it)
--            f, ft   cached suppression factor and the time it was computed (SUPPRESSED only)
--            fk      "<soft>:<hard>", the limits the cached factor was computed for
-- ARGV     op ("inc" | "get"), strategy ("a" | "s"), window_ms, bucket_ms, hard_limit_factor,
--          cache_ms; inc adds rate_per_second, count, random (in [0, 1), drawn by the daemon)
-- Returns  inc: {status, decision, retry_after_ms, remaining_after_waiting, factor, allowed, now}
--               status "ok", or "range" when the observed units of the key would reach 2^53
--               (nothing written); decision "allowed" | "rejected" | "suppressed"; factor is a
--               string (Redis truncates Lua numbers in replies); allowed 0/1; now = Redis ms.
--          get: {status, total, declined, factor, now}
--
-- Units are Lua numbers (doubles), so they are kept below 2^53 where every integer is exact: a
-- count must be in [1, 2^53), a capacity is capped at 2^53 - 1 (ABSOLUTE usage never exceeds
-- it), and a SUPPRESSED request that would push the observed units to 2^53 is refused.
--
-- Every check runs before the first write (Redis does not roll back), and every write ends
-- with PEXPIRE window + bucket: the newest bucket is at most `now`, so when the key expires no
-- live bucket is lost, and an idle key disappears by itself (no cleanup scan).
-- fail() and parse_seq() come from lua/lib/int64.lua, prepended when embedded.

local TWO_53 = 9007199254740992
local MAX_UNITS = TWO_53 - 1

-- A finite decimal number (digits, '.', exponent): no "inf", "nan", hex or spaces.
local function parse_float(s)
  if type(s) ~= "string" or #s > 40 or not string.find(s, "^[-+]?[0-9.]+[eE]?[-+]?[0-9]*$") then
    return nil
  end
  local x = tonumber(s)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end

-- Integers travel as "%d" text: redis.call would format a Lua number with 14 digits only.
local function int(x) return string.format("%d", x) end

local function capped_floor(x)
  if x >= MAX_UNITS then return MAX_UNITS end
  return math.floor(x)
end

-- ---------------------------------------------------------------- validation (no writes)

local key = KEYS[1]
if #KEYS ~= 1 then return fail("exactly one key expected") end
local op, strategy = ARGV[1], ARGV[2]
if op ~= "inc" and op ~= "get" then return fail("unknown op") end
if strategy ~= "a" and strategy ~= "s" then return fail("unknown strategy") end
if not string.find(key, ":r:" .. strategy .. ":", 1, true) then
  return fail("key does not belong to strategy " .. strategy)
end
if #ARGV ~= (op == "inc" and 9 or 6) then return fail("wrong number of arguments") end
local window, bucket = parse_seq(ARGV[3]), parse_seq(ARGV[4])
if not window then return fail("window_ms must be an integer >= 1") end
if not bucket or bucket > window then return fail("bucket_ms must be an integer in [1, window_ms]") end
local hlf = parse_float(ARGV[5])
if not hlf or hlf < 1 then return fail("hard_limit_factor must be finite and >= 1") end
local cache_ms = parse_seq(ARGV[6])
if not cache_ms then return fail("cache_ms must be an integer >= 1") end
local rate_str, rate, count, random = ARGV[7], nil, nil, nil
if op == "inc" then
  rate = parse_float(rate_str)
  if not rate or rate <= 0 then return fail("rate must be finite and > 0") end
  count = parse_seq(ARGV[8])
  if not count then return fail("count must be an integer in [1, 2^53)") end
  random = parse_float(ARGV[9])
  if not random or random < 0 or random >= 1 then return fail("random must be in [0, 1)") end
end
local suppressed = strategy == "s"
local window_s = window / 1000

local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Limits of a rate, computed in the order of trypema §1.2 (docs/rate_limiting.md).
local function limits(r)
  local hard_raw = r * hlf * window_s
  return capped_floor(hard_raw / hlf), capped_floor(hard_raw) -- soft, hard
end

-- ---------------------------------------------------------------- state

local h = redis.call("HMGET", key, "t", "d", "o", "n", "r", "f", "ft", "fk")
local total, declined = tonumber(h[1]) or 0, tonumber(h[2]) or 0
local oldest, newest = tonumber(h[3]), tonumber(h[4])
local last_rate, cached_f, cached_ft, cached_fk = h[5], tonumber(h[6]), tonumber(h[7]), h[8]

-- All buckets, read when the fast fields cannot answer: something expired (or the fields are
-- not what this script writes), the factor needs the last second, or Get. Fills `live`
-- (ts -> {c, x}) and `dead` (fields to delete) and recomputes the totals from the buckets.
local live, dead, scanned = nil, {}, false
local function scan()
  scanned, live = true, {}
  local all = redis.call("HGETALL", key)
  for i = 1, #all, 2 do
    local f = all[i]
    local kind = string.sub(f, 1, 2)
    if kind == "b:" or kind == "x:" then
      local ts, v = tonumber(string.sub(f, 3)), tonumber(all[i + 1])
      if not ts or not v or now - ts >= window then
        dead[#dead + 1] = f
      else
        local b = live[ts]
        if not b then
          b = {c = 0, x = 0}
          live[ts] = b
        end
        if kind == "b:" then b.c = v else b.x = v end
      end
    end
  end
  total, declined, oldest = 0, 0, nil
  local newest_live, max_ts = false, nil
  for ts, b in pairs(live) do
    total, declined = total + b.c, declined + b.x
    if not oldest or ts < oldest then oldest = ts end
    if not max_ts or ts > max_ts then max_ts = ts end
    if ts == newest then newest_live = true end
  end
  -- Keep the bucket being filled while it lives (after Redis' clock stepped back it is not the
  -- largest timestamp, and opening a bucket per request until the clock catches up would
  -- break the bound on buckets); else the youngest one.
  if not newest_live then newest = max_ts end
end

-- Scan when the oldest bucket expired, or when the fields are not what this script writes.
local malformed = false
for i = 1, 4 do
  if h[i] and not tonumber(h[i]) then malformed = true end
end
if malformed or (oldest and now - oldest >= window) or (total > 0 and not (oldest and newest))
    or total < 0 or declined < 0 or declined > total then
  scan()
end

-- Suppression factor of the state before this request (trypema §3.3, with the hard-limit
-- check on accepted units; docs/rate_limiting.md). The deterministic cases are cheap and always
-- current; only the formula is cached (in f, ft, fk: fresh while 0 <= now - ft < cache_ms, for
-- the same limits, and while no bucket expired). Returns the factor and whether the formula
-- was computed now (the caller caches it).
local function limits_key(soft, hard) return int(soft) .. ":" .. int(hard) end
local function factor_of(soft, hard)
  if total <= 0 then return 0, false end
  local accepted = total - declined
  if accepted >= hard then return 1, false end
  if accepted < soft then return 0, false end
  if cached_f and cached_ft and #dead == 0 and cached_fk == limits_key(soft, hard) and
      now >= cached_ft and now - cached_ft < cache_ms and cached_f >= 0 and cached_f <= 1 then
    return cached_f, false
  end
  if not scanned then scan() end
  local last_second = 0
  for ts, b in pairs(live) do
    if now - ts <= 1000 then last_second = last_second + b.c end
  end
  local perceived = math.max(total / window_s, last_second)
  if perceived <= 0 then return (soft == 0 and 1 or 0), true end
  local f = 1 - (soft / window_s) / perceived
  if f < 0 then f = 0 elseif f > 1 then f = 1 end
  return f, true
end

-- ---------------------------------------------------------------- get (read only)

if op == "get" then
  if not scanned then scan() end
  if not suppressed then return {"ok", total, 0, "0", now} end
  local f = 0
  local r = total > 0 and last_rate and parse_float(last_rate)
  if r and r > 0 then f = factor_of(limits(r)) end
  return {"ok", total, declined, string.format("%.17g", f), now}
end

-- ---------------------------------------------------------------- inc

-- Writes the state back: the totals, the bucket fields touched (`bump`: ts -> {c, x} deltas),
-- `extra` fields, and the expiry. A key left without buckets is deleted.
local function persist(bump, extra)
  for i = 1, #dead, 1000 do
    redis.call("HDEL", key, unpack(dead, i, math.min(i + 999, #dead)))
  end
  if total == 0 and not bump then
    if #dead > 0 or h[1] then redis.call("DEL", key) end
    return
  end
  local fields = {"t", int(total), "o", int(oldest), "n", int(newest)}
  if suppressed then
    fields[#fields + 1], fields[#fields + 2] = "d", int(declined)
  end
  for _, kv in ipairs(extra or {}) do fields[#fields + 1] = kv end
  redis.call("HSET", key, unpack(fields))
  if bump then
    redis.call("HINCRBY", key, "b:" .. int(bump.ts), int(bump.c))
    if bump.x > 0 then redis.call("HINCRBY", key, "x:" .. int(bump.ts), int(bump.x)) end
  end
  redis.call("PEXPIRE", key, int(window + bucket))
end

-- Records `count` observed units (`declined_units` of them declined) in the newest bucket when
-- 0 <= now - newest <= bucket, else in a new bucket stamped now.
local function record(declined_units, extra)
  local ts = newest
  if not ts or now - ts < 0 or now - ts > bucket then
    ts, newest = now, now
    if not oldest or now < oldest then oldest = now end
  end
  total, declined = total + count, declined + declined_units
  persist({ts = ts, c = count, x = declined_units}, extra)
end

local function oldest_count()
  if not oldest then return 0 end
  if scanned then return live[oldest] and live[oldest].c or 0 end
  return tonumber(redis.call("HGET", key, "b:" .. int(oldest))) or 0
end

if not suppressed then
  local capacity = capped_floor(rate * window_s)
  if count > capacity then
    if #dead > 0 then persist(nil) end
    return {"ok", "rejected", 0, 0, "0", 0, now}
  end
  if total + count <= capacity then
    record(0)
    return {"ok", "allowed", 0, 0, "0", 1, now}
  end
  local retry = oldest and math.max(0, window - (now - oldest)) or 0
  local remaining = oldest_count()
  if #dead > 0 then persist(nil) end
  return {"ok", "rejected", retry, remaining, "0", 0, now}
end

if total + count >= TWO_53 then return {"range", "suppressed", 0, 0, "1", 0, now} end
local soft, hard = limits(rate)
local extra = {"r", rate_str}
local forecast = total - declined + count
local decision, factor, admitted = "suppressed", 1, false
if forecast <= soft then
  decision, factor, admitted = "allowed", 0, true
elseif forecast <= hard then
  local computed
  factor, computed = factor_of(soft, hard)
  if computed then
    extra[#extra + 1], extra[#extra + 2] = "f", string.format("%.17g", factor)
    extra[#extra + 1], extra[#extra + 2] = "ft", int(now)
    extra[#extra + 1], extra[#extra + 2] = "fk", limits_key(soft, hard)
  end
  admitted = factor <= 0 or (factor < 1 and random < 1 - factor)
end
-- Forget a factor computed before buckets expired (it described another window).
if #dead > 0 and #extra == 2 then redis.call("HDEL", key, "f", "ft", "fk") end
record(admitted and 0 or count, extra)
return {"ok", decision, 0, 0, string.format("%.17g", factor), admitted and 1 or 0, now}
