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
    /// The input's elements for output flat indices `first .. first + n`, into `buf`.
    fn gather(&self, out_shape: &[u64], first: u64, n: usize, buf: &mut Vec<u8>) {
        buf.clear();
        let nd = out_shape.len();
        // The multi-index of `first`, then counted up like an odometer.
        let mut idx = vec![0u64; nd];
        let mut rest = first;
        for k in (0..nd).rev() {
            idx[k] = rest % out_shape[k];
            rest /= out_shape[k];
        }
        let mut off: u64 = idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
        for _ in 0..n {
            let at = off as usize * self.size;
            buf.extend_from_slice(&self.bytes[at..at + self.size]);
            for k in (0..nd).rev() {
                idx[k] += 1;
                off += self.strides[k];
                if idx[k] < out_shape[k] {
                    break;
                }
                off -= self.strides[k] * idx[k];
                idx[k] = 0;
            }
        }
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
        // C-order strides of the input, aligned on the right of the output's dimensions.
        let pad = out_shape.len() - shape.len();
        let mut strides = vec![0u64; out_shape.len()];
        let mut step = 1u64;
        for k in (0..shape.len()).rev() {
            strides[pad + k] = if shape[k] == 1 && out_shape[pad + k] != 1 { 0 } else { step };
            step *= shape[k];
        }
        let full = pad == 0 && shape == out_shape.as_slice();
        views.push(View { bytes, size: d.size(), strides, full });
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
