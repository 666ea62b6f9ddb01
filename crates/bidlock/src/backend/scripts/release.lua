-- Release a lock if the caller holds it; wake waiters if any marked themselves.
-- KEYS[1] lock key, KEYS[2] wait marker; ARGV[1] holder id, ARGV[2] release channel,
-- ARGV[3] publish command: PUBLISH, or SPUBLISH on a cluster (pcall: a server without it only skips the message)
-- Returns 2 released and published, 1 released (nobody waited), 0 not held by this holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then
    redis.pcall(ARGV[3] or 'PUBLISH', ARGV[2], KEYS[1])
    return 2
  end
  return 1
end
return 0
