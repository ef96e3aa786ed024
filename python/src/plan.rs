//! Expressions with reductions over named arrays (`sum(x * x)`, `x - mean(x)`,
//! `sqrt(sum(x*x)) / size(x)`), as the CLI's `reduce` and two-pass `map` plan them: `size(NAME)`
//! becomes the input's element count, every reduction is taken out and computed first (its
//! inner expression evaluated in blocks and reduced, blocks joined in index order), then the
//! rest is evaluated with the reductions' values as 0-d inputs (`__r0`, ...). Runs in this
//! process with the GIL released, as the `multi` module does.

use super::*;

use shmpool::kernel::expr::parse::{
    check_input_name, extract_reductions, substitute_sizes, ReductionCall, REDUCTION_PREFIX,
};
use shmpool::kernel::expr::{broadcast_shapes, Reducer, Reduction, Value};

/// One input as the package hands it over: (name, dtype name, shape).
pub(crate) type Named = (String, String, Vec<u64>);

/// Flat indices reduced by one [`Reducer`]: the engine's block (`expr_reduce::reduce_npy`), so that
/// the result does not depend on the number of threads.
const REDUCE_BLOCK: usize = 1 << 13;
/// Blocks reduced between two checks for Python signals (Ctrl-C) at first: 1M values.
const ROUND_BLOCKS: usize = (1 << 20) / REDUCE_BLOCK;
/// How long a round between two checks for Python signals should take at most.
const ROUND_TARGET: std::time::Duration = std::time::Duration::from_millis(40);

/// The size of the rounds between two checks for Python signals: halved after a round slower
/// than [`ROUND_TARGET`] (a costly expression, a loaded machine), doubled after a much faster
/// one, within `min..=max`; so Ctrl-C interrupts within about that time.
pub(crate) struct Pacer {
    size: usize,
    min: usize,
    max: usize,
}

impl Pacer {
    pub(crate) fn new(start: usize, min: usize, max: usize) -> Pacer {
        Pacer { size: start.clamp(min, max), min, max }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Adapts the size to the last round's duration.
    pub(crate) fn took(&mut self, d: std::time::Duration) {
        if d > ROUND_TARGET {
            self.size = (self.size / 2).max(self.min);
        } else if d < ROUND_TARGET / 4 {
            self.size = self.size.saturating_mul(2).min(self.max);
        }
    }
}

/// An expression over the inputs of one evaluation: the program, which inputs it reads (indices
/// into the given inputs) and the broadcast shape of those.
pub(crate) struct Part {
    pub(crate) program: Program,
    pub(crate) used: Vec<usize>,
    pub(crate) shape: Vec<u64>,
    /// The 0-d values it reads after the inputs (indices into the earlier reductions' values,
    /// then [`Plan::extra`]).
    pub(crate) consts: Vec<usize>,
}

/// What [`plan`] makes of an expression: its reductions, then the outer expression.
pub(crate) struct Plan {
    pub(crate) reductions: Vec<(Reduction, Part)>,
    pub(crate) outer: Part,
    /// The 0-d inputs of the outer expression after the reductions' values (a `True` for an
    /// expression that reads nothing).
    pub(crate) extra: Vec<Vec<u8>>,
}

fn py_err(e: shmpool::kernel::expr::Error) -> PyErr {
    Python::attach(|py| to_py(py, e))
}

/// Whether `expr` calls a reduction or `size(...)`, which the one-input engine path cannot run.
#[pyfunction]
pub(crate) fn has_reductions(expr: &str) -> bool {
    let nested = Reduction::split(expr)
        .is_some_and(|(_, inner)| matches!(extract_reductions(inner), Ok((_, r)) if !r.is_empty()));
    nested || matches!(extract_reductions(expr), Ok((_, r)) if !r.is_empty()) || substitute_sizes(expr, &[]).is_err()
}

/// `src` compiled over the inputs it uses, each followed by `consts` (name, dtype).
fn part(src: &str, inputs: &[Named], dtypes: &[Dtype], consts: &[(String, Dtype)]) -> PyResult<Part> {
    let vars = Program::variables(src).map_err(py_err)?;
    let used: Vec<usize> = (0..inputs.len()).filter(|&k| vars.contains(&inputs[k].0)).collect();
    let typed: Vec<(&str, Dtype)> = used
        .iter()
        .map(|&k| (inputs[k].0.as_str(), dtypes[k]))
        .chain(consts.iter().filter(|(n, _)| vars.contains(n)).map(|(n, d)| (n.as_str(), *d)))
        .collect();
    let program = Program::compile_inputs(src, &typed).map_err(py_err)?;
    let shapes: Vec<&[u64]> = used.iter().map(|&k| inputs[k].2.as_slice()).collect();
    let shape = broadcast_shapes(&shapes).map_err(py_err)?;
    let consts = (0..consts.len()).filter(|&j| vars.contains(&consts[j].0)).collect();
    Ok(Part { program, used, shape, consts })
}

/// Plans `expr` over `inputs`: every input must be used, none may be named like the
/// reductions' values.
pub(crate) fn plan(expr: &str, inputs: &[Named]) -> PyResult<Plan> {
    let dtypes = inputs.iter().map(|(_, d, _)| dtype_arg(d)).collect::<PyResult<Vec<Dtype>>>()?;
    for (n, _, _) in inputs {
        check_input_name(n).map_err(py_err)?;
    }
    if let Some((n, _, _)) = inputs.iter().find(|(n, _, _)| n.starts_with(REDUCTION_PREFIX)) {
        return Err(PyValueError::new_err(format!("input names starting with {REDUCTION_PREFIX} are reserved ({n})")));
    }
    let sizes: Vec<(&str, u64)> = inputs.iter().map(|(n, _, s)| (n.as_str(), s.iter().product::<u64>())).collect();
    let sized = substitute_sizes(expr, &sizes).map_err(py_err)?;
    let mut reductions = Vec::new();
    let mut consts = Vec::new();
    let rewritten = match Reduction::split(&sized) {
        // One level of reductions inside a whole-expression reduction (`sum((x - mean(x)) **
        // 2)`), as `shmpool reduce` plans it: the inner reductions first, then the outer one.
        Some((kind, inner)) if matches!(extract_reductions(inner), Ok((_, r)) if !r.is_empty()) => {
            let (inner, found) = extract_reductions(inner).map_err(py_err)?;
            add_reductions(found, (inputs, &dtypes), &mut reductions, &mut consts)?;
            let p = part(&inner, inputs, &dtypes, &consts)?;
            let name = format!("{REDUCTION_PREFIX}{}", consts.len());
            consts.push((name.clone(), kind.result_dtype(p.program.output_dtype())));
            reductions.push((kind, p));
            name
        }
        _ => {
            let (rewritten, found) = extract_reductions(&sized).map_err(py_err)?;
            add_reductions(found, (inputs, &dtypes), &mut reductions, &mut consts)?;
            rewritten
        }
    };
    let reads = Program::variables(&rewritten).map_err(py_err)?;
    let mut rewritten = rewritten;
    let mut extra = Vec::new();
    if consts.is_empty() && !inputs.iter().any(|(n, _, _)| reads.contains(n)) {
        // Reads nothing (`size(a) * 1.5`): numpy's 0-d array of the value, the `where` of a
        // 0-d True (not depending on it) and two Python scalars.
        Program::compile_for(&rewritten, Dtype::Bool).map_err(py_err)?;
        let name = format!("{REDUCTION_PREFIX}{}", consts.len());
        rewritten = format!("where({name}, ({rewritten}), ({rewritten}))");
        consts.push((name, Dtype::Bool));
        extra.push(vec![1u8]);
    }
    let outer = part(&rewritten, inputs, &dtypes, &consts)?;
    // After compiling: a name used but not given is reported first, with its column; a name
    // read only through `size(NAME)` is used.
    let vars = Program::variables(expr).map_err(py_err)?;
    if let Some((n, _, _)) = inputs.iter().find(|(n, _, _)| !vars.contains(n)) {
        return Err(py_err(shmpool::kernel::expr::Error::InputNotUsed {
            name: n.clone(),
            problem: "is not used by the expression",
        }));
    }
    Ok(Plan { reductions, outer, extra })
}

/// Plans the reduction calls `found` (whole-array only) after `reductions`, each reading the
/// inputs and the values of `consts` (those before it), and names their values in `consts`.
fn add_reductions(
    found: Vec<ReductionCall>,
    (inputs, dtypes): (&[Named], &[Dtype]),
    reductions: &mut Vec<(Reduction, Part)>,
    consts: &mut Vec<(String, Dtype)>,
) -> PyResult<()> {
    for call in found {
        if let Some(axis) = call.axis {
            // numpy's AxisError first (`sum(x, 1)` on a 1-d x), then the refusal.
            let ndim = inputs.iter().map(|(_, _, s)| s.len()).max().unwrap_or(0);
            shmpool::kernel::expr::normalize_axis(axis, ndim).map_err(py_err)?;
            return Err(pyo3::exceptions::PyNotImplementedError::new_err(format!(
                "{}(..., axis={axis}): shmpool.evaluate reduces whole arrays only; use `shmpool reduce` or numpy for axis reductions",
                call.reduction.name()
            )));
        }
        let p = part(&call.inner, inputs, dtypes, consts)?;
        let name = format!("{REDUCTION_PREFIX}{}", consts.len());
        consts.push((name, call.reduction.result_dtype(p.program.output_dtype())));
        reductions.push((call.reduction, p));
    }
    Ok(())
}

/// The values of `plan`'s reductions over `data` (each input's bytes), with numpy's warnings.
pub(crate) fn reduce_all(
    py: Python<'_>,
    plan: &Plan,
    inputs: &[Named],
    data: &[&[u8]],
    threads: usize,
) -> PyResult<Vec<(Value, Option<&'static str>)>> {
    let mut values = Vec::with_capacity(plan.reductions.len());
    for (kind, p) in &plan.reductions {
        let earlier = const_bytes(&values);
        let ins: Vec<(&[u8], &[u64])> = p
            .used
            .iter()
            .map(|&k| (data[k], inputs[k].2.as_slice()))
            .chain(p.consts.iter().map(|&j| (earlier[j].as_slice(), &[][..])))
            .collect();
        let mut r = Reducer::new(*kind, p.program.output_dtype());
        let passes = if r.two_passes() { 2 } else { 1 };
        for pass in 0..passes {
            if pass == 1 {
                r.second_pass();
            }
            if let Some(joined) = reduce_pass(py, &r, p, &ins, threads)? {
                r = joined;
            }
        }
        values.push(r.finish().map_err(|e| to_py(py, e))?);
    }
    Ok(values)
}

/// One pass of `start` (a fresh reducer, or the joined first pass of `std`/`var`) over `p`'s
/// values: one reducer per block, blocks shared among `threads` scoped threads (GIL released,
/// Python's signals checked between rounds), joined in block order. `None`: no values.
fn reduce_pass(
    py: Python<'_>,
    start: &Reducer,
    p: &Part,
    ins: &[(&[u8], &[u64])],
    threads: usize,
) -> PyResult<Option<Reducer>> {
    let n = p.shape.iter().product::<u64>() as usize;
    let blocks = n.div_ceil(REDUCE_BLOCK);
    // A sequential reduction (float `prod`) runs on one thread, one reducer carried on.
    let seq = start.sequential();
    let threads = if seq { 1 } else { threads.clamp(1, blocks.max(1)) };
    let osz = p.program.output_dtype().size();
    let mut joined: Option<Reducer> = None;
    // Rounds of ROUND_BLOCKS blocks (1M values) at first, paced to ROUND_TARGET, signals
    // checked between rounds: Ctrl-C interrupts a long reduction within one round's time.
    let mut pacer = Pacer::new(ROUND_BLOCKS, threads, 512 * threads);
    let mut first = 0;
    while first < blocks {
        let began = std::time::Instant::now();
        let last = (first + pacer.size()).min(blocks);
        let per = (last - first).div_ceil(threads);
        type Joined = std::thread::Result<shmpool::kernel::expr::Result<Vec<Reducer>>>;
        let from = if seq { joined.take().unwrap_or_else(|| start.clone()) } else { start.clone() };
        let from = &from;
        let parts: Vec<Joined> = py.detach(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> = (first..last)
                    .step_by(per)
                    .map(|b0| {
                        let b1 = (b0 + per).min(last);
                        s.spawn(move || reduce_blocks(from, p, ins, b0..b1, n, osz))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join()).collect()
            })
        });
        for part in parts {
            // A panic of the evaluator (a bug) is reported, never a result missing its blocks.
            let part = part.map_err(|_| PyRuntimeError::new_err("a reduction thread panicked"))?;
            for r in part.map_err(|e| to_py(py, e))? {
                match joined.as_mut() {
                    None => joined = Some(r),
                    Some(j) => j.merge(&r),
                }
            }
        }
        first = last;
        pacer.took(began.elapsed());
        py.check_signals()?;
    }
    Ok(joined)
}

/// The reducers of blocks `blocks` (each a clone of `start` fed with its block's values; for a
/// sequential reduction, one reducer fed with all of them in order).
fn reduce_blocks(
    start: &Reducer,
    p: &Part,
    ins: &[(&[u8], &[u64])],
    blocks: std::ops::Range<usize>,
    n: usize,
    osz: usize,
) -> shmpool::kernel::expr::Result<Vec<Reducer>> {
    let mut scratch = vec![0u8; REDUCE_BLOCK * osz];
    let mut out = Vec::with_capacity(blocks.len());
    let mut carried = start.clone();
    for b in blocks {
        let (lo, hi) = (b * REDUCE_BLOCK, ((b + 1) * REDUCE_BLOCK).min(n));
        let buf = &mut scratch[..(hi - lo) * osz];
        p.program.eval_broadcast(ins, buf, lo as u64..hi as u64)?;
        if start.sequential() {
            // One reducer over every block, in order (`Reducer::sequential`).
            carried.update(buf, lo as u64)?;
            continue;
        }
        let mut r = start.clone();
        r.update(buf, lo as u64)?;
        out.push(r);
    }
    if start.sequential() {
        out.push(carried);
    }
    Ok(out)
}

/// The 0-d inputs that carry the reductions' values into the outer expression, after `plan`'s
/// used inputs: (bytes, shape `[]`) for the ones the outer program reads, in order.
pub(crate) fn const_bytes(values: &[(Value, Option<&'static str>)]) -> Vec<Vec<u8>> {
    values.iter().map(|(v, _)| v.to_le_bytes()).collect()
}
