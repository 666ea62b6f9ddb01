-- Delete a batch of lock keys found by SCAN (only strings: never another type), and
-- wake their waiters. KEYS: the lock keys; ARGV[1] release channel, ARGV[2] publish command
-- (PUBLISH, or SPUBLISH on a cluster, where each call gets one key and its channel).
-- Returns the count.
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('TYPE', k)['ok'] == 'string' then
    redis.call('DEL', k)
    redis.pcall(ARGV[2] or 'PUBLISH', ARGV[1], k)
    n = n + 1
  end
end
return n
