-- requires: lib/validate.lua
-- ratelimit.lua: one atomic step of the REDIS rate limiter (docs/api.md#rate-limiting; the
-- semantics and the layout are explained in docs/rate_limiting.md, section REDIS): one Inc or Get,
-- or k Incs of one key in one call (the daemon coalescing concurrent Incs of a hot key).
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
--          cache_ms; inc adds k >= 1 triples rate_per_second, count, random (in [0, 1), drawn
--          by the daemon), so #ARGV = 6 + 3k, k <= 1000 ("too many requests"); get has none.
-- Returns  inc, k = 1: {status, decision, retry_after_ms, remaining_after_waiting, factor,
--               allowed, now}: status "ok", or "range" when the observed units of the key would
--               reach 2^53 (nothing written); decision "allowed" | "rejected" | "suppressed";
--               factor is a string (Redis truncates Lua numbers in replies); allowed 0/1;
--               now = Redis ms.
--          inc, k > 1: an array of k such replies: request i's is the reply it would get, and
--               the hash (fields and TTL) is what is left, as if the k requests were k calls
--               in ARGV order at the same Redis TIME (read once). A bad triple anywhere is the
--               error a call with it alone gets, and nothing is written.
--          get: {status, total, declined, factor, now}
--
-- Units are Lua numbers (doubles), so they are kept below 2^53 where every integer is exact: a
-- count must be in [1, 2^53), a capacity is capped at 2^53 - 1 (ABSOLUTE usage never exceeds
-- it), and a SUPPRESSED request that would push the observed units to 2^53 is refused.
--
-- Every check runs before the first write (Redis does not roll back), and every write ends
-- with PEXPIRE window + bucket: the newest bucket is at most `now`, so when the key expires no
-- live bucket is lost, and an idle key disappears by itself (no cleanup scan).
-- fail() and parse_seq() come from lua/lib/validate.lua, prepended when embedded.
--
-- Cost: this runs for every REDIS Inc, and Redis runs the whole chunk each time: every closure
-- (an allocation per upvalue too), table and C call (tonumber, string.find, string.format:
-- 1-2k instructions each) counts, and so does every field a command looks up in a hot key's
-- hash (a listpack of ~200 entries, scanned linearly; an absent field scans all of it). So the
-- common request creates no closure with upvalues (the decision model's functions take their
-- inputs as arguments) and no table but the reply and Redis' own; ARGV is checked
-- by one pattern (the checks one by one run only when it fails, to name the bad argument); the
-- fast fields, when they hold the canonical integers this script writes ("clean"), are read by
-- arithmetic coercion and their text is reused; f, ft, fk are read only when the band needs the
-- cached factor; and a request joining the newest bucket makes five Redis calls: TIME, HMGET
-- t d o n (r), one write of the changed fields (HINCRBY t when t is the only one, else one
-- HSET), HINCRBY of the bucket, PEXPIRE. Integers are written as "%d" text or as text at hand
-- (ARGV's count, a stored field): how redis.call formats a Lua number differs between Redis
-- versions. All buckets (HGETALL) are read only when the fast fields cannot answer.
-- With k > 1 requests the call's own cost (~100k Redis instructions: the chunk, TIME, HMGET,
-- the writes, the reply's array) is paid once: each request adds its 3 ARGV strings, checks
-- made once per distinct rate and count text, a few dozen Lua operations on locals (the fields
-- and, after a scan, the live buckets are kept in Lua, and written once at the end: an HSET of
-- the changed fields, one HINCRBY per bucket touched, PEXPIRE), and its 7-element reply, which
-- Redis converts (~8k instructions). About 21-32k per request at k = 16-64 on a hot key
-- (28-38k in the band with a cached factor), against 100-170k for a call with one.

local TWO_53 = 9007199254740992
local MAX_UNITS = TWO_53 - 1
local HUGE = math.huge
local MAX_BATCH = 1000 -- requests per call at most
local find, format = string.find, string.format

-- ---------------------------------------------------------------- validation (no writes)

local key = KEYS[1]
if #KEYS ~= 1 then return fail("exactly one key expected") end
local op, strategy = ARGV[1], ARGV[2]
if op ~= "inc" and op ~= "get" then return fail("unknown op") end
if strategy ~= "a" and strategy ~= "s" then return fail("unknown strategy") end
local inc, suppressed = op == "inc", strategy == "s"
if not find(key, suppressed and ":r:s:" or ":r:a:", 1, true) then
  return fail("key does not belong to strategy " .. strategy)
end
-- inc: k >= 1 requests, ARGV 6 + 3k (k > 1: the multi-request mode below); get: ARGV 6.
local nargs = #ARGV
if inc then
  if nargs < 9 or nargs % 3 ~= 0 then return fail("wrong number of arguments") end
elseif nargs ~= 6 then
  return fail("wrong number of arguments")
end
local k = inc and (nargs - 6) / 3 or 1
if k > MAX_BATCH then return fail("too many requests") end
local window_arg, bucket_arg, hlf_arg, cache_arg = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local rate_arg, count_arg, random_arg = ARGV[7], ARGV[8], ARGV[9]

-- The common case in one pattern: integers canonical (as parse_seq wants them), the decimals
-- made of [0-9.eE+-] only (with that alphabet tonumber accepts exactly what parse_float's
-- pattern accepts, as strtod then has no spaces, hex, inf or nan to take). No argument holds a
-- ',', so the fields line up with the arguments.
local window, bucket, hlf, cache_ms, rate, count, random
if inc then
  if #window_arg <= 16 and #bucket_arg <= 16 and #cache_arg <= 16 and #count_arg <= 16 and
      #hlf_arg <= 40 and #rate_arg <= 40 and #random_arg <= 40 and
      find(window_arg .. "," .. bucket_arg .. "," .. cache_arg .. "," .. count_arg .. "," ..
             hlf_arg .. "," .. rate_arg .. "," .. random_arg,
           "^[1-9]%d*,[1-9]%d*,[1-9]%d*,[1-9]%d*,[0-9.eE+-]+,[0-9.eE+-]+,[0-9.eE+-]+$") then
    window, bucket, cache_ms, count = window_arg + 0, bucket_arg + 0, cache_arg + 0, count_arg + 0
    hlf = hlf_arg == "1" and 1 or tonumber(hlf_arg) -- "1": the default
    rate, random = tonumber(rate_arg), tonumber(random_arg)
  end
elseif #window_arg <= 16 and #bucket_arg <= 16 and #cache_arg <= 16 and #hlf_arg <= 40 and
    find(window_arg .. "," .. bucket_arg .. "," .. cache_arg .. "," .. hlf_arg,
         "^[1-9]%d*,[1-9]%d*,[1-9]%d*,[0-9.eE+-]+$") then
  window, bucket, cache_ms = window_arg + 0, bucket_arg + 0, cache_arg + 0
  hlf = tonumber(hlf_arg)
end

local valid = window and window < TWO_53 and bucket < TWO_53 and bucket <= window and
                cache_ms < TWO_53 and hlf and hlf >= 1 and hlf < HUGE and
                (not inc or (count < TWO_53 and rate and rate > 0 and rate < HUGE and random and
                             random >= 0 and random < 1))

-- k > 1: the other triples, each checked as the pattern above checks the first (no ',' can
-- shift anything here: each argument is checked alone); a bad one becomes the arguments the
-- checks below name, so the error is that of a call with it alone. A rate or count spelled as
-- the one before is not checked again, and a random "0.<digits>" that is below 1 as it stands
-- ("0.0" to "0.8...", or at most 16 decimals) is kept as text, converted if the band needs it.
local rates, counts, randoms
if valid and k > 1 then
  rates, counts, randoms = {rate}, {count}, {random}
  local argv, lr_arg, lr, lc_arg, lc = ARGV, rate_arg, rate, count_arg, count
  for i = 2, k do
    local r_arg, c_arg, u_arg = argv[3 * i + 4], argv[3 * i + 5], argv[3 * i + 6]
    local u
    if r_arg ~= lr_arg then
      lr_arg, lr = r_arg, #r_arg <= 40 and find(r_arg, "^[0-9.eE+-]+$") and tonumber(r_arg)
      if lr and not (lr > 0 and lr < HUGE) then lr = nil end
    end
    if c_arg ~= lc_arg then
      lc_arg, lc = c_arg, #c_arg <= 16 and find(c_arg, "^[1-9]%d*$") and c_arg + 0
      if lc and not (lc < TWO_53) then lc = nil end
    end
    if #u_arg <= 40 and find(u_arg, "^0%.[0-8]%d*$") or
        #u_arg <= 18 and find(u_arg, "^0%.%d+$") then
      u = u_arg -- [0, 0.9), or at most 16 decimals: below 1 once rounded
    else
      u = #u_arg <= 40 and find(u_arg, "^[0-9.eE+-]+$") and tonumber(u_arg)
      if u and not (u >= 0 and u < 1) then u = nil end
    end
    if not (lr and lc and u) then
      valid, rate_arg, count_arg, random_arg = false, r_arg, c_arg, u_arg
      break
    end
    rates[i], counts[i], randoms[i] = lr, lc, u
  end
end

-- A finite decimal number (digits, '.', exponent): no "inf", "nan", hex or spaces. Built only
-- off the common path: to name a bad argument, and for a SUPPRESSED Get's stored rate.
local parse_float
if not valid or (not inc and suppressed) then
  parse_float = function(s)
    if type(s) ~= "string" or #s > 40 or not find(s, "^[-+]?[0-9.]+[eE]?[-+]?[0-9]*$") then
      return nil
    end
    local x = tonumber(s)
    if x == nil or x ~= x or x == HUGE or x == -HUGE then return nil end
    return x
  end
end
if not valid then
  -- The checks one by one, in order, to name the first bad argument (every valid ARGV passes
  -- the pattern above, so this ends with an error).
  window, bucket = parse_seq(window_arg), parse_seq(bucket_arg)
  if not window then return fail("window_ms must be an integer >= 1") end
  if not bucket or bucket > window then
    return fail("bucket_ms must be an integer in [1, window_ms]")
  end
  hlf = parse_float(hlf_arg)
  if not hlf or hlf < 1 then return fail("hard_limit_factor must be finite and >= 1") end
  cache_ms = parse_seq(cache_arg)
  if not cache_ms then return fail("cache_ms must be an integer >= 1") end
  if inc then
    rate = parse_float(rate_arg)
    if not rate or rate <= 0 then return fail("rate must be finite and > 0") end
    count = parse_seq(count_arg)
    if not count then return fail("count must be an integer in [1, 2^53)") end
    random = parse_float(random_arg)
    if not random or random < 0 or random >= 1 then return fail("random must be in [0, 1)") end
  end
  if k > 1 then return fail("invalid request") end -- not reached: a bad triple fails above
end
local window_s = window / 1000

-- ---------------------------------------------------------------- the decision model
-- One definition each, used by the single request, the k requests and Get below. They take
-- what they need as arguments: a function without upvalues costs Redis little to build on
-- every call, unlike one that captures the script's locals.

-- Limits of a rate (docs/api.md#rate-limiting): soft = the capacity floor(rate × W_s) (ABSOLUTE's one
-- limit), hard = floor(soft × hlf), both capped at 2^53 - 1; as RateCapacity /
-- SuppressedLimitsFor in daemon/core/rate_window.cc.
local function limits(rate, window_s, hlf)
  local soft = rate * window_s
  soft = soft >= 9007199254740991 and 9007199254740991 or math.floor(soft)
  local hard = soft * hlf
  return soft, hard >= 9007199254740991 and 9007199254740991 or math.floor(hard)
end

-- SUPPRESSED, before the factor: forecast = accepted + count. Returns decision, factor_s,
-- factor, admitted and whether the request is in the band (the factor decides).
local function suppressed_decision(total, declined, count, soft, hard)
  local forecast = total - declined + count
  if forecast <= soft then return "allowed", "0", 0, true, false end
  return "suppressed", "1", 1, false, forecast <= hard
end

-- Suppression factor of a state (docs/api.md#rate-limiting; hard-limit check on accepted units,
-- docs/rate_limiting.md D3; rate_window.h's SuppressionFactorFromTotals), in two steps: the deterministic cases, cheap
-- and always current (no units → 0, accepted ≥ hard → 1, accepted < soft → 0; nil in the
-- band), then the formula, which needs the live buckets (`live`: ts -> units) and is cached
-- (in f, ft, fk: fresh while 0 <= now - ft < cache_ms, for the same limits, and while no
-- bucket expired; see `fresh`).
local function fixed_factor(total, declined, soft, hard)
  local accepted = total - declined
  if total <= 0 then return 0, "0" end
  if accepted >= hard then return 1, "1" end
  if accepted < soft then return 0, "0" end
  return nil
end

local function fresh(f, ft, fk_cached, fk, ndead, now, cache_ms)
  return f and ft and ndead == 0 and now >= ft and now - ft < cache_ms and f >= 0 and f <= 1 and
           fk_cached == fk
end

local function formula(live, total, soft, now, window_s)
  local last_second = 0
  for ts, c in pairs(live) do
    if now - ts <= 1000 then last_second = last_second + c end
  end
  local perceived = total / window_s
  if last_second > perceived then perceived = last_second end -- as math.max
  if perceived <= 0 then return soft == 0 and 1 or 0 end
  local f = 1 - (soft / window_s) / perceived
  if f < 0 then return 0 elseif f > 1 then return 1 end
  return f
end

local clock = redis.call("TIME")
local us = clock[2] + 0
local now = clock[1] * 1000 + (us - us % 1000) / 1000 -- ms; exact, no math.floor call

-- ---------------------------------------------------------------- state

-- Fields absent from a hash cost a scan of its listpack each (and a hot key holds ~100), so
-- an Inc reads f, ft, fk only when the factor needs them, and ABSOLUTE none of r, f, ft, fk.
local h
if not suppressed then
  h = redis.call("HMGET", key, "t", "d", "o", "n")
elseif inc then
  h = redis.call("HMGET", key, "t", "d", "o", "n", "r")
else
  h = redis.call("HMGET", key, "t", "d", "o", "n", "r", "f", "ft", "fk")
end
local t_s, d_s, o_s, n_s = h[1], h[2], h[3], h[4]
local total, declined, oldest, newest = 0, 0, nil, nil

-- "clean": no field, or t, o, n (and d for SUPPRESSED; none for ABSOLUTE) are canonical
-- integers below 10^15, exactly what this script writes: read by coercion, and the text of
-- those left unchanged is written back as it is.
local clean, malformed = false, false
if not (t_s or d_s or o_s or n_s) then
  clean = true
elseif t_s and o_s and n_s and #t_s <= 15 and #o_s <= 15 and #n_s <= 15 then
  if not suppressed then
    clean = not d_s and find(t_s .. ":" .. o_s .. ":" .. n_s, "^[1-9]%d*:[1-9]%d*:[1-9]%d*$")
  elseif d_s == "0" then
    clean = find(t_s .. ":" .. o_s .. ":" .. n_s, "^[1-9]%d*:[1-9]%d*:[1-9]%d*$")
  elseif d_s and #d_s <= 15 then
    clean = find(t_s .. ":" .. o_s .. ":" .. n_s .. ":" .. d_s,
                 "^[1-9]%d*:[1-9]%d*:[1-9]%d*:[1-9]%d*$")
  end
  if clean then
    total, declined, oldest, newest = t_s + 0, d_s and d_s + 0 or 0, o_s + 0, n_s + 0
  end
end
if not clean then
  local tn, dn = tonumber(t_s), tonumber(d_s)
  oldest, newest = tonumber(o_s), tonumber(n_s)
  total, declined = tn or 0, dn or 0
  malformed = (t_s and not tn) or (d_s and not dn) or (o_s and not oldest) or (n_s and not newest)
  -- tonumber takes "nan" and "inf" too: not numbers this script writes either (a NaN would
  -- make every comparison false and reach the reply as garbage). Rare: only off the clean path.
  if not malformed then
    for _, x in ipairs({total, declined, oldest or 0, newest or 0}) do
      if x ~= x or x == 1 / 0 or x == -1 / 0 then malformed = true end
    end
  end
end

-- All buckets are read (scan) when the fast fields cannot answer: something expired (or the
-- fields are not what this script writes), a Get, or the factor's formula (it needs the last
-- second). At most once per call.
local must_scan = malformed or (oldest and now - oldest >= window) or
                    (total > 0 and not (oldest and newest)) or total < 0 or declined < 0 or
                    declined > total or not inc

-- The first request's limits (a Get's come from the stored rate, below).
local soft, hard
if inc then soft, hard = limits(rate, window_s, hlf) end

-- Reads every field: fills `live` (ts -> units observed in the bucket), lists the fields to
-- delete (`dead`: expired, or not numbers) and recomputes the totals from the live buckets.
-- Keep the bucket being filled while it lives (after Redis' clock stepped back it is not the
-- largest timestamp, and opening a bucket per request until the clock catches up would break
-- the bound on buckets); else the youngest one. A function without upvalues, built only when a
-- scan may happen (always with k > 1). Also returns the declined units per bucket and whether
-- the hash is `odd` (for the multi-request mode).
local scan
local live, dead, ndead, scanned = nil, nil, 0, false
if must_scan or k > 1 or (suppressed and total - declined + count > soft and
                             total - declined + count <= hard) then
  scan = function(key, now, window, newest)
    local match, sub, tonumber = string.match, string.sub, tonumber
    local all = redis.call("HGETALL", key)
    local c_of, x_of, gone, ngone, odd = {}, {}, {}, 0, false
    for i = 1, #all, 2 do
      local f = all[i]
      -- "b:<digits>" / "x:<digits>" as this script writes them: one match, and the digits
      -- convert by coercion; any other name is read as before (tonumber takes "b:0123",
      -- "b:1.5", "b: 7", "b:0x10"...) and makes the hash `odd` (for the multi-request mode: two
      -- names may then stand for one bucket).
      local kind, ts = match(f, "^([bx]):([1-9]%d*)$")
      if kind then
        ts = ts + 0
      else
        kind = sub(f, 1, 2)
        if kind == "b:" or kind == "x:" then
          kind, ts, odd = sub(kind, 1, 1), tonumber(sub(f, 3)), true
        else
          kind = nil
        end
      end
      if kind then
        local v = tonumber(all[i + 1])
        if v and (v ~= v or v == 1 / 0 or v == -1 / 0) then v = nil end -- "nan", "inf"
        if not ts or not v or now - ts >= window then
          ngone = ngone + 1
          gone[ngone] = f
        elseif kind == "b" then
          c_of[ts] = v
        else
          if not c_of[ts] then c_of[ts] = 0 end
          x_of[ts] = v
        end
      end
    end
    local sum, sum_x, min_ts, max_ts, newest_live = 0, 0, nil, nil, false
    for ts, c in pairs(c_of) do
      sum, sum_x = sum + c, sum_x + (x_of[ts] or 0)
      if not min_ts or ts < min_ts then min_ts = ts end
      if not max_ts or ts > max_ts then max_ts = ts end
      if ts == newest then newest_live = true end
    end
    if not newest_live then newest = max_ts end
    return c_of, gone, ngone, sum, sum_x, min_ts, newest, x_of, odd
  end
end

if k > 1 then
  -- ---------------------------------------------------------------- several requests (k > 1)

  -- The k requests run in argument order at this `now`, each deciding exactly as a call with it
  -- alone would after the ones before it, with what the hash would hold by then; TIME and
  -- HMGET ran once above. What the hash holds is kept here ("the model") and written once at
  -- the end: every field a request writes is a function of its numbers (t, o, n, d as "%d"
  -- text, r its rate, f ft fk the factor), so the last values written are what k calls leave.
  -- A scan is done once and then kept current (lv, xl) unless the hash is odd (field names
  -- this script does not write, values not integers in [0, 2^53)): then every later request
  -- reads Redis as a call would (slow), after the pending writes. A write failing in Redis (a
  -- bucket holding a non-integer, never written so by this script) fails the whole call.
  -- The decisions are the model's functions above (limits, suppressed_decision, fixed_factor,
  -- fresh, formula), shared with the single request; what this path has of its own is where
  -- the state comes from and goes to (the model, written once, instead of Redis directly): a
  -- change to that flow must go to the single path's too (the multi-vs-singles tests of
  -- tests/integration/ratelimit_script_test.cc compare them). Kept apart because the model
  -- costs a single call 15-39 % more Redis instructions (its closures capture ~40 locals;
  -- docs/rate_limiting.md, "Script structure").

  -- Fields: false (absent), a string (as read) or a number (its "%d" text written by this
  -- batch, an integer in (-2^53, 2^53)); rt .. rr: what Redis holds; f ft fk read on first use.
  local mt, md, mo, mn, mr = h[1], h[2], h[3], h[4], h[5]
  local rt, rd, ro, rn, rr = mt, md, mo, mn, mr
  local mf, mft, mfk, fknown, fdirty = false, false, false, false, false
  local cf, cft -- tonumber(mf), tonumber(mft)
  -- num: mt, mo, mn are numbers and md a number or absent (ABSOLUTE): read without tonumber.
  local num, dirty, touched, slow = false, false, false, false
  -- Pending writes: dead fields to delete, units to add to b:<tgt> and x:<tgt>.
  local pdead, pn, tgt, bd, xd = nil, 0, nil, 0, 0
  -- The live buckets as a scan would see them now (ts -> units, ts -> declined units), and the
  -- dead fields it found that no write deleted yet.
  local lv, xl, lv_ok, dpl, dpn = nil, nil, false, nil, 0
  local hb_o, hb_v -- Redis' b:<hb_o> as a number (a rejection's HGET), until the next flush
  local ttl = format("%d", window + bucket)

  local function flush(final)
    if pn > 0 then
      for i = 1, pn, 1000 do redis.call("HDEL", key, unpack(pdead, i, math.min(i + 999, pn))) end
      pdead, pn = nil, 0
    end
    local a, na = nil, 0
    if dirty then
      a = {}
      local x = type(mt) == "number" and format("%d", mt) or mt
      if x ~= rt then a[1], a[2], na, rt = "t", x, 2, x end
      x = type(mo) == "number" and format("%d", mo) or mo
      if x ~= ro then a[na + 1], a[na + 2], na, ro = "o", x, na + 2, x end
      x = type(mn) == "number" and format("%d", mn) or mn
      if x ~= rn then a[na + 1], a[na + 2], na, rn = "n", x, na + 2, x end
      if suppressed then
        x = type(md) == "number" and format("%d", md) or md
        if x ~= rd then a[na + 1], a[na + 2], na, rd = "d", x, na + 2, x end
        if mr ~= rr then a[na + 1], a[na + 2], na, rr = "r", mr, na + 2, mr end
      end
      dirty = false
    end
    if fdirty then
      if mf then
        a = a or {}
        a[na + 1], a[na + 2], a[na + 3], a[na + 4], a[na + 5], a[na + 6] =
          "f", mf, "ft", format("%d", mft), "fk", mfk
        na = na + 6
      else
        redis.call("HDEL", key, "f", "ft", "fk")
      end
      fdirty = false
    end
    if na > 0 then redis.call("HSET", key, unpack(a, 1, na)) end
    if bd > 0 then
      local ts_s = format("%d", tgt)
      redis.call("HINCRBY", key, "b:" .. ts_s, format("%d", bd))
      if xd > 0 then redis.call("HINCRBY", key, "x:" .. ts_s, format("%d", xd)) end
      bd, xd = 0, 0
    end
    hb_o = nil
    if final and touched then redis.call("PEXPIRE", key, ttl) end
  end

  -- Slow: each request reads Redis as a call would, after the writes before it.
  local function reload()
    flush(false)
    local r
    if suppressed then
      r = redis.call("HMGET", key, "t", "d", "o", "n", "r")
    else
      r = redis.call("HMGET", key, "t", "d", "o", "n")
    end
    mt, md, mo, mn, mr = r[1], r[2], r[3], r[4], r[5]
    rt, rd, ro, rn, rr = mt, md, mo, mn, mr
    mf, mft, mfk, fknown, num, cf, cft = false, false, false, false, false, nil, nil
    lv, xl, lv_ok, dpl, dpn = nil, nil, false, nil, 0
  end

  -- What scan() would return now: from lv when valid, else scan() after the pending writes.
  local function scan_now(newest)
    if lv_ok then
      local sum, sum_x, min_ts, max_ts, newest_live = 0, 0, nil, nil, false
      for ts, c in pairs(lv) do
        sum, sum_x = sum + c, sum_x + (xl[ts] or 0)
        if not min_ts or ts < min_ts then min_ts = ts end
        if not max_ts or ts > max_ts then max_ts = ts end
        if ts == newest then newest_live = true end
      end
      if not newest_live then newest = max_ts end
      return lv, dpl, dpn, sum, sum_x, min_ts, newest
    end
    flush(false)
    local c_of, gone, ngone, sum, sum_x, min_ts, nw, x_of, odd = scan(key, now, window, newest)
    if not odd then
      -- Sums stay exact in any order, and the bucket of a ts is the field "b:%d".
      for ts, c in pairs(c_of) do
        local x = x_of[ts] or 0
        if not (c >= 0 and c % 1 == 0 and x >= 0 and x % 1 == 0 and x <= c and ts < 1e15) then
          odd = true
          break
        end
      end
      odd = odd or not (sum < TWO_53)
    end
    if odd then
      slow = true
    else
      lv, xl, lv_ok, dpl, dpn = c_of, x_of, true, gone, ngone
    end
    return c_of, gone, ngone, sum, sum_x, min_ts, nw
  end

  -- The limits of the last rate, and the last reply of each kind (identical replies share a
  -- table: Redis converts each element anyway, Lua does not build it again).
  local l_rate, l_fk, l_factor, l_factor_s
  local r_allowed, r_sup, r_range, r_rej, r_band
  local argv, reply = ARGV, {}
  for i = 1, k do
    if slow then reload() end
    local rate, count, random = rates[i], counts[i], randoms[i]
    local total, declined, oldest, newest, malformed
    -- `num`: the fields hold what this batch wrote (integers in (-2^53, 2^53), checked below
    -- when they come from elsewhere).
    local sane = num
    if num then
      total, declined, oldest, newest, malformed = mt, md or 0, mo, mn, false
    else
      local tn, dn = mt and tonumber(mt), md and tonumber(md)
      oldest, newest = mo and tonumber(mo), mn and tonumber(mn)
      total, declined = tn or 0, dn or 0
      malformed = (mt and not tn) or (md and not dn) or (mo and not oldest) or (mn and not newest)
      if not malformed then -- "nan", "inf": see the single request's read
        for _, x in ipairs({total, declined, oldest or 0, newest or 0}) do
          if x ~= x or x == 1 / 0 or x == -1 / 0 then malformed = true end
        end
      end
      if tn and oldest and newest and (dn or not md) and total <= MAX_UNITS and total % 1 == 0 and
          declined >= -MAX_UNITS and declined <= MAX_UNITS and declined % 1 == 0 and
          oldest >= -MAX_UNITS and oldest <= MAX_UNITS and oldest % 1 == 0 and
          newest >= -MAX_UNITS and newest <= MAX_UNITS and newest % 1 == 0 and
          total >= -MAX_UNITS then
        -- Read as these numbers by every later request until written (a write is "%d" text).
        mt, mo, mn, num = tn, oldest, newest, true
        if dn then md = dn end
      end
    end
    local must_scan = malformed or (oldest and now - oldest >= window) or
                        (total > 0 and not (oldest and newest)) or total < 0 or declined < 0 or
                        declined > total
    if rate ~= l_rate then
      l_rate, l_fk = rate, nil
      soft, hard = limits(rate, window_s, hlf)
    end
    local live, dead, ndead, scanned = nil, nil, 0, false
    if must_scan then
      live, dead, ndead, total, declined, oldest, newest = scan_now(newest)
      scanned = true
    end
    local factor, factor_s, computed, need_factor, fk = 0, "0", false, false, nil
    local admitted, decision, declined_units, out

    if not suppressed then
      if count > soft or not (total + count <= soft) then
        local retry, remaining = 0, 0
        if count <= soft and oldest then
          retry = window - (now - oldest)
          if not (retry > 0) then retry = 0 end
          if scanned then
            remaining = live[oldest] or 0
          elseif lv_ok and oldest % 1 == 0 then
            remaining = lv[oldest] or 0
          else
            -- HGET b:<oldest> as a call would: Redis' value (read once) plus what is pending
            -- there (tgt is an integer here: else the batch went slow and flushed).
            if hb_o ~= oldest then
              hb_o, hb_v = oldest, tonumber(redis.call("HGET", key,
                                                       "b:" .. format("%d", oldest))) or 0
            end
            remaining = hb_v
            if bd > 0 and (tgt == oldest or (oldest % 1 ~= 0 and
                                             format("%d", tgt) == format("%d", oldest))) then
              remaining = remaining + bd
            end
          end
        end
        if ndead > 0 then
          if pn > 0 then flush(false) end
          pdead, pn, dpl, dpn = dead, ndead, nil, 0
          if total == 0 then
            redis.call("DEL", key) -- and so every pending write
            pdead, pn, dirty, fdirty, bd, xd, hb_o, touched, slow = nil, 0, false, false, 0, 0,
                                                                    nil, false, false
            mt, md, mo, mn, mr, rt, rd, ro, rn, rr = false, false, false, false, false, false,
                                                     false, false, false, false
            mf, mft, mfk, fknown, num, cf, cft = false, false, false, true, false, nil, nil
            lv, xl, lv_ok = {}, {}, true
          else
            mt, mo, mn, dirty, touched, num = total, oldest, newest, true, true, not md
            if not (total <= MAX_UNITS and total % 1 == 0 and oldest >= -MAX_UNITS and
                    oldest <= MAX_UNITS and oldest % 1 == 0 and newest >= -MAX_UNITS and
                    newest <= MAX_UNITS and newest % 1 == 0) then
              slow = true
            end
          end
        end
        out = r_rej
        if not (out and out[3] == retry and out[4] == remaining) then
          out = {"ok", "rejected", retry, remaining, "0", 0, now}
          r_rej = out
        end
      else
        decision, admitted = "allowed", true
      end
    elseif total + count >= TWO_53 then
      out = r_range or {"range", "suppressed", 0, 0, "1", 0, now}
      r_range = out
    else
      decision, factor_s, factor, admitted, need_factor =
        suppressed_decision(total, declined, count, soft, hard)
    end

    if need_factor then
      factor, factor_s = fixed_factor(total, declined, soft, hard)
      if not factor then
        if not fknown then
          local c = redis.call("HMGET", key, "f", "ft", "fk")
          mf, mft, mfk, fknown = c[1], c[2], c[3], true
          cf, cft = tonumber(mf), tonumber(mft)
        end
        if not l_fk then l_fk = format("%d:%d", soft, hard) end
        fk = l_fk
        if fresh(cf, cft, mfk, fk, ndead, now, cache_ms) then
          factor = cf
        else
          if not scanned then
            live, dead, ndead, total, declined, oldest, newest = scan_now(newest)
            scanned = true
          end
          factor, computed = formula(live, total, soft, now, window_s), true
        end
        if factor ~= l_factor or factor == 0 then -- (0 or -0)
          l_factor, l_factor_s = factor, format("%.17g", factor)
        end
        factor_s = l_factor_s
      end
      admitted = factor <= 0 or (factor < 1 and tonumber(random) < 1 - factor)
    end

    if not out then
      -- Record, as a call does (see "record (inc)" below), into the model.
      declined_units = admitted and 0 or count
      if not newest or now - newest < 0 or now - newest > bucket then
        newest = now
        if not oldest or now < oldest then oldest = now end
      end
      total, declined = total + count, declined + declined_units
      if ndead > 0 then
        if pn > 0 then flush(false) end
        pdead, pn, dpl, dpn = dead, ndead, nil, 0
        if suppressed and not computed then
          mf, mft, mfk, fknown, fdirty, cf, cft = false, false, false, true, true, nil, nil
        end
      end
      mt, mo, mn, dirty, touched = total, oldest, newest, true, true
      if suppressed then
        md, mr, num = declined, argv[3 * i + 4], true
        if computed then
          mf, mft, mfk, fknown, fdirty, cf, cft = factor_s, now, fk, true, true, factor, now
        end
      else
        num = not md
      end
      -- Written as "%d" text: kept as numbers when that text reads back as the same number
      -- (always when they came from this batch or from a scan that was not odd), else slow.
      if not (sane or (total <= MAX_UNITS and total % 1 == 0 and declined >= -MAX_UNITS and
                       declined <= MAX_UNITS and declined % 1 == 0 and oldest >= -MAX_UNITS and
                       oldest <= MAX_UNITS and oldest % 1 == 0 and newest >= -MAX_UNITS and
                       newest <= MAX_UNITS and newest % 1 == 0)) then
        slow = true
      end
      if bd > 0 and newest ~= tgt then flush(false) end
      tgt, bd = newest, bd + count
      if declined_units > 0 then xd = xd + count end
      if lv_ok then
        lv[newest] = (lv[newest] or 0) + count
        if declined_units > 0 then xl[newest] = (xl[newest] or 0) + count end
      end
      if decision == "allowed" then
        out = r_allowed or {"ok", "allowed", 0, 0, "0", 1, now}
        r_allowed = out
      elseif factor_s == "1" then
        out = r_sup or {"ok", "suppressed", 0, 0, "1", 0, now}
        r_sup = out
      else
        out = r_band
        if not (out and out[5] == factor_s and out[6] == (admitted and 1 or 0)) then
          out = {"ok", "suppressed", 0, 0, factor_s, admitted and 1 or 0, now}
          r_band = out
        end
      end
    end
    reply[i] = out
  end
  flush(true)
  return reply
end

if must_scan then
  live, dead, ndead, total, declined, oldest, newest = scan(key, now, window, newest)
  scanned = true
end

-- Suppression factor of the state before this request (see fixed_factor): `computed` when the
-- formula ran now (the write below caches it). Run by Get and by Inc in the band.
local factor, factor_s, computed = 0, "0", false
local need_factor = false
local admitted, decision, declined_units

-- ---------------------------------------------------------------- get (read only)

if not inc then
  if not suppressed then return {"ok", total, 0, "0", now} end
  local r = total > 0 and h[5] and parse_float(h[5])
  if r and r > 0 then
    soft, hard = limits(r, window_s, hlf)
    need_factor = true
  end
elseif not suppressed then
  -- ---------------------------------------------------------------- ABSOLUTE inc
  if count > soft or not (total + count <= soft) then
    -- Rejected: with (0, 0) when the request exceeds the capacity, else with the time until the
    -- oldest bucket leaves the window and its units.
    local retry, remaining = 0, 0
    if count <= soft and oldest then
      retry = window - (now - oldest)
      if not (retry > 0) then retry = 0 end -- as math.max(0, retry)
      if scanned then
        remaining = live[oldest] or 0
      else
        remaining = tonumber(redis.call("HGET", key,
                                        "b:" .. (clean and o_s or format("%d", oldest)))) or 0
      end
    end
    if ndead > 0 then
      -- The expired buckets found are deleted and the totals written back (or the key, left
      -- without buckets, deleted).
      for i = 1, ndead, 1000 do
        redis.call("HDEL", key, unpack(dead, i, math.min(i + 999, ndead)))
      end
      if total == 0 then
        redis.call("DEL", key)
      else
        redis.call("HSET", key, "t", format("%d", total), "o", format("%d", oldest), "n",
                   format("%d", newest))
        redis.call("PEXPIRE", key, format("%d", window + bucket))
      end
    end
    return {"ok", "rejected", retry, remaining, "0", 0, now}
  end
  decision, admitted, declined_units = "allowed", true, 0
else
  -- ---------------------------------------------------------------- SUPPRESSED inc
  if total + count >= TWO_53 then return {"range", "suppressed", 0, 0, "1", 0, now} end
  decision, factor_s, factor, admitted, need_factor =
    suppressed_decision(total, declined, count, soft, hard)
end

if need_factor then
  factor, factor_s = fixed_factor(total, declined, soft, hard)
  if not factor then
    local c = inc and redis.call("HMGET", key, "f", "ft", "fk") or {h[6], h[7], h[8]}
    local cached_f = tonumber(c[1])
    -- The limits' text only when a cache exists (nil, never equal to an absent fk, else).
    local fk = c[3] and format("%d:%d", soft, hard) or nil
    if fresh(cached_f, tonumber(c[2]), c[3], fk, ndead, now, cache_ms) then
      factor = cached_f
    else
      if not scanned then
        live, dead, ndead, total, declined, oldest, newest = scan(key, now, window, newest)
        scanned = true
      end
      factor, computed = formula(live, total, soft, now, window_s), true
    end
    factor_s = format("%.17g", factor)
  end
  if not inc then return {"ok", total, declined, factor_s, now} end
  admitted = factor <= 0 or (factor < 1 and random < 1 - factor)
end
if not inc then return {"ok", total, declined, "0", now} end

-- ---------------------------------------------------------------- record (inc)

-- `count` observed units (declined_units of them declined) join the newest bucket when
-- 0 <= now - newest <= bucket, else a new bucket stamped now.
declined_units = admitted and 0 or count
local fast = clean and not scanned -- the stored text of o, n (and d) is what would be written
local now_s
local ts_s -- the bucket's timestamp as text
if newest and not (now - newest < 0 or now - newest > bucket) then
  ts_s = fast and n_s or format("%d", newest)
else
  newest, now_s = now, format("%d", now)
  if not oldest or now < oldest then oldest = now end
  ts_s = now_s
  fast = false
end
total, declined = total + count, declined + declined_units

if ndead > 0 then
  for i = 1, ndead, 1000 do
    redis.call("HDEL", key, unpack(dead, i, math.min(i + 999, ndead)))
  end
  -- Forget a factor computed before buckets expired (it described another window).
  if suppressed and not computed then redis.call("HDEL", key, "f", "ft", "fk") end
end
if fast and (not suppressed or (declined_units == 0 and h[5] == rate_arg)) then
  -- Joined the newest bucket and t is the one field that changes (o, n, d and r keep their
  -- canonical text): Redis adds, exactly, as t + count < 2^53.
  redis.call("HINCRBY", key, "t", count_arg)
else
  local t_txt = total == count and count_arg or format("%d", total) -- count_arg is canonical
  local d_txt
  if suppressed then
    if declined_units == 0 and fast then
      d_txt = d_s -- unchanged
    else
      d_txt = declined == 0 and "0" or (declined == count and count_arg or format("%d", declined))
    end
  end
  if fast then -- joined the newest bucket: o and n unchanged
    redis.call("HSET", key, "t", t_txt, "d", d_txt, "r", rate_arg)
  else
    local o_txt = oldest == now and now_s or format("%d", oldest)
    local n_txt = newest == now and now_s or format("%d", newest)
    if not suppressed then
      redis.call("HSET", key, "t", t_txt, "o", o_txt, "n", n_txt)
    elseif computed then
      redis.call("HSET", key, "t", t_txt, "o", o_txt, "n", n_txt, "d", d_txt, "r", rate_arg, "f",
                 factor_s, "ft", now_s or format("%d", now), "fk", format("%d:%d", soft, hard))
    else
      redis.call("HSET", key, "t", t_txt, "o", o_txt, "n", n_txt, "d", d_txt, "r", rate_arg)
    end
  end
end
redis.call("HINCRBY", key, "b:" .. ts_s, count_arg)
if declined_units > 0 then redis.call("HINCRBY", key, "x:" .. ts_s, count_arg) end
redis.call("PEXPIRE", key, format("%d", window + bucket))
return {"ok", decision, 0, 0, factor_s, admitted and 1 or 0, now}
