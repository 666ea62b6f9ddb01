//! Arguments in (ids, seconds, holder ids) and plain data out (dicts and lists).

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::IntoPyObjectExt as _;

use bidlock::{AcquireOptions, Holder, LockKey};

/// Validates both ids; a `ValueError` names what was wrong.
pub(crate) fn key(marketplace_id: &str, posting_id: &str) -> PyResult<LockKey> {
    LockKey::new(marketplace_id, posting_id).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A number of seconds given by the caller: finite, at least `min`, representable.
pub(crate) fn seconds(name: &str, value: f64, allow_zero: bool) -> PyResult<Duration> {
    let bad = |why: &str| PyValueError::new_err(format!("{name} must be {why}, got {value}"));
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
        .timeout(seconds("timeout", timeout, true)?)
        .renew(renew);
    if let Some(h) = holder_id {
        opts = opts.holder(holder(h)?);
    }
    if let Some(t) = ttl {
        opts = opts.ttl(seconds("ttl", t, false)?);
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
            _ => n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)?,
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
    pub(crate) fn of(v: &impl serde::Serialize) -> Plain {
        Plain(serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
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
