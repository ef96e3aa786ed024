//! Backup areas for retry-safe chunks into the caller's own array ([`Descriptor::VIA_SCRATCH`]):
//! a chunk kernel passed to `map_into` may read the output it updates (`y += x`), so a chunk
//! retried after its worker died must not find that output already updated. Each ring slot
//! gets one area in one staging buffer per map: a mark, then room for a backup of one chunk's
//! output range (see `worker::run_kernel`), reused by every chunk the slot carries. A chunk
//! retried after its claimer died stays in its slot, so the retry finds the dead claimer's
//! backup by slot. Such maps are cut into chunks of at most [`CHUNK_BYTES`], so that the
//! backup, and the caller's range it was read from, are still in the cache when the kernel
//! runs (the backup's read is the read-for-ownership the kernel's writes do anyway). Element
//! kernels never read their output and pay nothing.
#![deny(unsafe_code)]

use std::ops::Range;

use super::Pool;
use crate::array::Staging;
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::ring::Descriptor;

const MARK: usize = Descriptor::SCRATCH_MARK;

/// Largest chunk (input and output bytes) of a map whose chunks are backed up: the backup must
/// stay in a core's cache (and many chunks cost little next to the copy).
pub(super) const CHUNK_BYTES: usize = 1024 * 1024;

/// Whether a map of `spec` (into the caller's own array or not) backs its chunks up: the output is the caller's own, the
/// kernel may read it (a chunk kernel), the pool backs such outputs up
/// ([`super::PoolBuilder::backup_outputs`]) and a chunk may be retried (`max_attempts` above 1).
pub(super) fn needed(pool: &Pool, into_callers_array: bool, spec: &KernelSpec) -> bool {
    into_callers_array && pool.shared.cfg.backup_outputs && !spec.fills_output && pool.shared.cfg.max_attempts > 1
}

/// A buffer of one backup area per ring slot for `chunks` of `out_size`-byte elements, and the
/// bytes between two slots' areas (64-byte aligned, a mark then the longest chunk's output).
pub(super) fn take(pool: &Pool, out_size: usize, chunks: &[Range<usize>]) -> Result<(Staging, usize)> {
    let longest = chunks.iter().map(ExactSizeIterator::len).max().unwrap_or(0);
    let too_large = || Error::TooLarge { count: longest as u64, elem_size: out_size as u64 };
    let stride = stride(longest, out_size).ok_or_else(too_large)?;
    let slots = pool.shared.ring.slots() as usize;
    let bytes = stride.checked_mul(slots).ok_or_else(too_large)?;
    Ok((pool.take_staging(bytes)?, stride))
}

/// Bytes of one slot's area: a mark, then `longest` elements of `out_size` bytes, rounded up to
/// keep every area 64-byte aligned. `None` on overflow.
fn stride(longest: usize, out_size: usize) -> Option<usize> {
    Some(longest.checked_mul(out_size)?.checked_add(2 * MARK - 1)? / MARK * MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_area_holds_a_mark_and_the_longest_chunk_64_byte_aligned() {
        for (longest, out_size) in [(1usize, 1usize), (7, 3), (64, 8), (1000, 24)] {
            let stride = stride(longest, out_size).unwrap();
            assert_eq!(stride % MARK, 0);
            assert!(stride >= MARK + longest * out_size);
            assert!(stride < 2 * MARK + longest * out_size);
        }
        assert_eq!(stride(usize::MAX / 2, 3), None);
    }
}
