-- lib/marks.lua: collection of expired dedup marks, for counter.lua ("s:*" marks) and
-- icounter.lua ("q:*" marks); see docs/architecture.md, "Collecting dedup marks".

-- Deletes the marks matching `pattern` in hash `key` whose "@<expiry>" passed, except
-- `own_field`. Runs only when this process writes its mark for the first time here (`own_mark`
-- nil) or about once per bound (its expiry is within `bound_ms` of `now`), and looks at one
-- HSCAN of ~100 fields: bounded work on a hot key. Marks without an expiry are left alone.
local function collect_expired_marks(key, pattern, own_field, own_mark, now, bound_ms)
  local prev_expiry = own_mark and tonumber(string.match(own_mark, "@(%d+)$") or "")
  if prev_expiry and prev_expiry >= now + bound_ms then return end
  local scan = redis.call("HSCAN", key, "0", "MATCH", pattern, "COUNT", 100)
  local fields, dead = scan[2], {}
  for i = 1, #fields, 2 do
    local expiry = tonumber(string.match(fields[i + 1], "@(%d+)$") or "")
    if fields[i] ~= own_field and expiry and expiry < now then dead[#dead + 1] = fields[i] end
  end
  if #dead > 0 then redis.call("HDEL", key, unpack(dead)) end
end
