//! Rust futures as asyncio awaitables: the future runs on the process's tokio runtime
//! (pyo3-async-runtimes'), its asyncio future lives on the caller's event loop.
//!
//! pyo3-async-runtimes' `future_into_py` does the same, but its completion thread can
//! still be inside the event loop's `call_soon_threadsafe` (which releases the GIL
//! around the wake-up write) when the interpreter starts to finalize, and a thread that
//! re-attaches then takes the process down. Here the whole delivery is one
//! [`Crossing`], so exit waits for it; and a cancelled awaitable costs no GIL at all.

use std::future::Future;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use pyo3::IntoPyObjectExt as _;
use pyo3_async_runtimes::tokio::get_runtime;
use tokio::sync::oneshot;

use crate::shutdown::Crossing;

/// Runs `fut` on the runtime and returns an asyncio future of the running loop that
/// resolves to its output. Cancelling the asyncio future drops `fut`.
pub(crate) fn spawn<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let py_fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
    py_fut.call_method1(
        pyo3::intern!(py, "add_done_callback"),
        (OnDone(Mutex::new(Some(cancel_tx))),),
    )?;
    let target = (event_loop.unbind(), py_fut.clone().unbind());
    get_runtime().spawn(async move {
        let outcome = tokio::select! {
            biased;
            // Cancelled, or the asyncio future is gone: nobody can receive a result.
            _ = cancel_rx => return,
            outcome = fut => outcome,
        };
        let Some(crossing) = Crossing::enter() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            Python::attach(move |py| deliver(py, target, outcome));
            drop(crossing);
        });
    });
    Ok(py_fut)
}

fn deliver<T>(py: Python<'_>, (event_loop, py_fut): (Py<PyAny>, Py<PyAny>), outcome: PyResult<T>)
where
    T: for<'a> IntoPyObject<'a>,
{
    let (ok, value) = match outcome.and_then(|v| v.into_py_any(py)) {
        Ok(v) => (true, v),
        Err(e) => (false, e.into_value(py).into_any()),
    };
    let scheduled = completor(py).and_then(|complete| {
        event_loop.bind(py).call_method1(
            pyo3::intern!(py, "call_soon_threadsafe"),
            (complete, py_fut, ok, value),
        )
    });
    // A closed loop: its futures are gone with it.
    drop(scheduled);
}

static COMPLETOR: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();

fn completor(py: Python<'_>) -> PyResult<&Bound<'_, PyCFunction>> {
    COMPLETOR
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(wrap_pyfunction!(complete, py)?.unbind())
        })
        .map(|f| f.bind(py))
}

/// Runs on the event loop: sets the result unless the future was cancelled meanwhile.
#[pyfunction]
fn complete(py_fut: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    let py = py_fut.py();
    if py_fut
        .call_method0(pyo3::intern!(py, "cancelled"))?
        .is_truthy()?
    {
        return Ok(());
    }
    let method = if ok {
        pyo3::intern!(py, "set_result")
    } else {
        pyo3::intern!(py, "set_exception")
    };
    py_fut.call_method1(method, (value,))?;
    Ok(())
}

/// The asyncio future's done callback: tells the runtime task when it was cancelled.
#[pyclass(frozen)]
struct OnDone(Mutex<Option<oneshot::Sender<()>>>);

#[pymethods]
impl OnDone {
    fn __call__(&self, py_fut: &Bound<'_, PyAny>) -> PyResult<()> {
        let sender = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if py_fut
            .call_method0(pyo3::intern!(py_fut.py(), "cancelled"))?
            .is_truthy()?
        {
            if let Some(tx) = sender {
                let _ = tx.send(());
            }
        }
        // Otherwise the sender is dropped after the result was set: the task is done.
        Ok(())
    }
}
