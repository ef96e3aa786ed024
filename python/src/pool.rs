//! The pool: expression maps, `.npy` files, lifecycle.

use super::*;

/// A pool of worker processes (`shmpool::Pool`).
#[pyclass(module = "shmpool._native", frozen)]
pub(crate) struct Pool {
    inner: Engine,
}

/// The engine's pool, dropped with the GIL released: its supervisor thread may be waiting for
/// the GIL to fork a replacement worker (`forking`), and the drop waits for that thread.
pub(crate) struct Engine(Option<shmpool::Pool>);

impl std::ops::Deref for Engine {
    type Target = shmpool::Pool;

    fn deref(&self) -> &shmpool::Pool {
        self.0.as_ref().expect("the pool is taken only by Drop")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            Python::attach(|py| py.detach(move || drop(p)));
        }
    }
}

pub(crate) fn start_method_arg(name: Option<&str>) -> PyResult<Option<StartMethod>> {
    Ok(match name {
        None => None,
        Some("fork") => Some(StartMethod::Fork),
        Some("forkserver") => Some(StartMethod::ForkServer),
        Some("spawn") => Some(StartMethod::Spawn),
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "unknown start method {other:?}: expected 'fork', 'forkserver' or 'spawn'"
            )))
        }
    })
}

/// Where a map reads from.
pub(crate) enum In<'a, T: Pod> {
    Shared(&'a SharedVec<T>),
    Plain(&'a [T]),
}

/// Where a map writes to.
pub(crate) enum Out<'a, T: Pod> {
    Shared(&'a mut SharedVec<T>),
    Plain(&'a mut [T]),
    New,
}

/// Runs `spec` over `input` into `output`: in place between shared arrays, otherwise through the
/// pool's staging buffers. Returns the new array's elements for [`Out::New`].
pub(crate) fn map_typed<I: Elem, O: Elem>(
    pool: &shmpool::Pool,
    spec: &KernelSpec,
    input: In<'_, I>,
    output: Out<'_, O>,
) -> shmpool::Result<Option<Vec<O>>> {
    let typed = spec.typed::<I, O>()?;
    match (input, output) {
        (In::Shared(a), Out::Shared(b)) => pool.map_into(a, b, spec).map(|()| None),
        (In::Shared(a), Out::Plain(b)) => pool.map_into(a, b, spec).map(|()| None),
        (In::Plain(a), Out::Shared(b)) => pool.map_into(a, b, spec).map(|()| None),
        (In::Plain(a), Out::Plain(b)) => pool.map_into(a, b, spec).map(|()| None),
        (In::Shared(a), Out::New) => pool.map(a, typed).map(Some),
        (In::Plain(a), Out::New) => pool.map(a, typed).map(Some),
    }
}

pub(crate) fn not_contiguous<E: std::fmt::Display>(e: E) -> PyErr {
    PyValueError::new_err(format!("shmpool: array not usable in place: {e}"))
}

impl Pool {
    /// One map (an expression or a Python callable), from `x` into `out` or a new array, as the
    /// Python wrapper prepared them; `len` decides whether the caller waits on a helper thread.
    fn evaluate_typed<'py, I: Elem, O: Elem>(
        &self,
        py: Python<'py>,
        spec: &KernelSpec,
        len: usize,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        // Keep every borrow guard alive in this frame while the map runs.
        let x_shared = x.cast::<SharedArray>().ok().map(|b| b.try_borrow()).transpose()?;
        let x_plain = match &x_shared {
            Some(_) => None,
            None => Some(x.cast::<PyArray1<I>>()?.try_readonly().map_err(not_contiguous)?),
        };
        let input: In<'_, I> = match (&x_shared, &x_plain) {
            (Some(s), _) => In::Shared(I::get(&s.store).ok_or_else(|| PyTypeError::new_err("input dtype mismatch"))?),
            (None, Some(p)) => In::Plain(p.as_slice().map_err(not_contiguous)?),
            (None, None) => unreachable!("one of the two was set above"),
        };
        let mut out_shared = match out {
            Some(o) => o.cast::<SharedArray>().ok().map(|b| b.try_borrow_mut()).transpose()?,
            None => None,
        };
        let mut out_plain = match (out, &out_shared) {
            (Some(o), None) => Some(o.cast::<PyArray1<O>>()?.try_readwrite().map_err(not_contiguous)?),
            _ => None,
        };
        let output: Out<'_, O> = match (&mut out_shared, &mut out_plain) {
            (Some(s), _) => {
                Out::Shared(O::get_mut(&mut s.store).ok_or_else(|| PyTypeError::new_err("output dtype mismatch"))?)
            }
            (None, Some(p)) => Out::Plain(p.as_slice_mut().map_err(not_contiguous)?),
            (None, None) => Out::New,
        };
        let pool = &self.inner;
        let r = run_blocking(py, pool, len, &mut no_tick, move || map_typed(pool, spec, input, output))?;
        Ok(r.map(|v| PyArray1::from_vec(py, v).into_any()))
    }
}

#[pymethods]
impl Pool {
    #[new]
    #[pyo3(signature = (processes=None, *, start_method=None, chunk_len=None, chunk_timeout=None, max_attempts=None, maxtasksperchild=None))]
    fn new(
        py: Python<'_>,
        processes: Option<usize>,
        start_method: Option<&str>,
        chunk_len: Option<usize>,
        chunk_timeout: Option<f64>,
        max_attempts: Option<u32>,
        maxtasksperchild: Option<u64>,
    ) -> PyResult<Pool> {
        let mut b = shmpool::Pool::builder();
        if let Some(n) = processes {
            b = b.workers(n);
        }
        let method = start_method_arg(start_method)?;
        if let Some(m) = method {
            b = b.start_method(m);
        }
        if method != Some(StartMethod::Fork) {
            // Fresh interpreters import numpy & co. before serving (fork workers have them).
            b = b.worker_init(warm_up);
        }
        if let Some(n) = chunk_len {
            b = b.chunk_len(n);
        }
        if let Some(t) = chunk_timeout {
            let limit = Duration::try_from_secs_f64(t).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                PyValueError::new_err(format!("chunk_timeout must be a positive number of seconds, not {t}"))
            })?;
            b = b.chunk_timeout(limit);
        }
        if let Some(n) = max_attempts {
            b = b.max_attempts(n);
        }
        if let Some(n) = maxtasksperchild {
            b = b.max_chunks_per_worker(n);
        }
        let inner = py.detach(|| b.build()).map_err(|e| to_py(py, e))?;
        Ok(Pool { inner: Engine(Some(inner)) })
    }

    /// Evaluates `expr` over the flat array `x` (an ndarray of the storage type of `x_dtype`, or
    /// a `SharedArray`) into `out` (same kinds) or, when `out` is None, a new array of the
    /// storage type of `out_dtype`, which it returns.
    #[pyo3(signature = (expr, x, x_dtype, out, out_dtype))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        expr: &str,
        x: &Bound<'py, PyAny>,
        x_dtype: &str,
        out: Option<&Bound<'py, PyAny>>,
        out_dtype: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (xd, od) = (dtype_arg(x_dtype)?, dtype_arg(out_dtype)?);
        let program = Program::compile_for(expr, xd).map_err(|e| to_py(py, e))?;
        let spec = KernelSpec::expr_for(&program, xd, od).map_err(|e| to_py(py, e))?;
        let len = match x.cast::<SharedArray>() {
            Ok(a) => a.borrow().ptr_len().1 / xd.size(),
            Err(_) => x.len()?,
        };
        with_elem!(xd, I => with_elem!(od, O => self.evaluate_typed::<I, O>(py, &spec, len, x, out)))
    }

    /// Maps `expr` over the `.npy` file `input` into the new `.npy` file `output` (dtype:
    /// numpy's result type, or `dtype`), calling `progress(done, total)` about every 50 ms.
    /// Returns (elements, output dtype name).
    #[pyo3(signature = (input, output, expr, dtype=None, progress=None))]
    fn map_file(
        &self,
        py: Python<'_>,
        input: PathBuf,
        output: PathBuf,
        expr: &str,
        dtype: Option<&str>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<(usize, &'static str)> {
        let out_dtype = dtype.map(dtype_arg).transpose()?;
        Program::check_syntax(expr).map_err(|e| to_py(py, e))?;
        // SAFETY contract of `NpyArray::open`, passed on to the Python caller and documented in
        // `Pool.map_file`: nothing truncates or rewrites the input while it is mapped. This crate
        // forbids unsafe code, so the call goes through the engine's documented unsafe fn below.
        let src = open_npy(&input).map_err(|e| to_py(py, e))?;
        let program = Program::compile_for(expr, src.dtype()).map_err(|e| to_py(py, e))?;
        let out_dtype = out_dtype.unwrap_or(program.output_dtype());
        let spec = KernelSpec::expr_for(&program, src.dtype(), out_dtype).map_err(|e| to_py(py, e))?;
        let mut dst = NpyOutput::create(&output, out_dtype, src.shape()).map_err(|e| to_py(py, e))?;
        let n = src.len();
        let done = AtomicUsize::new(0);
        let mut reported = usize::MAX;
        let mut tick = |py: Python<'_>| -> PyResult<()> {
            let d = done.load(Ordering::Relaxed);
            if let Some(p) = &progress {
                if d != reported {
                    reported = d;
                    p.call1((d, n))?;
                }
            }
            let _ = py;
            Ok(())
        };
        let pool = &self.inner;
        let (srcr, dstr, specr, doner) = (&src, &mut dst, &spec, &done);
        run_blocking(py, pool, n.max(SMALL + 1), &mut tick, move || {
            let mut count = |d: usize| doner.store(d, Ordering::Relaxed);
            pool.map_into_progress(srcr, dstr, specr, &mut count)
        })?;
        done.store(n, Ordering::Relaxed);
        tick(py)?;
        py.detach(|| dst.commit()).map_err(|e| to_py(py, e))?;
        Ok((n, out_dtype.name()))
    }

    /// Runs the pickled Python kernel `payload` (see [`PyParams`]) from the shared array `x`
    /// into the shared array `out` (same element count): `f(x_chunk, out_chunk)` in the workers.
    #[pyo3(signature = (payload, x, x_dtype, out, out_dtype))]
    fn map_py<'py>(
        &self,
        py: Python<'py>,
        payload: &[u8],
        x: &Bound<'py, PyAny>,
        x_dtype: &str,
        out: Option<&Bound<'py, PyAny>>,
        out_dtype: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if payload.len() > PY_PAYLOAD {
            return Err(PyValueError::new_err(format!(
                "the pickled callable takes {} bytes, more than the {PY_PAYLOAD} a kernel can carry: pass an importable function",
                payload.len()
            )));
        }
        let (xd, od) = (dtype_arg(x_dtype)?, dtype_arg(out_dtype)?);
        let mut params: PyParams = bytemuck::Zeroable::zeroed();
        params.len = payload.len() as u32;
        params.data[..payload.len()].copy_from_slice(payload);
        // A Python callable may run for any time: every map waits on the helper thread, so
        // Ctrl-C reaches it (`usize::MAX` as the length).
        with_elem!(xd, I => with_elem!(od, O => {
            let spec = KernelSpec::chunk_with(&params, py_chunk::<I, O>);
            self.evaluate_typed::<I, O>(py, &spec, usize::MAX, x, out)
        }))
    }

    /// Stops accepting work; workers exit at `join`.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close())
    }

    /// Waits for the workers to exit after `close` or `terminate`.
    fn join(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.join()).map_err(|e| to_py(py, e))
    }

    /// Kills the workers at once and waits for them.
    fn terminate(&self, py: Python<'_>) {
        py.detach(|| self.inner.terminate())
    }

    /// Number of worker processes.
    #[getter]
    fn processes(&self) -> usize {
        self.inner.workers()
    }

    /// The pids of the live workers.
    fn pids(&self, py: Python<'_>) -> Vec<u32> {
        py.detach(|| self.inner.pids())
    }

    /// How workers are started: 'fork', 'forkserver' or 'spawn'.
    #[getter]
    fn start_method(&self) -> &'static str {
        match self.inner.start_method() {
            StartMethod::Fork => "fork",
            StartMethod::ForkServer => "forkserver",
            StartMethod::Spawn => "spawn",
            _ => "other",
        }
    }

    /// Workers that died since the pool started.
    #[getter]
    fn worker_deaths(&self, py: Python<'_>) -> u64 {
        py.detach(|| self.inner.worker_deaths())
    }

    /// Workers started to replace dead or recycled ones.
    #[getter]
    fn respawns(&self, py: Python<'_>) -> u64 {
        py.detach(|| self.inner.respawns())
    }
}

/// Maps a `.npy` file read-only.
#[allow(unsafe_code)]
pub(crate) fn open_npy(path: &std::path::Path) -> shmpool::Result<NpyArray> {
    // SAFETY: `NpyArray::open` requires that nothing truncates or modifies the file while it is
    // mapped. That is the documented contract of `Pool.map_file` (as of
    // `np.load(mmap_mode='r')`); the mapping is read-only and the output is a different,
    // unnamed file until the map has finished.
    unsafe { NpyArray::open(path) }
}

/// The output dtype numpy gives `expr` over an array of `dtype` (for `out=` casting checks).
#[pyfunction]
pub(crate) fn result_dtype(py: Python<'_>, expr: &str, dtype: &str) -> PyResult<&'static str> {
    let program = Program::compile_for(expr, dtype_arg(dtype)?).map_err(|e| to_py(py, e))?;
    Ok(program.output_dtype().name())
}
