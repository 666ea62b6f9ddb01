-- Raise the fencing counter to at least ARGV[1] (Redlock: the token just issued from
-- the maximum over the quorum), so any later token from this node is greater.
-- KEYS[1] fencing counter. Returns the counter's value.
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if c < floor then
  redis.call('SET', KEYS[1], ARGV[1])
  return floor
end
return c
