//! Hooks for the Python tests, to reach paths no correct call reaches.

use pyo3::prelude::*;

/// An awaitable that panics in the runtime (for the tests of the panic path: a panic in
/// one future of a batch must reach its own awaiter and leave the others alone).
#[pyfunction]
pub(crate) fn _panic_in_runtime<'py>(
    py: Python<'py>,
    message: String,
) -> PyResult<Bound<'py, PyAny>> {
    crate::awaitable::spawn(py, crate::awaitable::OnCancel::Stop, async move {
        panicking(message)
    })
}

fn panicking(message: String) -> PyResult<()> {
    std::panic::panic_any(message)
}
