//! Numeric arrays that live in shared memory.
//!
//! A [`SharedVec<T>`] is a fixed-length array of `T: Pod` in its own segment: `Deref` to `&[T]`
//! and `DerefMut` to `&mut [T]` through `bytemuck`, and the pool's workers read or write it in
//! place, with no copy, when it is passed to [`crate::Pool::map_into`]. This module never talks
//! to workers; the pool hands the segment's descriptor to them on demand. Memory-mapped `.npy`
//! files live in [`npy`].

mod io;
#[cfg(feature = "ndarray")]
pub mod nd;
mod npy;
mod zip;
#[cfg(feature = "testing")]
pub(crate) use npy::force_named_temp_files;

pub(crate) use io::{Data, Side, Sink, Source, Target};
pub use io::{Input, Output};
pub use npy::{NpyArray, NpyOutput, NpyRange, NpyRangeMut};

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;

use crate::error::Result;
use crate::shm::{Segment, SegmentKind};

/// A numeric array in shared memory, readable and writable by the pool's worker processes
/// without copying.
///
/// # Safety model
///
/// Worker processes touch a `SharedVec` only while a map borrows it (`&` for inputs, `&mut`
/// for outputs) and the map returns only after every chunk that names it has finished, so
/// Rust's borrow rules on the `SharedVec` also rule the other processes. Nothing outside the
/// pool may write the segment.
///
/// # Examples
///
/// ```
/// # fn main() -> shmpool::Result<()> {
/// let mut v = shmpool::SharedVec::<f64>::zeroed(4)?;
/// v[1] = 2.5;
/// assert_eq!(&v[..], &[0.0, 2.5, 0.0, 0.0]);
/// let w = shmpool::SharedVec::from_slice(&[1u32, 2, 3])?;
/// assert_eq!(w.iter().sum::<u32>(), 6);
/// # Ok(()) }
/// ```
///
/// Elements must be `Pod`; anything with pointers or invariants is rejected at compile time:
///
/// ```compile_fail,E0277
/// let v = shmpool::SharedVec::<String>::zeroed(4);
/// ```
///
/// and so are zero-sized elements, which no kernel could stride through:
///
/// ```compile_fail,E0080
/// let v = shmpool::SharedVec::<()>::zeroed(4);
/// ```
pub struct SharedVec<T: Pod> {
    seg: Arc<Segment>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> SharedVec<T> {
    /// A new array of `len` zeroed elements, its pages reserved.
    ///
    /// # Errors
    ///
    /// [`crate::Error::ShmFull`] when `/dev/shm` cannot hold it.
    pub fn zeroed(len: usize) -> Result<Self> {
        const { assert!(std::mem::size_of::<T>() > 0, "a SharedVec element must have a size") };
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or(crate::Error::TooLarge { count: len as u64, elem_size: std::mem::size_of::<T>() as u64 })?;
        let seg = Segment::create(SegmentKind::Array, bytes, std::mem::size_of::<T>() as u32, 0)?;
        // Fresh pages from posix_fallocate on tmpfs read as zero, which is a valid `T: Pod`.
        Ok(SharedVec { seg: Arc::new(seg), len, _t: PhantomData })
    }

    /// A new array holding a copy of `data`.
    ///
    /// # Errors
    ///
    /// As [`SharedVec::zeroed`].
    pub fn from_slice(data: &[T]) -> Result<Self> {
        let mut v = Self::zeroed(data.len())?;
        v.copy_from_slice(data);
        Ok(v)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment holding the elements (at offset 0 of its data area).
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
}

impl<T: Pod> Deref for SharedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `&self` is held, so no map has the array borrowed mutably, so no worker
        // writes it (type-level safety model); the range was reserved at creation.
        let bytes = unsafe { self.seg.data(0, self.bytes()) }.expect("array fits its segment");
        bytemuck::cast_slice(bytes)
    }
}

impl<T: Pod> DerefMut for SharedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: `&mut self` is held, so no map uses the array at all and no other reference
        // into it exists in this process; workers only touch it during a map.
        let bytes = unsafe { self.seg.data_mut(0, self.bytes()) }.expect("array fits its segment");
        bytemuck::cast_slice_mut(bytes)
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for SharedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A byte buffer in shared memory that the pool reuses between maps to stage plain slices.
pub(crate) struct Staging {
    pub(crate) seg: Arc<Segment>,
}

impl Staging {
    /// A staging buffer of at least `bytes` bytes.
    pub(crate) fn with_capacity(bytes: usize) -> Result<Staging> {
        let seg = Segment::create(SegmentKind::Array, bytes, 1, 0)?;
        Ok(Staging { seg: Arc::new(seg) })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.seg.data_len()
    }

    /// The first `len` bytes, to fill before a map or read after it.
    ///
    /// Takes `&mut self`: the pool holds its staging buffers exclusively between maps, and no
    /// worker touches them then.
    pub(crate) fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: called only between maps (see above), so nobody else accesses the range.
        unsafe { self.seg.data_mut(0, len) }.expect("staging buffer is large enough")
    }
}
