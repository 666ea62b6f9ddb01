-- The key's wait queue (docs/HANDOVER.md): the first live waiter, and handing the lock
-- to it. Shared by acquire.lua, refresh.lua and release.lua (prepended at build time,
-- after hlc.lua, whose next_token it uses, and junk.lua). A free lock is never left to whoever tries
-- first while a live waiter is queued: every script that finds it free hands it over.

local function time_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t
end

-- The first live waiter of `queue`: its id, grant ttl in ms and channel, after taking
-- dead entries (and `skip`, a releaser's own id left from an earlier wait) off the head.
-- nil when no live waiter is queued.
local function live_head(queue, waiters, now_ms, skip)
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then
      return nil
    end
    local entry = redis.call('HGET', waiters, head)
    local deadline, grant, channel
    if entry then
      deadline, grant, channel = string.match(entry, '^(%d+)|(%d+)|(.*)$')
    end
    -- An entry that is not what bidlock writes (junk) counts as dead: it goes.
    local g = tonumber(grant)
    if deadline and tonumber(deadline) >= now_ms and head ~= skip
        and g and g >= 1 and g <= 60000 and channel ~= '' then
      return head, grant, channel
    end
    redis.call('ZREM', queue, head)
    redis.call('HDEL', waiters, head)
  end
end

-- Hands `lock` to the queued waiter `head`: it leaves the queue and holds the lock for
-- its grant ttl with a new token, recorded as the last grant (for a waiter whose message
-- does not arrive) and published on its manager's channel. Returns the token.
local function hand_to(lock, queue, waiters, counter, keep, head, grant, channel)
  redis.call('ZREM', queue, head)
  redis.call('HDEL', waiters, head)
  redis.call('SET', lock, head, 'PX', grant)
  local token = string.format('%d', next_token(counter, keep))
  hlc_flush()
  -- One field: no growth. The hash may have been emptied above: it gets a ttl again.
  redis.call('HSET', waiters, '', head .. ' ' .. token)
  local life = tonumber(grant) + 5000
  if redis.call('PTTL', waiters) < life then
    redis.call('PEXPIRE', waiters, life)
  end
  redis.call('PUBLISH', channel, token .. ' ' .. string.len(head) .. ' ' .. head .. lock)
  return token
end
