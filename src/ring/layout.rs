//! Where a chunk's parameter block, input and output sit: computed and checked here, nowhere
//! else. The map caller computes inline offsets with [`InlineLayout`]; the claiming worker
//! checks whatever descriptor it finds with [`io_ranges`] before it touches a byte. Pure
//! arithmetic on integers, so property tests and Miri can run it as is.

use super::slot::Descriptor;

/// Alignment of every inline area (any element type shmpool accepts is aligned to at most this).
pub(crate) const ALIGN: usize = 64;

/// A parameter block larger than this share of a slot payload travels in a shared segment of
/// its own instead of inline (see [`Descriptor::params_seg`]).
pub(crate) fn params_inline(params_len: usize, payload_cap: usize) -> bool {
    params_len.next_multiple_of(ALIGN) <= payload_cap / 2
}

/// The inline layout of one map's chunks: parameter block at 0, input after it, output after
/// the input, each 64-byte aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InlineLayout {
    params_room: usize,
    in_size: usize,
    out_size: usize,
    max_len: usize,
}

impl InlineLayout {
    /// The layout for elements of `in_size` / `out_size` bytes after `inline_params` bytes of
    /// parameter block, in a payload of `cap` bytes; `None` when not even one element fits.
    pub(crate) fn new(cap: usize, inline_params: usize, in_size: usize, out_size: usize) -> Option<InlineLayout> {
        let params_room = inline_params.next_multiple_of(ALIGN);
        // Room for the data after the parameter block, minus the worst-case padding of the
        // input and the output areas.
        let room = cap.checked_sub(params_room)?.checked_sub(2 * ALIGN)?;
        let max_len = room / in_size.checked_add(out_size).filter(|&b| b > 0)?;
        (max_len > 0).then_some(InlineLayout { params_room, in_size, out_size, max_len })
    }

    /// Most elements one inline chunk can carry.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    /// Payload offset of the input of a chunk.
    pub(crate) fn in_off(&self) -> usize {
        self.params_room
    }

    /// Payload offset of the output of a chunk of `len` elements.
    pub(crate) fn out_off(&self, len: usize) -> usize {
        debug_assert!(len <= self.max_len);
        self.params_room + (len * self.in_size).next_multiple_of(ALIGN)
    }

    /// Bytes of output of a chunk of `len` elements.
    pub(crate) fn out_bytes(&self, len: usize) -> usize {
        len * self.out_size
    }
}

/// Where a byte range lives: the slot's inline payload or a segment (by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The claimed slot's payload.
    Inline,
    /// A segment the caller registered with the pool.
    Segment(u64),
}

/// A checked byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub place: Place,
    pub offset: usize,
    pub len: usize,
}

/// The three ranges a chunk touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IoRanges {
    pub params: Span,
    pub input: Span,
    pub output: Span,
}

fn place(id: u64) -> Place {
    if id == 0 {
        Place::Inline
    } else {
        Place::Segment(id)
    }
}

/// Checks a descriptor's arithmetic against a payload of `cap` bytes: sizes non-zero, no
/// overflow, inline ranges inside the payload, the output overlapping nothing that is read.
/// Segment ranges are checked against their segment when it is resolved.
///
/// # Errors
///
/// A sentence saying which check failed.
pub(crate) fn io_ranges(d: &Descriptor, cap: usize) -> Result<IoRanges, String> {
    if d.in_size == 0 || d.out_size == 0 {
        return Err("zero element size".into());
    }
    let to_usize = |v: u64, what: &str| usize::try_from(v).map_err(|_| format!("{what} {v} overflows"));
    let bytes = |n: u32| {
        d.len
            .checked_mul(u64::from(n))
            .ok_or_else(|| format!("length {} overflows", d.len))
            .and_then(|b| to_usize(b, "size"))
    };
    let span = |id: u64, off: u64, len: usize, what: &str| -> Result<Span, String> {
        let s = Span { place: place(id), offset: to_usize(off, what)?, len };
        if s.place == Place::Inline && s.offset.checked_add(len).is_none_or(|e| e > cap) {
            return Err(format!("inline {what} {}+{len} exceeds the payload of {cap} bytes", s.offset));
        }
        Ok(s)
    };
    let params = span(d.params_seg, 0, to_usize(d.params_len, "parameter length")?, "parameter block")?;
    let input = span(d.in_seg, d.in_off, bytes(d.in_size)?, "input")?;
    let output = span(d.out_seg, d.out_off, bytes(d.out_size)?, "output")?;
    // The output is written through `&mut`: it must not overlap anything read.
    let overlaps = |a: &Span, b: &Span| {
        a.place == b.place && a.len > 0 && b.len > 0 && a.offset < b.offset + b.len && b.offset < a.offset + a.len
    };
    if overlaps(&output, &params) {
        return Err("output overlaps the parameter block".into());
    }
    if overlaps(&output, &input) {
        return Err("output range overlaps the input range".into());
    }
    Ok(IoRanges { params, input, output })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]

        /// Every layout the caller computes passes the worker's check, for every chunk length.
        #[test]
        fn computed_layouts_pass_the_check(cap in 0usize..200_000, params in 0usize..4096,
                                           in_size in 1usize..=16, out_size in 1usize..=16, frac in 0.0f64..=1.0) {
            if let Some(l) = InlineLayout::new(cap, params, in_size, out_size) {
                let len = ((l.max_len() as f64 * frac) as usize).max(1);
                let d = Descriptor {
                    len: len as u64, in_size: in_size as u32, out_size: out_size as u32,
                    params_len: params as u64, in_off: l.in_off() as u64, out_off: l.out_off(len) as u64,
                    ..Descriptor::default()
                };
                let r = io_ranges(&d, cap).unwrap();
                prop_assert!(r.output.offset + r.output.len <= cap);
                prop_assert_eq!(l.out_bytes(len), r.output.len);
            }
        }

        /// Random descriptors never produce ranges outside the payload or an output that
        /// overlaps an input.
        #[test]
        fn random_descriptors_are_refused_or_in_bounds(len in any::<u64>(), in_off in any::<u64>(), out_off in any::<u64>(),
                                                       params_len in any::<u64>(), in_size in 0u32..64, out_size in 0u32..64) {
            let cap = 65_536;
            let d = Descriptor { len, in_off, out_off, params_len, in_size, out_size, ..Descriptor::default() };
            if let Ok(r) = io_ranges(&d, cap) {
                for s in [r.params, r.input, r.output] {
                    prop_assert!(s.offset + s.len <= cap);
                }
                prop_assert!(r.output.len == 0 || r.output.offset >= r.input.offset + r.input.len
                    || r.input.offset >= r.output.offset + r.output.len || r.input.len == 0);
            }
        }
    }
}
