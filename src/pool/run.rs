//! One map's life: cut the index range into chunks, fill slots, wake workers, wait, take each
//! finished chunk exactly once, refill, and leave only when no worker can touch the map's
//! buffers any more. Blocking maps (`Pool::map*`) drive a [`MapRun`] to its end at once;
//! tickets (`ticket.rs`) fill at submit and collect at wait.
//!
//! The map caller trusts nothing it reads back from shared memory that it did not check
//! against its own, process-private record: for every slot it filled it keeps the chunk index
//! and the sealed descriptor; a slot of ours that goes FREE or to an unknown state, a DONE slot
//! whose descriptor or completion stamp does not match, a chunk finished twice, a slot it did
//! not fill posing as a finished chunk of this map: each is corruption. Corruption fails the
//! map with [`Error::CorruptSlot`] *after* the pool has killed and reaped its workers (so none
//! can still write the caller's buffers), and leaves the pool broken. Inline results are copied
//! with ranges the caller computed itself, so a scribbled descriptor can never make it slice
//! out of bounds.
//!
//! Many maps may be in flight at once, from any number of threads. Fairness: while `n` maps
//! are in flight each may hold at most `slots / n` slots (at least one), and workers claim the
//! oldest FILLED slot first, so a huge map cannot starve a small batch: the batch waits for at
//! most one chunk per worker of the others.
#![deny(unsafe_code)]

mod collect;
mod replan;

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lock, Pool, Shared, STATE_TERMINATED};
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::ring::layout::{params_inline, InlineLayout};
use crate::ring::{index, Descriptor, RingGuard, Sealed, LOCK_TIMEOUT, SPINNER_STALE_US};
use crate::shm::Segment;

/// How long a waiting map caller sleeps between health checks.
pub(super) const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Maps with at most this many elements spin briefly for results instead of sleeping, and
/// travel inline when they fit.
pub(super) const SMALL_MAP: usize = 1 << 16;
/// Inline maps use at most this many slots' payloads.
pub(super) const INLINE_SLOTS: usize = 4;
/// How long a slot of ours may name a claimer that is not one of the pool's workers before it
/// counts as corrupted (a new worker may claim a chunk a moment before its pid is published).
const UNKNOWN_CLAIMER_GRACE: Duration = Duration::from_secs(1);
/// How often the caller checks claimers against the live workers.
const CLAIMER_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Where a map's input lives.
pub(super) enum Input<'a> {
    /// Plain memory of the caller, copied into the slots.
    Inline(&'a [u8]),
    /// A shared segment, read in place (byte offset 0 of its data area).
    Shared(&'a Arc<Segment>),
}

/// Where a map's output goes.
pub(super) enum Output<'a> {
    /// Plain memory of the caller, copied out of the slots.
    Inline(&'a mut [u8]),
    /// A shared segment, written in place by the workers.
    Shared,
    /// Not yet: leave finished chunks in their slots (a ticket whose caller has not asked
    /// for its results, and whose results travel inline).
    Hold,
}

/// The parameter block bytes that travel inline (none when they go in their own segment).
fn inline_params(shared: &Shared, spec: &KernelSpec) -> usize {
    if params_inline(spec.params.len(), shared.ring.payload_cap()) {
        spec.params.len()
    } else {
        0
    }
}

/// The inline layout of `spec`'s chunks, if a map of `len` elements may travel inline in at
/// most `max_slots` slots.
pub(super) fn inline_layout(shared: &Shared, len: usize, spec: &KernelSpec, max_slots: usize) -> Option<InlineLayout> {
    let cap = shared.ring.payload_cap();
    InlineLayout::new(cap, inline_params(shared, spec), spec.in_size, spec.out_size)
        .filter(|l| len <= SMALL_MAP && len <= l.max_len().saturating_mul(max_slots))
}

/// Where a map's output lives, as far as the workers see it.
#[derive(Clone, Copy)]
pub(super) enum Dest<'a> {
    /// The slots' inline payloads (recycled by every map: zeroed for chunk kernels).
    Inline,
    /// A staging buffer of the pool (recycled between maps: zeroed for chunk kernels).
    Staging(&'a Arc<Segment>),
    /// The caller's own array or file, written in place as it is (`map_into`, `map_npy`).
    Caller(&'a Arc<Segment>),
}

impl<'a> Dest<'a> {
    pub(super) fn segment(self) -> Option<&'a Arc<Segment>> {
        match self {
            Dest::Inline => None,
            Dest::Staging(s) | Dest::Caller(s) => Some(s),
        }
    }

    /// Whether a kernel that may leave output elements unwritten (or read them) must get them
    /// zeroed: the pool's recycled buffers hold earlier maps' results, from any thread.
    fn recycled(self) -> bool {
        !matches!(self, Dest::Caller(_))
    }
}

/// How a map is cut into chunks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Chunking {
    /// Inline in the slots, as many chunks as the plan makes.
    Inline(InlineLayout),
    /// Inline in exactly one slot (a ticket).
    InlineOneSlot(InlineLayout),
    /// In shared segments.
    Shared,
}

/// Why a map stopped early.
enum Stop {
    /// An error of the map alone (a kernel panic, a crash after `max_attempts`, a timeout):
    /// collect what is in flight, then return it. The pool stays usable.
    Map(Error),
    /// The ring or a slot is corrupted: kill every worker, then return it. The pool is broken.
    Corrupt(Error),
}

/// Per-map bookkeeping, recycled through the pool so that a steady stream of small maps
/// allocates nothing.
#[derive(Default)]
pub(super) struct Books {
    chunks: Vec<Range<usize>>,
    /// Per chunk: finished (each chunk finishes exactly once).
    finished: Vec<bool>,
    /// Per slot: the chunk this map put there and the descriptor it sealed, or `None`.
    inflight: Vec<Option<(usize, Sealed)>>,
    /// Per slot: since when it has named a claimer that is not a live worker.
    unknown_claimer: Vec<Option<Instant>>,
}

/// Counts a map as in flight (fair shares, wake-up batching, `join`) while it lives.
struct Active<'p>(&'p Shared);

impl<'p> Active<'p> {
    fn new(shared: &'p Shared) -> Self {
        shared.active.fetch_add(1, Ordering::SeqCst);
        Active(shared)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct MapRun<'p> {
    pub(super) pool: &'p Pool,
    pub(super) shared: &'p Shared,
    _active: Active<'p>,
    pub(super) map_id: u64,
    pub(super) len: usize,
    pub(super) in_size: usize,
    pub(super) out_size: usize,
    pub(super) books: Books,
    /// Next chunk to fill.
    pub(super) next: usize,
    pub(super) outstanding: usize,
    pub(super) done_elems: usize,
    stop: Option<Stop>,
    pub(super) layout: Option<InlineLayout>,
    /// A parameter block too large for the payload, in its own segment (kept for the map).
    pub(super) params_seg: Option<Arc<Segment>>,
    pub(super) in_seg: u64,
    pub(super) out_seg: u64,
    /// Descriptor flags of every chunk ([`Descriptor::ZERO_OUTPUT`], [`Descriptor::VIA_SCRATCH`]).
    flags: u32,
    /// With [`Descriptor::VIA_SCRATCH`]: one backup area per slot and the bytes between two
    /// (see `scratch.rs`).
    scratch: Option<(crate::array::Staging, usize)>,
    /// The last wake-up only bumped for the spinning worker (see [`MapRun::watch_spinner`]).
    relies_on_spinner: bool,
    /// The last `collect` saw a chunk of ours still waiting for a worker (FILLED).
    waiting_chunks: bool,
    /// A wait ended without the done bell moving (see [`MapRun::watch_spinner`]).
    quiet_wait: bool,
    pub(super) last_claimer_check: Instant,
    /// Added to every chunk's first index as the kernel sees it (`i` of an expression).
    index_shift: u64,
    /// The zip header's digest of a several-input map (see [`MapRun::with_zip`]), else 0.
    zip_digest: u32,
}

impl<'p> MapRun<'p> {
    /// Plans a map of `len` elements of `spec` from `input` to `dest`, cut as `chunking` says.
    pub(super) fn new(
        pool: &'p Pool,
        spec: &KernelSpec,
        len: usize,
        input: &Input<'_>,
        dest: Dest<'_>,
        chunking: Chunking,
    ) -> Result<Self> {
        let out = dest.segment();
        // Where the zeroing happens: in the worker, right before the kernel, on the chunk's
        // own output range. Cheaper than the caller clearing the buffer: the caller would
        // write the whole output serially before the map (for a staged map a full extra pass
        // over memory on one core; for an inline batch a memset inside the ring lock), while
        // the workers clear their chunks in parallel, outside the lock, into lines the kernel
        // writes next anyway. It is also the only place that is right for a retried chunk:
        // a killed attempt may have written part of it. W1 and W3 run element kernels, which
        // write every element by construction, and pay nothing.
        let flags = if dest.recycled() && !spec.fills_output { Descriptor::ZERO_OUTPUT } else { 0 };
        let (inline, fixed) = match chunking {
            Chunking::Inline(l) => (Some(l), pool.shared.cfg.chunk_len),
            // A ticket's inline chunk waits in its slot until the ticket is waited for: one
            // slot per ticket, whatever `chunk_len` says, or a ticket could need more slots
            // than it may hold.
            Chunking::InlineOneSlot(l) => (Some(l), Some(len)),
            Chunking::Shared => (None, pool.shared.cfg.chunk_len),
        };
        let shared = &*pool.shared;
        let active = Active::new(shared);
        let cfg = &shared.cfg;
        let params_seg = if params_inline(spec.params.len(), shared.ring.payload_cap()) {
            None
        } else {
            let seg = Arc::new(Segment::create_filled(&spec.params)?);
            shared.register(&seg);
            Some(seg)
        };
        let in_seg = match input {
            Input::Inline(_) => 0,
            Input::Shared(s) => {
                shared.register(s);
                s.id()
            }
        };
        let out_seg = out.map_or(0, |s| {
            shared.register(s);
            s.id()
        });
        let file = [match input {
            Input::Shared(s) => s.file_area().is_some(),
            Input::Inline(_) => false,
        }]
        .into_iter()
        .chain(out.map(|s| s.file_area().is_some()))
        .any(|f| f);
        let max_bytes = if file { index::MAX_FILE_CHUNK_BYTES } else { index::MAX_CHUNK_BYTES };
        let max_len = inline.map_or(usize::MAX, |l| l.max_len());
        let backup = super::scratch::needed(pool, matches!(dest, Dest::Caller(_)), spec);
        let max_bytes = if backup { max_bytes.min(super::scratch::CHUNK_BYTES) } else { max_bytes };
        let mut books = lock(&shared.books).pop().unwrap_or_default();
        index::plan_into(&mut books.chunks, len, cfg.workers, spec.in_size + spec.out_size, fixed, max_len, max_bytes);
        let slots = shared.ring.slots() as usize;
        books.finished.clear();
        books.finished.resize(books.chunks.len(), false);
        books.inflight.clear();
        books.inflight.resize(slots, None);
        books.unknown_claimer.clear();
        books.unknown_claimer.resize(slots, None);
        let scratch = if backup { Some(super::scratch::take(pool, spec.out_size, &books.chunks)?) } else { None };
        Ok(MapRun {
            pool,
            shared,
            _active: active,
            map_id: pool.next_map.fetch_add(1, Ordering::Relaxed),
            len,
            in_size: spec.in_size,
            out_size: spec.out_size,
            books,
            next: 0,
            outstanding: 0,
            done_elems: 0,
            stop: None,
            layout: inline,
            params_seg,
            in_seg,
            out_seg,
            flags: flags | scratch.as_ref().map_or(0, |_| Descriptor::VIA_SCRATCH),
            scratch,
            relies_on_spinner: false,
            waiting_chunks: false,
            quiet_wait: false,
            last_claimer_check: Instant::now(),
            index_shift: spec.index_offset,
            zip_digest: 0,
        })
    }

    fn describe(&self, spec: &KernelSpec, r: &Range<usize>) -> Descriptor {
        let (in_off, out_off) = match &self.layout {
            Some(l) => (l.in_off(), l.out_off(r.len())),
            // No overflow: start * size <= len * size, which fit when the arrays were made.
            None => (r.start * self.in_size, r.start * self.out_size),
        };
        let (addr, tag) = spec.kernel.parts();
        Descriptor {
            map_id: self.map_id,
            kernel_addr: addr,
            kernel_tag: tag,
            start: (r.start as u64).wrapping_add(self.index_shift),
            len: r.len() as u64,
            in_seg: if self.layout.is_some() { 0 } else { self.in_seg },
            in_off: in_off as u64,
            out_seg: if self.layout.is_some() { 0 } else { self.out_seg },
            out_off: out_off as u64,
            params_len: spec.params.len() as u64,
            params_seg: self.params_seg.as_ref().map_or(0, |s| s.id()),
            in_size: self.in_size as u32,
            out_size: self.out_size as u32,
            flags: self.flags,
            scratch_seg: self.scratch.as_ref().map_or(0, |(s, _)| s.seg.id()),
            scratch_off: self.scratch.as_ref().map_or(0, |&(_, stride)| stride as u64),
            zip_digest: self.zip_digest,
            ..Descriptor::default()
        }
    }

    /// Elements finished so far.
    pub(super) fn done_elems(&self) -> usize {
        self.done_elems
    }

    /// Whether every chunk has been filled.
    pub(super) fn all_filled(&self) -> bool {
        self.next == self.books.chunks.len()
    }

    /// Whether the map is over: nothing in flight, and everything filled or stopped.
    pub(super) fn complete(&self) -> bool {
        self.outstanding == 0 && (self.all_filled() || self.stop.is_some())
    }

    /// Whether a corruption was found (the caller must then call [`MapRun::finish`] at once).
    pub(super) fn corrupted(&self) -> bool {
        matches!(self.stop, Some(Stop::Corrupt(_)))
    }

    /// Stops the map with `e` (a panicking progress callback): nothing more is filled.
    pub(super) fn abort(&mut self, e: Error) {
        self.stop.get_or_insert(Stop::Map(e));
    }

    /// One step under the ring lock: take finished chunks into `output`, then fill free slots
    /// from `input` (or withdraw ours after an error). Returns how many chunks it filled.
    /// A lock that cannot be taken for long is recorded as corruption.
    pub(super) fn step(&mut self, spec: Option<&KernelSpec>, input: &Input<'_>, output: &mut Output<'_>) -> usize {
        match self.shared.ring.lock() {
            Ok(mut g) => {
                self.shared.lock_failing.store(0, Ordering::Relaxed);
                self.shared.reap_orphans(&mut g);
                self.collect(&mut g, output);
                let filled = match spec {
                    Some(spec) => self.fill(&mut g, spec, input),
                    None => 0,
                };
                self.set_wanted(&mut g);
                drop(g);
                self.watch_spinner();
                filled
            }
            // A holder that is stopped (SIGSTOP, a debugger), not dead: a dead one releases the
            // lock through EOWNERDEAD. Keep waiting while chunks are in flight, but not forever:
            // past LOCK_TIMEOUT more the ring counts as broken.
            Err(Error::LockTimeout(t)) => {
                let now = crate::sync::now_us().max(1);
                let since =
                    match self.shared.lock_failing.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => now,
                        Err(v) => v,
                    };
                let failing = Duration::from_micros(now.saturating_sub(since));
                if failing >= LOCK_TIMEOUT {
                    self.stop = Some(Stop::Corrupt(Error::LockTimeout(t + failing)));
                }
                0
            }
            Err(e) => {
                self.stop = Some(Stop::Corrupt(e));
                0
            }
        }
    }

    /// Wakes workers for `filled` new chunks.
    pub(super) fn wake_workers(&mut self, filled: usize) {
        let hdr = self.shared.ring.header();
        if filled == 0 {
            return;
        }
        // One chunk and a spinning worker: it will see the bump; waking the sleepers too would
        // only make one of them spin as well (three busy processes on two cores is what makes
        // the latency tail). Otherwise wake everyone. The spinner may have been stopped
        // (SIGSTOP, a debugger) while it held its token: `watch_spinner` checks its heartbeat
        // if the chunk is not taken soon (nothing is read for that here, on the fast path).
        let spinner = hdr.spinner.load(Ordering::SeqCst);
        if filled == 1 && spinner != 0 && lock(&self.shared.pids).contains(&spinner) {
            hdr.work.bump();
            self.relies_on_spinner = true;
        } else {
            if spinner != 0 {
                self.shared.ring.take_over_stale_spinner(crate::sync::now_us(), SPINNER_STALE_US);
            }
            hdr.work.ring();
        }
    }

    /// After a bump for the spinner: when a wait for our chunks ended without news while a
    /// chunk of ours still waits for a worker (FILLED), and the spinner has not polled for
    /// [`SPINNER_STALE_US`], take its token over and wake the sleepers. Stops watching once no
    /// chunk of ours waits. Costs nothing while the spinner takes chunks promptly.
    fn watch_spinner(&mut self) {
        if !self.relies_on_spinner {
            return;
        }
        if !self.waiting_chunks {
            self.relies_on_spinner = false;
            return;
        }
        if !std::mem::take(&mut self.quiet_wait) {
            return;
        }
        let ring = &self.shared.ring;
        let taken = ring.take_over_stale_spinner(crate::sync::now_us(), SPINNER_STALE_US).is_some();
        if taken || ring.header().spinner.load(Ordering::SeqCst) == 0 {
            // Taken over, or the token went back since: wake whoever can take the chunk.
            self.relies_on_spinner = false;
            ring.header().work.ring();
        }
    }

    /// Records how a wait for our chunks ended (`news`: the done bell moved).
    pub(super) fn waited(&mut self, news: bool) {
        if !news {
            self.quiet_wait = true;
        }
    }

    /// Whether a waiting caller should wait in short slices: while it relies on the spinner
    /// (see [`MapRun::watch_spinner`]).
    pub(super) fn short_waits(&self) -> bool {
        self.relies_on_spinner
    }

    /// Wake me when half the ring is ready to refill, or when the map is complete; with other
    /// maps in flight, at every finished chunk (the bell is shared).
    fn set_wanted(&self, g: &mut RingGuard<'_>) {
        let wanted = if self.shared.active.load(Ordering::Relaxed) > 1 {
            1
        } else if !self.all_filled() {
            (self.shared.ring.slots() / 2).max(1) as usize
        } else {
            self.outstanding
        };
        g.set_wanted(wanted.min(self.outstanding.max(1)).max(1) as u32);
    }

    /// Fills free slots with the next chunks (up to this map's fair share), or withdraws
    /// FILLED ones after an error. Returns how many it filled.
    fn fill(&mut self, g: &mut RingGuard<'_>, spec: &KernelSpec, input: &Input<'_>) -> usize {
        match self.stop {
            Some(Stop::Corrupt(_)) => return 0,
            Some(Stop::Map(_)) => {
                self.withdraw_all(g);
                return 0;
            }
            None => {}
        }
        let share = (self.shared.ring.slots() as usize / self.shared.active.load(Ordering::Relaxed).max(1)).max(1);
        let mut filled = 0;
        while !self.all_filled() && self.outstanding < share {
            let r = self.books.chunks[self.next].clone();
            let d = self.describe(spec, &r);
            let params_inline = self.params_seg.is_none();
            let src = match input {
                Input::Inline(i) if self.layout.is_some() => Some(&i[r.start * self.in_size..r.end * self.in_size]),
                _ => None,
            };
            let Some((slot, sealed)) = g.fill(&d, |p| {
                if params_inline {
                    p[..spec.params.len()].copy_from_slice(&spec.params);
                }
                if let Some(src) = src {
                    let at = d.in_off as usize;
                    p[at..at + src.len()].copy_from_slice(src);
                }
            }) else {
                break;
            };
            if self.books.inflight[slot as usize].is_some() {
                // The ring handed out a slot we hold: its state word was overwritten.
                self.corrupt(slot, "a slot of this map was found FREE".into());
                return filled;
            }
            self.books.inflight[slot as usize] = Some((self.next, sealed));
            self.next += 1;
            self.outstanding += 1;
            filled += 1;
        }
        filled
    }

    /// Withdraws every FILLED slot of ours; CLAIMED and DONE ones stay outstanding.
    pub(super) fn withdraw_all(&mut self, g: &mut RingGuard<'_>) {
        for slot in 0..self.books.inflight.len() {
            if self.books.inflight[slot].is_some() && g.withdraw(slot as u32) {
                self.books.inflight[slot] = None;
                self.outstanding -= 1;
            }
        }
    }

    /// Ends the map: on corruption kill and reap every worker first (so that none can still
    /// write our buffers), mark the pool broken; give the bookkeeping back; return the outcome.
    pub(super) fn finish(mut self) -> Result<()> {
        let outcome = match self.stop.take() {
            None => Ok(()),
            Some(Stop::Map(e)) => Err(e),
            Some(Stop::Corrupt(e)) => {
                self.shared.fail(Error::PoolBroken { reason: e.broken_reason() });
                self.pool.stop(STATE_TERMINATED);
                Err(e)
            }
        };
        if let Some((s, _)) = self.scratch.take() {
            // The map is over (or its workers are dead): no worker can touch it any more.
            self.pool.give_back(s);
        }
        let books = std::mem::take(&mut self.books);
        let mut spare = lock(&self.shared.books);
        if spare.len() < MAX_SPARE_BOOKS {
            spare.push(books);
        }
        outcome
    }

    /// Hands the slots still in flight to the pool's orphan list (a dropped ticket): whoever
    /// takes the ring lock next frees them once their workers are done with them. Returns
    /// whether any was still in flight (then workers may still write the map's buffers).
    pub(super) fn orphan(mut self) -> bool {
        if let Ok(mut g) = self.shared.ring.lock() {
            self.withdraw_all(&mut g);
        }
        let in_flight = self.outstanding > 0;
        if in_flight {
            // Workers may still write it: never recycled (dropped: their mappings stay valid).
            drop(self.scratch.take());
            let mut orphans = lock(&self.shared.orphans);
            for (slot, entry) in self.books.inflight.iter().enumerate() {
                if let Some((_, d)) = entry {
                    orphans.push((slot as u32, *d));
                }
            }
            self.shared.orphan_count.store(orphans.len(), Ordering::SeqCst);
        }
        if !self.corrupted() {
            self.stop = None;
        }
        let _ = self.finish();
        in_flight
    }
}

/// Most recycled bookkeeping sets the pool keeps.
const MAX_SPARE_BOOKS: usize = 64;
