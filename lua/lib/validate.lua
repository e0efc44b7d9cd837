-- lib/validate.lua: checks of ARGV, for the scripts that declare "-- requires: lib/validate.lua"
-- (counter, icounter, ratelimit, ratelimit_hybrid; see lib/int64.lua for how libraries are
-- prepended). Small on purpose: Redis runs it in full on every call of those scripts.

-- Bad ARGV: an error reply, always raised before the first write (Redis does not roll back).
local function fail(what)
  return redis.error_reply("ERR distkit: " .. what)
end

-- A seq (or entry count) is a canonical decimal in [1, 2^53), exact as a Lua number.
local function parse_seq(s)
  if type(s) ~= "string" or #s > 16 or not string.find(s, "^[1-9]%d*$") then return nil end
  local n = s + 0
  if n >= 9007199254740992 then return nil end -- 2^53
  return n
end
