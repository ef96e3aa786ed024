//! The mailbox: a side channel between a pool's workers and the parent, for what does not fit
//! the engine's fixed-size messages. Its Python half (`worker_helpers.py`, module
//! `_shmpool_worker`) runs in the parent and in the workers, where no `shmpool` package is
//! imported: a worker writes an exception (pickled, with its full traceback) or a kernel's return
//! value to a file of the pool's private temporary directory, and a payload too large for the
//! kernel's parameter block is read from a file there.

use super::*;

use pyo3::sync::PyOnceLock;

/// The Python half's source.
const HELPERS: &std::ffi::CStr = {
    const SRC: &str = concat!(include_str!("worker_helpers.py"), "\0");
    match std::ffi::CStr::from_bytes_with_nul(SRC.as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("worker_helpers.py holds a NUL byte"),
    }
};

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
/// The mailbox directory of the pool whose payload this worker last loaded.
pub(crate) static MAILBOX: Mutex<Option<String>> = Mutex::new(None);

/// The module `_shmpool_worker`, compiled once and registered in `sys.modules`.
#[pyfunction]
pub(crate) fn _worker_helpers(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = MODULE.get_or_try_init(py, || -> PyResult<Py<PyModule>> {
        let m = PyModule::from_code(py, HELPERS, c"shmpool/worker_helpers.py", c"_shmpool_worker")?;
        py.import("sys")?.getattr("modules")?.set_item("_shmpool_worker", &m)?;
        Ok(m.unbind())
    })?;
    Ok(m.bind(py).clone())
}

/// `e` written to the mailbox of the current pool: the file's path, or None (no mailbox yet, or
/// the write failed: the caller falls back to the inline message).
pub(crate) fn report(py: Python<'_>, e: &PyErr) -> Option<String> {
    let dir = MAILBOX.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
    let m = _worker_helpers(py).ok()?;
    m.call_method1("report", (e.value(py), dir, e.traceback(py))).ok()?.extract().ok()
}

/// The payload itself: a payload that unpickles to a `str` names the file holding the real one
/// (the package writes payloads larger than the parameter block there).
pub(crate) fn resolve_payload<'py>(py: Python<'py>, outer: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if !outer.is_instance_of::<pyo3::types::PyString>() {
        return Ok(outer);
    }
    let bytes = _worker_helpers(py)?.call_method1("load_payload", (outer,))?;
    py.import("pickle")?.call_method1("loads", (bytes,))
}
