-- Renew locks if the caller holds them, in one round trip for the renewals of one keeper
-- round (a lone renewal is a batch of one): each lock's ttl becomes at least its wanted
-- ms, never less, so a renewal that arrives late (even on a later acquisition that uses
-- the same holder id) can never cut a lock short.
-- Item i (from 0): KEYS[3i+1] lock key, KEYS[3i+2] wait marker, KEYS[3i+3] waiters' hash;
-- ARGV[3i+1] holder id, ARGV[3i+2] ttl in ms, ARGV[3i+3] the lease's fencing token.
-- Returns one code per item: 1 renewed (or already long enough), 0 not held by this
-- holder (or held by a later tenure of its id: tenure.lua), -1 the key holds another
-- kind of value.
local function renew(lock, marker, waiters, holder, want, token)
  -- GET fails only on a key of another kind.
  local current = redis.pcall('GET', lock)
  if type(current) == 'table' then
    return -1
  end
  if current ~= holder or later_tenure(waiters, holder, token) then
    return 0
  end
  if redis.call('PTTL', lock) < want then
    redis.call('PEXPIRE', lock, want)
  end
  -- A wait marker outlives the lock, so a release after a long hold still wakes waiters.
  -- No marker (-2), the common case: nothing to keep alive.
  local left = redis.call('PTTL', marker)
  if left ~= -2 and left < want + 5000 then
    redis.call('PEXPIRE', marker, want + 5000)
  end
  return 1
end

local out = {}
for i = 0, #KEYS / 3 - 1 do
  out[i + 1] = renew(KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3], ARGV[3 * i + 1],
    tonumber(ARGV[3 * i + 2]), ARGV[3 * i + 3])
end
return out
