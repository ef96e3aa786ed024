//! What a map over ranks is asked to do ([`MapJob`]) and what it did ([`Mapped`]): the
//! arguments, rank 0's checks of them, and the input opened with its kernel compiled.

use std::path::{Path, PathBuf};

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
    /// Allow the output to replace the input.
    pub in_place: bool,
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
        f
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

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// The input, opened and checked, and the kernel compiled for it.
pub(crate) struct Prepared {
    pub(crate) src: NpyArray,
    pub(crate) spec: KernelSpec,
    pub(crate) out_dtype: Dtype,
}

#[allow(unsafe_code)]
pub(crate) fn prepare(job: &MapJob) -> Result<Prepared> {
    let out_dtype = job.dtype.as_deref().map(str::parse::<Dtype>).transpose().map_err(shmpool::Error::from)?;
    Program::check_syntax(&job.expr).map_err(shmpool::Error::from)?; // before opening anything
                                                                     // SAFETY: the documented contract of shmpool-mpi, as of `shmpool map` and
                                                                     // `np.load(mmap_mode='r')`: nobody truncates or rewrites the input during the map. The
                                                                     // mapping is read-only; `in_place` writes a new file and renames it over the input only
                                                                     // after every rank has finished.
    let src = unsafe { NpyArray::open(&job.input) }?;
    let program = Program::compile_for(&job.expr, src.dtype()).map_err(shmpool::Error::from)?;
    let out_dtype = out_dtype.unwrap_or(program.output_dtype());
    let spec = KernelSpec::expr_for(&program, src.dtype(), out_dtype)?;
    Ok(Prepared { src, spec, out_dtype })
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
    if same_file(&job.input, &job.output) && !job.in_place {
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
