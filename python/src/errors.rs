//! The engine's errors as the package's exceptions (classes defined in `shmpool/_errors.py`).

use super::*;

/// The package's exception class `name` (defined in `shmpool/_errors.py`).
pub(crate) fn exc_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("shmpool._errors")?.getattr(name)
}

/// The engine error with its causes, as the CLI prints it.
pub(crate) fn chain(e: &shmpool::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// An exception of the package's class `name`, built with `kwargs` as attributes.
pub(crate) fn raise(py: Python<'_>, name: &str, msg: String, kwargs: &[(&str, Py<PyAny>)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = exc_class(py, name)?;
        let kw = PyDict::new(py);
        for (k, v) in kwargs {
            kw.set_item(k, v)?;
        }
        Ok(PyErr::from_value(cls.call((msg.clone(),), Some(&kw))?))
    };
    build().unwrap_or_else(|e| e)
}

pub(crate) fn range_obj(py: Python<'_>, r: &std::ops::Range<usize>) -> Py<PyAny> {
    (r.start, r.end).into_pyobject(py).expect("a tuple of ints").into_any().unbind()
}

pub(crate) fn int_obj(py: Python<'_>, v: i64) -> Py<PyAny> {
    v.into_pyobject(py).expect("an int").into_any().unbind()
}

/// The engine's error as the package's exception.
pub(crate) fn to_py(py: Python<'_>, e: impl Into<shmpool::Error>) -> PyErr {
    use shmpool::kernel::expr::Error as X;
    use shmpool::Error as E;
    let e = e.into();
    let msg = chain(&e);
    match &e {
        E::WorkerCrashed { range, signal, attempts } => raise(
            py,
            "WorkerCrashed",
            msg,
            &[
                ("range", range_obj(py, range)),
                ("signal", int_obj(py, i64::from(*signal))),
                ("attempts", int_obj(py, i64::from(*attempts))),
            ],
        ),
        E::KernelPanicked { message, range } => raise(
            py,
            "KernelError",
            msg,
            &[
                ("range", range_obj(py, range)),
                ("detail", message.clone().into_pyobject(py).expect("str").into_any().unbind()),
            ],
        ),
        E::ChunkTimedOut { range, limit } => raise(
            py,
            "ChunkTimeout",
            msg,
            &[
                ("range", range_obj(py, range)),
                ("limit", limit.as_secs_f64().into_pyobject(py).expect("float").into_any().unbind()),
            ],
        ),
        E::Expr(X::InvalidExpression { position, message, .. }) => raise(
            py,
            expression_error_class(message),
            msg,
            &[
                ("position", int_obj(py, *position as i64)),
                ("detail", message.clone().into_pyobject(py).expect("str").into_any().unbind()),
            ],
        ),
        E::Expr(X::InputNotUsed { .. } | X::InvalidInputName { .. } | X::InputCount { .. } | X::Axis { .. }) => {
            raise(py, "ExpressionError", msg, &[])
        }
        E::Expr(X::Broadcast { .. } | X::NegativeIntegerPower | X::EmptyReduction { .. }) => PyValueError::new_err(msg),
        E::ShmFull { .. } => raise(py, "SharedMemoryFull", msg, &[]),
        E::PoolClosed => raise(py, "PoolClosed", "Pool not running: it was closed or terminated".into(), &[]),
        E::TypeMismatch { .. } | E::UnknownDtype { .. } => PyTypeError::new_err(msg),
        E::LengthMismatch { .. }
        | E::InvalidOption { .. }
        | E::BadNpy { .. }
        | E::Aliased { .. }
        | E::TooLarge { .. } => PyValueError::new_err(msg),
        E::File { path, source, .. } => match source.raw_os_error() {
            // OSError(errno, strerror, filename) becomes FileNotFoundError & co., as open() does.
            Some(errno) => PyOSError::new_err((errno, msg, path.clone())),
            None => PyOSError::new_err(msg),
        },
        _ => raise(py, "ShmpoolError", msg, &[]),
    }
}

/// The class of an invalid expression's error: numpy's `OverflowError` for a Python integer out
/// of the array type's range, its `TypeError` for an operator or ufunc the types do not support,
/// as `ExpressionError` subclasses; else `ExpressionError`.
fn expression_error_class(message: &str) -> &'static str {
    if message.starts_with("Python integer ") && message.contains(" out of bounds for ") {
        "ExpressionOverflowError"
    } else if message.contains(", is not supported") || message.contains("not supported for the input types") {
        "ExpressionTypeError"
    } else {
        "ExpressionError"
    }
}

pub(crate) fn dtype_arg(name: &str) -> PyResult<Dtype> {
    name.parse::<Dtype>().map_err(|e| PyTypeError::new_err(e.to_string()))
}
