//! Scratch areas for retry-safe chunks into the caller's own array ([`Descriptor::VIA_SCRATCH`]):
//! a chunk kernel passed to `map_into` may read the output it updates (`y += x`), so a chunk
//! retried after its worker died must not find that output already updated. Each chunk gets
//! its own area in one staging buffer per map: a mark, then a backup of its output range (see
//! `worker::run_kernel`). Element kernels never read their output and pay nothing.
#![deny(unsafe_code)]

use std::ops::Range;

use super::run::Dest;
use super::Pool;
use crate::array::Staging;
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::ring::Descriptor;

const MARK: usize = Descriptor::SCRATCH_MARK;

/// A scratch buffer for a map of `chunks` into `dest`, if its chunks need one: the output is the
/// caller's own, the kernel may read it (a chunk kernel), and a chunk may be retried
/// (`max_attempts` above 1).
pub(super) fn for_map(
    pool: &Pool,
    dest: Dest<'_>,
    spec: &KernelSpec,
    chunks: &[Range<usize>],
) -> Result<Option<Staging>> {
    if !matches!(dest, Dest::Caller(_)) || spec.fills_output || pool.shared.cfg.max_attempts <= 1 || chunks.is_empty() {
        return Ok(None);
    }
    take(pool, spec.out_size, chunks).map(Some)
}

/// A scratch buffer with an area for each of `chunks` (not empty) of `out_size`-byte elements.
pub(super) fn take(pool: &Pool, out_size: usize, chunks: &[Range<usize>]) -> Result<Staging> {
    let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else { return pool.take_staging(0) };
    let too_large = || Error::TooLarge { count: last.end as u64, elem_size: out_size as u64 };
    // The last chunk's area ends at its offset + MARK + its output.
    let end = offset(chunks.len() - 1, (last.start - first.start) * out_size)
        .checked_add(MARK + last.len() * out_size)
        .ok_or_else(too_large)?;
    pool.take_staging(end)
}

/// Byte offset of chunk `k`'s area, whose output starts `rel` bytes after the map's first
/// output byte: 64-byte aligned, and past the end of chunk `k - 1`'s area (its offset is at
/// most `128 (k - 1) + rel(k - 1)`, its end that plus `64 + len(k - 1)`, which is at most
/// `128 k + rel(k) - 64`).
pub(super) fn offset(k: usize, rel: usize) -> usize {
    2 * MARK * k + rel / MARK * MARK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_areas_are_aligned_and_disjoint() {
        for out_size in [1usize, 3, 8, 24] {
            for lens in [vec![1usize, 1, 1], vec![7, 100, 5, 64, 3], vec![1000, 1000, 999]] {
                let mut rel = 0;
                let mut end = 0;
                for (k, len) in lens.iter().enumerate() {
                    let off = offset(k, rel);
                    assert_eq!(off % MARK, 0);
                    assert!(off >= end, "chunk {k} at {off} overlaps the previous area ending at {end}");
                    end = off + MARK + len * out_size;
                    rel += len * out_size;
                }
            }
        }
    }
}
