//! The public [`Pool`]: spawn workers, cut work into chunks, drive the ring, collect results in
//! order, supervise, shut down.
//!
//! One map runs at a time per pool (calls from several threads queue on a mutex). The caller
//! thread fills free slots, rings the workers' doorbell, waits on the done doorbell, collects
//! DONE slots and refills them until every chunk is back; it returns only when no worker can
//! still touch the map's buffers, on success and on error alike. The supervisor thread
//! (`supervisor.rs`) owns the worker processes. This module contains no unsafe code.
#![deny(unsafe_code)]

mod supervisor;

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytemuck::Pod;

use crate::array::{NpyArray, NpyOutput, SharedVec, Staging};
use crate::error::{Error, Result};
use crate::kernel::{self, KernelSpec};
use crate::ring::{index, Descriptor, Ring, Status};
use crate::shm::Segment;
pub use crate::worker::PausePoint;

const STATE_RUNNING: u8 = 0;
const STATE_CLOSED: u8 = 1;
const STATE_STOPPING: u8 = 2;
const STATE_TERMINATED: u8 = 3;

/// How long the map caller sleeps between health checks while waiting for chunks.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Maps with at most this many elements spin briefly for results instead of sleeping.
const SMALL_MAP: usize = 1 << 16;

#[derive(Debug, Clone)]
struct Config {
    workers: usize,
    chunk_len: Option<usize>,
    slots: u32,
    payload_bytes: usize,
    max_attempts: u32,
    spin: Duration,
    chunk_timeout: Option<Duration>,
    recycle_after: Option<u64>,
    pause: Option<PausePoint>,
    pin: bool,
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
pub struct PoolBuilder {
    cfg: Config,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        PoolBuilder {
            cfg: Config {
                workers,
                chunk_len: None,
                slots: 0,
                payload_bytes: 64 * 1024,
                max_attempts: 3,
                spin: Duration::from_millis(1),
                chunk_timeout: None,
                recycle_after: None,
                pause: None,
                pin: true,
            },
        }
    }
}

impl PoolBuilder {
    /// Number of worker processes (default: the number of cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n;
        self
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

    /// Inline payload bytes per slot (default 64 KiB): small maps travel inside the slots.
    pub fn payload_bytes(mut self, n: usize) -> Self {
        self.cfg.payload_bytes = n;
        self
    }

    /// How many workers a chunk may kill before the map fails with
    /// [`Error::WorkerCrashed`] (default 3).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.cfg.max_attempts = n;
        self
    }

    /// How long one worker busy-waits for the next chunk after finishing one, and the caller
    /// of a small map (at most 65,536 elements) for its results, before sleeping (default
    /// 1 ms). Only one worker spins at a time, and only right after work, so an idle pool uses
    /// no CPU; the spin is what keeps back-to-back small batches at a few µs instead of a
    /// futex wake-up (15-20 µs here) each. Zero always sleeps.
    pub fn spin(mut self, d: Duration) -> Self {
        self.cfg.spin = d;
        self
    }

    /// Kill and replace a worker whose chunk runs longer than `limit`; the map then fails with
    /// [`Error::ChunkTimedOut`]. Off by default.
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

    /// Pin worker `k` to the `k`-th CPU this process may run on while it runs a large chunk
    /// (1 MiB or more of input plus output; default: on, when there are no more workers than
    /// such CPUs). Measured here: without it the scheduler sometimes stacks two freshly woken
    /// workers on one core for a few ms, and W1's median varies between 31 and 38 ms from run
    /// to run; with it, 31-32 ms. Idle and small-chunk workers are never pinned, so they stay
    /// free to move away from a spinning caller. Turn it off on a machine shared with other
    /// busy programs.
    pub fn pin_workers(mut self, pin: bool) -> Self {
        self.cfg.pin = pin;
        self
    }

    /// Test hook: the first workers stop themselves (SIGSTOP) once at `at`.
    #[doc(hidden)]
    pub fn pause_point(mut self, at: PausePoint) -> Self {
        self.cfg.pause = Some(at);
        self
    }

    /// Creates the ring, forks the workers and returns once they are running.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for zero workers, zero attempts or absurd sizes;
    /// [`Error::ShmFull`] when `/dev/shm` cannot hold the ring; [`Error::Os`] when forking fails.
    pub fn build(self) -> Result<Pool> {
        let mut cfg = self.cfg;
        if cfg.workers == 0 || cfg.workers > 1024 {
            return Err(Error::InvalidConfig(format!("workers must be 1..=1024, got {}", cfg.workers)));
        }
        if cfg.max_attempts == 0 {
            return Err(Error::InvalidConfig("max_attempts must be at least 1".into()));
        }
        if cfg.chunk_len == Some(0) {
            return Err(Error::InvalidConfig("chunk_len must be at least 1".into()));
        }
        if cfg.recycle_after == Some(0) {
            return Err(Error::InvalidConfig("max_chunks_per_worker must be at least 1".into()));
        }
        if cfg.chunk_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidConfig("chunk_timeout must be positive".into()));
        }
        if cfg.slots == 0 {
            cfg.slots = (4 * cfg.workers as u32).max(16);
        }
        sweep_once();
        kernel::init_key();
        let ring = Ring::create(cfg.slots, cfg.payload_bytes)?;
        let (poke_rx, poke_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Error::os("pipe2", e.into()))?;
        let cpus = if cfg.pin { allowed_cpus() } else { Vec::new() };
        let cpus = if cpus.len() >= cfg.workers { cpus } else { Vec::new() };
        let shared = Arc::new(Shared {
            ring,
            cfg,
            cpus,
            registry: Mutex::new(HashMap::new()),
            pids: Mutex::new(Vec::new()),
            state: AtomicU8::new(STATE_RUNNING),
            failure: Mutex::new(None),
            poke_rx,
            poke_tx,
            stats: Stats::default(),
            deaths: Mutex::new(Vec::new()),
        });
        let (tx, rx) = mpsc::channel();
        let sup_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("shmpool-supervisor".into())
            .spawn(move || supervisor::run(sup_shared, tx))
            .map_err(|e| Error::os("spawn supervisor thread", e))?;
        let started = rx.recv().unwrap_or_else(|_| Err(Error::PoolFailed("supervisor exited during start".into())));
        if let Err(e) = started {
            let _ = handle.join();
            return Err(e);
        }
        Ok(Pool {
            shared,
            driver: Mutex::new(Driver { next_map: 1, stage_in: None, stage_out: None }),
            supervisor: Mutex::new(Some(handle)),
        })
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    }
}

fn sweep_once() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        crate::shm::sweep_stale();
    });
}

#[derive(Default)]
struct Stats {
    deaths: AtomicU64,
    respawns: AtomicU64,
}

/// State shared by the pool handle and its supervisor thread.
struct Shared {
    ring: Ring,
    cfg: Config,
    /// CPU for worker `k` (empty: no pinning).
    cpus: Vec<usize>,
    /// Segments workers may ask for, by id. Weak: a dropped `SharedVec` disappears from it.
    registry: Mutex<HashMap<u64, Weak<Segment>>>,
    pids: Mutex<Vec<u32>>,
    state: AtomicU8,
    failure: Mutex<Option<String>>,
    poke_rx: OwnedFd,
    poke_tx: OwnedFd,
    stats: Stats,
    deaths: Mutex<Vec<supervisor::Death>>,
}

impl Shared {
    fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(why);
        drop(f);
        self.ring.header().done.ring();
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn poke(&self) {
        let _ = nix::unistd::write(self.poke_tx.as_fd(), &[1]);
    }

    fn register(&self, seg: &Arc<Segment>) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.entry(seg.id()).or_insert_with(|| Arc::downgrade(seg));
    }
}

struct Driver {
    next_map: u64,
    stage_in: Option<Staging>,
    stage_out: Option<Staging>,
}

/// Where a map's input and output live.
enum Io<'a> {
    /// Plain memory of the caller; chunks travel inline in the slots.
    Inline { input: &'a [u8], output: &'a mut [u8] },
    /// Shared segments, read and written in place (byte offset 0 of each data area).
    Shared { input: &'a Arc<Segment>, output: &'a Arc<Segment> },
}

/// A pool of worker processes mapping functions over numeric arrays in shared memory.
///
/// # Examples
///
/// ```
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::new(2)?;
/// let squares = pool.map(&[1.0f64, 2.0, 3.0], |x: f64| x * x)?;
/// assert_eq!(squares, [1.0, 4.0, 9.0]);
/// # Ok(()) }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    driver: Mutex<Driver>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("workers", &self.shared.cfg.workers).field("pids", &self.pids()).finish()
    }
}

impl Pool {
    /// A pool of `workers` processes with default settings.
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    pub fn new(workers: usize) -> Result<Pool> {
        Pool::builder().workers(workers).build()
    }

    /// A builder with default settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The configured number of workers.
    pub fn workers(&self) -> usize {
        self.shared.cfg.workers
    }

    /// The pids of the current worker processes.
    pub fn pids(&self) -> Vec<u32> {
        self.shared.pids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Workers that died abnormally since the pool started (replaced since).
    pub fn worker_deaths(&self) -> u64 {
        self.shared.stats.deaths.load(Ordering::Relaxed)
    }

    /// Replacement workers started since the pool started (deaths and recycling).
    pub fn respawns(&self) -> u64 {
        self.shared.stats.respawns.load(Ordering::Relaxed)
    }

    /// Times a process died while holding the ring mutex (the ring was repaired each time).
    pub fn lock_owner_deaths(&self) -> u32 {
        self.shared.ring.header().owner_deaths.load(Ordering::Relaxed)
    }

    /// For each abnormal death: (pid, signal, monotonic µs when the supervisor noticed it).
    #[doc(hidden)]
    pub fn death_log(&self) -> Vec<(u32, i32, u64)> {
        let log = self.shared.deaths.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().map(|d| (d.pid, d.signal, d.detected_at_us)).collect()
    }

    /// Test hook: flips a bit in every FILLED slot's stored descriptor without re-sealing it,
    /// as a stray write into shared memory would. Returns how many slots it changed.
    #[doc(hidden)]
    pub fn corrupt_filled_slots_for_test(&self) -> usize {
        let Ok(mut g) = self.shared.ring.lock() else { return 0 };
        g.corrupt_filled_for_test()
    }

    /// Applies an element kernel to every element; results keep the input's order.
    ///
    /// `f` is a plain `fn` item or a closure that captures nothing (use [`Pool::map_with`]
    /// for parameters). Small inputs travel inside the ring's slots; larger ones are staged
    /// into a shared buffer the pool reuses, with exactly one copy in and one copy out. Use
    /// [`Pool::map_into`] with [`SharedVec`]s for zero copies.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let xs: Vec<u8> = (0..=255).collect();
    /// let widened: Vec<u32> = pool.map(&xs, |x: u8| x as u32 * 1000)?;
    /// assert_eq!(widened[255], 255_000);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::KernelPanicked`], [`Error::WorkerCrashed`], [`Error::ChunkTimedOut`],
    /// [`Error::PoolClosed`], [`Error::ShmFull`] (staging), [`Error::PoolFailed`].
    pub fn map<In: Pod, Out: Pod, F: Fn(In) -> Out + Copy + 'static>(&self, input: &[In], f: F) -> Result<Vec<Out>> {
        self.map_spec(input, &KernelSpec::elem(f))
    }

    /// Like [`Pool::map`], with a `Pod` parameter block passed to every call.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let scaled = pool.map_with(&[1.0f32, 2.0], 10.0f32, |x: f32, k: &f32| x * k)?;
    /// assert_eq!(scaled, [10.0, 20.0]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Pool::map`].
    pub fn map_with<In: Pod, Out: Pod, P: Pod, F: Fn(In, &P) -> Out + Copy + 'static>(
        &self,
        input: &[In],
        params: P,
        f: F,
    ) -> Result<Vec<Out>> {
        self.map_spec(input, &KernelSpec::elem_with(&params, f))
    }

    /// Streams batches through the pool, in order, with bounded memory (Python's `imap` over
    /// chunks): each batch is mapped across all workers when the iterator reaches it, so at most
    /// one batch's input and output are held at a time. Batches are not overlapped with each
    /// other; for one big array use [`Pool::map_into`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let batches = (0..3).map(|b| vec![b as f64; 4]);
    /// let sums: Vec<f64> = pool
    ///     .imap(batches, |x: f64| x + 0.5)
    ///     .map(|r| r.map(|v| v.iter().sum()))
    ///     .collect::<shmpool::Result<_>>()?;
    /// assert_eq!(sums, [2.0, 6.0, 10.0]);
    /// # Ok(()) }
    /// ```
    pub fn imap<'a, In, Out, B, I, F>(&'a self, batches: I, f: F) -> impl Iterator<Item = Result<Vec<Out>>> + 'a
    where
        In: Pod,
        Out: Pod,
        B: AsRef<[In]>,
        I: IntoIterator<Item = B>,
        I::IntoIter: 'a,
        F: Fn(In) -> Out + Copy + 'static,
    {
        let spec = KernelSpec::elem(f);
        batches.into_iter().map(move |b| self.map_spec(b.as_ref(), &spec))
    }

    /// Applies a prepared [`KernelSpec`] to a plain slice (see [`Pool::map`]).
    ///
    /// # Errors
    ///
    /// As [`Pool::map`], plus [`Error::InvalidConfig`] when the element sizes of `spec` and
    /// the slice types differ.
    pub fn map_spec<In: Pod, Out: Pod>(&self, input: &[In], spec: &KernelSpec) -> Result<Vec<Out>> {
        check_spec::<In, Out>(spec)?;
        let len = input.len();
        let in_bytes: &[u8] = bytemuck::cast_slice(input);
        let out_len_bytes = len * spec.out_size;
        let mut drv = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        if self.fits_inline(len, spec) {
            let mut out = vec![Out::zeroed(); len];
            let output: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
            self.execute(&mut drv, spec, len, Io::Inline { input: in_bytes, output }, None)?;
            return Ok(out);
        }
        let stage_in = stage(&mut drv.stage_in, in_bytes.len(), &self.shared)?;
        stage_in.bytes_mut(in_bytes.len()).copy_from_slice(in_bytes);
        let in_seg = stage_in.seg.clone();
        let out_seg = stage(&mut drv.stage_out, out_len_bytes, &self.shared)?.seg.clone();
        self.execute(&mut drv, spec, len, Io::Shared { input: &in_seg, output: &out_seg }, None)?;
        let stage_out = drv.stage_out.as_mut().expect("staged above");
        let bytes = stage_out.bytes_mut(out_len_bytes);
        Ok(bytemuck::cast_slice::<u8, Out>(bytes).to_vec())
    }

    /// Runs a chunk kernel `f(&input[r], &mut output[r])` over consecutive ranges `r`, in
    /// place, with zero copies: the workers read `input` and write `output` directly.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::{Pool, SharedVec};
    /// let pool = Pool::new(2)?;
    /// let xs = SharedVec::from_slice(&[1.0f64, 4.0, 9.0])?;
    /// let mut ys = pool.alloc::<f64>(3)?;
    /// pool.map_into(&xs, &mut ys, |x: &[f64], y: &mut [f64]| {
    ///     for (y, x) in y.iter_mut().zip(x) { *y = x.sqrt(); }
    /// })?;
    /// assert_eq!(&ys[..], &[1.0, 2.0, 3.0]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] when the lengths differ; otherwise as [`Pool::map`].
    pub fn map_into<In: Pod, Out: Pod, F: Fn(&[In], &mut [Out]) + Copy + 'static>(
        &self,
        input: &SharedVec<In>,
        output: &mut SharedVec<Out>,
        f: F,
    ) -> Result<()> {
        self.map_into_spec(input, output, &KernelSpec::chunk(f))
    }

    /// Like [`Pool::map_into`], with a `Pod` parameter block.
    ///
    /// # Errors
    ///
    /// As [`Pool::map_into`].
    pub fn map_into_with<In: Pod, Out: Pod, P: Pod, F: Fn(&[In], &mut [Out], &P) + Copy + 'static>(
        &self,
        input: &SharedVec<In>,
        output: &mut SharedVec<Out>,
        params: P,
        f: F,
    ) -> Result<()> {
        self.map_into_spec(input, output, &KernelSpec::chunk_with(&params, f))
    }

    /// Runs a prepared [`KernelSpec`] from one `SharedVec` into another (see [`Pool::map_into`]).
    ///
    /// # Errors
    ///
    /// As [`Pool::map_into`], plus [`Error::InvalidConfig`] when the element sizes differ.
    pub fn map_into_spec<In: Pod, Out: Pod>(
        &self,
        input: &SharedVec<In>,
        output: &mut SharedVec<Out>,
        spec: &KernelSpec,
    ) -> Result<()> {
        check_spec::<In, Out>(spec)?;
        if input.len() != output.len() {
            return Err(Error::LengthMismatch { input: input.len(), output: output.len() });
        }
        let mut drv = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        self.execute(&mut drv, spec, input.len(), Io::Shared { input: input.segment(), output: output.segment() }, None)
    }

    /// Runs `spec` from a memory-mapped `.npy` input into a `.npy` output being written, in
    /// place, with zero copies; `progress` (if any) is called with the number of elements done.
    /// Commit the output afterwards ([`NpyOutput::commit`]); on error, drop it and nothing is left.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`]; [`Error::InvalidConfig`] when the kernel's element sizes do
    /// not match the files' dtypes; otherwise as [`Pool::map`].
    pub fn map_npy(
        &self,
        input: &NpyArray,
        output: &mut NpyOutput,
        spec: &KernelSpec,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        if input.len() != output.len() {
            return Err(Error::LengthMismatch { input: input.len(), output: output.len() });
        }
        if spec.in_size != input.dtype().size() || spec.out_size != output.dtype().size() {
            return Err(Error::InvalidConfig(format!(
                "kernel maps {}-byte to {}-byte elements, files hold {} and {}",
                spec.in_size,
                spec.out_size,
                input.dtype(),
                output.dtype()
            )));
        }
        let mut drv = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        let io = Io::Shared { input: input.segment(), output: output.segment() };
        self.execute(&mut drv, spec, input.len(), io, progress)
    }

    /// A zeroed [`SharedVec`] of `len` elements (the pool is not needed for this; the method
    /// is here because it is where users look for it).
    ///
    /// # Errors
    ///
    /// As [`SharedVec::zeroed`].
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<SharedVec<T>> {
        SharedVec::zeroed(len)
    }

    /// Stops accepting maps; workers keep running until [`Pool::join`] (Python's `close`).
    pub fn close(&self) {
        let _ = self.shared.state.compare_exchange(STATE_RUNNING, STATE_CLOSED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Waits for the workers to exit after [`Pool::close`] or [`Pool::terminate`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the pool is still open (call `close` first, as in Python).
    pub fn join(&self) -> Result<()> {
        if self.shared.state.load(Ordering::SeqCst) == STATE_RUNNING {
            return Err(Error::InvalidConfig("join() needs close() or terminate() first".into()));
        }
        self.stop(STATE_STOPPING);
        Ok(())
    }

    /// Kills the workers at once (SIGKILL) and waits for them.
    pub fn terminate(&self) {
        self.stop(STATE_TERMINATED);
    }

    fn stop(&self, target: u8) {
        self.shared.state.fetch_max(target, Ordering::SeqCst);
        self.shared.ring.request_shutdown();
        self.shared.poke();
        let handle = self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.state.load(Ordering::SeqCst) != STATE_RUNNING {
            return Err(Error::PoolClosed);
        }
        if let Some(why) = self.shared.failure() {
            return Err(Error::PoolFailed(why));
        }
        Ok(())
    }

    /// Payload bytes left for one inline chunk's input and output after the parameter block
    /// (and up to 128 bytes of alignment padding).
    fn inline_room(&self, spec: &KernelSpec) -> usize {
        self.shared.ring.payload_cap().saturating_sub(spec.params.len().next_multiple_of(64) + 128)
    }

    /// Whether a map of `len` elements travels inline in at most four slots.
    fn fits_inline(&self, len: usize, spec: &KernelSpec) -> bool {
        let per_elem = spec.in_size + spec.out_size;
        len.saturating_mul(per_elem) <= self.inline_room(spec).saturating_mul(4).min(SMALL_MAP * per_elem)
    }

    /// Cuts `len` elements into chunks and drives them through the ring. Returns only when no
    /// worker can still touch the map's buffers.
    fn execute(
        &self,
        drv: &mut Driver,
        spec: &KernelSpec,
        len: usize,
        mut io: Io<'_>,
        mut progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        self.check_open()?;
        if len == 0 {
            return Ok(());
        }
        let map_id = drv.next_map;
        drv.next_map += 1;
        let cfg = &self.shared.cfg;
        let params_room = spec.params.len().next_multiple_of(64);
        let (max_len, in_seg, out_seg) = match &io {
            Io::Inline { .. } => (self.inline_room(spec) / (spec.in_size + spec.out_size), 0, 0),
            Io::Shared { input, output } => {
                self.shared.register(input);
                self.shared.register(output);
                (usize::MAX, input.id(), output.id())
            }
        };
        if max_len == 0 || spec.params.len() > self.shared.ring.payload_cap() {
            return Err(Error::InvalidConfig(format!(
                "parameter block of {} bytes does not fit a slot payload of {} bytes",
                spec.params.len(),
                self.shared.ring.payload_cap()
            )));
        }
        let max_bytes = match &io {
            Io::Shared { input, output } if input.file_area().is_some() || output.file_area().is_some() => {
                index::MAX_FILE_CHUNK_BYTES
            }
            _ => index::MAX_CHUNK_BYTES,
        };
        let chunks = index::plan(len, cfg.workers, spec.in_size + spec.out_size, cfg.chunk_len, max_len, max_bytes);
        let (addr, tag) = spec.kernel.parts();
        let describe = |r: &Range<usize>| {
            let inline = in_seg == 0;
            let in_bytes = r.len() * spec.in_size;
            Descriptor {
                map_id,
                kernel_addr: addr,
                kernel_tag: tag,
                start: r.start as u64,
                len: r.len() as u64,
                in_seg,
                in_off: if inline { params_room as u64 } else { (r.start * spec.in_size) as u64 },
                out_seg,
                out_off: if inline {
                    (params_room + in_bytes.next_multiple_of(64)) as u64
                } else {
                    (r.start * spec.out_size) as u64
                },
                params_len: spec.params.len() as u64,
                in_size: spec.in_size as u32,
                out_size: spec.out_size as u32,
                ..Descriptor::default()
            }
        };
        let ring = &self.shared.ring;
        let hdr = ring.header();
        let spin = if len <= SMALL_MAP { cfg.spin } else { Duration::ZERO };
        let (mut next, mut outstanding, mut done_elems, mut reported) = (0usize, 0usize, 0usize, 0usize);
        let mut err: Option<Error> = None;
        let mut callback_panic = None;
        loop {
            let seen = hdr.done.seq();
            let mut filled = 0usize;
            {
                // Chunks may be in flight: never leave this loop on a lock timeout (a holder that
                // is stopped, not dead; a dead one releases the lock through EOWNERDEAD).
                let mut g = match ring.lock() {
                    Ok(g) => g,
                    Err(Error::LockTimeout(_)) => continue,
                    Err(e) if outstanding == 0 => return Err(e),
                    Err(e) => {
                        // No way to collect or cancel: kill the workers so that none can still
                        // write into buffers the caller gets back.
                        self.stop(STATE_TERMINATED);
                        return Err(Error::PoolFailed(format!(
                            "ring lock broken with {outstanding} chunks in flight: {e}"
                        )));
                    }
                };
                g.collect(map_id, |d| {
                    outstanding -= 1;
                    let range = d.desc.start as usize..(d.desc.start + d.desc.len) as usize;
                    if d.status == Status::Ok {
                        done_elems += range.len();
                    }
                    let e = match d.status {
                        Status::Ok => {
                            if let Io::Inline { output, .. } = &mut io {
                                let (o, n) = (d.desc.out_off as usize, range.len() * spec.out_size);
                                output[range.start * spec.out_size..range.end * spec.out_size]
                                    .copy_from_slice(&d.payload[o..o + n]);
                            }
                            None
                        }
                        Status::Panicked => Some(Error::KernelPanicked { message: d.message, range }),
                        Status::Crashed => {
                            Some(Error::WorkerCrashed { range, signal: d.signal as i32, attempts: d.attempt })
                        }
                        Status::Corrupt => Some(Error::CorruptSlot { slot: d.slot, reason: d.message }),
                        Status::TimedOut => {
                            Some(Error::ChunkTimedOut { range, limit: cfg.chunk_timeout.unwrap_or_default() })
                        }
                    };
                    if err.is_none() {
                        err = e;
                    }
                });
                if err.is_none() {
                    while next < chunks.len() {
                        let r = &chunks[next];
                        let d = describe(r);
                        let slot = g.fill(&d, |p| {
                            p[..spec.params.len()].copy_from_slice(&spec.params);
                            if let Io::Inline { input, .. } = &io {
                                let src = &input[r.start * spec.in_size..r.end * spec.in_size];
                                p[d.in_off as usize..d.in_off as usize + src.len()].copy_from_slice(src);
                            }
                        });
                        if slot.is_none() {
                            break;
                        }
                        next += 1;
                        outstanding += 1;
                        filled += 1;
                    }
                } else {
                    outstanding = g.cancel(map_id);
                }
                // Wake me when half the ring is ready to refill, or when the map is complete.
                let refill =
                    if next < chunks.len() { (self.shared.ring.slots() / 2).max(1) as usize } else { usize::MAX };
                g.set_wanted(outstanding.min(refill).max(1) as u32);
            }
            if filled > 0 {
                // One chunk and a spinning worker: it will see the bump; waking the sleepers
                // too would only make one of them spin as well, and on a small machine three
                // busy processes (caller, spinner, worker) on two cores is what makes the
                // latency tail. Otherwise wake everyone.
                if filled == 1 && hdr.spinner.load(Ordering::SeqCst) != 0 {
                    hdr.work.bump();
                } else {
                    hdr.work.ring();
                }
            }
            if let Some(p) = progress.as_mut() {
                if done_elems != reported && callback_panic.is_none() {
                    reported = done_elems;
                    // A panicking callback must not unwind past chunks that workers are still
                    // writing: stop the map as for any error, then resume the panic.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p(done_elems)));
                    if let Err(payload) = r {
                        callback_panic = Some(payload);
                        err.get_or_insert(Error::PoolFailed("progress callback panicked".into()));
                    }
                }
            }
            if outstanding == 0 && (next == chunks.len() || err.is_some()) {
                break;
            }
            if let Some(why) = self.shared.failure() {
                if self.pids().is_empty() {
                    // No worker is left that could touch the buffers.
                    let _ = ring.lock().map(|mut g| g.cancel(map_id));
                    return Err(Error::PoolFailed(why));
                }
            }
            hdr.done.wait(seen, spin, WAIT_SLICE);
        }
        if let Some(payload) = callback_panic {
            std::panic::resume_unwind(payload);
        }
        err.map_or(Ok(()), Err)
    }
}

fn check_spec<In: Pod, Out: Pod>(spec: &KernelSpec) -> Result<()> {
    let (i, o) = (std::mem::size_of::<In>(), std::mem::size_of::<Out>());
    if spec.in_size != i || spec.out_size != o || i == 0 || o == 0 {
        return Err(Error::InvalidConfig(format!(
            "kernel maps {}-byte to {}-byte elements, arrays hold {i}-byte and {o}-byte elements",
            spec.in_size, spec.out_size
        )));
    }
    if spec.align > 64 {
        return Err(Error::InvalidConfig(format!("element alignment {} exceeds 64", spec.align)));
    }
    Ok(())
}

/// Makes `slot` a staging buffer of at least `bytes` bytes, registered with the pool.
fn stage<'a>(slot: &'a mut Option<Staging>, bytes: usize, shared: &Shared) -> Result<&'a mut Staging> {
    if slot.as_ref().is_none_or(|s| s.capacity() < bytes) {
        *slot = None; // free the old one first: /dev/shm may not hold both
        let s = Staging::with_capacity(bytes.next_power_of_two())?;
        shared.register(&s.seg);
        *slot = Some(s);
    }
    Ok(slot.as_mut().expect("set above"))
}

impl Drop for Pool {
    /// Shuts down like `close()` + `join()`: workers finish their chunk and exit; stragglers
    /// are killed after a grace period. Nothing is left running and no segment remains.
    fn drop(&mut self) {
        self.close();
        self.stop(STATE_STOPPING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_workers_is_invalid_config() {
        assert!(matches!(Pool::new(0), Err(Error::InvalidConfig(_))));
        assert!(matches!(Pool::builder().workers(1).max_attempts(0).build(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn closed_pool_refuses_work_and_join_needs_close() {
        let pool = Pool::new(1).unwrap();
        assert!(matches!(pool.join(), Err(Error::InvalidConfig(_))));
        assert_eq!(pool.map(&[1u32], |x: u32| x + 1).unwrap(), [2]);
        pool.close();
        assert!(matches!(pool.map(&[1u32], |x: u32| x + 1), Err(Error::PoolClosed)));
        pool.join().unwrap();
        assert!(pool.pids().is_empty());
    }
}
