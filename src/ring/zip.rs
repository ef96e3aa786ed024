//! The extra inputs of a several-input chunk ("zip maps" and reductions): a small header at the
//! start of the parameter block names, for every input after the descriptor's own, its segment,
//! element size and how a chunk's units map to its elements; [`zip_inputs`] slices them for a
//! claimed chunk. The map caller writes the header ([`ZipHeader::encode`]), the worker parses
//! it ([`ZipHeader::parse`]) and trusts nothing in it: every range is bounds-checked against its
//! segment and refused when it overlaps the chunk's output.
//!
//! Layout (little-endian `u64` words): `count`, then `count` entries of
//! `[segment id, element size, block, total]`, zero-padded to a multiple of 64 bytes so that the
//! kernel's own parameter block after it stays 64-byte aligned. Unit `u` of a chunk covers
//! elements `u * block .. min((u + 1) * block, total)` of the input: `block` is 1 for a zip map
//! (one element per unit), the reduction block for a reduction (one partial result per unit).

use super::{ChunkIo, Descriptor};
use crate::key::Key;
use crate::shm::Segment;

/// Domain separator of header digests.
const DIGEST_DOMAIN: u64 = 0x005a_4950_4844_5232;

/// Most inputs after the descriptor's own a header may name.
pub(crate) const MAX_EXTRA: usize = 15;

/// One extra input of a several-input chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZipInput {
    /// The segment (registered with the pool, never 0: extra inputs are never inline).
    pub seg: u64,
    /// Bytes per element.
    pub elem_size: u64,
    /// Elements per unit of the map.
    pub block: u64,
    /// Elements of the whole input.
    pub total: u64,
}

/// The header of a several-input chunk's parameter block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZipHeader {
    pub inputs: Vec<ZipInput>,
}

impl ZipHeader {
    /// Bytes the header takes at the start of the parameter block.
    pub(crate) fn len(&self) -> usize {
        ((1 + 4 * self.inputs.len()) * 8).next_multiple_of(64)
    }

    /// The header's bytes, followed by `params` (the kernel's own block).
    pub(crate) fn encode(&self, params: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len() + params.len());
        v.extend_from_slice(&(self.inputs.len() as u64).to_le_bytes());
        for i in &self.inputs {
            for w in [i.seg, i.elem_size, i.block, i.total] {
                v.extend_from_slice(&w.to_le_bytes());
            }
        }
        v.resize(self.len(), 0);
        v.extend_from_slice(params);
        v
    }

    /// The keyed digest of an encoded header (`bytes`: its first [`ZipHeader::len`] bytes),
    /// truncated to 32 bits, which the map caller stores in the descriptor (`zip_digest`,
    /// under the descriptor's MAC) and the worker checks: a header changed in shared memory
    /// cannot name other segments (short of guessing 32 keyed bits, and a wrong guess is a
    /// corruption that breaks the pool).
    pub(crate) fn digest(bytes: &[u8], key: &Key) -> u32 {
        let b = key.hash_one((DIGEST_DOMAIN, bytes)).to_le_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Reads a header from the start of `params`.
    ///
    /// # Errors
    ///
    /// A sentence saying what is wrong (the chunk is then corrupt).
    pub(crate) fn parse(params: &[u8]) -> Result<ZipHeader, String> {
        let word =
            |k: usize| params.get(k * 8..k * 8 + 8).map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes")));
        let count = word(0).ok_or("a zip header without its count")?;
        if count == 0 || count > MAX_EXTRA as u64 {
            return Err(format!("a zip header naming {count} inputs"));
        }
        let mut inputs = Vec::with_capacity(count as usize);
        for k in 0..count as usize {
            let w = |j| word(1 + 4 * k + j).ok_or("a zip header cut short");
            let i = ZipInput { seg: w(0)?, elem_size: w(1)?, block: w(2)?, total: w(3)? };
            if i.seg == 0 || i.elem_size == 0 || i.block == 0 {
                return Err(format!("zip input {k} has a zero segment, element size or block"));
            }
            inputs.push(i);
        }
        let h = ZipHeader { inputs };
        if params.len() < h.len() {
            return Err("a zip header cut short".into());
        }
        Ok(h)
    }
}

/// The byte range (offset, length) of `input` that the chunk `d` reads: its units
/// `d.start .. d.start + d.len`.
///
/// # Errors
///
/// A sentence when the range overflows.
pub(crate) fn byte_range(d: &Descriptor, input: &ZipInput) -> Result<(usize, usize), String> {
    let elems = |unit: u64| unit.checked_mul(input.block).map(|e| e.min(input.total));
    let end_unit = d.start.checked_add(d.len);
    let (Some(first), Some(end)) = (elems(d.start), end_unit.and_then(elems)) else {
        return Err(format!("zip input range of units {}+{} overflows", d.start, d.len));
    };
    let bytes = |e: u64| e.checked_mul(input.elem_size).and_then(|b| usize::try_from(b).ok());
    match (bytes(first), bytes(end)) {
        (Some(a), Some(b)) if a <= b => Ok((a, b - a)),
        _ => Err(format!("zip input range of units {}+{} overflows", d.start, d.len)),
    }
}

/// The extra inputs of the chunk whose ranges `io` holds (`io` proves the chunk is claimed by
/// this process), as the header names them, resolved with `resolve`.
///
/// # Errors
///
/// A sentence for a range outside its segment or overlapping the output (the chunk is then
/// corrupt), or `resolve`'s error.
pub(crate) fn zip_inputs<'a>(
    io: &ChunkIo<'a>,
    d: &Descriptor,
    header: &ZipHeader,
    mut resolve: impl FnMut(u64) -> crate::Result<&'a Segment>,
) -> Result<Vec<&'a [u8]>, String> {
    let _claimed = io;
    let out_len = d.len.saturating_mul(u64::from(d.out_size));
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for input in &header.inputs {
        let (off, len) = byte_range(d, input)?;
        // The output is written through `&mut`: nothing read may overlap it.
        let (o, l) = (off as u64, len as u64);
        if input.seg == d.out_seg
            && len > 0
            && out_len > 0
            && o < d.out_off.saturating_add(out_len)
            && d.out_off < o + l
        {
            return Err("a zip input overlaps the chunk's output".into());
        }
        let seg = resolve(input.seg).map_err(|e| e.to_string())?;
        // SAFETY: the chunk is CLAIMED by this process (`io` exists only for a live claim), so
        // its map is running and its caller borrows every input shared for the whole map:
        // nobody writes them meanwhile (the pool's safety model, as for `chunk_io`'s input);
        // the range overlaps no output of this chunk (checked above) and `Segment::data`
        // checks it against the segment.
        let bytes = unsafe { seg.data(off, len) }.map_err(|e| e.to_string())?;
        inputs.push(bytes);
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_keep_the_kernel_block_aligned() {
        let h = ZipHeader { inputs: vec![ZipInput { seg: 7, elem_size: 4, block: 1, total: 10 }; 3] };
        let bytes = h.encode(&[9, 9]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&bytes[h.len()..], &[9, 9]);
        assert_eq!(ZipHeader::parse(&bytes).unwrap(), h);
        assert!(ZipHeader::parse(&bytes[..16]).is_err());
        assert!(ZipHeader::parse(&[0; 64]).is_err(), "no inputs");
    }

    #[test]
    fn unit_ranges_are_clamped_to_the_input() {
        let d = Descriptor { start: 2, len: 2, ..Descriptor::default() };
        let i = ZipInput { seg: 1, elem_size: 8, block: 10, total: 35 };
        assert_eq!(byte_range(&d, &i).unwrap(), (160, 120));
        let d = Descriptor { start: u64::MAX, len: 2, ..Descriptor::default() };
        assert!(byte_range(&d, &i).is_err());
    }
}
