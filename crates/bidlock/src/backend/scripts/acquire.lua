-- Take a lock: SET NX PX + a fencing token, in one round trip.
-- KEYS[1] lock key, KEYS[2] fencing counter, KEYS[3] completion record, KEYS[4] wait marker
-- ARGV[1] holder id, ARGV[2] ttl in ms, ARGV[3] '1' to refuse when a completion record exists,
-- ARGV[4] '1' when the caller has waiters queued behind it (their release must publish),
-- ARGV[5] (cluster: the counter is per posting) how long to keep the counter, in ms
-- Returns {1, token, ''} taken; {0, pttl, holder} held by another;
--         {2, 0, ''} already done; {3, 0, type} the key is not a string.
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {2, 0, ''}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- A hybrid logical clock: above the counter and above the server clock in µs, so
  -- tokens keep increasing when the counter is deleted or rolled back (a restart
  -- without persistence, an AOF everysec crash, an RDB restore, a failover to a
  -- replica that was behind), as long as the clock does not step back further than
  -- the time between two acquires.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local token = (tonumber(redis.call('GET', KEYS[2])) or 0) + 1
  if now > token then token = now end
  if ARGV[5] then
    redis.call('SET', KEYS[2], string.format('%d', token), 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[2], string.format('%d', token))
  end
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[4], '1', 'PX', tonumber(ARGV[2]) + 5000)
  end
  return {1, token, ''}
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' then
  return {3, 0, kind}
end
-- Someone waits: mark it, atomically with this failed try, so the release publishes.
-- The marker outlives the lock (a release or expiry after it is never missed).
local pttl = redis.call('PTTL', KEYS[1])
local keep = 60000
if pttl > 0 then keep = pttl + 5000 end
redis.call('SET', KEYS[4], '1', 'PX', keep)
return {0, pttl, redis.call('GET', KEYS[1]) or ''}
