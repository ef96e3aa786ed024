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

mod api;
mod builder;
mod drive;
mod fold;
mod imap;
mod poll_set;
mod run;
mod scratch;
mod staging;
mod supervisor;
mod ticket;
mod zip;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use bytemuck::Pod;

use builder::Config;
pub use builder::PoolBuilder;
pub use builder::WaitStrategy;
pub use imap::{Imap, ImapUnordered};
use run::{Dest, Input, Output};
pub use supervisor::WorkerDeath;
pub use ticket::Ticket;

use crate::array::{SharedVec, Staging};
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
    /// CPU for worker `k` (empty: no pinning), counted against other pools while the pool lives.
    cpus: builder::CpuClaim,
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
    /// Maps in flight (blocking maps and tickets): fair shares and wake-up batching.
    active: AtomicUsize,
    /// Threads inside a waiting loop (a blocking map, a ticket's submit or wait).
    collectors: AtomicUsize,
    /// Those of them whose loop frees slots as chunks finish.
    draining: AtomicUsize,
    /// Threads waiting for a free slot with nothing of their own in flight.
    slot_waiters: AtomicUsize,
    /// Recycled per-map bookkeeping.
    books: Mutex<Vec<run::Books>>,
    /// Slots of dropped tickets still in flight, freed by whoever takes the ring lock next.
    orphans: Mutex<Vec<(u32, crate::ring::Sealed)>>,
    orphan_count: AtomicUsize,
    /// Since when (monotonic µs, 0: not) the ring lock has been timing out for map callers.
    lock_failing: AtomicU64,
    /// CPUs this process may use (for the spin decision).
    cores: usize,
    /// Spare staging buffers for plain slices too large to travel inline, reused between maps
    /// and trimmed by the supervisor when idle.
    staging: staging::StagingCache,
}

impl Shared {
    fn fail(&self, why: Error) {
        lock(&self.failure).get_or_insert(why);
        self.ring.header().done.ring();
    }

    fn failure(&self) -> Option<String> {
        lock(&self.failure).as_ref().map(Error::broken_reason)
    }

    fn poke(&self) {
        let _ = nix::unistd::write(self.poke_tx.as_fd(), &[1]);
    }

    fn register(&self, seg: &Arc<Segment>) {
        lock(&self.registry).entry(seg.id()).or_insert_with(|| Arc::downgrade(seg));
    }

    fn is_owner(&self) -> bool {
        crate::sync::pid() == self.owner
    }

    /// Frees the slots of dropped tickets whose workers are done with them.
    fn reap_orphans(&self, g: &mut crate::ring::RingGuard<'_>) {
        if self.orphan_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut orphans = lock(&self.orphans);
        orphans.retain(|(slot, sealed)| match g.observe(*slot) {
            crate::ring::Observed::Running(_) => true,
            crate::ring::Observed::Waiting => !g.withdraw(*slot),
            crate::ring::Observed::Done => {
                let _ = g.take(*slot, sealed, |_| {});
                false
            }
            crate::ring::Observed::Corrupt(_) => false,
        });
        self.orphan_count.store(orphans.len(), Ordering::Relaxed);
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
    /// Next map id (ids are never reused within a pool).
    next_map: AtomicU64,
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

    /// Every abnormal worker death so far, oldest first: pid, signal, and when the supervisor
    /// noticed it ([`Pool::worker_deaths`] counts them).
    pub fn death_log(&self) -> Vec<WorkerDeath> {
        lock(&self.shared.deaths).clone()
    }

    /// Test hook: the pid of the idle worker holding the spinner token (0: none).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn spinner_for_test(&self) -> u32 {
        self.shared.ring.header().spinner.load(Ordering::SeqCst)
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

    /// Maps plain bytes to plain bytes: inline in the slots when small, else through staging
    /// buffers in shared memory (one copy in, one copy out).
    fn map_slice(
        &self,
        input: &[u8],
        output: &mut [u8],
        spec: &KernelSpec,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        self.check_open()?;
        let len = input.len() / spec.in_size;
        if len == 0 {
            return Ok(());
        }
        if let Some(layout) = run::inline_layout(&self.shared, len, spec, run::INLINE_SLOTS) {
            let run =
                run::MapRun::new(self, spec, len, &Input::Inline(input), Dest::Inline, run::Chunking::Inline(layout))?;
            return drive::drive(run, spec, Input::Inline(input), Output::Inline(output), progress);
        }
        let mut stage_in = self.take_staging(input.len())?;
        stage_in.bytes_mut(input.len()).copy_from_slice(input);
        let stage_out = self.take_staging(output.len())?;
        let (ins, outs) = (stage_in.seg.clone(), stage_out.seg.clone());
        let run = run::MapRun::new(self, spec, len, &Input::Shared(&ins), Dest::Staging(&outs), run::Chunking::Shared)?;
        let r = drive::drive(run, spec, Input::Shared(&ins), Output::Shared, progress);
        let mut stage_out = stage_out;
        if r.is_ok() {
            output.copy_from_slice(stage_out.bytes_mut(output.len()));
        }
        // A map that returned has no chunk in flight: the buffers may be reused.
        self.give_back(stage_in);
        self.give_back(stage_out);
        r
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
        // As in Python, work already given to the pool is finished first: wait until no caller
        // is in a map and no chunk is waiting or running (tickets not yet waited for keep
        // their finished results in the ring).
        loop {
            let hdr = self.shared.ring.header();
            let seen = hdr.done.seq();
            let busy = self.shared.collectors.load(Ordering::SeqCst) > 0
                || self.shared.ring.lock().is_ok_and(|g| {
                    let c = g.census(0);
                    c.filled + c.claimed > 0
                });
            if !busy
                || self.shared.state.load(Ordering::SeqCst) >= STATE_TERMINATED
                || self.shared.reaped.load(Ordering::Acquire)
            {
                break;
            }
            hdr.done.wait(seen, std::time::Duration::ZERO, run::WAIT_SLICE);
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
        self.shared.ring.request_shutdown();
        self.shared.poke();
        let handle = lock(&self.supervisor).take();
        match handle {
            Some(h) => {
                let _ = h.join();
            }
            // Another thread is joining the supervisor: return only once it has reaped every
            // worker, like that thread will.
            None => {
                let hdr = self.shared.ring.header();
                while !self.shared.reaped.load(Ordering::Acquire) {
                    let seen = hdr.done.seq();
                    if self.shared.reaped.load(Ordering::Acquire) {
                        break;
                    }
                    hdr.done.wait(seen, std::time::Duration::ZERO, std::time::Duration::from_millis(10));
                }
            }
        }
    }

    fn check_owner(&self) -> Result<()> {
        if self.shared.is_owner() {
            Ok(())
        } else {
            Err(Error::WrongProcess { owner: self.shared.owner, current: crate::sync::pid() })
        }
    }

    /// The pool must be this process's, open and healthy.
    fn check_open(&self) -> Result<()> {
        self.check_owner()?;
        if let Some(reason) = self.shared.failure() {
            return Err(Error::PoolBroken { reason });
        }
        if self.shared.state.load(Ordering::SeqCst) != STATE_RUNNING {
            return Err(Error::PoolClosed);
        }
        Ok(())
    }

    /// A blocking map between two shared segments, into one of the pool's staging buffers (recycled between maps:
    /// the workers zero a chunk kernel's output in it, as for inline slots).
    fn map_shared_staged(
        &self,
        spec: &KernelSpec,
        len: usize,
        input: &Arc<Segment>,
        staging: &Arc<Segment>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        self.map_shared_at(spec, len, input, Dest::Staging(staging), progress, 0)
    }

    /// A blocking map between two shared segments, over units `first_elem..first_elem + len` of both segments, the
    /// kernel seeing indices from the spec's `index_offset` (the callers checked the range
    /// against both).
    fn map_shared_at(
        &self,
        spec: &KernelSpec,
        len: usize,
        input: &Arc<Segment>,
        output: Dest<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
        first_elem: usize,
    ) -> Result<()> {
        self.check_open()?;
        if len == 0 {
            return Ok(());
        }
        let run = run::MapRun::new(self, spec, len, &Input::Shared(input), output, run::Chunking::Shared)?
            .place(first_elem, spec.index_offset);
        drive::drive(run, spec, Input::Shared(input), Output::Shared, progress)
    }

    /// A staging buffer of at least `bytes` bytes, registered with the pool: the smallest
    /// spare that is large enough, else a new one.
    fn take_staging(&self, bytes: usize) -> Result<Staging> {
        self.shared.staging.take(bytes, |size| {
            let s = Staging::with_capacity(size)?;
            self.shared.register(&s.seg);
            Ok(s)
        })
    }

    /// Returns a staging buffer no worker can touch any more (kept within the cache's bounds).
    fn give_back(&self, s: Staging) {
        self.shared.staging.give_back(s);
    }

    /// Test hook: bytes of spare staging buffers the pool keeps right now.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn staging_bytes_for_test(&self) -> usize {
        self.shared.staging.spare_bytes()
    }
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
