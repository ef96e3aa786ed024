//! One map's life: cut the index range into chunks, fill slots, wake workers, wait, take each
//! finished chunk exactly once, refill, and leave only when no worker can touch the map's
//! buffers any more.
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
#![deny(unsafe_code)]

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Pool, Shared, STATE_STOPPING, STATE_TERMINATED};
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::ring::layout::{params_inline, InlineLayout};
use crate::ring::{index, Descriptor, Observed, RingGuard, Status, LOCK_TIMEOUT};
use crate::shm::Segment;

/// How long the map caller sleeps between health checks while waiting for chunks.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Maps with at most this many elements spin briefly for results instead of sleeping, and
/// travel inline when they fit.
const SMALL_MAP: usize = 1 << 16;
/// Inline maps use at most this many slots' payloads.
const INLINE_SLOTS: usize = 4;
/// How long a slot of ours may name a claimer that is not one of the pool's workers before it
/// counts as corrupted (a new worker may claim a chunk a moment before its pid is published).
const UNKNOWN_CLAIMER_GRACE: Duration = Duration::from_secs(1);
/// How often the caller checks claimers against the live workers.
const CLAIMER_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Where a map's input and output live.
pub(super) enum Io<'a> {
    /// Plain memory of the caller; chunks travel inline in the slots.
    Inline { input: &'a [u8], output: &'a mut [u8] },
    /// Shared segments, read and written in place (byte offset 0 of each data area).
    Shared { input: &'a Arc<Segment>, output: &'a Arc<Segment> },
}

/// The parameter block bytes that travel inline (none when they go in their own segment).
fn inline_params(shared: &Shared, spec: &KernelSpec) -> usize {
    if params_inline(spec.params.len(), shared.ring.payload_cap()) {
        spec.params.len()
    } else {
        0
    }
}

/// Whether a map of `len` elements travels inline in at most [`INLINE_SLOTS`] slots.
pub(super) fn fits_inline(shared: &Shared, len: usize, spec: &KernelSpec) -> bool {
    let cap = shared.ring.payload_cap();
    InlineLayout::new(cap, inline_params(shared, spec), spec.in_size, spec.out_size)
        .is_some_and(|l| len <= SMALL_MAP && len <= l.max_len().saturating_mul(INLINE_SLOTS))
}

/// Why a map stopped early.
enum Stop {
    /// An error of the map alone (a kernel panic, a crash after `max_attempts`, a timeout):
    /// collect what is in flight, then return it. The pool stays usable.
    Map(Error),
    /// The ring or a slot is corrupted: kill every worker, then return it. The pool is broken.
    Corrupt(Error),
}

pub(super) struct MapRun<'p, 'io> {
    pool: &'p Pool,
    shared: &'p Shared,
    spec: &'p KernelSpec,
    map_id: u64,
    len: usize,
    io: Io<'io>,
    chunks: Vec<Range<usize>>,
    /// Next chunk to fill.
    next: usize,
    /// Per slot: the chunk this map put there and the descriptor it sealed, or `None`.
    inflight: Vec<Option<(usize, Descriptor)>>,
    outstanding: usize,
    /// Per chunk: finished (each chunk finishes exactly once).
    finished: Vec<bool>,
    done_elems: usize,
    stop: Option<Stop>,
    layout: Option<InlineLayout>,
    /// A parameter block too large for the payload, in its own segment (kept for the map).
    params_seg: Option<Arc<Segment>>,
    in_seg: u64,
    out_seg: u64,
    /// Per slot: since when it has named a claimer that is not a live worker.
    unknown_claimer: Vec<Option<Instant>>,
    last_claimer_check: Instant,
}

impl<'p, 'io> MapRun<'p, 'io> {
    pub(super) fn new(pool: &'p Pool, spec: &'p KernelSpec, map_id: u64, len: usize, io: Io<'io>) -> Result<Self> {
        let shared = &*pool.shared;
        let cfg = &shared.cfg;
        let cap = shared.ring.payload_cap();
        let params_seg = if params_inline(spec.params.len(), cap) {
            None
        } else {
            let seg = Arc::new(Segment::create_filled(&spec.params)?);
            shared.register(&seg);
            Some(seg)
        };
        let (layout, in_seg, out_seg, max_len, max_bytes) = match &io {
            Io::Inline { .. } => {
                let l = InlineLayout::new(cap, inline_params(shared, spec), spec.in_size, spec.out_size)
                    .expect("fits_inline checked the layout");
                (Some(l), 0, 0, l.max_len(), index::MAX_CHUNK_BYTES)
            }
            Io::Shared { input, output } => {
                shared.register(input);
                shared.register(output);
                let file = input.file_area().is_some() || output.file_area().is_some();
                let max_bytes = if file { index::MAX_FILE_CHUNK_BYTES } else { index::MAX_CHUNK_BYTES };
                (None, input.id(), output.id(), usize::MAX, max_bytes)
            }
        };
        let chunks = index::plan(len, cfg.workers, spec.in_size + spec.out_size, cfg.chunk_len, max_len, max_bytes);
        let slots = shared.ring.slots() as usize;
        Ok(MapRun {
            pool,
            shared,
            spec,
            map_id,
            len,
            io,
            finished: vec![false; chunks.len()],
            chunks,
            next: 0,
            inflight: vec![None; slots],
            outstanding: 0,
            done_elems: 0,
            stop: None,
            layout,
            params_seg,
            in_seg,
            out_seg,
            unknown_claimer: vec![None; slots],
            last_claimer_check: Instant::now(),
        })
    }

    fn describe(&self, r: &Range<usize>) -> Descriptor {
        let spec = self.spec;
        let (in_off, out_off) = match &self.layout {
            Some(l) => (l.in_off(), l.out_off(r.len())),
            // No overflow: start * size <= len * size, which fit when the arrays were made.
            None => (r.start * spec.in_size, r.start * spec.out_size),
        };
        Descriptor {
            map_id: self.map_id,
            kernel_addr: spec.kernel.parts().0,
            kernel_tag: spec.kernel.parts().1,
            start: r.start as u64,
            len: r.len() as u64,
            in_seg: self.in_seg,
            in_off: in_off as u64,
            out_seg: self.out_seg,
            out_off: out_off as u64,
            params_len: spec.params.len() as u64,
            params_seg: self.params_seg.as_ref().map_or(0, |s| s.id()),
            in_size: spec.in_size as u32,
            out_size: spec.out_size as u32,
            ..Descriptor::default()
        }
    }

    /// Drives the map to its end. `progress` is called with the number of elements done.
    pub(super) fn drive(mut self, mut progress: Option<&mut dyn FnMut(usize)>) -> Result<()> {
        let ring = &self.shared.ring;
        let hdr = ring.header();
        let spin = if self.len <= SMALL_MAP { self.shared.cfg.spin } else { Duration::ZERO };
        let mut reported = 0;
        let mut callback_panic = None;
        let mut lock_failing_since: Option<Instant> = None;
        loop {
            let seen = hdr.done.seq();
            let mut filled = 0;
            match ring.lock() {
                Ok(mut g) => {
                    lock_failing_since = None;
                    self.collect(&mut g);
                    filled = self.refill(&mut g);
                }
                // A holder that is stopped (SIGSTOP, a debugger), not dead: a dead one releases
                // the lock through EOWNERDEAD. Keep waiting while chunks are in flight, but not
                // forever: past LOCK_TIMEOUT more the ring counts as broken.
                Err(Error::LockTimeout(t)) => {
                    let since = *lock_failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= LOCK_TIMEOUT {
                        self.stop = Some(Stop::Corrupt(Error::LockTimeout(t + since.elapsed())));
                    }
                }
                Err(e) => self.stop = Some(Stop::Corrupt(e)),
            }
            if let Some(Stop::Corrupt(_)) = &self.stop {
                return self.fail_corrupt(callback_panic);
            }
            if filled > 0 {
                // One chunk and a spinning worker: it will see the bump; waking the sleepers
                // too would only make one of them spin as well (three busy processes on two
                // cores is what makes the latency tail). Otherwise wake everyone.
                if filled == 1 && hdr.spinner.load(Ordering::SeqCst) != 0 {
                    hdr.work.bump();
                } else {
                    hdr.work.ring();
                }
            }
            if let Some(p) = progress.as_mut() {
                if self.done_elems != reported && callback_panic.is_none() {
                    reported = self.done_elems;
                    // A panicking callback must not unwind past chunks that workers are still
                    // writing: stop the map as for any error, then resume the panic.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p(reported)));
                    if let Err(payload) = r {
                        callback_panic = Some(payload);
                        self.stop.get_or_insert(Stop::Map(Error::Cancelled));
                    }
                }
            }
            if self.outstanding == 0 && (self.next == self.chunks.len() || self.stop.is_some()) {
                break;
            }
            // Cancelled from another thread, or the supervisor gave up: leave once every
            // worker is reaped, never before (they could still write our buffers).
            let state = self.shared.state.load(Ordering::SeqCst);
            let gave_up = self.shared.failure().is_some();
            if state >= STATE_STOPPING || gave_up {
                if self.shared.reaped.load(Ordering::Acquire) {
                    if let Ok(mut g) = ring.lock() {
                        self.withdraw_all(&mut g);
                    }
                    if let Some(payload) = callback_panic {
                        std::panic::resume_unwind(payload);
                    }
                    return Err(match self.shared.failure() {
                        Some(reason) => Error::PoolBroken { reason },
                        None if state == STATE_TERMINATED => Error::Cancelled,
                        None => Error::PoolClosed,
                    });
                }
                if state == STATE_STOPPING {
                    // A graceful stop (`Drop`, `join`) never overlaps a map; if it ever did,
                    // workers would exit with our chunks FILLED: escalate to killing them.
                    self.shared.state.fetch_max(STATE_TERMINATED, Ordering::SeqCst);
                    self.shared.poke();
                }
            }
            hdr.done.wait(seen, spin, WAIT_SLICE);
        }
        if let Some(payload) = callback_panic {
            std::panic::resume_unwind(payload);
        }
        match self.stop.take() {
            None => Ok(()),
            Some(Stop::Map(e) | Stop::Corrupt(e)) => Err(e),
        }
    }

    /// Takes every finished chunk of ours; checks every slot of ours and every slot posing as
    /// one. Records corruption in `self.stop`.
    fn collect(&mut self, g: &mut RingGuard<'_>) {
        if self.shared.ring.corruption_reported() {
            return self.corrupt(u32::MAX, "a worker's claim was overwritten while its kernel ran".into());
        }
        let check_claimers = self.last_claimer_check.elapsed() >= CLAIMER_CHECK_EVERY;
        let pids = if check_claimers {
            self.last_claimer_check = Instant::now();
            super::lock(&self.shared.pids).clone()
        } else {
            Vec::new()
        };
        for slot in 0..self.inflight.len() {
            let Some((chunk, sealed)) = self.inflight[slot] else { continue };
            match g.observe(slot as u32) {
                Observed::Waiting => {
                    self.unknown_claimer[slot] = None;
                    continue;
                }
                Observed::Running(pid) => {
                    if check_claimers {
                        if pids.contains(&pid) {
                            self.unknown_claimer[slot] = None;
                        } else if self.unknown_claimer[slot].get_or_insert_with(Instant::now).elapsed()
                            >= UNKNOWN_CLAIMER_GRACE
                        {
                            return self
                                .corrupt(slot as u32, format!("a slot of this map names claimer {pid}, not a worker"));
                        }
                    }
                    continue;
                }
                Observed::Corrupt(raw) => {
                    return self.corrupt(
                        slot as u32,
                        format!("a slot of this map holds state {raw} (not FILLED, CLAIMED or DONE)"),
                    );
                }
                Observed::Done => {}
            }
            let range = self.chunks[chunk].clone();
            let (spec, layout) = (self.spec, self.layout);
            let output = match &mut self.io {
                Io::Inline { output, .. } => Some(&mut output[range.start * spec.out_size..range.end * spec.out_size]),
                Io::Shared { .. } => None,
            };
            let mut copied = true;
            let taken = g.take(slot as u32, &sealed, |payload| {
                if let (Some(out), Some(l)) = (output, layout) {
                    let at = l.out_off(range.len());
                    match payload.get(at..at + l.out_bytes(range.len())) {
                        Some(src) if src.len() == out.len() => out.copy_from_slice(src),
                        _ => copied = false,
                    }
                }
            });
            let taken = match taken {
                Ok(t) if copied => t,
                Ok(_) => return self.corrupt(slot as u32, "inline result outside the payload".into()),
                Err(reason) => return self.corrupt(slot as u32, reason),
            };
            self.inflight[slot] = None;
            self.unknown_claimer[slot] = None;
            self.outstanding -= 1;
            if std::mem::replace(&mut self.finished[chunk], true) {
                return self.corrupt(slot as u32, format!("chunk {chunk} finished twice"));
            }
            let err = match taken.status {
                Status::Ok => {
                    self.done_elems += range.len();
                    continue;
                }
                Status::Panicked => Stop::Map(Error::KernelPanicked { message: taken.message, range }),
                Status::Crashed => {
                    Stop::Map(Error::WorkerCrashed { range, signal: taken.signal as i32, attempts: taken.attempt })
                }
                Status::TimedOut => {
                    Stop::Map(Error::ChunkTimedOut { range, limit: self.shared.cfg.chunk_timeout.unwrap_or_default() })
                }
                Status::Corrupt => Stop::Corrupt(Error::CorruptSlot { slot: slot as u32, reason: taken.message }),
            };
            if !matches!(self.stop, Some(Stop::Corrupt(_))) && (self.stop.is_none() || matches!(err, Stop::Corrupt(_)))
            {
                self.stop = Some(err);
            }
        }
        let inflight = &self.inflight;
        if let Some(slot) = g.foreign_done(self.map_id, |s| inflight[s as usize].is_some()) {
            self.corrupt(slot, "a slot this map did not fill poses as one of its finished chunks".into());
        }
    }

    fn corrupt(&mut self, slot: u32, reason: String) {
        if !matches!(self.stop, Some(Stop::Corrupt(_))) {
            self.stop = Some(Stop::Corrupt(Error::CorruptSlot { slot, reason }));
        }
    }

    /// Fills free slots with the next chunks, or withdraws FILLED ones after an error.
    /// Returns how many it filled.
    fn refill(&mut self, g: &mut RingGuard<'_>) -> usize {
        let mut filled = 0;
        match self.stop {
            Some(Stop::Corrupt(_)) => return 0,
            Some(Stop::Map(_)) => self.withdraw_all(g),
            None => {
                while self.next < self.chunks.len() {
                    let r = self.chunks[self.next].clone();
                    let d = self.describe(&r);
                    let (spec, params_inline) = (self.spec, self.params_seg.is_none());
                    let input = match &self.io {
                        Io::Inline { input, .. } => Some(&input[r.start * spec.in_size..r.end * spec.in_size]),
                        Io::Shared { .. } => None,
                    };
                    let Some((slot, sealed)) = g.fill(&d, |p| {
                        if params_inline {
                            p[..spec.params.len()].copy_from_slice(&spec.params);
                        }
                        if let Some(src) = input {
                            let at = d.in_off as usize;
                            p[at..at + src.len()].copy_from_slice(src);
                        }
                    }) else {
                        break;
                    };
                    if self.inflight[slot as usize].is_some() {
                        // The ring handed out a slot we hold: its state word was overwritten.
                        self.corrupt(slot, "a slot of this map was found FREE".into());
                        return filled;
                    }
                    self.inflight[slot as usize] = Some((self.next, sealed));
                    self.next += 1;
                    self.outstanding += 1;
                    filled += 1;
                }
            }
        }
        // Wake me when half the ring is ready to refill, or when the map is complete.
        let refill =
            if self.next < self.chunks.len() { (self.shared.ring.slots() / 2).max(1) as usize } else { usize::MAX };
        g.set_wanted(self.outstanding.min(refill).max(1) as u32);
        filled
    }

    /// Withdraws every FILLED slot of ours; CLAIMED and DONE ones stay outstanding.
    fn withdraw_all(&mut self, g: &mut RingGuard<'_>) {
        for slot in 0..self.inflight.len() {
            if self.inflight[slot].is_some() && g.withdraw(slot as u32) {
                self.inflight[slot] = None;
                self.outstanding -= 1;
            }
        }
    }

    /// Corruption: kill and reap every worker, so that none can still write our buffers, mark
    /// the pool broken, and return the error.
    fn fail_corrupt(mut self, callback_panic: Option<Box<dyn std::any::Any + Send>>) -> Result<()> {
        let Some(Stop::Corrupt(e)) = self.stop.take() else { unreachable!("called on corruption only") };
        self.shared.fail(Error::PoolBroken { reason: e.to_string() });
        self.pool.stop(STATE_TERMINATED);
        if let Some(payload) = callback_panic {
            std::panic::resume_unwind(payload);
        }
        Err(e)
    }
}
