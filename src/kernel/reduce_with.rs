//! The reductions' other kernel forms: an element map or chunk fold with a parameter block
//! (`f.with(p)`), and a prepared [`KernelSpec`] (`&spec`, `spec.typed::<In, A>()?`) as the
//! element map of `Pool::map_reduce`.
//!
//! With a parameter block, the reduction's parameter block is the identity's bytes followed by
//! the parameters' (read unaligned when they are not aligned). A spec is a map kernel, not a
//! block reduction: the pool maps the input into a shared array of accumulators first, then
//! reduces that array with the identity map, so the grouping (and the result) is that of an
//! element map over the same values.
//!
//! This module must never touch shared memory or processes.

use bytemuck::Pod;

use super::marker::{ChunkWith, ElemWith, Spec};
use super::shape::{Dynamic, Typed, With};
use super::trampoline::{conjure, with_params};
use super::zip::{
    assert_zero_sized, blocks, identity, map_reduce_blocks, reduce_spec, ChunkFold, ElemMap, ReduceKernel, ReduceSealed,
};
use super::{ElemType, KernelSpec};
use crate::error::Result;

/// The parameter block after the identity.
fn params_of<A: Pod>(params: &[u8]) -> &[u8] {
    &params[std::mem::size_of::<A>()..]
}

fn map_reduce_with<T: Pod, A: Pod, P: Pod, F: Fn(T, &P) -> A + Copy, C: Fn(A, A) -> A + Copy>(
    params: &[u8],
    inputs: &[&[u8]],
    output: &mut [u8],
    _: u64,
) {
    let (f, c, id) = (conjure::<F>(), conjure::<C>(), identity::<A>(params));
    let x: &[T] = bytemuck::cast_slice(inputs[1]);
    with_params(params_of::<A>(params), |p: &P| map_reduce_blocks(output, x, id, c, |v| f(v, p)));
}

fn fold_with<T: Pod, A: Pod, P: Pod, F: Fn(A, &[T], &P) -> A + Copy>(
    params: &[u8],
    inputs: &[&[u8]],
    output: &mut [u8],
    _: u64,
) {
    let (f, id) = (conjure::<F>(), identity::<A>(params));
    let x: &[T] = bytemuck::cast_slice(inputs[1]);
    with_params(params_of::<A>(params), |p: &P| blocks(output, x.len(), |r| f(id, &x[r], p)));
}

/// A reduction's spec whose parameter block is the identity then `params`.
fn spec_with<A: Pod>(t: super::zip::ZipTrampoline, data: ElemType, identity: &A, params: &[u8]) -> KernelSpec {
    let mut spec = reduce_spec(t, vec![data], identity);
    spec.params.extend_from_slice(params);
    spec
}

impl<T: Pod, A: Pod, P: Pod, F: Fn(T, &P) -> A + Copy + 'static> ReduceSealed<ElemWith<T, A, P>, A> for With<F, P> {
    fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
        self,
        identity: &A,
        f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
    ) -> Result<R> {
        assert_zero_sized::<F>();
        assert_zero_sized::<C>();
        let t = map_reduce_with::<T, A, P, F, C>;
        f(ReduceKernel::Blocks(&spec_with(t, ElemType::of::<T>(), identity, &self.params)))
    }
}
impl<T: Pod, A: Pod, P: Pod, F: Fn(T, &P) -> A + Copy + 'static> ElemMap<ElemWith<T, A, P>, A> for With<F, P> {
    type In = T;
}

impl<T: Pod, A: Pod, P: Pod, F: Fn(A, &[T], &P) -> A + Copy + 'static> ReduceSealed<ChunkWith<T, A, P>, A>
    for With<F, P>
{
    fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
        self,
        identity: &A,
        f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
    ) -> Result<R> {
        assert_zero_sized::<F>();
        assert_zero_sized::<C>();
        let t = fold_with::<T, A, P, F>;
        f(ReduceKernel::Blocks(&spec_with(t, ElemType::of::<T>(), identity, &self.params)))
    }
}
impl<T: Pod, A: Pod, P: Pod, F: Fn(A, &[T], &P) -> A + Copy + 'static> ChunkFold<ChunkWith<T, A, P>, A> for With<F, P> {
    type In = T;
}

impl<A: Pod> ReduceSealed<Spec<Dynamic, Dynamic>, A> for &KernelSpec {
    fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
        self,
        _: &A,
        f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
    ) -> Result<R> {
        assert_zero_sized::<C>();
        f(ReduceKernel::MapFirst(self))
    }
}
impl<A: Pod> ElemMap<Spec<Dynamic, Dynamic>, A> for &KernelSpec {
    type In = Dynamic;
}

impl<In: Pod, A: Pod> ReduceSealed<Spec<In, A>, A> for Typed<'_, In, A> {
    fn with_reduce<C: Fn(A, A) -> A + Copy + 'static, R>(
        self,
        _: &A,
        f: impl FnOnce(ReduceKernel<'_>) -> Result<R>,
    ) -> Result<R> {
        assert_zero_sized::<C>();
        f(ReduceKernel::MapFirst(self.spec()))
    }
}
impl<In: Pod, A: Pod> ElemMap<Spec<In, A>, A> for Typed<'_, In, A> {
    type In = In;
}
