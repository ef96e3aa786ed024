//! [`Ticket`]: a map submitted now and collected later, from any thread that owns the ticket —
//! the µs round trip for small batches. A small batch travels inline in one ring slot (copied
//! in at submit, copied out at wait); a larger one through staging buffers in shared memory.
//! Submit and wait allocate nothing in the steady state: bookkeeping and staging buffers are
//! recycled by the pool.
#![deny(unsafe_code)]

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::drive::Collector;
use super::run::{self, Chunking, Dest, Input, MapRun, Output};
use super::zip::{zip_len, ZipRun};
use super::Pool;
use crate::array::{Side, Source, Staging};
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::ring::zip::{ZipHeader, ZipInput};

/// Where a ticket's results wait.
enum Results<Out> {
    /// In its ring slot until the caller asks (`buf` is allocated by `try_wait` /
    /// `wait_timeout`, which return a `Vec` anyway).
    Inline { buf: Option<Vec<Out>> },
    /// In the pool's staging buffers: the (first) input, the other inputs of a zip map (an
    /// empty `Vec`, which allocates nothing, for one input), and the output.
    Staged { input: Staging, more: Vec<Staging>, output: Staging },
}

/// A submitted map: [`Pool::submit`] returns it, [`Ticket::wait`] / [`Ticket::wait_into`] /
/// [`Ticket::wait_timeout`] / [`Ticket::try_wait`] give its results. Dropping it before it
/// completes cancels what has not started and detaches what runs: results are discarded,
/// nothing is ever written into memory that was freed.
///
/// A ticket keeps its ring slot (inline batches) until it is waited for or dropped, so at most
/// `slots` small tickets can be outstanding; past that, `submit` waits for slots to free up, or
/// fails with [`Error::RingFull`] when only tickets nobody waits for hold them.
#[must_use = "a ticket's results are discarded when it is dropped"]
pub struct Ticket<'p, Out: Pod> {
    pool: &'p Pool,
    run: Option<MapRun<'p>>,
    len: usize,
    results: Results<Out>,
    /// The results were handed out (by `try_wait` or `wait_timeout`): the ticket is spent.
    spent: bool,
    _out: PhantomData<Out>,
}

impl<Out: Pod> std::fmt::Debug for Ticket<'_, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("len", &self.len).field("pending", &self.run.is_some()).finish()
    }
}

impl Pool {
    /// Submits `bytes` (whole units of `spec`, whose types the caller checked: `api.rs`); with
    /// `fail_fast`, [`Error::RingFull`] as soon as nothing of the new ticket is in flight and no
    /// slot is free (the caller — `imap` — then waits for one of its own tickets instead).
    pub(super) fn submit_inner<Out: Pod>(
        &self,
        bytes: &[u8],
        spec: &KernelSpec,
        fail_fast: bool,
    ) -> Result<Ticket<'_, Out>> {
        self.check_open()?;
        // Units of the map (elements, or rows of a row kernel); the ticket's `len` counts `Out`.
        let units = bytes.len() / spec.in_size;
        let len = units * spec.out_size / std::mem::size_of::<Out>();
        if len == 0 {
            return Ok(Ticket {
                pool: self,
                run: None,
                len,
                results: Results::Inline { buf: None },
                spent: false,
                _out: PhantomData,
            });
        }
        // One slot per small ticket: its finished chunk waits there for the caller.
        if let Some(layout) = run::inline_layout(&self.shared, units, spec, 1) {
            let input = Input::Inline(bytes);
            let run = MapRun::new(self, spec, units, &input, Dest::Inline, Chunking::InlineOneSlot(layout))?;
            let run = fill_all(run, spec, &input, &mut Output::Hold, fail_fast)?;
            return Ok(Ticket {
                pool: self,
                run: Some(run),
                len,
                results: Results::Inline { buf: None },
                spent: false,
                _out: PhantomData,
            });
        }
        let out_bytes = units
            .checked_mul(spec.out_size)
            .ok_or(Error::TooLarge { count: units as u64, elem_size: spec.out_size as u64 })?;
        let mut stage_in = self.take_staging(bytes.len())?;
        stage_in.bytes_mut(bytes.len()).copy_from_slice(bytes);
        let stage_out = self.take_staging(out_bytes)?;
        let (ins, outs) = (stage_in.seg.clone(), stage_out.seg.clone());
        let input = Input::Shared(&ins);
        let run = MapRun::new(self, spec, units, &input, Dest::Staging(&outs), Chunking::Shared)?;
        let run = fill_all(run, spec, &input, &mut Output::Shared, fail_fast)?;
        Ok(Ticket {
            pool: self,
            run: Some(run),
            len,
            results: Results::Staged { input: stage_in, more: Vec::new(), output: stage_out },
            spent: false,
            _out: PhantomData,
        })
    }
}

impl Pool {
    /// Submits a zip map of `spec` over `srcs` (a tuple of inputs): every input copied into a
    /// staging buffer (the caller may change them right away), the results into another.
    pub(super) fn submit_zip<Out: Pod>(
        &self,
        srcs: &[Source<'_>],
        spec: &KernelSpec,
        fail_fast: bool,
    ) -> Result<Ticket<'_, Out>> {
        let units = zip_len(spec, srcs, Side::of::<Out>())?;
        self.check_open()?;
        let len = units * spec.out_size / std::mem::size_of::<Out>();
        let mut inputs = Vec::with_capacity(srcs.len());
        for s in srcs {
            let b = s.bytes();
            let mut st = self.take_staging(b.len().max(1))?;
            st.bytes_mut(b.len()).copy_from_slice(b);
            inputs.push(st);
        }
        let output = self.take_staging((len * std::mem::size_of::<Out>()).max(1))?;
        let header = ZipHeader {
            inputs: inputs[1..]
                .iter()
                .zip(&spec.zip[1..])
                .map(|(s, t)| ZipInput { seg: s.seg.id(), elem_size: t.size() as u64, block: 1, total: units as u64 })
                .collect(),
        };
        let (main, outs) = (inputs[0].seg.clone(), output.seg.clone());
        let unit_bytes = spec.zip.iter().map(|t| t.size()).sum::<usize>() + spec.out_size;
        let fixed = self.shared.cfg.chunk_len;
        let z = ZipRun { spec, header, units, main: &main, unit_bytes, fixed, file: false };
        let run = if units == 0 {
            None
        } else {
            let (run, zspec) = self.plan_zip(z, Dest::Staging(&outs))?;
            Some(fill_all(run, &zspec, &Input::Shared(&main), &mut Output::Shared, fail_fast)?)
        };
        let mut inputs = inputs.into_iter();
        let input = inputs.next().expect("a zip map has inputs");
        let results = Results::Staged { input, more: inputs.collect(), output };
        Ok(Ticket { pool: self, run, len, results, spent: false, _out: PhantomData })
    }
}

/// Fills every chunk of a new ticket, waiting for slots when the ring is busy.
fn fill_all<'p>(
    mut run: MapRun<'p>,
    spec: &KernelSpec,
    input: &Input<'_>,
    output: &mut Output<'_>,
    fail_fast: bool,
) -> Result<MapRun<'p>> {
    let shared = &*run.pool.shared;
    // An inline ticket keeps its finished chunk in its slot: its submit frees none.
    let collector = Collector::new(shared, matches!(output, Output::Shared));
    let hdr = shared.ring.header();
    let mut starved_since = None;
    loop {
        let seen = hdr.done.seq();
        let filled = run.step(Some(spec), input, output);
        run.wake_workers(filled);
        if run.all_filled() || run.corrupted() || run.complete() {
            return Ok(run);
        }
        if let Some(e) = run.cancelled() {
            let _ = run.finish();
            return Err(e);
        }
        let starved = filled == 0
            && ((fail_fast && run.nothing_in_flight() && !run.ring_has_free_slot())
                || collector.starved(&run, &mut starved_since));
        if starved {
            let _ = run.finish();
            return Err(Error::RingFull { slots: shared.ring.slots() });
        }
        let _slot_wait = collector.wants_slot(&run);
        run.wait(seen, None);
    }
}

impl<'p, Out: Pod> Ticket<'p, Out> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waits for the results and returns them.
    ///
    /// # Errors
    ///
    /// As [`Pool::map`].
    pub fn wait(self) -> Result<Vec<Out>> {
        let mut out = vec![Out::zeroed(); self.len];
        self.wait_into(&mut out)?;
        Ok(out)
    }

    /// Waits for the results and writes them into `out`, allocating nothing.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] when `out` is not as long as the input; otherwise as
    /// [`Pool::map`].
    pub fn wait_into(mut self, out: &mut [Out]) -> Result<()> {
        if out.len() != self.len {
            return Err(Error::LengthMismatch { input: self.len, output: out.len() });
        }
        match self.drive(bytemuck::cast_slice_mut(out), None) {
            Some(r) => r,
            None => unreachable!("no deadline: the ticket completes"),
        }
    }

    /// Waits at most `timeout`: `Ok(Some(results))` when done, `Ok(None)` when not yet (the
    /// ticket stays valid; wait again or drop it). Once the results were handed out, every
    /// later call gives [`Error::TicketSpent`].
    ///
    /// # Errors
    ///
    /// As [`Pool::map`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<Out>>> {
        // A timeout too long to represent is no deadline.
        self.poll(Instant::now().checked_add(timeout))
    }

    /// The results if the ticket is done, without waiting: `Ok(None)` while it runs (the
    /// shape of [`Ticket::wait_timeout`] with a zero timeout). Once the results were handed
    /// out, every later call gives [`Error::TicketSpent`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(1)?;
    /// let mut t = pool.submit(&[2u32], |x: u32| x + 1)?;
    /// let got = loop {
    ///     if let Some(v) = t.try_wait()? { break v; }
    ///     std::thread::yield_now();
    /// };
    /// assert_eq!(got, [3]);
    /// assert!(matches!(t.try_wait(), Err(shmpool::Error::TicketSpent)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`crate::Pool::map`].
    pub fn try_wait(&mut self) -> Result<Option<Vec<Out>>> {
        self.poll(Some(Instant::now()))
    }

    fn poll(&mut self, deadline: Option<Instant>) -> Result<Option<Vec<Out>>> {
        let len = self.len;
        let mut buf = match &mut self.results {
            Results::Inline { buf } => buf.take().unwrap_or_else(|| vec![Out::zeroed(); len]),
            Results::Staged { .. } => vec![Out::zeroed(); len],
        };
        match self.drive(bytemuck::cast_slice_mut(&mut buf), deadline) {
            Some(r) => {
                self.spent = true;
                r.map(|()| Some(buf))
            }
            None => {
                if let Results::Inline { buf: keep } = &mut self.results {
                    *keep = Some(buf);
                }
                Ok(None)
            }
        }
    }

    /// Collects until the map is over (`Some(outcome)`) or `deadline` passes (`None`).
    /// Inline results are copied straight into `out`; staged ones at the end.
    fn drive(&mut self, out: &mut [u8], deadline: Option<Instant>) -> Option<Result<()>> {
        if let Err(e) = self.pool.check_owner() {
            return Some(Err(e));
        }
        if self.spent {
            return Some(Err(Error::TicketSpent));
        }
        let Some(mut run) = self.run.take() else { return Some(Ok(())) };
        let shared = &*run.pool.shared;
        let hdr = shared.ring.header();
        let outcome = {
            let _collector = Collector::new(shared, true);
            let mut output = match &self.results {
                Results::Inline { .. } => Output::Inline(&mut *out),
                Results::Staged { .. } => Output::Shared,
            };
            loop {
                let seen = hdr.done.seq();
                run.step(None, &Input::Inline(&[]), &mut output);
                if run.corrupted() || run.complete() {
                    break run.finish();
                }
                if let Some(e) = run.cancelled() {
                    let _ = run.finish();
                    break Err(e);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    self.run = Some(run);
                    return None;
                }
                run.wait(seen, deadline);
            }
        };
        if let Results::Staged { output, .. } = &mut self.results {
            if outcome.is_ok() {
                out.copy_from_slice(output.bytes_mut(out.len()));
            }
        }
        Some(outcome)
    }
}

impl<Out: Pod> Drop for Ticket<'_, Out> {
    /// Withdraws what has not started, leaves what runs to be freed when it finishes, and
    /// returns the staging buffers to the pool only when no worker can touch them any more.
    fn drop(&mut self) {
        if !self.pool.shared.is_owner() {
            // A forked child's copy: the slots and buffers are the parent's; touch nothing.
            if let Some(run) = self.run.take() {
                std::mem::forget(run);
            }
            return;
        }
        let in_flight = self.run.take().is_some_and(|run| run.orphan());
        let results = std::mem::replace(&mut self.results, Results::Inline { buf: None });
        if let (Results::Staged { input, more, output }, false) = (results, in_flight) {
            self.pool.give_back(input);
            for input in more {
                self.pool.give_back(input);
            }
            self.pool.give_back(output);
        }
    }
}
