//! [`reduce_npy_axis`]: an expression's reduction along one axis (`np.sum(a * b,
//! axis=1)`), in parallel across the workers (feature `expr`). Each chunk of the map is a run of
//! blocks of the result's elements; each element is reduced whole by one worker, in index
//! order along the axis, so the result does not depend on the number of workers.
#![deny(unsafe_code)]

use crate::error::{Error, Result};
use crate::kernel::expr::{self, AxisReduction, Program, Reduction, Value, AXIS_BLOCK, AXIS_UNIT};
use crate::{KernelSpec, NpyArray, Pool, SharedVec};

/// The array an axis reduction gives: numpy's dtype, the shape, the elements' bytes (C order,
/// little-endian) and numpy's warning in words, if numpy warns.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisResult {
    /// numpy's result dtype.
    pub dtype: crate::Dtype,
    /// The input's broadcast shape without the axis.
    pub shape: Vec<u64>,
    /// The elements, C order, little-endian.
    pub bytes: Vec<u8>,
    /// numpy's warning (`Mean of empty slice`), if it warns.
    pub warning: Option<&'static str>,
}

/// Reduces an expression over several `.npy` inputs along `axis` (negative counts from
/// the last; feature `expr`), as numpy's `np.sum(a * b, axis=1)`, in parallel across the
/// workers; arguments as [`super::reduce_npy`], whose memory rules it keeps (the result is
/// held in memory: it is the input's size divided by the axis's length).
///
/// # Errors
///
/// As [`super::reduce_npy`]; [`Error::Expr`] with [`expr::Error::Axis`] (numpy's
/// `AxisError`) for an axis beyond the broadcast shape's dimensions.
pub fn reduce_npy_axis(
    pool: &Pool,
    program: &Program,
    inputs: &[(&std::path::Path, &NpyArray)],
    constants: &[Value],
    reduction: Reduction,
    axis: i64,
) -> Result<AxisResult> {
    let (dtype, shape) = reduce_npy_axis_shape(program, inputs, constants, reduction, axis)?;
    let mut bytes = vec![0u8; shape.iter().product::<u64>() as usize * dtype.size()];
    let warning = reduce_npy_axis_into(pool, program, inputs, constants, reduction, axis, &mut bytes)?;
    Ok(AxisResult { dtype, shape, bytes, warning })
}

/// The dtype and shape of [`reduce_npy_axis`]'s result (feature `expr`).
///
/// # Errors
///
/// As [`reduce_npy_axis`], for the shapes and the axis.
pub fn reduce_npy_axis_shape(
    program: &Program,
    inputs: &[(&std::path::Path, &NpyArray)],
    constants: &[Value],
    reduction: Reduction,
    axis: i64,
) -> Result<(crate::Dtype, Vec<u64>)> {
    let (r, out_shape) = axis_reduction(program, inputs, constants, reduction, axis)?;
    Ok((r.result_dtype(), out_shape))
}

/// [`reduce_npy_axis`] into `out`, the result's elements (C order, little-endian;
/// its length from [`reduce_npy_axis_shape`]), e.g. a mapped `.npy` output: memory
/// beyond `out` stays bounded (the workers' partial results pass through a window of at
/// most 4 MiB). Returns numpy's warning, if numpy warns.
///
/// # Errors
///
/// As [`reduce_npy_axis`]; [`Error::LengthMismatch`] when `out` is not the result's
/// size.
pub fn reduce_npy_axis_into(
    pool: &Pool,
    program: &Program,
    inputs: &[(&std::path::Path, &NpyArray)],
    constants: &[Value],
    reduction: Reduction,
    axis: i64,
    out: &mut [u8],
) -> Result<Option<&'static str>> {
    let (r, _) = axis_reduction(program, inputs, constants, reduction, axis)?;
    let rsz = r.result_dtype().size();
    let n = r.result_len();
    if out.len() as u64 != n * rsz as u64 {
        return Err(Error::LengthMismatch { input: n as usize, output: out.len() / rsz });
    }
    if n == 0 || r.input_len() == 0 {
        // No value to read: numpy's empty result, its warning or its error.
        return Ok(r.reduce_range(0..n, &mut |_, _| Ok(()), out)?);
    }
    let spec = KernelSpec::reduce_axis_blocks(&r, program, inputs, constants)?;
    let blocks = n.div_ceil(AXIS_BLOCK) as usize;
    let mut warning = None;
    let per = (WINDOW / AXIS_UNIT).max(1);
    for (w, dst) in out.chunks_mut(per * AXIS_BLOCK as usize * rsz).enumerate() {
        let first = (w * per) as u64;
        let count = per.min(blocks - w * per);
        let ids = SharedVec::<u64>::from_slice(&(first..first + count as u64).collect::<Vec<_>>())?;
        let mut parts = pool.alloc::<[u8; AXIS_UNIT]>(count)?;
        pool.map_into(&ids, &mut parts, &spec)?;
        for (k, (p, dst)) in parts.iter().zip(dst.chunks_mut(AXIS_BLOCK as usize * rsz)).enumerate() {
            dst.copy_from_slice(&p[..dst.len()]);
            warning = warning.or(expr::warning_of_code(p[AXIS_UNIT - 1]));
            if p[AXIS_UNIT - 1] != 0 && warning.is_none() {
                return Err(Error::Protocol { what: "axis reduction warning", value: first + k as u64 });
            }
        }
    }
    Ok(warning)
}

/// Bytes of partial results one window of an axis reduction's map holds.
const WINDOW: usize = 4 << 20;

/// The axis reduction over the inputs' broadcast shape, and its result's shape.
fn axis_reduction(
    program: &Program,
    inputs: &[(&std::path::Path, &NpyArray)],
    constants: &[Value],
    reduction: Reduction,
    axis: i64,
) -> Result<(AxisReduction, Vec<u64>)> {
    let mut shapes: Vec<&[u64]> = inputs.iter().map(|(_, a)| a.shape()).collect();
    shapes.extend(constants.iter().map(|_| &[][..]));
    let shape = expr::broadcast_shapes(&shapes)?;
    Ok(AxisReduction::new(reduction, program.output_dtype(), &shape, axis)?)
}
