-- Everything about one key, read atomically.
-- KEYS[1] lock key, KEYS[2] completion record
-- Returns {lock type, holder or '', lock pttl, record or '', record pttl}
local kind = redis.call('TYPE', KEYS[1])['ok']
local holder = ''
if kind == 'string' then
  holder = redis.call('GET', KEYS[1])
end
-- A record key of another kind reads as its type, in angle brackets.
local done = ''
local done_kind = redis.call('TYPE', KEYS[2])['ok']
if done_kind == 'string' then
  done = redis.call('GET', KEYS[2])
elseif done_kind ~= 'none' then
  done = '<' .. done_kind .. '>'
end
return {kind, holder, redis.call('PTTL', KEYS[1]), done, redis.call('PTTL', KEYS[2])}
