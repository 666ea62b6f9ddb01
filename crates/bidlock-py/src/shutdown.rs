//! Interpreter exit. A runtime thread that attaches to Python while the interpreter
//! finalizes aborts the process (CPython ends such threads in ways Rust cannot unwind
//! through), and abi3 builds before 3.13 cannot ask whether it is finalizing. So at
//! `atexit` (before finalization starts) the Python layer calls [`shutdown`]: open
//! managers are closed (their locks released), then no result or log record crosses to
//! Python any more, and the ones already crossing are waited for.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::get_runtime;

use crate::manager::Core;

static SHUT_DOWN: AtomicBool = AtomicBool::new(false);
static CROSSING: AtomicUsize = AtomicUsize::new(0);
static LIVE: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

/// How long exit waits for open managers to release their locks.
const CLOSE_BUDGET: Duration = Duration::from_secs(3);
/// How long exit waits for results and log records already on their way to Python.
const CROSSING_BUDGET: Duration = Duration::from_secs(2);

/// Registered while something is on its way into Python.
pub(crate) struct Crossing(());

impl Crossing {
    /// None once shut down: drop the value instead of handing it to Python.
    pub(crate) fn enter() -> Option<Crossing> {
        CROSSING.fetch_add(1, SeqCst);
        let c = Crossing(());
        (!SHUT_DOWN.load(SeqCst)).then_some(c)
    }
}

impl Drop for Crossing {
    fn drop(&mut self) {
        CROSSING.fetch_sub(1, SeqCst);
    }
}

/// Remembers a manager so exit can close it.
pub(crate) fn track(core: &Arc<Core>) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(core));
}

/// Called once from `atexit`: closes open managers, then stops all crossings.
#[pyfunction]
pub(crate) fn shutdown(py: Python<'_>) {
    let open: Vec<Arc<Core>> = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    py.detach(|| {
        get_runtime().block_on(async {
            let closes = open.iter().map(|c| c.close());
            let _ =
                tokio::time::timeout(CLOSE_BUDGET, futures_util::future::join_all(closes)).await;
        });
        SHUT_DOWN.store(true, SeqCst);
        let deadline = Instant::now() + CROSSING_BUDGET;
        while CROSSING.load(SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
