-- Everything about one key, read atomically.
-- KEYS[1] lock key, KEYS[2] completion record
-- Returns {lock type, holder or '', lock pttl, record or '', record pttl}
local kind = redis.call('TYPE', KEYS[1])['ok']
local holder = ''
if kind == 'string' then
  holder = redis.call('GET', KEYS[1])
end
local done = redis.call('GET', KEYS[2]) or ''
return {kind, holder, redis.call('PTTL', KEYS[1]), done, redis.call('PTTL', KEYS[2])}
