//! Interpreter exit. A runtime thread that attaches to Python while the interpreter
//! finalizes aborts the process (CPython ends such threads in ways Rust cannot unwind
//! through), and abi3 builds before 3.13 cannot ask whether it is finalizing. So at
//! `atexit` (before finalization starts) the Python layer calls [`shutdown`]: open
//! managers are closed (their locks released), then no log record crosses to Python
//! any more (results need no crossing: each loop's own thread sets them), and the ones
//! already crossing are waited for.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::get_runtime;

static SHUT_DOWN: AtomicBool = AtomicBool::new(false);
static CROSSING: AtomicUsize = AtomicUsize::new(0);

/// How long exit waits for open managers to release their locks.
const CLOSE_BUDGET: Duration = Duration::from_secs(3);
/// How long exit waits for log records already on their way to Python.
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

/// Called once from `atexit`: closes open managers, then stops all crossings.
#[pyfunction]
pub(crate) fn shutdown(py: Python<'_>) {
    py.detach(|| {
        get_runtime().block_on(async {
            let _ = tokio::time::timeout(CLOSE_BUDGET, crate::manager::close_all()).await;
        });
        SHUT_DOWN.store(true, SeqCst);
        let deadline = Instant::now() + CROSSING_BUDGET;
        while CROSSING.load(SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
