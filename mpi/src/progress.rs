//! Progress across ranks: every rank but 0 sends its count of elements done to rank 0 at most
//! every [`REPORT_EVERY`] and once at the end; rank 0 gathers them as it maps its own slice
//! and calls the user's callback with the sum.

use std::time::{Duration, Instant};

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::Progress;

/// Message tags on the map's private communicator.
const TAG_PROGRESS: i32 = 1;
const TAG_FINAL: i32 = 2;
/// A rank whose own map failed asks the others to stop theirs (its status makes the job fail
/// anyway): an 8-byte message, sent eagerly (and so without waiting for a receive) by every MPI.
const TAG_STOP: i32 = 3;
/// How often a rank reports its progress to rank 0.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// One rank's side of the progress reports of one map.
pub(crate) struct Reporter<'c, 'p> {
    comm: &'c SimpleCommunicator,
    rank: usize,
    /// Whether rank 0 shows progress (when it does not, nobody sends anything).
    reporting: bool,
    total: usize,
    /// Rank 0: each rank's last count; whether each rank sent its final one.
    seen: Vec<usize>,
    finals: Vec<bool>,
    last_shown: Option<Instant>,
    last_sent: Instant,
    /// This rank's elements done.
    mine: usize,
    /// Whether another rank asked this one to stop its map.
    stopped: bool,
    callback: Option<&'p mut dyn FnMut(Progress)>,
}

impl<'c, 'p> Reporter<'c, 'p> {
    pub(crate) fn new(
        comm: &'c SimpleCommunicator,
        reporting: bool,
        total: usize,
        callback: Option<&'p mut dyn FnMut(Progress)>,
    ) -> Reporter<'c, 'p> {
        let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
        let mut finals = vec![false; ranks];
        finals[0] = true;
        Reporter {
            comm,
            rank,
            reporting,
            total,
            seen: vec![0; ranks],
            finals,
            last_shown: None,
            last_sent: Instant::now(),
            mine: 0,
            stopped: false,
            callback,
        }
    }

    #[cfg(feature = "testing")]
    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    /// This rank's elements done, as last reported by its map.
    pub(crate) fn mine(&self) -> usize {
        self.mine
    }

    /// This rank's map has done `done` elements of its slice.
    pub(crate) fn tick(&mut self, done: usize) {
        self.mine = done;
        if self.rank == 0 {
            self.gather(false);
        } else if self.reporting && self.last_sent.elapsed() >= REPORT_EVERY {
            self.last_sent = Instant::now();
            self.comm.process_at_rank(0).send_with_tag(&(done as u64), TAG_PROGRESS);
        }
    }

    /// Whether another rank's map failed and it asked the others to stop (a stop that has
    /// arrived is received here).
    pub(crate) fn stop_requested(&mut self) -> bool {
        if !self.stopped {
            if let Some((msg, _)) = self.comm.any_process().immediate_matched_probe_with_tag(TAG_STOP) {
                let mut word = 0u64;
                let _ = msg.matched_receive_into(&mut word);
                self.stopped = true;
            }
        }
        self.stopped
    }

    /// This rank's own map failed: every other rank is asked to stop its map.
    pub(crate) fn stop_the_others(&self) {
        for r in (0..self.seen.len()).filter(|&r| r != self.rank) {
            self.comm.process_at_rank(r as i32).send_with_tag(&1u64, TAG_STOP);
        }
    }

    /// This rank's map ended with `mine` elements done: the others send their final count;
    /// rank 0 keeps reporting until it has every rank's.
    pub(crate) fn finish(&mut self, mine: usize) {
        self.mine = mine;
        if !self.reporting {
            return;
        }
        if self.rank != 0 {
            self.comm.process_at_rank(0).send_with_tag(&(mine as u64), TAG_FINAL);
            return;
        }
        let mut nap = Duration::from_micros(100);
        while !self.finals.iter().all(|&f| f) {
            self.gather(false);
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(10));
        }
        self.gather(true);
    }

    /// Rank 0: receives the reports that arrived and shows the sum when it is time (`force`:
    /// now).
    fn gather(&mut self, force: bool) {
        if !self.reporting || self.rank != 0 {
            return;
        }
        let probe = || {
            let any = self.comm.any_process();
            any.immediate_matched_probe_with_tag(TAG_PROGRESS)
                .or_else(|| any.immediate_matched_probe_with_tag(TAG_FINAL))
        };
        while let Some((msg, status)) = probe() {
            let mut done = 0u64;
            let _ = msg.matched_receive_into(&mut done);
            let from = status.source_rank() as usize;
            if let Some(s) = self.seen.get_mut(from) {
                *s = done as usize;
            }
            if status.tag() == TAG_FINAL {
                if let Some(f) = self.finals.get_mut(from) {
                    *f = true;
                }
            }
        }
        self.seen[0] = self.mine;
        if force || self.last_shown.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            self.last_shown = Some(Instant::now());
            let done = self.seen.iter().sum::<usize>().min(self.total);
            if let Some(cb) = self.callback.as_mut() {
                cb(Progress { done, total: self.total });
            }
        }
    }
}
