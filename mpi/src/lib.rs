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
//! `n·r/R .. n·(r+1)/R` in place ([`shmpool::NpyArray::range`] into
//! [`shmpool::NpyOutput::range`], `i` the global flat index by
//! [`shmpool::KernelSpec::index_offset`]), writes its pages back, and reports a status word; rank 0 publishes the file (atomic rename,
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
#![warn(clippy::too_many_lines)]

mod collective;
mod error;
#[cfg(feature = "testing")]
mod hooks;
mod job;
mod map;
mod placement;
mod progress;
mod scatter;
mod temporary;

pub use collective::wait_for_all;
pub use error::{chain, Error, Result};
pub use job::{MapJob, Mapped, Progress};
pub use map::map_npy;
pub use scatter::scatter_map_gather;
pub use temporary::{abort_on_panic, remove_temporary};

/// Exit code (and status word) for bad input or usage, as `shmpool map`.
pub const EXIT_USAGE: i32 = 2;
/// Exit code (and status word) for a failure while running, as `shmpool map`.
pub const EXIT_FAILURE: i32 = 1;

/// Elements per worker below which another worker would only add start-up time (as
/// `shmpool map`).
pub const MIN_ELEMENTS_PER_WORKER: usize = 65_536;

/// Widens this process's CPU affinity to the CPUs the job was started with: those of the
/// launcher that started it (mpirun, or Open MPI's daemon on another node; its parent when
/// none is found). `mpirun` binds each
/// rank to one core by default and forked workers inherit it, so a rank's `-j 4` would run
/// four workers on one core; a job started within some CPUs (`taskset -c 0 mpirun ...`,
/// `numactl --physcpubind`) stays within them. When the parent's CPUs cannot be read, every
/// CPU (the kernel keeps those of the cgroup's cpuset). Best effort: returns whether it
/// changed anything.
pub fn widen_cpu_affinity() -> bool {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::{getppid, Pid};
    let before = sched_getaffinity(Pid::from_raw(0)).ok();
    let parent = sched_getaffinity(Pid::from_raw(launcher_pid().unwrap_or_else(|| getppid().as_raw()))).ok();
    let mut wide = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        // Not this process's own CPUs: mpirun may have bound it outside its own (it maps ranks
        // over the node's cores, whatever CPUs it was started with).
        if parent.as_ref().is_none_or(|p| p.is_set(cpu).unwrap_or(false)) {
            let _ = wide.set(cpu);
        }
    }
    if sched_setaffinity(Pid::from_raw(0), &wide).is_err() {
        return false;
    }
    sched_getaffinity(Pid::from_raw(0)).ok() != before
}

/// The nearest ancestor that is Open MPI's launcher or daemon (a rank may run under a wrapper
/// script, which mpirun bound as it binds the rank), if any.
fn launcher_pid() -> Option<i32> {
    const LAUNCHERS: [&str; 6] = ["mpirun", "mpiexec", "orterun", "orted", "prterun", "prted"];
    let mut pid = nix::unistd::getppid().as_raw();
    for _ in 0..32 {
        if pid <= 1 {
            return None;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if LAUNCHERS.contains(&comm.trim_end()) {
            return Some(pid);
        }
        // /proc/PID/stat: "PID (COMM) STATE PPID ...", COMM may hold spaces and parentheses.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        pid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
    }
    None
}

/// This rank's elements of `n` over `ranks` ranks: `n·r/R .. n·(r+1)/R` (contiguous, in rank
/// order, sizes differing by at most one).
pub fn slice_of(n: usize, ranks: usize, rank: usize) -> std::ops::Range<usize> {
    let at = |r: usize| (n as u128 * r as u128 / ranks.max(1) as u128) as usize;
    at(rank)..at(rank + 1)
}
