-- Take locks: SET NX PX + a fencing token each, in one round trip for a batch of
-- acquires of one manager (a lone acquire is a batch of one). On conflict, mark that
-- someone waits and (for a waiter that takes handoffs) join the key's queue, or stay in
-- it. The rules are docs/HANDOVER.md's: a queued holder id names one tenure in the queue,
-- so an id that has left the queue never joins again; a free lock goes to the first live
-- queued waiter, not to whoever tries (a try that finds it so hands it over, then queues).
-- Shared: ARGV[1] grant channel ('' for none), ARGV[2] how long to keep a fencing counter
-- in ms ('' for ever; a cluster's per-posting counters).
-- Item i (from 0): KEYS[6i+1..6i+6] lock, fencing counter, completion record, wait marker,
-- queue (ZSET: holder -> arrival), waiters (HASH: holder -> entry; the field '' holds the
-- last grant, "holder token"); ARGV[7i+3..7i+9] holder id, ttl in ms, '1' to refuse when
-- a completion record exists, '1' when the caller has waiters queued behind it (their
-- release must publish), queue: 'no' do not queue, 'join' join on conflict (a holder id
-- never queued before), 'stay' stay queued if still queued (a tenure going on), entry
-- lifetime in ms (renewed by refresh.lua), grant ttl in ms.
-- Returns one {code, n, text} per item: {1, token, ''} taken; {0, pttl, holder} held by
-- another, not queued; {5, pttl, holder} held by another, queued; {2, 0, ''} already
-- done; {3, 0, "key<TAB>what is wrong"} a key holds junk (a lock, record or counter of
-- another kind: nothing was written); {4, token, ''} already handed to this holder (its
-- tenure's grant).
local channel, keep = ARGV[1], ARGV[2]

-- Writes the entry of a queued holder and keeps the queue's keys alive at least as long.
local function write_entry(queue, waiters, holder, now_ms, entry_ms, grant_ms, life)
  redis.call('HSET', waiters, holder,
    string.format('%d', now_ms + entry_ms) .. '|' .. grant_ms .. '|' .. channel)
  for _, k in ipairs({queue, waiters}) do
    if redis.call('PTTL', k) < life then
      redis.call('PEXPIRE', k, life)
    end
  end
end

local function acquire(lock, counter, done, marker, queue, waiters, a)
  local holder, ttl, mode = ARGV[a], ARGV[a + 1], ARGV[a + 4]
  -- Whether the key has a queue or a waiters' hash (then: tidy, and a free lock goes to
  -- the first live waiter). With a completion check, one EXISTS answers both questions
  -- when none of the three keys exists, the common case.
  local crowded
  if ARGV[a + 2] == '1' then
    crowded = redis.call('EXISTS', done, queue, waiters) > 0
    if crowded and redis.call('EXISTS', done) == 1 then
      local bad = not_a_string(done, 'a completion record')
      if bad then
        return {3, 0, bad}
      end
      return {2, 0, ''}
    end
  else
    crowded = redis.call('EXISTS', queue, waiters) > 0
  end
  local bad = counter_problem(counter)
  if bad then
    return {3, 0, bad}
  end
  if crowded then
    tidy(queue, waiters)
    -- A free lock with live waiters queued goes to the first of them (unless that is
    -- us); never a posting handled meanwhile: every waiter must see the record.
    if redis.call('EXISTS', queue) == 1 and redis.call('EXISTS', lock) == 0
        and redis.call('EXISTS', done) == 0 then
      local head, grant, to = live_head(queue, waiters, time_ms(), nil)
      if head and head ~= holder then
        hand_to(lock, queue, waiters, counter, keep, head, grant, to)
      end
    end
  end
  if redis.call('SET', lock, holder, 'NX', 'PX', ttl) then
    local token = next_token(counter, keep)
    if ARGV[a + 3] == '1' then
      redis.call('SET', marker, '1', 'PX', tonumber(ttl) + 5000)
    end
    if mode == 'stay' then
      if redis.call('ZREM', queue, holder) == 1 then
        redis.call('HDEL', waiters, holder)
      end
      -- The tenure took the free lock itself: a grant to it that ran out unheard (its
      -- link stalled past the grant ttl) is no later tenure of its id (tenure.lua); the
      -- record of the last grant names this take now. The hash keeps its ttl, or gets
      -- one (rule 4) if someone took it away (PERSIST).
      local last = redis.pcall('HGET', waiters, '')
      if type(last) == 'string' and string.match(last, '^(.*) %d+$') == holder then
        redis.call('HSET', waiters, '', holder .. ' ' .. string.format('%d', token))
        if redis.call('PTTL', waiters) < 0 then
          redis.call('PEXPIRE', waiters, tonumber(ARGV[a + 6]) + 5000)
        end
      end
    end
    return {1, token, ''}
  end
  local wrong = not_a_string(lock, 'a lock')
  if wrong then
    return {3, 0, wrong}
  end
  local current = redis.call('GET', lock)
  if current == holder and mode == 'stay' then
    -- A release handed the lock to this tenure; its message may not have arrived yet.
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
  local queued = false
  if mode == 'join' or (mode == 'stay' and redis.call('ZSCORE', queue, holder)) then
    local now_ms, t = time_ms()
    if mode == 'join' then
      redis.call('ZADD', queue, 'NX', tonumber(t[1]) .. string.format('%06d', tonumber(t[2])), holder)
    end
    local entry_ms = tonumber(ARGV[a + 5])
    write_entry(queue, waiters, holder, now_ms, entry_ms, ARGV[a + 6], marker_life + entry_ms)
    queued = true
  end
  if queued then
    return {5, pttl, current}
  end
  return {0, pttl, current}
end

local out = {}
for i = 0, #KEYS / 6 - 1 do
  local k = 6 * i
  out[i + 1] = acquire(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5],
    KEYS[k + 6], 7 * i + 3)
end
hlc_flush()
return out
