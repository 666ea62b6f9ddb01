-- Fencing tokens: a hybrid logical clock, above the counter and above the server clock
-- in µs, so tokens keep increasing when the counter is deleted or rolled back (a restart
-- without persistence, an AOF everysec crash, an RDB restore, a failover to a replica
-- that was behind), as long as the clock does not step back further than the time
-- between two acquires. Prepended at build time to every script that issues tokens.
-- `keep` (ms, or '' for ever) bounds a per-posting counter's life on a cluster.
-- A counter is written once per script, with the last token issued from it (hlc_flush),
-- not once per token: the script is atomic, so nobody sees the counter in between, and
-- the largest token is all that a later script needs to count on from.
local hlc_now
local hlc_read = {}
local hlc_issued = {}
local hlc_unwritten = {}

-- nil when `counter` is absent or holds a whole number (read once per script); else what
-- is wrong with it, naming it. Checked before a script writes anything.
local function counter_problem(counter)
  if hlc_read[counter] then
    return nil
  end
  local v = redis.pcall('GET', counter)
  if type(v) == 'table' then
    return counter .. '\tholds a Redis ' .. redis.call('TYPE', counter)['ok'] ..
      ', not a fencing counter'
  end
  -- A whole number Lua counts exactly: below 2^53 (tokens are µs since 1970, about
  -- 2^50.7 today).
  if v and not (string.match(v, '^%d+$') and #v <= 16 and tonumber(v) < 9007199254740992) then
    return counter .. '\tholds ' .. string.format('%q', string.sub(v, 1, 40)) ..
      ', not a fencing counter'
  end
  hlc_read[counter] = tonumber(v or '0')
  return nil
end

-- The next token of `counter` (whose problem, if any, the caller has ruled out).
local function next_token(counter, keep)
  local token = hlc_issued[counter]
  if token then
    -- Several tokens in one script: the clock was read once; count on from the last.
    token = token + 1
  else
    if not hlc_now then
      local t = redis.call('TIME')
      hlc_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    counter_problem(counter)
    token = math.max((hlc_read[counter] or 0) + 1, hlc_now)
  end
  hlc_issued[counter] = token
  hlc_unwritten[counter] = keep
  return token
end

-- Writes each counter that issued tokens since the last flush, with its last token. Every
-- script that issues tokens calls it before a token leaves by any way but the script's
-- answer (a grant recorded or published) and before it returns: an answer never carries
-- a token above what the counter holds.
local function hlc_flush()
  for counter, keep in pairs(hlc_unwritten) do
    local v = string.format('%d', hlc_issued[counter])
    if keep == '' then
      redis.call('SET', counter, v)
    else
      redis.call('SET', counter, v, 'PX', keep)
    end
  end
  hlc_unwritten = {}
end
