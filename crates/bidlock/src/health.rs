//! [`Health`]: what a health probe of the backend found, for readiness checks and
//! operators.

use std::time::Duration;

use crate::backend::policy_can_evict;

/// What [`BidLockManager::health`](crate::BidLockManager::health) found.
///
/// A point-in-time answer: the backend may change right after it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The store: `redis`, `redlock` or `memory`.
    pub backend: &'static str,
    /// Where the locks are (URL without password, or `memory`).
    pub location: String,
    /// The round trip of one PING (all nodes at once for Redlock).
    pub latency: Duration,
    /// `Backend::Auto` found no Redis and this manager uses memory instead.
    pub fallback: bool,
    /// Redis' `maxmemory-policy`; `None` for memory, or when `CONFIG GET` is refused (as
    /// on several managed services): unknown. For Redlock, an evicting policy if any node
    /// has one.
    pub maxmemory_policy: Option<String>,
}

impl Health {
    pub(crate) fn new(
        backend: &'static str,
        location: String,
        latency: Duration,
        fallback: bool,
        maxmemory_policy: Option<String>,
    ) -> Health {
        Health {
            backend,
            location,
            latency,
            fallback,
            maxmemory_policy,
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
