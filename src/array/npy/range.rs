//! A range of a `.npy` file's elements as a map's input ([`NpyArray::range`]) or output
//! ([`NpyOutput::range`]), read and written in place: how several processes (MPI ranks, jobs
//! of a scheduler) each map their own slice of one file into one output, with
//! [`crate::KernelSpec::index_offset`] for the flat indices the kernel sees.
#![deny(unsafe_code)]

use std::ops::Range;

use super::{NpyArray, NpyOutput};
use crate::array::io::sealed::{InputSealed, OutputSealed};
use crate::array::{Data, Input, Output, Side, Sink, Source, Target};
use crate::error::{Error, Result};
use crate::kernel::Dynamic;

/// Elements `range` of a `.npy` input, read in place ([`NpyArray::range`]).
#[derive(Clone)]
pub struct NpyRange<'a> {
    array: &'a NpyArray,
    range: Range<usize>,
}

/// Elements `range` of a `.npy` output, written in place; the rest of the file is left as it
/// is ([`NpyOutput::range`]).
pub struct NpyRangeMut<'a> {
    output: &'a mut NpyOutput,
    range: Range<usize>,
}

impl std::fmt::Debug for NpyRange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpyRange").field("dtype", &self.array.dtype()).field("range", &self.range).finish()
    }
}
impl std::fmt::Debug for NpyRangeMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.output.path();
        f.debug_struct("NpyRangeMut").field("path", &path).field("range", &self.range).finish()
    }
}

/// Checks `range` against `len` elements.
fn check(range: &Range<usize>, len: usize) -> Result<()> {
    if range.end > len {
        return Err(Error::InvalidOption {
            option: "range end",
            value: range.end as u64,
            allowed: "at most the number of elements",
        });
    }
    if range.start > range.end {
        return Err(Error::InvalidOption {
            option: "range start",
            value: range.start as u64,
            allowed: "at most the range end",
        });
    }
    Ok(())
}

impl NpyArray {
    /// Elements `range` (flat, C order) of this array, as a map's [`Input`], read in place.
    /// A map from it into the same range of a `.npy` output ([`NpyOutput::range`]) runs in
    /// place on both sides; the kernel sees indices from 0 unless the spec says otherwise
    /// ([`crate::KernelSpec::index_offset`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::{Dtype, KernelSpec, NpyArray, NpyOutput, Pool};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut x = NpyOutput::create(dir.path().join("x.npy"), Dtype::F64, &[10])?;
    /// x.as_mut_slice::<f64>()?.fill(1.0);
    /// x.commit()?;
    /// // SAFETY: nothing else writes x.npy while it is mapped.
    /// let src = unsafe { NpyArray::open(dir.path().join("x.npy")) }?;
    /// let spec = KernelSpec::indexed(|x: &[f64], y: &mut [f64], i: u64| {
    ///     for (k, (y, x)) in y.iter_mut().zip(x).enumerate() { *y = x + (i + k as u64) as f64; }
    /// });
    /// let mut out = NpyOutput::create(dir.path().join("y.npy"), Dtype::F64, &[10])?;
    /// let pool = Pool::new(2)?;
    /// for r in [0..4, 4..10] {
    ///     pool.map_into(&src.range(r.clone())?, &mut out.range(r.clone())?, &spec.index_offset(r.start as u64))?;
    /// }
    /// assert_eq!(out.as_slice::<f64>()?[7], 8.0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when `range` is reversed or ends past the array.
    pub fn range(&self, range: Range<usize>) -> Result<NpyRange<'_>> {
        check(&range, self.len())?;
        Ok(NpyRange { array: self, range })
    }
}

impl NpyOutput {
    /// Elements `range` (flat, C order) of this output, as a map's [`Output`], written in
    /// place (the other elements are left as they are). See [`NpyArray::range`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when `range` is reversed or ends past the array.
    pub fn range(&mut self, range: Range<usize>) -> Result<NpyRangeMut<'_>> {
        check(&range, self.len())?;
        Ok(NpyRangeMut { output: self, range })
    }
}

impl InputSealed for NpyRange<'_> {
    fn source(&self) -> Result<Source<'_>> {
        let size = self.array.dtype().size();
        let bytes = &self.array.bytes()?[self.range.start * size..self.range.end * size];
        let data = Data::Shared { seg: self.array.segment(), bytes, off: self.range.start * size };
        Ok(Source { data, side: Side::Dtype(self.array.dtype()) })
    }
}
impl Input for NpyRange<'_> {
    type Elem = Dynamic;
}

impl OutputSealed for NpyRangeMut<'_> {
    fn target(&mut self) -> Result<Target<'_>> {
        let size = self.output.dtype().size();
        let (off, len) = (self.range.start * size, self.range.len() * size);
        let side = Side::Dtype(self.output.dtype());
        let sink = Sink::Shared { seg: self.output.segment(), len, path: Some(self.output.path()), off };
        Ok(Target { sink, side })
    }
}
impl Output for NpyRangeMut<'_> {
    type Elem = Dynamic;
}
