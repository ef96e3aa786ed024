//! Changing a freshly planned map before anything is filled: moving it to part of its
//! segments, making it several-input, re-cutting its chunks.
#![deny(unsafe_code)]

use super::MapRun;
use crate::error::Result;
use crate::ring::{index, Descriptor};

impl MapRun<'_> {
    /// Moves a freshly planned shared map (nothing filled yet) to elements
    /// `first_elem..first_elem + len` of its segments, and makes the kernel see indices starting
    /// at `first_index`. Chunk ranges (and the ranges errors name) become segment elements.
    pub(in crate::pool) fn place(mut self, first_elem: usize, first_index: u64) -> Self {
        debug_assert!(self.layout.is_none() && self.next == 0, "placed before anything is filled");
        for c in &mut self.books.chunks {
            *c = c.start + first_elem..c.end + first_elem;
        }
        self.index_shift = first_index.wrapping_sub(first_elem as u64);
        self
    }

    /// Makes a freshly planned map several-input: every chunk gets [`Descriptor::ZIP`] and
    /// the zip header's keyed `digest` (32 bits, see `ZipHeader::digest`).
    pub(in crate::pool) fn with_zip(mut self, digest: u32) -> Self {
        debug_assert!(self.next == 0, "flagged before anything is filled");
        self.flags |= Descriptor::ZIP;
        self.zip_digest = digest;
        self
    }

    /// Re-plans a freshly planned shared map for units of `unit_bytes` bytes read and written
    /// (a several-input map reads more than its descriptor's own input).
    ///
    /// # Errors
    ///
    /// Those of taking the new chunks' scratch areas (see `scratch.rs`), if they need some.
    pub(in crate::pool) fn replan(mut self, unit_bytes: usize, fixed: Option<usize>, max_bytes: usize) -> Result<Self> {
        debug_assert!(self.layout.is_none() && self.next == 0, "re-planned before anything is filled");
        let workers = self.shared.cfg.workers;
        let max_bytes =
            if self.scratch.is_some() { max_bytes.min(crate::pool::scratch::CHUNK_BYTES) } else { max_bytes };
        index::plan_into(&mut self.books.chunks, self.len, workers, unit_bytes, fixed, usize::MAX, max_bytes);
        self.books.finished.clear();
        self.books.finished.resize(self.books.chunks.len(), false);
        if let Some((old, _)) = self.scratch.take() {
            self.pool.give_back(old);
            self.scratch = Some(crate::pool::scratch::take(self.pool, self.out_size, &self.books.chunks)?);
        }
        Ok(self)
    }
}
