-- Whether the lock that `holder` holds now is a later tenure of its id than the caller's
-- (the lease whose fencing token is `token`): a grant records itself as the waiters'
-- field '' ("holder token"), and a holder id is handed the lock at most once
-- (docs/HANDOVER.md, rule 1) unless data rolled back: a restored snapshot can bring back
-- the id's queue entry from before its grant, and a release then hands the lock to the
-- id again, with a new token, after the rollback took the first tenure's lock away. The
-- caller's lock was gone meanwhile (another holder may have run): its lease is lost.
-- `token` is '' from a store that never hands locks over (a cluster, Redlock): nothing to
-- look at. Prepended at build time to renew.lua, extend.lua and holds.lua.
local function later_tenure(waiters, holder, token)
  if token == '' then
    return false
  end
  -- A waiters' hash of another kind (junk) names no grant.
  local last = redis.pcall('HGET', waiters, '')
  if type(last) ~= 'string' then
    return false
  end
  local to, granted = string.match(last, '^(.*) (%d+)$')
  return to == holder and granted ~= token
end
