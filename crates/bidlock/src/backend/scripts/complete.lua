-- Record that a posting was handled, and release its lock if the caller still holds it.
-- The record is written either way: the bid was placed, so no one may place it again,
-- even when the lease lapsed meanwhile and someone else holds the lock now.
-- KEYS[1] lock key, KEYS[2] completion record, KEYS[3] wait marker, KEYS[4] queue;
-- ARGV[1] holder id, ARGV[2] record value,
-- ARGV[3] retention in ms, ARGV[4] release channel, ARGV[5] publish command: PUBLISH, or
-- SPUBLISH on a cluster, ARGV[6] '0' when the lock must be left alone even if it shows
-- this holder id (a lost lease whose id the caller chose: a later acquisition may hold
-- the lock under the same id), ARGV[7] '1' to publish even when nobody waits (a holder id
-- the caller chose, whose lock another manager may hold)
-- Returns 1 recorded and released; 2 recorded, the lock was not this holder's (untouched).
-- Waiters wake to find the record ("already done"), and a holder whose lock was deleted
-- learns at once: the message goes out when someone waits (a marker or a queue), when the lock is someone
-- else's (its waiters may wait behind it), or when asked. The wait marker goes with this
-- holder's lock only: a lock that is someone else's keeps its marker.
-- A lock key of another kind (junk) is nobody's lock: the record still goes in (it
-- replaces whatever the record's key held).
local held = ARGV[6] ~= '0' and not not_a_string(KEYS[1], 'a lock')
  and redis.call('GET', KEYS[1]) == ARGV[1]
local waited = redis.call('EXISTS', KEYS[3], KEYS[4]) > 0
if held then
  redis.call('DEL', KEYS[1], KEYS[3])
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if waited or not held or ARGV[7] == '1' then
  redis.pcall(ARGV[5] or 'PUBLISH', ARGV[4], KEYS[1])
end
if held then
  return 1
end
return 2
