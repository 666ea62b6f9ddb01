-- Release a lock if the caller holds it. When someone waits, hand it straight to the
-- first live waiter in the key's queue: the lock never becomes free in between, so the
-- waiter holds it one message after the release, and nobody barges ahead of the queue.
-- With no live waiter queued, free it and wake the waiters that only watch.
-- KEYS[1] lock, KEYS[2] wait marker, KEYS[3] queue, KEYS[4] waiters, KEYS[5] fencing
-- counter, KEYS[6] completion record; ARGV[1] holder id, ARGV[2] release channel,
-- ARGV[3] publish command: PUBLISH, or SPUBLISH on a cluster (pcall: a server without it
-- only skips the message; waiters then find the lock free by polling)
-- Returns 0 not held by this holder (its queue entry, if any, is removed); 1 released,
-- nobody waited; 2 released and published; 3 handed to a queued waiter.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  -- A waiter leaving (timed out, cancelled) takes its place out of the queue.
  if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
    redis.call('HDEL', KEYS[4], ARGV[1])
  end
  return 0
end
-- Nobody waits when there is neither a marker nor a queue (a queue may outlive its marker:
-- a marker deleted by hand, or one that a foreign client's lock outlived).
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A posting handled meanwhile is never handed on: every waiter must see the record.
local handing = redis.call('EXISTS', KEYS[6]) == 0
while handing do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head then
    break
  end
  redis.call('ZREM', KEYS[3], head)
  local entry = redis.call('HGET', KEYS[4], head)
  local deadline, grant, channel
  if entry then
    deadline, grant, channel = string.match(entry, '^(%d+)|(%d+)|(.*)$')
  end
  -- (The releaser's own entry, left from an earlier wait, is never handed the lock.)
  if deadline and tonumber(deadline) >= now_ms and head ~= ARGV[1] then
    redis.call('SET', KEYS[1], head, 'PX', grant)
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local token = (tonumber(redis.call('GETSET', KEYS[5], string.format('%d', now))) or 0) + 1
    if token > now then
      redis.call('SET', KEYS[5], string.format('%d', token))
    else
      token = now
    end
    redis.call('HDEL', KEYS[4], head)
    -- The last grant, for a waiter whose message does not arrive (one field: no growth).
    redis.call('HSET', KEYS[4], '', head .. ' ' .. string.format('%d', token))
    redis.call('PUBLISH', channel,
      string.format('%d', token) .. ' ' .. string.len(head) .. ' ' .. head .. KEYS[1])
    return 3
  end
  redis.call('HDEL', KEYS[4], head)
end
redis.call('DEL', KEYS[1], KEYS[2])
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[4])
else
  redis.call('HDEL', KEYS[4], '')
end
redis.pcall(ARGV[3] or 'PUBLISH', ARGV[2], KEYS[1])
return 2
