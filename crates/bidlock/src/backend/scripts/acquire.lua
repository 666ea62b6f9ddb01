-- Take locks: SET NX PX + a fencing token each, in one round trip for a batch of
-- acquires of one manager (a lone acquire is a batch of one). On conflict, mark that
-- someone waits and (for a waiter that takes handoffs) join the key's queue.
-- Shared: ARGV[1] grant channel ('' for none), ARGV[2] how long to keep a fencing counter
-- in ms ('' for ever; a cluster's per-posting counters).
-- Item i (from 0): KEYS[6i+1..6i+6] lock, fencing counter, completion record, wait marker,
-- queue (ZSET: holder -> arrival), waiters (HASH: holder -> entry; the field '' holds the
-- last grant, "holder token"); ARGV[7i+3..7i+9] holder id, ttl in ms, '1' to refuse when
-- a completion record exists, '1' when the caller has waiters queued behind it (their
-- release must publish), queue: '0' do not queue, '1' queue on conflict, '2' queue on
-- conflict and leave the queue when taking the lock (the caller queued before), entry
-- lifetime in ms (renewed by refresh.lua), grant ttl in ms.
-- Returns one {code, n, text} per item: {1, token, ''} taken; {0, pttl, holder} held by
-- another; {2, 0, ''} already done; {3, 0, type} the key is not a string; {4, token, ''}
-- already handed to this holder.
local channel, keep = ARGV[1], ARGV[2]

local function acquire(lock, counter, done, marker, queue, waiters, a)
  local holder, ttl, mode = ARGV[a], ARGV[a + 1], ARGV[a + 4]
  if ARGV[a + 2] == '1' and redis.call('EXISTS', done) == 1 then
    return {2, 0, ''}
  end
  if redis.call('SET', lock, holder, 'NX', 'PX', ttl) then
    local token = next_token(counter, keep)
    if ARGV[a + 3] == '1' then
      redis.call('SET', marker, '1', 'PX', tonumber(ttl) + 5000)
    end
    if mode == '2' and redis.call('ZREM', queue, holder) == 1 then
      redis.call('HDEL', waiters, holder)
    end
    return {1, token, ''}
  end
  local kind = redis.call('TYPE', lock)['ok']
  if kind ~= 'string' then
    return {3, 0, kind}
  end
  local current = redis.call('GET', lock)
  if current == holder and mode ~= '0' then
    -- A release handed the lock to this waiter; its message may not have arrived yet.
    local to, token = string.match(redis.call('HGET', waiters, '') or '', '^(.*) (%d+)$')
    if to == holder then
      return {4, tonumber(token), ''}
    end
  end
  -- Someone waits: mark it, atomically with this failed try, so the release publishes or
  -- hands over. The marker outlives the lock (a release or expiry after it is never missed).
  local pttl = redis.call('PTTL', lock)
  local marker_life = 60000
  if pttl > 0 then marker_life = pttl + 5000 end
  redis.call('SET', marker, '1', 'PX', marker_life)
  if mode ~= '0' then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZADD', queue, 'NX', tonumber(t[1]) .. string.format('%06d', tonumber(t[2])), holder)
    redis.call('HSET', waiters, holder,
      string.format('%d', now_ms + tonumber(ARGV[a + 5])) .. '|' .. ARGV[a + 6] .. '|' .. channel)
    local life = marker_life + tonumber(ARGV[a + 5])
    redis.call('PEXPIRE', queue, life)
    redis.call('PEXPIRE', waiters, life)
  end
  return {0, pttl, current or ''}
end

local out = {}
for i = 0, #KEYS / 6 - 1 do
  local k = 6 * i
  out[i + 1] = acquire(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5],
    KEYS[k + 6], 7 * i + 3)
end
return out
