//! The library's `tracing` events, as `log` records, into Python's `logging` (logger
//! `bidlock` and its children: target `bidlock::manager` is logger `bidlock.manager`).

use std::sync::OnceLock;

use log::LevelFilter;
use pyo3::prelude::*;
use pyo3_log::{Caching, Logger, ResetHandle};

static RESET: OnceLock<ResetHandle> = OnceLock::new();

/// Installs the bridge once per process. Python loggers and their levels are cached on
/// the Rust side so a disabled level costs no GIL; `reset_log_cache` drops the cache
/// when Python's logging configuration changes (the Python layer hooks that).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    if RESET.get().is_some() {
        return Ok(());
    }
    let logger = Logger::new(py, Caching::LoggersAndLevels)?
        .filter(LevelFilter::Warn)
        .filter_target("bidlock".to_owned(), LevelFilter::Debug)
        // tracing's own span-lifecycle records (`tracing::span`) are noise here.
        .filter_target("tracing".to_owned(), LevelFilter::Off);
    match logger.install() {
        Ok(handle) => {
            let _ = RESET.set(handle);
        }
        Err(_) => {
            // Another extension in this process installed the global `log` logger;
            // its sink gets our records instead.
        }
    }
    Ok(())
}

/// Forgets the cached Python loggers and levels, so a `setLevel` takes effect at once.
#[pyfunction]
pub(crate) fn reset_log_cache() {
    if let Some(handle) = RESET.get() {
        handle.reset();
    }
}
