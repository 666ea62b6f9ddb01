//! `bidlock._native`: the compiled half of the Python package `bidlock`.
//!
//! A thin edge over the Rust library: it converts arguments, results and errors, and
//! turns the library's futures into asyncio awaitables on one tokio runtime per process.
//! No lock logic lives here; the Pythonic surface (context managers, keyword defaults,
//! the guide's class names) is `python/bidlock/`.

#![warn(missing_docs)]

use pyo3::prelude::*;

mod awaitable;
mod convert;
mod core;
mod errors;
mod guard;
mod held;
mod inbox;
mod logging;
mod manager;
mod outcome;
mod panic;
mod runtime;
mod shutdown;
mod spin;
mod testing;

/// The compiled module: classes, exceptions and factory functions used by
/// `bidlock/__init__.py`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    runtime::configure();
    logging::install(py)?;
    errors::register(m)?;
    m.add_class::<manager::NativeManager>()?;
    m.add_class::<guard::NativeGuard>()?;
    m.add_function(wrap_pyfunction!(manager::default_manager, m)?)?;
    m.add_function(wrap_pyfunction!(manager::manager_from_env, m)?)?;
    m.add_function(wrap_pyfunction!(logging::reset_log_cache, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown::shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(testing::_panic_in_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(testing::_panic_at_once, m)?)?;
    m.add(
        "RustPanic",
        py.get_type::<pyo3_async_runtimes::err::RustPanic>(),
    )?;
    m.add("DEFAULT_TTL", bidlock::DEFAULT_TTL.as_secs_f64())?;
    m.add("DEFAULT_TIMEOUT", bidlock::DEFAULT_WAIT.as_secs_f64())?;
    m.add("ENV_VARS", bidlock::ENV_VARS.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
