//! The one way to say where a map's data comes from and goes: [`Input`] and [`Output`],
//! implemented for plain slices and `Vec`s, [`SharedVec`], `.npy` files ([`NpyArray`],
//! [`NpyOutput`]) and, with the `ndarray` feature, ndarray arrays and views and
//! `nd::SharedArray`.
//!
//! Shared memory (a `SharedVec`, a `.npy` file, a `SharedArray`) is read and written by the
//! workers in place; plain memory travels inline in the ring's slots (small maps) or through
//! staging buffers the pool reuses (one copy in, one copy out); data that is not contiguous in
//! row-major order (an ndarray view with strides) is gathered into one buffer first and
//! scattered back after, in row-major order. This module describes data; it never runs a map.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use bytemuck::Pod;

use super::{NpyArray, NpyOutput, SharedVec};
use crate::error::Result;
use crate::kernel::Dynamic;
pub(crate) use crate::kernel::Side;
use crate::shm::Segment;

/// Where the input's bytes are.
#[derive(Debug)]
pub(crate) enum Data<'a> {
    /// Process-private memory (borrowed, or gathered from a strided view).
    Plain(Cow<'a, [u8]>),
    /// A shared segment the workers read in place; `bytes` is the same memory seen here,
    /// from byte `off` of the segment's data (a range of a `.npy` file; else 0).
    Shared { seg: &'a Arc<Segment>, bytes: &'a [u8], off: usize },
}

/// A map's input: its bytes and their element type. (Named by the sealed [`Input`] trait's
/// hidden method; not constructible outside the crate.)
#[derive(Debug)]
pub struct Source<'a> {
    pub(crate) data: Data<'a>,
    pub(crate) side: Side,
}

impl Source<'_> {
    /// The input's bytes, wherever they are.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Plain(b) => b,
            Data::Shared { bytes, .. } => bytes,
        }
    }
}

/// Copies a finished buffer out to memory that is not contiguous.
pub(crate) type Scatter<'a> = Box<dyn FnOnce(&[u8]) + 'a>;

/// Where the output's bytes go.
pub(crate) enum Sink<'a> {
    /// Process-private memory, written from the slots or the staging buffer.
    Plain(&'a mut [u8]),
    /// A shared segment the workers write in place (`path`: the file behind it, if any), `len`
    /// bytes from byte `off` of its data (a range of a `.npy` file; else 0).
    Shared { seg: &'a Arc<Segment>, len: usize, path: Option<&'a Path>, off: usize },
    /// Memory that is not contiguous: the map writes `buf`, then `scatter` copies it out.
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    Scatter { buf: Vec<u8>, scatter: Scatter<'a> },
}

/// A map's output: where it goes and its element type. (Named by the sealed [`Output`]
/// trait's hidden method; not constructible outside the crate.)
pub struct Target<'a> {
    pub(crate) sink: Sink<'a>,
    pub(crate) side: Side,
}

impl Target<'_> {
    /// Bytes the output holds.
    pub(crate) fn len(&self) -> usize {
        match &self.sink {
            Sink::Plain(b) => b.len(),
            Sink::Shared { len, .. } => *len,
            Sink::Scatter { buf, .. } => buf.len(),
        }
    }
}

pub(super) mod sealed {
    pub trait InputSealed {
        /// A tuple of inputs (a zip map): read through `sources`, never `source`.
        const ZIP: bool = false;
        fn source(&self) -> crate::Result<super::Source<'_>>;
        /// Every input a map reads: one, or those of a tuple of inputs (a zip map).
        fn sources(&self) -> crate::Result<Vec<super::Source<'_>>> {
            Ok(vec![self.source()?])
        }
    }
    pub trait OutputSealed {
        fn target(&mut self) -> crate::Result<super::Target<'_>>;
    }
}
use sealed::{InputSealed, OutputSealed};

/// Data a map reads: `[T]`, `[T; N]`, `Vec<T>`, [`SharedVec<T>`], [`NpyArray`] (element type
/// [`Dynamic`], its dtype), and with the `ndarray` feature any ndarray array or view and
/// `nd::SharedArray`. `Elem` is the element type, checked against the kernel's.
pub trait Input: InputSealed {
    /// The element type ([`Dynamic`] when known only at run time).
    type Elem;
}

/// Data a map writes: `[T]`, `[T; N]`, `Vec<T>` (its current length), [`SharedVec<T>`],
/// [`NpyOutput`] (element type [`Dynamic`]), and with the `ndarray` feature any mutable
/// ndarray array or view and `nd::SharedArray`.
pub trait Output: OutputSealed {
    /// The element type ([`Dynamic`] when known only at run time).
    type Elem;
}

impl<T: Pod> InputSealed for [T] {
    fn source(&self) -> Result<Source<'_>> {
        Ok(Source { data: Data::Plain(Cow::Borrowed(bytemuck::cast_slice(self))), side: Side::of::<T>() })
    }
}
impl<T: Pod> Input for [T] {
    type Elem = T;
}
impl<T: Pod> OutputSealed for [T] {
    fn target(&mut self) -> Result<Target<'_>> {
        Ok(Target { sink: Sink::Plain(bytemuck::cast_slice_mut(self)), side: Side::of::<T>() })
    }
}
impl<T: Pod> Output for [T] {
    type Elem = T;
}

macro_rules! like_slice {
    ([$($g:tt)*] $t:ty) => {
        impl<$($g)*> InputSealed for $t {
            fn source(&self) -> Result<Source<'_>> {
                self[..].source()
            }
        }
        impl<$($g)*> Input for $t {
            type Elem = T;
        }
        impl<$($g)*> OutputSealed for $t {
            fn target(&mut self) -> Result<Target<'_>> {
                self[..].target()
            }
        }
        impl<$($g)*> Output for $t {
            type Elem = T;
        }
    };
}
like_slice!([T: Pod] Vec<T>);
like_slice!([T: Pod, const N: usize] [T; N]);

impl<T: Pod> InputSealed for SharedVec<T> {
    fn source(&self) -> Result<Source<'_>> {
        Ok(Source {
            data: Data::Shared { seg: self.segment(), bytes: bytemuck::cast_slice(&self[..]), off: 0 },
            side: Side::of::<T>(),
        })
    }
}
impl<T: Pod> Input for SharedVec<T> {
    type Elem = T;
}
impl<T: Pod> OutputSealed for SharedVec<T> {
    fn target(&mut self) -> Result<Target<'_>> {
        let len = std::mem::size_of_val::<[T]>(self);
        Ok(Target { sink: Sink::Shared { seg: self.segment(), len, path: None, off: 0 }, side: Side::of::<T>() })
    }
}
impl<T: Pod> Output for SharedVec<T> {
    type Elem = T;
}

impl InputSealed for NpyArray {
    fn source(&self) -> Result<Source<'_>> {
        Ok(Source {
            data: Data::Shared { seg: self.segment(), bytes: self.bytes()?, off: 0 },
            side: Side::Dtype(self.dtype()),
        })
    }
}
impl Input for NpyArray {
    type Elem = Dynamic;
}
impl OutputSealed for NpyOutput {
    fn target(&mut self) -> Result<Target<'_>> {
        let len = self.len() * self.dtype().size();
        let side = Side::Dtype(self.dtype());
        Ok(Target { sink: Sink::Shared { seg: self.segment(), len, path: Some(self.path()), off: 0 }, side })
    }
}
impl Output for NpyOutput {
    type Elem = Dynamic;
}

/// A reference is the data it refers to (batches of `&[T]` or `&Vec<T>` for `imap`).
impl<I: Input + ?Sized> InputSealed for &I {
    fn source(&self) -> Result<Source<'_>> {
        (**self).source()
    }
    fn sources(&self) -> Result<Vec<Source<'_>>> {
        (**self).sources()
    }
}
impl<I: Input + ?Sized> Input for &I {
    type Elem = I::Elem;
}
