//! [`BidLockManager`]: the handle users hold — construction, release by holder id, the
//! admin API and close. Its state is in `inner.rs`, acquiring in `acquire.rs`, bids in
//! `bid.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{self, LockInfo, LockStatus, Topology};
use crate::config::{Backend, Config};
use crate::error::Error;
use crate::health::Health;
use crate::inner::Inner;
use crate::keeper::LeaseKeeper;
use crate::key::LockKey;
use crate::lease::Holder;
use crate::metrics::{Counter, Metrics, MetricsSnapshot};
use crate::stats::FleetStats;

/// Coordinates bids: one lock per `(marketplace, posting)`, in Redis or in memory.
///
/// Cheap to clone (an `Arc` inside); share one per process.
///
/// # Which call should I use?
///
/// | you want | call |
/// | --- | --- |
/// | place a bid at most once per posting, across the fleet and over time | [`bid_once`](Self::bid_once) |
/// | run a closure under the lock, released on every exit path | [`with_lock`](Self::with_lock) |
/// | hold a lock across code you control, release explicitly | [`acquire`](Self::acquire) → [`LockGuard`](crate::LockGuard) |
/// | release a lock held elsewhere (operators, the original API) | [`release`](Self::release) |
///
/// `with_lock` alone does not stop a second bid after the first holder released: the next
/// instance simply gets the lock. `bid_once` closes that hole with a completion record.
#[derive(Clone)]
pub struct BidLockManager {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for BidLockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BidLockManager")
            .field("backend", &self.inner.backend)
            .field("location", &self.inner.store.location())
            .field("prefix", &self.inner.keys().prefix())
            .finish_non_exhaustive()
    }
}

/// Reads the configuration from the environment and connects: Redis when configured
/// and reachable, else the in-memory fallback (the original system's
/// `get_bid_lock_manager()`). The same as `BidLockManager::new(Config::from_env()?)`.
///
/// # Errors
///
/// [`Error::Config`] for a malformed variable; [`Error::Unavailable`] when Redis was
/// required (`USE_REDIS_LOCKS=true`) and cannot be reached.
pub async fn connect() -> Result<BidLockManager, Error> {
    BidLockManager::new(Config::from_env()?).await
}

fn holder_base() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let host: String = host.chars().filter(|c| !c.is_control()).take(64).collect();
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl BidLockManager {
    /// Builds a manager for `config`.
    ///
    /// With [`Backend::Auto`], Redis is used when it answers within the detect timeout,
    /// else memory, with one WARN log saying locks are now local to this process.
    ///
    /// The in-memory backend is one store per key prefix for the whole process: two
    /// memory managers of one prefix exclude each other, as two clients of one Redis do.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when [`Backend::Redis`] cannot be reached (the message names
    /// the URL without its password); [`Error::Config`] for an unsupported combination.
    pub async fn new(config: Config) -> Result<BidLockManager, Error> {
        let metrics = Arc::new(Metrics::default());
        let keeper = Arc::new(LeaseKeeper::default());
        let uid = holder_base();
        let connected = backend::connect(&config, &uid, &keeper, &metrics).await?;
        tracing::info!(target: "bidlock::manager", backend = connected.store.topology().kind(), location = %connected.store.location(), "bid lock manager ready");
        Ok(BidLockManager::assemble(
            connected, config, metrics, keeper, uid,
        ))
    }

    /// A manager on the in-memory backend with default settings (tests, examples). It
    /// shares the process-wide store of the default prefix with every other such manager.
    pub fn memory() -> BidLockManager {
        let config = Config {
            backend: Backend::Memory,
            ..Config::default()
        };
        let keeper = Arc::new(LeaseKeeper::default());
        let connected = backend::memory(&config, &keeper);
        BidLockManager::assemble(connected, config, Arc::default(), keeper, holder_base())
    }

    /// The one place a manager is put together. Its lease keeper task starts with the
    /// first lease that needs one, so building a manager needs no runtime.
    fn assemble(
        connected: backend::Connected,
        config: Config,
        metrics: Arc<Metrics>,
        keeper: Arc<LeaseKeeper>,
        uid: String,
    ) -> BidLockManager {
        // Leases count from before their first request: the clock base is set now.
        crate::clock::start();
        metrics.set_backend(connected.store.topology().kind());
        let inner = Arc::new(Inner {
            store: connected.store,
            config,
            metrics,
            queues: connected.queues,
            holder_base: uid,
            seq: AtomicU64::new(0),
            backend: connected.backend,
            fallback: connected.fallback,
            store_queues: Default::default(),
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            keeper,
            notices: connected.notices,
        });
        if let Some(notices) = &inner.notices {
            let weak: std::sync::Weak<Inner> = Arc::downgrade(&inner);
            notices.attach(weak);
        }
        BidLockManager { inner }
    }

    /// The backend in use: [`Backend::Redis`] or [`Backend::Memory`] (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The shape of the deployment behind the locks: memory, one Redis, Sentinel,
    /// Redlock over N masters, or a Redis Cluster of N masters.
    pub fn topology(&self) -> Topology {
        self.inner.store.topology()
    }

    /// Whether [`Backend::Auto`] found no Redis and this manager uses memory instead.
    pub fn is_fallback(&self) -> bool {
        self.inner.fallback
    }

    /// Where the locks are: the Redis URL without password, or `memory`.
    pub fn location(&self) -> String {
        self.inner.store.location()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A fresh holder id: `host:pid:random:sequence`, unique per call.
    pub fn new_holder(&self) -> Holder {
        self.inner.new_holder()
    }

    /// Releases `key` if `holder` holds it (the original system's `release_lock`).
    ///
    /// Returns `Ok(false)` and changes nothing when another holder has the lock or
    /// nobody does (counted in `holder_mismatches`).
    ///
    /// # Cancel safety
    ///
    /// The release is one atomic script: it either ran or did not.
    ///
    /// # Errors
    ///
    /// A backend error when Redis cannot be reached.
    pub async fn release(&self, key: &LockKey, holder: &Holder) -> Result<bool, Error> {
        let req = crate::backend::Release {
            key,
            holder,
            given: true,
            // A release by holder id concerns whoever holds the lock under that id: tell.
            tell: true,
            ttl: None,
        };
        let released = self.inner.store.release(&req).await?;
        if released {
            self.inner
                .metrics
                .count(Counter::Releases, Some(key.marketplace()));
            tracing::debug!(target: "bidlock::manager", %key, %holder, "released");
        } else {
            self.inner
                .metrics
                .count(Counter::HolderMismatches, Some(key.marketplace()));
            tracing::debug!(target: "bidlock::manager", %key, %holder, "release refused: holder mismatch or not held");
        }
        Ok(released)
    }

    /// Deletes the lock of `key` whoever holds it (operators). Every manager holding it
    /// learns at once from the release message (memory: immediately).
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] when the key is not a lock (nothing is deleted); backend errors.
    pub async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        self.inner.store.force_release(key).await
    }

    /// What the backend knows about `key`: holder, ttl left, completion record.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] when the key holds another Redis type; backend errors.
    pub async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        self.inner.store.status(key).await
    }

    /// Whether `key` has a completion record.
    ///
    /// # Errors
    ///
    /// Backend errors.
    pub async fn is_done(&self, key: &LockKey) -> Result<bool, Error> {
        Ok(self.status(key).await?.done.is_some())
    }

    /// Deletes the completion record of `key` (to allow bidding again).
    ///
    /// # Errors
    ///
    /// Backend errors.
    pub async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        self.inner.store.clear_done(key).await
    }

    /// The held locks of this prefix, optionally of one marketplace (SCAN in batches in
    /// Redis, never KEYS).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for a malformed marketplace id; backend errors.
    pub async fn locks(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        if let Some(m) = marketplace {
            crate::key::validate_marketplace(m)?;
        }
        self.inner.store.list(marketplace).await
    }

    /// The fleet's picture as the backend holds it: held locks, postings with waiters,
    /// completion records and the last fencing token of this prefix, in total and per
    /// marketplace (see [`FleetStats`]). Unlike [`metrics`](Self::metrics), which counts
    /// what this manager did, this reads what every instance left in the store.
    ///
    /// Redis: SCAN in batches (never `KEYS`) over the prefix's names, so it is safe on a
    /// busy server but not an atomic snapshot. Sentinel: the current master. Redlock:
    /// every node at once, a majority must answer, and the picture is what they agree on
    /// (a lock held by the same holder on a majority, as [`locks`](Self::locks) lists
    /// them; a waiter or completion record on any answering node; the highest counter).
    /// Memory: this process's store of the prefix.
    ///
    /// # Errors
    ///
    /// Backend errors; [`Error::NoQuorum`] when too few Redlock nodes answer.
    pub async fn stats(&self) -> Result<FleetStats, Error> {
        Ok(self.inner.store.census().await?.count())
    }

    /// A point-in-time snapshot of the counters (names of the original system plus more).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Whether locks are shared through the backend this manager was asked for: `true`
    /// when it answers (PING for Redis) or is an explicitly chosen memory store; `false`
    /// when Redis does not answer, and after [`Backend::Auto`] fell back to memory (as the
    /// original system's `health_check()`: Redis was wanted and is not there).
    pub async fn health_check(&self) -> bool {
        !self.inner.fallback && self.ping().await.is_ok()
    }

    /// Pings the backend and returns the round-trip time.
    ///
    /// # Errors
    ///
    /// A backend error naming the URL without its password.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        self.inner.store.ping().await?;
        Ok(start.elapsed())
    }

    /// Pings the backend and reports what an operator needs: latency, where the locks
    /// are, whether Redis may evict them, and for a Redis Cluster its state and how many
    /// masters serve slots.
    ///
    /// # Errors
    ///
    /// A backend error naming the URL without its password.
    pub async fn health(&self) -> Result<Health, Error> {
        let latency = self.ping().await?;
        let probe = self.inner.store.probe().await;
        let cluster = self.inner.store.cluster_probe().await;
        Ok(Health::new(
            self.inner.store.topology().kind(),
            self.location(),
            latency,
            self.inner.fallback,
            probe,
            cluster,
        ))
    }

    /// Removes every lock of this prefix (SCAN + delete in batches; completion records,
    /// the fencing counter and foreign keys stay). Holders learn at once from the release
    /// messages.
    ///
    /// # Errors
    ///
    /// Backend errors (locks deleted before the error stay deleted).
    pub async fn cleanup_all(&self) -> Result<u64, Error> {
        let n = self.inner.store.cleanup_all().await?;
        tracing::info!(target: "bidlock::manager", removed = n, "cleanup_all");
        Ok(n)
    }

    /// Closes the manager gracefully: new acquires fail with [`Error::Closed`]; every
    /// lease held through it is marked lost, then its lock released (waiting up to the
    /// response timeout); background tasks stop.
    ///
    /// # Cancel safety
    ///
    /// The manager is closed from the first poll on. If the future is dropped before it
    /// finishes, some locks may be left to expire after their ttl.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        let _ =
            tokio::time::timeout(self.inner.config.response_timeout, self.inner.tasks.wait()).await;
        // The keeper task marks every lease lost and releases it as it stops; one that
        // could not (its runtime shut down, or is not running now) left them: here.
        let left = self.inner.keeper.drain();
        if !left.is_empty() {
            crate::renewal::release_all(&self.inner, left).await;
        }
        self.inner.store.close().await;
        self.inner.queues.signal_all();
    }
}
