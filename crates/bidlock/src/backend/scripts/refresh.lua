-- A queued waiter says it is still there (its entry lives another ARGV[2] ms), or learns
-- that a release handed it the lock (when the grant's message did not arrive), or that
-- its tenure in the queue is over (docs/HANDOVER.md). A lock found free (its holder's ttl
-- ran out, or a client that does not hand over released it) goes to the first live
-- waiter: this one, or the one it is queued behind.
-- KEYS[1] lock, KEYS[2] queue, KEYS[3] waiters, KEYS[4] fencing counter; ARGV[1] holder
-- id, ARGV[2] entry lifetime in ms, ARGV[3] grant ttl in ms, ARGV[4] grant channel,
-- ARGV[5] how long to keep a fencing counter in ms ('' for ever)
-- Returns {1, 0} still queued; {2, token} handed the lock; {0, 0} not queued any more
-- (its entry expired and was skipped, or the queue was cleared): the tenure is over. Junk
-- in the keys: a queue or waiters' hash of another kind goes (the tenure with it); a lock
-- of another kind ends the tenure (the next try says what is wrong); with a counter that
-- holds junk, a free lock is not handed over (no token to give).
if not_a_string(KEYS[1], 'a lock') then
  -- The next try reports it.
  return {0, 0}
end
tidy(KEYS[2], KEYS[3])
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  local to, token = string.match(redis.call('HGET', KEYS[3], '') or '', '^(.*) (%d+)$')
  if to == ARGV[1] then
    return {2, tonumber(token)}
  end
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return {0, 0}
end
local now_ms = time_ms()
if not holder and not counter_problem(KEYS[4]) then
  local head, grant, to = live_head(KEYS[2], KEYS[3], now_ms, nil)
  if not head then
    -- Its own entry was dead and is gone now.
    return {0, 0}
  end
  local token = hand_to(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[5], head, grant, to)
  if head == ARGV[1] then
    return {2, tonumber(token)}
  end
  if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
    return {0, 0}
  end
end
local life = tonumber(ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1],
  string.format('%d', now_ms + life) .. '|' .. ARGV[3] .. '|' .. ARGV[4])
for _, k in ipairs({KEYS[2], KEYS[3]}) do
  if redis.call('PTTL', k) < life + 5000 then
    redis.call('PEXPIRE', k, life + 5000)
  end
end
return {1, 0}
