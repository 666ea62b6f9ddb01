//! The Python exception classes and the conversion of the library's errors into them.
//!
//! Errors cross to Python inside [`Reply`], converted while the GIL is held (when
//! pyo3-async-runtimes sets the awaitable's result), so the two exceptions with two
//! bases can be real classes rather than lazily created single-base ones.

use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::IntoPyObjectExt as _;

create_exception!(
    bidlock,
    LockError,
    PyException,
    "Base class of every bidlock error: catch it to handle them all."
);
create_exception!(
    bidlock,
    LockLostError,
    LockError,
    "The lock is no longer held by this holder: it expired, was released by force, was \
     taken by another holder, or could not be renewed before its lease ran out. Stop the \
     critical section."
);
create_exception!(
    bidlock,
    AlreadyDoneError,
    LockError,
    "The posting has a completion record (an earlier `bid_once` succeeded): the lock was \
     not taken and the body did not run."
);
create_exception!(
    bidlock,
    BackendError,
    LockError,
    "Redis could not be reached or failed (connect, auth, TLS, I/O, timeout, no Redlock \
     quorum). Never reported as a held lock; the message names the URL without its password."
);
create_exception!(
    bidlock,
    ManagerClosedError,
    LockError,
    "The manager was closed with `close()`; it takes no new work."
);

const TIMEOUT_DOC: &str = "The lock stayed held by another holder until `timeout` ran out \
(contention, not failure). A `LockError` and a `TimeoutError`.";
const CONFIG_DOC: &str = "The configuration is invalid: an environment variable (named in \
the message), a URL, a ttl or a prefix. Raised when the manager is created, before anything \
is sent. A `LockError` and a `ValueError`.";

static LOCK_TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CONFIG_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Builds `class name(base_a, base_b)` in module `bidlock`. `create_exception!` takes one
/// base; these two must be caught both as `LockError` and as the built-in they refine.
fn two_base_exception(
    py: Python<'_>,
    name: &str,
    doc: &str,
    bases: (Bound<'_, PyType>, Bound<'_, PyType>),
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "bidlock")?;
    namespace.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, [bases.0, bases.1])?;
    let made = py
        .get_type::<PyType>()
        .call1((name, bases, namespace))?
        .cast_into::<PyType>()?;
    Ok(made.unbind())
}

fn lock_timeout_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    LOCK_TIMEOUT_ERROR
        .get_or_try_init(py, || {
            two_base_exception(
                py,
                "LockTimeoutError",
                TIMEOUT_DOC,
                (py.get_type::<LockError>(), py.get_type::<PyTimeoutError>()),
            )
        })
        .map(|t| t.bind(py))
}

fn config_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    CONFIG_ERROR
        .get_or_try_init(py, || {
            two_base_exception(
                py,
                "ConfigError",
                CONFIG_DOC,
                (py.get_type::<LockError>(), py.get_type::<PyValueError>()),
            )
        })
        .map(|t| t.bind(py))
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LockError", py.get_type::<LockError>())?;
    m.add("LockTimeoutError", lock_timeout_error(py)?)?;
    m.add("LockLostError", py.get_type::<LockLostError>())?;
    m.add("AlreadyDoneError", py.get_type::<AlreadyDoneError>())?;
    m.add("BackendError", py.get_type::<BackendError>())?;
    m.add("ConfigError", config_error(py)?)?;
    m.add("ManagerClosedError", py.get_type::<ManagerClosedError>())?;
    Ok(())
}

fn raise(ty: PyResult<&Bound<'_, PyType>>, msg: String) -> PyErr {
    match ty {
        Ok(ty) => PyErr::from_type(ty.clone(), msg),
        Err(e) => e,
    }
}

/// The Python exception for a library error.
pub(crate) fn to_py(py: Python<'_>, e: bidlock::Error) -> PyErr {
    use bidlock::Error;
    let msg = e.to_string();
    match e {
        Error::InvalidKey(_) => PyValueError::new_err(msg),
        Error::Config(_) => config_error_from(py, msg),
        Error::NotAcquired {
            key,
            waited,
            holder,
            ..
        } => {
            let by = holder
                .map(|h| format!(" (held by {h})"))
                .unwrap_or_default();
            let msg = format!("lock {key} not acquired within {}{by}", readable(waited));
            raise(lock_timeout_error(py), msg)
        }
        Error::AlreadyDone { .. } => AlreadyDoneError::new_err(msg),
        Error::LockLost { .. } => LockLostError::new_err(msg),
        Error::Closed => ManagerClosedError::new_err(msg),
        e if e.is_backend() => BackendError::new_err(msg),
        // WrongType and variants added later: a lock error that names the key.
        _ => LockError::new_err(msg),
    }
}

/// A duration as people write it: `501 ms`, `2.5 s`, `300 s` (not `501.350273ms`).
pub(crate) fn readable(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if secs < 9.95 {
        let text = format!("{secs:.1}");
        format!("{} s", text.strip_suffix(".0").unwrap_or(&text))
    } else {
        format!("{secs:.0} s")
    }
}

/// A `ConfigError` with `msg`.
pub(crate) fn config_error_from(py: Python<'_>, msg: String) -> PyErr {
    raise(config_error(py), msg)
}

/// A `LockLostError` with `msg` (no GIL needed).
pub(crate) fn lock_lost(msg: String) -> PyErr {
    LockLostError::new_err(msg)
}

/// A result whose error is converted to its Python exception when it reaches Python,
/// with the GIL held. Futures handed to Python resolve to `Ok(Reply(..))`.
pub(crate) struct Reply<T>(pub(crate) Result<T, bidlock::Error>);

impl<'py, T> IntoPyObject<'py> for Reply<T>
where
    T: IntoPyObject<'py>,
{
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            Ok(v) => v.into_bound_py_any(py),
            Err(e) => Err(to_py(py, e)),
        }
    }
}
