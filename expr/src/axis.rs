//! Reductions along one axis of an n-d array (`sum(x, axis=1)`), as numpy's: the reduced
//! shape, numpy's `AxisError` for an axis beyond the dimensions, and the values of a range of
//! the reduced array's elements. Each element of the result is reduced whole, in index order
//! along the axis, by one [`Reducer`] (compensated float sums, numpy's result types): a range
//! computed anywhere gives the same bytes, so splitting the result across workers changes
//! nothing.

use std::ops::Range;

use crate::{Dtype, Error, Reducer, Reduction, Result};

/// Elements of the result reduced side by side (their reducers live together).
const GROUP: u64 = 1024;
/// Values asked of the source per call, at most (whole rows when the group spans them).
const PIECE: u64 = 16 * crate::BLOCK as u64;

/// A reduction along one axis of an array of a given shape, seen as `(outer, len, inner)`:
/// the result has `outer * inner` elements, element `o * inner + q` reducing the values at
/// flat indices `(o * len + j) * inner + q` for `j` in `0..len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisReduction {
    kind: Reduction,
    input: Dtype,
    outer: u64,
    len: u64,
    inner: u64,
}

/// Where an axis reduction reads its values: `values(flat, buf)` writes the input's elements at
/// flat indices `flat` into `buf`.
pub type ValueSource<'a> = dyn FnMut(Range<u64>, &mut [u8]) -> Result<()> + 'a;

/// numpy's warnings of a reduction, by code (`0`: none): what [`warning_code`] gives.
const WARNINGS: [&str; 3] = ["Mean of empty slice", "Degrees of freedom <= 0 for slice", "All-NaN slice encountered"];

/// A reduction's warning (from [`crate::Reducer::finish`]) as one byte, to travel between
/// processes: `0` for none.
pub fn warning_code(w: Option<&str>) -> u8 {
    w.and_then(|w| WARNINGS.iter().position(|x| *x == w)).map_or(0, |k| k as u8 + 1)
}

/// The warning of [`warning_code`]'s byte.
pub fn warning_of_code(code: u8) -> Option<&'static str> {
    WARNINGS.get(usize::from(code).checked_sub(1)?).copied()
}

/// Words of [`AxisReduction::to_words`].
pub const AXIS_WORDS: usize = 5;

/// `axis` of an array of `ndim` dimensions as an index, or numpy's `AxisError`.
///
/// # Errors
///
/// [`Error::Axis`] unless `-ndim <= axis < ndim`.
pub fn normalize_axis(axis: i64, ndim: usize) -> Result<usize> {
    let n = ndim as i64;
    if axis < -n || axis >= n {
        return Err(Error::Axis { axis, ndim });
    }
    Ok(if axis < 0 { (axis + n) as usize } else { axis as usize })
}

impl AxisReduction {
    /// The reduction `kind` along `axis` of an array of `shape` whose values are of `input`,
    /// and the result's shape (`shape` without the axis).
    ///
    /// # Errors
    ///
    /// [`Error::Axis`] (numpy's `AxisError`) for an axis beyond the dimensions.
    pub fn new(kind: Reduction, input: Dtype, shape: &[u64], axis: i64) -> Result<(AxisReduction, Vec<u64>)> {
        // numpy reduces a 0-d array along axis 0 or -1 as its one element.
        if shape.is_empty() && (axis == 0 || axis == -1) {
            return Ok((AxisReduction { kind, input, outer: 1, len: 1, inner: 1 }, Vec::new()));
        }
        let k = normalize_axis(axis, shape.len())?;
        if shape[k] == 0 {
            // numpy refuses these along an empty axis even when the result is empty too.
            use Reduction::*;
            let what = match kind {
                Min => "minimum",
                Max => "maximum",
                NanMin => "fmin",
                NanMax => "fmax",
                ArgMin => "argmin",
                ArgMax => "argmax",
                _ => "",
            };
            if !what.is_empty() {
                return Err(Error::EmptyReduction { operation: what });
            }
        }
        let outer = shape[..k].iter().product();
        let inner = shape[k + 1..].iter().product();
        let mut out = shape.to_vec();
        out.remove(k);
        Ok((AxisReduction { kind, input, outer, len: shape[k], inner }, out))
    }

    /// numpy's dtype of the result's elements.
    pub fn result_dtype(&self) -> Dtype {
        self.kind.result_dtype(self.input)
    }

    /// Elements of the result.
    pub fn result_len(&self) -> u64 {
        self.outer * self.inner
    }

    /// Values of the input (elements reduced into each result element times the result's).
    pub fn input_len(&self) -> u64 {
        self.outer * self.len * self.inner
    }

    /// The reduction as words (a kernel's parameters).
    pub fn to_words(&self) -> [u64; AXIS_WORDS] {
        let kind = Reduction::names().position(|n| n == self.kind.name()).expect("named") as u64;
        let input = Dtype::ALL.iter().position(|d| *d == self.input).expect("in ALL") as u64;
        [kind, input, self.outer, self.len, self.inner]
    }

    /// The reduction from [`AxisReduction::to_words`]; `None` if the words are not one.
    pub fn from_words(w: &[u64; AXIS_WORDS]) -> Option<AxisReduction> {
        let kind = Reduction::names().nth(usize::try_from(w[0]).ok()?)?.parse().ok()?;
        let input = *Dtype::ALL.get(usize::try_from(w[1]).ok()?)?;
        w[2].checked_mul(w[3])?.checked_mul(w[4])?;
        Some(AxisReduction { kind, input, outer: w[2], len: w[3], inner: w[4] })
    }

    /// Computes the result's elements `range` into `out` (their bytes in the result dtype),
    /// asking `values(flat, buf)` for the input's values at flat indices `flat` (elements of
    /// the input dtype, written into `buf`). Returns numpy's warning in words, if it warns.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] when `out` is not `range`'s elements or the range is beyond
    /// the result; what `values` returns; [`Error::EmptyReduction`] for `min`/`max`/`argmin`/
    /// `argmax` along an axis of length 0.
    pub fn reduce_range(
        &self,
        range: Range<u64>,
        values: &mut ValueSource<'_>,
        out: &mut [u8],
    ) -> Result<Option<&'static str>> {
        let rsz = self.result_dtype().size();
        let n = range.end.saturating_sub(range.start);
        if range.end > self.result_len() || out.len() as u64 != n * rsz as u64 {
            return Err(Error::LengthMismatch { input: self.result_len() as usize, output: out.len() / rsz });
        }
        let mut warning = None;
        let mut buf = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let (o, q0) = (at / self.inner, at % self.inner);
            // Along the last axis, short rows are reduced many at a time (their values are
            // contiguous); otherwise a group is part of one row of the inner dimensions.
            let nq = if self.inner == 1 { (PIECE / self.len.max(1)).max(1) } else { self.inner - q0 };
            let nq = nq.min(GROUP).min(range.end - at);
            let mut rs = vec![Reducer::new(self.kind, self.input); nq as usize];
            self.pass(o, q0, &mut rs, values, &mut buf)?;
            if rs[0].two_passes() {
                rs.iter_mut().for_each(Reducer::second_pass);
                self.pass(o, q0, &mut rs, values, &mut buf)?;
            }
            for (k, r) in rs.iter().enumerate() {
                let (v, w) = r.finish()?;
                warning = warning.or(w);
                let to = (at - range.start) as usize + k;
                out[to * rsz..(to + 1) * rsz].copy_from_slice(&v.to_le_bytes());
            }
            at += nq;
        }
        Ok(warning)
    }

    /// One pass over the values of the result elements `o * inner + q0 ..` (one per reducer
    /// of `rs`), in index order along the axis.
    fn pass(&self, o: u64, q0: u64, rs: &mut [Reducer], values: &mut ValueSource<'_>, buf: &mut Vec<u8>) -> Result<()> {
        let isz = self.input.size();
        let nq = rs.len() as u64;
        let base = o * self.len * self.inner;
        if self.inner == 1 && nq > 1 {
            // Whole short rows `o .. o + nq` of the last axis, one after the other.
            let count = nq * self.len;
            buf.resize(count as usize * isz, 0);
            values(base..base + count, buf)?;
            if self.len > 0 {
                for (r, row) in rs.iter_mut().zip(buf.chunks_exact(self.len as usize * isz)) {
                    r.update(row, 0)?;
                }
            }
            return Ok(());
        }
        // The group spans whole rows: several rows are contiguous, ask for them together.
        let rows = if nq == self.inner { (PIECE / self.inner).max(1) } else { 1 };
        let mut j0 = 0;
        while j0 < self.len {
            let m = rows.min(self.len - j0);
            let first = base + j0 * self.inner + q0;
            let count = if nq == self.inner { m * self.inner } else { nq };
            buf.resize(count as usize * isz, 0);
            values(first..first + count, buf)?;
            if nq == 1 && self.inner == 1 {
                rs[0].update(buf, j0)?;
            } else {
                for (p, v) in buf.chunks_exact(isz).enumerate() {
                    let p = p as u64;
                    rs[(p % nq) as usize].update(v, j0 + p / nq)?;
                }
            }
            j0 += m;
        }
        Ok(())
    }
}
