//! A panic in Rust code becomes a Python exception of the awaiting task, never a future
//! that no one resolves: pyo3-async-runtimes' `RustPanic`, with its message.

use std::any::Any;

use pyo3::prelude::*;
use pyo3_async_runtimes::err::RustPanic;

/// The exception for a caught panic, as pyo3-async-runtimes raises it.
pub(crate) fn panic_error(payload: &(dyn Any + Send)) -> PyErr {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "(no message)"
    };
    RustPanic::new_err(format!("rust future panicked: {message}"))
}
