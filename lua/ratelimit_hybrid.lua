-- requires: lib/int64.lua lib/validate.lua
-- ratelimit_hybrid.lua: the periodic sync of the HYBRID rate limiter (docs/api.md#providers;
-- protocol, lease rule and overshoot bound in docs/rate_limiting.md, section HYBRID).
--
-- One call pushes this daemon's new usage of a key (exactly once), renews its lease (units it
-- may admit from memory until its next sync) and returns the key's global state.
--
-- KEYS[1]  dk:{TTTTTTTT}:rh:<a|s>:<namespace>:<key>, a HASH per (namespace, key, strategy):
--            b:<ts>      accepted units of the bucket opened at <ts> (ms of Redis TIME)
--            x:<ts>      declined units of that bucket (SUPPRESSED only)
--            e:<ts>      when that bucket was last joined (absent = <ts>): the bucket lives
--                        while now - e < window, so pushed units stay counted for a whole
--                        window after their push, never less (docs: why the bound is C, not 2C)
--            n           timestamp of the bucket new units join (the last one opened)
--            r           rate of the last sync that carried one (SUPPRESSED Get's factor)
--            m:<member>  one per daemon key state: "<exp> <lease> <want> <cum_acc> <cum_dec>"
--                        exp     Redis ms until which <lease> units are reserved for it and it
--                                counts as active (when want = 1)
--                        cum_*   the member's cumulative usage already added to the buckets
--                                (modulo 2^62): a retried sync carries the same or a larger
--                                cumulative and only the difference is added (exactly once)
-- ARGV     mode ("sync" | "read"), member, cum_acc, cum_dec, acked_acc, acked_dec, expired_acc,
--          expired_dec, held, want (0/1), need, capacity, window_ms, bucket_ms, lease_ms, rate
--          [, demand [, take]]
--            acked_*    the cumulatives this member last saw confirmed: the base when its field
--                       is gone (removed as stale while the daemon was cut off)
--            expired_*  units of the new usage that are already older than the window (admitted
--                       while Redis was unreachable): recorded in cum_* but not in a bucket
--            held       lease units the daemon keeps using until it reads this reply
--            need       the count of a request waiting for this sync (0 = none)
--            rate       the rate of the daemon's last request (decimal text), "" = none
--            demand     the most this member expects to use before its next syncs (its recent
--                       traffic with headroom); absent = no cap. Its lease is at most that: an
--                       idle or slow daemon does not sit on capacity others could use.
--            take       (optional, needs demand) units of one request waiting for this sync to
--                       admit here and now if they fit (used + every lease + take <= capacity):
--                       recorded in the bucket and in the member's cumulative at once, so a key
--                       touched once costs one script, not a lease sync and then a push
--          "read" writes nothing: Get on a key this daemon does not hold.
-- Returns  {grant, limit, acc, dec, last_second, oldest_age, oldest_acc, active, free, cum_acc,
--           cum_dec, now, rate, taken}: taken = the units of `take` admitted (0 or take); grant = new lease units on top of held; limit = the most this
--          member may hold (its share, or need): a daemon holding more trims its lease to it when
--          it reads the reply (Redis keeps held reserved until its next sync); acc/dec = live accepted /
--          declined units; last_second = units observed (accepted + declined) within the last
--          1000 ms; oldest_age/oldest_acc = age and accepted units of the oldest live bucket
--          (by its last join; -1/0 without one); active = members that want a lease (self included); free =
--          capacity - acc - every lease (after the grant; may be negative); cum_* = this
--          member's stored cumulatives (decimal strings); now = Redis ms; rate = field r ("" if none).
--
-- Units are Lua numbers below 2^53 (the daemon caps capacities at 2^50); cumulatives are exact
-- decimal strings (lib/int64.lua). Every check runs before the first write.

local MOD = "4611686018427387904" -- 2^62: cumulatives wrap here
local HALF = "2305843009213693952" -- 2^61: a "difference" above this is an old, smaller value
local MAX_UNITS = 9007199254740991 -- 2^53 - 1
local STALE_MS = 60000 -- a member silent for window + this is forgotten

local function int(x) return string.format("%d", x) end

local function nat(s) -- integer in [0, 2^53)
  if s == "0" then return 0 end
  return parse_seq(s)
end

local function cum(s) -- canonical decimal in [0, 2^62)
  if not is_i64(s) or string.sub(s, 1, 1) == "-" then return nil end
  if i64_cmp(s, MOD) >= 0 then return nil end
  return s
end

-- Units between a stored cumulative and a newer one (both modulo 2^62), or 0 when `new` is
-- not newer (a late or repeated sync). Returns the difference (number) and the new stored value.
local function advance(stored, new)
  local d = i64_sub(new, stored)
  if string.sub(d, 1, 1) == "-" then d = i64_add(d, MOD) end
  if d == "0" or i64_cmp(d, HALF) >= 0 then return 0, stored end
  local n = tonumber(d)
  if n > MAX_UNITS then n = MAX_UNITS end
  return n, new
end

-- ---------------------------------------------------------------- validation (no writes)

if #KEYS ~= 1 then return fail("exactly one key expected") end
if #ARGV < 16 or #ARGV > 18 then return fail("wrong number of arguments") end
local key = KEYS[1]
local mode, member = ARGV[1], ARGV[2]
if mode ~= "sync" and mode ~= "read" then return fail("unknown mode") end
if member == "" or string.find(member, " ", 1, true) then return fail("bad member") end
local cum_acc, cum_dec, acked_acc, acked_dec = cum(ARGV[3]), cum(ARGV[4]), cum(ARGV[5]), cum(ARGV[6])
if not (cum_acc and cum_dec and acked_acc and acked_dec) then return fail("bad cumulative") end
local expired_acc, expired_dec = nat(ARGV[7]), nat(ARGV[8])
local held, need, cap = nat(ARGV[9]), nat(ARGV[11]), nat(ARGV[12])
if not (expired_acc and expired_dec and held and need and cap) then
  return fail("bad unit count")
end
local want = ARGV[10]
if want ~= "0" and want ~= "1" then return fail("want must be 0 or 1") end
local window, bucket, lease_ms = parse_seq(ARGV[13]), parse_seq(ARGV[14]), parse_seq(ARGV[15])
if not window then return fail("window_ms must be an integer >= 1") end
if not bucket or bucket > window then return fail("bucket_ms must be in [1, window_ms]") end
if not lease_ms then return fail("lease_ms must be an integer >= 1") end
local rate = ARGV[16]
local demand, take = nil, 0
if ARGV[17] then
  demand = nat(ARGV[17])
  if not demand then return fail("bad demand") end
end
if ARGV[18] then
  take = nat(ARGV[18])
  if not take then return fail("bad take") end
end
if rate ~= "" and (#rate > 40 or not string.find(rate, "^[0-9.eE+-]+$") or not tonumber(rate)) then
  return fail("bad rate")
end

local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- ---------------------------------------------------------------- state

local all = redis.call("HGETALL", key)
local acc_of, dec_of, stamp_of = {}, {}, {} -- buckets by opening ts: units, last join
local dead = {}                              -- fields to delete
local newest, stored_rate = nil, ""
local mine = nil                             -- this member's field value
local others_lease, active = 0, 0
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local kind = string.sub(f, 1, 2)
  if kind == "b:" or kind == "x:" or kind == "e:" then
    local ts, n = tonumber(string.sub(f, 3)), tonumber(v)
    if not ts or not n then
      dead[#dead + 1] = f
    elseif kind == "b:" then
      acc_of[ts] = n
    elseif kind == "x:" then
      dec_of[ts] = n
    else
      stamp_of[ts] = n
    end
  elseif kind == "m:" then
    local name = string.sub(f, 3)
    local exp, lease, w, ca, cd = string.match(v, "^(%d+) (%d+) ([01]) (%d+) (%d+)$")
    if name == member then
      if exp and cum(ca) and cum(cd) then mine = {ca, cd} end
    elseif not exp then
      dead[#dead + 1] = f
    else
      exp = tonumber(exp)
      if exp >= now then
        others_lease = others_lease + tonumber(lease)
        if w == "1" then active = active + 1 end
      elseif now - exp > window + STALE_MS then
        dead[#dead + 1] = f
      end
    end
  elseif f == "n" then
    newest = tonumber(v)
  elseif f == "r" then
    stored_rate = v
  end
end
-- Expired buckets (by their last join) go, with every field of theirs.
local opened = {}
for _, t in ipairs({acc_of, dec_of, stamp_of}) do
  for ts in pairs(t) do opened[ts] = true end
end
for ts in pairs(opened) do
  if now - (stamp_of[ts] or ts) >= window then
    local n = #dead
    dead[n + 1], dead[n + 2], dead[n + 3] = "b:" .. int(ts), "x:" .. int(ts), "e:" .. int(ts)
    acc_of[ts], dec_of[ts], stamp_of[ts] = nil, nil, nil
  end
end

-- ---------------------------------------------------------------- push (exactly once)

local stored_acc = mine and mine[1] or acked_acc
local stored_dec = mine and mine[2] or acked_dec
local writes = {}
-- Adds units to the bucket new units join: the newest while 0 <= now - ts <= bucket, else one
-- opened now. Returns its timestamp.
local function record(d_acc, d_dec)
  local ts = now
  if newest and now - newest >= 0 and now - newest <= bucket then ts = newest end
  if ts ~= newest then
    newest = ts
    writes[#writes + 1], writes[#writes + 2] = "n", int(ts)
  else
    stamp_of[ts] = now
    writes[#writes + 1], writes[#writes + 2] = "e:" .. int(ts), int(now)
  end
  if d_acc > 0 then
    acc_of[ts] = math.min((acc_of[ts] or 0) + d_acc, MAX_UNITS)
    writes[#writes + 1], writes[#writes + 2] = "b:" .. int(ts), int(acc_of[ts])
  end
  if d_dec > 0 then
    dec_of[ts] = math.min((dec_of[ts] or 0) + d_dec, MAX_UNITS)
    writes[#writes + 1], writes[#writes + 2] = "x:" .. int(ts), int(dec_of[ts])
  end
  return ts
end
if mode == "sync" then
  local d_acc, d_dec
  d_acc, stored_acc = advance(stored_acc, cum_acc)
  d_dec, stored_dec = advance(stored_dec, cum_dec)
  d_acc = math.max(0, d_acc - expired_acc)
  d_dec = math.max(0, d_dec - expired_dec)
  if d_acc + d_dec > 0 then record(d_acc, d_dec) end
end

-- ---------------------------------------------------------------- totals

local acc, dec, last_second, oldest = 0, 0, 0, nil -- oldest: the bucket that expires first
local function add(ts, units)
  local stamp = stamp_of[ts] or ts
  if now - stamp <= 1000 then last_second = last_second + units end
  if not oldest or stamp < (stamp_of[oldest] or oldest) then oldest = ts end
end
for ts, units in pairs(acc_of) do
  acc = acc + units
  add(ts, units)
end
for ts, units in pairs(dec_of) do
  dec = dec + units
  add(ts, units)
end

-- ---------------------------------------------------------------- take (a waiting request)
-- Admitted iff it fits in what no other member holds, next to this member's own lease (which the
-- daemon does not use for it): used + others' leases + held + take <= capacity. Its units count
-- from now and advance the member's cumulative: the daemon adds them to its own when it reads
-- taken > 0 (and, if the reply is lost, admits the request anyway: its next sync then pushes
-- them, or finds them already here - exactly once either way).
local taken = 0
if mode == "sync" and want == "1" and take > 0 and take <= MAX_UNITS
    and acc + others_lease + held + take <= cap then
  local ts = record(take, 0)
  acc = acc + take
  add(ts, take)
  stored_acc = i64_add(stored_acc, int(take))
  if i64_cmp(stored_acc, MOD) >= 0 then stored_acc = i64_sub(stored_acc, MOD) end
  taken = take
end

local oldest_age, oldest_acc = -1, 0
if oldest then
  oldest_age, oldest_acc = math.max(0, now - (stamp_of[oldest] or oldest)), acc_of[oldest] or 0
end

-- ---------------------------------------------------------------- lease
-- A member may hold at most its fair share ceil((capacity - acc) / active) of what is left, and
-- of that no more than its `demand` (but at least `need`, for one request that waits), and never
-- more than what no one else holds: so
-- acc + every lease <= capacity after every sync, and every unit admitted from memory is
-- covered by a lease until it is in a bucket.

local grant, limit = 0, 0
if mode == "sync" and want == "1" then active = active + 1 end
local left = math.max(0, cap - acc)
local free = cap - acc - others_lease - (mode == "sync" and held or 0)
if mode == "sync" and want == "1" then
  local share = math.ceil(left / active)
  if demand and demand < share then share = demand end
  limit = math.max(share, need)
  grant = math.max(0, math.min(free, limit - held))
  free = free - grant
end

if mode == "sync" then
  local n = #writes
  writes[n + 1] = "m:" .. member
  writes[n + 2] = table.concat({int(now + lease_ms), int(held + grant), want, stored_acc,
                                stored_dec}, " ")
  if rate ~= "" and rate ~= stored_rate then
    writes[#writes + 1], writes[#writes + 2] = "r", rate
    stored_rate = rate
  end
  for i = 1, #dead, 500 do
    redis.call("HDEL", key, unpack(dead, i, math.min(i + 499, #dead)))
  end
  redis.call("HSET", key, unpack(writes))
  -- Lives while a bucket or a member may still matter; every sync extends it (never shortens).
  local ttl = window + lease_ms + STALE_MS
  if redis.call("PTTL", key) < ttl then redis.call("PEXPIRE", key, ttl) end
end

return {grant, limit, int(acc), int(dec), int(last_second), oldest_age, int(oldest_acc), active,
        free, stored_acc, stored_dec, now, stored_rate, taken}
