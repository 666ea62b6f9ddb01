//! [`BidLockManager`]: the handle users hold, its shared state, and the one path each for
//! releasing and extending a lease. Acquiring lives in `acquire.rs`, bids in `bid.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{self, LockInfo, LockStatus, Store};
use crate::config::{Backend, Config};
use crate::error::Error;
use crate::health::Health;
use crate::keeper::LeaseKeeper;
use crate::key::{KeySpace, LockKey};
use crate::lease::{Holder, Lease};
use crate::metrics::{Counter, Metrics, MetricsSnapshot};
use crate::waiters::WaitQueues;

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) queues: Arc<WaitQueues>,
    holder_base: String,
    seq: AtomicU64,
    backend: Backend,
    /// `Backend::Auto` found no Redis and fell back to memory.
    fallback: bool,
    closed: AtomicBool,
    shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) keeper: Arc<LeaseKeeper>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the keeper task notice that the manager is gone.
        self.keeper.poke();
    }
}

impl Inner {
    pub(crate) fn keys(&self) -> &KeySpace {
        &self.config.keys
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// A fresh holder id: `host:pid:random:sequence`, unique per call.
    pub(crate) fn new_holder(&self) -> Holder {
        use std::fmt::Write as _;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let base = &self.holder_base;
        let mut id = String::with_capacity(base.len() + 21);
        id.push_str(base);
        let _ = write!(id, ":{n}");
        Holder::from(id.as_str())
    }

    /// Releases exactly `lease`'s lock (holder-checked): the one release path of guards,
    /// background releases and close. Counts and logs.
    pub(crate) async fn release_lease(&self, lease: &Lease) -> Result<bool, Error> {
        let released = self
            .store
            .release(lease.key(), lease.holder(), Some(lease))
            .await?;
        if released {
            self.metrics
                .count(Counter::Releases, Some(lease.key().marketplace()));
            tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(), "released");
        }
        Ok(released)
    }

    /// Releases `lease` without the caller waiting (`Drop` cannot await): at once when
    /// the store answers without I/O, else in a spawned task.
    ///
    /// Never for a caller-given holder id on a store that only sees holder ids: that id
    /// may be in use by a later acquisition, which the release would remove. The lock
    /// then expires after its ttl.
    pub(crate) fn release_detached(self: &Arc<Self>, lease: Lease) {
        if lease.holder_given() && !self.store.tells_acquisitions_apart() {
            tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(),
                "not released in the background (a holder id of your own may be reused); the lock expires after its ttl");
            return;
        }
        let inner = self.clone();
        let mut release: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            if let Err(e) = inner.release_lease(&lease).await {
                tracing::warn!(target: "bidlock::manager", key = %lease.key(), error = %e, "background release failed; the lock expires after its ttl");
            }
        });
        // An in-process store finishes on the first poll; only I/O needs a task.
        if release
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
        {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(release);
            }
            Err(_) => {
                tracing::warn!(target: "bidlock::manager", "guard dropped outside a tokio runtime; the lock expires after its ttl");
            }
        }
    }

    /// Extends `lease` to `ttl` from now: the one path of renewals and `LockGuard::extend`.
    ///
    /// Extends of one lease may overlap (a renewal and a user's extend); only the newest
    /// one's reply moves the deadline, and every extend first lowers the deadline to what
    /// it alone would guarantee, so a lost or late reply never leaves the local deadline
    /// after the store's expiry. `Ok(false)`: the lock was gone (the lease is marked lost).
    pub(crate) async fn extend_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        let validity = self.store.validity(ttl, lease.renews());
        let sent = Instant::now();
        let n = lease.begin_extend(sent, ttl, validity);
        match self.store.extend(lease, ttl).await {
            Ok(true) => {
                self.metrics
                    .count(Counter::Extensions, Some(lease.key().marketplace()));
                if lease.finish_extend(n, sent, validity) {
                    self.keeper.reschedule(lease);
                }
                Ok(true)
            }
            Ok(false) => {
                if !lease.is_released() {
                    lease.mark_lost("lock was gone or held by another holder when extending");
                }
                Ok(false)
            }
            Err(e) => {
                lease.extend_unknown(validity);
                Err(e)
            }
        }
    }
}

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

/// Connects as the environment says ([`BidLockManager::from_env`]): Redis when
/// configured and reachable, else the in-memory fallback.
///
/// # Errors
///
/// As [`BidLockManager::from_env`].
pub async fn connect() -> Result<BidLockManager, Error> {
    BidLockManager::from_env().await
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
    /// Reads the configuration from the environment and connects.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed variable; [`Error::Unavailable`] when Redis was
    /// required (`USE_REDIS_LOCKS=true`) and cannot be reached.
    pub async fn from_env() -> Result<BidLockManager, Error> {
        BidLockManager::new(Config::from_env()?).await
    }

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
        let connected = backend::connect(&config, &keeper, &metrics).await?;
        tracing::info!(target: "bidlock::manager", backend = connected.store.name(), location = %connected.store.location(), "bid lock manager ready");
        Ok(BidLockManager::assemble(connected, config, metrics, keeper))
    }

    /// A manager on the in-memory backend with default settings (tests, examples). It
    /// shares the process-wide store of the default prefix with every other such manager.
    pub fn memory() -> BidLockManager {
        let config = Config {
            backend: Backend::Memory,
            ..Config::default()
        };
        let connected = backend::memory(&config);
        BidLockManager::assemble(connected, config, Arc::default(), Arc::default())
    }

    /// The one place a manager is put together: its state and its lease keeper.
    fn assemble(
        connected: backend::Connected,
        config: Config,
        metrics: Arc<Metrics>,
        keeper: Arc<LeaseKeeper>,
    ) -> BidLockManager {
        metrics.set_backend(connected.store.name());
        let inner = Arc::new(Inner {
            store: connected.store,
            config,
            metrics,
            queues: connected.queues,
            holder_base: holder_base(),
            seq: AtomicU64::new(0),
            backend: connected.backend,
            fallback: connected.fallback,
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            keeper,
        });
        inner.tasks.spawn(crate::keeper::run(
            Arc::downgrade(&inner),
            inner.keeper.clone(),
            inner.shutdown.clone(),
        ));
        BidLockManager { inner }
    }

    /// The backend in use: [`Backend::Redis`] or [`Backend::Memory`] (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.inner.backend
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
        let released = self.inner.store.release(key, holder, None).await?;
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
    /// are, and whether Redis may evict them.
    ///
    /// # Errors
    ///
    /// A backend error naming the URL without its password.
    pub async fn health(&self) -> Result<Health, Error> {
        let latency = self.ping().await?;
        let probe = self.inner.store.probe().await;
        Ok(Health::new(
            self.inner.store.name(),
            self.location(),
            latency,
            self.inner.fallback,
            probe.maxmemory_policy,
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
        self.inner.store.close().await;
        self.inner.queues.signal_all();
    }
}
