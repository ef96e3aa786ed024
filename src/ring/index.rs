//! Pure arithmetic of chunking: which index ranges a map is cut into. No memory, no processes,
//! so Miri and property tests can run it as is.

use std::ops::Range;

/// Smallest chunk the default plan makes, in bytes of input plus output.
pub(crate) const MIN_CHUNK_BYTES: usize = 64 * 1024;
/// Largest chunk the default plan makes for arrays in shared memory, in bytes of input plus
/// output: large, so that each worker streams through long contiguous ranges (hardware
/// prefetchers and TLBs like that, and it is what rayon's recursive splitting achieves).
pub(crate) const MAX_CHUNK_BYTES: usize = 256 * 1024 * 1024;
/// Largest chunk for memory-mapped files: a worker keeps one chunk's pages resident before it
/// releases them, so this bounds its resident memory when streaming files larger than RAM.
pub(crate) const MAX_FILE_CHUNK_BYTES: usize = 32 * 1024 * 1024;

/// Cuts `0..len` into consecutive chunks, in order, covering every index exactly once.
///
/// With `fixed = Some(n)` every chunk has `n` elements (the last one may be shorter). Otherwise
/// the plan is *guided*: each chunk takes `remaining / (2 * workers)` elements, clamped to
/// [`MIN_CHUNK_BYTES`, `max_bytes`] worth of elements, so the first chunks are large
/// (little per-chunk overhead) and the last ones small (the workers finish together). No chunk
/// ever exceeds `max_len` elements.
#[cfg(test)]
pub(crate) fn plan(
    len: usize,
    workers: usize,
    bytes_per_elem: usize,
    fixed: Option<usize>,
    max_len: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    plan_into(&mut out, len, workers, bytes_per_elem, fixed, max_len, max_bytes);
    out
}

/// [`plan`] into a reused vector (cleared first): no allocation once it is large enough.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_into(
    out: &mut Vec<Range<usize>>,
    len: usize,
    workers: usize,
    bytes_per_elem: usize,
    fixed: Option<usize>,
    max_len: usize,
    max_bytes: usize,
) {
    out.clear();
    let max_len = max_len.max(1);
    let mut start = 0;
    if let Some(n) = fixed {
        let n = n.clamp(1, max_len);
        while start < len {
            let end = len.min(start + n);
            out.push(start..end);
            start = end;
        }
        return;
    }
    let bpe = bytes_per_elem.max(1);
    let min = (MIN_CHUNK_BYTES / bpe).clamp(1, max_len);
    let max = (max_bytes.max(MIN_CHUNK_BYTES) / bpe).clamp(min, max_len);
    let div = 2 * workers.max(1);
    while start < len {
        let remaining = len - start;
        let n = (remaining / div).clamp(min, max).min(remaining);
        out.push(start..start + n);
        start += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_cover(len: usize, chunks: &[Range<usize>]) {
        let mut next = 0;
        for c in chunks {
            assert_eq!(c.start, next, "chunks are consecutive and in order");
            assert!(c.end > c.start, "no empty chunk");
            next = c.end;
        }
        assert_eq!(next, len, "every index covered");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(plan(0, 4, 16, None, usize::MAX, MAX_CHUNK_BYTES).is_empty());
        assert!(plan(0, 4, 16, Some(10), usize::MAX, MAX_CHUNK_BYTES).is_empty());
    }

    #[test]
    fn length_not_divisible_by_chunk_gets_a_short_last_chunk() {
        let c = plan(10, 2, 8, Some(4), usize::MAX, MAX_CHUNK_BYTES);
        assert_eq!(c, vec![0..4, 4..8, 8..10]);
    }

    #[test]
    fn guided_plan_shrinks_towards_the_end() {
        let c = plan(10_000_000, 2, 16, None, usize::MAX, MAX_FILE_CHUNK_BYTES);
        check_cover(10_000_000, &c);
        assert!(c.first().unwrap().len() >= c.last().unwrap().len());
        assert!(c.iter().all(|r| r.len() * 16 <= MAX_FILE_CHUNK_BYTES));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]
        #[test]
        fn chunks_cover_every_index_exactly_once_in_order(
            len in 0usize..2_000_000,
            workers in 1usize..9,
            bpe in 1usize..64,
            fixed in proptest::option::of(1usize..100_000),
            max_len in 1usize..1_000_000,
        ) {
            let c = plan(len, workers, bpe, fixed, max_len, MAX_CHUNK_BYTES);
            check_cover(len, &c);
            prop_assert!(c.iter().all(|r| r.len() <= max_len));
        }
    }
}
