//! Streaming maps over an iterator of batches: [`Pool::imap`] (results in input order) and
//! [`Pool::imap_unordered`] (results as batches finish). Both pull the iterator lazily and keep
//! a bounded number of batches in flight ([`crate::PoolBuilder::imap_in_flight`]), so the
//! workers stay busy across batch boundaries and an endless iterator runs in bounded memory.
//! An error surfaces at its batch; the stream goes on. Dropping the iterator early drops its
//! tickets: what has not started is withdrawn, what runs is discarded when done, and the pool
//! stays usable.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::iter::Fuse;
use std::marker::PhantomData;

use bytemuck::Pod;

use super::{drive, Pool, Ticket};
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;

/// How many batches to keep in flight: the configured number, capped at half the ring so that
/// finished batches waiting to be taken never starve new ones of slots.
fn in_flight(pool: &Pool) -> usize {
    pool.shared.cfg.imap_in_flight.clamp(1, (pool.shared.ring.slots() as usize / 2).max(1))
}

/// What both streams share: the lazily pulled batches, the kernel, and the in-flight bound.
struct Feed<'p, In, I: Iterator> {
    pool: &'p Pool,
    batches: Fuse<I>,
    /// A batch pulled from the iterator but not yet submitted (the ring was full).
    deferred: Option<I::Item>,
    spec: KernelSpec,
    limit: usize,
    _in: PhantomData<fn(In)>,
}

impl<'p, In: Pod, B: AsRef<[In]>, I: Iterator<Item = B>> Feed<'p, In, I> {
    fn new<Out: Pod>(
        pool: &'p Pool,
        batches: impl IntoIterator<IntoIter = I>,
        f: impl Fn(In) -> Out + Copy + 'static,
    ) -> Self {
        Feed {
            pool,
            batches: batches.into_iter().fuse(),
            deferred: None,
            spec: KernelSpec::elem(f),
            limit: in_flight(pool),
            _in: PhantomData,
        }
    }

    /// Submits the next batch while fewer than `limit` are `pending`. `None` when the iterator
    /// is exhausted, or when the ring is full while batches of ours are in flight (the batch
    /// is kept for later: take the oldest result first).
    fn submit_next<Out: Pod>(&mut self, pending: usize) -> Option<Result<Ticket<'p, Out>>> {
        if pending >= self.limit {
            return None;
        }
        let batch = self.deferred.take().or_else(|| self.batches.next())?;
        match self.pool.submit_inner(batch.as_ref(), &self.spec, pending > 0) {
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
pub struct Imap<'p, In, Out: Pod, I: Iterator> {
    feed: Feed<'p, In, I>,
    pending: VecDeque<Result<Ticket<'p, Out>>>,
}

/// The iterator [`Pool::imap_unordered`] returns.
#[must_use = "iterators are lazy: nothing is submitted until it is polled"]
pub struct ImapUnordered<'p, In, Out: Pod, I: Iterator> {
    feed: Feed<'p, In, I>,
    pending: Vec<Ticket<'p, Out>>,
}

impl Pool {
    /// Streams batches through the pool and yields each batch's results in input order
    /// (Python's `imap` over chunks), with up to `imap_in_flight` batches in flight.
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
    pub fn imap<In, Out, B, I, F>(&self, batches: I, f: F) -> Imap<'_, In, Out, I::IntoIter>
    where
        In: Pod,
        Out: Pod,
        B: AsRef<[In]>,
        I: IntoIterator<Item = B>,
        F: Fn(In) -> Out + Copy + 'static,
    {
        Imap { feed: Feed::new(self, batches, f), pending: VecDeque::new() }
    }

    /// Like [`Pool::imap`], but yields each batch's results as soon as it finishes, in any
    /// order (Python's `imap_unordered`).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let mut sums: Vec<f64> = pool
    ///     .imap_unordered((0..4).map(|b| vec![b as f64; 2]), |x: f64| x * 10.0)
    ///     .map(|r| r.map(|v| v.iter().sum()))
    ///     .collect::<shmpool::Result<_>>()?;
    /// sums.sort_by(f64::total_cmp);
    /// assert_eq!(sums, [0.0, 20.0, 40.0, 60.0]);
    /// # Ok(()) }
    /// ```
    pub fn imap_unordered<In, Out, B, I, F>(&self, batches: I, f: F) -> ImapUnordered<'_, In, Out, I::IntoIter>
    where
        In: Pod,
        Out: Pod,
        B: AsRef<[In]>,
        I: IntoIterator<Item = B>,
        F: Fn(In) -> Out + Copy + 'static,
    {
        ImapUnordered { feed: Feed::new(self, batches, f), pending: Vec::new() }
    }
}

impl<'p, In: Pod, Out: Pod, B: AsRef<[In]>, I: Iterator<Item = B>> Iterator for Imap<'p, In, Out, I> {
    type Item = Result<Vec<Out>>;

    fn next(&mut self) -> Option<Self::Item> {
        // A batch that cannot be submitted keeps its place: its error comes in order.
        while let Some(r) = self.feed.submit_next(self.pending.len()) {
            self.pending.push_back(r);
        }
        Some(self.pending.pop_front()?.and_then(Ticket::wait))
    }
}

impl<'p, In: Pod, Out: Pod, B: AsRef<[In]>, I: Iterator<Item = B>> Iterator for ImapUnordered<'p, In, Out, I> {
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
                if let Some(r) = self.pending[i].try_get() {
                    drop(self.pending.swap_remove(i));
                    return Some(r);
                }
            }
            // Small batches: wait as the pool's strategy says for a small map.
            drive::wait_done(shared, seen, true, None, false);
        }
    }
}
