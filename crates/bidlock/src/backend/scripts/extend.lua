-- Extend a lock's ttl if the caller holds it.
-- KEYS[1] lock key; ARGV[1] holder id, ARGV[2] new ttl in ms
-- Returns 1 extended, 0 not held by this holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
