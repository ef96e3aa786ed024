//! The pool's spare staging buffers: the shared segments that plain slices too large to travel
//! inline are copied through. A map takes one for its input and one for its output and gives
//! them back when no worker can touch them any more; the next map reuses them rather than
//! creating (and having every worker map) new segments.
//!
//! What the pool keeps is bounded twice: the spares never hold more than
//! [`PoolBuilder::staging_cache_bytes`](super::PoolBuilder::staging_cache_bytes) (least recently
//! used go first), and a spare unused for [`STAGING_IDLE_TRIM`] is dropped by the supervisor's
//! tick, which then has the workers unmap it: an idle pool holds no staging memory in
//! `/dev/shm` a couple of seconds after its last map. This module contains no unsafe code.
#![deny(unsafe_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;
use crate::array::Staging;
use crate::error::Result;

/// A spare unused for this long is dropped (by the supervisor's tick).
pub(crate) const STAGING_IDLE_TRIM: Duration = Duration::from_secs(1);

/// Most spare buffers kept, whatever their size (an input and an output for each of a few
/// concurrent callers).
const MAX_SPARES: usize = 8;

/// Sizes are rounded up to a multiple of a sixteenth of their power of two (and of 64 KiB), so
/// that maps of nearly the same size reuse one buffer while no buffer wastes more than 12.5%
/// (a power-of-two rounding wasted up to half).
fn rounded(bytes: usize) -> usize {
    // bytes > pow2 / 2, so a sixteenth of pow2 is less than an eighth of bytes.
    let grain = (bytes.checked_next_power_of_two().unwrap_or(bytes) / 16).max(64 << 10);
    bytes.checked_next_multiple_of(grain).unwrap_or(bytes)
}

struct Spare {
    buf: Staging,
    /// When it was given back.
    since: Instant,
}

/// The spare staging buffers of one pool.
pub(super) struct StagingCache {
    spares: Mutex<Vec<Spare>>,
    /// Most bytes the spares may hold.
    cap: usize,
}

impl StagingCache {
    pub(super) fn new(cap: usize) -> Self {
        StagingCache { spares: Mutex::new(Vec::with_capacity(MAX_SPARES + 1)), cap }
    }

    /// The smallest spare of at least `bytes` bytes, if any. `create` makes a new one (of the
    /// rounded size) otherwise.
    pub(super) fn take(&self, bytes: usize, create: impl FnOnce(usize) -> Result<Staging>) -> Result<Staging> {
        let spare = {
            let mut spares = lock(&self.spares);
            let best = spares
                .iter()
                .enumerate()
                .filter(|(_, s)| s.buf.capacity() >= bytes)
                .min_by_key(|(_, s)| s.buf.capacity())
                .map(|(i, _)| i);
            best.map(|i| spares.swap_remove(i).buf)
        };
        match spare {
            Some(s) => Ok(s),
            None => create(rounded(bytes)),
        }
    }

    /// Keeps a buffer no worker can touch any more, then drops the least recently used spares
    /// beyond the count and byte caps. The dropped ones are unmapped here at once and by the
    /// workers at the supervisor's next tick.
    pub(super) fn give_back(&self, buf: Staging) {
        let dropped = {
            let mut spares = lock(&self.spares);
            spares.push(Spare { buf, since: Instant::now() });
            let mut dropped = Vec::new();
            loop {
                let total: usize = spares.iter().map(|s| s.buf.capacity()).sum();
                if spares.is_empty() || (total <= self.cap && spares.len() <= MAX_SPARES) {
                    break;
                }
                let oldest = (0..spares.len()).min_by_key(|&i| spares[i].since).expect("not empty");
                dropped.push(spares.swap_remove(oldest));
            }
            dropped
        };
        // Unmapped outside the lock.
        drop(dropped);
    }

    /// Drops the spares unused for [`STAGING_IDLE_TRIM`] as of `now`; returns how many.
    pub(super) fn trim_idle(&self, now: Instant) -> usize {
        let idle = |s: &Spare| now.saturating_duration_since(s.since) >= STAGING_IDLE_TRIM;
        let dropped: Vec<Spare> = {
            let mut spares = lock(&self.spares);
            if !spares.iter().any(idle) {
                return 0;
            }
            // In place: the list keeps its capacity (giving a buffer back allocates nothing).
            let mut old = Vec::new();
            let mut i = 0;
            while i < spares.len() {
                if idle(&spares[i]) {
                    old.push(spares.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            old
        };
        dropped.len()
    }

    /// Bytes the spares hold.
    #[cfg(any(test, feature = "testing"))]
    pub(super) fn spare_bytes(&self) -> usize {
        lock(&self.spares).iter().map(|s| s.buf.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::rounded;

    #[test]
    fn sizes_round_up_by_at_most_an_eighth_and_to_64_kib() {
        for bytes in
            [1usize, 4096, 65_536, 65_537, 1 << 20, (1 << 20) + 1, 3 << 20, 64 << 20, (64 << 20) + 1, 400_000_000]
        {
            let r = rounded(bytes);
            assert!(r >= bytes, "{bytes} -> {r}");
            assert_eq!(r % (64 << 10), 0, "{bytes} -> {r}");
            assert!(r - bytes <= (bytes / 8).max(64 << 10), "{bytes} -> {r}: too much waste");
        }
        assert_eq!(rounded(64 << 20), 64 << 20);
    }
}
