//! The backup area of a retry-safe chunk ([`Descriptor::VIA_SCRATCH`]): a completion mark and
//! room for the chunk's output, the area of the chunk's slot in a staging segment that only
//! the chunk's map uses (one area per slot, reused by the chunks the slot carries).

use std::sync::atomic::AtomicU64;

use super::Descriptor;
use crate::shm::Segment;

/// The completion mark and backup (`out_len` bytes) of the chunk `d` in `slot`, checked
/// against `d`.
///
/// The caller must hold the claim of `slot`, whose chunk `d` describes (a verified descriptor:
/// its MAC says the pool wrote `scratch_seg` and `scratch_off`), and `scratch` must be the
/// segment `d.scratch_seg` names. Refuses (with the reason) a scratch segment that is also one
/// of the chunk's other segments, an area smaller than a mark and the chunk's output, or a
/// range outside the segment or not 64-byte aligned.
// The area is shared memory that this claim alone uses (see the SAFETY comment), as
// `Segment::data_mut` hands out.
#[allow(clippy::mut_from_ref)]
pub(crate) fn area<'a>(
    scratch: &'a Segment,
    d: &Descriptor,
    slot: u32,
    out_len: usize,
) -> Result<(&'a AtomicU64, &'a mut [u8]), String> {
    if d.scratch_seg == 0 || [d.in_seg, d.out_seg, d.params_seg].contains(&d.scratch_seg) {
        return Err(format!("scratch segment {} is not a segment of its own", d.scratch_seg));
    }
    let stride = usize::try_from(d.scratch_off).map_err(|_| format!("scratch stride {} overflows", d.scratch_off))?;
    if stride % Descriptor::SCRATCH_MARK != 0 || stride < out_len.saturating_add(Descriptor::SCRATCH_MARK) {
        return Err(format!("scratch stride {stride} is not 64-byte aligned or holds no {out_len}-byte backup"));
    }
    let off = stride.checked_mul(slot as usize).ok_or("scratch offset overflows")?;
    let len = out_len.checked_add(Descriptor::SCRATCH_MARK).ok_or("scratch length overflows")?;
    // SAFETY: the caller holds the claim of `slot`, and the map caller gives each slot its own
    // area (`slot * stride`, `stride` at least the area's length: checked above) of a staging
    // segment used by no other map (the MAC, verified at claim, says the pool wrote these
    // fields), and a slot carries one chunk at a time, so no other reference to the range is
    // used until this chunk is published; the segment is none of the chunk's
    // input, output or parameter segments (checked above); `data_mut` checks the bounds.
    let bytes = unsafe { scratch.data_mut(off, len) }.map_err(|e| e.to_string())?;
    let (mark, data) = bytes.split_at_mut(Descriptor::SCRATCH_MARK);
    // SAFETY: `mark` is 64 bytes at a 64-byte aligned offset of a page-aligned data area, so
    // its first 8 bytes are a valid, aligned `u64`, exclusively ours (above) for 'a; all
    // accesses to it go through this atomic.
    let mark = unsafe { AtomicU64::from_ptr(mark.as_mut_ptr().cast::<u64>()) };
    Ok((mark, data))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn each_slot_has_its_own_area_and_a_forged_stride_or_segment_is_refused() {
        let seg = Segment::create_filled(&[0u8; 4 * 256]).unwrap();
        let d = Descriptor { scratch_seg: seg.id(), scratch_off: 256, out_seg: seg.id() + 1, ..Descriptor::default() };
        let (m0, a0) = area(&seg, &d, 0, 100).unwrap();
        m0.store(7, Ordering::Relaxed);
        a0.fill(1);
        let (m3, a3) = area(&seg, &d, 3, 192).unwrap();
        assert_eq!(m3.load(Ordering::Relaxed), 0, "slot 3's mark is slot 0's");
        assert!(a3.iter().all(|&b| b == 0), "slot 3's backup overlaps slot 0's");
        assert!(area(&seg, &d, 10_000, 100).is_err(), "past the segment's end");
        assert!(area(&seg, &d, 0, 193).is_err(), "an output larger than the area");
        for bad in [
            Descriptor { scratch_off: 250, ..d },
            Descriptor { scratch_off: u64::MAX, ..d },
            Descriptor { scratch_seg: 0, ..d },
            Descriptor { out_seg: seg.id(), ..d },
        ] {
            assert!(area(&seg, &bad, 1, 64).is_err(), "{bad:?}");
        }
    }
}
