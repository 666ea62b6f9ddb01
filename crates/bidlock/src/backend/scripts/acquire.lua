-- Take a lock: SET NX PX + a fencing token, in one round trip; on conflict, mark that
-- someone waits and (for a waiter that takes handoffs) join the key's queue.
-- KEYS[1] lock, KEYS[2] fencing counter, KEYS[3] completion record, KEYS[4] wait marker,
-- KEYS[5] queue (ZSET: holder -> arrival), KEYS[6] waiters (HASH: holder -> entry; the
-- field '' holds the last grant, "holder token")
-- ARGV[1] holder id, ARGV[2] ttl in ms, ARGV[3] '1' to refuse when a completion record
-- exists, ARGV[4] '1' when the caller has waiters queued behind it (their release must
-- publish), ARGV[5] queue: '0' do not queue, '1' queue on conflict, '2' queue on conflict
-- and leave the queue when taking the lock (the caller queued before), ARGV[6] entry
-- lifetime in ms (renewed by refresh.lua), ARGV[7] grant ttl in ms, ARGV[8] grant channel,
-- ARGV[9] (cluster only: the counter is per posting) how long to keep the counter, in ms
-- Returns {1, token, ''} taken; {0, pttl, holder} held by another; {2, 0, ''} already
-- done; {3, 0, type} the key is not a string; {4, token, ''} already handed to this holder.
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {2, 0, ''}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- A hybrid logical clock (the same in release.lua): above the counter and above the
  -- server clock in µs, so tokens keep increasing when the counter is deleted or rolled
  -- back, as long as the clock does not step back further than the time between two
  -- acquires.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local token
  if ARGV[9] then
    token = math.max((tonumber(redis.call('GET', KEYS[2])) or 0) + 1, now)
    redis.call('SET', KEYS[2], string.format('%d', token), 'PX', ARGV[9])
  else
    token = (tonumber(redis.call('GETSET', KEYS[2], string.format('%d', now))) or 0) + 1
    if token > now then
      redis.call('SET', KEYS[2], string.format('%d', token))
    else
      token = now
    end
  end
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[4], '1', 'PX', tonumber(ARGV[2]) + 5000)
  end
  if ARGV[5] == '2' and redis.call('ZREM', KEYS[5], ARGV[1]) == 1 then
    redis.call('HDEL', KEYS[6], ARGV[1])
  end
  return {1, token, ''}
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' then
  return {3, 0, kind}
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] and ARGV[5] ~= '0' then
  -- A release handed the lock to this waiter; its message may not have arrived yet.
  local grant = redis.call('HGET', KEYS[6], '')
  local to, token = string.match(grant or '', '^(.*) (%d+)$')
  if to == ARGV[1] then
    return {4, tonumber(token), ''}
  end
end
-- Someone waits: mark it, atomically with this failed try, so the release publishes or
-- hands over. The marker outlives the lock (a release or expiry after it is never missed).
local pttl = redis.call('PTTL', KEYS[1])
local keep = 60000
if pttl > 0 then keep = pttl + 5000 end
redis.call('SET', KEYS[4], '1', 'PX', keep)
if ARGV[5] ~= '0' then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[5], 'NX', tonumber(t[1]) .. string.format('%06d', tonumber(t[2])), ARGV[1])
  redis.call('HSET', KEYS[6], ARGV[1],
    string.format('%d', now_ms + tonumber(ARGV[6])) .. '|' .. ARGV[7] .. '|' .. ARGV[8])
  local life = keep + tonumber(ARGV[6])
  redis.call('PEXPIRE', KEYS[5], life)
  redis.call('PEXPIRE', KEYS[6], life)
end
return {0, pttl, holder or ''}
