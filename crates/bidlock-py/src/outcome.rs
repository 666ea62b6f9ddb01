//! What finishing a bid reports. The one place that knows the shape of
//! `LockGuard::complete`: `Ok(true)` recorded and released, `Ok(false)` recorded but the
//! lock had been lost meanwhile, `Err` not recorded.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use bidlock::LockGuard;

/// The outcome of writing a completion record after a successful bid.
pub(crate) enum Completion {
    /// The record is written; `released` is false when our lock had been lost meanwhile.
    Recorded { released: bool },
    /// The record is not written (the error says why): another instance may run this
    /// posting again.
    Unrecorded(bidlock::Error),
}

/// Writes the completion record and releases the lock.
pub(crate) async fn complete(guard: LockGuard) -> Completion {
    match guard.complete().await {
        Ok(released) => Completion::Recorded { released },
        Err(e) => Completion::Unrecorded(e),
    }
}

impl<'py> IntoPyObject<'py> for Completion {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    /// `(recorded, released, error message or None)`.
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            Completion::Recorded { released } => (true, released, None::<String>).into_pyobject(py),
            Completion::Unrecorded(e) => (false, false, Some(e.to_string())).into_pyobject(py),
        }
    }
}
