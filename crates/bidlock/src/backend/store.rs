//! The store contract: what every backend (memory, one Redis, Sentinel or a Redis
//! Cluster, Redlock) must do, in two traits on plain data (keys, holder ids, ttls,
//! tokens): [`LockStore`], the five steps a lock needs, and [`AdminStore`], the reads and
//! whole-prefix changes of operators. Leases, wait queues and the keeper live above it.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{ClusterProbe, LockInfo, LockStatus, Probe, Queue, Topology};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::{Extend, Holder};
use crate::stats::Census;

/// One try to take a lock.
#[derive(Debug)]
pub(crate) struct TryAcquire<'a> {
    pub(crate) key: &'a LockKey,
    pub(crate) holder: &'a Holder,
    /// The caller chose the holder id (it may be shared by other acquisitions).
    pub(crate) given: bool,
    pub(crate) ttl: Duration,
    /// Refuse when the posting has a completion record.
    pub(crate) check_done: bool,
    /// Local waiters are queued behind this acquirer: its release must wake them.
    pub(crate) waiters_behind: bool,
    /// Whether the try joins (or stays in) the key's wait queue on conflict. A store
    /// without handoff answers as if it had not queued.
    pub(crate) queue: Queue,
    /// When the try is made (one clock read per try).
    pub(crate) now: tokio::time::Instant,
}

/// The outcome of one try to take a lock.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Taken, with this fencing token. How long it is held from the moment the request
    /// was sent is what [`LockStore::validity`] says.
    Acquired { token: u64 },
    /// Held by someone else, for about this much longer (`None`: it has no ttl);
    /// `queued`: the try is in the key's wait queue now (see [`Queue`]).
    Held {
        holder: Option<String>,
        ttl_left: Option<Duration>,
        queued: bool,
    },
    /// The posting has a completion record.
    Done,
    /// A release already handed the lock to this (queued) holder, with this token.
    Granted { token: u64 },
}

/// A release: of `holder`'s lock of `key` only.
#[derive(Debug)]
pub(crate) struct Release<'a> {
    pub(crate) key: &'a LockKey,
    pub(crate) holder: &'a Holder,
    /// The caller chose the holder id: a store never re-sends such a release later (a
    /// later acquisition may hold the lock under the same id by then).
    pub(crate) given: bool,
    /// Announce the release even when nobody waits (a release by holder id, or of a
    /// chosen id: another manager may hold the lock under it). docs/HANDOVER.md, rule 3.
    pub(crate) tell: bool,
    /// The lock's ttl, when the caller knows it (a lease's): it bounds how long a node is
    /// waited for, and how long a release that missed one is sent again (Redlock).
    pub(crate) ttl: Option<Duration>,
}

/// An extend of `holder`'s lock of `key` to `ttl` from now.
#[derive(Debug)]
pub(crate) struct ExtendLock<'a> {
    pub(crate) key: &'a LockKey,
    pub(crate) holder: &'a Holder,
    pub(crate) ttl: Duration,
    pub(crate) how: Extend,
    /// The lease's fencing token: a lock its holder id holds under a later grant (a queue
    /// entry of the id brought back by rolled-back data) is not the lease's.
    pub(crate) token: u64,
}

/// A completion: the record is written whoever holds the lock now, and `holder`'s lock
/// released with it if it is still `holder`'s (and `may_release`).
#[derive(Debug)]
pub(crate) struct Complete<'a> {
    pub(crate) key: &'a LockKey,
    pub(crate) holder: &'a Holder,
    /// The record's value: `"{token} {holder}"`.
    pub(crate) record: String,
    pub(crate) retention: Duration,
    /// Whether the lock may be released if it shows `holder`: not for a lost lease whose
    /// id the caller chose (a later acquisition may hold the lock under it).
    pub(crate) may_release: bool,
    /// The caller chose the holder id (see [`Release::given`]).
    pub(crate) given: bool,
    /// Announce the completion even when nobody waits (see [`Release::tell`]).
    pub(crate) tell: bool,
    /// The lock's ttl (see [`Release::ttl`]).
    pub(crate) ttl: Duration,
}

/// What a completion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completed {
    /// The record is written and this holder's lock was released with it.
    Released,
    /// The record is written; the lock was no longer this holder's (lost before), and was
    /// left as it is.
    NotHeld,
}

/// What a lock needs from a place that holds locks.
///
/// - **Atomic steps.** Each operation is one atomic step on the store (one Lua script in
///   Redis, one shard lock in memory; Redlock: one step per node, decided by majority).
/// - **Errors mean "unknown".** An `Err` from a changing operation means the step may or
///   may not have happened; a definite "no" is `Ok(false)` (or `Attempt::Held`). Callers
///   stay on the safe side: an unknown acquire is released, an unknown extend never
///   raises the lease's deadline.
/// - **Holder-checked.** `release`, `extend`, `holds` and the release part of `complete`
///   act only when the lock's holder is the given one.
/// - **Validity.** A lock taken or extended by a request sent at time `t` is held at least
///   until `t` + [`LockStore::validity`].
/// - **Tokens.** Every successful acquire returns a fencing token greater than every token
///   this store issued before for the key's prefix (on a Redis Cluster: for the key), a
///   hybrid logical clock: above the last token and above the store's clock in µs.
/// - **Notices.** A store that hears of removals made elsewhere tells the manager through
///   the [`Notices`](crate::notices::Notices) it was built with.
#[async_trait]
pub(crate) trait LockStore: Send + Sync + fmt::Debug {
    /// How long a lock taken or extended with `ttl` is held, counted from the moment its
    /// request was sent (Redlock: less its clock-drift allowance).
    fn validity(&self, ttl: Duration) -> Duration;

    /// One try to take the lock (queueing on conflict when the request says so).
    async fn try_acquire(&self, req: &TryAcquire<'_>) -> Result<Attempt, Error>;

    /// Releases the lock if `req.holder` holds it (handing it to the first live queued
    /// waiter where the store queues), or takes `req.holder`'s place out of the queue.
    async fn release(&self, req: &Release<'_>) -> Result<bool, Error>;

    /// Sets the lock's expiry if `req.holder` holds it.
    async fn extend(&self, req: &ExtendLock<'_>) -> Result<bool, Error>;

    /// Writes the completion record, releasing the lock if it is still `req.holder`'s.
    async fn complete(&self, req: &Complete<'_>) -> Result<Completed, Error>;

    /// Whether `holder` holds the lock of `key` (a read), under the tenure whose fencing
    /// token is `token` where the store hands locks over (as for [`ExtendLock`]).
    async fn holds(&self, key: &LockKey, holder: &Holder, token: u64) -> Result<bool, Error>;
}

/// What operators and the admin API need: reads, removals by force, and the store's
/// health. Reads are pictures taken over a moment (SCAN in Redis, never `KEYS`).
#[async_trait]
pub(crate) trait AdminStore: Send + Sync {
    /// Where the locks are, password hidden.
    fn location(&self) -> String;

    /// The shape of the deployment behind the store.
    fn topology(&self) -> Topology;

    /// The lock and record of `key`, read atomically.
    async fn status(&self, key: &LockKey) -> Result<LockStatus, Error>;

    /// The held locks of the prefix, optionally of one marketplace.
    async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error>;

    /// What the store holds for the prefix, posting by posting.
    async fn census(&self) -> Result<Census, Error>;

    /// Deletes the lock of `key` whoever holds it; refuses a key of another type.
    async fn force_release(&self, key: &LockKey) -> Result<bool, Error>;

    /// Deletes the completion record of `key`.
    async fn clear_done(&self, key: &LockKey) -> Result<bool, Error>;

    /// Deletes every lock of the prefix, with its handover keys (not records or counters).
    async fn cleanup_all(&self) -> Result<u64, Error>;

    /// One round trip.
    async fn ping(&self) -> Result<(), Error>;

    /// What the store says about its own safety (after a successful ping).
    async fn probe(&self) -> Probe;

    /// A cluster's state and masters; `None` for a store that is not a cluster.
    async fn cluster_probe(&self) -> Option<ClusterProbe> {
        None
    }

    /// Stops background tasks.
    async fn close(&self);
}

/// A place that holds locks: both contracts.
pub(crate) trait Store: LockStore + AdminStore {}

impl<T: LockStore + AdminStore> Store for T {}
