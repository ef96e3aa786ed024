//! Waiting: how a map caller waits for its chunks (the wait strategies and the oversubscription
//! check), when it gives up (cancellation, a ring that nothing can free), and the blocking
//! map's loop, [`drive`].
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::run::{Input, MapRun, Output, SMALL_MAP, WAIT_SLICE};
use super::{lock, Shared, WaitStrategy, STATE_STOPPING, STATE_TERMINATED};
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::ring::SPINNER_STALE_US;

impl MapRun<'_> {
    /// Whether no chunk of this map is in flight.
    pub(super) fn nothing_in_flight(&self) -> bool {
        self.outstanding == 0
    }

    /// Whether the ring has a FREE slot right now.
    pub(super) fn ring_has_free_slot(&self) -> bool {
        self.shared.ring.lock().map_or(true, |g| g.census(self.map_id).free > 0)
    }

    /// Whether nothing can free a slot for this map's next chunk: the ring holds no FREE,
    /// FILLED or CLAIMED slot and no finished chunk of ours, and no other thread is in a loop
    /// that frees slots (every slot is a finished chunk of a ticket nobody waits for yet).
    fn starved(&self, i_drain: bool) -> bool {
        let others_draining = self.shared.draining.load(Ordering::SeqCst) > usize::from(i_drain);
        if self.all_filled() || self.outstanding > 0 || others_draining {
            return false;
        }
        match self.shared.ring.lock() {
            Ok(g) => {
                let c = g.census(self.map_id);
                c.free == 0 && c.filled == 0 && c.claimed == 0 && !c.done_mine
            }
            Err(_) => false,
        }
    }

    /// Checks for cancellation from another thread or a supervisor that gave up. `Some` once
    /// every worker is reaped (never before: they could still write our buffers).
    pub(super) fn cancelled(&mut self) -> Option<Error> {
        let state = self.shared.state.load(Ordering::SeqCst);
        let gave_up = lock(&self.shared.failure).is_some();
        if state < STATE_STOPPING && !gave_up {
            return None;
        }
        if self.shared.reaped.load(Ordering::Acquire) {
            if let Ok(mut g) = self.shared.ring.lock() {
                self.withdraw_all(&mut g);
            }
            return Some(match self.shared.failure() {
                Some(reason) => Error::PoolBroken { reason },
                None if state == STATE_TERMINATED => Error::Cancelled,
                None => Error::PoolClosed,
            });
        }
        if state == STATE_STOPPING && self.outstanding > 0 {
            // A graceful stop waits for running maps before it stops workers; if one ever
            // overlapped, workers would exit with our chunks FILLED: escalate to killing them.
            self.shared.state.fetch_max(STATE_TERMINATED, Ordering::SeqCst);
            self.shared.poke();
        }
        None
    }

    /// Waits for a finished chunk (or a health-check slice) with the pool's wait strategy.
    pub(super) fn wait(&mut self, seen: u32, deadline: Option<Instant>) {
        let news = wait_done(self.shared, seen, self.len <= SMALL_MAP, deadline, self.short_waits());
        self.waited(news);
    }
}

/// Waits until the done bell moves past `seen` (or a health-check slice, or `deadline`), as the
/// pool's wait strategy says; `small` says whether the awaited work is small enough that
/// spinning for it pays (large maps always sleep under `Adaptive`); `short`: slices of twice
/// [`SPINNER_STALE_US`] (the caller watches a spinner it relies on). Returns whether the bell
/// moved.
pub(super) fn wait_done(shared: &Shared, seen: u32, small: bool, deadline: Option<Instant>, short: bool) -> bool {
    let hdr = shared.ring.header();
    let cfg = &shared.cfg;
    let mut slice = if short { Duration::from_micros(2 * SPINNER_STALE_US) } else { WAIT_SLICE };
    if let Some(d) = deadline {
        slice = slice.min(d.saturating_duration_since(Instant::now()));
    }
    let spin = match cfg.wait {
        WaitStrategy::Sleep => Duration::ZERO,
        WaitStrategy::Spin => slice,
        WaitStrategy::Adaptive if !small || oversubscribed(shared) => Duration::ZERO,
        WaitStrategy::Adaptive => cfg.spin.min(slice),
    };
    if cfg.wait == WaitStrategy::Adaptive {
        // Politely: past the first µs the spin yields the core between polls. A sleeping
        // worker that this caller wakes is often placed on the caller's own CPU (the
        // scheduler's wake-affine choice, all the more on a busy or 2-core machine); a caller
        // that spun hard would then keep it off that CPU for its whole spin budget, and every
        // round trip would cost the budget (1 ms) until the load balancer moved one of them.
        // Measured with `examples/latency.rs`. On separate CPUs a round trip ends long before
        // the first yield, so the fast path is unchanged.
        let me = crate::sync::raw::cpu_hint();
        hdr.cpus.caller.store(me, Ordering::Relaxed);
        let polite_after = crate::ring::CpuHints::polite_after(me, &hdr.cpus.worker);
        hdr.done.wait_polite(seen, spin, slice.saturating_sub(spin), polite_after)
    } else {
        hdr.done.wait(seen, spin, slice.saturating_sub(spin))
    }
}

/// Whether spinning would put more busy processes than cores: the workers running chunks,
/// one spinning idle worker, the waiting callers (this one among them).
fn oversubscribed(shared: &Shared) -> bool {
    let hdr = shared.ring.header();
    let busy = hdr.claimed_now.load(Ordering::Relaxed) as usize
        + usize::from(hdr.spinner.load(Ordering::Relaxed) != 0)
        + shared.collectors.load(Ordering::Relaxed);
    busy > shared.cores
}

/// Drives a blocking map to its end. `progress` is called with the number of elements done.
pub(super) fn drive(
    mut run: MapRun<'_>,
    spec: &KernelSpec,
    input: Input<'_>,
    mut output: Output<'_>,
    mut progress: Option<&mut dyn FnMut(usize)>,
) -> Result<()> {
    let collector = Collector::new(run.shared, true);
    let hdr = run.shared.ring.header();
    let mut starved_since = None;
    let mut reported = 0;
    let mut callback_panic = None;
    loop {
        let seen = hdr.done.seq();
        let filled = run.step(Some(spec), &input, &mut output);
        if run.corrupted() {
            break;
        }
        run.wake_workers(filled);
        if let Some(p) = progress.as_mut() {
            if run.done_elems() != reported && callback_panic.is_none() {
                reported = run.done_elems();
                // A panicking callback must not unwind past chunks that workers are still
                // writing: stop the map as for any error, then resume the panic.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p(reported)));
                if let Err(payload) = r {
                    callback_panic = Some(payload);
                    run.abort(Error::Cancelled);
                }
            }
        }
        if run.complete() {
            break;
        }
        if let Some(e) = run.cancelled() {
            let _ = run.finish();
            if let Some(payload) = callback_panic {
                std::panic::resume_unwind(payload);
            }
            return Err(e);
        }
        if filled == 0 && collector.starved(&run, &mut starved_since) {
            run.abort(Error::RingFull { slots: run.shared.ring.slots() });
            continue;
        }
        let _slot_wait = collector.wants_slot(&run);
        run.wait(seen, None);
    }
    let outcome = run.finish();
    if let Some(payload) = callback_panic {
        std::panic::resume_unwind(payload);
    }
    outcome
}

/// Counts a thread inside a waiting loop (for the spin decision), and whether that loop frees
/// slots as chunks finish (for `starved`): blocking maps, ticket waits and staged submits do;
/// an inline submit does not (its finished chunk waits in its slot for the ticket's owner).
pub(super) struct Collector<'p> {
    shared: &'p Shared,
    drains: bool,
}

impl<'p> Collector<'p> {
    pub(super) fn new(shared: &'p Shared, drains: bool) -> Self {
        shared.collectors.fetch_add(1, Ordering::SeqCst);
        if drains {
            shared.draining.fetch_add(1, Ordering::SeqCst);
        }
        Collector { shared, drains }
    }

    /// Whether nothing can free a slot for `run`, persistently: see [`MapRun::starved`]. The
    /// condition must hold for [`STARVED_FOR`] in a row (a caller about to wait for its
    /// tickets would otherwise look like nobody).
    pub(super) fn starved(&self, run: &MapRun<'_>, since: &mut Option<Instant>) -> bool {
        if run.starved(self.drains) {
            since.get_or_insert_with(Instant::now).elapsed() >= STARVED_FOR
        } else {
            *since = None;
            false
        }
    }

    /// Marks this thread as waiting for a free slot (while `run` has nothing in flight), so
    /// that whoever frees one rings the done bell.
    pub(super) fn wants_slot(&self, run: &MapRun<'_>) -> SlotWait<'p> {
        let waiting = !run.all_filled() && run.outstanding == 0;
        if waiting {
            self.shared.slot_waiters.fetch_add(1, Ordering::SeqCst);
        }
        SlotWait { shared: self.shared, waiting }
    }
}

impl Drop for Collector<'_> {
    fn drop(&mut self) {
        self.shared.collectors.fetch_sub(1, Ordering::SeqCst);
        if self.drains {
            self.shared.draining.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A thread waiting for a free slot (see [`Collector::wants_slot`]); uncounted on drop.
pub(super) struct SlotWait<'p> {
    shared: &'p Shared,
    waiting: bool,
}

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.shared.slot_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// How long "nothing can free a slot" must hold before a map or submit gives up with
/// [`Error::RingFull`].
const STARVED_FOR: Duration = Duration::from_millis(250);
