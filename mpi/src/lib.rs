//! # shmpool-mpi
//!
//! shmpool over MPI: the same map as `shmpool map`, over a `.npy` file on a filesystem every
//! rank sees, with every rank mapping its own contiguous slice with a local shmpool pool, and
//! one output file that is byte-identical to the one `shmpool map` writes on one machine.
//!
//! - [`map_npy`] maps a `.npy` file over the ranks of a given communicator (an MPI application
//!   calls it between its own steps; the `shmpool-mpi` binary calls it on `MPI_COMM_WORLD`).
//! - [`scatter_map_gather`] maps an array that lives in rank 0's memory: scattered over the
//!   ranks, mapped by each rank's pool, gathered back on rank 0.
//! - [`abort_on_panic`] makes a panic anywhere in the process end the whole job
//!   (`MPI_Abort`), never unwind into `MPI_Finalize` while the other ranks wait in a
//!   collective.
//!
//! ## How a map runs
//!
//! Rank 0 checks everything a user can get wrong (arguments, the input's header, the
//! expression) and creates the output as a hidden temporary file in the output's directory
//! ([`shmpool::NpyOutput::create_shared`]); one broadcast tells every rank the outcome and the
//! temporary's name. Every rank then opens the input and the temporary, maps elements
//! `n·r/R .. n·(r+1)/R` in place ([`shmpool::Pool::map_npy_range`], `i` the global flat index),
//! writes its pages back, and reports a status word; rank 0 publishes the file (atomic rename,
//! `np.save`'s permissions) only when every rank reported success, and removes it otherwise.
//! Data never moves between ranks: one collective at the start, one at the end.
//!
//! Rank 0 also starts, once per process, a watcher: `/bin/sh` in a process group of its own,
//! told the temporary's name over a socket, which removes it when rank 0 ends without having
//! published it, however it ended (every rank SIGKILLed, as when mpirun is). Every other rank
//! keeps the name until rank 0 says it published, and removes it when stopped by a signal.
//!
//! Ranks wait for each other with `MPI_Ibarrier` and a test-and-sleep loop, never in a
//! blocking collective that would busy-poll a core away from the local workers.
//!
//! ## Requirements
//!
//! Initialise MPI with at least [`mpi::Threading::Funneled`]: a pool runs threads of its own
//! (they never call MPI). Call the functions from the thread that initialised MPI. Widen the
//! rank's CPU affinity ([`widen_cpu_affinity`]) before the first pool is built, or start
//! mpirun with `--bind-to none`: mpirun binds each rank to one core and workers inherit it.
//! The `testing` feature compiles hooks for this crate's own tests (environment variables
//! that hold or panic a rank mid-map); never enable it in a build you ship.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc, missing_docs)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use shmpool::kernel::expr::Program;
use shmpool::{Dtype, KernelSpec, NpyArray, NpyOutput, Pool, SharedVec};

/// Exit code (and status word) for bad input or usage, as `shmpool map`.
pub const EXIT_USAGE: i32 = 2;
/// Exit code (and status word) for a failure while running, as `shmpool map`.
pub const EXIT_FAILURE: i32 = 1;

/// Elements per worker below which another worker would only add start-up time (as
/// `shmpool map`).
pub const MIN_ELEMENTS_PER_WORKER: usize = 65_536;

/// What went wrong, on this rank or another.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments, found by rank 0 before anything was written.
    #[error("{0}")]
    Usage(String),
    /// The engine failed on this rank (bad input, a kernel panic, a crashed worker, I/O).
    #[error(transparent)]
    Engine(#[from] shmpool::Error),
    /// Another rank failed and reported it; this rank did nothing wrong.
    #[error("another rank failed (status {status})")]
    OtherRank {
        /// The status word the ranks agreed on (an exit code).
        status: i32,
    },
    /// The input changed (was truncated or replaced) while the ranks mapped it: the engine's
    /// error (workers that could not read their chunks) is the consequence.
    #[error("the input {path} changed during the map (it is now {now}, it was {was} bytes)")]
    InputChanged {
        /// The input.
        path: String,
        /// Its size now ("gone" when it is).
        now: String,
        /// Its size when the map started, in bytes.
        was: u64,
        /// What the engine met.
        #[source]
        source: shmpool::Error,
    },
    /// A slice is too large for one MPI message (counts are C ints).
    #[error("too large for MPI: {bytes} bytes in one rank's slice, at most {max}")]
    TooLarge {
        /// Bytes of the largest slice.
        bytes: u64,
        /// The largest count MPI takes.
        max: u64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The process exit code for this error, as `shmpool map` uses them: 2 for usage and bad
    /// input, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::OtherRank { status } => *status,
            Error::TooLarge { .. } => EXIT_USAGE,
            Error::InputChanged { .. } => EXIT_FAILURE,
            // Decided by kind, never by message, as `shmpool map` decides.
            Error::Engine(e) => match e.kind() {
                shmpool::ErrorKind::InvalidInput | shmpool::ErrorKind::File => EXIT_USAGE,
                _ => EXIT_FAILURE,
            },
        }
    }

    /// Whether another rank already printed this failure (this rank should stay quiet).
    pub fn reported_elsewhere(&self) -> bool {
        matches!(self, Error::OtherRank { .. })
    }
}

/// An error and every `source()` below it, on one line (as `shmpool map` prints them).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

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
    fn fingerprint(&self) -> Vec<u8> {
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

/// Message tags on the map's private communicator.
const TAG_PROGRESS: i32 = 1;
const TAG_FINAL: i32 = 2;
/// How often a rank reports its progress to rank 0.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// The temporary output this process knows of, removed by [`remove_temporary`] when the
/// process is stopped by a signal or panics (each rank knows the name, so a SIGKILLed rank 0
/// still leaves no debris: mpirun stops the others, which remove it).
static TEMPORARY: Mutex<Temporary> = Mutex::new(Temporary::None);

/// What [`remove_temporary`] removes.
enum Temporary {
    None,
    /// Rank 0 is creating the temporary for this output: its name is not known yet, but the
    /// file is open in this process (found through `/proc/self/fd`).
    Creating(PathBuf),
    /// The temporary's name.
    Named(PathBuf),
}

fn set_temporary(p: Option<PathBuf>) {
    let mut g = TEMPORARY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = WATCHER.get() {
        tell_watcher(w, p.as_deref());
    }
    *g = p.map_or(Temporary::None, Temporary::Named);
}

/// Rank 0's watcher: a shell in a process group of its own that reads temporary names, one a
/// line (an empty line: none), and removes the last one when its input ends, that is when
/// this process has ended however it ended. A process killed with SIGKILL runs no handler:
/// when mpirun itself is SIGKILLed (a batch system's hard limit, `timeout -s KILL`), every
/// rank dies so, and only the watcher is left to remove the temporary. `None` when it could
/// not be started (then a SIGKILL of every rank leaves the temporary, as before).
static WATCHER: std::sync::OnceLock<Option<Mutex<std::os::unix::net::UnixStream>>> = std::sync::OnceLock::new();

const WATCHER_SCRIPT: &str = "p=; while IFS= read -r l; do p=$l; done; if [ -n \"$p\" ]; then rm -f -- \"$p\"; fi";

fn start_watcher() {
    WATCHER.get_or_init(|| {
        use std::os::unix::process::CommandExt;
        // A socket, not a pipe: a write after the watcher died fails (MSG_NOSIGNAL) instead of
        // raising SIGPIPE.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().ok()?;
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", WATCHER_SCRIPT])
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Out of the rank's process group: signals mpirun sends to the group miss it.
            .process_group(0)
            .spawn()
            .ok()?;
        drop(child); // never waited for: it outlives this process by design
        Some(Mutex::new(ours))
    });
}

fn tell_watcher(w: &Option<Mutex<std::os::unix::net::UnixStream>>, p: Option<&Path>) {
    use std::io::Write;
    let Some(w) = w else { return };
    // Absolute: the watcher keeps the working directory it was started in.
    let p = p.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let mut line = p.map_or(Vec::new(), |p| p.as_os_str().as_encoded_bytes().to_vec());
    if line.contains(&b'\n') {
        line.clear(); // a name the line protocol cannot carry: the watcher forgets instead
    }
    line.push(b'\n');
    if let Ok(mut s) = w.lock() {
        let _ = s.write_all(&line);
    }
}

fn set_creating(output: &Path) {
    *TEMPORARY.lock().unwrap_or_else(|e| e.into_inner()) = Temporary::Creating(output.to_path_buf());
}

/// The hidden temporaries of `output` (`.NAME.XXXXXX.tmp` in its directory) that this
/// process has open: the one it is creating.
fn open_temporaries_of(output: &Path) -> Vec<PathBuf> {
    let Some(name) = output.file_name().map(|n| n.as_encoded_bytes().to_vec()) else { return Vec::new() };
    let dir = output.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(dir) = dir.canonicalize() else { return Vec::new() };
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.parent() == Some(dir.as_path()))
        .filter(|p| {
            // The engine shortens NAME for a long output name: a prefix of it.
            let f = p.file_name().map_or(&[][..], |f| f.as_encoded_bytes());
            let Some(body) = f.strip_prefix(b".").and_then(|b| b.strip_suffix(b".tmp")) else { return false };
            body.len() > 7 && body[body.len() - 7] == b'.' && name.starts_with(&body[..body.len() - 7])
        })
        .collect()
}

/// Removes the temporary output of a map in progress, if any (for signal handlers and panic
/// hooks; a published output has been renamed and is left alone).
pub fn remove_temporary() {
    // try_lock: a panic hook or signal thread must never block on the main thread (which
    // holds the lock for a moment only, to set the name); a poisoned lock still holds it.
    for _ in 0..100 {
        let g = match TEMPORARY.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut g) = g {
            match std::mem::replace(&mut *g, Temporary::None) {
                Temporary::None => {}
                Temporary::Named(p) => {
                    let _ = std::fs::remove_file(p);
                }
                Temporary::Creating(output) => {
                    for p in open_temporaries_of(&output) {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Installs a panic hook that prints the panic as usual, removes the temporary output of a
/// map in progress, and calls `MPI_Abort` on `MPI_COMM_WORLD`: mpirun then stops every rank
/// within seconds. Without it a panicking rank would unwind into `MPI_Finalize` (or exit)
/// while the others wait for it in a collective: the job would hang.
///
/// The hook acts only in the process that installed it: a worker process forked from this
/// one later (by any shmpool pool) inherits the hook, and there a panic is the pool's to
/// report (a child of an MPI process must not call MPI), so the hook only runs the previous
/// one.
pub fn abort_on_panic() {
    let previous = std::panic::take_hook();
    let installer = std::process::id();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if std::process::id() != installer {
            return;
        }
        remove_temporary();
        if mpi::is_initialized() && !mpi::is_finalized() {
            SimpleCommunicator::world().abort(101);
        }
    }));
}

/// Widens this process's CPU affinity to every CPU it may use. `mpirun` binds each rank to
/// one core by default and forked workers inherit it, so a rank's `-j 4` would run four
/// workers on one core. Best effort: returns whether it changed anything.
pub fn widen_cpu_affinity() -> bool {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let before = sched_getaffinity(Pid::from_raw(0)).ok();
    let mut all = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        let _ = all.set(cpu);
    }
    // The kernel keeps the CPUs of our cpuset (cgroup) and drops the others.
    if sched_setaffinity(Pid::from_raw(0), &all).is_err() {
        return false;
    }
    sched_getaffinity(Pid::from_raw(0)).ok() != before
}

/// This rank's elements of `n` over `ranks` ranks: `n·r/R .. n·(r+1)/R` (contiguous, in rank
/// order, sizes differing by at most one).
pub fn slice_of(n: usize, ranks: usize, rank: usize) -> std::ops::Range<usize> {
    let at = |r: usize| (n as u128 * r as u128 / ranks.max(1) as u128) as usize;
    at(rank)..at(rank + 1)
}

/// Waits until every rank of `comm` has arrived (`MPI_Ibarrier` tested in a loop that
/// sleeps between tests, so that a waiting rank leaves its core to the workers), calling
/// `tick` between tests.
pub fn wait_for_all(comm: &impl Communicator, mut tick: impl FnMut()) {
    let mut req = comm.immediate_barrier();
    let mut nap = Duration::from_micros(50);
    loop {
        match req.test() {
            Ok(_) => return,
            Err(r) => req = r,
        }
        tick();
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// [`Error::Usage`] when `comm` is an inter-communicator (its collectives reach the other
/// group, not this one's ranks): every rank of it gets the same answer, locally.
fn require_intra(comm: &impl Communicator) -> Result<()> {
    let mut inter: std::os::raw::c_int = 0;
    // SAFETY: `comm` is a live communicator handle (the trait's contract) and `inter` is valid
    // storage for the flag MPI_Comm_test_inter writes; it has no other precondition.
    let rc = unsafe { mpi::ffi::MPI_Comm_test_inter(comm.as_raw(), &mut inter) };
    if rc != 0 || inter != 0 {
        return Err(Error::Usage("an inter-communicator: pass an intra-communicator (its ranks map the file)".into()));
    }
    Ok(())
}

/// The largest status word of all ranks (0 = success), waiting politely first.
fn agree(comm: &SimpleCommunicator, status: i32, tick: impl FnMut()) -> i32 {
    agree_both(comm, status, tick).0
}

/// The largest and the smallest status word of all ranks, waiting politely first: a smallest
/// one that is not 0 says every rank failed (and rank 0 alone should say why).
fn agree_both(comm: &SimpleCommunicator, status: i32, tick: impl FnMut()) -> (i32, i32) {
    wait_for_all(comm, tick);
    let mut all = [0i32; 2];
    comm.all_reduce_into(&[status, -status][..], &mut all[..], SystemOperation::max());
    (all[0], -all[1])
}

/// This rank's error after a step that failed somewhere (`all` the largest status, `least`
/// the smallest): its own, unless every rank failed and this is not rank 0, which then
/// reports for all (one message, as `shmpool map` gives one).
fn step_error(rank: usize, all: i32, least: i32, own: Option<Error>) -> Error {
    match own {
        Some(e) if rank == 0 || least == 0 => e,
        _ => Error::OtherRank { status: all },
    }
}

/// Broadcasts rank 0's bytes (length first), waiting politely first.
fn broadcast_bytes(comm: &SimpleCommunicator, bytes: &mut Vec<u8>) {
    wait_for_all(comm, || {});
    let root = comm.process_at_rank(0);
    let mut len = bytes.len() as u64;
    root.broadcast_into(&mut len);
    bytes.resize(len as usize, 0);
    if len > 0 {
        root.broadcast_into(&mut bytes[..]);
    }
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
struct Prepared {
    src: NpyArray,
    spec: KernelSpec,
    out_dtype: Dtype,
}

#[allow(unsafe_code)]
fn prepare(job: &MapJob) -> Result<Prepared> {
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
fn check_arguments(job: &MapJob) -> Result<()> {
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
fn local_ranks() -> usize {
    std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

fn worker_count(want: Option<usize>, n: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(2);
    let want = want.unwrap_or_else(|| (cores / local_ranks()).max(1));
    want.min(n.div_ceil(MIN_ELEMENTS_PER_WORKER)).max(1)
}

/// Test-only hooks (`testing` feature): hold a rank mid-map, or panic it, as the environment
/// says, so that the tests can kill a rank at a known point.
#[cfg(feature = "testing")]
mod hooks {
    /// Called from the progress callback of the rank's map, after its first chunk.
    /// With SHMPOOL_MPI_TEST_HOLD=DIR, holds the rank (every rank, or only the one
    /// SHMPOOL_MPI_TEST_HOLD_RANK names) mid-map after writing its pid and its workers' pids to
    /// DIR/rankN.
    pub fn mid_map(rank: usize, pool: &shmpool::Pool) {
        let chosen = std::env::var("SHMPOOL_MPI_TEST_HOLD_RANK").map_or(true, |r| r == rank.to_string());
        if let (Ok(dir), true) = (std::env::var("SHMPOOL_MPI_TEST_HOLD"), chosen) {
            let pids: Vec<String> =
                std::iter::once(std::process::id()).chain(pool.pids()).map(|p| p.to_string()).collect();
            let tmp = std::path::Path::new(&dir).join(format!(".rank{rank}"));
            std::fs::write(&tmp, pids.join(" ")).expect("test hook: write the pid file");
            std::fs::rename(&tmp, std::path::Path::new(&dir).join(format!("rank{rank}")))
                .expect("test hook: publish the pid file");
            // Held here, mid-map, until the test kills the job (this is a test fixture, not
            // synchronisation: nothing waits for it to end).
            loop {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// Called when the rank's own map has returned, before the ranks agree on the outcome
    /// (the others may still be mapping): a panic here, outside any `catch_unwind`, would
    /// unwind into `MPI_Finalize` while the others wait for this rank.
    pub fn after_map(rank: usize) {
        if std::env::var("SHMPOOL_MPI_TEST_PANIC_RANK").is_ok_and(|r| r == rank.to_string()) {
            panic!("test hook: rank {rank} panics after its map");
        }
    }

    /// Called when the rank is about to wait for the others' status: with
    /// SHMPOOL_MPI_TEST_HOLD=DIR, writes its pid to DIR/waitingN.
    pub fn waiting(rank: usize) {
        if let Ok(dir) = std::env::var("SHMPOOL_MPI_TEST_HOLD") {
            let dir = std::path::Path::new(&dir);
            std::fs::write(dir.join(format!(".waiting{rank}")), std::process::id().to_string())
                .expect("test hook: write the pid file");
            std::fs::rename(dir.join(format!(".waiting{rank}")), dir.join(format!("waiting{rank}")))
                .expect("test hook: publish the pid file");
        }
    }

    /// Whether this rank's kernel should panic instead of evaluating the expression.
    pub fn kernel_panics(rank: usize) -> bool {
        std::env::var("SHMPOOL_MPI_TEST_PANIC_KERNEL_RANK").is_ok_and(|r| r == rank.to_string())
    }

    /// A float64 → float64 kernel that panics (the tests map float64 files).
    pub fn panicking_kernel(_: &[f64], _: &mut [f64]) {
        panic!("test hook: this kernel panics");
    }
}

/// Maps `job.expr` over the `.npy` file `job.input` with every rank of `comm` (collective:
/// every rank calls it with the same job), writing `job.output` byte-identical to what
/// `shmpool map` writes on one machine. `progress` is called on rank 0 only, with the elements
/// done across ranks, at most every quarter second and once at the end.
///
/// Rank 0 validates the arguments, the input and the expression and creates the output's
/// temporary file; on a failure there every rank returns (the others with
/// [`Error::OtherRank`]) before any rank writes. The output is published by rank 0 only when
/// every rank succeeded; otherwise it is removed and every rank returns an error.
///
/// # Errors
///
/// [`Error::Usage`] and [`Error::Engine`] for this rank's own failures (bad input, kernel
/// panics, crashed workers, I/O; an inter-communicator; a job that differs from rank 0's in
/// what makes the output), [`Error::InputChanged`] when the input was truncated or replaced
/// during the map; [`Error::OtherRank`] when another rank failed (and when every rank failed
/// the same step, on every rank but 0, so that one message says it).
///
/// # Panics
///
/// Never on user input. A rank that dies stops the job through mpirun; install
/// [`abort_on_panic`] so that a panic does too.
#[allow(clippy::too_many_lines)] // TODO(c15-merge): owner shortens it
pub fn map_npy<C: Communicator>(
    comm: &C,
    job: &MapJob,
    mut progress: Option<&mut dyn FnMut(Progress)>,
) -> Result<Mapped> {
    require_intra(comm)?;
    // A private communicator: our progress messages never mix with the caller's.
    let comm = comm.duplicate();
    let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
    // Ranks that all run on one node share its page cache: what each writes into the mapped
    // output is what rank 0 publishes, with no write-back first. Ranks on several nodes (a
    // shared filesystem) write their part back (`msync`) before they report success.
    let node_ranks = comm.split_shared(0).size();
    let one_node = node_ranks == comm.size();

    // 1. Rank 0 checks everything and creates the temporary output; one broadcast says how it went.
    let mut creator: Option<NpyOutput> = None;
    let mut prepared: Option<Prepared> = None;
    let mut first_error: Option<Error> = None;
    let mut word = Vec::new();
    if rank == 0 {
        let r = check_arguments(job).and_then(|()| prepare(job)).and_then(|p| {
            // Until the name is known, a signal removes the file being created by what this
            // process has open (a rank killed meanwhile makes mpirun stop this one).
            start_watcher();
            set_creating(&job.output);
            // SAFETY: the temporary's name goes only to the other ranks, which open their parts
            // with it (`open_part`), and to the signal handler that removes it after a failure;
            // nothing truncates or rewrites the file through it while it is mapped.
            let out = unsafe { NpyOutput::create_shared(&job.output, p.out_dtype, p.src.shape()) }?;
            Ok((p, out))
        });
        match r {
            Ok((p, (out, temp))) => {
                set_temporary(Some(temp.clone()));
                word.push(0u8);
                word.push(u8::from(progress.is_some()));
                let fingerprint = job.fingerprint();
                word.extend_from_slice(&(fingerprint.len() as u64).to_le_bytes());
                word.extend_from_slice(&fingerprint);
                word.extend_from_slice(temp.as_os_str().as_encoded_bytes());
                prepared = Some(p);
                creator = Some(out);
            }
            Err(e) => {
                set_temporary(None);
                word.push(e.exit_code() as u8);
                first_error = Some(e);
            }
        }
    }
    broadcast_bytes(&comm, &mut word);
    let status = i32::from(word.first().copied().unwrap_or(EXIT_FAILURE as u8));
    if status != 0 {
        return Err(first_error.unwrap_or(Error::OtherRank { status }));
    }
    let reporting = word.get(1) == Some(&1);
    let flen = word.get(2..10).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes) as usize;
    let (theirs, temp) = word.get(10..).unwrap_or(&[]).split_at(flen.min(word.len().saturating_sub(10)));
    let same_job = theirs == job.fingerprint().as_slice();
    let temp = {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(temp))
    };
    if rank != 0 {
        set_temporary(Some(temp.clone()));
    }

    // 2. Every rank opens the input and its part of the output, builds its pool.
    let setup = (|| -> Result<_> {
        if !same_job {
            return Err(Error::Usage(format!(
                "rank {rank} was given another job than rank 0 (input, output, expression, dtype or --in-place differ)"
            )));
        }
        let p = match prepared.take() {
            Some(p) => p,
            None => prepare(job)?,
        };
        // SAFETY: every rank writes only its own slice of the file, through `map_npy_range`, and
        // no rank takes a slice of the elements; rank 0 removes or renames the file only after
        // every rank has finished with it (the collective below).
        let part = unsafe { NpyOutput::open_part(&temp, p.out_dtype, p.src.shape()) }?;
        let local = slice_of(p.src.len(), ranks, rank);
        let pool = if local.is_empty() {
            None
        } else {
            // A pool pins its workers to the CPUs its own process uses least; the pools of
            // several ranks on one node would all pick the same CPUs, so there the kernel
            // places the workers.
            let mut b = Pool::builder().workers(worker_count(job.workers, local.len())).pin_workers(node_ranks == 1);
            if node_ranks > 1 {
                // Several ranks' callers spinning beside their workers would oversubscribe the
                // node's cores; a file map's chunks are large, so a futex wake-up costs nothing.
                b = b.wait_strategy(shmpool::WaitStrategy::Sleep);
            }
            if let Some(c) = job.chunk_len {
                b = b.chunk_len(c);
            }
            Some(b.build()?)
        };
        Ok((p, part, local, pool))
    })();
    let (setup, local_status) = match setup {
        Ok(s) => (Some(s), 0),
        Err(e) => {
            let code = e.exit_code();
            first_error = Some(e);
            (None, code)
        }
    };
    let (all, least) = agree_both(&comm, local_status, || {});
    let Some((p, mut part, local, pool)) = setup.filter(|_| all == 0) else {
        set_temporary(None);
        drop(creator); // removes the temporary
        return Err(step_error(rank, all, least, first_error));
    };

    // 3. Map this rank's slice in place; rank 0 gathers the progress reports as it goes.
    let total = p.src.len();
    let mut seen = vec![0usize; ranks];
    let mut finals = vec![false; ranks];
    finals[0] = true;
    let mut last_shown = None::<Instant>;
    let mut gather = |seen: &mut Vec<usize>, finals: &mut Vec<bool>, mine: usize, force: bool| {
        if !reporting || rank != 0 {
            return;
        }
        while let Some((msg, status)) = comm.any_process().immediate_matched_probe() {
            let mut done = 0u64;
            let _ = msg.matched_receive_into(&mut done);
            let from = status.source_rank() as usize;
            if let Some(s) = seen.get_mut(from) {
                *s = done as usize;
            }
            if status.tag() == TAG_FINAL {
                if let Some(f) = finals.get_mut(from) {
                    *f = true;
                }
            }
        }
        seen[0] = mine;
        if force || last_shown.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            last_shown = Some(Instant::now());
            if let Some(cb) = progress.as_mut() {
                cb(Progress { done: seen.iter().sum::<usize>().min(total), total });
            }
        }
    };
    let mut last_sent = Instant::now();
    let mut mine = 0usize;
    let result = match &pool {
        None => Ok(()),
        Some(pool) => {
            let mut tick = |done: usize| {
                mine = done;
                #[cfg(feature = "testing")]
                hooks::mid_map(rank, pool);
                if rank == 0 {
                    gather(&mut seen, &mut finals, done, false);
                } else if reporting && last_sent.elapsed() >= REPORT_EVERY {
                    last_sent = Instant::now();
                    comm.process_at_rank(0).send_with_tag(&(done as u64), TAG_PROGRESS);
                }
            };
            #[cfg(feature = "testing")]
            let kernel_panics = hooks::kernel_panics(rank);
            #[cfg(feature = "testing")]
            let test_spec = kernel_panics.then(|| KernelSpec::chunk(hooks::panicking_kernel));
            #[cfg(not(feature = "testing"))]
            let test_spec: Option<KernelSpec> = None;
            let spec = test_spec.as_ref().unwrap_or(&p.spec);
            let size_before = std::fs::metadata(&job.input).map(|m| m.len()).ok();
            pool.map_npy_range(&p.src, &mut part, local.clone(), spec, Some(&mut tick)).map_err(|e| {
                // A worker that cannot read its chunk of a file that shrank under it dies: say
                // what happened to the input, as `shmpool map` does.
                let size_now = std::fs::metadata(&job.input).map(|m| m.len()).ok();
                match size_before {
                    Some(was) if size_now != size_before => Error::InputChanged {
                        path: job.input.display().to_string(),
                        now: size_now.map_or("gone".to_string(), |n| format!("{n} bytes")),
                        was,
                        source: e,
                    },
                    _ => Error::Engine(e),
                }
            })
        }
    };
    #[cfg(feature = "testing")]
    hooks::after_map(rank);
    let mut local_status = 0;
    let flushed = if one_node {
        drop(part);
        Ok(())
    } else {
        part.commit().map_err(Error::from)
    };
    match result.and(flushed) {
        Ok(()) => mine = local.len(),
        Err(e) => {
            local_status = e.exit_code();
            first_error = Some(e);
        }
    }
    if reporting && rank != 0 {
        comm.process_at_rank(0).send_with_tag(&(mine as u64), TAG_FINAL);
    }
    // Rank 0 keeps reporting while it waits for the others' final counts.
    if rank == 0 && reporting {
        let mut nap = Duration::from_micros(100);
        while !finals.iter().all(|&f| f) {
            gather(&mut seen, &mut finals, mine, false);
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(10));
        }
        gather(&mut seen, &mut finals, mine, true);
    }
    drop(pool);
    #[cfg(feature = "testing")]
    hooks::waiting(rank);
    let (all, least) = agree_both(&comm, local_status, || {});
    if all != 0 && rank != 0 {
        first_error = Some(step_error(rank, all, least, first_error.take()));
    }

    // 4. Rank 0 publishes only if every rank succeeded, and tells them how that went.
    let mut published = 0i32;
    if rank == 0 {
        let out = creator.take().expect("rank 0 created the output");
        if all == 0 {
            if let Err(e) = out.commit() {
                published = EXIT_FAILURE;
                first_error = Some(e.into());
            }
        } else {
            drop(out); // removes the temporary
        }
    }
    // The other ranks keep the temporary's name until rank 0 says it published: if rank 0 dies
    // at its rename, mpirun stops them and their signal handlers remove it (after a publish,
    // the name is gone and removing it does nothing).
    if rank == 0 {
        set_temporary(None);
    }
    wait_for_all(&comm, || {});
    comm.process_at_rank(0).broadcast_into(&mut published);
    set_temporary(None);
    let status = all.max(published);
    if status != 0 {
        return Err(first_error.unwrap_or(Error::OtherRank { status }));
    }
    Ok(Mapped {
        len: total,
        shape: p.src.shape().to_vec(),
        in_dtype: p.src.dtype(),
        out_dtype: p.out_dtype,
        ranks,
        workers: pool_workers(job, &local),
        local,
    })
}

fn pool_workers(job: &MapJob, local: &std::ops::Range<usize>) -> usize {
    if local.is_empty() {
        0
    } else {
        worker_count(job.workers, local.len())
    }
}

/// Maps `spec` over an array that lives in rank 0's memory (collective): rank 0 passes
/// `Some(input)`, the others `None`; the array is scattered in contiguous slices over the
/// ranks, each rank maps its slice with its own `pool` (the kernel sees the global indices,
/// `i` of an expression), and rank 0 gets the whole result back in order. The other ranks
/// get `None`.
///
/// # Errors
///
/// [`Error::TooLarge`] when a slice exceeds one MPI message (2 GiB); [`Error::Engine`] when
/// this rank's map fails; [`Error::OtherRank`] when another rank's does. No rank gathers
/// anything unless every rank succeeded.
#[allow(clippy::too_many_lines)] // TODO(c15-merge): owner shortens it
pub fn scatter_map_gather<C: Communicator, In: Pod, Out: Pod>(
    comm: &C,
    pool: &Pool,
    input: Option<&[In]>,
    spec: &KernelSpec,
) -> Result<Option<Vec<Out>>> {
    require_intra(comm)?;
    let comm = comm.duplicate();
    let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
    let (isz, osz) = (std::mem::size_of::<In>(), std::mem::size_of::<Out>());
    // Rank 0 says how many elements there are, or that it cannot be done (status != 0).
    let mut head = [0u64; 2];
    if rank == 0 {
        let n = input.map_or(0, <[In]>::len);
        let largest = n.div_ceil(ranks) as u64; // no slice is larger
        let bytes = largest * isz.max(osz) as u64;
        head = [n as u64, u64::from(bytes > Count::MAX as u64)];
    }
    wait_for_all(&comm, || {});
    comm.process_at_rank(0).broadcast_into(&mut head[..]);
    let n = head[0] as usize;
    if head[1] != 0 {
        let bytes = (n.div_ceil(ranks) * isz.max(osz)) as u64;
        return Err(Error::TooLarge { bytes, max: Count::MAX as u64 });
    }
    let local = slice_of(n, ranks, rank);
    let counts = |size: usize| -> (Vec<Count>, Vec<Count>) {
        let c: Vec<Count> = (0..ranks).map(|r| (slice_of(n, ranks, r).len() * size) as Count).collect();
        // Displacements are byte offsets too: within one message they fit a C int only when
        // the whole array does; larger arrays go rank by rank below.
        let d: Vec<Count> =
            (0..ranks).map(|r| (slice_of(n, ranks, r).start * size).min(Count::MAX as usize) as Count).collect();
        (c, d)
    };
    let whole_fits = n.saturating_mul(isz.max(osz)) <= Count::MAX as usize;

    // The shared arrays the workers read and write in place, allocated before the scatter:
    // a rank that cannot allocate them fails every rank, never leaves them waiting in it.
    let arrays = SharedVec::<In>::zeroed(local.len()).and_then(|xs| Ok((xs, SharedVec::<Out>::zeroed(local.len())?)));
    let (arrays, status, mut first_error) = match arrays {
        Ok(a) => (Some(a), 0, None),
        Err(e) => {
            let e = Error::from(e);
            (None, e.exit_code(), Some(e))
        }
    };
    let all = agree(&comm, status, || {});
    let Some((mut xs, mut ys)) = arrays.filter(|_| all == 0) else {
        return Err(first_error.unwrap_or(Error::OtherRank { status: all }));
    };
    let root = comm.process_at_rank(0);
    {
        let recv: &mut [u8] = bytemuck::cast_slice_mut(&mut xs[..]);
        if whole_fits {
            if rank == 0 {
                let all: &[u8] = bytemuck::cast_slice(input.unwrap_or(&[]));
                let (c, d) = counts(isz);
                root.scatter_varcount_into_root(&Partition::new(all, c, d), recv);
            } else {
                root.scatter_varcount_into(recv);
            }
        } else if rank == 0 {
            let all: &[u8] = bytemuck::cast_slice(input.unwrap_or(&[]));
            recv.copy_from_slice(&all[local.start * isz..local.end * isz]);
            for r in 1..ranks {
                let s = slice_of(n, ranks, r);
                comm.process_at_rank(r as i32).send(&all[s.start * isz..s.end * isz]);
            }
        } else {
            root.receive_into(recv);
        }
    }
    let status = match pool.map_into_spec_indexed(&xs, &mut ys, spec, local.start as u64) {
        Ok(()) => 0,
        Err(e) => {
            let e = Error::from(e);
            let code = e.exit_code();
            first_error = Some(e);
            code
        }
    };
    let all = agree(&comm, status, || {});
    if all != 0 {
        return Err(first_error.unwrap_or(Error::OtherRank { status: all }));
    }
    let send: &[u8] = bytemuck::cast_slice(&ys[..]);
    if rank != 0 {
        if whole_fits {
            root.gather_varcount_into(send);
        } else {
            root.send(send);
        }
        return Ok(None);
    }
    let mut out = vec![Out::zeroed(); n];
    {
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut out[..]);
        if whole_fits {
            let (c, d) = counts(osz);
            root.gather_varcount_into_root(send, &mut PartitionMut::new(all, c, d));
        } else {
            all[local.start * osz..local.end * osz].copy_from_slice(send);
            for r in 1..ranks {
                let s = slice_of(n, ranks, r);
                comm.process_at_rank(r as i32).receive_into(&mut all[s.start * osz..s.end * osz]);
            }
        }
    }
    Ok(Some(out))
}
