//! The stores that hold locks. The manager talks to [`Store`], an enum over the
//! backends, so it never knows which one it has; each backend implements the same
//! operations with the same meaning.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Backend, Config};
use crate::error::{ConfigError, Error};
use crate::keeper::LeaseKeeper;
use crate::key::LockKey;
use crate::lease::{Holder, Lease, Validity};
use crate::metrics::Metrics;
use crate::notices::Notices;
use crate::waiters::WaitQueues;

pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod redlock;

/// The outcome of one try to take a lock.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Taken, with this fencing token. How long it is held from the moment the request
    /// was sent is what [`Store::validity`] says.
    Acquired { token: u64 },
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

/// What a completion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completed {
    /// The record is written and this holder's lock was released with it.
    Released,
    /// The record is written; the lock was no longer this holder's (lost before), and was
    /// left as it is.
    NotHeld,
}

/// What a health probe found besides the round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// Redis' `maxmemory-policy`; `None` when it could not be read (or no Redis).
    pub(crate) maxmemory_policy: Option<String>,
}

/// Whether a `maxmemory-policy` lets Redis evict keys that have a ttl (locks, records).
pub(crate) fn policy_can_evict(policy: &str) -> bool {
    policy != "noeviction"
}

/// The completion record's value: `"{token} {holder}"` (one format for every store).
pub(crate) fn completion_record(lease: &Lease) -> String {
    format!("{} {}", lease.fencing_token(), lease.holder())
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

    /// What a successful acquire or extend of `ttl`, sent at some moment, guarantees.
    pub(crate) fn validity(&self, ttl: Duration, renew: bool) -> Validity {
        match self {
            Store::Memory(_) if renew => Validity::WhileHeld,
            Store::Redlock(s) => Validity::For(s.validity(ttl)),
            _ => Validity::For(ttl),
        }
    }

    /// Whether a release can tell two acquisitions with the same holder id apart (it
    /// compares the lease itself). When it cannot, a background release of a caller-given
    /// holder id is never sent: it might remove a later acquisition that uses the same id.
    pub(crate) fn tells_acquisitions_apart(&self) -> bool {
        matches!(self, Store::Memory(_))
    }

    pub(crate) async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error> {
        dispatch!(self, s => s.try_acquire(req).await)
    }

    /// Releases `key` if `holder` holds it; with `lease`, only if that acquisition does.
    pub(crate) async fn release(
        &self,
        key: &LockKey,
        holder: &Holder,
        lease: Option<&Lease>,
    ) -> Result<bool, Error> {
        match self {
            Store::Memory(s) => s.release(key, holder, lease).await,
            Store::Redis(s) => s.release(key, holder).await,
            Store::Redlock(s) => s.release(key, holder).await,
        }
    }

    /// Extends the lock of `lease` to `ttl` from now if it still holds it.
    pub(crate) async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        match self {
            Store::Memory(s) => s.extend(lease, ttl).await,
            Store::Redis(s) => s.extend(lease.key(), lease.holder(), ttl).await,
            Store::Redlock(s) => s.extend(lease.key(), lease.holder(), ttl).await,
        }
    }

    /// Whether the lock of `lease` is still its own (a check without extending).
    pub(crate) async fn holds(&self, lease: &Lease) -> Result<bool, Error> {
        dispatch!(self, s => s.holds(lease).await)
    }

    /// Writes the completion record of `lease`'s key whoever holds the lock now, and
    /// releases the lock if it is still this lease's.
    pub(crate) async fn complete(
        &self,
        lease: &Lease,
        retention: Duration,
    ) -> Result<Completed, Error> {
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

    /// One round trip.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        dispatch!(self, s => s.ping().await)
    }

    /// What the store says about its own safety (after a successful ping).
    pub(crate) async fn probe(&self) -> Probe {
        dispatch!(self, s => s.probe().await)
    }

    /// Stops background tasks. A store that keeps leases alive by itself releases the
    /// locks taken through it, marking their leases lost first.
    pub(crate) async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}

/// A store, and what the manager needs to go with it.
pub(crate) struct Connected {
    pub(crate) store: Store,
    /// The local wait queues the store signals (shared by every manager of an in-process
    /// store, one per manager otherwise).
    pub(crate) queues: Arc<WaitQueues>,
    /// The backend in use (never `Auto`).
    pub(crate) backend: Backend,
    /// `Backend::Auto` found no Redis and fell back to memory.
    pub(crate) fallback: bool,
}

/// The in-process store of `config`'s prefix.
pub(crate) fn memory(config: &Config) -> Connected {
    let store = memory::MemoryStore::shared(config.keys.clone());
    Connected {
        queues: store.queues(),
        store: Store::Memory(store),
        backend: Backend::Memory,
        fallback: false,
    }
}

/// Builds the store `config` asks for. With [`Backend::Auto`], Redis when it answers
/// within the detect timeout, else memory (one WARN log).
pub(crate) async fn connect(
    config: &Config,
    keeper: &Arc<LeaseKeeper>,
    metrics: &Arc<Metrics>,
) -> Result<Connected, Error> {
    let timeout = match config.backend {
        Backend::Memory => return Ok(memory(config)),
        Backend::Redis => config.connect_timeout,
        Backend::Auto => config.detect_timeout,
    };
    let queues = Arc::new(WaitQueues::default());
    let notices = Arc::new(Notices::new(queues.clone(), keeper.clone()));
    match connect_redis(config, timeout, notices, metrics).await {
        Ok(store) => Ok(Connected {
            store,
            queues,
            backend: Backend::Redis,
            fallback: false,
        }),
        Err(e) if config.backend == Backend::Auto && e.is_backend() => {
            tracing::warn!(target: "bidlock::manager", error = %e,
                "Redis is not reachable; using in-memory locks, which exclude only tasks of this process");
            Ok(Connected {
                fallback: true,
                ..memory(config)
            })
        }
        Err(e) => Err(e),
    }
}

/// One Redis (or Sentinel) target, or Redlock over three or more.
async fn connect_redis(
    config: &Config,
    connect_timeout: Duration,
    notices: Arc<Notices>,
    metrics: &Arc<Metrics>,
) -> Result<Store, Error> {
    let mut targets = config.redis_or_default()?;
    let settings = redis::RedisSettings {
        connect_timeout,
        response_timeout: config.response_timeout,
        subscribe: true,
        lazy: false,
        tls_ca_cert: config.tls_ca_cert.clone(),
    };
    if targets.len() > 1 {
        if targets.len() < 3 {
            return Err(ConfigError::InvalidValue {
                field: "redis urls",
                reason: format!(
                    "Redlock needs at least 3 independent masters, {} given",
                    targets.len()
                ),
            }
            .into());
        }
        let store = redlock::RedlockStore::connect(
            targets,
            config.keys.clone(),
            &settings,
            notices,
            metrics.clone(),
            config.drift_factor,
        )
        .await?;
        return Ok(Store::Redlock(store));
    }
    let target = targets.remove(0);
    let store = redis::RedisStore::connect(
        target,
        config.keys.clone(),
        &settings,
        notices,
        metrics.clone(),
    )
    .await?;
    Ok(Store::Redis(store))
}
