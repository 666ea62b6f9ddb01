//! The stores that hold locks. The manager talks to [`Store`], an enum over the
//! backends, so it never knows which one it has; each backend implements the same
//! operations with the same meaning.

use std::time::Duration;

use crate::error::Error;
use crate::key::LockKey;
use crate::lease::{Holder, Lease};

pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod redlock;

/// The outcome of one try to take a lock.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Taken, with this fencing token; `valid_for` shortens the lease (Redlock: the ttl
    /// less the time the acquire took and the drift allowance).
    Acquired {
        token: u64,
        valid_for: Option<Duration>,
    },
    /// Held by someone else, for about this much longer (`None`: no expiry known).
    Held {
        holder: Option<String>,
        ttl_left: Option<Duration>,
    },
    /// The posting has a completion record.
    Done,
}

/// One held lock as listed by `locks`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's Redis key (`bid_lock:{marketplace}:{posting}`).
    pub redis_key: String,
    /// The marketplace id.
    pub marketplace: String,
    /// The posting id.
    pub posting: String,
    /// The holder id stored in the lock.
    pub holder: String,
    /// Time left before the lock expires, in milliseconds (`None`: no expiry).
    pub ttl_left_ms: Option<u64>,
}

/// Everything known about one key: its lock and its completion record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LockStatus {
    /// The lock's Redis key.
    pub redis_key: String,
    /// The holder, when the lock is held.
    pub holder: Option<String>,
    /// Time left before the lock expires, in milliseconds.
    pub ttl_left_ms: Option<u64>,
    /// The completion record, when the posting was handled.
    pub done: Option<String>,
    /// Time left before the completion record expires, in milliseconds.
    pub done_ttl_left_ms: Option<u64>,
}

/// What one acquire asks of the store.
#[derive(Debug)]
pub(crate) struct AcquireRequest<'a> {
    pub(crate) key: &'a LockKey,
    pub(crate) lease: &'a Lease,
    pub(crate) ttl: Duration,
    pub(crate) renew: bool,
    pub(crate) check_done: bool,
    /// Local waiters are queued behind this acquirer: its release must wake them.
    pub(crate) waiters_behind: bool,
    /// When the try is made (one clock read per try).
    pub(crate) now: tokio::time::Instant,
}

impl AcquireRequest<'_> {
    pub(crate) fn holder(&self) -> &Holder {
        self.lease.holder()
    }
}

/// The backends, dispatched statically: no boxed futures on the hot path.
// One per manager: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
    Redlock(redlock::RedlockStore),
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Redis($s) => $e,
            Store::Redlock($s) => $e,
        }
    };
}

impl Store {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
            Store::Redlock(_) => "redlock",
        }
    }

    /// Where the store is, password hidden.
    pub(crate) fn location(&self) -> String {
        match self {
            Store::Memory(_) => "memory".to_owned(),
            Store::Redis(s) => s.location().to_owned(),
            Store::Redlock(s) => s.location(),
        }
    }

    /// Whether operations leave the process (and can fail or be cancelled half-way).
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self, Store::Memory(_))
    }

    /// How long a lease confirmed now stays valid for a lock of `ttl`.
    pub(crate) fn validity(&self, ttl: Duration) -> Duration {
        match self {
            Store::Redlock(s) => s.validity(ttl),
            _ => ttl,
        }
    }

    /// Whether a held lease stays valid for as long as its guard lives without a
    /// watchdog (the memory store checks the lease itself).
    pub(crate) fn renews_implicitly(&self) -> bool {
        matches!(self, Store::Memory(_))
    }

    pub(crate) async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error> {
        dispatch!(self, s => s.try_acquire(req).await)
    }

    pub(crate) async fn release(&self, key: &LockKey, holder: &Holder) -> Result<bool, Error> {
        dispatch!(self, s => s.release(key, holder).await)
    }

    /// Releases without waiting, where the store can (memory): `Some(released)`.
    pub(crate) fn release_now(&self, key: &LockKey, holder: &Holder) -> Option<bool> {
        match self {
            Store::Memory(s) => Some(s.release_sync(key, holder)),
            _ => None,
        }
    }

    pub(crate) async fn extend(
        &self,
        key: &LockKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.extend(key, holder, ttl).await)
    }

    pub(crate) async fn complete(&self, lease: &Lease, retention: Duration) -> Result<bool, Error> {
        dispatch!(self, s => s.complete(lease, retention).await)
    }

    pub(crate) async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        dispatch!(self, s => s.force_release(key).await)
    }

    pub(crate) async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        dispatch!(self, s => s.clear_done(key).await)
    }

    pub(crate) async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        dispatch!(self, s => s.status(key).await)
    }

    pub(crate) async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        dispatch!(self, s => s.list(marketplace).await)
    }

    pub(crate) async fn cleanup_all(&self) -> Result<u64, Error> {
        dispatch!(self, s => s.cleanup_all().await)
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        dispatch!(self, s => s.ping().await)
    }

    pub(crate) async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}
