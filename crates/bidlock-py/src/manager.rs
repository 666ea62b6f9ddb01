//! `NativeManager`: the Python face of one [`Core`], and the factory functions.

use std::sync::Arc;

use pyo3::prelude::*;

use bidlock::{Backend, BidLockManager, ConfigBuilder, Error, MetricsSnapshot};

use crate::awaitable::{spawn, OnCancel};
use crate::convert::{self, Given, Plain};
use crate::core::Core;
use crate::errors::{config_error_from, Reply};
use crate::guard::NativeGuard;

/// The process-wide manager of `get_bid_lock_manager()`.
static DEFAULT: tokio::sync::Mutex<Option<Arc<Core>>> = tokio::sync::Mutex::const_new(None);

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
#[pyo3(signature = (backend=None, ttl=None, redis_url=None, prefix=None, response_timeout=None))]
pub(crate) fn manager_from_env(
    py: Python<'_>,
    backend: Option<&str>,
    ttl: Option<f64>,
    redis_url: Option<&str>,
    prefix: Option<&str>,
    response_timeout: Option<f64>,
) -> PyResult<NativeManager> {
    let config_err = |e: bidlock::ConfigError| config_error_from(py, e.to_string());
    let mut b = ConfigBuilder::from_env().map_err(config_err)?;
    if let Some(backend) = backend_arg(py, backend)? {
        b = b.backend(backend);
    }
    if let Some(t) = ttl {
        b = b.ttl(convert::ttl_seconds(t, Given::Setting)?);
    }
    if let Some(url) = redis_url {
        b = b.redis_url(url);
    }
    if let Some(p) = prefix {
        b = b.prefix(p);
    }
    if let Some(t) = response_timeout {
        b = b.response_timeout(convert::seconds(
            "response_timeout",
            t,
            false,
            Given::Setting,
        )?);
    }
    Ok(NativeManager {
        core: Core::new(b).map_err(config_err)?,
    })
}

/// The process-wide manager, configured from the environment and connected; a new one
/// only once the previous one was closed.
#[pyfunction]
pub(crate) fn default_manager(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // Read the environment here, on the caller's thread, not in a runtime thread.
    let builder = ConfigBuilder::from_env();
    // A manager being connected for the process is kept either way.
    spawn(py, OnCancel::Finish, async move {
        let mut slot = DEFAULT.lock().await;
        if let Some(core) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Reply(Ok(NativeManager { core: core.clone() })));
        }
        let core = match builder.and_then(Core::new) {
            Ok(core) => core,
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
        match self.core.connected() {
            Some(m) => m.backend().to_string(),
            None => self.core.config.backend().to_string(),
        }
    }

    /// Where the locks are: the Redis URL without password, or `memory`; None before
    /// connecting.
    #[getter]
    fn location(&self) -> Option<String> {
        self.core.connected().map(BidLockManager::location)
    }

    /// The default lock ttl in seconds.
    #[getter]
    fn ttl(&self) -> f64 {
        self.core.config.ttl().as_secs_f64()
    }

    /// The key prefix.
    #[getter]
    fn prefix(&self) -> &str {
        self.core.config.key_prefix()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Whether the backend was reached (connects lazily).
    #[getter]
    fn connected(&self) -> bool {
        self.core.connected().is_some()
    }

    /// The warning to give once when a configured Redis was unreachable and the manager
    /// fell back to memory; None otherwise, and after the first call.
    fn take_fallback_warning(&self) -> Option<String> {
        self.core.take_fallback_warning()
    }

    /// Connects now; raises when Redis is required and cannot be reached.
    fn connect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        spawn(py, OnCancel::Stop, async move {
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
        // A wait can be long: cancelling it stops it. A single try is not worth the
        // done-callback; its result is dropped (and released) if nobody awaits it.
        let on_cancel = if timeout > 0.0 {
            OnCancel::Stop
        } else {
            OnCancel::Finish
        };
        spawn(py, on_cancel, async move {
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
        spawn(py, OnCancel::Stop, async move {
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
        spawn(py, OnCancel::Finish, async move {
            Ok(Reply(core.release_held(key, holder).await))
        })
    }

    /// The counters as a dict (zeros before the first use; the last ones after close).
    fn metrics(&self) -> PyResult<Plain> {
        let snapshot = match self.core.connected() {
            Some(m) => m.metrics(),
            None => MetricsSnapshot::default(),
        };
        Plain::of("the metrics", &snapshot)
    }

    /// Resolves to the library's `health_check()`; False when the backend cannot be
    /// reached at all; raises `ManagerClosedError` after close.
    fn health_check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        spawn(py, OnCancel::Stop, async move {
            Ok(Reply(match core.manager().await {
                Ok(m) => Ok(m.health_check().await),
                Err(Error::Closed) => Err(Error::Closed),
                // Could not connect: that is the answer, not an error.
                Err(_) => Ok(false),
            }))
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
        spawn(py, OnCancel::Stop, async move {
            let status = async { core.manager().await?.status(&key).await };
            Reply(status.await).plain("the lock status")
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
        spawn(py, OnCancel::Stop, async move {
            let locks = async { core.manager().await?.locks(marketplace_id.as_deref()).await };
            Reply(locks.await).plain("the list of locks")
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
        spawn(py, OnCancel::Stop, async move {
            let cleared = async { core.manager().await?.clear_done(&key).await };
            Ok(Reply(cleared.await))
        })
    }

    /// Removes every lock of the prefix; resolves to how many.
    fn cleanup_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        spawn(py, OnCancel::Stop, async move {
            let removed = async { core.manager().await?.cleanup_all().await };
            Ok(Reply(removed.await))
        })
    }

    /// Releases what this manager holds and stops it.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        spawn(py, OnCancel::Finish, async move {
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
