-- Whether a lease still holds its lock (a check a notice asked for, of a lease that does
-- not renew): the lock is its holder id, and not a later tenure of that id (tenure.lua).
-- KEYS[1] lock key, KEYS[2] waiters' hash; ARGV[1] holder id, ARGV[2] the lease's fencing
-- token. Returns 1 held, 0 not (also when the lock key holds another kind of value).
local current = redis.pcall('GET', KEYS[1])
if current == ARGV[1] and not later_tenure(KEYS[2], ARGV[1], ARGV[2]) then
  return 1
end
return 0
