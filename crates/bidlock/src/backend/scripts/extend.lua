-- Extend a lock's ttl if the caller holds it.
-- KEYS[1] lock key, KEYS[2] wait marker, KEYS[3] waiters' hash; ARGV[1] holder id, ARGV[2]
-- new ttl in ms, ARGV[3] the lease's fencing token.
-- Returns 1 extended, 0 not held by this holder (or held by a later tenure of its id:
-- tenure.lua), -1 the key holds another kind of value. A wait marker is kept alive with the
-- lock, so a release after a long hold still wakes the waiters.
if not_a_string(KEYS[1], 'a lock') then
  return -1
end
if redis.call('GET', KEYS[1]) == ARGV[1] and not later_tenure(KEYS[3], ARGV[1], ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + 5000)
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
