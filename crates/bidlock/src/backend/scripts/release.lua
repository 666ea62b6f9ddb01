-- Release locks if the caller holds them, in one round trip for a batch of releases of
-- one manager (a lone release is a batch of one). When someone waits, hand the lock
-- straight to the first live waiter in the key's queue: the lock never becomes free in
-- between, so the waiter holds it one message after the release, and nobody barges ahead
-- of the queue. Otherwise free it, and publish the release (docs/HANDOVER.md, rule 3)
-- when someone waits (a wait marker or a queue) or the caller asks (`tell`): a release by
-- holder id (an operator, the original API) or of a holder id the caller chose, whose
-- lock another manager may hold, so that holder learns at once. A lease's own release
-- of a generated holder id with nobody waiting tells nobody anything: no message.
-- Shared: ARGV[1] publish command: PUBLISH, or SPUBLISH on a cluster (pcall: a server
-- without it only skips the message; waiters then find the lock free by polling),
-- ARGV[2] how long to keep a fencing counter in ms ('' for ever).
-- Item i (from 0): KEYS[6i+1..6i+6] lock, wait marker, queue, waiters, fencing counter,
-- completion record; ARGV[3i+3] holder id, ARGV[3i+4] release channel, ARGV[3i+5] '1' to
-- publish the release even when nobody waits.
-- Returns one code per item: 0 not held by this holder (its queue entry, if any, is
-- removed); 1 released, nobody waited; 2 released and published; 3 handed to a queued
-- waiter.
local publish, keep = ARGV[1], ARGV[2]

local function hand_over(lock, queue, waiters, counter, holder)
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then
      return false
    end
    redis.call('ZREM', queue, head)
    local entry = redis.call('HGET', waiters, head)
    local deadline, grant, channel
    if entry then
      deadline, grant, channel = string.match(entry, '^(%d+)|(%d+)|(.*)$')
    end
    redis.call('HDEL', waiters, head)
    -- (The releaser's own entry, left from an earlier wait, is never handed the lock.)
    if deadline and tonumber(deadline) >= now_ms and head ~= holder then
      redis.call('SET', lock, head, 'PX', grant)
      local token = string.format('%d', next_token(counter, keep))
      -- The last grant, for a waiter whose message does not arrive (one field: no growth).
      -- The hash may have been emptied above: it gets a ttl again on this path too.
      redis.call('HSET', waiters, '', head .. ' ' .. token)
      local life = tonumber(grant) + 5000
      if redis.call('PTTL', waiters) < life then
        redis.call('PEXPIRE', waiters, life)
      end
      redis.call('PUBLISH', channel, token .. ' ' .. string.len(head) .. ' ' .. head .. lock)
      return true
    end
  end
end

local function release(lock, marker, queue, waiters, counter, done, holder, channel, tell)
  if redis.call('GET', lock) ~= holder then
    -- A waiter leaving (timed out, cancelled) takes its place out of the queue.
    if redis.call('ZREM', queue, holder) == 1 then
      redis.call('HDEL', waiters, holder)
    end
    return 0
  end
  -- Nobody waits when there is neither a marker nor a queue (a queue may outlive its
  -- marker: a marker deleted by hand, or one that a foreign client's lock outlived).
  if redis.call('EXISTS', marker, queue) == 0 then
    redis.call('DEL', lock)
    if tell == '1' then
      redis.pcall(publish, channel, lock)
      return 2
    end
    return 1
  end
  -- A posting handled meanwhile is never handed on: every waiter must see the record.
  if redis.call('EXISTS', queue) == 1 and redis.call('EXISTS', done) == 0
      and hand_over(lock, queue, waiters, counter, holder) then
    return 3
  end
  redis.call('DEL', lock, marker)
  if redis.call('ZCARD', queue) == 0 then
    redis.call('DEL', waiters)
  else
    redis.call('HDEL', waiters, '')
  end
  redis.pcall(publish, channel, lock)
  return 2
end

local out = {}
for i = 0, #KEYS / 6 - 1 do
  local k = 6 * i
  out[i + 1] = release(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5],
    KEYS[k + 6], ARGV[3 * i + 3], ARGV[3 * i + 4], ARGV[3 * i + 5])
end
return out
