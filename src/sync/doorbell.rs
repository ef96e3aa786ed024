//! A futex doorbell in shared memory: waiters sleep until its sequence number changes; every
//! ring wakes all sleepers, so a waiter killed in its sleep cannot swallow a wake-up.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::raw;

/// A wake-up word: waiters sleep until its sequence number changes.
///
/// `seq` is bumped (SeqCst) by whoever publishes something the waiters care about; `sleepers`
/// counts processes inside `futex_wait`. The SeqCst pair (`seq` bump then `sleepers` load on
/// the ringer's side, `sleepers` increment then `seq` load on the waiter's side) guarantees that
/// either the ringer sees a sleeper and wakes it, or the sleeper sees the new sequence and does
/// not sleep. Every ring wakes *all* sleepers, so a sleeper that was killed cannot swallow a
/// wake-up meant for a live one; its stale `sleepers` count only costs a spare syscall.
#[repr(C, align(64))]
pub(crate) struct Doorbell {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Doorbell>() == 64);

/// How long a polite spin spins hard before it yields the core between polls. Short: a
/// round trip between a caller and a worker on separate cores ends within a few µs, so the
/// fast path never yields; when they share a core, every hand-off waits this long on each
/// side (measured with `examples/latency.rs` on a loaded 2-core machine: p50 14 µs at 5 µs,
/// 45 µs at 20 µs, 0.4-0.7 ms when the caller did not yield at all).
pub(crate) const POLITE_AFTER: Duration = Duration::from_micros(5);

impl Doorbell {
    /// The current sequence number; pass it to [`Doorbell::wait`].
    pub(crate) fn seq(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Bumps the sequence and wakes every sleeper.
    pub(crate) fn ring(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            raw::futex_wake(&self.seq, i32::MAX);
        }
    }

    /// Bumps the sequence without waking sleepers: for a ringer that knows a spinning waiter
    /// will see it. The caller must make sure a spinner that stops spinning re-checks the
    /// sequence before it sleeps (SeqCst on both sides), or wake-ups are lost.
    pub(crate) fn bump(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until the sequence differs from `seen`: first spinning for up to `spin`, then
    /// sleeping for up to `timeout`. Returns whether it changed.
    pub(crate) fn wait(&self, seen: u32, spin: Duration, timeout: Duration) -> bool {
        self.wait_with(seen, spin, timeout, None, None)
    }

    /// Like [`Doorbell::wait`], but after the first `polite_after` of spinning (normally
    /// [`POLITE_AFTER`]; zero when the waiter knows it shares its CPU with the process it waits
    /// for) it yields the core between polls (`sched_yield`): a waiter that spins must not keep
    /// the process it waits for off a core they happen to share (see `pool::drive::wait_done`).
    pub(crate) fn wait_polite(&self, seen: u32, spin: Duration, timeout: Duration, polite_after: Duration) -> bool {
        self.wait_with(seen, spin, timeout, Some(polite_after), None)
    }

    /// Spins for up to `spin` until the sequence differs from `seen`; `polite`: after the
    /// first `polite` of spinning it yields the core between polls (`sched_yield`), so that a
    /// process that spins speculatively (an idle worker waiting for more) never delays one that
    /// has work (the map caller, a worker). It stores the CLOCK_MONOTONIC µs into `beat` before
    /// the first poll and after every 64 polls, so that others can tell a running spinner from
    /// a stopped one. Never sleeps. Returns whether the sequence changed.
    pub(crate) fn spin_beating(&self, seen: u32, spin: Duration, polite: Option<Duration>, beat: &AtomicU64) -> bool {
        self.wait_with(seen, spin, Duration::ZERO, polite, Some(beat))
    }

    fn wait_with(
        &self,
        seen: u32,
        spin: Duration,
        timeout: Duration,
        polite: Option<Duration>,
        beat: Option<&AtomicU64>,
    ) -> bool {
        if self.seq() != seen {
            return true;
        }
        // A beat right away: whoever reads it may be deciding whether we are alive.
        let start_us = match beat {
            Some(b) => {
                let now = super::now_us();
                b.store(now, Ordering::Relaxed);
                now
            }
            None => 0,
        };
        if !spin.is_zero() {
            let start = Instant::now();
            loop {
                for _ in 0..64 {
                    if self.seq.load(Ordering::Relaxed) != seen {
                        return true;
                    }
                    std::hint::spin_loop();
                }
                let spent = start.elapsed();
                if let Some(b) = beat {
                    // The same clock (CLOCK_MONOTONIC) as `super::now_us`, without reading it twice.
                    let at = start_us.saturating_add(u64::try_from(spent.as_micros()).unwrap_or(u64::MAX));
                    b.store(at, Ordering::Relaxed);
                }
                if spent >= spin {
                    break;
                }
                // Past the first few µs, offer the core to any runnable process (the map
                // caller, a worker) between polls: spinning must not delay the work it waits for.
                if polite.is_some_and(|after| spent >= after) {
                    std::thread::yield_now();
                }
            }
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.seq.load(Ordering::SeqCst) == seen {
            raw::futex_wait(&self.seq, seen, timeout);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        self.seq() != seen
    }
}
