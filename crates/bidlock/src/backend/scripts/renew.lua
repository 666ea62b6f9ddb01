-- Renew locks if the caller holds them, in one round trip for the renewals of one keeper
-- round (a lone renewal is a batch of one): each lock's ttl becomes at least its wanted
-- ms, never less, so a renewal that arrives late (even on a later acquisition that uses
-- the same holder id) can never cut a lock short.
-- Item i (from 0): KEYS[2i+1] lock key, KEYS[2i+2] wait marker; ARGV[2i+1] holder id,
-- ARGV[2i+2] ttl in ms.
-- Returns one code per item: 1 renewed (or already long enough), 0 not held by this
-- holder, -1 the key holds another kind of value.
local function renew(lock, marker, holder, want)
  -- GET fails only on a key of another kind.
  local current = redis.pcall('GET', lock)
  if type(current) == 'table' then
    return -1
  end
  if current ~= holder then
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
for i = 0, #KEYS / 2 - 1 do
  out[i + 1] = renew(KEYS[2 * i + 1], KEYS[2 * i + 2], ARGV[2 * i + 1], tonumber(ARGV[2 * i + 2]))
end
return out
