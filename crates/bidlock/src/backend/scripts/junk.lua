-- Junk in bidlock's keys (another application, a bad migration, a person with
-- redis-cli), checked before a script writes: a script that stops half-way keeps what it
-- wrote, so every check comes first. A lock, record or counter of another kind is refused,
-- by name; a queue or waiters' hash of another kind is only in the way of the lock, and
-- goes. Prepended at build time to the scripts that read those keys.

-- Deletes a queue or waiters' hash of another kind than bidlock's (the waiters it listed,
-- if any, join again at their next refresh).
local function tidy(queue, waiters)
  for key, want in pairs({[queue] = 'zset', [waiters] = 'hash'}) do
    local kind = redis.call('TYPE', key)['ok']
    if kind ~= 'none' and kind ~= want then
      redis.call('DEL', key)
    end
  end
end

-- nil when `key` is absent or a string; else what is wrong with it, naming it (`what`:
-- what it should be).
local function not_a_string(key, what)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'string' then
    return key .. '\tholds a Redis ' .. kind .. ', not ' .. what
  end
  return nil
end

