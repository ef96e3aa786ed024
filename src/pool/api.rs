//! The map entry points: one way to say what the kernel is ([`Kernel`]), one way to say where
//! the data comes from and goes ([`Input`], [`Output`]), and four verbs over them: [`Pool::map`]
//! (returns a `Vec`), [`Pool::map_into`] (writes an output), [`Pool::submit`] (returns a
//! [`Ticket`]) and [`Pool::imap`] / [`Pool::imap_unordered`] (stream batches). A thin layer:
//! it checks types and lengths, picks the engine path for where the data lives (inline slots,
//! staging buffers, shared segments in place) and calls `run.rs` / `ticket.rs` / `imap.rs`.
#![deny(unsafe_code)]

use bytemuck::Pod;

use super::zip::zip_len;
use super::{Imap, ImapUnordered, Pool, Ticket};
use crate::array::{Data, Input, Output, Side, Sink, Source, Target};
use crate::error::{Error, Result};
use crate::kernel::{Fits, Kernel, KernelSpec};

/// How many units (elements, or rows of a row kernel) `bytes` of input make for `spec`.
pub(super) fn units(spec: &KernelSpec, bytes: usize) -> Result<usize> {
    if bytes % spec.in_size != 0 {
        let elem = spec.input.size();
        return Err(Error::RaggedRows { len: bytes / elem, row: spec.in_size / elem });
    }
    Ok(bytes / spec.in_size)
}

impl Pool {
    /// Applies `kernel` to every element (or row) of `input` and returns the results in order.
    ///
    /// `kernel` is any [`Kernel`]: an element closure `|x: In| -> Out`, a chunk closure
    /// `|x: &[In], y: &mut [Out]|`, either with `.with(params)` / `.with_table(&values)`, a row
    /// kernel `.by_rows(n, m)`, or a prepared [`KernelSpec`] as `spec.typed::<In, Out>()?`.
    /// Closures must capture nothing (pass values with `.with`). `input` is any [`Input`]: a
    /// slice, a `Vec`, a [`crate::SharedVec`] (read in place), a `.npy` file, an ndarray view.
    /// Small plain inputs travel inside the ring's slots; larger ones through a staging buffer
    /// the pool reuses (one copy in, one copy out).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::prelude::*;
    /// let pool = Pool::new(2)?;
    /// let xs: Vec<u8> = (0..=255).collect();
    /// let widened: Vec<u32> = pool.map(&xs, |x: u8| x as u32 * 1000)?;
    /// assert_eq!(widened[255], 255_000);
    /// let halves = pool.map(&xs, |x: &[u8], y: &mut [f32]| {
    ///     for (y, x) in y.iter_mut().zip(x) { *y = *x as f32 / 2.0; }
    /// })?;
    /// assert_eq!(halves[3], 1.5);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::KernelPanicked`], [`Error::WorkerCrashed`], [`Error::ChunkTimedOut`],
    /// [`Error::PoolClosed`], [`Error::ShmFull`] (staging), [`Error::Cancelled`] (terminated
    /// from another thread), [`Error::CorruptSlot`] then [`Error::PoolBroken`] (shared state
    /// corrupted: the workers were killed), [`Error::WrongProcess`] (used from a forked child),
    /// [`Error::TypeMismatch`] (a `KernelSpec` or a `.npy` dtype that does not fit),
    /// [`Error::RaggedRows`] (a row kernel on data that is not whole rows). See
    /// [`Error::kind`].
    pub fn map<I, K, M>(&self, input: &I, kernel: K) -> Result<Vec<K::Out>>
    where
        I: Input + ?Sized,
        K: Kernel<M>,
        I::Elem: Fits<K::In>,
        K::Out: Pod,
    {
        let srcs = input.sources()?;
        kernel.with_spec(|spec| {
            let units = match srcs.as_slice() {
                [src] if spec.zip.is_empty() => units(spec, src.bytes().len())?,
                _ => zip_len(spec, &srcs, Side::of::<K::Out>())?,
            };
            let bytes = units
                .checked_mul(spec.out_size)
                .ok_or(Error::TooLarge { count: units as u64, elem_size: spec.out_size as u64 })?;
            let mut out = vec![<K::Out as bytemuck::Zeroable>::zeroed(); bytes / std::mem::size_of::<K::Out>()];
            let target = Target { sink: Sink::Plain(bytemuck::cast_slice_mut(&mut out)), side: Side::of::<K::Out>() };
            self.run_any(spec, srcs, target, None)?;
            Ok(out)
        })
    }

    /// Applies `kernel` from `input` into `output`, which must hold as many elements (rows) as
    /// the input. Between shared memory ([`crate::SharedVec`], `.npy` files,
    /// `nd::SharedArray`) the workers read and write in place, with zero copies;
    /// plain memory on either side is staged. The kernel and data forms are those of
    /// [`Pool::map`]; a `.npy` output is committed afterwards ([`crate::NpyOutput::commit`]).
    ///
    /// A chunk kernel sees a shared output (the caller's own array or file) as it is, and may
    /// read it (`y += x`). With [`crate::PoolBuilder::backup_outputs`]`(true)` a chunk that a
    /// dying worker had started is redone from the caller's values, never on what that attempt
    /// left: the worker backs each chunk's range up in shared memory before the kernel runs
    /// (one more copy of each chunk, into a backup area of its ring slot, in chunks of at most
    /// 1 MiB unless `chunk_len` is set). It is off by default (it costs W1's chunk form 1.85x):
    /// kernels that only write their output are exact after any kill without it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// use shmpool::{Pool, SharedVec};
    /// let pool = Pool::new(2)?;
    /// let xs = SharedVec::from_slice(&[1.0f64, 4.0, 9.0])?;
    /// let mut ys = pool.alloc::<f64>(3)?;
    /// pool.map_into(&xs, &mut ys, |x: &[f64], y: &mut [f64]| {
    ///     for (y, x) in y.iter_mut().zip(x) { *y = x.sqrt(); }
    /// })?;
    /// assert_eq!(&ys[..], &[1.0, 2.0, 3.0]);
    /// let mut plain = [0.0f64; 3];
    /// pool.map_into(&xs, &mut plain, |x: f64| -x)?;
    /// assert_eq!(plain, [-1.0, -4.0, -9.0]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] when the lengths differ; [`Error::Aliased`] when a `.npy`
    /// output is the input file; otherwise as [`Pool::map`].
    pub fn map_into<I, O, K, M>(&self, input: &I, output: &mut O, kernel: K) -> Result<()>
    where
        I: Input + ?Sized,
        O: Output + ?Sized,
        K: Kernel<M>,
        I::Elem: Fits<K::In>,
        O::Elem: Fits<K::Out>,
    {
        let (srcs, target) = (input.sources()?, output.target()?);
        kernel.with_spec(|spec| self.run_any(spec, srcs, target, None))
    }

    /// [`Pool::map_into`], calling `progress` with the number of elements (rows) done as
    /// chunks finish (for a progress bar). A panicking `progress` stops the map: it returns
    /// the panic as [`Error::KernelPanicked`] once no worker touches the buffers.
    ///
    /// # Errors
    ///
    /// As [`Pool::map_into`].
    pub fn map_into_progress<I, O, K, M>(
        &self,
        input: &I,
        output: &mut O,
        kernel: K,
        progress: &mut dyn FnMut(usize),
    ) -> Result<()>
    where
        I: Input + ?Sized,
        O: Output + ?Sized,
        K: Kernel<M>,
        I::Elem: Fits<K::In>,
        O::Elem: Fits<K::Out>,
    {
        let (srcs, target) = (input.sources()?, output.target()?);
        kernel.with_spec(|spec| self.run_any(spec, srcs, target, Some(progress)))
    }

    /// Submits `kernel` over `input` and returns at once with a [`Ticket`]; the workers run it
    /// while the caller does something else. Any number of threads may submit on one pool at
    /// the same time. The input is copied at submit (inline, or into a staging buffer), so the
    /// caller may change it right away; kernel and data forms are those of [`Pool::map`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let a = pool.submit(&[1.0f64, 4.0], |x: f64| x.sqrt())?;
    /// let b = pool.submit(&[9.0f64], |x: f64| x.sqrt())?;
    /// let mut out = [0.0; 2];
    /// a.wait_into(&mut out)?;
    /// assert_eq!(out, [1.0, 2.0]);
    /// assert_eq!(b.wait()?, [3.0]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Pool::map`], plus [`Error::RingFull`] when every slot is held by a finished ticket
    /// nobody waits for.
    pub fn submit<I, K, M>(&self, input: &I, kernel: K) -> Result<Ticket<'_, K::Out>>
    where
        I: Input + ?Sized,
        K: Kernel<M>,
        I::Elem: Fits<K::In>,
        K::Out: Pod,
    {
        if !I::ZIP {
            // One input: no `Vec` of sources (the steady-state submit allocates nothing).
            let src = input.source()?;
            return kernel.with_spec(|spec| self.submit_sources(std::slice::from_ref(&src), spec, false));
        }
        let srcs = input.sources()?;
        kernel.with_spec(|spec| self.submit_sources(&srcs, spec, false))
    }

    /// Checks `srcs` (one input, or a tuple's) against `spec` and submits them (see
    /// `ticket.rs`).
    pub(super) fn submit_sources<Out: Pod>(
        &self,
        srcs: &[Source<'_>],
        spec: &KernelSpec,
        fail_fast: bool,
    ) -> Result<Ticket<'_, Out>> {
        match srcs {
            [src] if spec.zip.is_empty() => self.submit_source(src, spec, fail_fast),
            _ => self.submit_zip(srcs, spec, fail_fast),
        }
    }

    /// Checks `src` against `spec` and submits it (see `ticket.rs`).
    pub(super) fn submit_source<Out: Pod>(
        &self,
        src: &Source<'_>,
        spec: &KernelSpec,
        fail_fast: bool,
    ) -> Result<Ticket<'_, Out>> {
        spec.check_sides(src.side, Side::of::<Out>())?;
        units(spec, src.bytes().len())?;
        self.submit_inner(src.bytes(), spec, fail_fast)
    }

    /// Streams batches through the pool and yields each batch's results in input order
    /// (Python's `imap` over chunks), with up to `imap_in_flight` batches in flight. Batches
    /// are any [`Input`] (`Vec`s, slices, arrays); kernel forms are those of [`Pool::map`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let batches = (0..3).map(|b| vec![b as f64; 4]);
    /// let sums: Vec<f64> = pool
    ///     .imap(batches, |x: f64| x + 0.5)
    ///     .map(|r| r.map(|v| v.iter().sum()))
    ///     .collect::<shmpool::Result<_>>()?;
    /// assert_eq!(sums, [2.0, 6.0, 10.0]);
    /// # Ok(()) }
    /// ```
    pub fn imap<B, K, M>(&self, batches: B, kernel: K) -> Imap<'_, K::Out, B::IntoIter>
    where
        B: IntoIterator,
        B::Item: Input,
        K: Kernel<M>,
        <B::Item as Input>::Elem: Fits<K::In>,
        K::Out: Pod,
    {
        Imap::new(self, batches.into_iter(), kernel.with_spec(|s| Ok(s.clone())))
    }

    /// Like [`Pool::imap`], but yields each batch's results as soon as it finishes, in any
    /// order (Python's `imap_unordered`).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> shmpool::Result<()> {
    /// let pool = shmpool::Pool::new(2)?;
    /// let mut sums: Vec<f64> = pool
    ///     .imap_unordered((0..4).map(|b| vec![b as f64; 2]), |x: f64| x * 10.0)
    ///     .map(|r| r.map(|v| v.iter().sum()))
    ///     .collect::<shmpool::Result<_>>()?;
    /// sums.sort_by(f64::total_cmp);
    /// assert_eq!(sums, [0.0, 20.0, 40.0, 60.0]);
    /// # Ok(()) }
    /// ```
    pub fn imap_unordered<B, K, M>(&self, batches: B, kernel: K) -> ImapUnordered<'_, K::Out, B::IntoIter>
    where
        B: IntoIterator,
        B::Item: Input,
        K: Kernel<M>,
        <B::Item as Input>::Elem: Fits<K::In>,
        K::Out: Pod,
    {
        ImapUnordered::new(self, batches.into_iter(), kernel.with_spec(|s| Ok(s.clone())))
    }

    /// One blocking map of one input or of several (a zip map, `zip.rs`).
    pub(super) fn run_any(
        &self,
        spec: &KernelSpec,
        srcs: Vec<Source<'_>>,
        target: Target<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        match <[Source<'_>; 1]>::try_from(srcs) {
            Ok([src]) if spec.zip.is_empty() => self.run(spec, src, target, progress),
            Ok(one) => self.run_zip(spec, one.into(), target, progress),
            Err(srcs) => self.run_zip(spec, srcs, target, progress),
        }
    }

    /// One blocking map: check, then run it where the data lives.
    fn run(
        &self,
        spec: &KernelSpec,
        src: Source<'_>,
        target: Target<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        spec.check_sides(src.side, target.side)?;
        let units = units(spec, src.bytes().len())?;
        if Some(target.len()) != units.checked_mul(spec.out_size) {
            return Err(Error::LengthMismatch { input: units, output: target.len() / spec.out_size });
        }
        match target.sink {
            Sink::Scatter { mut buf, scatter } => {
                self.run_in(spec, units, src.data, Sink::Plain(&mut buf), progress)?;
                scatter(&buf);
                Ok(())
            }
            sink => self.run_in(spec, units, src.data, sink, progress),
        }
    }

    /// Runs `units` of `spec` from `data` into `sink`, staging whichever side is plain memory
    /// when the other is shared (plain on both sides: the inline / staged slice path). A
    /// range of a file (`off` not 0) maps in place when both sides start at the same unit;
    /// otherwise its input is copied, as plain memory is.
    fn run_in(
        &self,
        spec: &KernelSpec,
        units: usize,
        data: Data<'_>,
        sink: Sink<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        let out_at = match &sink {
            Sink::Shared { off, .. } => Some(unit_of(*off, spec.out_size, "output range start")?),
            _ => None,
        };
        // A shared input maps in place only from the unit the output starts at.
        let at = out_at.unwrap_or(0);
        let data = match data {
            Data::Shared { bytes, off, .. } if off % spec.in_size != 0 || off / spec.in_size != at => {
                Data::Plain(std::borrow::Cow::Borrowed(bytes))
            }
            data => data,
        };
        match (data, sink) {
            (Data::Plain(i), Sink::Plain(o)) => self.map_slice(&i, o, spec, progress),
            (Data::Shared { seg: i, .. }, Sink::Shared { seg: o, path, .. }) => {
                if i.identity().is_some() && i.identity() == o.identity() {
                    let path = path.map_or_else(String::new, |p| p.display().to_string());
                    return Err(Error::Aliased { path });
                }
                self.map_shared_at(spec, units, i, super::run::Dest::Caller(o), progress, at)
            }
            (Data::Plain(i), Sink::Shared { seg: o, .. }) => {
                self.check_open()?;
                // The input staged at the output's first unit, so that both sides line up.
                let too_large = Error::TooLarge { count: at as u64, elem_size: spec.in_size as u64 };
                let skip =
                    at.checked_mul(spec.in_size).filter(|s| s.checked_add(i.len()).is_some()).ok_or(too_large)?;
                let mut stage = self.take_staging(skip + i.len())?;
                stage.bytes_mut(skip + i.len())[skip..].copy_from_slice(&i);
                let seg = stage.seg.clone();
                let r = self.map_shared_at(spec, units, &seg, super::run::Dest::Caller(o), progress, at);
                // A map that returned has no chunk in flight: the buffer may be reused.
                self.give_back(stage);
                r
            }
            (Data::Shared { seg: i, .. }, Sink::Plain(o)) => {
                self.check_open()?;
                let mut stage = self.take_staging(o.len())?;
                let seg = stage.seg.clone();
                // A recycled buffer: the workers zero a chunk kernel's output in it.
                let r = self.map_shared_staged(spec, units, i, &seg, progress);
                if r.is_ok() {
                    o.copy_from_slice(stage.bytes_mut(o.len()));
                }
                self.give_back(stage);
                r
            }
            (data, Sink::Scatter { mut buf, scatter }) => {
                self.run_in(spec, units, data, Sink::Plain(&mut buf), progress)?;
                scatter(&buf);
                Ok(())
            }
        }
    }
}

/// Which unit of `size` bytes byte `off` starts (a range of a file, as units of a kernel).
fn unit_of(off: usize, size: usize, what: &'static str) -> Result<usize> {
    if off % size != 0 {
        return Err(Error::InvalidOption { option: what, value: off as u64, allowed: "a whole number of rows" });
    }
    Ok(off / size)
}
