//! [`BidLockManager`]: acquire, wait, release, renew, complete — the same on every
//! backend.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::memory::MemoryStore;
use crate::backend::redis::{RedisSettings, RedisStore};
use crate::backend::{AcquireRequest, Attempt, LockInfo, LockStatus, Store};
use crate::backoff::Backoff;
use crate::config::{Backend, Config};
use crate::error::{ConfigError, Error};
use crate::guard::{LockGuard, ReleaseOnDrop};
use crate::keeper::LeaseKeeper;
use crate::key::{KeySpace, LockKey};
use crate::lease::{Holder, Lease};
use crate::metrics::{Counter, Metrics, MetricsSnapshot};
use crate::waiters::WaitQueues;

/// The default time an acquire waits for a busy lock: 10 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// How one acquire behaves. Start from [`AcquireOptions::new`] (wait 10 s, the manager's
/// ttl, a generated holder id, renewal on).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bidlock::AcquireOptions;
/// let opts = AcquireOptions::new()
///     .timeout(Duration::from_secs(5))
///     .ttl(Duration::from_secs(60))
///     .holder("instance-1");
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AcquireOptions {
    timeout: Duration,
    ttl: Option<Duration>,
    holder: Option<Holder>,
    renew: bool,
    check_done: bool,
}

impl Default for AcquireOptions {
    fn default() -> Self {
        AcquireOptions {
            timeout: DEFAULT_WAIT,
            ttl: None,
            holder: None,
            renew: true,
            check_done: true,
        }
    }
}

impl AcquireOptions {
    /// The defaults: wait up to 10 s, the manager's ttl, a generated holder, renewal on.
    pub fn new() -> AcquireOptions {
        AcquireOptions::default()
    }

    /// How long to wait for a busy lock; zero tries once.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Try once, do not wait.
    pub fn no_wait(self) -> Self {
        self.timeout(Duration::ZERO)
    }

    /// The lock's ttl (default: the manager's, 300 s unless configured).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The holder id to store (default: generated, unique per acquisition).
    pub fn holder(mut self, holder: impl Into<Holder>) -> Self {
        self.holder = Some(holder.into());
        self
    }

    /// Whether a watchdog renews the lease every ttl/3 while the guard lives (default
    /// true). Without renewal the lock expires after its ttl even while held.
    pub fn renew(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// Whether a completion record makes the acquire return [`Error::AlreadyDone`]
    /// (default true).
    pub fn check_done(mut self, check: bool) -> Self {
        self.check_done = check;
        self
    }

    /// The wait.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }
}

pub(crate) fn check_ttl(ttl: Duration) -> Result<Duration, Error> {
    if ttl < Duration::from_millis(10) {
        return Err(ConfigError::InvalidValue {
            field: "ttl",
            reason: format!("{ttl:?} is too short; use at least 10 ms"),
        }
        .into());
    }
    Ok(ttl)
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    queues: Arc<WaitQueues>,
    holder_base: String,
    seq: AtomicU64,
    backend: Backend,
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

    /// Releases without the caller waiting: inline where the store can, else in a
    /// spawned task. Used by `Drop`, which cannot await.
    pub(crate) fn release_detached(self: &Arc<Self>, key: LockKey, holder: Holder) {
        if let Some(released) = self.store.release_now(&key, &holder) {
            if released {
                self.metrics
                    .count(Counter::Releases, Some(key.marketplace()));
            }
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let inner = self.clone();
                handle.spawn(async move {
                    match inner.store.release(&key, &holder).await {
                        Ok(true) => inner.metrics.count(Counter::Releases, Some(key.marketplace())),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(target: "bidlock::manager", %key, error = %e, "background release failed; the lock expires after its ttl")
                        }
                    }
                });
            }
            Err(_) => {
                tracing::warn!(target: "bidlock::manager", %key, "guard dropped outside a tokio runtime; the lock expires after its ttl");
            }
        }
    }

    pub(crate) async fn release_held(&self, lease: &Lease) -> Result<bool, Error> {
        let released = self.store.release(lease.key(), lease.holder()).await?;
        if released {
            self.metrics
                .count(Counter::Releases, Some(lease.key().marketplace()));
            tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(), "released");
        } else {
            lease.mark_lost("lock was gone or held by another holder at release");
        }
        Ok(released)
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
/// | hold a lock across code you control, release explicitly | [`acquire`](Self::acquire) → [`LockGuard`] |
/// | release a lock held elsewhere (operators, the original API) | [`release`](Self::release) |
///
/// `with_lock` alone does not stop a second bid after the first holder released: the next
/// instance simply gets the lock. `bid_once` closes that hole with a completion record.
#[derive(Clone)]
pub struct BidLockManager {
    inner: Arc<Inner>,
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
    /// # Errors
    ///
    /// [`Error::Unavailable`] when [`Backend::Redis`] cannot be reached (the message names
    /// the URL without its password); [`Error::Config`] for an unsupported combination.
    pub async fn new(config: Config) -> Result<BidLockManager, Error> {
        let queues = Arc::new(WaitQueues::default());
        let metrics = Arc::new(Metrics::default());
        let keys = config.keys.clone();
        let (store, backend) = match config.backend {
            Backend::Memory => (
                Store::Memory(MemoryStore::new(keys, queues.clone())),
                Backend::Memory,
            ),
            Backend::Redis => (
                connect_redis(&config, config.connect_timeout, &queues, &metrics).await?,
                Backend::Redis,
            ),
            Backend::Auto => {
                match connect_redis(&config, config.detect_timeout, &queues, &metrics).await {
                    Ok(store) => (store, Backend::Redis),
                    Err(e) if e.is_backend() => {
                        tracing::warn!(target: "bidlock::manager", error = %e,
                            "Redis is not reachable; using in-memory locks, which exclude only tasks of this process");
                        (
                            Store::Memory(MemoryStore::new(keys, queues.clone())),
                            Backend::Memory,
                        )
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        tracing::info!(target: "bidlock::manager", backend = store.name(), location = %store.location(), "bid lock manager ready");
        Ok(BidLockManager::assemble(
            store, config, metrics, queues, backend,
        ))
    }

    /// A manager on the in-memory backend with default settings (tests, examples).
    pub fn memory() -> BidLockManager {
        let config = Config {
            backend: Backend::Memory,
            ..Config::default()
        };
        let queues = Arc::new(WaitQueues::default());
        let store = Store::Memory(MemoryStore::new(config.keys.clone(), queues.clone()));
        BidLockManager::assemble(store, config, Arc::default(), queues, Backend::Memory)
    }

    /// The one place a manager is put together: its state, and the lease keeper for
    /// stores that need one.
    fn assemble(
        store: Store,
        config: Config,
        metrics: Arc<Metrics>,
        queues: Arc<WaitQueues>,
        backend: Backend,
    ) -> BidLockManager {
        let needs_keeper = !store.renews_implicitly();
        metrics.set_backend(store.name());
        let inner = Arc::new(Inner {
            store,
            config,
            metrics,
            queues,
            holder_base: holder_base(),
            seq: AtomicU64::new(0),
            backend,
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            keeper: Arc::default(),
        });
        if needs_keeper {
            inner.tasks.spawn(crate::keeper::run(
                Arc::downgrade(&inner),
                inner.keeper.clone(),
                inner.shutdown.clone(),
            ));
        }
        BidLockManager { inner }
    }

    /// The backend in use: [`Backend::Redis`] or [`Backend::Memory`] (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.inner.backend
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
        use std::fmt::Write as _;
        let n = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let base = &self.inner.holder_base;
        let mut id = String::with_capacity(base.len() + 21);
        id.push_str(base);
        let _ = write!(id, ":{n}");
        Holder::from(id.as_str())
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Takes the lock of `key`, waiting up to `opts` timeout while another holder has it.
    ///
    /// Waiting costs no polling while someone holds the lock: a release wakes the first
    /// local waiter within about one round trip (pub/sub in Redis), and waiters in one
    /// process are served first come, first served. Backoff (50 ms ×1.5 up to 1 s, with
    /// jitter) and the holder's remaining ttl are only the safety net.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves nothing behind. If it is dropped while a
    /// try is in flight, a release of that try's holder id is sent in the background.
    ///
    /// # Errors
    ///
    /// [`Error::NotAcquired`] when the wait ran out, [`Error::AlreadyDone`] when the
    /// posting has a completion record, [`Error::Config`] for a ttl under 10 ms, a
    /// backend error when Redis fails (never reported as acquired), [`Error::Closed`]
    /// after [`close`](Self::close).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
    /// use bidlock::{AcquireOptions, BidLockManager, LockKey};
    /// let manager = BidLockManager::memory();
    /// let key = LockKey::new("upwork", "job_123")?;
    /// let guard = manager.acquire(&key, &AcquireOptions::new()).await?;
    /// // place the bid with guard.fencing_token() ...
    /// assert!(guard.release().await?);
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self, key: &LockKey, opts: &AcquireOptions) -> Result<LockGuard, Error> {
        use tracing::Instrument as _;
        let span = tracing::debug_span!(target: "bidlock::manager", "acquire", %key, holder = tracing::field::Empty, token = tracing::field::Empty);
        self.acquire_in_span(key, opts).instrument(span).await
    }

    async fn acquire_in_span(
        &self,
        key: &LockKey,
        opts: &AcquireOptions,
    ) -> Result<LockGuard, Error> {
        self.check_open()?;
        let ttl = check_ttl(opts.ttl.unwrap_or(self.inner.config.ttl))?;
        let start = Instant::now();
        let inner = &self.inner;
        inner
            .metrics
            .count(Counter::LockAttempts, Some(key.marketplace()));
        let holder = opts.holder.clone().unwrap_or_else(|| self.new_holder());
        let lease = Lease::new(key.clone(), holder, inner.metrics.clone());
        lease.set_ttl(ttl);
        lease.set_renews(opts.renew);
        tracing::Span::current().record("holder", lease.holder().as_str());
        let mut req = AcquireRequest {
            key,
            lease: &lease,
            ttl,
            renew: opts.renew,
            check_done: opts.check_done,
            waiters_behind: false,
            now: start,
        };
        let deadline = start + opts.timeout;
        // Join the queue before the first try (a release between a failed try and the
        // wait then still wakes us); when others already wait, queue behind them.
        let ticket = (!opts.timeout.is_zero()).then(|| inner.queues.enqueue(key));
        let mut may_try = ticket.as_ref().is_none_or(|t| t.is_front());
        let mut backoff = Backoff::new(inner.config.retry);
        let mut last_holder = None;
        let mut first = true;
        loop {
            let mut hint = None;
            if may_try {
                req.waiters_behind = ticket.as_ref().is_some_and(|t| t.has_company());
                let tried_at = if first { start } else { Instant::now() };
                first = false;
                req.now = tried_at;
                // A remote try can be cancelled or fail with an unknown outcome (a reply
                // lost or late: the script may still run). Leaving this armed releases
                // this holder's lock in the background, so no orphan blocks the posting
                // for a whole ttl. A memory try is synchronous: nothing to cover.
                let in_flight = inner
                    .store
                    .is_remote()
                    .then(|| ReleaseOnDrop::new(inner, key, lease.holder()));
                let attempt = inner.store.try_acquire(&req).await;
                if attempt.is_ok() {
                    if let Some(g) = in_flight {
                        g.disarm();
                    }
                }
                match attempt {
                    Ok(Attempt::Acquired { token, valid_for }) => {
                        if let Some(t) = ticket {
                            t.leave(false);
                        }
                        lease.set_token(token);
                        tracing::Span::current().record("token", token);
                        let valid_for = valid_for.unwrap_or(ttl);
                        return Ok(self.held(lease, ttl, valid_for, opts.renew, start, tried_at));
                    }
                    Ok(Attempt::Done) => {
                        if let Some(t) = ticket {
                            t.leave(true);
                        }
                        inner
                            .metrics
                            .count(Counter::AlreadyDone, Some(key.marketplace()));
                        return Err(Error::AlreadyDone {
                            key: inner.keys().lock_key(key),
                        });
                    }
                    Ok(Attempt::Held { holder, ttl_left }) => {
                        inner
                            .metrics
                            .count(Counter::LockConflicts, Some(key.marketplace()));
                        last_holder = holder;
                        hint = ttl_left;
                    }
                    Err(e) => {
                        if let Some(t) = ticket {
                            t.leave(true);
                        }
                        return Err(e);
                    }
                }
            }
            let now = Instant::now();
            let Some(ticket) = ticket.as_ref().filter(|_| now < deadline) else {
                inner
                    .metrics
                    .count(Counter::LockTimeouts, Some(key.marketplace()));
                tracing::debug!(target: "bidlock::manager", %key, waited = ?now - start, "not acquired");
                return Err(Error::NotAcquired {
                    key: inner.keys().lock_key(key),
                    waited: now - start,
                    holder: last_holder,
                });
            };
            let mut sleep = backoff.next_delay();
            if let Some(left) = hint {
                // Look again right when the holder's ttl runs out.
                sleep = sleep.min(left + Duration::from_millis(1));
            }
            let wake_at = (now + sleep).min(deadline);
            tracing::trace!(target: "bidlock::manager", sleep = ?(wake_at - now), "waiting");
            let signalled = tokio::select! {
                _ = ticket.signalled() => true,
                _ = tokio::time::sleep_until(wake_at) => false,
            };
            if Instant::now() >= deadline && !signalled {
                // One last look at the deadline, then give up.
                may_try = ticket.is_front();
                if !may_try {
                    continue;
                }
            } else {
                may_try = signalled || ticket.is_front();
            }
        }
    }

    fn held(
        &self,
        lease: Lease,
        ttl: Duration,
        valid_for: Duration,
        renew: bool,
        start: Instant,
        tried_at: Instant,
    ) -> LockGuard {
        let inner = &self.inner;
        inner
            .metrics
            .count(Counter::LockSuccesses, Some(lease.key().marketplace()));
        let waited = if start == tried_at {
            Duration::ZERO
        } else {
            start.elapsed()
        };
        inner.metrics.record_wait(waited, lease.key().marketplace());
        tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(), token = %lease.fencing_token(), "acquired");
        let kept = if inner.store.renews_implicitly() {
            if renew {
                lease.valid_while_alive();
            } else {
                lease.valid_until(tried_at + ttl);
            }
            false
        } else {
            // The lock's ttl started after we sent the try: counting from the send is
            // the safe side.
            lease.valid_until(tried_at + valid_for);
            inner.keeper.register(&lease, tried_at);
            true
        };
        LockGuard::new(inner.clone(), lease, kept)
    }

    /// Tries once to take the lock, without waiting.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); [`Error::NotAcquired`] when the lock is held.
    pub async fn try_acquire(
        &self,
        key: &LockKey,
        opts: &AcquireOptions,
    ) -> Result<LockGuard, Error> {
        self.acquire(key, &opts.clone().no_wait()).await
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
        let released = self.inner.store.release(key, holder).await?;
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

    /// Deletes the lock of `key` whoever holds it (operators). The holder's guard is
    /// told it lost the lock at its next renewal.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] when the key is not a lock (nothing is deleted); backend errors.
    pub async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        self.inner.store.force_release(key).await
    }

    /// Runs `f` while holding the lock of `key`, and releases it on every exit path:
    /// return, panic (the panic resumes after the release), and cancellation (the drop
    /// releases in the background).
    ///
    /// `f` receives the [`Lease`]: pass its fencing token with the bid, and watch
    /// `lease.lost()` if the work is long. The closure's value is returned as it is,
    /// even if the lease was lost meanwhile; check `lease.is_lost()` when that matters.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire). A failing release after `f` is logged, not
    /// returned (the lock then expires after its ttl).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
    /// use bidlock::{AcquireOptions, BidLockManager, LockKey};
    /// let manager = BidLockManager::memory();
    /// let key = LockKey::new("upwork", "job_123")?;
    /// let token = manager
    ///     .with_lock(&key, &AcquireOptions::new(), |lease| async move {
    ///         // place_bid(&key, lease.fencing_token()).await
    ///         lease.fencing_token()
    ///     })
    ///     .await?;
    /// # let _ = token;
    /// # Ok(()) }
    /// ```
    pub async fn with_lock<F, Fut, T>(
        &self,
        key: &LockKey,
        opts: &AcquireOptions,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire(key, opts).await?;
        let outcome = AssertUnwindSafe(f(guard.lease().clone()))
            .catch_unwind()
            .await;
        if let Err(e) = guard.release().await {
            tracing::warn!(target: "bidlock::manager", %key, error = %e, "release after with_lock failed; the lock expires after its ttl");
        }
        match outcome {
            Ok(v) => Ok(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs `f` at most once per posting across the fleet: under the lock, and only if
    /// no instance completed the posting before. When `f` returns `Ok`, a completion
    /// record is written atomically with the release (kept for the configured retention,
    /// 7 days by default); when it returns `Err` or panics, the lock is released without a
    /// record so another instance may retry.
    ///
    /// Returns the closure's own result inside the lock's result.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyDone`] at once when the posting was completed before (`f` is not
    /// run); [`Error::LockLost`] when `f` succeeded but the lock was lost before the
    /// record could be written (the fencing token is then what protects the bid); and
    /// everything [`acquire`](Self::acquire) returns.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
    /// use bidlock::{AcquireOptions, BidLockManager, LockKey};
    /// let manager = BidLockManager::memory();
    /// let key = LockKey::new("upwork", "job_123")?;
    /// let opts = AcquireOptions::new();
    /// let first = manager
    ///     .bid_once(&key, &opts, |lease| async move { Ok::<_, std::io::Error>(lease.fencing_token()) })
    ///     .await?;
    /// assert!(first.is_ok());
    /// let again = manager
    ///     .bid_once(&key, &opts, |_| async { Ok::<_, std::io::Error>(unreachable!()) })
    ///     .await;
    /// assert!(again.unwrap_err().is_already_done());
    /// # Ok(()) }
    /// ```
    pub async fn bid_once<F, Fut, T, E>(
        &self,
        key: &LockKey,
        opts: &AcquireOptions,
        f: F,
    ) -> Result<Result<T, E>, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let guard = self.acquire(key, &opts.clone().check_done(true)).await?;
        match AssertUnwindSafe(f(guard.lease().clone()))
            .catch_unwind()
            .await
        {
            Ok(Ok(v)) => {
                guard.complete().await?;
                Ok(Ok(v))
            }
            Ok(Err(e)) => {
                if let Err(re) = guard.release().await {
                    tracing::warn!(target: "bidlock::manager", %key, error = %re, "release after a failed bid failed; the lock expires after its ttl");
                }
                Ok(Err(e))
            }
            Err(panic) => {
                let _ = guard.release().await;
                std::panic::resume_unwind(panic)
            }
        }
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
    /// Backend errors.
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

    /// `true` when the backend answers (PING for Redis).
    pub async fn health_check(&self) -> bool {
        self.ping().await.is_ok()
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

    /// Removes every lock of this prefix (SCAN + delete in batches; completion records,
    /// the fencing counter and foreign keys stay). Holders are told at their next renewal.
    ///
    /// # Errors
    ///
    /// Backend errors (locks deleted before the error stay deleted).
    pub async fn cleanup_all(&self) -> Result<u64, Error> {
        let n = self.inner.store.cleanup_all().await?;
        tracing::info!(target: "bidlock::manager", removed = n, "cleanup_all");
        Ok(n)
    }

    /// Closes the manager gracefully: new acquires fail with [`Error::Closed`], leases
    /// stop renewing and the locks held through this manager are released (waiting up to
    /// the response timeout), and background tasks stop. Guards still alive are marked
    /// lost.
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

async fn connect_redis(
    config: &Config,
    connect_timeout: Duration,
    queues: &Arc<WaitQueues>,
    metrics: &Arc<Metrics>,
) -> Result<Store, Error> {
    let mut targets = config.redis_or_default()?;
    let settings = RedisSettings {
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
        return Ok(Store::Redlock(
            crate::backend::redlock::RedlockStore::connect(
                targets,
                config.keys.clone(),
                &settings,
                queues.clone(),
                metrics.clone(),
                config.drift_factor,
            )
            .await?,
        ));
    }
    let target = targets.remove(0);
    Ok(Store::Redis(
        RedisStore::connect(
            target,
            config.keys.clone(),
            &settings,
            queues.clone(),
            metrics.clone(),
        )
        .await?,
    ))
}
