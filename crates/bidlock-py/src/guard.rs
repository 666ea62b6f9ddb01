//! `NativeGuard`: a held lock as Python sees it. Released by `release()`, by
//! `complete()`, or when the object is garbage collected.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::get_runtime;
use tokio_util::sync::CancellationToken;

use bidlock::{Lease, LockGuard};

use crate::awaitable::{spawn, OnCancel};
use crate::errors::Reply;
use crate::outcome;

/// A held lock (the Python `Lease` wraps it).
#[pyclass(frozen, module = "bidlock._native")]
pub(crate) struct NativeGuard {
    guard: Mutex<Option<LockGuard>>,
    lease: Lease,
    redis_key: String,
    /// Cancelled when the guard lets go of the lock, so `lost()` awaitables end.
    ended: CancellationToken,
}

impl NativeGuard {
    pub(crate) fn new(guard: LockGuard, redis_key: String) -> NativeGuard {
        NativeGuard {
            lease: guard.lease().clone(),
            guard: Mutex::new(Some(guard)),
            redis_key,
            ended: CancellationToken::new(),
        }
    }

    fn take(&self) -> Option<LockGuard> {
        let taken = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.ended.cancel();
        taken
    }
}

impl Drop for NativeGuard {
    fn drop(&mut self) {
        if let Some(guard) = self.take() {
            // Dropping a guard releases it. Do that on the runtime: this thread may hold
            // the GIL, which a runtime thread holding a store lock may be waiting for
            // (to log).
            get_runtime().spawn(async move { drop(guard) });
        }
    }
}

#[pymethods]
impl NativeGuard {
    /// The fencing token of this acquisition.
    #[getter]
    fn fencing_token(&self) -> u64 {
        self.lease.fencing_token().get()
    }

    /// The holder id stored in the lock.
    #[getter]
    fn holder_id(&self) -> &str {
        self.lease.holder().as_str()
    }

    /// The marketplace id.
    #[getter]
    fn marketplace_id(&self) -> &str {
        self.lease.key().marketplace()
    }

    /// The posting id.
    #[getter]
    fn posting_id(&self) -> &str {
        self.lease.key().posting()
    }

    /// The lock's Redis key.
    #[getter]
    fn key(&self) -> &str {
        &self.redis_key
    }

    /// Whether the lock may no longer be held.
    #[getter]
    fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Why it was lost, once it was.
    #[getter]
    fn lost_reason(&self) -> Option<&str> {
        self.lease.lost_reason()
    }

    /// Whether the guard still holds (was not released or completed).
    #[getter]
    fn is_active(&self) -> bool {
        !self.ended.is_cancelled()
    }

    /// Seconds until the lease runs out unless renewed; None while the store keeps it.
    #[getter]
    fn expires_in(&self) -> Option<f64> {
        self.lease.expires_at().map(|t| {
            t.saturating_duration_since(std::time::Instant::now())
                .as_secs_f64()
        })
    }

    /// Resolves to True when the lock is found lost, False when it was let go first.
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lease = self.lease.clone();
        let ended = self.ended.clone();
        spawn(py, OnCancel::Stop, async move {
            Ok(tokio::select! {
                biased;
                _ = lease.lost() => true,
                _ = ended.cancelled() => lease.is_lost(),
            })
        })
    }

    /// Releases the lock; resolves to whether it was still held.
    fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let guard = self.take();
        spawn(py, OnCancel::Finish, async move {
            Ok(Reply(match guard {
                Some(g) => g.release().await,
                None => Ok(false),
            }))
        })
    }

    /// Writes the completion record and releases; resolves to
    /// `(recorded, released, error)`.
    fn complete<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let guard = self.take();
        let key = self.redis_key.clone();
        spawn(py, OnCancel::Finish, async move {
            match guard {
                Some(g) => Ok(outcome::complete(g).await),
                None => Err(crate::errors::lock_lost(format!(
                    "lock {key} was already released; nothing recorded"
                ))),
            }
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "NativeGuard(key={:?}, holder_id={:?}, fencing_token={}, is_lost={})",
            self.redis_key,
            self.lease.holder().as_str(),
            self.lease.fencing_token().get(),
            self.lease.is_lost()
        )
    }
}
