//! Rust futures as asyncio awaitables. A future is polled once on the calling thread
//! (the GIL let go meanwhile): one that is ready at once (the in-process store, a guard
//! already let go) resolves in the loop's next pass without leaving the thread. Otherwise it runs on the
//! process's tokio runtime (pyo3-async-runtimes'), and its result is handed to the event
//! loop's own thread through the loop's inbox ([`crate::inbox`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt as _;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt as _;
use tokio::sync::oneshot;

use crate::inbox::{inbox_of, InFlight, LoopInbox, Ready, Task};
use crate::panic::panic_error;

/// What cancelling the asyncio future (`task.cancel()`, `asyncio.wait_for`) does to the
/// Rust future behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnCancel {
    /// Drop the Rust future at once: a wait (an acquire, a query) stops.
    Stop,
    /// Let the Rust future run to its end and drop only its result: a release or a
    /// completion, once asked for, must not stop half-way; and a single try is not worth
    /// the done-callback (a guard in a dropped result releases itself).
    Finish,
}

/// Runs `fut` on the runtime and returns an asyncio future of the running loop that
/// resolves to its output, or raises its error. A panic in `fut` raises `RustPanic` in
/// the awaiting task alone.
pub(crate) fn spawn<'py, F, T>(
    py: Python<'py>,
    on_cancel: OnCancel,
    fut: F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let py_fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let receiver = inbox_of(&event_loop)?;
    let mut fut = Box::pin(fut);
    // Polled here only while none of the loop's futures is out: with many in flight
    // (32 tasks on Redis) a poll here rarely finds an answer, and batches sent to the
    // runtime cost the loop's thread less (measured).
    if receiver.get().is_idle() {
        if let Some(outcome) = py.detach(|| poll_once(fut.as_mut())) {
            // Ready at once: no runtime task, no wake-up of the loop from another thread
            // (measured: a memory `with_lock` pair from 130–186 µs to about 15 µs).
            let ready = Ready {
                py_fut: py_fut.clone().unbind(),
                convert: converter(outcome),
            };
            LoopInbox::settle_soon(&receiver, &event_loop, ready)?;
            return Ok(py_fut);
        }
    }
    let in_flight = InFlight::new(receiver.get().inbox());
    let cancelled = match on_cancel {
        OnCancel::Stop => {
            let (tx, rx) = oneshot::channel::<()>();
            py_fut.call_method1(
                pyo3::intern!(py, "add_done_callback"),
                (OnDone(Mutex::new(Some(tx))),),
            )?;
            Some(rx)
        }
        OnCancel::Finish => None,
    };
    let handle = py_fut.clone().unbind();
    let task: Task = Box::pin(async move {
        let run = AssertUnwindSafe(fut).catch_unwind();
        let outcome = match cancelled {
            Some(cancelled) => tokio::select! {
                biased;
                // Cancelled, or the asyncio future is gone: nobody can receive a result.
                _ = cancelled => return,
                outcome = run => outcome,
            },
            None => run.await,
        };
        in_flight.push(Ready {
            py_fut: handle,
            convert: converter(outcome),
        });
    });
    if receiver.get().enqueue(task) {
        let flush = receiver.getattr(pyo3::intern!(py, "_flush"))?;
        event_loop.call_method1(pyo3::intern!(py, "call_soon"), (flush,))?;
    }
    Ok(py_fut)
}

/// What a finished future (or its panic) becomes on the loop thread.
fn converter<T>(outcome: std::thread::Result<PyResult<T>>) -> crate::inbox::Convert
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    match outcome {
        Ok(result) => Box::new(move |py| result.and_then(|v| v.into_py_any(py))),
        Err(panic) => {
            let e = panic_error(&*panic);
            Box::new(move |_| Err(e))
        }
    }
}

/// Polls `fut` once, inside the runtime's context (its timers and I/O are at hand),
/// catching a panic. `None`: not ready; the future then goes to the runtime, whose first
/// poll gives it the waker that counts (a future wakes only the waker of its latest poll,
/// so the no-op one here loses nothing).
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Option<std::thread::Result<F::Output>> {
    let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
    let mut cx = Context::from_waker(Waker::noop());
    match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
        Ok(Poll::Ready(v)) => Some(Ok(v)),
        Ok(Poll::Pending) => None,
        Err(panic) => Some(Err(panic)),
    }
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
            // The runtime task is gone already when it finished first: nothing to stop.
            if let Some(tx) = sender {
                tx.send(()).ok();
            }
        }
        // Otherwise the sender is dropped after the result was set: the task is done.
        Ok(())
    }
}
