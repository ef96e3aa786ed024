//! Python callables in the workers: the kernel that calls them, in an interpreter the spawn route started.

use super::*;

/// Bytes of a pickled Python kernel that fit in its parameter block.
pub(crate) const PY_PAYLOAD: usize = 16 * 1024 - 8;

/// The parameter block of a Python kernel: `pickle.dumps((sys_path, in_dtype, out_dtype,
/// pickled_callable, pickled_initializer, mailbox_dir))`, made by the package, or
/// `pickle.dumps(path)` of a file in the mailbox holding that when it does not fit.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PyParams {
    pub(crate) len: u32,
    _pad: u32,
    pub(crate) data: [u8; PY_PAYLOAD],
}

/// The pid `_worker_main` started in (0 in the program itself): a worker with another pid was
/// forked from it (by the fork server) and tells the interpreter so before running Python.
pub(crate) static BOOT_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The pid that last ran the interpreter's after-fork hook.
pub(crate) static AFTER_FORK_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Where the parent imports numpy from (see `_worker_main`).
pub(crate) static NUMPY_HOME: Mutex<Option<String>> = Mutex::new(None);

/// The pool's `worker_init` under forkserver and spawn: imports what every Python kernel needs
/// (numpy, pickle, the mailbox's helpers) before the worker serves, so that the first chunk's
/// time, which `chunk_timeout` bounds, is the kernel's and not the interpreter's warm-up. A
/// failure here is left for the first chunk to report.
pub(crate) fn warm_up() {
    let home = NUMPY_HOME.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Python::attach(|py| {
        after_fork_once();
        let _ = (|| -> PyResult<()> {
            py.import("pickle")?;
            mailbox::_worker_helpers(py)?;
            let Some(home) = home else { return Ok(()) };
            let path = py.import("sys")?.getattr("path")?;
            path.call_method1("insert", (0, &home))?;
            let r = py.import("numpy").map(drop);
            path.call_method1("remove", (&home,))?;
            r
        })();
    });
}

/// The last payload's unpickled callable and dtypes (a worker usually serves one map at a time).
pub(crate) type Kernel = (Vec<u8>, Py<PyAny>, Py<PyAny>, Py<PyAny>);
pub(crate) static KERNEL_CACHE: Mutex<Option<Kernel>> = Mutex::new(None);
/// The pickled initializers this worker has run.
pub(crate) static INITIALIZED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A chunk kernel that calls a Python callable: runs in a worker process, which is an
/// interpreter started by the package's spawn route (spawn workers directly; fork-server
/// workers forked from one). An exception becomes a panic whose message starts with
/// `Type: message`, which the worker catches and the parent rebuilds.
pub(crate) fn py_chunk<I: Pod, O: Pod>(input: &[I], output: &mut [O], p: &PyParams) {
    let payload = &p.data[..(p.len as usize).min(PY_PAYLOAD)];
    let r = Python::attach(|py| call_py(py, payload, bytemuck::cast_slice(input), bytemuck::cast_slice_mut(output)));
    if let Err(msg) = r {
        // Unwinds to the worker's `catch_unwind` without the panic hook: the exception is the
        // caller's to report, not the worker's stderr.
        std::panic::resume_unwind(Box::new(msg));
    }
}

#[allow(unsafe_code)]
pub(crate) fn after_fork_once() {
    let me = std::process::id();
    let boot = BOOT_PID.load(Ordering::SeqCst);
    if boot != 0 && boot != me && AFTER_FORK_PID.swap(me, Ordering::SeqCst) != me {
        // SAFETY: this process was forked by the single-threaded fork server from its one
        // thread, which held the GIL (it runs `_worker_main`); this is that same thread, the
        // only one, before any other Python code runs here: what `os.fork` does in its child.
        unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
    }
}

/// A memoryview over `len` bytes at `ptr`, read-only unless `write`.
#[allow(unsafe_code)]
pub(crate) fn memview<'py>(py: Python<'py>, ptr: *mut u8, len: usize, write: bool) -> PyResult<Bound<'py, PyAny>> {
    // CPython's PyBUF_WRITE / PyBUF_READ (object.h; stable ABI values, not exported by pyo3-ffi
    // under abi3 before 3.11).
    let flags = if write { 0x200 } else { 0x100 };
    let len = pyo3::ffi::Py_ssize_t::try_from(len).map_err(|_| PyValueError::new_err("chunk too large"))?;
    // SAFETY: `ptr..ptr+len` is the chunk the worker lent to this call (`&[u8]` for a read-only
    // view, `&mut [u8]` for a writable one), valid until `call_py` returns; `call_py` releases
    // the view before returning, and aborts the process if anything still exports it, so no
    // Python object reaches the memory afterwards. The returned pointer is a new reference or
    // null with an exception set, which `from_owned_ptr_or_err` handles.
    unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyMemoryView_FromMemory(ptr.cast(), len, flags)) }
}

/// Releases a chunk's memoryview; a callable that kept a view of the chunk (which the worker
/// reuses for other chunks) kills its worker here rather than let it reach freed memory.
pub(crate) fn release_or_abort(py: Python<'_>, mv: &Bound<'_, PyAny>) {
    if mv.call_method0("release").is_ok() {
        return;
    }
    let _ = py.import("gc").and_then(|gc| gc.call_method0("collect"));
    if mv.call_method0("release").is_err() {
        abort_kept();
    }
}

pub(crate) fn call_py(py: Python<'_>, payload: &[u8], input: &[u8], output: &mut [u8]) -> Result<(), String> {
    after_fork_once();
    let kernel = load_kernel(py, payload).map_err(|e| format_exc(py, e))?;
    let (f, in_dt, out_dt) = (kernel.0.bind(py), kernel.1.bind(py), kernel.2.bind(py));
    let mv_in = memview(py, input.as_ptr().cast_mut(), input.len(), false).map_err(|e| format_exc(py, e))?;
    let mv_out = memview(py, output.as_mut_ptr(), output.len(), true).map_err(|e| format_exc(py, e))?;
    let r = (|| -> PyResult<Result<(), String>> {
        let np = py.import("numpy")?;
        let a = np.call_method1("frombuffer", (&mv_in, in_dt))?;
        let b = np.call_method1("frombuffer", (&mv_out, out_dt))?;
        let getrefcount = py.import("sys")?.getattr("getrefcount")?;
        let refs = || -> PyResult<(isize, isize)> {
            Ok((getrefcount.call1((&a,))?.extract()?, getrefcount.call1((&b,))?.extract()?))
        };
        let before = refs()?;
        // Formatted (and the exception with its traceback, whose frames hold the views,
        // dropped) before the reference check.
        let r = f.call1((&a, &b)).map(drop).map_err(|e| format_exc(py, e));
        // numpy drops its buffer export at once (the arrays keep the memoryviews as their
        // base), so a view of the chunk that outlives the call shows as a reference to `a` or
        // `b` (every numpy view of them holds its base).
        let kept = || refs().map_or(true, |now| now != before);
        if kept() {
            let _ = py.import("gc").and_then(|gc| gc.call_method0("collect"));
            if kept() {
                abort_kept();
            }
        }
        Ok(r)
    })();
    let r = r.unwrap_or_else(|e| Err(format_exc(py, e)));
    release_or_abort(py, &mv_in);
    release_or_abort(py, &mv_out);
    r
}

/// Ends a worker whose kernel kept a view of its chunk (memory the worker reuses for other
/// chunks, and that the map's caller reads once the map returns).
pub(crate) fn abort_kept() -> ! {
    let msg = b"shmpool: the kernel kept a reference to its chunk's array after returning: the worker exits\n";
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
    std::process::abort();
}

/// The callable and dtypes of `payload`, unpickled once per payload (after putting the
/// parent's `sys.path` entries on this interpreter's path, for `pickle` to import them).
pub(crate) fn load_kernel(py: Python<'_>, payload: &[u8]) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
    let mut cache = KERNEL_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((bytes, f, i, o)) = cache.as_ref() {
        if bytes == payload {
            return Ok((f.clone_ref(py), i.clone_ref(py), o.clone_ref(py)));
        }
    }
    let pickle = py.import("pickle")?;
    // The mailbox's helpers first: a callable may be one of their classes (`Returning`).
    mailbox::_worker_helpers(py)?;
    let outer = pickle.call_method1("loads", (pyo3::types::PyBytes::new(py, payload),))?;
    let outer = mailbox::resolve_payload(py, outer)?;
    type Payload = (Vec<String>, String, String, Vec<u8>, Vec<u8>, Option<String>);
    let (path, in_dt, out_dt, f_bytes, init, mailbox_dir): Payload = outer.extract()?;
    *mailbox::MAILBOX.lock().unwrap_or_else(|p| p.into_inner()) = mailbox_dir;
    let sys_path = py.import("sys")?.getattr("path")?;
    for p in path.iter().rev() {
        if !sys_path.contains(p)? {
            sys_path.call_method1("insert", (0, p))?;
        }
    }
    // The pool's `initializer(*initargs)`, once per worker process, before its first chunk.
    let mut ran = INITIALIZED.lock().unwrap_or_else(|p| p.into_inner());
    if !init.is_empty() && !ran.contains(&init) {
        let (f, args): (Bound<'_, PyAny>, Bound<'_, PyTuple>) =
            pickle.call_method1("loads", (pyo3::types::PyBytes::new(py, &init),))?.extract()?;
        f.call1(args)?;
        ran.push(init);
    }
    let f = pickle.call_method1("loads", (pyo3::types::PyBytes::new(py, &f_bytes),))?.unbind();
    let (i, o) = (in_dt.into_pyobject(py)?.into_any().unbind(), out_dt.into_pyobject(py)?.into_any().unbind());
    *cache = Some((payload.to_vec(), f.clone_ref(py), i.clone_ref(py), o.clone_ref(py)));
    Ok((f, i, o))
}
