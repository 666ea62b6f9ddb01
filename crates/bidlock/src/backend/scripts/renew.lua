-- Renew a lock if the caller holds it: its ttl becomes at least ARGV[2] ms, never less,
-- so a renewal that arrives late (even on a later acquisition that uses the same holder
-- id) can never cut a lock short.
-- KEYS[1] lock key, KEYS[2] wait marker, KEYS[3] waiters (unused: kept so the key list
-- matches extend's); ARGV[1] holder id, ARGV[2] ttl in ms
-- Returns 1 renewed (or already long enough), 0 not held by this holder, -1 the key holds
-- another kind of value.
if not_a_string(KEYS[1], 'a lock') then
  return -1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local want = tonumber(ARGV[2])
  if redis.call('PTTL', KEYS[1]) < want then
    redis.call('PEXPIRE', KEYS[1], want)
  end
  -- A wait marker outlives the lock, so a release after a long hold still wakes waiters.
  if redis.call('PTTL', KEYS[2]) < want + 5000 then
    redis.call('PEXPIRE', KEYS[2], want + 5000)
  end
  return 1
end
return 0
