-- Delete a lock whoever holds it (operators), and wake waiters. Refuses other types.
-- KEYS[1] lock key, KEYS[2] wait marker; ARGV[1] release channel,
-- ARGV[2] publish command: PUBLISH, or SPUBLISH on a cluster
-- Returns {1, ''} deleted, {0, ''} absent, {3, "key<TAB>what is wrong"} for a key that is
-- not a lock (nothing deleted).
local wrong = not_a_string(KEYS[1], 'a lock')
if wrong then
  return {3, wrong}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.pcall(ARGV[2] or 'PUBLISH', ARGV[1], KEYS[1])
return {1, ''}
