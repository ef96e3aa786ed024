//! The generic reductions: [`Pool::reduce`] (a chunk fold) and [`Pool::map_reduce`] (an
//! element map), over any [`Input`] or tuple of inputs, with a user identity and an
//! associative combine for a `Pod` accumulator.
//!
//! Chunking and determinism: the input is cut into blocks of 65,536 elements (the last one
//! shorter), whatever the pool's size; each block's partial result is computed by one worker
//! and written into a shared array of partials (shared memory, not a pipe), and the caller
//! combines the partials in block order with a fixed pairwise tree. Inside a block,
//! `map_reduce` folds leaves of 256 elements in order from the identity and combines the leaves
//! with the same pairwise tree; `reduce` calls the fold once per block, from the identity. So
//! the result depends on the input's length only, never on the number of workers or on which
//! worker ran what: a float sum is bit-identical for 1 or 16 workers (and, being pairwise, more
//! accurate than a serial loop). A worker killed mid-block costs a retry of its chunk of blocks,
//! from the identity, as for any map.
#![deny(unsafe_code)]

use bytemuck::Pod;

use super::zip::{zip_len, Stage, ZipRun};
use super::Pool;
use crate::array::{Input, Output, Side, Source};
use crate::error::{Error, Result};
use crate::kernel::marker::Elem;
use crate::kernel::{
    big_stack, pairwise, ChunkFold, ElemMap, Fits, KernelSpec, ReduceKernel, ReduceSealed, REDUCE_BLOCK,
};
use crate::ring::zip::{ZipHeader, ZipInput};

impl Pool {
    /// Reduces `input` with an element function and an associative `combine`: the result is
    /// `identity ⊕ map(x₀) ⊕ map(x₁) ⊕ …` (⊕ = `combine`), grouped as the module doc says,
    /// so the same for any number of workers. `input` is any [`Input`] (a slice, a `Vec`, a
    /// [`crate::SharedVec`] or `.npy` file read in place, an ndarray view) or a tuple of them
    /// of equal length, then `map` takes a tuple of elements. `identity` must be `combine`'s
    /// identity (it starts every leaf and block). No allocation per element; partial results
    /// come back through shared memory.
    ///
    /// Chunking and determinism: the input is cut into blocks of 65,536 elements (the last one
    /// shorter), whatever the pool's size; one worker computes each block's partial result
    /// into a shared array of partials, and the caller combines the partials in block order
    /// with a fixed pairwise tree. Inside a block, leaves of 256 elements are folded in order
    /// from the identity and combined with the same tree. The grouping depends on the input's
    /// length only, never on the number of workers or on which worker ran what: a float sum
    /// is bit-identical on 1 or 16 workers (and, pairwise, more accurate than a serial loop).
    /// The tree combines pairs of equal height as soon as both exist (a binary counter), then
    /// what remains right to left; the left operand always holds the earlier elements, so
    /// `combine` must be associative but need not commute. A worker killed mid-chunk costs a
    /// retry of that chunk's blocks, from the identity, with the same result.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let x: Vec<f64> = (0..100_000).map(|i| i as f64).collect();
    /// // Mean and standard deviation in one pass: [sum, sum of squares, count].
    /// let add = |a: [f64; 3], b: [f64; 3]| [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
    /// let [s, s2, n] = pool.map_reduce(&x, [0.0; 3], |v: f64| [v, v * v, 1.0], add)?;
    /// let mean = s / n;
    /// assert_eq!(mean, 49_999.5);
    /// assert!(((s2 / n - mean * mean).sqrt() - 28_867.51).abs() < 0.01);
    /// // a · b over two inputs.
    /// let dot = pool.map_reduce(&(&x, &x), 0.0, |(a, b): (f64, f64)| a * b, |p: f64, q: f64| p + q)?;
    /// assert_eq!(dot, s2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InputLengths`] when the inputs of a tuple differ in length,
    /// [`Error::TypeMismatch`] for a `.npy` dtype that is not the function's, otherwise as
    /// [`Pool::map`] ([`Error::KernelPanicked`] also for a panicking `combine`).
    pub fn map_reduce<I, A, F, C, M>(&self, input: &I, identity: A, map: F, combine: C) -> Result<A>
    where
        I: Input + ?Sized,
        A: Pod,
        F: ElemMap<M, A>,
        I::Elem: Fits<F::In>,
        C: Fn(A, A) -> A + Copy + 'static,
    {
        let srcs = input.sources()?;
        map.with_reduce::<C, A>(&identity, |k| self.reduce_kernel(k, srcs, identity, combine))
    }

    /// Reduces `input` with a chunk fold and an associative `combine`: `fold(identity, block)`
    /// for every block of 65,536 elements (the last one shorter), then the blocks' results
    /// combined in order with a fixed pairwise tree (see [`Pool::map_reduce`]): the same for any
    /// number of workers. `fold` sees one block as a slice (or a tuple of slices over a tuple of
    /// inputs), so its loop vectorises as it would in the caller; it must start from the
    /// accumulator it is given (the identity).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let xs = shmpool::SharedVec::from_slice(&(1..=200_000u32).collect::<Vec<_>>())?;
    /// let max = pool.reduce(&xs, 0u32, |m: u32, x: &[u32]| x.iter().fold(m, |m, &v| m.max(v)), |a: u32, b: u32| a.max(b))?;
    /// assert_eq!(max, 200_000);
    /// let sum = pool.reduce(&xs, 0u64, |s: u64, x: &[u32]| x.iter().fold(s, |s, &v| s + v as u64), |a: u64, b: u64| a + b)?;
    /// assert_eq!(sum, 200_000 * 200_001 / 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Pool::map_reduce`].
    pub fn reduce<I, A, F, C, M>(&self, input: &I, identity: A, fold: F, combine: C) -> Result<A>
    where
        I: Input + ?Sized,
        A: Pod,
        F: ChunkFold<M, A>,
        I::Elem: Fits<F::In>,
        C: Fn(A, A) -> A + Copy + 'static,
    {
        let srcs = input.sources()?;
        fold.with_reduce::<C, A>(&identity, |k| self.reduce_kernel(k, srcs, identity, combine))
    }

    /// Runs a reduction over `srcs`: a block kernel directly; a map kernel (a `KernelSpec`)
    /// into a shared array of accumulators first, then the identity map's reduction of it.
    fn reduce_kernel<A: Pod, C: Fn(A, A) -> A + Copy + 'static>(
        &self,
        kernel: ReduceKernel<'_>,
        srcs: Vec<Source<'_>>,
        identity: A,
        combine: C,
    ) -> Result<A> {
        match kernel {
            ReduceKernel::Blocks(spec) => self.reduce_spec(spec, &srcs, identity, combine),
            ReduceKernel::MapFirst(spec) => {
                let n = match srcs.as_slice() {
                    [src] if spec.zip.is_empty() => super::api::units(spec, src.bytes().len())?,
                    _ => zip_len(spec, &srcs, Side::of::<A>())?,
                };
                let mut mapped = self.alloc::<A>(n)?;
                self.run_any(spec, srcs, target_of(&mut mapped)?, None)?;
                fn same<A>(x: A) -> A {
                    x
                }
                let mapped_srcs = sources_of(&mapped)?;
                ReduceSealed::<Elem<A, A>, A>::with_reduce::<C, A>(same::<A>, &identity, |k| match k {
                    ReduceKernel::Blocks(s) => self.reduce_spec(s, &mapped_srcs, identity, combine),
                    ReduceKernel::MapFirst(_) => Err(Error::Protocol { what: "identity reduction", value: 0 }),
                })
            }
        }
    }

    /// Runs a reduction kernel over `srcs`: one partial per block into a shared array, then
    /// the pairwise combine here.
    fn reduce_spec<A: Pod>(
        &self,
        spec: &KernelSpec,
        srcs: &[Source<'_>],
        identity: A,
        combine: impl Fn(A, A) -> A,
    ) -> Result<A> {
        let n = zip_len(spec, srcs, Side::of::<A>())?;
        self.check_open()?;
        let blocks = n.div_ceil(REDUCE_BLOCK);
        if blocks == 0 {
            return Ok(identity);
        }
        let mut stage = Stage::new(self);
        let segs = stage.inputs(srcs)?;
        // The descriptors' own input: a byte per block, never read.
        let ids = stage.buffer(blocks)?;
        self.shared.register(&ids);
        let header = ZipHeader {
            inputs: segs
                .iter()
                .zip(&spec.zip)
                .map(|(s, t)| ZipInput {
                    seg: s.id(),
                    elem_size: t.size() as u64,
                    block: REDUCE_BLOCK as u64,
                    total: n as u64,
                })
                .collect(),
        };
        let parts = self.alloc::<A>(blocks)?;
        let file = segs.iter().any(|s| s.file_area().is_some());
        let unit_bytes = REDUCE_BLOCK * spec.zip.iter().map(|t| t.size()).sum::<usize>() + spec.out_size;
        let z = ZipRun { spec, header, units: blocks, main: &ids, unit_bytes, fixed: None, file };
        self.drive_zip(z, super::run::Dest::Caller(parts.segment()), None).map_err(|e| in_elements(e, n))?;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            big_stack::<A, A>(|| pairwise(parts.len(), |k| parts[k], &combine).unwrap_or(identity))
        }));
        r.map_err(|p| Error::KernelPanicked { message: panic_text(p.as_ref()), range: 0..n })
    }
}

/// The sources of any input (the sealed method, through the trait bound).
fn sources_of<I: Input + ?Sized>(input: &I) -> Result<Vec<Source<'_>>> {
    input.sources()
}

/// The target of any output (as [`sources_of`]).
fn target_of<O: Output + ?Sized>(output: &mut O) -> Result<crate::array::Target<'_>> {
    output.target()
}

/// An error of the block map with its range in elements of the input, not in blocks.
fn in_elements(e: Error, n: usize) -> Error {
    let elems =
        |r: std::ops::Range<usize>| (r.start * REDUCE_BLOCK).min(n)..(r.end.saturating_mul(REDUCE_BLOCK)).min(n);
    match e {
        Error::KernelPanicked { message, range } => Error::KernelPanicked { message, range: elems(range) },
        Error::WorkerCrashed { range, signal, attempts } => {
            Error::WorkerCrashed { range: elems(range), signal, attempts }
        }
        Error::ChunkTimedOut { range, limit } => Error::ChunkTimedOut { range: elems(range), limit },
        other => other,
    }
}

/// A caught panic's message.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "combine panicked with a non-string payload".into(),
    }
}
