-- Delete a lock whoever holds it (operators), and wake waiters. Refuses other types.
-- KEYS[1] lock key, KEYS[2] wait marker; ARGV[1] release channel,
-- ARGV[2] publish command: PUBLISH, or SPUBLISH on a cluster
-- Returns 1 deleted, 0 absent, or an error for a key that is not a lock.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then
  return 0
end
if kind ~= 'string' then
  return redis.error_reply('WRONGTYPE key holds a ' .. kind .. ', not a lock')
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.pcall(ARGV[2] or 'PUBLISH', ARGV[1], KEYS[1])
return 1
