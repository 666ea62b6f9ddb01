//! Hooks for the Python tests, to reach paths no correct call reaches.

use pyo3::prelude::*;

/// An awaitable that panics in the runtime (for the tests of the panic path: a panic in
/// one future of a batch must reach its own awaiter and leave the others alone). It
/// yields once first, so its first poll, on the caller's thread, finds it pending.
#[pyfunction]
pub(crate) fn _panic_in_runtime<'py>(
    py: Python<'py>,
    message: String,
) -> PyResult<Bound<'py, PyAny>> {
    crate::awaitable::spawn(py, crate::awaitable::OnCancel::Stop, async move {
        tokio::task::yield_now().await;
        panicking(message)
    })
}

/// An awaitable that panics on its first poll, on the caller's thread.
#[pyfunction]
pub(crate) fn _panic_at_once<'py>(py: Python<'py>, message: String) -> PyResult<Bound<'py, PyAny>> {
    crate::awaitable::spawn(py, crate::awaitable::OnCancel::Stop, async move {
        panicking(message)
    })
}

fn panicking(message: String) -> PyResult<()> {
    std::panic::panic_any(message)
}
