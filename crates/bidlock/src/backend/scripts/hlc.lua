-- Fencing tokens: a hybrid logical clock, above the counter and above the server clock
-- in µs, so tokens keep increasing when the counter is deleted or rolled back (a restart
-- without persistence, an AOF everysec crash, an RDB restore, a failover to a replica
-- that was behind), as long as the clock does not step back further than the time
-- between two acquires. Shared by acquire.lua and release.lua (prepended at build time).
-- `keep` (ms, or '' for ever) bounds a per-posting counter's life on a cluster.
local hlc_now
local hlc_issued = {}
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
    token = math.max((tonumber(redis.call('GET', counter)) or 0) + 1, hlc_now)
  end
  hlc_issued[counter] = token
  if keep == '' then
    redis.call('SET', counter, string.format('%d', token))
  else
    redis.call('SET', counter, string.format('%d', token), 'PX', keep)
  end
  return token
end
