//! An expression's reductions over `.npy` files (feature `expr`), in parallel across a pool's
//! workers: [`reduce_npy`] to one value (`np.sum(a * b)`) and [`reduce_npy_axis`] along one
//! axis (`np.sum(a * b, axis=1)`). They are maps of the pool's public verbs (`map_into` of a
//! block kernel into a shared array of partial results) followed by numpy's join, so they
//! live here, above the pool, not beside its verbs. Each chunk of the map is a run of blocks;
//! each block's partial result is one output element; the caller joins them in block order.
#![deny(unsafe_code)]

mod axis;

pub use axis::{reduce_npy_axis, reduce_npy_axis_into, reduce_npy_axis_shape, AxisResult};

use crate::error::{Error, Result};
use crate::{KernelSpec, NpyArray, Pool, SharedVec};

/// Reduces an expression over several `.npy` inputs to one value (feature `expr`), in
/// parallel across the workers: `np.sum(a * b)` is `reduce_npy(&pool, &program,
/// inputs, &[], Reduction::Sum)` with `program` from [`crate::kernel::expr::Program::compile_inputs`].
/// Each worker reduces blocks of 8,192 values read from its own mapping of the files; the
/// partial results are joined in block order, so the result does not depend on the number
/// of workers. The program's last inputs may be `constants` (0-d: the values of
/// reductions inside the expression, computed first). Returns numpy's value and its
/// warning in words, if numpy warns.
///
/// The workers map the very files the arrays map (checked by device and inode), while the
/// arrays are borrowed: the promise made to [`NpyArray::open`] covers them.
///
/// # Errors
///
/// As [`KernelSpec::expr_files`] and [`Pool::map`]; [`Error::Expr`] for numpy's errors
/// (`min` of nothing, a negative integer power).
pub fn reduce_npy(
    pool: &Pool,
    program: &crate::kernel::expr::Program,
    inputs: &[(&std::path::Path, &NpyArray)],
    constants: &[crate::kernel::expr::Value],
    reduction: crate::kernel::expr::Reduction,
) -> Result<(crate::kernel::expr::Value, Option<&'static str>)> {
    use crate::kernel::expr::{Reducer, REDUCER_BYTES};
    let mut r = Reducer::new(reduction, program.output_dtype());
    let passes = if r.two_passes() { 2 } else { 1 };
    for pass in 0..passes {
        if pass == 1 {
            r.second_pass();
        }
        let (spec, total) = KernelSpec::reduce_blocks(&r, program, inputs, constants)?;
        let blocks = total.div_ceil(crate::kernel::expr::reduce_block_len(&r, total)) as usize;
        if blocks == 0 {
            break;
        }
        let ids = SharedVec::<u64>::from_slice(&(0..blocks as u64).collect::<Vec<_>>())?;
        let mut parts = pool.alloc::<[u8; REDUCER_BYTES]>(blocks)?;
        pool.map_into(&ids, &mut parts, &spec)?;
        let mut acc: Option<Reducer> = None;
        for p in parts.iter() {
            let p = Reducer::from_bytes(p).ok_or(Error::Protocol { what: "partial result", value: 0 })?;
            match acc.as_mut() {
                None => acc = Some(p),
                Some(a) => a.merge(&p),
            }
        }
        r = acc.expect("at least one block");
    }
    Ok(r.finish()?)
}
