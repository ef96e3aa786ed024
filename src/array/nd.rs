//! `ndarray` support (feature `ndarray`): every ndarray array or view, of any dimension and
//! layout, is an [`Input`](crate::Input) (and, when mutable, an [`Output`](crate::Output)),
//! and [`SharedArray`] is an n-d array in shared memory that the workers read and write in
//! place.
//!
//! Elements are taken in row-major (logical) order, as `ArrayBase::iter` visits them, whatever
//! the memory layout: a standard-layout (C-contiguous) array or view is used as one slice, with
//! no gathering; any other layout (Fortran order, a transposed or strided view, a slice with a
//! step) is gathered into one buffer before the map and, for an output, scattered back after,
//! so it is handled correctly at the cost of that copy. Plain process memory (an `Array`, a
//! view of one) always travels to the workers by copy, inline or through the pool's staging
//! buffers; a [`SharedArray`] is the zero-copy form.
//!
//! Row kernels (`kernel.by_rows(ncols, out_cols)`, see [`crate::KernelExt::by_rows`]) see whole rows
//! of a 2-d array (the last axis), never a split one.
//!
//! ```
//! # fn main() -> shmpool::Result<()> {
//! use ndarray::{array, Array2, Axis};
//! use shmpool::{nd::SharedArray, prelude::*};
//! let pool = Pool::new(2)?;
//! let a = array![[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]];
//! // A transposed view: not contiguous, gathered in logical order.
//! let t = pool.map(&a.t(), |x: f64| x * 10.0)?;
//! assert_eq!(t, [10.0, 40.0, 20.0, 50.0, 30.0, 60.0]);
//! // Into a strided mutable view: scattered back.
//! let mut out = Array2::<f64>::zeros((3, 2));
//! pool.map_into(&a, &mut out.view_mut().reversed_axes(), |x: f64| -x)?;
//! assert_eq!(out, array![[-1.0, -4.0], [-2.0, -5.0], [-3.0, -6.0]]);
//! // Shared memory, in place; a row kernel for row sums.
//! let s = SharedArray::from_array(&a)?;
//! let mut sums = SharedArray::<f64, _>::zeroed(2)?;
//! pool.map_into(&s, &mut sums, (|r: &[f64], o: &mut [f64]| o[0] = r.iter().sum()).by_rows(a.ncols(), 1))?;
//! assert_eq!(sums.view(), a.sum_axis(Axis(1)));
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use ndarray::{ArrayBase, ArrayView, ArrayViewMut, Data, DataMut, Dimension, IntoDimension};

use super::io::sealed::{InputSealed, OutputSealed};
use super::io::{Data as Bytes, Side, Sink, Source, Target};
use super::{Input, Output, SharedVec};
use crate::error::{Error, Result};

impl<T: Pod, S: Data<Elem = T>, D: Dimension> InputSealed for ArrayBase<S, D> {
    fn source(&self) -> Result<Source<'_>> {
        let bytes = match self.as_slice() {
            Some(s) => Cow::Borrowed(bytemuck::cast_slice(s)),
            None => {
                let mut v = Vec::with_capacity(self.len() * std::mem::size_of::<T>());
                self.iter().for_each(|x| v.extend_from_slice(bytemuck::bytes_of(x)));
                Cow::Owned(v)
            }
        };
        Ok(Source { data: Bytes::Plain(bytes), side: Side::of::<T>() })
    }
}
impl<T: Pod, S: Data<Elem = T>, D: Dimension> Input for ArrayBase<S, D> {
    type Elem = T;
}

impl<T: Pod, S: DataMut<Elem = T>, D: Dimension> OutputSealed for ArrayBase<S, D> {
    fn target(&mut self) -> Result<Target<'_>> {
        let side = Side::of::<T>();
        if self.is_standard_layout() {
            let s = self.as_slice_mut().expect("a standard-layout array is one slice");
            return Ok(Target { sink: Sink::Plain(bytemuck::cast_slice_mut(s)), side });
        }
        let buf = vec![0u8; self.len() * std::mem::size_of::<T>()];
        let scatter = Box::new(move |b: &[u8]| {
            for (d, s) in self.iter_mut().zip(b.chunks_exact(std::mem::size_of::<T>())) {
                *d = bytemuck::pod_read_unaligned(s);
            }
        });
        Ok(Target { sink: Sink::Scatter { buf, scatter }, side })
    }
}
impl<T: Pod, S: DataMut<Elem = T>, D: Dimension> Output for ArrayBase<S, D> {
    type Elem = T;
}

/// An n-d array of `T: Pod` in shared memory (row-major), read and written by the pool's
/// workers in place, with zero copies, when passed to [`crate::Pool::map_into`]. See it
/// through ndarray with [`SharedArray::view`] / [`SharedArray::view_mut`]; it also derefs to
/// the flat `[T]` in row-major order.
///
/// It cannot `Deref` to an `ArrayView` itself: a view is a value whose lifetime is the borrow
/// of the array, which `Deref::Target` cannot name, and ndarray's storage traits are sealed,
/// so no `ArrayBase` can own a shared segment.
///
/// The safety model is [`SharedVec`]'s: workers touch the array only while a map borrows it.
pub struct SharedArray<T: Pod, D: Dimension> {
    data: SharedVec<T>,
    dim: D,
}

impl<T: Pod, D: Dimension> SharedArray<T, D> {
    /// A zeroed array of the given shape (`n`, `(rows, cols)`, `[a, b, c]`, ...).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when the shape's size overflows; otherwise as [`SharedVec::zeroed`].
    pub fn zeroed(shape: impl IntoDimension<Dim = D>) -> Result<Self> {
        let dim = shape.into_dimension();
        let len = dim
            .size_checked()
            .ok_or(Error::TooLarge { count: u64::MAX, elem_size: std::mem::size_of::<T>() as u64 })?;
        Ok(SharedArray { data: SharedVec::zeroed(len)?, dim })
    }

    /// A copy of `a` (any layout; stored row-major).
    ///
    /// # Errors
    ///
    /// As [`SharedVec::zeroed`].
    pub fn from_array<S: Data<Elem = T>>(a: &ArrayBase<S, D>) -> Result<Self> {
        let mut s = Self::zeroed(a.raw_dim())?;
        s.view_mut().assign(a);
        Ok(s)
    }

    /// The array as an ndarray view.
    pub fn view(&self) -> ArrayView<'_, T, D> {
        ArrayView::from_shape(self.dim.clone(), &self.data[..]).expect("the segment holds the shape's elements")
    }

    /// The array as a mutable ndarray view.
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        ArrayViewMut::from_shape(self.dim.clone(), &mut self.data[..]).expect("the segment holds the shape's elements")
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// The shape as ndarray's `Dim` value.
    pub fn raw_dim(&self) -> D {
        self.dim.clone()
    }
}

impl<T: Pod, D: Dimension> Deref for SharedArray<T, D> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data
    }
}

impl<T: Pod, D: Dimension> DerefMut for SharedArray<T, D> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
}

impl<T: Pod + std::fmt::Debug, D: Dimension> std::fmt::Debug for SharedArray<T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl<T: Pod, D: Dimension> InputSealed for SharedArray<T, D> {
    fn source(&self) -> Result<Source<'_>> {
        self.data.source()
    }
}
impl<T: Pod, D: Dimension> Input for SharedArray<T, D> {
    type Elem = T;
}
impl<T: Pod, D: Dimension> OutputSealed for SharedArray<T, D> {
    fn target(&mut self) -> Result<Target<'_>> {
        self.data.target()
    }
}
impl<T: Pod, D: Dimension> Output for SharedArray<T, D> {
    type Elem = T;
}
