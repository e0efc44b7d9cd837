-- Liveness of instance-aware counters (docs/instance_counters.md). One hash slot: {live}.
-- KEYS[1] = dk:{live}:instances (ZSET id -> last heartbeat, ms of Redis TIME)
-- KEYS[2] = dk:{live}:incarnations (HASH id -> incarnation)
-- ARGV[1] = op:
--   register <id> [<floor>]  -> {incarnation, now_ms}: bumps the incarnation (to more than
--                               <floor>, the caller's last one: a reaper may have removed the
--                               id's entry, and an incarnation must never be reused by the
--                               same process), heartbeat now
--   beat <id> <inc> <threshold_ms>
--                            -> 1 when the id is registered with that incarnation and its last
--                               heartbeat is younger than the threshold (heartbeat written);
--                               0 otherwise (nothing written: declared dead, maybe being reaped)
--   dead <threshold_ms>      -> flat array id, inc, id, inc... of ids whose last heartbeat is
--                               <= now - threshold (at most 100)
--   remove <id> <inc>        -> 1 when the id was removed (incarnation unchanged), else 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'register' then
  local inc = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  local floor = tonumber(ARGV[3] or '0') or 0
  if inc <= floor then
    inc = floor + 1
    redis.call('HSET', KEYS[2], ARGV[2], inc)
  end
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  return {inc, now}
elseif op == 'beat' then
  local cur = redis.call('HGET', KEYS[2], ARGV[2])
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if cur ~= ARGV[3] or not score or tonumber(score) <= now - tonumber(ARGV[4]) then return 0 end
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  return 1
elseif op == 'dead' then
  local limit = now - tonumber(ARGV[2])
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', limit, 'LIMIT', 0, 100)
  local out = {}
  for _, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', KEYS[2], id) or '0'
  end
  return out
elseif op == 'remove' then
  local cur = redis.call('HGET', KEYS[2], ARGV[2])
  if cur and cur ~= ARGV[3] then return 0 end
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return redis.error_reply('ERR distkit: liveness: unknown op')
