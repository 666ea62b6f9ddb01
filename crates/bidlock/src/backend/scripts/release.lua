-- Release a lock if the caller holds it, and wake waiters.
-- KEYS[1] lock key; ARGV[1] holder id, ARGV[2] release channel
-- Returns 1 released, 0 not held by this holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
return 0
