//! One event loop's end of the bridge: the Rust futures its tasks start go out to the
//! runtime in batches, and their results come back to the loop's own thread.
//!
//! pyo3-async-runtimes' `future_into_py` delivers each result from a blocking-pool
//! thread that must take the GIL away from the busy event loop: measured here, that cost
//! more CPU in thread wake-ups than the lock operations themselves (and a delivery still
//! in flight when the interpreter finalizes aborts the process). Here a finished future
//! goes into its loop's queue, the loop is woken through a socket it watches (one byte
//! per batch), and the loop thread sets the results: no other thread takes the GIL.
//!
//! Going out, the futures started in one loop iteration leave as one batch, driven by
//! one runtime task: one wake-up of the runtime per batch, Redis commands that leave
//! together, and no task per operation (measured: 2-3x the throughput of a task per
//! operation at 32 asyncio tasks).

// The wake-up socket is a Unix socket pair; pyproject.toml declares POSIX only.
#[cfg(not(unix))]
compile_error!(
    "bidlock's Python package supports Unix (Linux, macOS) only: its event-loop bridge \
     wakes asyncio through a Unix socket pair (see crates/bidlock-py/src/inbox.rs)"
);

use std::future::Future;
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3_async_runtimes::tokio::get_runtime;

use crate::panic::panic_error;

/// Turns a finished future's output into the asyncio future's result, on the loop thread.
pub(crate) type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A future started by the loop's tasks, on its way to the runtime.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A finished future, waiting for its loop.
pub(crate) struct Ready {
    pub(crate) py_fut: Py<PyAny>,
    pub(crate) convert: Convert,
}

#[derive(Default)]
struct Queue {
    ready: Vec<Ready>,
    /// A wake-up byte is on its way; the next push need not send another.
    signalled: bool,
}

/// What runtime tasks share with one event loop: where results go.
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    wake: UnixStream,
    /// The loop's futures on the runtime or on their way there.
    in_flight: AtomicUsize,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data (a list of
    // results or of futures to start) is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one future of a loop as in flight while it lives (see [`LoopInbox::is_idle`]).
pub(crate) struct InFlight(Arc<Inbox>);

impl InFlight {
    pub(crate) fn new(inbox: &Arc<Inbox>) -> InFlight {
        inbox.in_flight.fetch_add(1, Ordering::AcqRel);
        crate::spin::call_sent();
        InFlight(inbox.clone())
    }

    /// Hands the finished future's result to the loop, counted out first: when the loop
    /// sees the result, the future no longer counts as in flight.
    pub(crate) fn push(self, ready: Ready) {
        let inbox = Arc::clone(&self.0);
        drop(self);
        inbox.push(ready);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        crate::spin::call_answered();
    }
}

impl Inbox {
    /// Queues a result and wakes the loop unless a wake-up is already on its way.
    fn push(&self, ready: Ready) {
        let wake = {
            let mut q = locked(&self.queue);
            q.ready.push(ready);
            !std::mem::replace(&mut q.signalled, true)
        };
        if wake {
            match (&self.wake).write(&[1]) {
                Ok(_) => {}
                // The buffer holds unread bytes: the loop wakes for them anyway.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => tracing::debug!(target: "bidlock::python", error = %e,
                    "an event loop no longer listens (closed): its results are dropped"),
            }
        }
    }
}

/// One event loop's end of the bridge (kept on the loop as `_bidlock_inbox`).
#[pyclass(frozen, module = "bidlock._native")]
pub(crate) struct LoopInbox {
    inbox: Arc<Inbox>,
    woken: UnixStream,
    outgoing: Mutex<Vec<Task>>,
    /// Answers that were ready at once, set in the loop's next pass.
    soon: Mutex<Vec<Ready>>,
}

impl LoopInbox {
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Adds a future to the batch of this loop iteration; true when it is the first one
    /// (the caller then schedules [`LoopInbox::_flush`]).
    pub(crate) fn enqueue(&self, task: Task) -> bool {
        let mut outgoing = locked(&self.outgoing);
        outgoing.push(task);
        outgoing.len() == 1
    }

    /// Whether none of this loop's futures is on the runtime or on its way there.
    pub(crate) fn is_idle(&self) -> bool {
        self.inbox.in_flight.load(Ordering::Acquire) == 0
    }

    fn take_outgoing(&self) -> Vec<Task> {
        std::mem::take(&mut *locked(&self.outgoing))
    }
}

/// Starts a batch on the runtime: one task drives them all.
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
            let mut q = locked(&self.inbox.queue);
            q.signalled = false;
            std::mem::take(&mut q.ready)
        };
        settle_all(py, ready);
    }

    /// Called soon after the first answer of this iteration that was ready at once.
    fn _settle_soon(&self, py: Python<'_>) {
        settle_all(py, std::mem::take(&mut *locked(&self.soon)));
    }
}

impl LoopInbox {
    /// Sets an answer that was ready at once in the loop's next pass, not now: an
    /// `await` still yields to the loop once, so a task that retries or polls in a loop
    /// does not starve the others (the holder it waits for among them).
    pub(crate) fn settle_soon(
        slf: &Bound<'_, LoopInbox>,
        event_loop: &Bound<'_, PyAny>,
        ready: Ready,
    ) -> PyResult<()> {
        let first = {
            let mut soon = locked(&slf.get().soon);
            soon.push(ready);
            soon.len() == 1
        };
        if first {
            let py = slf.py();
            let settle = slf.getattr(pyo3::intern!(py, "_settle_soon"))?;
            event_loop.call_method1(pyo3::intern!(py, "call_soon"), (settle,))?;
        }
        Ok(())
    }
}

fn settle_all(py: Python<'_>, ready: Vec<Ready>) {
    for r in ready {
        // Each future gets its own result, whatever happens to the others.
        let py_fut = r.py_fut.clone_ref(py);
        let settled = std::panic::catch_unwind(AssertUnwindSafe(|| settle(py, r)))
            .unwrap_or_else(|panic| settle_with(py, py_fut.bind(py), Err(panic_error(&*panic))));
        if let Err(e) = settled {
            // The asyncio future refused its result: nobody awaits it to be told.
            e.write_unraisable(py, Some(py_fut.bind(py)));
        }
    }
}

fn settle(py: Python<'_>, r: Ready) -> PyResult<()> {
    settle_with(py, r.py_fut.bind(py), (r.convert)(py))
}

/// Sets `outcome` on `fut`, unless it was cancelled meanwhile (then the outcome is
/// dropped: a guard in it releases itself). The common case costs one call into asyncio.
fn settle_with(
    py: Python<'_>,
    fut: &Bound<'_, PyAny>,
    outcome: PyResult<Py<PyAny>>,
) -> PyResult<()> {
    let set = match outcome {
        Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
    };
    match set {
        Ok(_) => Ok(()),
        // asyncio's InvalidStateError for a future cancelled meanwhile: nobody waits.
        Err(_)
            if fut
                .call_method0(pyo3::intern!(py, "cancelled"))?
                .is_truthy()? =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
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

/// The inbox of `event_loop`, made on first use.
pub(crate) fn inbox_of<'py>(event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, LoopInbox>> {
    let py = event_loop.py();
    let found = match event_loop.getattr(pyo3::intern!(py, INBOX_ATTR)) {
        Ok(found) => Some(found),
        // No attribute yet, or a loop that takes none: look in the side table.
        Err(_) => other_loops(py)?
            .call_method1(pyo3::intern!(py, "get"), (event_loop,))?
            .into(),
    };
    if let Some(inbox) = found.and_then(|f| f.cast_into::<LoopInbox>().ok()) {
        return Ok(inbox);
    }
    let (woken, wake) = UnixStream::pair()?;
    woken.set_nonblocking(true)?;
    wake.set_nonblocking(true)?;
    let fd = woken.as_raw_fd();
    let receiver = Bound::new(
        py,
        LoopInbox {
            inbox: Arc::new(Inbox {
                queue: Mutex::default(),
                wake,
                in_flight: AtomicUsize::new(0),
            }),
            woken,
            outgoing: Mutex::default(),
            soon: Mutex::default(),
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
