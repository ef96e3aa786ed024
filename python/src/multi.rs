//! Expressions over several named arrays (`evaluate("a * b + c", a=..., b=..., c=...)`):
//! compiled by the engine's several-input compiler (`Program::compile_inputs`: numpy's type
//! promotion across inputs) and evaluated in this process, broadcast as numpy does
//! (`Program::eval_broadcast`), on scoped threads with the GIL released. The pool's workers
//! read one input per chunk (the engine maps several inputs only from `.npy` files), so these
//! expressions do not travel to them.

use super::*;

use super::plan::{const_bytes, plan, reduce_all, Named, Pacer};
use numpy::{PyReadonlyArray1, PyReadwriteArray1};

/// Output elements below which the evaluation runs on one thread.
const PER_THREAD: usize = 1 << 16;
/// Output elements evaluated between two checks for Python signals (Ctrl-C).
const BLOCK: usize = 1 << 20;

/// The result's dtype name and broadcast shape of `expr` over `inputs` (name, dtype, shape).
#[pyfunction]
pub(crate) fn inputs_result(expr: &str, inputs: Vec<Named>) -> PyResult<(&'static str, Vec<u64>)> {
    let p = plan(expr, &inputs)?;
    Ok((p.outer.program.output_dtype().name(), p.outer.shape))
}

/// Evaluates `expr` over `inputs` (name, dtype, shape) whose elements are `data` (the raw
/// bytes of each C-contiguous array, in order) into `out`: the raw bytes of a C-contiguous
/// array of the result dtype and the broadcast shape ([`inputs_result`]). Runs on up to
/// `threads` threads, with the GIL released.
#[pyfunction]
pub(crate) fn evaluate_inputs(
    py: Python<'_>,
    expr: &str,
    inputs: Vec<Named>,
    data: Vec<PyReadonlyArray1<'_, u8>>,
    mut out: PyReadwriteArray1<'_, u8>,
    threads: usize,
) -> PyResult<()> {
    if data.len() != inputs.len() {
        return Err(PyValueError::new_err(format!("{} inputs named, {} given", inputs.len(), data.len())));
    }
    let plan = plan(expr, &inputs)?;
    let bytes: Vec<&[u8]> = data.iter().map(|a| a.as_slice().map_err(not_contiguous)).collect::<PyResult<_>>()?;
    let values = reduce_all(py, &plan, &inputs, &bytes, threads)?;
    for (_, warning) in &values {
        if let Some(w) = warning {
            PyErr::warn(py, &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(), &std::ffi::CString::new(*w)?, 1)?;
        }
    }
    let mut consts = const_bytes(&values);
    consts.extend(plan.extra.iter().cloned());
    let (program, shape) = (&plan.outer.program, &plan.outer.shape);
    let n = shape.iter().try_fold(1usize, |a, &d| usize::try_from(d).ok().and_then(|d| a.checked_mul(d)));
    let n = n.ok_or_else(|| PyValueError::new_err("the result is too large"))?;
    let osz = program.output_dtype().size();
    let ins: Vec<(&[u8], &[u64])> = plan
        .outer
        .used
        .iter()
        .map(|&k| (bytes[k], inputs[k].2.as_slice()))
        .chain(plan.outer.consts.iter().map(|&j| (consts[j].as_slice(), &[][..])))
        .collect();
    let out = out.as_slice_mut().map_err(not_contiguous)?;
    if out.len() != n * osz {
        return Err(PyValueError::new_err(format!("out holds {} bytes, the result {}", out.len(), n * osz)));
    }
    let threads = threads.clamp(1, n.div_ceil(PER_THREAD).max(1));
    // Blocks of BLOCK elements at first (paced: see `Pacer`), each split across the threads;
    // between blocks the GIL is taken back for a moment to run Python's signal handlers, so
    // Ctrl-C interrupts a long evaluation within one block's time (tens of milliseconds).
    let mut first = 0usize;
    let mut pacer = Pacer::new(BLOCK, threads, BLOCK * 4);
    let mut rest = out;
    while !rest.is_empty() {
        let began = std::time::Instant::now();
        let n = (pacer.size() * osz).min(rest.len());
        let (block, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        let len = block.len() / osz;
        let per = len.div_ceil(threads).max(1);
        let r = py.detach(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> = block
                    .chunks_mut(per * osz)
                    .enumerate()
                    .map(|(k, chunk)| {
                        let ins = &ins;
                        let start = (first + k * per) as u64;
                        let end = start + (chunk.len() / osz) as u64;
                        s.spawn(move || program.eval_broadcast(ins, chunk, start..end))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
            })
        });
        for res in r {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(to_py(py, e)),
                // A panic of the evaluator (a bug) is reported, not propagated into Python.
                Err(_) => return Err(PyRuntimeError::new_err("an evaluation thread panicked")),
            }
        }
        first += len;
        pacer.took(began.elapsed());
        py.check_signals()?;
    }
    Ok(())
}
