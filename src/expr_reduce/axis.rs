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
    let mut shapes: Vec<&[u64]> = inputs.iter().map(|(_, a)| a.shape()).collect();
    shapes.extend(constants.iter().map(|_| &[][..]));
    let shape = expr::broadcast_shapes(&shapes)?;
    let (r, out_shape) = AxisReduction::new(reduction, program.output_dtype(), &shape, axis)?;
    let rsz = r.result_dtype().size();
    let n = r.result_len();
    let mut bytes = vec![0u8; n as usize * rsz];
    let result = |bytes, warning| AxisResult { dtype: r.result_dtype(), shape: out_shape.clone(), bytes, warning };
    if n == 0 || r.input_len() == 0 {
        // No value to read: numpy's empty result, its warning or its error.
        let warning = r.reduce_range(0..n, &mut |_, _| Ok(()), &mut bytes)?;
        return Ok(result(bytes, warning));
    }
    let spec = KernelSpec::reduce_axis_blocks(&r, program, inputs, constants)?;
    let blocks = n.div_ceil(AXIS_BLOCK) as usize;
    let ids = SharedVec::<u64>::from_slice(&(0..blocks as u64).collect::<Vec<_>>())?;
    let mut parts = pool.alloc::<[u8; AXIS_UNIT]>(blocks)?;
    pool.map_into(&ids, &mut parts, &spec)?;
    let mut warning = None;
    for (k, (p, dst)) in parts.iter().zip(bytes.chunks_mut(AXIS_BLOCK as usize * rsz)).enumerate() {
        dst.copy_from_slice(&p[..dst.len()]);
        warning = warning.or(expr::warning_of_code(p[AXIS_UNIT - 1]));
        if p[AXIS_UNIT - 1] != 0 && warning.is_none() {
            return Err(Error::Protocol { what: "axis reduction warning", value: k as u64 });
        }
    }
    Ok(result(bytes, warning))
}
