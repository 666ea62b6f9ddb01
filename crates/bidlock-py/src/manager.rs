//! `NativeManager`: one bidlock manager, connected lazily, plus the table of locks taken
//! through the guide's `acquire_lock` and given back through `release_lock`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pyo3::prelude::*;

use bidlock::{
    Backend, BidLockManager, Config, ConfigBuilder, Error, LockGuard, LockKey, MetricsSnapshot,
};

use crate::convert::{self, Plain};
use crate::errors::{config_error_from, Reply};
use crate::guard::NativeGuard;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The process-wide manager of `get_bid_lock_manager()`.
static DEFAULT: tokio::sync::Mutex<Option<Arc<Core>>> = tokio::sync::Mutex::const_new(None);
/// Every manager still alive, so interpreter exit can close them.
static LIVE: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

/// Closes every open manager of the process (interpreter exit): their locks are released.
pub(crate) async fn close_all() {
    let open: Vec<Arc<Core>> = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    futures_util::future::join_all(open.iter().map(|c| c.close())).await;
}

/// One manager: its configuration, the connection made on first use, and the locks
/// held for `acquire_lock` callers.
pub(crate) struct Core {
    id: u64,
    config: Config,
    manager: tokio::sync::OnceCell<BidLockManager>,
    held: Mutex<HeldLocks>,
    closed: AtomicBool,
}

/// Guards of `acquire_lock`, by key (one live holder per key; expired ones linger until
/// `release_lock` or a prune).
#[derive(Default)]
struct HeldLocks {
    by_key: HashMap<LockKey, Vec<LockGuard>>,
    count: usize,
    prune_at: usize,
}

const PRUNE_FLOOR: usize = 64;

impl HeldLocks {
    fn insert(&mut self, guard: LockGuard, dropped: &mut Vec<LockGuard>) {
        let slot = self.by_key.entry(guard.key().clone()).or_default();
        // Someone acquired this key, so any other guard of it has lost it.
        self.count -= slot.len();
        dropped.append(slot);
        slot.push(guard);
        self.count += 1;
        if self.count > self.prune_at.max(PRUNE_FLOOR) {
            self.prune(dropped);
            self.prune_at = self.count * 2;
        }
    }

    fn prune(&mut self, dropped: &mut Vec<LockGuard>) {
        self.by_key.retain(|_, guards| {
            let (lost, live): (Vec<_>, Vec<_>) = guards.drain(..).partition(|g| g.is_lost());
            dropped.extend(lost);
            *guards = live;
            !guards.is_empty()
        });
        self.count = self.by_key.values().map(Vec::len).sum();
    }

    /// Removes the guard of `key` held by `holder`, or by anyone when `holder` is None.
    fn take(&mut self, key: &LockKey, holder: Option<&bidlock::Holder>) -> Option<LockGuard> {
        let guards = self.by_key.get_mut(key)?;
        let i = match holder {
            Some(h) => guards.iter().position(|g| g.holder() == h)?,
            None => guards.iter().position(|g| !g.is_lost()).unwrap_or(0),
        };
        let g = guards.swap_remove(i);
        if guards.is_empty() {
            self.by_key.remove(key);
        }
        self.count -= 1;
        Some(g)
    }

    fn drain(&mut self) -> Vec<LockGuard> {
        self.count = 0;
        self.by_key.drain().flat_map(|(_, g)| g).collect()
    }
}

impl Core {
    fn new(config: Config) -> Arc<Core> {
        let core = Arc::new(Core {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config,
            manager: tokio::sync::OnceCell::new(),
            held: Mutex::default(),
            closed: AtomicBool::new(false),
        });
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&core));
        drop(live);
        core
    }

    /// The connected manager, connecting on first use (again after a failed attempt).
    async fn manager(&self) -> Result<&BidLockManager, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.manager
            .get_or_try_init(|| BidLockManager::new(self.config.clone()))
            .await
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldLocks> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_key(&self, key: &LockKey) -> String {
        self.config.keys().lock_key(key)
    }

    async fn acquire_held(
        &self,
        key: LockKey,
        opts: bidlock::AcquireOptions,
    ) -> Result<bool, Error> {
        let manager = self.manager().await?;
        match manager.acquire(&key, &opts).await {
            Ok(guard) => {
                let mut dropped = Vec::new();
                self.held().insert(guard, &mut dropped);
                drop(dropped);
                Ok(true)
            }
            Err(e) if e.is_timeout() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn release_held(
        &self,
        key: LockKey,
        holder: Option<bidlock::Holder>,
    ) -> Result<bool, Error> {
        let taken = self.held().take(&key, holder.as_ref());
        match (taken, holder) {
            (Some(guard), _) => guard.release().await,
            // Not taken through this manager: the guide's release by holder id.
            (None, Some(h)) => self.manager().await?.release(&key, &h).await,
            (None, None) => Ok(false),
        }
    }

    pub(crate) async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let guards = self.held().drain();
        for guard in guards {
            if let Err(e) = guard.release().await {
                tracing::warn!(target: "bidlock::python", error = %e, "release at close failed; the lock expires after its ttl");
            }
        }
        if let Some(m) = self.manager.get() {
            m.close().await;
        }
    }
}

/// A bidlock manager (the Python manager classes wrap it).
#[pyclass(frozen, module = "bidlock._native")]
pub(crate) struct NativeManager {
    core: Arc<Core>,
}

fn backend_arg(py: Python<'_>, backend: Option<&str>) -> PyResult<Option<Backend>> {
    match backend {
        None => Ok(None),
        Some(s) => s
            .parse::<Backend>()
            .map(Some)
            .map_err(|reason| config_error_from(py, format!("backend {s:?} is invalid: {reason}"))),
    }
}

/// A manager configured from the environment (the variables of the Rust library), with
/// the given overrides; it connects on first use.
#[pyfunction]
#[pyo3(signature = (backend=None, ttl=None, redis_url=None, prefix=None))]
pub(crate) fn manager_from_env(
    py: Python<'_>,
    backend: Option<&str>,
    ttl: Option<f64>,
    redis_url: Option<&str>,
    prefix: Option<&str>,
) -> PyResult<NativeManager> {
    let config_err = |e: bidlock::ConfigError| config_error_from(py, e.to_string());
    let mut b = ConfigBuilder::from_env().map_err(config_err)?;
    if let Some(backend) = backend_arg(py, backend)? {
        b = b.backend(backend);
    }
    if let Some(t) = ttl {
        b = b.ttl(convert::seconds("ttl", t, false)?);
    }
    if let Some(url) = redis_url {
        b = b.redis_url(url);
    }
    if let Some(p) = prefix {
        b = b.prefix(p);
    }
    let config = b.build().map_err(config_err)?;
    Ok(NativeManager {
        core: Core::new(config),
    })
}

/// The process-wide manager, configured from the environment and connected; a new one
/// only once the previous one was closed.
#[pyfunction]
pub(crate) fn default_manager(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // Read the environment here, on the caller's thread, not in a runtime thread.
    let config = Config::from_env();
    // Not cancellable: a manager being connected for the process is kept either way.
    crate::awaitable::spawn(py, false, async move {
        let mut slot = DEFAULT.lock().await;
        if let Some(core) = slot.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)) {
            return Ok(Reply(Ok(NativeManager { core: core.clone() })));
        }
        let core = match config {
            Ok(config) => Core::new(config),
            Err(e) => return Ok(Reply(Err(e.into()))),
        };
        if let Err(e) = core.manager().await {
            return Ok(Reply(Err(e)));
        }
        *slot = Some(core.clone());
        Ok(Reply(Ok(NativeManager { core })))
    })
}

#[pymethods]
impl NativeManager {
    /// A number unique to this manager in the process.
    #[getter]
    fn id(&self) -> u64 {
        self.core.id
    }

    /// `redis` or `memory` once connected; before, the configured choice (`auto` too).
    #[getter]
    fn backend(&self) -> String {
        match self.core.manager.get() {
            Some(m) => m.backend().to_string(),
            None => self.core.config.backend().to_string(),
        }
    }

    /// Where the locks are: the Redis URL without password, or `memory`; None before
    /// connecting.
    #[getter]
    fn location(&self) -> Option<String> {
        self.core.manager.get().map(BidLockManager::location)
    }

    /// The default lock ttl in seconds.
    #[getter]
    fn ttl(&self) -> f64 {
        self.core.config.ttl().as_secs_f64()
    }

    /// The key prefix.
    #[getter]
    fn prefix(&self) -> &str {
        self.core.config.keys().prefix()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.core.closed.load(Ordering::Acquire)
    }

    /// Whether the backend was reached (connects lazily).
    #[getter]
    fn connected(&self) -> bool {
        self.core.manager.initialized()
    }

    /// Connects now; raises when Redis is required and cannot be reached.
    fn connect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        crate::awaitable::spawn(py, true, async move {
            Ok(Reply(core.manager().await.map(|_| ())))
        })
    }

    /// Takes the lock; resolves to a `NativeGuard`.
    // The Python keyword arguments, one for one.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (marketplace_id, posting_id, timeout, holder_id=None, ttl=None, renew=true))]
    fn acquire<'py>(
        &self,
        py: Python<'py>,
        marketplace_id: &str,
        posting_id: &str,
        timeout: f64,
        holder_id: Option<&str>,
        ttl: Option<f64>,
        renew: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = convert::key(marketplace_id, posting_id)?;
        let opts = convert::options(timeout, holder_id, ttl, renew)?;
        let core = self.core.clone();
        // A wait can be long: cancelling the task stops it. A single try is not worth
        // the done-callback; its result is dropped (and released) if nobody awaits it.
        crate::awaitable::spawn(py, timeout > 0.0, async move {
            let acquired = async {
                let guard = core.manager().await?.acquire(&key, &opts).await?;
                Ok(NativeGuard::new(guard, core.lock_key(&key)))
            };
            Ok(Reply(acquired.await))
        })
    }

    /// The guide's `acquire_lock`: resolves to True when taken (held until
    /// `release_lock` or its ttl, not renewed), False when the wait ran out.
    #[pyo3(signature = (marketplace_id, posting_id, timeout, holder_id=None, ttl=None))]
    fn acquire_lock<'py>(
        &self,
        py: Python<'py>,
        marketplace_id: &str,
        posting_id: &str,
        timeout: f64,
        holder_id: Option<&str>,
        ttl: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = convert::key(marketplace_id, posting_id)?;
        let opts = convert::options(timeout, holder_id, ttl, false)?;
        let core = self.core.clone();
        crate::awaitable::spawn(py, true, async move {
            Ok(Reply(core.acquire_held(key, opts).await))
        })
    }

    /// The guide's `release_lock`: resolves to True when released, False for a wrong
    /// holder or no lock.
    #[pyo3(signature = (marketplace_id, posting_id, holder_id=None))]
    fn release_lock<'py>(
        &self,
        py: Python<'py>,
        marketplace_id: &str,
        posting_id: &str,
        holder_id: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = convert::key(marketplace_id, posting_id)?;
        let holder = holder_id.map(convert::holder).transpose()?;
        let core = self.core.clone();
        crate::awaitable::spawn(py, false, async move {
            Ok(Reply(core.release_held(key, holder).await))
        })
    }

    /// The counters as a dict (zeros before the first use).
    fn metrics(&self) -> Plain {
        let snapshot = match self.core.manager.get() {
            Some(m) => m.metrics(),
            None => MetricsSnapshot::default(),
        };
        Plain::of(&snapshot)
    }

    /// Resolves to the library's `health_check()`; False when the backend cannot be
    /// reached at all.
    fn health_check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        crate::awaitable::spawn(py, true, async move {
            Ok(match core.manager().await {
                Ok(m) => m.health_check().await,
                Err(_) => false,
            })
        })
    }

    /// What the backend knows about the key (dict).
    fn status<'py>(
        &self,
        py: Python<'py>,
        marketplace_id: &str,
        posting_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = convert::key(marketplace_id, posting_id)?;
        let core = self.core.clone();
        crate::awaitable::spawn(py, true, async move {
            let status = async { core.manager().await?.status(&key).await };
            Ok(Reply(status.await.map(|s| Plain::of(&s))))
        })
    }

    /// The held locks, optionally of one marketplace (list of dicts).
    #[pyo3(signature = (marketplace_id=None))]
    fn locks<'py>(
        &self,
        py: Python<'py>,
        marketplace_id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        crate::awaitable::spawn(py, true, async move {
            let locks = async { core.manager().await?.locks(marketplace_id.as_deref()).await };
            Ok(Reply(locks.await.map(|l| Plain::of(&l))))
        })
    }

    /// Deletes the completion record of the key; resolves to whether there was one.
    fn clear_done<'py>(
        &self,
        py: Python<'py>,
        marketplace_id: &str,
        posting_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = convert::key(marketplace_id, posting_id)?;
        let core = self.core.clone();
        crate::awaitable::spawn(py, true, async move {
            let cleared = async { core.manager().await?.clear_done(&key).await };
            Ok(Reply(cleared.await))
        })
    }

    /// Removes every lock of the prefix; resolves to how many.
    fn cleanup_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        crate::awaitable::spawn(py, true, async move {
            let removed = async { core.manager().await?.cleanup_all().await };
            Ok(Reply(removed.await))
        })
    }

    /// Releases what this manager holds and stops it.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        crate::awaitable::spawn(py, false, async move {
            core.close().await;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "NativeManager(id={}, backend={:?}, location={:?})",
            self.core.id,
            self.backend(),
            self.location()
        )
    }
}
