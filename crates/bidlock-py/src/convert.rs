//! Arguments in (ids, seconds, holder ids) and plain data out (dicts and lists).

use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::IntoPyObjectExt as _;

use bidlock::{AcquireOptions, Holder, LockKey, Ttl};

use crate::errors::{readable, Reply};

/// Validates both ids; a `ValueError` names what was wrong.
pub(crate) fn key(marketplace_id: &str, posting_id: &str) -> PyResult<LockKey> {
    LockKey::new(marketplace_id, posting_id).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Where a number of seconds came from, which decides the exception for a bad one: one
/// kind of mistake, one exception type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Given {
    /// An argument of one call (`timeout`, a per-call `ttl`): `ValueError`.
    Argument,
    /// A setting of the manager (its default `ttl`, `response_timeout`): `ConfigError`,
    /// like a malformed environment variable (`ConfigError` is a `ValueError` too).
    Setting,
}

impl Given {
    fn error(self, msg: String) -> PyErr {
        match self {
            Given::Argument => PyValueError::new_err(msg),
            Given::Setting => Python::attach(|py| crate::errors::config_error_from(py, msg)),
        }
    }
}

/// A number of seconds given by the caller: finite, at least zero (more than zero unless
/// `allow_zero`), representable.
pub(crate) fn seconds(
    name: &str,
    value: f64,
    allow_zero: bool,
    given: Given,
) -> PyResult<Duration> {
    let bad = |why: &str| given.error(format!("{name} must be {why}, got {value}"));
    if !value.is_finite() {
        return Err(bad("a finite number of seconds"));
    }
    if value < 0.0 || (!allow_zero && value == 0.0) {
        return Err(bad(if allow_zero {
            "zero or more seconds"
        } else {
            "more than zero seconds"
        }));
    }
    Duration::try_from_secs_f64(value).map_err(|_| bad("a representable number of seconds"))
}

/// A lock ttl in seconds: as [`seconds`], and within the library's bounds (10 ms to 30
/// days), checked here so that a bad value is refused before anything is sent.
pub(crate) fn ttl_seconds(value: f64, given: Given) -> PyResult<Duration> {
    let d = seconds("ttl", value, false, given)?;
    if d < Ttl::MIN || d > Ttl::MAX {
        return Err(given.error(format!(
            "ttl must be between {} and {} days, got {value} s",
            readable(Ttl::MIN),
            Ttl::MAX.as_secs() / 86_400
        )));
    }
    Ok(d)
}

/// A holder id given by the caller: non-empty, no control characters (it is stored in
/// Redis and printed in logs).
pub(crate) fn holder(holder_id: &str) -> PyResult<Holder> {
    if holder_id.is_empty() {
        return Err(PyValueError::new_err("holder_id is empty"));
    }
    if let Some((index, ch)) = holder_id.char_indices().find(|(_, c)| c.is_control()) {
        return Err(PyValueError::new_err(format!(
            "holder_id has a control character (U+{:04X}) at byte {index}",
            ch as u32
        )));
    }
    Ok(Holder::new(holder_id))
}

/// The options of one acquire from the Python arguments.
pub(crate) fn options(
    timeout: f64,
    holder_id: Option<&str>,
    ttl: Option<f64>,
    renew: bool,
) -> PyResult<AcquireOptions> {
    let mut opts = AcquireOptions::new()
        .timeout(seconds("timeout", timeout, true, Given::Argument)?)
        .renew(renew);
    if let Some(h) = holder_id {
        opts = opts.holder(holder(h)?);
    }
    if let Some(t) = ttl {
        opts = opts.ttl(ttl_seconds(t, Given::Argument)?);
    }
    Ok(opts)
}

/// A serde value as plain Python data (dict, list, int, float, str, bool, None).
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    v: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_bound_py_any(py)?,
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_bound_py_any(py)?,
            (None, Some(i)) => i.into_bound_py_any(py)?,
            _ => match n.as_f64() {
                Some(f) => f.into_bound_py_any(py)?,
                None => {
                    return Err(PyRuntimeError::new_err(format!(
                        "number {n} has no Python form"
                    )))
                }
            },
        },
        Value::String(s) => s.into_bound_py_any(py)?,
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// Plain data for Python from anything serializable (library snapshots and listings).
pub(crate) struct Plain(pub(crate) serde_json::Value);

impl Plain {
    /// `v` as plain data; `what` names it in the error if it does not convert.
    pub(crate) fn of(what: &str, v: &impl serde::Serialize) -> PyResult<Plain> {
        serde_json::to_value(v)
            .map(Plain)
            .map_err(|e| PyRuntimeError::new_err(format!("bidlock could not convert {what}: {e}")))
    }
}

impl<T: serde::Serialize> Reply<T> {
    /// The reply's value as plain data (its error stays as it is).
    pub(crate) fn plain(self, what: &str) -> PyResult<Reply<Plain>> {
        Ok(Reply(match self.0 {
            Ok(v) => Ok(Plain::of(what, &v)?),
            Err(e) => Err(e),
        }))
    }
}

impl<'py> IntoPyObject<'py> for Plain {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.0)
    }
}
