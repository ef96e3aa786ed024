//! `shmpool._native`: the engine's Python face. The package `shmpool` (python/shmpool) wraps it;
//! everything here is private to that package.
//!
//! It owns three things: a `Pool` (one `shmpool::Pool`), a `SharedArray` (one `SharedVec` whose
//! memory numpy views through `__array_interface__`), and the conversions between the engine's
//! errors and the package's exception classes (`shmpool._errors`). Dtypes, shapes, `out=`
//! casting rules and the choice between the zero-copy and the copying route are made in Python;
//! this module receives flat, C-contiguous, native-order arrays of the storage type (`uint8` for
//! `bool`) or `SharedArray` owners, and never guesses.
//!
//! Every map runs with the GIL released. A map over more than `SMALL` elements runs on a helper
//! thread while the calling thread waits with the GIL released and checks Python's signals every
//! `SIGNAL_POLL`: Ctrl-C terminates the pool (its workers are killed and reaped, the map
//! returns) and raises `KeyboardInterrupt`.
//!
//! Besides: expressions over several named arrays, evaluated in this process (`multi`), and
//! CPython's fork protocol around the engine's forks (`forking`), which lets `fork` workers run
//! Python callables.
#![deny(unsafe_code)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

#[macro_use]
mod elem;
mod blocking;
mod errors;
mod failure;
mod forking;
mod mailbox;
mod multi;
mod plan;
mod pool;
mod pykernel;
mod shared;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bytemuck::Pod;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use shmpool::kernel::expr::{Num, Program};
use shmpool::{Dtype, KernelSpec, NpyArray, NpyOutput, SharedVec, StartMethod};

/// Maps of at most this many elements run on the calling thread (GIL released): they end
/// sooner than a signal check would come.
const SMALL: usize = 1 << 16;
/// How often a waiting caller checks Python's signals (Ctrl-C) and reports progress.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

use blocking::*;
use elem::*;
use errors::*;
use failure::format_exc;
use forking::*;
use multi::*;
use plan::has_reductions;
use pool::*;
use pykernel::*;
use shared::*;

/// Routes the children shmpool starts by `exec` (spawn workers, the fork server) to `args`: the
/// running interpreter with a command that loads this very module file and calls
/// [`_worker_main`] (built by the package at import).
#[pyfunction]
fn _set_spawn_route(args: Vec<String>) {
    shmpool::set_spawn_route(None, args);
}

/// The body of a child started by `exec`: becomes what the parent asked for (a worker, the fork
/// server) and never returns. In any other process it raises.
/// `numpy_home`: the directory numpy is imported from in the parent, from which the workers
/// import it before serving (so that a chunk's time, which `chunk_timeout` bounds, does not
/// include that import).
#[pyfunction]
#[pyo3(signature = (numpy_home=None))]
fn _worker_main(numpy_home: Option<String>) -> PyResult<()> {
    *NUMPY_HOME.lock().unwrap_or_else(|p| p.into_inner()) = numpy_home;
    BOOT_PID.store(std::process::id(), Ordering::SeqCst);
    shmpool::init();
    BOOT_PID.store(0, Ordering::SeqCst);
    Err(PyRuntimeError::new_err("_worker_main() is for processes that shmpool starts"))
}

/// The engine prints no warning of its own about `fork` in a multi-threaded process: the
/// package warns (`warnings.warn`) in Python's words.
#[pyfunction]
fn _quiet_fork_warning() {
    shmpool::quiet_fork_warning();
}

/// Python module `shmpool._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pool>()?;
    m.add_class::<SharedArray>()?;
    m.add_function(wrap_pyfunction!(result_dtype, m)?)?;
    m.add_function(wrap_pyfunction!(inputs_result, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_inputs, m)?)?;
    m.add_function(wrap_pyfunction!(has_reductions, m)?)?;
    m.add_function(wrap_pyfunction!(_set_spawn_route, m)?)?;
    m.add_function(wrap_pyfunction!(_worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(_quiet_fork_warning, m)?)?;
    m.add_function(wrap_pyfunction!(mailbox::_worker_helpers, m)?)?;
    m.add("PAYLOAD_ROOM", PY_PAYLOAD)?;
    m.add_function(wrap_pyfunction!(_install_fork_hooks, m)?)?;
    m.add_function(wrap_pyfunction!(_remove_fork_hooks, m)?)?;
    Ok(())
}
