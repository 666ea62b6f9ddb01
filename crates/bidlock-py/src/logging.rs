//! The library's `tracing` events, as `log` records, into Python's `logging` (logger
//! `bidlock` and its children: target `bidlock::manager` is logger `bidlock.manager`).

use std::sync::OnceLock;

use log::{LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
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

/// The most verbose level any `bidlock` logger of Python passes, as `log`'s global
/// maximum: a record below it is dropped by an atomic load in the caller, before it is
/// even built (the per-target lookup of pyo3-log cost about a tenth of the runtime's CPU
/// at full load, for debug records nobody listened to). Records of other crates go up to
/// WARN, as the bridge's filter below allows.
fn python_max_level(py: Python<'_>) -> PyResult<LevelFilter> {
    let logging = py.import("logging")?;
    let logger_class = logging.getattr("Logger")?;
    let mut loggers = vec![logging.call_method1("getLogger", ("bidlock",))?];
    let known = logger_class.getattr("manager")?.getattr("loggerDict")?;
    for (name, logger) in known.cast_into::<PyDict>()?.iter() {
        // Placeholders (names with no logger of their own yet) have no level.
        let ours = name.is_instance_of::<PyString>()
            && name
                .call_method1(pyo3::intern!(py, "startswith"), ("bidlock.",))?
                .is_truthy()?;
        if ours && logger.is_instance(&logger_class)? {
            loggers.push(logger);
        }
    }
    let levels = [
        (10, LevelFilter::Debug),
        (20, LevelFilter::Info),
        (30, LevelFilter::Warn),
    ];
    for (number, filter) in levels {
        for logger in &loggers {
            if logger
                .call_method1("isEnabledFor", (number,))?
                .is_truthy()?
            {
                return Ok(filter);
            }
        }
    }
    Ok(LevelFilter::Warn)
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
        log::set_max_level(python_max_level(py)?);
        // Only this call sets it: `set_boxed_logger` succeeds once per process.
        RESET.get_or_init(|| handle);
    }
    // Otherwise another extension in this process installed the global `log` logger;
    // its sink gets our records instead, at the level it chose.
    Ok(())
}

/// Forgets the cached Python loggers and levels, so a `setLevel` takes effect at once.
#[pyfunction]
pub(crate) fn reset_log_cache(py: Python<'_>) -> PyResult<()> {
    if let Some(handle) = RESET.get() {
        handle.reset();
        log::set_max_level(python_max_level(py)?);
    }
    Ok(())
}
