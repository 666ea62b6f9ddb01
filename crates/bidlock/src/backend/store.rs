//! The store contract: what every backend (memory, one Redis, Sentinel or a Redis
//! Cluster, Redlock) must do, so that the manager, the guard and the keeper never know
//! which one they talk to.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AcquireRequest, Attempt, ClusterProbe, Completed, Handoff, LockInfo, LockStatus, Probe,
    Topology, Waiting,
};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::{Extend, Holder, Lease, Validity};
use crate::stats::Census;

/// A place where locks live.
///
/// # The contract
///
/// - **Atomic steps.** Each operation is one atomic step on the store (one Lua script in
///   Redis, one shard lock in memory; Redlock: one step per node, decided by majority).
///   It either happened or not; nothing is left half done.
/// - **Errors mean "unknown".** An `Err` from a changing operation (`try_acquire`,
///   `release`, `extend`, `complete`, `force_release`, `cleanup_all`) means the step may
///   or may not have happened. A definite "no" is `Ok(false)` (or `Attempt::Held`), never
///   an error. Callers stay on the safe side: an unknown acquire is released, an unknown
///   extend never raises the lease's deadline.
/// - **Holder-checked.** `release`, `extend`, `holds` and the release part of `complete`
///   act only when the lock's holder is the given one; with a `lease`, a store that can
///   tell acquisitions apart ([`Store::tells_acquisitions_apart`]) also checks that it is
///   that very acquisition.
/// - **Validity.** A lock taken or extended by a request sent at time `t` is held at least
///   until what [`Store::validity`] says, counted from `t`.
/// - **Tokens.** Every successful acquire returns a fencing token greater than every token
///   this store issued before for the key's prefix (on a Redis Cluster: for the key, whose
///   counter lives in its slot), a hybrid logical clock: above the last token and above
///   the store's clock in µs.
/// - **Notices.** A store that hears of releases made elsewhere tells the manager through
///   the [`Notices`](crate::notices::Notices) it was built with.
#[async_trait]
pub(crate) trait Store: Send + Sync + fmt::Debug {
    /// The store's kind for logs and metrics labels: `memory`, `redis`, `redlock`.
    fn name(&self) -> &'static str;

    /// Where the locks are, password hidden.
    fn location(&self) -> String;

    /// The shape of the deployment behind the store.
    fn topology(&self) -> Topology;

    /// What a successful acquire or extend of `ttl`, sent at some moment, guarantees
    /// from that moment on.
    fn validity(&self, ttl: Duration, renew: bool) -> Validity;

    /// Whether a release can tell two acquisitions with the same holder id apart (it
    /// compares the lease itself). When it cannot, a background release of a caller-given
    /// holder id is never sent: it might remove a later acquisition that uses the same id.
    fn tells_acquisitions_apart(&self) -> bool {
        false
    }

    /// Whether a release hands the lock straight to the first live queued waiter (see
    /// [`Handoff`]); then tries may queue, and queued waiters refresh their entries.
    fn takes_handoffs(&self) -> bool {
        false
    }

    /// One try to take the lock (queueing on conflict when the request says so).
    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error>;

    /// A queued waiter is still there; or learns it was handed the lock.
    async fn refresh(&self, _lease: &Lease, _handoff: Handoff) -> Result<Waiting, Error> {
        Ok(Waiting::Gone)
    }

    /// Releases `key` if `holder` holds it; with `lease`, only if that acquisition does.
    async fn release(
        &self,
        key: &LockKey,
        holder: &Holder,
        lease: Option<&Lease>,
    ) -> Result<bool, Error>;

    /// Sets the lock of `lease` to expire `ttl` from now if it still holds it: exactly
    /// ([`Extend::Exact`]), or at least, never shortening ([`Extend::Renew`]).
    async fn extend(&self, lease: &Lease, ttl: Duration, how: Extend) -> Result<bool, Error>;

    /// Whether the lock of `lease` is still its own (a check without extending).
    async fn holds(&self, lease: &Lease) -> Result<bool, Error>;

    /// Writes the completion record of `lease`'s key whoever holds the lock now, and
    /// releases the lock if it is still this lease's.
    async fn complete(&self, lease: &Lease, retention: Duration) -> Result<Completed, Error>;

    /// Deletes the lock of `key` whoever holds it; refuses a key of another type.
    async fn force_release(&self, key: &LockKey) -> Result<bool, Error>;

    /// Deletes the completion record of `key`.
    async fn clear_done(&self, key: &LockKey) -> Result<bool, Error>;

    /// The lock and record of `key`, read atomically.
    async fn status(&self, key: &LockKey) -> Result<LockStatus, Error>;

    /// The held locks of the prefix, optionally of one marketplace.
    async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error>;

    /// Deletes every lock of the prefix (not records or counters).
    async fn cleanup_all(&self) -> Result<u64, Error>;

    /// What the store holds for the prefix now, posting by posting: held locks, postings
    /// with waiters, completion records, and the fencing counter (a read; changes nothing).
    async fn census(&self) -> Result<Census, Error>;

    /// One round trip.
    async fn ping(&self) -> Result<(), Error>;

    /// What the store says about its own safety (after a successful ping).
    async fn probe(&self) -> Probe;

    /// A cluster's state and masters; `None` for a store that is not a cluster.
    async fn cluster_probe(&self) -> Option<ClusterProbe> {
        None
    }

    /// Stops background tasks. A store that keeps leases alive by itself releases the
    /// locks taken through it, marking their leases lost first.
    async fn close(&self);
}
