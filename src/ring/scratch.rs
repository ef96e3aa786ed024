//! The scratch area of a retry-safe chunk ([`Descriptor::VIA_SCRATCH`]): a completion mark and
//! room for the chunk's output, in a pool staging segment that only this chunk uses.

use std::sync::atomic::AtomicU64;

use super::Descriptor;
use crate::shm::Segment;

/// The chunk's completion mark and scratch output (`out_len` bytes), checked against `d`.
///
/// The caller must hold the claim of the chunk `d` describes (a verified descriptor: its MAC
/// says the pool wrote `scratch_seg` and `scratch_off`), and `scratch` must be the segment
/// `d.scratch_seg` names. Refuses (with the reason) a scratch segment that is also one of the
/// chunk's other segments, or a range outside the segment or not 64-byte aligned.
// The area is shared memory that this claim alone uses (see the SAFETY comment), as
// `Segment::data_mut` hands out.
#[allow(clippy::mut_from_ref)]
pub(crate) fn area<'a>(
    scratch: &'a Segment,
    d: &Descriptor,
    out_len: usize,
) -> Result<(&'a AtomicU64, &'a mut [u8]), String> {
    if d.scratch_seg == 0 || [d.in_seg, d.out_seg, d.params_seg].contains(&d.scratch_seg) {
        return Err(format!("scratch segment {} is not a segment of its own", d.scratch_seg));
    }
    let off = usize::try_from(d.scratch_off).map_err(|_| format!("scratch offset {} overflows", d.scratch_off))?;
    if off % Descriptor::SCRATCH_MARK != 0 {
        return Err(format!("scratch offset {off} is not 64-byte aligned"));
    }
    let len = out_len.checked_add(Descriptor::SCRATCH_MARK).ok_or("scratch length overflows")?;
    // SAFETY: the caller holds the chunk's claim, and the map caller gives each chunk of a map
    // its own scratch range of a staging segment used by no other map and by no other chunk
    // (the MAC, verified at claim, says the pool wrote these fields), so no other reference to
    // the range is used until this chunk is published; the segment is none of the chunk's
    // input, output or parameter segments (checked above); `data_mut` checks the bounds.
    let bytes = unsafe { scratch.data_mut(off, len) }.map_err(|e| e.to_string())?;
    let (mark, data) = bytes.split_at_mut(Descriptor::SCRATCH_MARK);
    // SAFETY: `mark` is 64 bytes at a 64-byte aligned offset of a page-aligned data area, so
    // its first 8 bytes are a valid, aligned `u64`, exclusively ours (above) for 'a; all
    // accesses to it go through this atomic.
    let mark = unsafe { AtomicU64::from_ptr(mark.as_mut_ptr().cast::<u64>()) };
    Ok((mark, data))
}
