//! Collecting a map's finished chunks: every slot of ours is checked against the caller's
//! private record (state, claimer, descriptor, completion stamp) before its result is taken,
//! each chunk exactly once; anything else is corruption, recorded in the map's `stop`.
#![deny(unsafe_code)]

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{MapRun, Output, Stop, CLAIMER_CHECK_EVERY, UNKNOWN_CLAIMER_GRACE};
use crate::error::Error;
use crate::pool::lock;
use crate::ring::{Observed, RingGuard, Sealed, Status};

impl MapRun<'_> {
    /// Takes every finished chunk of ours; checks every slot of ours and every slot posing as
    /// one. Records corruption in `self.stop`.
    pub(super) fn collect(&mut self, g: &mut RingGuard<'_>, output: &mut Output<'_>) {
        if let Some(what) = self.shared.ring.corruption_reported() {
            return self.corrupt(u32::MAX, what.into());
        }
        let check_claimers = self.outstanding > 0 && self.last_claimer_check.elapsed() >= CLAIMER_CHECK_EVERY;
        if check_claimers {
            self.last_claimer_check = Instant::now();
        }
        self.waiting_chunks = false;
        for slot in 0..self.books.inflight.len() {
            let Some((chunk, sealed)) = self.books.inflight[slot] else { continue };
            let done = match self.observe(g, slot, check_claimers) {
                ControlFlow::Break(()) => return,
                ControlFlow::Continue(done) => done,
            };
            if !done || matches!(output, Output::Hold) {
                continue;
            }
            if self.take_done(g, output, slot, chunk, &sealed).is_break() {
                return;
            }
        }
        let inflight = &self.books.inflight;
        if let Some(slot) = g.foreign_done(self.map_id, |s| inflight[s as usize].is_some()) {
            self.corrupt(slot, "a slot this map did not fill poses as one of its finished chunks".into());
        }
    }

    /// Checks a slot of ours: finished (`true`), waiting, or claimed by a live worker (a
    /// claimer that is not one for [`UNKNOWN_CLAIMER_GRACE`] is corruption). Breaks on
    /// corruption.
    fn observe(&mut self, g: &mut RingGuard<'_>, slot: usize, check_claimers: bool) -> ControlFlow<(), bool> {
        match g.observe(slot as u32) {
            Observed::Waiting => {
                self.books.unknown_claimer[slot] = None;
                self.waiting_chunks = true;
            }
            Observed::Running(pid) if check_claimers => {
                if lock(&self.shared.pids).contains(&pid) {
                    self.books.unknown_claimer[slot] = None;
                } else if self.books.unknown_claimer[slot].get_or_insert_with(Instant::now).elapsed()
                    >= UNKNOWN_CLAIMER_GRACE
                {
                    self.corrupt(slot as u32, format!("a slot of this map names claimer {pid}, not a worker"));
                    return ControlFlow::Break(());
                }
            }
            Observed::Running(_) => {}
            Observed::Done => return ControlFlow::Continue(true),
            Observed::Corrupt(raw) => {
                self.corrupt(
                    slot as u32,
                    format!("a slot of this map holds state {raw} (not FILLED, CLAIMED or DONE)"),
                );
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(false)
    }

    /// Takes the finished chunk `chunk` from `slot` (its inline result into `output`), frees
    /// the slot and records the chunk's outcome. Breaks on corruption.
    fn take_done(
        &mut self,
        g: &mut RingGuard<'_>,
        output: &mut Output<'_>,
        slot: usize,
        chunk: usize,
        sealed: &Sealed,
    ) -> ControlFlow<()> {
        let range = self.books.chunks[chunk].clone();
        let (out_size, layout) = (self.out_size, self.layout);
        let out = match output {
            Output::Inline(o) => o.get_mut(range.start * out_size..range.end * out_size),
            Output::Shared | Output::Hold => None,
        };
        let mut copied = true;
        let taken = g.take(slot as u32, sealed, |payload| {
            if let (Some(out), Some(l)) = (out, layout) {
                let at = l.out_off(range.len());
                match payload.get(at..at + l.out_bytes(range.len())) {
                    Some(src) if src.len() == out.len() => out.copy_from_slice(src),
                    _ => copied = false,
                }
            }
        });
        let taken = match taken {
            Ok(t) if copied => t,
            Ok(_) => return self.corrupt_break(slot as u32, "inline result outside the payload".into()),
            Err(reason) => return self.corrupt_break(slot as u32, reason),
        };
        self.books.inflight[slot] = None;
        self.books.unknown_claimer[slot] = None;
        self.outstanding -= 1;
        if self.shared.slot_waiters.load(Ordering::Relaxed) > 0 {
            // A slot is free again: wake whoever waits for one.
            self.shared.ring.header().done.ring();
        }
        if std::mem::replace(&mut self.books.finished[chunk], true) {
            return self.corrupt_break(slot as u32, format!("chunk {chunk} finished twice"));
        }
        let err = match taken.status {
            Status::Ok => {
                self.done_elems += range.len();
                return ControlFlow::Continue(());
            }
            Status::Panicked => Stop::Map(Error::KernelPanicked { message: taken.message, range }),
            Status::Crashed => {
                Stop::Map(Error::WorkerCrashed { range, signal: taken.signal as i32, attempts: taken.attempt })
            }
            Status::TimedOut => {
                Stop::Map(Error::ChunkTimedOut { range, limit: self.shared.cfg.chunk_timeout.unwrap_or_default() })
            }
            Status::Corrupt => Stop::Corrupt(Error::CorruptSlot { slot: slot as u32, reason: taken.message }),
            Status::Failed => match crate::kernel::Failure::error(&taken.message) {
                Some(e) => Stop::Map(e),
                None => Stop::Corrupt(Error::CorruptSlot {
                    slot: slot as u32,
                    reason: format!("unknown kernel failure code {:?}", taken.message),
                }),
            },
        };
        match (&self.stop, &err) {
            (None, _) | (Some(Stop::Map(_)), Stop::Corrupt(_)) => self.stop = Some(err),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn corrupt_break(&mut self, slot: u32, reason: String) -> ControlFlow<()> {
        self.corrupt(slot, reason);
        ControlFlow::Break(())
    }

    pub(super) fn corrupt(&mut self, slot: u32, reason: String) {
        if !self.corrupted() {
            self.stop = Some(Stop::Corrupt(Error::CorruptSlot { slot, reason }));
        }
    }
}
