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
-- Returns one {code, text} per item: 0 not held by this holder (its queue entry, if any,
-- is removed); 1 released, nobody waited; 2 released and published; 3 handed to a queued
-- waiter; 4 the lock's key holds another kind of value ("key<TAB>what is wrong": nothing
-- was written). A queue or waiters' hash of another kind is deleted on the way.
local publish, keep = ARGV[1], ARGV[2]

local function release(lock, marker, queue, waiters, counter, done, holder, channel, tell)
  -- GET fails only on a key of another kind: only then is its kind asked for.
  local current = redis.pcall('GET', lock)
  if type(current) == 'table' then
    return {4, not_a_string(lock, 'a lock')}
  end
  -- The common case in one EXISTS: no marker, no queue, no waiters' hash. Nobody waits,
  -- nobody is queued, nothing to tidy: free the lock if it is ours.
  if redis.call('EXISTS', marker, queue, waiters) == 0 then
    if current ~= holder then
      return {0, ''}
    end
    redis.call('DEL', lock)
    if tell == '1' then
      redis.pcall(publish, channel, lock)
      return {2, ''}
    end
    return {1, ''}
  end
  local queued = redis.call('EXISTS', queue, waiters) > 0
  if queued then
    tidy(queue, waiters)
  end
  if current ~= holder then
    -- A waiter leaving (timed out, cancelled) takes its place out of the queue.
    if queued and redis.call('ZREM', queue, holder) == 1 then
      redis.call('HDEL', waiters, holder)
    end
    return {0, ''}
  end
  -- Nobody waits when there is neither a marker nor a queue (a queue may outlive its
  -- marker: a marker deleted by hand, or one that a foreign client's lock outlived).
  if redis.call('EXISTS', marker, queue) == 0 then
    redis.call('DEL', lock)
    if tell == '1' then
      redis.pcall(publish, channel, lock)
      return {2, ''}
    end
    return {1, ''}
  end
  -- A posting handled meanwhile is never handed on: every waiter must see the record.
  -- Nor is it handed on when the counter holds junk (no token to give): it is freed,
  -- and the next try says what is wrong.
  if redis.call('EXISTS', queue) == 1 and redis.call('EXISTS', done) == 0
      and not counter_problem(counter) then
    local head, grant, to = live_head(queue, waiters, time_ms(), holder)
    if head then
      hand_to(lock, queue, waiters, counter, keep, head, grant, to)
      if tell == '1' then
        -- The lock changed hands under a holder id another manager may hold: tell it.
        redis.pcall(publish, channel, lock)
      end
      return {3, ''}
    end
  end
  redis.call('DEL', lock, marker)
  if redis.call('ZCARD', queue) == 0 then
    redis.call('DEL', waiters)
  else
    redis.call('HDEL', waiters, '')
  end
  redis.pcall(publish, channel, lock)
  return {2, ''}
end

local out = {}
for i = 0, #KEYS / 6 - 1 do
  local k = 6 * i
  out[i + 1] = release(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5],
    KEYS[k + 6], ARGV[3 * i + 3], ARGV[3 * i + 4], ARGV[3 * i + 5])
end
return out
