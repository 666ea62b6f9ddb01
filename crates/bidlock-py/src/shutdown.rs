//! Interpreter exit. A runtime thread that attaches to Python while the interpreter
//! finalizes aborts the process (CPython ends such threads in ways Rust cannot unwind
//! through), and abi3 builds before 3.13 cannot ask whether it is finalizing. So at
//! `atexit` (before finalization starts) the Python layer calls [`shutdown`]: open
//! managers are closed (their locks released), then no log record crosses to Python
//! any more (results need no crossing: each loop's own thread sets them), and the ones
//! already crossing are waited for.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::get_runtime;

/// How long exit waits for open managers to release their locks.
const CLOSE_BUDGET: Duration = Duration::from_secs(3);
/// How long exit waits for log records already on their way to Python.
const CROSSING_BUDGET: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Crossings {
    /// Set once at exit: nothing new may cross.
    shut_down: bool,
    /// How many are crossing now.
    count: usize,
}

static CROSSINGS: Mutex<Crossings> = Mutex::new(Crossings {
    shut_down: false,
    count: 0,
});
/// Signalled when the last crossing ends.
static NONE_CROSSING: Condvar = Condvar::new();

fn crossings() -> MutexGuard<'static, Crossings> {
    CROSSINGS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registered while something is on its way into Python.
pub(crate) struct Crossing(());

impl Crossing {
    /// None once shut down: drop the value instead of handing it to Python.
    pub(crate) fn enter() -> Option<Crossing> {
        let mut c = crossings();
        if c.shut_down {
            return None;
        }
        c.count += 1;
        Some(Crossing(()))
    }
}

impl Drop for Crossing {
    fn drop(&mut self) {
        let mut c = crossings();
        c.count -= 1;
        if c.count == 0 {
            NONE_CROSSING.notify_all();
        }
    }
}

/// Called once from `atexit`: closes open managers, then stops all crossings.
#[pyfunction]
pub(crate) fn shutdown(py: Python<'_>) {
    py.detach(|| {
        let closed = get_runtime().block_on(async {
            tokio::time::timeout(CLOSE_BUDGET, crate::core::close_all()).await
        });
        if closed.is_err() {
            tracing::warn!(target: "bidlock::python",
                "interpreter exit: open managers did not release their locks within {CLOSE_BUDGET:?}; those locks expire after their ttl");
        }
        let mut c = crossings();
        c.shut_down = true;
        let (c, waited) = NONE_CROSSING
            .wait_timeout_while(c, CROSSING_BUDGET, |c| c.count > 0)
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            // Logging cannot reach Python any more: stderr is what is left.
            eprintln!(
                "bidlock: interpreter exit went on with {} log record(s) still on their way to Python",
                c.count
            );
        }
    });
}
