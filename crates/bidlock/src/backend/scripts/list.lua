-- Holder and pttl of a batch of keys found by SCAN; other types are reported, not read.
-- KEYS: lock keys. Returns a flat array {type, holder or '', pttl, ...} per key.
local out = {}
for _, k in ipairs(KEYS) do
  local kind = redis.call('TYPE', k)['ok']
  local holder = ''
  if kind == 'string' then
    holder = redis.call('GET', k)
  end
  table.insert(out, kind)
  table.insert(out, holder)
  table.insert(out, redis.call('PTTL', k))
end
return out
