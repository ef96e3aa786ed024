//! Kernels over several inputs ("zip maps") and the kernels of the generic reductions
//! (`Pool::reduce`, `Pool::map_reduce`).
//!
//! A several-input kernel is a [`ZipTrampoline`]: it receives the chunk's input ranges as a list,
//! the descriptor's own input first, then the extra inputs the map caller named in the
//! parameter block's zip header (`ring::zip`), each sliced by the worker to the chunk's units.
//! Its keyed tag lives in its own domain (see `KernelRef`), so a one-input trampoline can never
//! be called with this signature, nor the reverse.
//!
//! A reduction maps *blocks*: unit `b` of the map is elements `b * REDUCE_BLOCK ..` of every
//! data input, and its output is one accumulator, the block's partial result. The descriptor's
//! own input is a byte per block (its content unused); the data inputs come through the zip
//! header. Inside a block an element map folds leaves of [`LEAF`] elements from the identity,
//! then combines the leaves with [`pairwise`]; the caller combines the blocks' partials with
//! [`pairwise`] too. Block and leaf boundaries depend on the input's length only, never on the
//! number of workers or on which worker ran what, so the result is the same for any pool.
//!
//! This module must never touch shared memory or processes.

use std::marker::PhantomData;
use std::ops::Range;

use bytemuck::Pod;

use super::marker::{Chunk, Elem, ZipChunk, ZipChunkWith, ZipElem, ZipElemWith};
use super::shape::sealed::{KernelSealed, Sealed};
use super::shape::{Fits, Kernel, With};
use super::trampoline::{conjure, with_params};
use super::{ElemType, KernelSpec, FILLS, MAY_READ};
use crate::error::{Error, Result};
use crate::kernel::Side;

/// What a several-input trampoline receives: the parameter block (after the zip header), the
/// chunk's input ranges (the descriptor's own first), the output bytes, and the flat index of
/// the chunk's first unit.
pub(crate) type ZipTrampoline = fn(params: &[u8], inputs: &[&[u8]], output: &mut [u8], start: u64);

/// Elements per reduction block: one partial result each, computed by one worker.
pub(crate) const REDUCE_BLOCK: usize = 1 << 16;
/// Elements per leaf of an element map's reduction inside a block (folded in order from the
/// identity; leaves are then combined pairwise).
pub(crate) const LEAF: usize = 256;

/// The element type of several inputs read together (a tuple of inputs, `(&a, &b)`), and of
/// the kernels that read them: `Zip<(A, B)>`. Inferred, never named.
///
/// # Examples
///
/// ```
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::new(2)?;
/// let (a, b) = (shmpool::SharedVec::from_slice(&[1.0f64, 2.0, 3.0])?, [10i32, 20, 30]);
/// let sums = pool.map(&(&a, &b), |(x, k): (f64, i32)| x + k as f64)?;
/// assert_eq!(sums, [11.0, 22.0, 33.0]);
/// # Ok(()) }
/// ```
///
/// A zip kernel whose element types are not the inputs' is a compile error:
///
/// ```compile_fail,E0277
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::new(1)?;
/// let _ = pool.map(&(&[1.0f32], &[2.0f64]), |(x, y): (f64, f64)| x + y)?; // f32 data, f64 kernel
/// # Ok(()) }
/// ```
///
/// and so is one that captures (pass values with `.with(params)`):
///
/// ```compile_fail,E0080
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::new(1)?;
/// let k = 2.0;
/// let _ = pool.map(&(&[1.0f64], &[2.0f64]), move |(x, y): (f64, f64)| x * k + y)?;
/// # Ok(()) }
/// ```
pub struct Zip<T>(PhantomData<fn() -> T>);

mod reduce_sealed {
    /// What a reduction kernel hands the pool; sealed so the list of shapes stays the crate's.
    pub trait ReduceSealed<M, A> {
        /// Calls `f` with the reduction's kernel for the accumulator `identity` and the
        /// combine `C`.
        fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
            self,
            identity: &A,
            f: impl FnOnce(ReduceKernel<'_>) -> crate::Result<R>,
        ) -> crate::Result<R>;
    }

    /// How a reduction runs.
    #[derive(Debug)]
    pub enum ReduceKernel<'s> {
        /// A block reduction kernel (one partial result per block).
        Blocks(&'s crate::kernel::KernelSpec),
        /// A map kernel: the pool maps the input into a shared array first, then reduces that.
        MapFirst(&'s crate::kernel::KernelSpec),
    }
}
pub(crate) use reduce_sealed::{ReduceKernel, ReduceSealed};

/// The element function of [`crate::Pool::map_reduce`]: `Fn(T) -> A` over one input,
/// `Fn((T0, T1, ..)) -> A` over a tuple of inputs (up to four). A closure that captures nothing.
pub trait ElemMap<M, A>: ReduceSealed<M, A> {
    /// The element type the function reads.
    type In;
}

/// The chunk fold of [`crate::Pool::reduce`]: `Fn(A, &[T]) -> A` over one input,
/// `Fn(A, (&[T0], &[T1], ..)) -> A` over a tuple of inputs (up to four). A closure that
/// captures nothing.
pub trait ChunkFold<M, A>: ReduceSealed<M, A> {
    /// The element type the fold reads.
    type In;
}

/// Rejects, when the program is built, a kernel or combine type with bytes: the worker
/// rebuilds it from nothing.
pub(super) fn assert_zero_sized<F>() {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a kernel or combine function captures variables: it must be a fn item or a closure that captures nothing (pass values in the identity, or map with `kernel.with(params)`)"
        )
    }
}

/// Combines `n` values, produced in order by `leaf`, with a fixed tree: pairs of equal
/// height are combined as soon as both exist (a binary counter), the remaining heights right
/// to left. The left operand always holds the earlier values (an associative `combine` need
/// not commute), and the tree depends on `n` only. `None` when `n` is 0. One allocation per
/// call (the pending subtrees, at most one per bit of `n`: on the heap, since an accumulator
/// may be large), none per value.
pub(crate) fn pairwise<A: Pod>(n: usize, mut leaf: impl FnMut(usize) -> A, combine: impl Fn(A, A) -> A) -> Option<A> {
    let mut pending: Vec<(u32, A)> = Vec::with_capacity(usize::BITS as usize + 1);
    for k in 0..n {
        let (mut v, mut h) = (leaf(k), 0);
        while let Some(&(top, left)) = pending.last().filter(|p| p.0 == h) {
            pending.pop();
            v = combine(left, v);
            h = top + 1;
        }
        pending.push((h, v));
    }
    let (_, mut acc) = pending.pop()?;
    while let Some((_, left)) = pending.pop() {
        acc = combine(left, acc);
    }
    Some(acc)
}

/// The accumulator's identity, from the parameter block.
pub(super) fn identity<A: Pod>(params: &[u8]) -> A {
    bytemuck::pod_read_unaligned(&params[..std::mem::size_of::<A>()])
}

/// A chunk's input range as `n` elements of `T` (the worker sliced every input to the chunk).
fn cast_n<T: Pod>(bytes: &[u8], n: usize) -> &[T] {
    let x: &[T] = bytemuck::cast_slice(bytes);
    assert_eq!(x.len(), n, "zip input chunk lengths differ");
    x
}

/// Accumulators from this size on are reduced on a stack of their own ([`big_stack`]).
const BIG_ACCUMULATOR: usize = 4 << 10;

/// Runs `f`, which passes accumulators of type `A` by value (through user functions, folds and
/// the [`pairwise`] tree, several copies per frame in a debug build), on a fresh stack of 64
/// accumulators plus 4 MiB when `A` is large, so that no accumulator size can overflow the
/// worker's (or the caller's) stack; small accumulators run in place.
pub(crate) fn big_stack<A, R>(f: impl FnOnce() -> R) -> R {
    let size = std::mem::size_of::<A>();
    if size < BIG_ACCUMULATOR {
        return f();
    }
    stacker::grow(size.saturating_mul(64).saturating_add(4 << 20), f)
}

/// Writes one partial result per block of a reduction chunk holding `n` elements.
pub(super) fn blocks<A: Pod>(output: &mut [u8], n: usize, mut block: impl FnMut(Range<usize>) -> A) {
    let out: &mut [A] = bytemuck::cast_slice_mut(output);
    big_stack::<A, ()>(|| {
        for (b, o) in out.iter_mut().enumerate() {
            *o = block((b * REDUCE_BLOCK).min(n)..((b + 1) * REDUCE_BLOCK).min(n));
        }
    })
}

/// Reduces one block: leaves of [`LEAF`] elements by `leaf`, combined [`pairwise`].
pub(super) fn leaves<A: Pod>(r: Range<usize>, id: A, c: impl Fn(A, A) -> A, leaf: impl Fn(Range<usize>) -> A) -> A {
    let at = |k: usize| r.start + k * LEAF;
    pairwise(r.len().div_ceil(LEAF), |k| leaf(at(k)..at(k + 1).min(r.end)), c).unwrap_or(id)
}

/// The blocks of `map_reduce` over one input `x`: `f` of each value, combined by `c`.
pub(super) fn map_reduce_blocks<T: Pod, A: Pod>(
    output: &mut [u8],
    x: &[T],
    id: A,
    c: impl Fn(A, A) -> A + Copy,
    f: impl Fn(T) -> A + Copy,
) {
    blocks(output, x.len(), |r| leaves(r, id, c, |r| x[r].iter().fold(id, |acc, &v| c(acc, f(v)))));
}

fn map_reduce1<T: Pod, A: Pod, F: Fn(T) -> A + Copy, C: Fn(A, A) -> A + Copy>(
    params: &[u8],
    inputs: &[&[u8]],
    output: &mut [u8],
    _: u64,
) {
    let (f, c, id) = (conjure::<F>(), conjure::<C>(), identity::<A>(params));
    map_reduce_blocks(output, bytemuck::cast_slice::<u8, T>(inputs[1]), id, c, f);
}

fn fold1<T: Pod, A: Pod, F: Fn(A, &[T]) -> A + Copy>(params: &[u8], inputs: &[&[u8]], output: &mut [u8], _: u64) {
    let (f, id) = (conjure::<F>(), identity::<A>(params));
    let x: &[T] = bytemuck::cast_slice(inputs[1]);
    blocks(output, x.len(), |r| f(id, &x[r]));
}

/// A reduction's kernel spec: a byte per block in, one `A` per block out, `data` the data
/// inputs' element types, the identity as the parameter block.
pub(super) fn reduce_spec<A: Pod>(t: ZipTrampoline, data: Vec<ElemType>, identity: &A) -> KernelSpec {
    KernelSpec::new_zip::<A>(t, ElemType::of::<u8>(), data, bytemuck::bytes_of(identity).to_vec(), FILLS)
}

impl<T: Pod, A: Pod, F: Fn(T) -> A + Copy + 'static> ReduceSealed<Elem<T, A>, A> for F {
    fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
        self,
        identity: &A,
        f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
    ) -> Result<R> {
        assert_zero_sized::<F>();
        assert_zero_sized::<C>();
        f(ReduceKernel::Blocks(&reduce_spec(map_reduce1::<T, A, F, C>, vec![ElemType::of::<T>()], identity)))
    }
}
impl<T: Pod, A: Pod, F: Fn(T) -> A + Copy + 'static> ElemMap<Elem<T, A>, A> for F {
    type In = T;
}
impl<T: Pod, A: Pod, F: Fn(A, &[T]) -> A + Copy + 'static> ReduceSealed<Chunk<T, A>, A> for F {
    fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
        self,
        identity: &A,
        f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
    ) -> Result<R> {
        assert_zero_sized::<F>();
        assert_zero_sized::<C>();
        f(ReduceKernel::Blocks(&reduce_spec(fold1::<T, A, F>, vec![ElemType::of::<T>()], identity)))
    }
}
impl<T: Pod, A: Pod, F: Fn(A, &[T]) -> A + Copy + 'static> ChunkFold<Chunk<T, A>, A> for F {
    type In = T;
}

/// Everything of one arity: the `Zip` element type's `Fits`, the zip map kernels
/// (element and chunk) and the reduction kernels, with their trampolines in module `$m`.
macro_rules! zip_arity {
    ($m:ident; $($K:ident $D:ident $i:tt),+) => {
        impl<$($D: Sealed),+> Sealed for Zip<($($D,)+)> {}
        impl<$($D, $K),+> Fits<Zip<($($K,)+)>> for Zip<($($D,)+)> where $($D: Fits<$K>),+ {}

        mod $m {
            use super::*;

            pub(super) fn elem<$($K: Pod,)+ Out: Pod, F: Fn(($($K,)+)) -> Out + Copy>(
                _: &[u8], inputs: &[&[u8]], output: &mut [u8], _: u64,
            ) {
                let f = conjure::<F>();
                let o: &mut [Out] = bytemuck::cast_slice_mut(output);
                let n = o.len();
                let x = ($(cast_n::<$K>(inputs[$i], n),)+);
                for (k, o) in o.iter_mut().enumerate() {
                    *o = f(($(x.$i[k],)+));
                }
            }

            pub(super) fn chunk<$($K: Pod,)+ Out: Pod, F: Fn(($(&[$K],)+), &mut [Out]) + Copy>(
                _: &[u8], inputs: &[&[u8]], output: &mut [u8], _: u64,
            ) {
                let f = conjure::<F>();
                let o: &mut [Out] = bytemuck::cast_slice_mut(output);
                let n = o.len();
                f(($(cast_n::<$K>(inputs[$i], n),)+), o)
            }

            pub(super) fn elem_with<$($K: Pod,)+ Out: Pod, P: Pod, F: Fn(($($K,)+), &P) -> Out + Copy>(
                params: &[u8], inputs: &[&[u8]], output: &mut [u8], _: u64,
            ) {
                let f = conjure::<F>();
                let o: &mut [Out] = bytemuck::cast_slice_mut(output);
                let n = o.len();
                let x = ($(cast_n::<$K>(inputs[$i], n),)+);
                with_params(params, |p: &P| {
                    for (k, o) in o.iter_mut().enumerate() {
                        *o = f(($(x.$i[k],)+), p);
                    }
                })
            }

            pub(super) fn chunk_with<$($K: Pod,)+ Out: Pod, P: Pod, F: Fn(($(&[$K],)+), &mut [Out], &P) + Copy>(
                params: &[u8], inputs: &[&[u8]], output: &mut [u8], _: u64,
            ) {
                let f = conjure::<F>();
                let o: &mut [Out] = bytemuck::cast_slice_mut(output);
                let n = o.len();
                let x = ($(cast_n::<$K>(inputs[$i], n),)+);
                with_params(params, |p: &P| f(x, o, p))
            }

            pub(super) fn map_reduce<$($K: Pod,)+ A: Pod, F: Fn(($($K,)+)) -> A + Copy, C: Fn(A, A) -> A + Copy>(
                params: &[u8], inputs: &[&[u8]], output: &mut [u8], _: u64,
            ) {
                let (f, c, id) = (conjure::<F>(), conjure::<C>(), identity::<A>(params));
                let n = inputs[1].len() / std::mem::size_of::<K0>();
                let x = ($(cast_n::<$K>(inputs[$i + 1], n),)+);
                blocks(output, n, |r| leaves(r, id, c, |r| {
                    let mut acc = id;
                    for k in r {
                        acc = c(acc, f(($(x.$i[k],)+)));
                    }
                    acc
                }));
            }

            pub(super) fn fold<$($K: Pod,)+ A: Pod, F: Fn(A, ($(&[$K],)+)) -> A + Copy>(
                params: &[u8], inputs: &[&[u8]], output: &mut [u8], _: u64,
            ) {
                let (f, id) = (conjure::<F>(), identity::<A>(params));
                let n = inputs[1].len() / std::mem::size_of::<K0>();
                let x = ($(cast_n::<$K>(inputs[$i + 1], n),)+);
                blocks(output, n, |r| f(id, ($(&x.$i[r.clone()],)+)));
            }
        }

        impl<$($K: Pod,)+ Out: Pod, F> KernelSealed<ZipElem<($($K,)+), Out>> for F
        where F: Fn(($($K,)+)) -> Out + Copy + 'static {
            fn with_spec<R>(self, f: impl FnOnce(&KernelSpec) -> Result<R>) -> Result<R> {
                assert_zero_sized::<F>();
                let data = vec![$(ElemType::of::<$K>()),+];
                f(&KernelSpec::new_zip::<Out>($m::elem::<$($K,)+ Out, F>, data[0], data, Vec::new(), FILLS))
            }
        }
        impl<$($K: Pod,)+ Out: Pod, F> Kernel<ZipElem<($($K,)+), Out>> for F
        where F: Fn(($($K,)+)) -> Out + Copy + 'static {
            type In = Zip<($($K,)+)>;
            type Out = Out;
        }
        impl<$($K: Pod,)+ Out: Pod, F> KernelSealed<ZipChunk<($($K,)+), Out>> for F
        where F: Fn(($(&[$K],)+), &mut [Out]) + Copy + 'static {
            fn with_spec<R>(self, f: impl FnOnce(&KernelSpec) -> Result<R>) -> Result<R> {
                assert_zero_sized::<F>();
                let data = vec![$(ElemType::of::<$K>()),+];
                f(&KernelSpec::new_zip::<Out>($m::chunk::<$($K,)+ Out, F>, data[0], data, Vec::new(), MAY_READ))
            }
        }
        impl<$($K: Pod,)+ Out: Pod, F> Kernel<ZipChunk<($($K,)+), Out>> for F
        where F: Fn(($(&[$K],)+), &mut [Out]) + Copy + 'static {
            type In = Zip<($($K,)+)>;
            type Out = Out;
        }

        impl<$($K: Pod,)+ Out: Pod, P: Pod, F> KernelSealed<ZipElemWith<($($K,)+), Out, P>> for With<F, P>
        where F: Fn(($($K,)+), &P) -> Out + Copy + 'static {
            fn with_spec<R>(self, f: impl FnOnce(&KernelSpec) -> Result<R>) -> Result<R> {
                assert_zero_sized::<F>();
                let data = vec![$(ElemType::of::<$K>()),+];
                let t = $m::elem_with::<$($K,)+ Out, P, F>;
                f(&KernelSpec::new_zip::<Out>(t, data[0], data, self.params, FILLS))
            }
        }
        impl<$($K: Pod,)+ Out: Pod, P: Pod, F> Kernel<ZipElemWith<($($K,)+), Out, P>> for With<F, P>
        where F: Fn(($($K,)+), &P) -> Out + Copy + 'static {
            type In = Zip<($($K,)+)>;
            type Out = Out;
        }
        impl<$($K: Pod,)+ Out: Pod, P: Pod, F> KernelSealed<ZipChunkWith<($($K,)+), Out, P>> for With<F, P>
        where F: Fn(($(&[$K],)+), &mut [Out], &P) + Copy + 'static {
            fn with_spec<R>(self, f: impl FnOnce(&KernelSpec) -> Result<R>) -> Result<R> {
                assert_zero_sized::<F>();
                let data = vec![$(ElemType::of::<$K>()),+];
                let t = $m::chunk_with::<$($K,)+ Out, P, F>;
                f(&KernelSpec::new_zip::<Out>(t, data[0], data, self.params, MAY_READ))
            }
        }
        impl<$($K: Pod,)+ Out: Pod, P: Pod, F> Kernel<ZipChunkWith<($($K,)+), Out, P>> for With<F, P>
        where F: Fn(($(&[$K],)+), &mut [Out], &P) + Copy + 'static {
            type In = Zip<($($K,)+)>;
            type Out = Out;
        }

        impl<$($K: Pod,)+ A: Pod, F> ReduceSealed<ZipElem<($($K,)+), A>, A> for F
        where F: Fn(($($K,)+)) -> A + Copy + 'static {
            fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
                self,
                identity: &A,
                f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
            ) -> Result<R> {
                assert_zero_sized::<F>();
                assert_zero_sized::<C>();
                f(ReduceKernel::Blocks(&reduce_spec($m::map_reduce::<$($K,)+ A, F, C>, vec![$(ElemType::of::<$K>()),+], identity)))
            }
        }
        impl<$($K: Pod,)+ A: Pod, F> ElemMap<ZipElem<($($K,)+), A>, A> for F
        where F: Fn(($($K,)+)) -> A + Copy + 'static {
            type In = Zip<($($K,)+)>;
        }
        impl<$($K: Pod,)+ A: Pod, F> ReduceSealed<ZipChunk<($($K,)+), A>, A> for F
        where F: Fn(A, ($(&[$K],)+)) -> A + Copy + 'static {
            fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
                self,
                identity: &A,
                f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
            ) -> Result<R> {
                assert_zero_sized::<F>();
                assert_zero_sized::<C>();
                f(ReduceKernel::Blocks(&reduce_spec($m::fold::<$($K,)+ A, F>, vec![$(ElemType::of::<$K>()),+], identity)))
            }
        }
        impl<$($K: Pod,)+ A: Pod, F> ChunkFold<ZipChunk<($($K,)+), A>, A> for F
        where F: Fn(A, ($(&[$K],)+)) -> A + Copy + 'static {
            type In = Zip<($($K,)+)>;
        }
    };
}

zip_arity!(a2; K0 D0 0, K1 D1 1);
zip_arity!(a3; K0 D0 0, K1 D1 1, K2 D2 2);
zip_arity!(a4; K0 D0 0, K1 D1 1, K2 D2 2, K3 D3 3);

fn side_name(s: Side) -> String {
    match s {
        Side::Typed(t) => t.describe(),
        Side::Dtype(d) => d.to_string(),
    }
}

impl KernelSpec {
    /// Checks a several-input kernel against the element types of its data inputs and output.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] naming both sides; [`Error::ForeignKernel`].
    pub(crate) fn check_zip_sides(&self, inputs: &[Side], output: Side) -> Result<()> {
        self.check_image()?;
        let same = self.zip.len() == inputs.len() && self.zip.iter().zip(inputs).all(|(k, s)| k.fits(*s));
        if same && self.output.fits(output) {
            return Ok(());
        }
        let list = |v: Vec<String>| format!("({})", v.join(", "));
        Err(Error::TypeMismatch {
            kernel: format!("{} -> {}", list(self.zip.iter().map(|t| t.describe()).collect()), self.output.describe()),
            data: format!("{} -> {}", list(inputs.iter().map(|s| side_name(*s)).collect()), side_name(output)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_keeps_order_and_depends_on_the_count_only() {
        // A combine that is associative but not commutative: concatenation of digit strings.
        let cat =
            |n: usize| pairwise(n, |k| [k as u64 + 1, 10], |a, b| [a[0] * b[1] + b[0], a[1] * b[1]]).map(|v| v[0]);
        assert_eq!(cat(0), None);
        assert_eq!(cat(1), Some(1));
        assert_eq!(cat(3), Some(123), "1, 2, 3 in order");
        assert_eq!(cat(7), Some(1_234_567));
        assert_eq!(pairwise(1000, |k| [k as u64], |a, b| [a[0] + b[0]]), Some([499_500]));
    }
}
