//! [`PoolBuilder`]: the pool's options, their checks, and `build` (ring, supervisor, workers).
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{supervisor, Pool, Shared, Stats, STATE_RUNNING};
use crate::error::{Error, Result};
use crate::kernel;
use crate::ring::Ring;
use crate::start::{self, Launcher, StartMethod};
#[cfg(any(test, feature = "testing"))]
use crate::worker::PausePoint;

/// Stack of the supervisor thread, and so of every worker forked from it.
const WORKER_STACK: usize = 8 << 20;

/// Most workers a pool may have.
const MAX_WORKERS: usize = 1024;

/// The number of CPUs this process may use (the default number of workers).
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// How a caller waiting for results, and an idle worker waiting for work, wait.
///
/// On this kind of machine a futex wake-up costs tens of µs while a spinning hand-off between
/// two processes costs about a tenth of a µs; but a process that spins while more processes
/// than cores are runnable steals the core the work needs. An idle pool burns no CPU under any
/// strategy: workers spin only right after work, for a bounded time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Lowest latency: the caller spins for as long as its map runs (it burns a core while it
    /// waits), and one idle worker spins for a while after each chunk.
    Spin,
    /// The default: spin for at most [`PoolBuilder::spin`] (small maps only, and only while
    /// the workers running chunks, a spinning worker and the waiting callers leave a core
    /// free), then sleep on a futex. The spin yields the core between polls after its first
    /// 5 µs, so a worker the scheduler placed on the caller's CPU is never kept waiting for
    /// the whole budget.
    #[default]
    Adaptive,
    /// Never spin: every wait is a futex sleep (lowest CPU use, a wake-up per hand-off).
    Sleep,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub workers: usize,
    pub chunk_len: Option<usize>,
    pub slots: u32,
    pub payload_bytes: usize,
    pub max_attempts: u32,
    /// Back up a chunk kernel's range of the caller's own output before the kernel runs
    /// ([`PoolBuilder::backup_outputs`]).
    pub backup_outputs: bool,
    pub spin: Duration,
    pub wait: WaitStrategy,
    /// Batches `imap` / `imap_unordered` keep in flight.
    pub imap_in_flight: usize,
    pub chunk_timeout: Option<Duration>,
    pub recycle_after: Option<u64>,
    /// Test hook (only with the `testing` feature): where the first workers pause.
    #[cfg(any(test, feature = "testing"))]
    pub pause: Option<PausePoint>,
    pub pin: bool,
    /// Most bytes of spare staging buffers kept between maps.
    pub staging_cache: usize,
    /// The start method asked for (`None`: chosen at `build`, see [`StartMethod`]); after
    /// `build`, the one in use.
    pub start: Option<StartMethod>,
    /// Test hook: the executable spawned workers run instead of this one.
    #[cfg(any(test, feature = "testing"))]
    pub spawn_exe: Option<std::path::PathBuf>,
    /// Runs once in every worker before it serves (`PoolBuilder::worker_init`).
    pub worker_init: Option<fn()>,
}

/// Configures and builds a [`Pool`].
///
/// # Examples
///
/// ```
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::builder().workers(2).chunk_len(1000).slots(8).build()?;
/// assert_eq!(pool.workers(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolBuilder {
    cfg: Config,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            cfg: Config {
                workers: default_workers(),
                chunk_len: None,
                slots: 0,
                payload_bytes: Self::DEFAULT_PAYLOAD_BYTES,
                max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
                backup_outputs: false,
                spin: Self::DEFAULT_SPIN,
                wait: WaitStrategy::Adaptive,
                imap_in_flight: 0,
                chunk_timeout: None,
                recycle_after: None,
                #[cfg(any(test, feature = "testing"))]
                pause: None,
                pin: true,
                staging_cache: Self::DEFAULT_STAGING_CACHE_BYTES,
                start: None,
                #[cfg(any(test, feature = "testing"))]
                spawn_exe: None,
                worker_init: None,
            },
        }
    }
}

impl PoolBuilder {
    /// Default inline payload per slot.
    pub const DEFAULT_PAYLOAD_BYTES: usize = 64 * 1024;
    /// Default bound on spinning (see [`PoolBuilder::spin`]).
    pub const DEFAULT_SPIN: Duration = Duration::from_millis(1);
    /// Default attempts per chunk before [`Error::WorkerCrashed`].
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// Default bound on spare staging buffers (see [`PoolBuilder::staging_cache_bytes`]).
    pub const DEFAULT_STAGING_CACHE_BYTES: usize = 256 << 20;

    /// Number of worker processes (default: the number of CPUs this process may use, see
    /// [`PoolBuilder::default_workers`]).
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n;
        self
    }

    /// The default number of workers: the CPUs this process may use.
    #[must_use]
    pub fn default_workers() -> usize {
        default_workers()
    }

    /// Elements per chunk. By default chunks adapt to the length and worker count: large
    /// at first, smaller towards the end so the workers finish together.
    pub fn chunk_len(mut self, n: usize) -> Self {
        self.cfg.chunk_len = Some(n);
        self
    }

    /// Number of slots in the ring (default `max(16, 4 × workers)`): how many chunks can be in
    /// flight at once.
    pub fn slots(mut self, n: u32) -> Self {
        self.cfg.slots = n;
        self
    }

    /// Inline payload bytes per slot (default [`PoolBuilder::DEFAULT_PAYLOAD_BYTES`]): small maps travel
    /// inside the slots.
    pub fn payload_bytes(mut self, n: usize) -> Self {
        self.cfg.payload_bytes = n;
        self
    }

    /// How many workers a chunk may kill before the map fails with
    /// [`Error::WorkerCrashed`] (default [`PoolBuilder::DEFAULT_MAX_ATTEMPTS`]).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.cfg.max_attempts = n;
        self
    }

    /// For chunk kernels that READ the caller's output array as well as write it (an
    /// accumulation `y += x` through [`Pool::map_into`]): each worker backs its chunk's range
    /// up before the kernel runs, so a chunk retried after its worker died mid-kernel starts
    /// from the caller's values and the kernel never applies twice (default off). The price is
    /// one more copy of every such chunk (W1's chunk form into a `SharedVec` took 1.8x as long
    /// in `shmpool bench` on a 2-core VM); element and expression kernels never read their
    /// output and never pay it. Without it, such a kernel is exact unless a worker dies inside
    /// it (README: failure model); kernels that only write their output are exact either way.
    pub fn backup_outputs(mut self, on: bool) -> Self {
        self.cfg.backup_outputs = on;
        self
    }

    /// How long one worker busy-waits for the next chunk after finishing one, and the caller
    /// of a small map for its results, before sleeping (default [`PoolBuilder::DEFAULT_SPIN`]). Only one worker spins at
    /// a time, and only right after work, so an idle pool uses no CPU; the spin is what keeps
    /// back-to-back small batches at a few µs instead of a futex wake-up each. Zero always
    /// sleeps.
    pub fn spin(mut self, d: Duration) -> Self {
        self.cfg.spin = d;
        self
    }

    /// Most bytes of spare staging buffers the pool keeps between maps (default
    /// [`PoolBuilder::DEFAULT_STAGING_CACHE_BYTES`]). `map` and `submit` copy plain slices too
    /// large to travel inline through staging buffers in `/dev/shm`; keeping them spares the next
    /// map creating new ones (and every worker mapping them). Beyond this bound the least
    /// recently used are dropped at once; and any spare unused for a second is dropped by the
    /// supervisor and unmapped by the workers, so an idle pool keeps no staging memory. Zero
    /// keeps none.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::builder().workers(1).staging_cache_bytes(64 << 20).build()?;
    /// let xs = vec![1.0f64; 200_000]; // 1.6 MB: staged, not inline
    /// assert_eq!(pool.map(&xs, |x: f64| x * 2.0)?[0], 2.0);
    /// # Ok(()) }
    /// ```
    pub fn staging_cache_bytes(mut self, bytes: usize) -> Self {
        self.cfg.staging_cache = bytes;
        self
    }

    /// How waiting callers and idle workers wait (default [`WaitStrategy::Adaptive`]).
    pub fn wait_strategy(mut self, w: WaitStrategy) -> Self {
        self.cfg.wait = w;
        self
    }

    /// How many batches [`Pool::imap`] and [`Pool::imap_unordered`] keep in flight (default:
    /// twice the number of workers): enough to keep every worker busy across batch boundaries,
    /// few enough that an endless iterator runs in bounded memory.
    pub fn imap_in_flight(mut self, n: usize) -> Self {
        self.cfg.imap_in_flight = n;
        self
    }

    /// Kill and replace a worker whose chunk runs longer than `limit`; the map then fails with
    /// [`Error::ChunkTimedOut`]. Off by default. Time in which the whole program was stopped
    /// (Ctrl-Z, SIGSTOP, until `fg`/SIGCONT) is not counted; a kernel that hangs, spinning or
    /// blocked, is timed out all the same.
    pub fn chunk_timeout(mut self, limit: Duration) -> Self {
        self.cfg.chunk_timeout = Some(limit);
        self
    }

    /// Replace each worker after it has run `n` chunks (Python's `maxtasksperchild`), for
    /// kernels that leak. Off by default.
    pub fn max_chunks_per_worker(mut self, n: u64) -> Self {
        self.cfg.recycle_after = Some(n);
        self
    }

    /// Pin each worker to a CPU of its own while it runs a large chunk (default: on, when the
    /// affinity mask of the thread that builds the pool has at least as many CPUs as workers).
    /// The CPUs come from that mask only, and the least used by the other live pools of the
    /// process first: two 1-worker pools pin to two CPUs. Without it the scheduler
    /// sometimes stacks two freshly woken workers on one core for a few ms, which makes
    /// memory-bound maps vary from run to run. Idle and small-chunk workers are never pinned,
    /// so they stay free to move away from a spinning caller. Turn it off on a machine shared
    /// with other busy programs.
    pub fn pin_workers(mut self, pin: bool) -> Self {
        self.cfg.pin = pin;
        self
    }

    /// How workers are started: see [`StartMethod`] for the methods and the default (`Fork` in
    /// a single-threaded process, `ForkServer` in a multi-threaded one). Replacements after a
    /// crash or recycling use the same method.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::{Pool, StartMethod};
    /// let pool = Pool::builder().workers(2).start_method(StartMethod::ForkServer).build()?;
    /// assert_eq!(pool.map(&[1.0f64, 4.0], f64::sqrt)?, [1.0, 2.0]);
    /// assert_eq!(pool.start_method(), StartMethod::ForkServer);
    /// # Ok(()) }
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.cfg.start = Some(method);
        self
    }

    /// A function every worker runs once, before it takes its first chunk: Python's
    /// `Pool(initializer=...)`. It runs in each of the pool's workers and in every replacement
    /// (after a crash, a timeout or recycling), under every [`StartMethod`]; in the pool's own
    /// process it never runs. A `fn` item or a closure that captures nothing.
    ///
    /// Use it for per-process state that kernels need: workers started by `exec` (`Spawn`,
    /// and `ForkServer` in a multi-threaded program) never run `main`, so whatever `main` set
    /// up is not there. That includes **logging**: a kernel's `log::info!` goes nowhere in such
    /// a worker, because no logger was installed in it. The recipe is to install one in each
    /// worker, writing to stderr (a worker's stderr is the program's):
    ///
    /// ```text
    /// fn init_worker_logging() {
    ///     // `try_init`: a `Fork` worker inherited the program's logger; keep that one.
    ///     let _ = env_logger::try_init();
    /// }
    /// let pool = Pool::builder().worker_init(init_worker_logging).build()?;
    /// ```
    ///
    /// In a multi-threaded program, do not pick `StartMethod::Fork` for a pool whose kernels
    /// log: a forked worker inherits the logger's lock in whatever state another thread held it
    /// (the default, `ForkServer`, has no such hazard).
    ///
    /// A panic in `worker_init` stops the pool instead of replacing the worker forever: its
    /// maps fail with [`Error::PoolBroken`](crate::Error::PoolBroken), whose reason is
    /// [`Error::WorkerInitPanicked`](crate::Error::WorkerInitPanicked)'s message (the worker
    /// writes the panic message itself to stderr).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use shmpool::{Pool, StartMethod};
    ///
    /// static SCALE: AtomicU32 = AtomicU32::new(0);
    ///
    /// fn set_up_worker() {
    ///     SCALE.store(7, Ordering::Relaxed);
    /// }
    ///
    /// let pool = Pool::builder().workers(2).start_method(StartMethod::Spawn).worker_init(set_up_worker).build()?;
    /// let out = pool.map(&[1u32, 2, 3], |x: u32| x * SCALE.load(Ordering::Relaxed))?;
    /// assert_eq!(out, [7, 14, 21]);
    /// # Ok(()) }
    /// ```
    pub fn worker_init(mut self, f: fn()) -> Self {
        self.cfg.worker_init = Some(f);
        self
    }

    /// Test hook: spawned workers run `exe` instead of this executable (a mismatch test).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn spawn_exe_for_test(mut self, exe: impl Into<std::path::PathBuf>) -> Self {
        self.cfg.spawn_exe = Some(exe.into());
        self
    }

    /// Test hook: the first workers stop themselves (SIGSTOP) once at `at`.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn pause_point(mut self, at: PausePoint) -> Self {
        self.cfg.pause = Some(at);
        self
    }

    fn check(&mut self) -> Result<()> {
        let cfg = &mut self.cfg;
        let invalid = |option, value: u64, allowed| Err(Error::InvalidOption { option, value, allowed });
        if cfg.workers == 0 || cfg.workers > MAX_WORKERS {
            return invalid("workers", cfg.workers as u64, "1..=1024");
        }
        if cfg.max_attempts == 0 {
            return invalid("max_attempts", 0, "at least 1");
        }
        if cfg.chunk_len == Some(0) {
            return invalid("chunk_len", 0, "at least 1");
        }
        if cfg.recycle_after == Some(0) {
            return invalid("max_chunks_per_worker", 0, "at least 1");
        }
        if cfg.chunk_timeout.is_some_and(|t| t.is_zero()) {
            return invalid("chunk_timeout", 0, "positive");
        }
        if cfg.slots == 0 {
            cfg.slots = (4 * cfg.workers as u32).max(16);
        }
        if cfg.imap_in_flight == 0 {
            cfg.imap_in_flight = 2 * cfg.workers;
        }
        Ok(())
    }

    /// Creates the ring, forks the workers and returns once they are running.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for zero workers, zero attempts or absurd sizes;
    /// [`Error::ShmFull`] when `/dev/shm` cannot hold the ring; [`Error::Os`] when forking fails;
    /// [`Error::BinaryMismatch`] when a spawned worker runs another
    /// executable; [`Error::StartFailed`] when a spawned worker does not complete its start-up.
    pub fn build(mut self) -> Result<Pool> {
        crate::launch::spawn::refuse_uninitialised_child();
        self.check()?;
        let mut cfg = self.cfg;
        sweep_once();
        kernel::init_key();
        crate::worker::install_panic_hook();
        let method = start::launch::resolve(cfg.start);
        cfg.start = Some(method);
        // Connects to (and maybe forks) the fork server from this thread, before the
        // supervisor thread exists.
        let launcher = Launcher::new(method)?;
        #[cfg(any(test, feature = "testing"))]
        let launcher = launcher.with_test_hooks(start::launch::TestHooks {
            exe: cfg.spawn_exe.clone(),
            pause: cfg.pause,
            pauses_left: cfg.workers,
        });
        let ring = Ring::create(cfg.slots, cfg.payload_bytes)?;
        let (poke_rx, poke_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Error::os("pipe2", e.into()))?;
        let staging_cache = cfg.staging_cache;
        let cpus = if cfg.pin { CpuClaim::spread(&allowed_cpus(), cfg.workers) } else { CpuClaim::default() };
        let shared = Arc::new(Shared {
            owner: crate::sync::pid(),
            ring,
            cfg,
            cpus,
            registry: Mutex::new(HashMap::new()),
            pids: Mutex::new(Vec::new()),
            state: AtomicU8::new(STATE_RUNNING),
            failure: Mutex::new(None),
            reaped: AtomicBool::new(false),
            poke_rx,
            poke_tx,
            stats: Stats::default(),
            deaths: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            collectors: AtomicUsize::new(0),
            draining: AtomicUsize::new(0),
            slot_waiters: AtomicUsize::new(0),
            books: Mutex::new(Vec::new()),
            orphans: Mutex::new(Vec::new()),
            orphan_count: AtomicUsize::new(0),
            lock_failing: AtomicU64::new(0),
            cores: default_workers(),
            staging: super::staging::StagingCache::new(staging_cache),
        });
        let (tx, rx) = mpsc::channel();
        let sup_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("shmpool-supervisor".into())
            // Workers are forked from this thread and run kernels on its stack: give them a
            // main thread's 8 MiB, not a spawned thread's 2 MiB (pages are committed lazily).
            .stack_size(WORKER_STACK)
            .spawn(move || supervisor::run(sup_shared, launcher, tx))
            .map_err(|e| Error::os("spawn supervisor thread", e))?;
        let started = rx.recv().unwrap_or(Err(Error::WorkersFailedToStart { failures: 1 }));
        if let Err(e) = started {
            let _ = handle.join();
            return Err(e);
        }
        Ok(Pool { shared, next_map: AtomicU64::new(1), supervisor: Mutex::new(Some(handle)) })
    }
}

/// The CPUs this thread may run on (its affinity mask, which the supervisor thread and forked
/// workers inherit), in order.
fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Workers of this process's live pools pinned to each CPU (by CPU number; `CpuSet::count()`
/// is 1024 on Linux). Atomics, not a lock: nothing here may block a fork. Two pools built at
/// the same instant may pick the same CPU; that costs balance, never correctness.
static PINNED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
const MAX_CPUS: usize = 1024;

/// The CPUs a pool pins its workers to (worker `k` to the `k`-th), counted in [`PINNED`] while
/// the pool lives. Empty: no pinning.
#[derive(Debug, Default)]
pub(crate) struct CpuClaim(Vec<usize>);

impl CpuClaim {
    /// One CPU of `allowed` (the process's affinity mask) per worker, the least used by other
    /// pools of this process first: two 1-worker pools pin to two CPUs, not both to the first.
    /// No pinning when the mask has fewer CPUs than workers (they could only be stacked).
    pub(crate) fn spread(allowed: &[usize], workers: usize) -> CpuClaim {
        let allowed: Vec<usize> = allowed.iter().copied().filter(|&c| c < MAX_CPUS).collect();
        if allowed.len() < workers {
            return CpuClaim::default();
        }
        let mut mine: Vec<usize> = Vec::with_capacity(workers);
        for _ in 0..workers {
            // The least loaded CPU this pool has not taken yet (ties: the mask's order).
            let cpu = allowed
                .iter()
                .copied()
                .filter(|c| !mine.contains(c))
                .min_by_key(|&c| PINNED[c].load(Ordering::Relaxed))
                .expect("at least as many CPUs as workers");
            PINNED[cpu].fetch_add(1, Ordering::Relaxed);
            mine.push(cpu);
        }
        CpuClaim(mine)
    }

    /// The CPU of worker `index`, if the pool pins.
    pub(crate) fn get(&self, index: usize) -> Option<usize> {
        self.0.get(index).copied()
    }
}

impl Drop for CpuClaim {
    fn drop(&mut self) {
        for &c in &self.0 {
            let _ = PINNED[c].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }
}

fn sweep_once() {
    // An atomic flag, not a `Once`: a child forked while another thread ran the sweep would
    // inherit a `Once` in the "running" state and wait for it forever.
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        crate::shm::sweep_stale();
    }
}
