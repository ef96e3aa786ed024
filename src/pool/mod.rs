//! The public [`Pool`]: workers, maps, shutdown.
//!
//! `mod.rs` is the thin public API; `builder.rs` holds the options and `build`; `run.rs` is one
//! map's life (fill, wait, collect, fail); `supervisor.rs` owns the worker processes. A map
//! returns only when no worker can still touch its buffers: on success, on error, on
//! cancellation from another thread (`terminate`), on corruption (the pool then kills its
//! workers and reports itself broken). A pool belongs to the process that built it: used from
//! a forked child it returns [`Error::WrongProcess`] and its `Drop` there does nothing. This
//! module contains no unsafe code.
#![deny(unsafe_code)]

mod builder;
mod run;
mod supervisor;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use bytemuck::Pod;

use builder::Config;
pub use builder::PoolBuilder;
use run::Io;
pub use supervisor::WorkerDeath;

use crate::array::{NpyArray, NpyOutput, SharedVec, Staging};
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::shm::Segment;

const STATE_RUNNING: u8 = 0;
const STATE_CLOSED: u8 = 1;
const STATE_STOPPING: u8 = 2;
const STATE_TERMINATED: u8 = 3;

/// Locks a process-local mutex, ignoring poisoning: every value these mutexes guard stays
/// consistent across a panic (plain counters, maps and option swaps).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Stats {
    deaths: AtomicU64,
    respawns: AtomicU64,
}

/// State shared by the pool handle, its map callers and its supervisor thread.
struct Shared {
    /// Pid of the process that built the pool.
    owner: u32,
    ring: crate::ring::Ring,
    cfg: Config,
    /// CPU for worker `k` (empty: no pinning).
    cpus: Vec<usize>,
    /// Segments workers may ask for, by id. Weak: a dropped `SharedVec` disappears from it.
    registry: Mutex<HashMap<u64, Weak<Segment>>>,
    pids: Mutex<Vec<u32>>,
    state: AtomicU8,
    /// Why the supervisor could not keep workers running, if it could not.
    failure: Mutex<Option<Error>>,
    /// Set (Release) by the supervisor once it has killed and reaped every worker for good.
    reaped: AtomicBool,
    poke_rx: OwnedFd,
    poke_tx: OwnedFd,
    stats: Stats,
    deaths: Mutex<Vec<WorkerDeath>>,
    /// Maps in flight; `join` waits for zero.
    active: Mutex<usize>,
    idle: Condvar,
}

impl Shared {
    fn fail(&self, why: Error) {
        lock(&self.failure).get_or_insert(why);
        self.ring.header().done.ring();
    }

    fn failure(&self) -> Option<String> {
        lock(&self.failure).as_ref().map(|e| e.to_string())
    }

    fn poke(&self) {
        let _ = nix::unistd::write(self.poke_tx.as_fd(), &[1]);
    }

    fn register(&self, seg: &Arc<Segment>) {
        lock(&self.registry).entry(seg.id()).or_insert_with(|| Arc::downgrade(seg));
    }

    fn is_owner(&self) -> bool {
        std::process::id() == self.owner
    }
}

/// Per-pool state of the maps: ids and the staging buffers plain slices are copied through.
#[derive(Default)]
struct Maps {
    next_map: u64,
    stage_in: Option<Staging>,
    stage_out: Option<Staging>,
}

/// One map in flight: holds the map lock and counts in `active` until dropped.
struct MapSlot<'a> {
    maps: MutexGuard<'a, Maps>,
    shared: &'a Shared,
}

impl std::ops::Deref for MapSlot<'_> {
    type Target = Maps;
    fn deref(&self) -> &Maps {
        &self.maps
    }
}

impl std::ops::DerefMut for MapSlot<'_> {
    fn deref_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }
}

impl Drop for MapSlot<'_> {
    fn drop(&mut self) {
        let mut n = lock(&self.shared.active);
        *n -= 1;
        if *n == 0 {
            self.shared.idle.notify_all();
        }
    }
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
    maps: Mutex<Maps>,
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

    /// How this pool starts its workers (the method chosen at `build` when none was asked for).
    pub fn start_method(&self) -> crate::StartMethod {
        self.shared.cfg.start.expect("build sets the start method")
    }

    /// The pids of the current worker processes.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.shared.pids).clone()
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

    /// Every abnormal worker death so far: pid, signal, and when the supervisor noticed it.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn death_log(&self) -> Vec<WorkerDeath> {
        lock(&self.shared.deaths).clone()
    }

    /// Test hook: flips a bit in every FILLED slot's stored descriptor without re-sealing it,
    /// as a stray write into shared memory would. Returns how many slots it changed.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn corrupt_filled_slots_for_test(&self) -> usize {
        let Ok(mut g) = self.shared.ring.lock() else { return 0 };
        g.corrupt_filled_for_test()
    }

    /// Test hook: the ring segment's descriptor, for tests that scribble over shared memory
    /// from another process as a buggy kernel would.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn ring_fd_for_test(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.ring.segment().fd()
    }

    /// Test hook: where each slot starts in the ring segment (bytes from the start of the
    /// mapping): a 64-byte slot header (state word first), then the 128-byte descriptor.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn slot_offsets_for_test(&self) -> Vec<usize> {
        self.shared.ring.slot_offsets_for_test()
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
    /// [`Error::PoolClosed`], [`Error::ShmFull`] (staging), [`Error::Cancelled`] (terminated
    /// from another thread), [`Error::CorruptSlot`] then [`Error::PoolBroken`] (shared state
    /// corrupted: the workers were killed), [`Error::WrongProcess`] (used from a forked child).
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
    /// As [`Pool::map`], plus [`Error::TypeMismatch`] when `spec` was made for other element
    /// types than the slices'.
    pub fn map_spec<In: Pod, Out: Pod>(&self, input: &[In], spec: &KernelSpec) -> Result<Vec<Out>> {
        spec.check_types::<In, Out>()?;
        let len = input.len();
        let in_bytes: &[u8] = bytemuck::cast_slice(input);
        let out_len_bytes = len
            .checked_mul(spec.out_size)
            .ok_or(Error::TooLarge { count: len as u64, elem_size: spec.out_size as u64 })?;
        let mut maps = self.begin()?;
        if run::fits_inline(&self.shared, len, spec) {
            let mut out = vec![Out::zeroed(); len];
            let output: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
            self.execute(&mut maps, spec, len, Io::Inline { input: in_bytes, output }, None)?;
            return Ok(out);
        }
        let stage_in = stage(&mut maps.stage_in, in_bytes.len(), &self.shared)?;
        stage_in.bytes_mut(in_bytes.len()).copy_from_slice(in_bytes);
        let in_seg = stage_in.seg.clone();
        let out_seg = stage(&mut maps.stage_out, out_len_bytes, &self.shared)?.seg.clone();
        self.execute(&mut maps, spec, len, Io::Shared { input: &in_seg, output: &out_seg }, None)?;
        let stage_out = maps.stage_out.as_mut().expect("staged above");
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
    /// As [`Pool::map_into`], plus [`Error::TypeMismatch`] when `spec` was made for other
    /// element types than the arrays'.
    pub fn map_into_spec<In: Pod, Out: Pod>(
        &self,
        input: &SharedVec<In>,
        output: &mut SharedVec<Out>,
        spec: &KernelSpec,
    ) -> Result<()> {
        spec.check_types::<In, Out>()?;
        if input.len() != output.len() {
            return Err(Error::LengthMismatch { input: input.len(), output: output.len() });
        }
        let mut maps = self.begin()?;
        self.execute(
            &mut maps,
            spec,
            input.len(),
            Io::Shared { input: input.segment(), output: output.segment() },
            None,
        )
    }

    /// Runs `spec` from a memory-mapped `.npy` input into a `.npy` output being written, in
    /// place, with zero copies; `progress` (if any) is called with the number of elements done.
    /// Commit the output afterwards ([`NpyOutput::commit`]); on error, drop it and nothing is left.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`]; [`Error::TypeMismatch`] when the kernel's element types are
    /// not the files' dtypes; [`Error::Aliased`] when the output is the input file; otherwise as
    /// [`Pool::map`].
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
        spec.check_dtypes(input.dtype(), output.dtype())?;
        let (ins, outs) = (input.segment(), output.segment());
        if ins.identity().is_some() && ins.identity() == outs.identity() {
            return Err(Error::Aliased { path: output.path().display().to_string() });
        }
        let mut maps = self.begin()?;
        self.execute(&mut maps, spec, input.len(), Io::Shared { input: ins, output: outs }, progress)
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

    /// Stops accepting maps; maps already running finish, and workers keep running until
    /// [`Pool::join`] (Python's `close`).
    pub fn close(&self) {
        if !self.shared.is_owner() {
            return;
        }
        let _ = self.shared.state.compare_exchange(STATE_RUNNING, STATE_CLOSED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Waits for running maps to finish, then for the workers to exit, after [`Pool::close`]
    /// (or at once after [`Pool::terminate`]).
    ///
    /// # Errors
    ///
    /// [`Error::JoinWhileOpen`] when the pool is still open (call `close` first, as in Python);
    /// [`Error::WrongProcess`] from a forked child.
    pub fn join(&self) -> Result<()> {
        self.check_owner()?;
        if self.shared.state.load(Ordering::SeqCst) == STATE_RUNNING {
            return Err(Error::JoinWhileOpen);
        }
        {
            let mut n = lock(&self.shared.active);
            while *n > 0 && self.shared.state.load(Ordering::SeqCst) < STATE_TERMINATED {
                n = self.shared.idle.wait(n).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.stop(STATE_STOPPING);
        Ok(())
    }

    /// Kills the workers at once (SIGKILL) and waits for them. A map running on another thread
    /// returns [`Error::Cancelled`] once every worker is reaped. From a forked child it does
    /// nothing: the workers are the parent's.
    pub fn terminate(&self) {
        if self.shared.is_owner() {
            self.stop(STATE_TERMINATED);
        }
    }

    fn stop(&self, target: u8) {
        self.shared.state.fetch_max(target, Ordering::SeqCst);
        self.shared.idle.notify_all();
        self.shared.ring.request_shutdown();
        self.shared.poke();
        let handle = lock(&self.supervisor).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn check_owner(&self) -> Result<()> {
        if self.shared.is_owner() {
            Ok(())
        } else {
            Err(Error::WrongProcess { owner: self.shared.owner, current: std::process::id() })
        }
    }

    /// Admits one map: the pool must be this process's, open and healthy.
    fn begin(&self) -> Result<MapSlot<'_>> {
        self.check_owner()?;
        let maps = lock(&self.maps);
        {
            let mut n = lock(&self.shared.active);
            if self.shared.state.load(Ordering::SeqCst) != STATE_RUNNING {
                return Err(match self.shared.failure() {
                    Some(reason) => Error::PoolBroken { reason },
                    None => Error::PoolClosed,
                });
            }
            if let Some(reason) = self.shared.failure() {
                return Err(Error::PoolBroken { reason });
            }
            *n += 1;
        }
        Ok(MapSlot { maps, shared: &self.shared })
    }

    /// Runs one map (see `run.rs`).
    fn execute(
        &self,
        maps: &mut MapSlot<'_>,
        spec: &KernelSpec,
        len: usize,
        io: Io<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        maps.next_map += 1;
        let map_id = maps.next_map;
        run::MapRun::new(self, spec, map_id, len, io)?.drive(progress)
    }
}

/// Makes `slot` a staging buffer of at least `bytes` bytes, registered with the pool.
fn stage<'a>(slot: &'a mut Option<Staging>, bytes: usize, shared: &Shared) -> Result<&'a mut Staging> {
    if slot.as_ref().is_none_or(|s| s.capacity() < bytes) {
        *slot = None; // free the old one first: /dev/shm may not hold both
        let s = Staging::with_capacity(bytes.checked_next_power_of_two().unwrap_or(bytes))?;
        shared.register(&s.seg);
        *slot = Some(s);
    }
    Ok(slot.as_mut().expect("set above"))
}

impl Drop for Pool {
    /// Shuts down like `close()` + `join()`: workers finish their chunk and exit; stragglers
    /// are killed after a grace period. Nothing is left running and no segment remains. In a
    /// forked child (which does not own the workers) it only forgets its copy of the handle.
    fn drop(&mut self) {
        if !self.shared.is_owner() {
            // The supervisor thread exists only in the parent: neither join nor detach it here.
            if let Some(h) = self.supervisor.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(h);
            }
            return;
        }
        self.close();
        self.stop(STATE_STOPPING);
    }
}

#[cfg(test)]
mod test;
