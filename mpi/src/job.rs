//! What a map over ranks is asked to do ([`MapJob`]) and what it did ([`Mapped`]): the
//! arguments, rank 0's checks of them, and the input opened with its kernel compiled.

use std::path::{Path, PathBuf};

use shmpool::cli::same_file;
use shmpool::kernel::expr::Program;
use shmpool::{Dtype, KernelSpec, NpyArray};

use crate::{Error, Result, MIN_ELEMENTS_PER_WORKER};

/// One map of a `.npy` file over the ranks of a communicator: the arguments of
/// `shmpool map INPUT -o OUTPUT`. Every rank must pass the same job: ranks whose input,
/// output, expression, dtype or `in_place` differ from rank 0's fail before any rank writes
/// (the workers and the chunk length may differ).
#[derive(Debug, Clone)]
pub struct MapJob {
    /// The input `.npy` file, on a filesystem every rank sees.
    pub input: PathBuf,
    /// The output `.npy` file (its directory must be visible to every rank).
    pub output: PathBuf,
    /// Expression over `x` and `i` (the global flat index), numpy's semantics.
    pub expr: String,
    /// Output dtype (numpy's spelling); `None`: the expression's result type.
    pub dtype: Option<String>,
    /// Worker processes per rank; `None`: this machine's cores divided among its ranks.
    pub workers: Option<usize>,
    /// Elements per chunk; `None`: adaptive.
    pub chunk_len: Option<usize>,
    /// Allow the output to replace the input (with `inputs`, the one input it is).
    pub in_place: bool,
    /// Named inputs for an expression over several arrays (`shmpool map a=a.npy b=b.npy`),
    /// broadcast as numpy's; one of them must have the output's shape. Empty: the one input
    /// `input`, named `x` (then `input` is the only one; with `inputs`, `input` is not used).
    pub inputs: Vec<(String, PathBuf)>,
}

impl MapJob {
    /// A job mapping `expr` from `input` to `output` with the defaults.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>, expr: impl Into<String>) -> MapJob {
        MapJob {
            input: input.into(),
            output: output.into(),
            expr: expr.into(),
            dtype: None,
            workers: None,
            chunk_len: None,
            in_place: false,
            inputs: Vec::new(),
        }
    }
}

impl MapJob {
    /// What makes the output: every rank must agree on it (the workers and the chunk length
    /// may differ between ranks, the bytes written do not).
    pub(crate) fn fingerprint(&self) -> Vec<u8> {
        let mut f = Vec::new();
        let mut field = |b: &[u8]| {
            f.extend_from_slice(&(b.len() as u64).to_le_bytes());
            f.extend_from_slice(b);
        };
        field(self.input.as_os_str().as_encoded_bytes());
        field(self.output.as_os_str().as_encoded_bytes());
        field(self.expr.as_bytes());
        field(self.dtype.as_deref().unwrap_or("\0none").as_bytes());
        field(&[u8::from(self.in_place)]);
        for (name, path) in &self.inputs {
            field(name.as_bytes());
            field(path.as_os_str().as_encoded_bytes());
        }
        f
    }
}

impl MapJob {
    /// What identifies the files this job reads, as this rank sees them: per input, its inode
    /// number, size and modification time (the same on every node of a shared filesystem,
    /// unlike the device number). Ranks compare theirs with rank 0's, so that ranks whose
    /// relative names lead to different files, or that open an input replaced meanwhile, fail
    /// instead of mapping a mix. An input that cannot be read is left out (opening it fails).
    pub(crate) fn input_identities(&self) -> Vec<u8> {
        use std::os::unix::fs::MetadataExt;
        let paths = std::iter::once(&self.input).chain(self.inputs.iter().map(|(_, p)| p));
        let mut out = Vec::new();
        for m in paths.filter_map(|p| std::fs::metadata(p).ok()) {
            for w in [m.ino(), m.size(), m.mtime() as u64, m.mtime_nsec() as u64] {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// [`prepare`] between two looks at the inputs' identities, which must agree (the files
    /// opened are the ones identified): the inputs and their identities.
    pub(crate) fn prepare_identified(&self) -> Result<(Prepared, Vec<u8>)> {
        let before = self.input_identities();
        let p = prepare(self)?;
        let after = self.input_identities();
        if before != after {
            return Err(Error::Usage(format!(
                "the input {} was replaced or changed while it was opened",
                self.input.display()
            )));
        }
        Ok((p, after))
    }
}

/// What a finished map did (the same on every rank, except `workers`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Elements mapped across all ranks.
    pub len: usize,
    /// The input's shape.
    pub shape: Vec<u64>,
    /// The input's dtype.
    pub in_dtype: Dtype,
    /// The output's dtype.
    pub out_dtype: Dtype,
    /// Ranks of the communicator.
    pub ranks: usize,
    /// This rank's elements.
    pub local: std::ops::Range<usize>,
    /// This rank's worker processes (0 for an empty slice).
    pub workers: usize,
}

/// Progress across ranks, as rank 0 sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Elements finished on all ranks (as last reported).
    pub done: usize,
    /// Elements in total.
    pub total: usize,
}

/// The input, opened and checked, and the kernel compiled for it.
/// The longest row a broadcast map over row numbers gives one unit (`shmpool map`'s).
const ROW_MAX: u64 = 16_384;

pub(crate) struct Prepared {
    /// The input of the output's shape, which the map runs over.
    pub(crate) src: NpyArray,
    /// Its path (to tell, after a failure, whether it changed during the map).
    pub(crate) src_path: PathBuf,
    pub(crate) spec: KernelSpec,
    pub(crate) out_dtype: Dtype,
    /// The output's shape: `src`'s, or the broadcast of inputs none of which has it.
    pub(crate) shape: Vec<u64>,
    /// When no input has the output's shape ((n, 1) with (1, m)), as `shmpool map`: the map
    /// runs over row numbers, `row` output elements each.
    pub(crate) rows: Option<u64>,
    /// The other inputs, open as long as the kernel may read them (`KernelSpec::expr_files`).
    _others: Vec<NpyArray>,
}

impl Prepared {
    /// The output's number of elements.
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product::<u64>() as usize
    }
}

/// Opens an input under the contract of `shmpool-mpi`.
#[allow(unsafe_code)]
fn open_input(path: &Path) -> Result<NpyArray> {
    // SAFETY: the documented contract of shmpool-mpi, as of `shmpool map` and
    // `np.load(mmap_mode='r')`: nobody truncates or rewrites an input during the map. The
    // mapping is read-only; `in_place` writes a new file and renames it over the input only
    // after every rank has finished.
    Ok(unsafe { NpyArray::open(path) }?)
}

fn expr_error(e: shmpool::kernel::expr::Error) -> Error {
    Error::Engine(e.into())
}

pub(crate) fn prepare(job: &MapJob) -> Result<Prepared> {
    let out_dtype = job.dtype.as_deref().map(str::parse::<Dtype>).transpose().map_err(shmpool::Error::from)?;
    refuse_reductions(&job.expr)?; // before opening anything
    if !job.inputs.is_empty() {
        return prepare_named(job, out_dtype);
    }
    Program::check_syntax(&job.expr).map_err(expr_error)?;
    let src = open_input(&job.input)?;
    let program = Program::compile_for(&job.expr, src.dtype()).map_err(expr_error)?;
    let out_dtype = out_dtype.unwrap_or(program.output_dtype());
    let spec = KernelSpec::expr_for(&program, src.dtype(), out_dtype)?;
    let shape = src.shape().to_vec();
    Ok(Prepared { src, src_path: job.input.clone(), spec, out_dtype, shape, rows: None, _others: Vec::new() })
}

/// Reductions (`x - mean(x)`) and sizes (`size(x)`): `shmpool map` computes them first over
/// the whole input; over ranks that would be a map-reduce of its own (a collective per
/// reduction) before the map. Not done: refused before any file is opened.
fn refuse_reductions(expr: &str) -> Result<()> {
    use shmpool::kernel::expr::parse::{extract_reductions, substitute_sizes};
    let reduces = matches!(extract_reductions(expr), Ok((_, r)) if !r.is_empty());
    if reduces || substitute_sizes(expr, &[]).is_err() {
        return Err(Error::Usage(
            "shmpool-mpi maps element by element: reductions (sum, mean, ...) and size() in a map are shmpool map's only"
                .into(),
        ));
    }
    Ok(())
}

/// Several named inputs, as `shmpool map a=a.npy b=b.npy` checks and compiles them: names
/// before files, then the broadcast shape, the input of that shape (the one mapped over) and
/// the output that may replace an input.
fn prepare_named(job: &MapJob, out_dtype: Option<Dtype>) -> Result<Prepared> {
    let names: Vec<&str> = job.inputs.iter().map(|(n, _)| n.as_str()).collect();
    let used = Program::variables(&job.expr).map_err(expr_error)?;
    if let Some(u) = used.iter().find(|u| !names.contains(&u.as_str())) {
        return Err(Error::Usage(format!("the expression uses '{u}', which is not an input ({})", names.join(", "))));
    }
    if let Some(n) = names.iter().find(|n| !used.iter().any(|u| u == *n)) {
        return Err(Error::Usage(format!("input '{n}' is not used by the expression")));
    }
    let mut arrays = job.inputs.iter().map(|(_, p)| open_input(p)).collect::<Result<Vec<_>>>()?;
    let typed: Vec<(&str, Dtype)> = names.iter().zip(&arrays).map(|(n, a)| (*n, a.dtype())).collect();
    let program = Program::compile_inputs(&job.expr, &typed).map_err(expr_error)?;
    let shapes: Vec<&[u64]> = arrays.iter().map(NpyArray::shape).collect();
    let out_shape = shmpool::kernel::expr::broadcast_shapes(&shapes).map_err(expr_error)?;
    let main = arrays.iter().position(|a| a.shape() == out_shape.as_slice());
    let out_dtype = out_dtype.unwrap_or(program.output_dtype());
    check_replaced(job, &arrays, out_dtype, &out_shape)?;
    let files: Vec<(&Path, &NpyArray)> = job.inputs.iter().map(|(_, p)| p.as_path()).zip(&arrays).collect();
    // No input of the output's shape: the map runs over row numbers, as `shmpool map`'s (the
    // longest row up to ROW_MAX elements that divides the output).
    let total: u64 = out_shape.iter().product();
    let rows = main.is_none().then(|| (1..=ROW_MAX.min(total.max(1))).rev().find(|r| total % r == 0).unwrap_or(1));
    // SAFETY: the arrays outlive every map with this kernel: `Prepared` keeps them (`src` and
    // `_others`) for as long as it holds the kernel, and they were opened under the contract
    // of `open_input`.
    #[allow(unsafe_code)]
    let spec = unsafe {
        match rows {
            Some(row) => KernelSpec::expr_files_rows(&program, &files, &[], row, out_dtype),
            None => KernelSpec::expr_files(&program, &files, &[], main.unwrap_or(0), out_dtype),
        }
    }?;
    let main = main.unwrap_or(0);
    let src = arrays.swap_remove(main);
    let src_path = job.inputs[main].1.clone();
    Ok(Prepared { src, src_path, spec, out_dtype, shape: out_shape, rows, _others: arrays })
}

/// An output that is one of the named inputs: allowed with `in_place` when it has that
/// input's shape and dtype (as `shmpool map --in-place=NAME`).
fn check_replaced(job: &MapJob, arrays: &[NpyArray], out_dtype: Dtype, out_shape: &[u64]) -> Result<()> {
    for ((name, path), a) in job.inputs.iter().zip(arrays) {
        if !same_file(path, &job.output) {
            continue;
        }
        if !job.in_place {
            return Err(Error::Usage(format!(
                "output {} is the input {name}: pass --in-place={name} to replace it",
                job.output.display()
            )));
        }
        if a.shape() != out_shape || a.dtype() != out_dtype {
            return Err(Error::Usage(format!(
                "--in-place={name}: the output ({out_dtype}, shape {out_shape:?}) cannot replace the input ({}, shape {:?})",
                a.dtype(),
                a.shape()
            )));
        }
    }
    Ok(())
}

/// Rank 0's checks, in `shmpool map`'s order and with its messages.
pub(crate) fn check_arguments(job: &MapJob) -> Result<()> {
    if job.workers == Some(0) {
        return Err(Error::Usage("-j must be at least 1".into()));
    }
    if job.output.as_os_str().as_encoded_bytes().ends_with(b"/") {
        // A name with a trailing slash is a directory's: `shmpool map` fails to link its output
        // there (after its map); say the same before any rank works.
        return Err(Error::Engine(shmpool::Error::File {
            op: "link",
            path: job.output.display().to_string(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }));
    }
    if job.inputs.is_empty() && same_file(&job.input, &job.output) && !job.in_place {
        return Err(Error::Usage(format!(
            "output {} is the input; pass --in-place to replace it",
            job.output.display()
        )));
    }
    Ok(())
}

/// The ranks of this machine (Open MPI tells each rank), 1 if unknown.
pub(crate) fn local_ranks() -> usize {
    std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

pub(crate) fn worker_count(want: Option<usize>, n: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(2);
    let want = want.unwrap_or_else(|| (cores / local_ranks()).max(1));
    want.min(n.div_ceil(MIN_ELEMENTS_PER_WORKER)).max(1)
}

pub(crate) fn pool_workers(job: &MapJob, local: &std::ops::Range<usize>) -> usize {
    if local.is_empty() {
        0
    } else {
        worker_count(job.workers, local.len())
    }
}
