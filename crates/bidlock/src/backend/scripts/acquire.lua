-- Take a lock: SET NX PX + a fencing token, in one round trip.
-- KEYS[1] lock key, KEYS[2] fencing counter, KEYS[3] completion record
-- ARGV[1] holder id, ARGV[2] ttl in ms, ARGV[3] '1' to refuse when a completion record exists
-- Returns {1, token, ''} taken; {0, pttl, holder} held by another;
--         {2, 0, ''} already done; {3, 0, type} the key is not a string.
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {2, 0, ''}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  if token == 1 then
    -- The counter was missing (first use, or Redis lost its data): seed it from the
    -- server clock in microseconds so tokens stay above those issued before.
    local t = redis.call('TIME')
    token = redis.call('INCRBY', KEYS[2], tonumber(t[1]) * 1000000 + tonumber(t[2]))
  end
  return {1, token, ''}
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' then
  return {3, 0, kind}
end
return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1]) or ''}
