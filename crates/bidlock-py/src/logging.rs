//! The library's `tracing` events, as `log` records, into Python's `logging` (logger
//! `bidlock` and its children: target `bidlock::manager` is logger `bidlock.manager`).

use std::sync::OnceLock;

use log::{LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3_log::{Caching, Logger, ResetHandle};

use crate::shutdown::Crossing;

static RESET: OnceLock<ResetHandle> = OnceLock::new();

/// pyo3-log, closed at interpreter exit like every other crossing into Python.
struct Bridge(Logger);

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if let Some(_crossing) = Crossing::enter() {
            self.0.log(record);
        }
    }

    fn flush(&self) {}
}

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
    let handle = logger.reset_handle();
    if log::set_boxed_logger(Box::new(Bridge(logger))).is_ok() {
        log::set_max_level(LevelFilter::Debug);
        let _ = RESET.set(handle);
    }
    // Otherwise another extension in this process installed the global `log` logger;
    // its sink gets our records instead.
    Ok(())
}

/// Forgets the cached Python loggers and levels, so a `setLevel` takes effect at once.
#[pyfunction]
pub(crate) fn reset_log_cache() {
    if let Some(handle) = RESET.get() {
        handle.reset();
    }
}
