//! The one way to say what a kernel is: [`Kernel`], implemented for every shape a kernel may
//! take, so that every [`crate::Pool`] entry point accepts all of them.
//!
//! The marker types of [`marker`] only tell these impls apart for the compiler; nobody names
//! them. This module must never touch shared memory or processes.

use std::marker::PhantomData;

use bytemuck::Pod;

use super::{trampoline, KernelSpec, FILLS, MAY_READ};
use crate::error::Result;

/// The element type of data or of a kernel side that is known only at run time: a `.npy`
/// file's dtype, an untyped [`KernelSpec`]. Checked against the other side at every map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dynamic {}

pub(super) mod sealed {
    pub trait Sealed {}
    impl<T: bytemuck::Pod> Sealed for T {}
    impl Sealed for super::Dynamic {}

    /// What a kernel hands the pool; sealed so the list of kernel shapes stays the crate's.
    pub trait KernelSealed<M> {
        fn with_spec<R>(self, f: impl FnOnce(&super::KernelSpec) -> crate::Result<R>) -> crate::Result<R>;
    }
}
pub(crate) use sealed::KernelSealed;

/// `Self`, the element type of some data, can feed (or receive) a kernel side of type `K`:
/// the same `Pod` type, or either side [`Dynamic`] (then checked at run time).
pub trait Fits<K>: sealed::Sealed {}
impl<T: Pod> Fits<T> for T {}
impl<T: Pod> Fits<Dynamic> for T {}
impl<T: Pod> Fits<T> for Dynamic {}
impl Fits<Dynamic> for Dynamic {}

/// A kernel: what a map applies. Implemented for element closures, chunk closures,
/// [`KernelExt::with`] / [`KernelExt::with_table`] / [`KernelExt::by_rows`] wrappers and prepared
/// [`KernelSpec`]s (see the table below). `M` is a marker the compiler
/// infers; `In` and `Out` are the element types the kernel reads and writes ([`Dynamic`] for an
/// untyped `KernelSpec`).
///
/// | kernel | its signature | made with |
/// |---|---|---|
/// | element | `Fn(In) -> Out` | a `fn` item or a closure that captures nothing |
/// | chunk | `Fn(&[In], &mut [Out])` | the same |
/// | indexed chunk | `Fn(&[In], &mut [Out], u64)` (flat index of the chunk's first element) | the same |
/// | with a parameter block | `Fn(In, &P) -> Out`, `Fn(&[In], &mut [Out], &P)` | `f.with(p)`, `P: Pod` |
/// | with a run-time sized table | `Fn(In, &[S]) -> Out`, `Fn(&[In], &mut [Out], &[S])` | `f.with_table(&weights)` |
/// | with both | `Fn(In, &P, &[S]) -> Out`, `Fn(&[In], &mut [Out], &P, &[S])` | `f.with(p).with_table(&weights)` |
/// | row kernel | `Fn(&[In], &mut [Out])` on one whole row | `f.by_rows(in_cols, out_cols)` |
/// | prepared | [`KernelSpec`] (expressions, function pointers) | `&spec`, or `spec.typed::<In, Out>()?` |
/// | zip element | `Fn((A, B, ..)) -> Out` over a tuple of 2 to 4 inputs | a `fn` item or a closure that captures nothing |
/// | zip chunk | `Fn((&[A], &[B], ..), &mut [Out])` | the same |
/// | zip with a parameter block | `Fn((A, B, ..), &P) -> Out`, `Fn((&[A], &[B], ..), &mut [Out], &P)` | `f.with(p)` |
///
/// Annotate a closure's parameter types (`|x: f64|`, `|x: &[f64], y: &mut [f64]|`): the
/// compiler picks the kernel shape from the closure's own signature. A kernel whose element
/// types are not the data's is a compile error when both are known:
///
/// ```compile_fail,E0277
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::new(1)?;
/// let _ = pool.map(&[1u32, 2], |x: f64| x * 2.0)?; // u32 data, f64 kernel
/// # Ok(()) }
/// ```
///
/// Closures must capture nothing: the worker rebuilds the kernel from its type alone. A
/// capturing closure is rejected by `cargo build` (and `cargo test`, `cargo run`), **not by
/// `cargo check`** nor an editor's check-on-save: no trait on stable Rust tells a closure that
/// captures from one that does not (both are `Copy + 'static` when the captures are), so the
/// check is a constant assertion on the kernel's size, and rustc evaluates the constants of
/// generic code only when it monomorphizes, which `cargo check` skips (rust-lang/rust#99682).
/// The build error is `error[E0080]: evaluation panicked: this kernel captures variables ...
/// kernel.with(params) (formerly map_with)`; its primary span is inside shmpool, and its notes
/// name the user's closure by file, line and column: `... for {closure@src/main.rs:4:38: 4:51}`.
///
/// ```compile_fail,E0080
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::new(1)?;
/// let k = 3.0;
/// let _ = pool.map(&[1.0f64], move |x: f64| x * k)?; // captures `k`: use `.with(k)`
/// # Ok(()) }
/// ```
///
/// A closure that borrows a local (no `move`) is rejected earlier, by `cargo check`: kernels
/// are `'static`.
///
/// ```compile_fail,E0597
/// # fn main() -> shmpool::Result<()> {
/// let pool = shmpool::Pool::new(1)?;
/// let k = 3.0;
/// let _ = pool.map(&[1.0f64], |x: f64| x * k)?; // borrows `k`
/// # Ok(()) }
/// ```
pub trait Kernel<M>: KernelSealed<M> {
    /// The element type the kernel reads.
    type In;
    /// The element type the kernel writes.
    type Out;
}

/// Markers that tell the [`Kernel`] impls apart; inferred, never named.
pub mod marker {
    use std::marker::PhantomData;

    macro_rules! markers {
        ($($(#[$m:meta])* $name:ident<$($t:ident),*>;)*) => {$(
            $(#[$m])*
            #[derive(Debug)]
            pub struct $name<$($t),*>(PhantomData<fn($($t),*)>);
        )*};
    }
    markers! {
        /// `Fn(In) -> Out`.
        Elem<In, Out>;
        /// `Fn(&[In], &mut [Out])`.
        Chunk<In, Out>;
        /// `Fn(&[In], &mut [Out], u64)`.
        Indexed<In, Out>;
        /// `Fn(In, &P) -> Out`.
        ElemWith<In, Out, P>;
        /// `Fn(&[In], &mut [Out], &P)`.
        ChunkWith<In, Out, P>;
        /// `Fn(In, &[S]) -> Out`.
        ElemTable<In, Out, S>;
        /// `Fn(&[In], &mut [Out], &[S])`.
        ChunkTable<In, Out, S>;
        /// `Fn(In, &P, &[S]) -> Out`.
        ElemBoth<In, Out, P, S>;
        /// `Fn(&[In], &mut [Out], &P, &[S])`.
        ChunkBoth<In, Out, P, S>;
        /// A row kernel `Fn(&[In], &mut [Out])`.
        Rows<In, Out>;
        /// A prepared `KernelSpec`.
        Spec<In, Out>;
        /// `Fn((A, B, ..)) -> Out` over several inputs.
        ZipElem<In, Out>;
        /// `Fn((&[A], &[B], ..), &mut [Out])` over several inputs.
        ZipChunk<In, Out>;
        /// `Fn((A, B, ..), &P) -> Out` over several inputs.
        ZipElemWith<In, Out, P>;
        /// `Fn((&[A], &[B], ..), &mut [Out], &P)` over several inputs.
        ZipChunkWith<In, Out, P>;
    }
}
use marker::*;

/// Rejects, when the program is built, a kernel type with bytes: the worker rebuilds the kernel
/// from nothing, so it must capture nothing. The error names the closure's type, which rustc
/// prints with its source location.
macro_rules! assert_zero_sized {
    ($f:ty) => {
        const {
            assert!(
                std::mem::size_of::<$f>() == 0,
                "this kernel captures variables (the `{{closure@FILE:LINE:COL}}` this error names): a kernel must be a fn item or a closure that captures nothing. Pass captured values as a parameter block: `kernel.with(params)` (formerly `map_with`), or a run-time sized table: `kernel.with_table(&values)`"
            )
        }
    };
}

macro_rules! kernel_impl {
    ([$($g:tt)*] $marker:ty, $self_ty:ty, $in:ty, $out:ty, where [$($bound:tt)*], |$s:ident| $make:expr) => {
        impl<$($g)*> KernelSealed<$marker> for $self_ty
        where
            $($bound)*
        {
            fn with_spec<R>(self, f: impl FnOnce(&KernelSpec) -> Result<R>) -> Result<R> {
                let $s = self;
                let spec = IntoSpec::into_spec($make)?;
                f(&spec)
            }
        }
        impl<$($g)*> Kernel<$marker> for $self_ty
        where
            $($bound)*
        {
            type In = $in;
            type Out = $out;
        }
    };
}

/// What a kernel's constructor returns: a spec, or a spec that can fail (row widths).
trait IntoSpec {
    fn into_spec(self) -> Result<KernelSpec>;
}
impl IntoSpec for KernelSpec {
    fn into_spec(self) -> Result<KernelSpec> {
        Ok(self)
    }
}
impl IntoSpec for Result<KernelSpec> {
    fn into_spec(self) -> Result<KernelSpec> {
        self
    }
}

kernel_impl!([In: Pod, Out: Pod, F] Elem<In, Out>, F, In, Out,
    where [F: Fn(In) -> Out + Copy + 'static], |_f| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(trampoline::elem::<In, Out, F>, Vec::new(), FILLS)
});
kernel_impl!([In: Pod, Out: Pod, F] Chunk<In, Out>, F, In, Out,
    where [F: Fn(&[In], &mut [Out]) + Copy + 'static], |_f| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(trampoline::chunk::<In, Out, F>, Vec::new(), MAY_READ)
});
kernel_impl!([In: Pod, Out: Pod, F] Indexed<In, Out>, F, In, Out,
    where [F: Fn(&[In], &mut [Out], u64) + Copy + 'static], |_f| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(trampoline::indexed::<In, Out, F>, Vec::new(), MAY_READ)
});
kernel_impl!([In: Pod, Out: Pod, P: Pod, F] ElemWith<In, Out, P>, With<F, P>, In, Out,
    where [F: Fn(In, &P) -> Out + Copy + 'static], |w| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(trampoline::elem_with::<In, Out, P, F>, w.params, FILLS)
});
kernel_impl!([In: Pod, Out: Pod, P: Pod, F] ChunkWith<In, Out, P>, With<F, P>, In, Out,
    where [F: Fn(&[In], &mut [Out], &P) + Copy + 'static], |w| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(trampoline::chunk_with::<In, Out, P, F>, w.params, MAY_READ)
});
kernel_impl!(['t, In: Pod, Out: Pod, S: Pod, F] ElemTable<In, Out, S>, WithTable<'t, F, S>, In, Out,
    where [F: Fn(In, &[S]) -> Out + Copy + 'static], |w| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(trampoline::elem_table::<In, Out, S, F>, trampoline::table_params(&(), w.table), FILLS)
});
kernel_impl!(['t, In: Pod, Out: Pod, S: Pod, F] ChunkTable<In, Out, S>, WithTable<'t, F, S>, In, Out,
    where [F: Fn(&[In], &mut [Out], &[S]) + Copy + 'static], |w| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(trampoline::chunk_table::<In, Out, S, F>, trampoline::table_params(&(), w.table), MAY_READ)
});
kernel_impl!(['t, In: Pod, Out: Pod, P: Pod, S: Pod, F] ElemBoth<In, Out, P, S>, WithTable<'t, With<F, P>, S>, In, Out,
    where [F: Fn(In, &P, &[S]) -> Out + Copy + 'static], |w| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(
        trampoline::elem_both::<In, Out, P, S, F>,
        trampoline::table_params_bytes::<P, S>(&w.kernel.params, w.table),
        FILLS,
    )
});
kernel_impl!(['t, In: Pod, Out: Pod, P: Pod, S: Pod, F] ChunkBoth<In, Out, P, S>, WithTable<'t, With<F, P>, S>, In, Out,
    where [F: Fn(&[In], &mut [Out], &P, &[S]) + Copy + 'static], |w| {
    assert_zero_sized!(F);
    KernelSpec::new::<In, Out>(
        trampoline::chunk_both::<In, Out, P, S, F>,
        trampoline::table_params_bytes::<P, S>(&w.kernel.params, w.table),
        MAY_READ,
    )
});
kernel_impl!([In: Pod, Out: Pod, F] Rows<In, Out>, RowKernel<F>, In, Out,
    where [F: Fn(&[In], &mut [Out]) + Copy + 'static], |r| {
    assert_zero_sized!(F);
    KernelSpec::rows::<In, Out>(trampoline::rows::<In, Out, F>, r.in_cols, r.out_cols)
});

impl KernelSealed<Spec<Dynamic, Dynamic>> for &KernelSpec {
    fn with_spec<R>(self, f: impl FnOnce(&KernelSpec) -> Result<R>) -> Result<R> {
        f(self)
    }
}
impl Kernel<Spec<Dynamic, Dynamic>> for &KernelSpec {
    type In = Dynamic;
    type Out = Dynamic;
}
impl<In: Pod, Out: Pod> KernelSealed<Spec<In, Out>> for Typed<'_, In, Out> {
    fn with_spec<R>(self, f: impl FnOnce(&KernelSpec) -> Result<R>) -> Result<R> {
        f(self.spec)
    }
}
impl<In: Pod, Out: Pod> Kernel<Spec<In, Out>> for Typed<'_, In, Out> {
    type In = In;
    type Out = Out;
}

/// A kernel with a `Pod` parameter block passed to every call by reference ([`KernelExt::with`]).
/// It holds the block's bytes (on the heap: a block may be large), not the value.
#[derive(Debug, Clone)]
pub struct With<F, P> {
    /// Only its type is used (the worker rebuilds the zero-sized kernel from it); kept so that
    /// the value the caller passed is what the wrapper holds.
    #[allow(dead_code)]
    kernel: F,
    pub(super) params: Vec<u8>,
    _p: PhantomData<fn() -> P>,
}

/// A kernel with a read-only table of run-time length passed to every call as `&[S]`
/// ([`KernelExt::with_table`]). The table is copied once per map into the map's parameter
/// block (shared memory the workers map read-only), not once per chunk.
#[derive(Debug, Clone)]
pub struct WithTable<'t, F, S> {
    kernel: F,
    table: &'t [S],
}

/// A row kernel ([`KernelExt::by_rows`]): called once per whole row, never on a split one.
#[derive(Debug, Clone, Copy)]
pub struct RowKernel<F> {
    /// Only its type is used (see [`With`]).
    #[allow(dead_code)]
    kernel: F,
    in_cols: usize,
    out_cols: usize,
}

/// A [`KernelSpec`] checked for element types `In -> Out` ([`KernelSpec::typed`]), so that
/// [`crate::Pool::map`] knows what to return.
#[derive(Debug, Clone, Copy)]
pub struct Typed<'s, In, Out> {
    spec: &'s KernelSpec,
    _t: PhantomData<fn(In) -> Out>,
}

impl<'s, In, Out> Typed<'s, In, Out> {
    /// The spec this kernel checked.
    pub(super) fn spec(&self) -> &'s KernelSpec {
        self.spec
    }
}

impl KernelSpec {
    /// This spec with the kernel seeing flat indices that start at `first` for a map's first
    /// element (`i` of an expression, the index of an indexed chunk kernel) instead of 0:
    /// a piece of a larger array mapped as the whole array's map would map it (the range of
    /// a `.npy` file an MPI rank maps, see [`crate::NpyArray::range`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::{KernelSpec, Pool};
    /// let spec = KernelSpec::indexed(|x: &[f64], y: &mut [f64], i: u64| {
    ///     for (k, (y, x)) in y.iter_mut().zip(x).enumerate() { *y = x + (i + k as u64) as f64; }
    /// });
    /// let ys = Pool::new(1)?.map(&[0.5f64; 3], spec.index_offset(100).typed::<f64, f64>()?)?;
    /// assert_eq!(ys, [100.5, 101.5, 102.5]);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn index_offset(&self, first: u64) -> KernelSpec {
        KernelSpec { index_offset: first, ..self.clone() }
    }

    /// This spec as a kernel of known element types, for [`crate::Pool::map`] and
    /// [`crate::Pool::submit`], which return `Vec<Out>`. (`&spec` works everywhere the data's
    /// types say what they are.)
    ///
    /// # Errors
    ///
    /// [`crate::Error::TypeMismatch`] when the spec maps other types.
    pub fn typed<In: Pod, Out: Pod>(&self) -> Result<Typed<'_, In, Out>> {
        self.check_types::<In, Out>()?;
        Ok(Typed { spec: self, _t: PhantomData })
    }
}

/// Builds kernels with side inputs or row alignment out of `fn` items and closures. In the
/// [`crate::prelude`].
pub trait KernelExt: Sized {
    /// Passes `params` (any `Pod` value: a number, an array, a `#[repr(C)]` struct) to every
    /// call of the kernel as its last argument, `&P`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::prelude::*;
    /// let pool = Pool::new(2)?;
    /// let scaled = pool.map(&[1.0f32, 2.0], (|x: f32, k: &f32| x * k).with(10.0))?;
    /// assert_eq!(scaled, [10.0, 20.0]);
    /// # Ok(()) }
    /// ```
    fn with<P: Pod>(self, params: P) -> With<Self, P> {
        With { kernel: self, params: bytemuck::bytes_of(&params).to_vec(), _p: PhantomData }
    }

    /// Passes `table`, of any length known at run time (a lookup table, weights), to every call
    /// as `&[S]`, after the parameter block if there is one. A [`crate::SharedVec`] works too
    /// (`&shared` derefs to `&[S]`).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::prelude::*;
    /// let pool = Pool::new(2)?;
    /// let lut: Vec<f64> = (0..256).map(|i| (i as f64).sqrt()).collect();
    /// let roots = pool.map(&[4u8, 9, 16], (|x: u8, lut: &[f64]| lut[x as usize]).with_table(&lut))?;
    /// assert_eq!(roots, [2.0, 3.0, 4.0]);
    /// let affine = (|x: u8, b: &f64, w: &[f64]| w[x as usize] + b).with(0.5).with_table(&lut);
    /// assert_eq!(pool.map(&[9u8], affine)?, [3.5]);
    /// # Ok(()) }
    /// ```
    fn with_table<S: Pod>(self, table: &[S]) -> WithTable<'_, Self, S> {
        WithTable { kernel: self, table }
    }

    /// A row kernel: the data is a row-major matrix with rows of `in_cols` elements in and
    /// `out_cols` out; chunks are whole rows and the kernel runs once per row with
    /// `(&input_row, &mut output_row)`. The number of rows is the input's length divided by
    /// `in_cols` ([`crate::Error::RaggedRows`] if it does not divide).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::prelude::*;
    /// let pool = Pool::new(2)?;
    /// let m = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 rows of 3
    /// let sums = pool.map(&m, (|r: &[f64], s: &mut [f64]| s[0] = r.iter().sum()).by_rows(3, 1))?;
    /// assert_eq!(sums, [6.0, 15.0]);
    /// # Ok(()) }
    /// ```
    fn by_rows(self, in_cols: usize, out_cols: usize) -> RowKernel<Self> {
        RowKernel { kernel: self, in_cols, out_cols }
    }
}
impl<F: Copy> KernelExt for F {}
impl<F: Copy, P: Pod> KernelExt for With<F, P> {}

/// Row kernels keep the kernel only as a type (it is zero-sized).
impl<F> RowKernel<F> {
    /// Elements per input row and per output row.
    pub fn cols(&self) -> (usize, usize) {
        (self.in_cols, self.out_cols)
    }
}
