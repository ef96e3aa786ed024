//! CPython's fork protocol around every fork the engine makes in this interpreter
//! (`shmpool::set_fork_hooks`), so that workers of a `fork` pool can run Python callables:
//! before the fork the forking thread (the caller's, or the pool's supervisor thread when it
//! replaces a worker) takes the GIL and calls `PyOS_BeforeFork` (the import lock, the
//! `os.register_at_fork` "before" callbacks); the parent then calls `PyOS_AfterFork_Parent`
//! and releases the GIL; the child calls `PyOS_AfterFork_Child` (the GIL and thread states
//! reinitialised around the one thread left, "after in child" callbacks) and keeps the GIL,
//! as `os.fork` does.
//!
//! The hooks are installed by the package at import and removed by its `atexit` handler (a
//! thread that waits for the GIL while the interpreter finalizes would be ended by CPython):
//! forks after that run without them.

use super::*;

use std::cell::Cell;
use std::sync::atomic::AtomicBool;

use pyo3::ffi;

/// Whether the hooks do anything: between `_install_fork_hooks` and `_remove_fork_hooks`.
static ACTIVE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The GIL state `before` took on this thread, for `after_parent` to release (and, copied
    /// into the child with the thread, the sign that the child must run the child protocol).
    static HELD: Cell<Option<ffi::PyGILState_STATE>> = const { Cell::new(None) };
}

#[allow(unsafe_code)]
fn before() {
    if !ACTIVE.load(Ordering::SeqCst) {
        return;
    }
    // SAFETY: the interpreter is initialised (the hooks are active only between the package's
    // import and its atexit handler); PyGILState_Ensure may be called from any thread, held
    // GIL or not, and its state is released by `after_parent` on this same thread.
    // PyOS_BeforeFork must be called with the GIL held, which it now is.
    unsafe {
        let state = ffi::PyGILState_Ensure();
        HELD.with(|h| h.set(Some(state)));
        ffi::PyOS_BeforeFork();
    }
}

#[allow(unsafe_code)]
fn after_parent() {
    let Some(state) = HELD.with(Cell::take) else { return };
    // SAFETY: `before` ran on this thread: it holds the GIL and called PyOS_BeforeFork, which
    // PyOS_AfterFork_Parent undoes; then the state PyGILState_Ensure returned is released.
    unsafe {
        ffi::PyOS_AfterFork_Parent();
        ffi::PyGILState_Release(state);
    }
}

#[allow(unsafe_code)]
fn after_child() {
    if HELD.with(Cell::get).is_none() {
        return;
    }
    AFTER_FORK_PID.store(std::process::id(), Ordering::SeqCst);
    // SAFETY: this is the child of a fork made by the thread that held the GIL and had called
    // PyOS_BeforeFork (`before`), and the only thread here: what `os.fork` does in its child.
    unsafe { ffi::PyOS_AfterFork_Child() };
}

/// Installs the hooks (the package calls it at import).
#[pyfunction]
pub(crate) fn _install_fork_hooks() {
    ACTIVE.store(true, Ordering::SeqCst);
    shmpool::set_fork_hooks(Some(shmpool::ForkHooks { before, after_parent, after_child }));
}

/// Removes them (the package's atexit handler).
#[pyfunction]
pub(crate) fn _remove_fork_hooks() {
    ACTIVE.store(false, Ordering::SeqCst);
    shmpool::set_fork_hooks(None);
}
