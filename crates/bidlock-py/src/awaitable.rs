//! Rust futures as asyncio awaitables: the future runs on the process's tokio runtime
//! (pyo3-async-runtimes'), and its result is handed to the event loop's own thread.
//!
//! pyo3-async-runtimes' `future_into_py` delivers each result from a blocking-pool
//! thread that must take the GIL away from the busy event loop: measured here, that cost
//! more CPU in thread wake-ups than the lock operations themselves (and a delivery still
//! in flight when the interpreter finalizes aborts the process). Here a finished future
//! goes into its loop's queue, the loop is woken through a socket it watches (one byte
//! per batch), and the loop thread sets the results: no other thread takes the GIL.

use std::future::Future;
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt as _;
use pyo3_async_runtimes::tokio::get_runtime;
use tokio::sync::oneshot;

type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A finished future, waiting for its loop.
struct Ready {
    py_fut: Py<PyAny>,
    convert: Convert,
}

#[derive(Default)]
struct Queue {
    ready: Vec<Ready>,
    /// A wake-up byte is on its way; the next push need not send another.
    signalled: bool,
}

/// What runtime tasks share with one event loop.
struct Inbox {
    queue: Mutex<Queue>,
    wake: UnixStream,
}

impl Inbox {
    fn push(&self, ready: Ready) {
        let wake = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.ready.push(ready);
            !std::mem::replace(&mut q.signalled, true)
        };
        if wake {
            // Non-blocking, one byte per batch: the buffer never fills. A closed loop
            // no longer reads; its futures are gone with it.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One event loop's end (kept on the loop as `_bidlock_inbox`): results come in, and
/// the futures its tasks start go out to the runtime in one batch per loop iteration,
/// driven by one runtime task: one wake-up of the runtime per batch, Redis commands
/// that leave together, and no task per operation (measured: 2-3x the throughput of
/// a task per operation at 32 asyncio tasks).
#[pyclass(frozen, module = "bidlock._native")]
pub(crate) struct LoopInbox {
    inbox: Arc<Inbox>,
    woken: UnixStream,
    outgoing: Mutex<Vec<Task>>,
}

impl LoopInbox {
    fn take_outgoing(&self) -> Vec<Task> {
        std::mem::take(&mut *self.outgoing.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn start(batch: Vec<Task>) {
    let runtime = get_runtime();
    if batch.len() == 1 {
        for task in batch {
            runtime.spawn(task);
        }
        return;
    }
    runtime.spawn(async move {
        use futures_util::StreamExt as _;
        let mut running: futures_util::stream::FuturesUnordered<Task> = batch.into_iter().collect();
        while running.next().await.is_some() {}
    });
}

impl Drop for LoopInbox {
    fn drop(&mut self) {
        // A loop that went away before its batch left: the batch may hold releases.
        let batch = self.take_outgoing();
        if !batch.is_empty() {
            start(batch);
        }
    }
}

#[pymethods]
impl LoopInbox {
    /// Called soon after the first future of a batch was started: sends the batch.
    fn _flush(&self) {
        start(self.take_outgoing());
    }

    /// Called by the event loop when the socket is readable: sets the results.
    fn _drain(&self, py: Python<'_>) {
        let mut buf = [0u8; 64];
        loop {
            match (&self.woken).read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                _ => break,
            }
        }
        let ready = {
            let mut q = self.inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.signalled = false;
            std::mem::take(&mut q.ready)
        };
        for r in ready {
            // A failure here concerns one future (cancelled meanwhile, or a result that
            // does not convert); the others still get theirs.
            let _ = settle(py, r);
        }
    }
}

fn settle(py: Python<'_>, r: Ready) -> PyResult<()> {
    let fut = r.py_fut.bind(py);
    if fut
        .call_method0(pyo3::intern!(py, "cancelled"))?
        .is_truthy()?
    {
        return Ok(());
    }
    match (r.convert)(py) {
        Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,))?,
        Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))?,
    };
    Ok(())
}

const INBOX_ATTR: &str = "_bidlock_inbox";

/// Inboxes of loops that take no attributes (C-implemented loops such as uvloop's).
static OTHER_LOOPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn other_loops(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    OTHER_LOOPS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("weakref")?
                    .getattr("WeakKeyDictionary")?
                    .call0()?
                    .unbind(),
            )
        })
        .map(|d| d.bind(py))
}

fn inbox_of<'py>(event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, LoopInbox>> {
    let py = event_loop.py();
    let found = match event_loop.getattr(pyo3::intern!(py, INBOX_ATTR)) {
        Ok(found) => Some(found),
        Err(_) => other_loops(py)?
            .call_method1(pyo3::intern!(py, "get"), (event_loop,))
            .ok()
            .filter(|f| !f.is_none()),
    };
    if let Some(Ok(inbox)) = found.map(|f| f.cast_into::<LoopInbox>()) {
        return Ok(inbox);
    }
    let (woken, wake) = UnixStream::pair()?;
    woken.set_nonblocking(true)?;
    wake.set_nonblocking(true)?;
    let fd = woken.as_raw_fd();
    let inbox = Arc::new(Inbox {
        queue: Mutex::default(),
        wake,
    });
    let receiver = Bound::new(
        py,
        LoopInbox {
            inbox,
            woken,
            outgoing: Mutex::default(),
        },
    )?;
    // Kept by the loop itself: it lives as long as the loop, and is found without a
    // lookup table.
    if event_loop
        .setattr(pyo3::intern!(py, INBOX_ATTR), &receiver)
        .is_err()
    {
        other_loops(py)?.set_item(event_loop, &receiver)?;
    }
    event_loop.call_method1(
        pyo3::intern!(py, "add_reader"),
        (fd, receiver.getattr(pyo3::intern!(py, "_drain"))?),
    )?;
    Ok(receiver)
}

/// Runs `fut` on the runtime and returns an asyncio future of the running loop that
/// resolves to its output. Cancelling the asyncio future drops `fut` (when
/// `cancellable`; otherwise `fut` runs to its end and only the result is dropped).
pub(crate) fn spawn<'py, F, T>(
    py: Python<'py>,
    cancellable: bool,
    fut: F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let receiver = inbox_of(&event_loop)?;
    let inbox = receiver.get().inbox.clone();
    let py_fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let cancelled = if cancellable {
        let (tx, rx) = oneshot::channel::<()>();
        py_fut.call_method1(
            pyo3::intern!(py, "add_done_callback"),
            (OnDone(Mutex::new(Some(tx))),),
        )?;
        Some(rx)
    } else {
        None
    };
    let handle = py_fut.clone().unbind();
    let task: Task = Box::pin(async move {
        let outcome = match cancelled {
            Some(cancelled) => tokio::select! {
                biased;
                // Cancelled, or the asyncio future is gone: nobody can receive a result.
                _ = cancelled => return,
                outcome = fut => outcome,
            },
            None => fut.await,
        };
        inbox.push(Ready {
            py_fut: handle,
            convert: Box::new(move |py| outcome.and_then(|v| v.into_py_any(py))),
        });
    });
    let first = {
        let mut outgoing = receiver
            .get()
            .outgoing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        outgoing.push(task);
        outgoing.len() == 1
    };
    if first {
        let flush = receiver.getattr(pyo3::intern!(py, "_flush"))?;
        event_loop.call_method1(pyo3::intern!(py, "call_soon"), (flush,))?;
    }
    Ok(py_fut)
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
