//! Streaming maps over an iterator of batches: [`Pool::imap`] (results in input order) and
//! [`Pool::imap_unordered`] (results as batches finish). Both pull the iterator lazily and keep
//! a bounded number of batches in flight ([`crate::PoolBuilder::imap_in_flight`]), so the
//! workers stay busy across batch boundaries and an endless iterator runs in bounded memory.
//! An error surfaces at its batch; the stream goes on. Dropping the iterator early drops its
//! tickets: what has not started is withdrawn, what runs is discarded when done, and the pool
//! stays usable.
#![deny(unsafe_code)]

use bytemuck::Pod;
use std::collections::VecDeque;
use std::iter::Fuse;

use super::{drive, Pool, Ticket};
use crate::array::Input;
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;

/// How many batches to keep in flight: the configured number, capped at half the ring so that
/// finished batches waiting to be taken never starve new ones of slots.
fn in_flight(pool: &Pool) -> usize {
    pool.shared.cfg.imap_in_flight.clamp(1, (pool.shared.ring.slots() as usize / 2).max(1))
}

/// What both streams share: the lazily pulled batches, the kernel, and the in-flight bound.
struct Feed<'p, I: Iterator> {
    pool: &'p Pool,
    batches: Fuse<I>,
    /// A batch pulled from the iterator but not yet submitted (the ring was full).
    deferred: Option<I::Item>,
    /// The kernel; `None` if it could not be made, then `error` says why (yielded once, then
    /// the stream ends).
    spec: Option<KernelSpec>,
    error: Option<Error>,
    limit: usize,
}

impl<'p, B: Input, I: Iterator<Item = B>> Feed<'p, I> {
    fn new(pool: &'p Pool, batches: I, spec: Result<KernelSpec>) -> Self {
        let (spec, error) = match spec {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        Feed { pool, batches: batches.fuse(), deferred: None, spec, error, limit: in_flight(pool) }
    }

    /// Submits the next batch while fewer than `limit` are `pending`. `None` when the iterator
    /// is exhausted, or when the ring is full while batches of ours are in flight (the batch
    /// is kept for later: take the oldest result first).
    fn submit_next<Out: Pod>(&mut self, pending: usize) -> Option<Result<Ticket<'p, Out>>> {
        if pending >= self.limit {
            return None;
        }
        let Some(spec) = &self.spec else { return self.error.take().map(Err) };
        let batch = self.deferred.take().or_else(|| self.batches.next())?;
        let r = batch.sources().and_then(|srcs| self.pool.submit_sources(&srcs, spec, pending > 0));
        match r {
            Err(Error::RingFull { .. }) if pending > 0 => {
                self.deferred = Some(batch);
                None
            }
            r => Some(r),
        }
    }
}

/// The iterator [`Pool::imap`] returns.
#[must_use = "iterators are lazy: nothing is submitted until it is polled"]
pub struct Imap<'p, Out: Pod, I: Iterator> {
    feed: Feed<'p, I>,
    pending: VecDeque<Result<Ticket<'p, Out>>>,
}

/// The iterator [`Pool::imap_unordered`] returns.
#[must_use = "iterators are lazy: nothing is submitted until it is polled"]
pub struct ImapUnordered<'p, Out: Pod, I: Iterator> {
    feed: Feed<'p, I>,
    pending: Vec<Ticket<'p, Out>>,
}

impl<'p, Out: Pod, B: Input, I: Iterator<Item = B>> Imap<'p, Out, I> {
    pub(super) fn new(pool: &'p Pool, batches: I, spec: Result<KernelSpec>) -> Self {
        Imap { feed: Feed::new(pool, batches, spec), pending: VecDeque::new() }
    }
}

impl<'p, Out: Pod, B: Input, I: Iterator<Item = B>> ImapUnordered<'p, Out, I> {
    pub(super) fn new(pool: &'p Pool, batches: I, spec: Result<KernelSpec>) -> Self {
        ImapUnordered { feed: Feed::new(pool, batches, spec), pending: Vec::new() }
    }
}

impl<'p, Out: Pod, B: Input, I: Iterator<Item = B>> Iterator for Imap<'p, Out, I> {
    type Item = Result<Vec<Out>>;

    fn next(&mut self) -> Option<Self::Item> {
        // A batch that cannot be submitted keeps its place: its error comes in order.
        while let Some(r) = self.feed.submit_next(self.pending.len()) {
            self.pending.push_back(r);
        }
        Some(self.pending.pop_front()?.and_then(Ticket::wait))
    }
}

impl<'p, Out: Pod, B: Input, I: Iterator<Item = B>> Iterator for ImapUnordered<'p, Out, I> {
    type Item = Result<Vec<Out>>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(r) = self.feed.submit_next(self.pending.len()) {
            match r {
                Ok(t) => self.pending.push(t),
                Err(e) => return Some(Err(e)),
            }
        }
        if self.pending.is_empty() {
            return None;
        }
        let shared = &self.feed.pool.shared;
        loop {
            let seen = shared.ring.header().done.seq();
            for i in 0..self.pending.len() {
                if let Some(r) = self.pending[i].try_wait().transpose() {
                    drop(self.pending.swap_remove(i));
                    return Some(r);
                }
            }
            // Small batches: wait as the pool's strategy says for a small map.
            drive::wait_done(shared, seen, true, None, false);
        }
    }
}
