//! [`Health`]: what a health probe of the backend found, for readiness checks and
//! operators.

use std::time::Duration;

use crate::backend::{policy_can_evict, ClusterProbe, Permissions, Probe};

/// What [`BidLockManager::health`](crate::BidLockManager::health) found.
///
/// A point-in-time answer: the backend may change right after it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The store: `redis` (one server, Sentinel or a cluster), `redlock` or `memory`.
    pub backend: &'static str,
    /// Where the locks are (URL without password, or `memory`).
    pub location: String,
    /// The round trip of one PING (all nodes at once for Redlock).
    pub latency: Duration,
    /// `Backend::Auto` found no Redis and this manager uses memory instead.
    pub fallback: bool,
    /// Redis' `maxmemory-policy` (from `INFO memory`, else `CONFIG GET`); `None` for
    /// memory, or when neither may be read (as on some managed services): unknown. For
    /// Redlock, an evicting policy if any node has one; for a cluster, an evicting one if
    /// any master has one.
    pub maxmemory_policy: Option<String>,
    /// What the Redis user may not do that bidlock needs (what `deploy/redis/bidlock.acl`
    /// grants): each names a command, key pattern or channel and what bidlock uses it
    /// for. Empty when the user may do all of it; `None` for memory, or when the check
    /// could not run ([`permissions_unchecked`](Self::permissions_unchecked) says why).
    /// For Redlock and a cluster, what any node lacks.
    ///
    /// A user that lacks what locks need is refused at connect, so a manager that exists
    /// lacks at most what operator commands need (`scan`: `locks`, `cleanup`, `stats`;
    /// `info`; `cluster|info`), unless the ACL changed since it connected.
    pub missing_permissions: Option<Vec<String>>,
    /// Why the Redis user's permissions could not be checked (the check needs Redis 7 or
    /// later); `None` when they were, or for memory.
    pub permissions_unchecked: Option<String>,
    /// A Redis Cluster's state as its masters report it: `ok` when every master says
    /// `ok`, `fail` when one says `fail`, `unreachable` when one does not answer; `None`
    /// when the backend is not a cluster or its masters could not be listed.
    pub cluster_state: Option<String>,
    /// How many masters of a Redis Cluster serve slots; `None` when not a cluster or
    /// unknown.
    pub masters: Option<usize>,
}

impl Health {
    pub(crate) fn new(
        backend: &'static str,
        location: String,
        latency: Duration,
        fallback: bool,
        probe: Probe,
        cluster: Option<ClusterProbe>,
    ) -> Health {
        let cluster = cluster.unwrap_or_default();
        let (missing_permissions, permissions_unchecked) = match probe.permissions {
            None => (None, None),
            Some(Permissions::Checked(m)) => (Some(m.into_iter().map(|m| m.what).collect()), None),
            Some(Permissions::Unchecked(why)) => (None, Some(why)),
        };
        Health {
            backend,
            location,
            latency,
            fallback,
            maxmemory_policy: probe.maxmemory_policy,
            missing_permissions,
            permissions_unchecked,
            cluster_state: cluster.state,
            masters: cluster.masters,
        }
    }

    /// Whether Redis may evict lock keys and completion records under memory pressure
    /// (any `maxmemory-policy` but `noeviction`): `None` when unknown or not Redis.
    ///
    /// Every lock and record has a ttl, so `volatile-*` policies evict them as readily as
    /// `allkeys-*`; an evicted lock is a lock held by two. Run Redis with `noeviction`.
    pub fn can_evict(&self) -> Option<bool> {
        self.maxmemory_policy.as_deref().map(policy_can_evict)
    }
}
