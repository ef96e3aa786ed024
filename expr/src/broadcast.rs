//! numpy's broadcasting of several inputs: the output shape, and each input's elements
//! gathered for a range of the output's flat indices. An input whose shape is the output's is
//! read in place; a broadcast one is gathered a piece at a time (never whole).

use crate::{eval, Error, Program, Result};

/// Output elements evaluated per piece (whole blocks of the evaluator).
const PIECE: usize = 16 * crate::BLOCK;

/// numpy's broadcast shape of `shapes`: aligned on the right, each dimension equal or 1.
///
/// # Errors
///
/// [`Error::Broadcast`] with numpy's words when the shapes are incompatible.
pub fn broadcast_shapes(shapes: &[&[u64]]) -> Result<Vec<u64>> {
    let ndim = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1u64; ndim];
    for s in shapes {
        for (k, &d) in s.iter().enumerate() {
            let o = &mut out[ndim - s.len() + k];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(Error::Broadcast { shapes: numpy_shapes(shapes) });
            }
        }
    }
    Ok(out)
}

/// Shapes as numpy prints them in its error: `(1000,300) (299,)`.
fn numpy_shapes(shapes: &[&[u64]]) -> String {
    let one = |s: &[u64]| match s {
        [d] => format!("({d},)"),
        _ => format!("({})", s.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
    };
    shapes.iter().map(|s| one(s)).collect::<Vec<_>>().join(" ")
}

/// Elements of a shape, or `None` on overflow.
fn count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// One input seen through the output's shape: its element strides per output dimension (0
/// where it is broadcast).
struct View<'a> {
    bytes: &'a [u8],
    size: usize,
    strides: Vec<u64>,
    /// Its shape is the output's: element `j` of the output is its element `j`.
    full: bool,
}

impl View<'_> {
    /// The input's elements for output flat indices `first .. first + n`, into `buf`: one copy
    /// per run along the output's last dimension (a slice of the input's row, or one element
    /// repeated where that dimension is broadcast), never one per element.
    fn gather(&self, out_shape: &[u64], first: u64, n: usize, buf: &mut Vec<u8>) {
        buf.clear();
        let size = self.size;
        let Some(last) = out_shape.len().checked_sub(1) else {
            // A 0-d output: its one element.
            return repeat(buf, &self.bytes[..size], n);
        };
        // The multi-index of `first`, then counted up like an odometer, a run at a time.
        let mut idx = vec![0u64; out_shape.len()];
        let mut rest = first;
        for k in (0..=last).rev() {
            idx[k] = rest % out_shape[k];
            rest /= out_shape[k];
        }
        let mut off: u64 = idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
        let mut left = n;
        while left > 0 {
            let run = ((out_shape[last] - idx[last]) as usize).min(left);
            let at = off as usize * size;
            match self.strides[last] {
                // Broadcast along the last dimension: one element, `run` times.
                0 => repeat(buf, &self.bytes[at..at + size], run),
                // The input's own last dimension (C order): `run` consecutive elements.
                _ => buf.extend_from_slice(&self.bytes[at..at + run * size]),
            }
            left -= run;
            idx[last] += run as u64;
            off += self.strides[last] * run as u64;
            for k in (0..=last).rev() {
                if idx[k] < out_shape[k] {
                    break;
                }
                off -= self.strides[k] * idx[k];
                idx[k] = 0;
                if k > 0 {
                    idx[k - 1] += 1;
                    off += self.strides[k - 1];
                }
            }
        }
    }
}

/// C-order element strides of an input of `shape`, aligned on the right of the output's
/// dimensions: 0 where it is broadcast.
fn strides(shape: &[u64], out_shape: &[u64]) -> Vec<u64> {
    let pad = out_shape.len() - shape.len();
    let mut strides = vec![0u64; out_shape.len()];
    let mut step = 1u64;
    for k in (0..shape.len()).rev() {
        strides[pad + k] = if shape[k] == 1 && out_shape[pad + k] != 1 { 0 } else { step };
        step *= shape[k];
    }
    strides
}

/// Appends `elem` to `buf` `times` times, doubling what it copies.
fn repeat(buf: &mut Vec<u8>, elem: &[u8], times: usize) {
    let (start, want) = (buf.len(), elem.len() * times);
    if times > 0 {
        buf.extend_from_slice(elem);
    }
    while buf.len() - start < want {
        let have = buf.len() - start;
        buf.extend_from_within(start..start + have.min(want - have));
    }
}

pub(crate) fn eval(
    prog: &Program,
    inputs: &[(&[u8], &[u64])],
    output: &mut [u8],
    range: std::ops::Range<u64>,
) -> Result<()> {
    let shapes: Vec<&[u64]> = inputs.iter().map(|&(_, s)| s).collect();
    let out_shape = broadcast_shapes(&shapes)?;
    let total = count(&out_shape).ok_or(Error::LengthMismatch { input: usize::MAX, output: output.len() })?;
    let osz = prog.output_dtype().size();
    let n = range.end.saturating_sub(range.start);
    if range.start > range.end || range.end > total || output.len() as u64 != n * osz as u64 {
        return Err(Error::LengthMismatch { input: total as usize, output: output.len() / osz });
    }
    let mut views = Vec::with_capacity(inputs.len());
    for (&(bytes, shape), d) in inputs.iter().zip(prog.input_dtypes()) {
        let elems = count(shape).filter(|&c| c.checked_mul(d.size() as u64) == Some(bytes.len() as u64));
        if elems.is_none() {
            return Err(Error::LengthMismatch { input: bytes.len() / d.size(), output: total as usize });
        }
        let full = shape == out_shape.as_slice();
        views.push(View { bytes, size: d.size(), strides: strides(shape, &out_shape), full });
    }
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); views.len()];
    let mut at = range.start;
    while at < range.end {
        let m = (range.end - at).min(PIECE as u64) as usize;
        for (v, buf) in views.iter().zip(bufs.iter_mut()) {
            if !v.full {
                v.gather(&out_shape, at, m, buf);
            }
        }
        let chunks: Vec<&[u8]> = views
            .iter()
            .zip(&bufs)
            .map(|(v, buf)| if v.full { &v.bytes[at as usize * v.size..(at as usize + m) * v.size] } else { &buf[..] })
            .collect();
        let o = ((at - range.start) as usize) * osz;
        eval::run(prog, &chunks, &mut output[o..o + m * osz], at)?;
        at += m as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gather one element at a time: the definition the run-wise one must match.
    fn naive(v: &View<'_>, out_shape: &[u64], first: u64, n: usize) -> Vec<u8> {
        (first..first + n as u64)
            .flat_map(|j| {
                let (mut rest, mut off) = (j, 0u64);
                for k in (0..out_shape.len()).rev() {
                    off += (rest % out_shape[k]) * v.strides[k];
                    rest /= out_shape[k];
                }
                let at = off as usize * v.size;
                v.bytes[at..at + v.size].to_vec()
            })
            .collect()
    }

    #[test]
    fn runs_gather_what_single_elements_do_for_every_shape_and_range() {
        let shapes: &[(&[u64], &[u64])] = &[
            (&[], &[]),
            (&[], &[5]),
            (&[1], &[4, 3]),
            (&[3], &[4, 3]),
            (&[4, 1], &[4, 3]),
            (&[1, 3], &[4, 3]),
            (&[2, 1, 3], &[2, 5, 3]),
            (&[5, 1], &[2, 5, 7]),
            (&[1, 1, 1], &[3, 2, 4]),
            (&[3, 2, 4], &[3, 2, 4]),
            (&[7], &[1, 7]),
        ];
        for &(shape, out_shape) in shapes {
            let elems: u64 = shape.iter().product();
            let bytes: Vec<u8> = (0..elems * 2).map(|b| b as u8).collect();
            let v = View { bytes: &bytes, size: 2, strides: strides(shape, out_shape), full: false };
            let total: u64 = out_shape.iter().product();
            let mut buf = Vec::new();
            for first in 0..=total {
                for n in 0..=(total - first) as usize {
                    v.gather(out_shape, first, n, &mut buf);
                    assert_eq!(buf, naive(&v, out_shape, first, n), "{shape:?} -> {out_shape:?}, {first}+{n}");
                }
            }
        }
    }
}
