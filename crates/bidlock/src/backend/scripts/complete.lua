-- Record that a posting was handled and release its lock, atomically.
-- KEYS[1] lock key, KEYS[2] completion record, KEYS[3] wait marker; ARGV[1] holder id,
-- ARGV[2] record value, ARGV[3] retention in ms, ARGV[4] release channel
-- Returns 1 recorded, 0 not held by this holder (nothing written).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  if redis.call('DEL', KEYS[3]) == 1 then
    redis.call('PUBLISH', ARGV[4], KEYS[1])
  end
  return 1
end
return 0
