//! Running a map with the GIL released, interruptibly (Ctrl-C, progress callbacks).

use super::*;

/// A result handed from the helper thread to the waiting caller.
pub(crate) struct Handoff<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Handoff<T> {
    fn put(&self, v: T) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        self.ready.notify_all();
    }

    fn take_timeout(&self, limit: Duration) -> Option<T> {
        let g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = self.ready.wait_timeout_while(g, limit, |v| v.is_none()).unwrap_or_else(|p| p.into_inner());
        g.take()
    }
}

/// Runs `f` (a map on `pool`) with the GIL released. Large maps run on a helper thread while
/// this thread checks Python's signals and calls `tick` every [`SIGNAL_POLL`]: a raised signal
/// (Ctrl-C) or an error from `tick` terminates the pool, waits for the map to return, and is
/// raised. Small ones run here.
pub(crate) fn run_blocking<T: Send>(
    py: Python<'_>,
    pool: &shmpool::Pool,
    len: usize,
    tick: &mut dyn FnMut(Python<'_>) -> PyResult<()>,
    f: impl FnOnce() -> shmpool::Result<T> + Send,
) -> PyResult<T> {
    if len <= SMALL {
        let r = py.detach(f);
        tick(py)?;
        return r.map_err(|e| to_py(py, e));
    }
    let handoff = Handoff { value: Mutex::new(None), ready: Condvar::new() };
    std::thread::scope(|s| {
        let h = &handoff;
        let worker = s.spawn(move || h.put(f()));
        let mut stop: Option<PyErr> = None;
        loop {
            if let Some(r) = py.detach(|| h.take_timeout(SIGNAL_POLL)) {
                let _ = worker.join();
                if let Some(e) = stop {
                    return Err(e);
                }
                tick(py)?;
                return r.map_err(|e| to_py(py, e));
            }
            if worker.is_finished() && h.value.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                // The helper panicked (a bug): report it rather than wait forever.
                let _ = py.detach(|| worker.join());
                return Err(PyRuntimeError::new_err("shmpool: the map thread panicked"));
            }
            if stop.is_none() {
                if let Err(e) = py.check_signals().and_then(|()| tick(py)) {
                    py.detach(|| pool.terminate());
                    stop = Some(e);
                }
            }
        }
    })
}

pub(crate) fn no_tick(_: Python<'_>) -> PyResult<()> {
    Ok(())
}
