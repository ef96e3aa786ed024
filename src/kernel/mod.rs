//! How a function reaches a worker.
//!
//! A kernel is a plain `fn` item or a non-capturing closure: a zero-sized type. For each
//! (input type, output type, kernel type) the pool instantiates a *trampoline*, a plain `fn`
//! that casts a chunk's bytes to `&[In]` / `&mut [Out]` with `bytemuck` and runs the kernel with
//! the call inlined, so the loop vectorises as it would in the caller. Every worker runs the
//! caller's executable image (forked from it, or exec'd from the same file and verified), but
//! not necessarily at the same base address, so the descriptor carries the trampoline's
//! *offset* from an anchor function of the image plus a keyed tag (`KernelRef`) made with a key
//! that never leaves process-private memory (forked workers inherit it, the others receive it
//! over their private socket), so a descriptor forged or corrupted in shared memory cannot make
//! a worker jump to an arbitrary address. Function-pointer kernels travel the same way, in the
//! parameter block. Captured state goes in a `Pod` parameter block.
//!
//! Kernels must not capture: capturing closures are rejected by `cargo build` (not by `cargo
//! check`: see [`Kernel`] for why), because the worker rebuilds the kernel value from nothing
//! (it has no bytes):
//!
//! ```compile_fail,E0080
//! # fn main() -> shmpool::Result<()> {
//! let pool = shmpool::Pool::new(1)?;
//! let k = 3.0;
//! let _ = pool.map(&[1.0f64], move |x: f64| x * k)?; // captures `k`: use `.with(k)`
//! # Ok(()) }
//! ```
//!
//! This module must never touch shared memory or processes.

use std::any::TypeId;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use bytemuck::Pod;

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::key::Key;
pub(crate) use failure::Failure;
pub(crate) use side::Side;

#[cfg(feature = "expr")]
pub mod expr;
mod failure;
mod image;
mod reduce_with;
mod shape;
mod side;
#[cfg(feature = "expr")]
mod spec_expr;
mod trampoline;
mod zip;

pub use shape::{marker, Dynamic, Fits, Kernel, KernelExt, RowKernel, Typed, With, WithTable};
pub(crate) use zip::{big_stack, pairwise, ZipTrampoline, REDUCE_BLOCK};
pub use zip::{ChunkFold, ElemMap, Zip};
pub(crate) use zip::{ReduceKernel, ReduceSealed};

/// What a trampoline receives: the parameter block, the input bytes, the output bytes, and the
/// flat index of the chunk's first element.
pub(crate) type Trampoline = fn(params: &[u8], input: &[u8], output: &mut [u8], start: u64);

/// The tag key, in atomics rather than a lock: a worker forked while another thread of the
/// parent held a lock must still read it. `KEY_STATE`: 0 unset, 1 being drawn, 2 set.
static KEY_WORDS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static KEY_STATE: AtomicU8 = AtomicU8::new(0);

/// Makes sure the process-private key exists. Runs before any worker starts, so that forked
/// workers inherit it; other workers receive it with [`set_key`].
pub(crate) fn init_key() {
    key();
    // Found before any worker is forked, so that forked workers never call into the loader.
    image::span(anchor_addr());
}

/// The tag key, drawn from the OS on first use.
pub(crate) fn key() -> Key {
    loop {
        match KEY_STATE.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                let k: [u64; 2] = bytemuck::cast(Key::random());
                KEY_WORDS[0].store(k[0], Ordering::Relaxed);
                KEY_WORDS[1].store(k[1], Ordering::Relaxed);
                // PUBLISH: the words above, for readers that observe 2 with Acquire.
                KEY_STATE.store(2, Ordering::Release);
            }
            // OBSERVE: state 2 (Release above or in `set_key`) publishes the words.
            Err(2) => {
                return bytemuck::cast([KEY_WORDS[0].load(Ordering::Relaxed), KEY_WORDS[1].load(Ordering::Relaxed)])
            }
            Err(_) => std::hint::spin_loop(),
        }
    }
}

/// Replaces the tag key with the pool's (in a worker that did not inherit it), before any
/// kernel is resolved. The worker is single-threaded at that point.
pub(crate) fn set_key(k: Key) {
    let w: [u64; 2] = bytemuck::cast(k);
    KEY_WORDS[0].store(w[0], Ordering::Relaxed);
    KEY_WORDS[1].store(w[1], Ordering::Relaxed);
    // PUBLISH: the words above (see `key`).
    KEY_STATE.store(2, Ordering::Release);
    // While single-threaded: the image this exec'd worker checks kernel addresses against.
    image::span(anchor_addr());
}

/// The function every code address is measured from. A process started by `exec` of the same
/// (verified) executable loads it at another base address (ASLR), but at the same distance from
/// every other function of the image, so kernels travel as offsets from this anchor.
#[inline(never)]
fn anchor() {}

fn anchor_addr() -> usize {
    anchor as fn() as usize
}

/// The distance of a code address from the anchor (wrapping: it may lie below it).
pub(crate) fn offset_of(addr: usize) -> u64 {
    addr.wrapping_sub(anchor_addr()) as u64
}

/// The code address at `offset` from the anchor in this process.
pub(crate) fn addr_at(offset: u64) -> usize {
    anchor_addr().wrapping_add(offset as usize)
}

/// Whether `addr` is code of the executable image that holds the anchor (see `image`).
pub(crate) fn in_image(addr: usize) -> bool {
    image::contains(anchor_addr(), addr)
}

/// The keyed tag of a trampoline offset; `zip` separates the two trampoline signatures, so a
/// tag made for one can never pass as the other.
fn tag_of(offset: u64, zip: bool) -> u64 {
    let domain = if zip { 0x005a_4950_504f_4f4c_u64 } else { 0x0053_484d_504f_4f4c_u64 };
    key().hash_one((offset, domain))
}

/// A trampoline, as its offset from the image's anchor, with a keyed tag proving it was
/// produced by `KernelRef::of` (a [`Trampoline`]) or `KernelRef::of_zip` (a [`ZipTrampoline`])
/// in a process of this pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelRef {
    offset: u64,
    tag: u64,
    zip: bool,
}

impl KernelRef {
    fn of(t: Trampoline) -> KernelRef {
        let offset = offset_of(t as usize);
        KernelRef { offset, tag: tag_of(offset, false), zip: false }
    }

    fn of_zip(t: ZipTrampoline) -> KernelRef {
        let offset = offset_of(t as usize);
        KernelRef { offset, tag: tag_of(offset, true), zip: true }
    }

    /// Rebuilds a reference from the two words stored in a descriptor, if the tag matches and
    /// the address lies in this executable image; `zip`: a several-input trampoline
    /// ([`crate::ring::Descriptor::ZIP`]).
    pub(crate) fn from_parts(offset: u64, tag: u64, zip: bool) -> Option<KernelRef> {
        (tag_of(offset, zip) == tag && in_image(addr_at(offset))).then_some(KernelRef { offset, tag, zip })
    }

    /// The two words to store in a descriptor.
    pub(crate) fn parts(&self) -> (u64, u64) {
        (self.offset, self.tag)
    }

    /// Runs the kernel on one chunk. Panics (to be caught by the worker) when the byte slices
    /// do not fit the kernel's element types.
    pub(crate) fn invoke(&self, params: &[u8], input: &[u8], output: &mut [u8], start: u64) {
        assert!(!self.zip, "a several-input kernel called with one input");
        let addr = addr_at(self.offset);
        // SAFETY: `self.tag` matched the keyed hash of `self.offset` (in `from_parts`) or was
        // computed from a real `Trampoline` (in `of`). The key lives only in process-private
        // memory of the pool's processes (inherited by forked workers, sent over a private
        // socket to the others), so a matching tag means the offset was taken from a
        // `Trampoline` of this executable image; every pool process runs the same image (an
        // exec'd worker verifies it before serving), so anchor + offset is that trampoline here;
        // `from_parts` also checked that it is code of this image (see `image`).
        let f = unsafe { std::mem::transmute::<usize, Trampoline>(addr) };
        f(params, input, output, start)
    }

    /// Runs a several-input kernel on one chunk: `inputs` are the chunk's input ranges, the
    /// descriptor's own first. Panics (to be caught by the worker) as [`KernelRef::invoke`].
    pub(crate) fn invoke_zip(&self, params: &[u8], inputs: &[&[u8]], output: &mut [u8], start: u64) {
        assert!(self.zip, "a one-input kernel called with several inputs");
        let addr = addr_at(self.offset);
        // SAFETY: as in `invoke`; the tag was made in the zip domain (`tag_of(_, true)`, checked
        // by `from_parts` with `zip` set, or computed by `of_zip`), which only `ZipTrampoline`s
        // receive, so the code at this address has the `ZipTrampoline` signature.
        let f = unsafe { std::mem::transmute::<usize, ZipTrampoline>(addr) };
        f(params, inputs, output, start)
    }
}

/// The entry point of a `Process::spawn_fn` child: a trampoline that reads `f` and its
/// argument from its parameter block, and the block's first part (`f`, tagged); the caller
/// appends the argument's bytes.
///
/// # Errors
///
/// [`Error::ForeignKernel`] when `f` is not code of this executable image.
pub(crate) fn process_entry<A: Pod>(f: fn(A)) -> Result<(KernelRef, Vec<u8>)> {
    let entry = trampoline::process_entry::<A> as Trampoline;
    image::check(anchor_addr(), entry as usize)?;
    image::check(anchor_addr(), f as usize)?;
    Ok((KernelRef::of(entry), trampoline::fn_params::<fn(A)>(f as usize)))
}

/// A `PoolBuilder::worker_init` function as two words (its offset from the anchor and a keyed
/// tag of that offset and its type), for an exec'd worker's start-up record.
pub(crate) fn init_fn_parts(f: fn()) -> [u64; 2] {
    bytemuck::pod_read_unaligned(&trampoline::fn_params::<fn()>(f as usize))
}

/// The `worker_init` function of [`init_fn_parts`]'s two words, if the tag matches.
pub(crate) fn init_fn_from_parts(offset: u64, tag: u64) -> Option<fn()> {
    trampoline::fn_from_params::<fn()>(bytemuck::bytes_of(&[offset, tag]))
}

/// The element type on one side of a kernel: Rust's identity of it, its name for messages, and
/// the numpy dtype it is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ElemType {
    id: TypeId,
    size: usize,
    name: &'static str,
    dtype: Option<Dtype>,
}

impl ElemType {
    pub(crate) fn of<T: Pod>() -> ElemType {
        ElemType {
            id: TypeId::of::<T>(),
            size: std::mem::size_of::<T>(),
            name: std::any::type_name::<T>(),
            dtype: Dtype::of::<T>(),
        }
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        self.size
    }

    /// Whether data of element type `s` (a Rust type or a file's dtype) is this type.
    pub(crate) fn fits(&self, s: Side) -> bool {
        match s {
            Side::Typed(t) => self.id == t.id,
            Side::Dtype(d) => self.dtype == Some(d),
        }
    }

    pub(crate) fn describe(self) -> String {
        match self.dtype {
            Some(d) => d.to_string(),
            None => self.name.to_string(),
        }
    }
}

/// Rejects, at compile time, a kernel type with bytes: the worker rebuilds the kernel from
/// nothing, so it must capture nothing.
macro_rules! assert_zero_sized {
    ($f:ty) => {
        const {
            assert!(
                std::mem::size_of::<$f>() == 0,
                "this kernel captures variables (the `{{closure@FILE:LINE:COL}}` this error names): a kernel must be a fn item or a closure that captures nothing. Pass captured values as a parameter block: `kernel.with(params)` (formerly `map_with`), a run-time sized table: `kernel.with_table(&values)`, and fn pointers through KernelSpec::elem_fn / chunk_fn"
            )
        }
    };
}

/// `KernelSpec::fills_output` of element and expression kernels.
pub(crate) const FILLS: bool = true;
/// `KernelSpec::fills_output` of chunk kernels.
pub(crate) const MAY_READ: bool = false;

/// Everything the pool needs to send a kernel to workers: the trampoline, the element types on
/// both sides (checked against the data at every map) and the parameter block.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    pub(crate) kernel: KernelRef,
    pub(crate) in_size: usize,
    pub(crate) out_size: usize,
    pub(crate) input: ElemType,
    pub(crate) output: ElemType,
    pub(crate) params: Vec<u8>,
    /// A code address of this kernel (trampoline or function pointer) that is not in the
    /// executable image: the spec is refused by every map (see `image`).
    foreign: Option<usize>,
    /// Whether the kernel writes every output element by construction (element and expression
    /// kernels: `out[k] = f(in[k])` for every `k`). A chunk kernel is user code that may read
    /// its output or leave parts unwritten, so the pool hands it a zeroed output instead.
    pub(crate) fills_output: bool,
    /// The element types of a several-input kernel's data inputs, in order (empty for a
    /// one-input kernel); `input` is then the type of the descriptor's own input.
    pub(crate) zip: Vec<ElemType>,
    /// The flat index the kernel sees for a map's first element ([`KernelSpec::index_offset`]).
    pub(crate) index_offset: u64,
}

impl KernelSpec {
    /// A several-input kernel (see `zip`): the descriptor's own input holds `main` elements,
    /// the data inputs are `data`.
    fn new_zip<Out: Pod>(
        t: ZipTrampoline,
        main: ElemType,
        data: Vec<ElemType>,
        params: Vec<u8>,
        fills: bool,
    ) -> KernelSpec {
        const {
            assert!(std::mem::align_of::<Out>() <= 64, "element alignment exceeds 64");
            assert!(std::mem::size_of::<Out>() > 0, "zero-sized elements");
        };
        KernelSpec {
            foreign: (!in_image(t as usize)).then_some(t as usize),
            kernel: KernelRef::of_zip(t),
            in_size: main.size(),
            out_size: std::mem::size_of::<Out>(),
            input: main,
            output: ElemType::of::<Out>(),
            params,
            fills_output: fills,
            zip: data,
            index_offset: 0,
        }
    }

    fn new<In: Pod, Out: Pod>(t: Trampoline, params: Vec<u8>, fills_output: bool) -> KernelSpec {
        const {
            assert!(
                std::mem::align_of::<In>() <= 64 && std::mem::align_of::<Out>() <= 64,
                "element alignment exceeds 64"
            );
            assert!(std::mem::size_of::<In>() > 0 && std::mem::size_of::<Out>() > 0, "zero-sized elements");
        };
        KernelSpec {
            foreign: (!in_image(t as usize)).then_some(t as usize),
            kernel: KernelRef::of(t),
            in_size: std::mem::size_of::<In>(),
            out_size: std::mem::size_of::<Out>(),
            input: ElemType::of::<In>(),
            output: ElemType::of::<Out>(),
            params,
            fills_output,
            zip: Vec::new(),
            index_offset: 0,
        }
    }

    /// An element kernel `fn(In) -> Out`.
    pub fn elem<In: Pod, Out: Pod, F: Fn(In) -> Out + Copy>(_f: F) -> KernelSpec {
        assert_zero_sized!(F);
        Self::new::<In, Out>(trampoline::elem::<In, Out, F>, Vec::new(), FILLS)
    }

    /// An element kernel with a parameter block, `fn(In, &P) -> Out`.
    pub fn elem_with<In: Pod, Out: Pod, P: Pod, F: Fn(In, &P) -> Out + Copy>(params: &P, _f: F) -> KernelSpec {
        assert_zero_sized!(F);
        Self::new::<In, Out>(trampoline::elem_with::<In, Out, P, F>, bytemuck::bytes_of(params).to_vec(), FILLS)
    }

    /// A chunk kernel `fn(&[In], &mut [Out])`.
    pub fn chunk<In: Pod, Out: Pod, F: Fn(&[In], &mut [Out]) + Copy>(_f: F) -> KernelSpec {
        assert_zero_sized!(F);
        Self::new::<In, Out>(trampoline::chunk::<In, Out, F>, Vec::new(), MAY_READ)
    }

    /// A chunk kernel with a parameter block, `fn(&[In], &mut [Out], &P)`.
    pub fn chunk_with<In: Pod, Out: Pod, P: Pod, F: Fn(&[In], &mut [Out], &P) + Copy>(params: &P, _f: F) -> KernelSpec {
        assert_zero_sized!(F);
        Self::new::<In, Out>(trampoline::chunk_with::<In, Out, P, F>, bytemuck::bytes_of(params).to_vec(), MAY_READ)
    }

    /// A chunk kernel that also receives the flat index of the chunk's first element,
    /// `fn(&[In], &mut [Out], start)`.
    pub fn indexed<In: Pod, Out: Pod, F: Fn(&[In], &mut [Out], u64) + Copy>(_f: F) -> KernelSpec {
        assert_zero_sized!(F);
        Self::new::<In, Out>(trampoline::indexed::<In, Out, F>, Vec::new(), MAY_READ)
    }

    /// An element kernel given as a function pointer (chosen at run time). The call is
    /// indirect, so the loop does not vectorise as well as with a `fn` item.
    ///
    /// `f` must be code of the executable image that holds shmpool (not a function of a
    /// `dlopen`ed library): maps refuse the spec otherwise, with [`Error::ForeignKernel`].
    pub fn elem_fn<In: Pod, Out: Pod>(f: fn(In) -> Out) -> KernelSpec {
        let spec = Self::new::<In, Out>(
            trampoline::elem_ptr::<In, Out>,
            trampoline::fn_params::<fn(In) -> Out>(f as usize),
            FILLS,
        );
        spec.with_fn_pointer(f as usize)
    }

    fn with_fn_pointer(mut self, addr: usize) -> KernelSpec {
        if self.foreign.is_none() && !in_image(addr) {
            self.foreign = Some(addr);
        }
        self
    }

    /// A chunk kernel given as a function pointer (chosen at run time): one indirect call per
    /// chunk, so it runs as fast as a `fn` item.
    ///
    /// `f` must be code of the executable image that holds shmpool, as for
    /// [`KernelSpec::elem_fn`].
    pub fn chunk_fn<In: Pod, Out: Pod>(f: fn(&[In], &mut [Out])) -> KernelSpec {
        Self::new::<In, Out>(
            trampoline::chunk_ptr::<In, Out>,
            trampoline::fn_params::<fn(&[In], &mut [Out])>(f as usize),
            MAY_READ,
        )
        .with_fn_pointer(f as usize)
    }

    /// A row kernel: rows of `in_cols` `In` elements map to rows of `out_cols` `Out`
    /// elements; the pool's chunks are whole rows (one row is one unit of the map).
    fn rows<In: Pod, Out: Pod>(t: Trampoline, in_cols: usize, out_cols: usize) -> Result<KernelSpec> {
        let width = |cols: usize, size: usize| {
            cols.checked_mul(size).filter(|&b| cols > 0 && u32::try_from(b).is_ok()).ok_or(Error::InvalidOption {
                option: "row width",
                value: cols as u64,
                allowed: "at least 1 and at most 4 GiB per row",
            })
        };
        let mut spec =
            Self::new::<In, Out>(t, bytemuck::bytes_of(&[in_cols as u64, out_cols as u64]).to_vec(), MAY_READ);
        spec.in_size = width(in_cols, std::mem::size_of::<In>())?;
        spec.out_size = width(out_cols, std::mem::size_of::<Out>())?;
        Ok(spec)
    }

    /// Bytes per input unit: an element, or a whole row of a row kernel.
    pub fn in_size(&self) -> usize {
        self.in_size
    }

    /// Bytes per output unit: an element, or a whole row of a row kernel.
    pub fn out_size(&self) -> usize {
        self.out_size
    }

    fn mismatch(&self, data: String) -> Error {
        Error::TypeMismatch { kernel: format!("{} -> {}", self.input.describe(), self.output.describe()), data }
    }

    /// Refuses a kernel whose code is not in the executable image (see `image`).
    ///
    /// # Errors
    ///
    /// [`Error::ForeignKernel`] naming the object the code belongs to.
    pub(crate) fn check_image(&self) -> Result<()> {
        match self.foreign {
            Some(addr) => image::check(anchor_addr(), addr),
            None => Ok(()),
        }
    }

    /// Checks that this kernel maps `In` to `Out` (and that its code is in the executable
    /// image).
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] naming both sides; [`Error::ForeignKernel`].
    pub(crate) fn check_types<In: Pod, Out: Pod>(&self) -> Result<()> {
        self.check_image()?;
        let (i, o) = (ElemType::of::<In>(), ElemType::of::<Out>());
        if self.input.id != i.id || self.output.id != o.id {
            return Err(self.mismatch(format!("{} -> {}", i.describe(), o.describe())));
        }
        Ok(())
    }

    /// Checks this kernel against the element types of a map's data, each a Rust type or a
    /// file's dtype.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] naming both sides.
    pub(crate) fn check_sides(&self, input: Side, output: Side) -> Result<()> {
        if self.zip.is_empty() && self.input.fits(input) && self.output.fits(output) {
            return Ok(());
        }
        let name = |s: Side| match s {
            Side::Typed(t) => t.describe(),
            Side::Dtype(d) => d.to_string(),
        };
        Err(self.mismatch(format!("{} -> {}", name(input), name(output))))
    }

    /// Checks that this kernel maps `input` elements to `output` elements (files, whose element
    /// types are known only at run time).
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] naming both sides.
    pub(crate) fn check_dtypes(&self, input: Dtype, output: Dtype) -> Result<()> {
        self.check_image()?;
        if self.input.dtype != Some(input) || self.output.dtype != Some(output) {
            return Err(self.mismatch(format!("{input} -> {output}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ref_round_trips_and_rejects_forged_tags() {
        let spec = KernelSpec::elem(|x: f64| x * 2.0);
        let (offset, tag) = spec.kernel.parts();
        let k = KernelRef::from_parts(offset, tag, false).unwrap();
        assert!(KernelRef::from_parts(offset, tag ^ 1, false).is_none());
        assert!(KernelRef::from_parts(offset, tag, true).is_none(), "the other signature's domain");
        assert!(KernelRef::from_parts(offset + 1, tag, false).is_none());
        let input = bytemuck::cast_slice::<f64, u8>(&[1.0, 2.5]).to_vec();
        let mut out = vec![0f64; 2];
        k.invoke(&[], &input, bytemuck::cast_slice_mut(&mut out), 0);
        assert_eq!(out, [2.0, 5.0]);
    }

    #[test]
    fn function_pointers_travel_with_a_typed_tag() {
        fn double(x: f64) -> f64 {
            x * 2.0
        }
        let f: fn(f64) -> f64 = if std::env::args().count() > 1000 { f64::sqrt } else { double };
        let spec = KernelSpec::elem_fn(f);
        let input = bytemuck::cast_slice::<f64, u8>(&[1.0, 2.5]).to_vec();
        let mut out = vec![0f64; 2];
        spec.kernel.invoke(&spec.params, &input, bytemuck::cast_slice_mut(&mut out), 0);
        assert_eq!(out, [2.0, 5.0]);
        assert!(trampoline::fn_from_params::<fn(f32) -> f32>(&spec.params).is_none(), "another type is refused");
        let mut forged = spec.params.clone();
        forged[0] ^= 1;
        assert!(trampoline::fn_from_params::<fn(f64) -> f64>(&forged).is_none());
    }

    #[test]
    fn code_outside_the_executable_image_is_refused_even_with_a_valid_tag() {
        // SAFETY: a NUL-terminated name; dlsym only looks it up.
        let outside = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as usize;
        assert_ne!(outside, 0);
        assert!(in_image(anchor_addr()) && in_image(trampoline::elem_ptr::<f64, f64> as Trampoline as usize));
        assert!(!in_image(outside), "malloc lives in the C library, not in this image");
        let offset = offset_of(outside);
        assert!(
            KernelRef::from_parts(offset, tag_of(offset, false), false).is_none(),
            "a worker refuses the descriptor"
        );
        let params = trampoline::fn_params::<fn(f64) -> f64>(outside);
        assert!(trampoline::fn_from_params::<fn(f64) -> f64>(&params).is_none(), "and the function pointer");
        // SAFETY: a code address that is only compared, never called.
        let f = unsafe { std::mem::transmute::<usize, fn(f64) -> f64>(outside) };
        let spec = KernelSpec::elem_fn(f);
        assert!(matches!(spec.check_types::<f64, f64>(), Err(Error::ForeignKernel { .. })));
        assert!(KernelSpec::elem_fn(f64::sqrt as fn(f64) -> f64).check_types::<f64, f64>().is_ok());
    }

    #[test]
    fn parameter_blocks_reach_the_kernel() {
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C)]
        struct Affine {
            a: f32,
            b: f32,
        }
        let spec = KernelSpec::elem_with(&Affine { a: 2.0, b: 1.0 }, |x: i32, p: &Affine| x as f32 * p.a + p.b);
        let input = bytemuck::cast_slice::<i32, u8>(&[1, 2, 3]).to_vec();
        let mut out = vec![0f32; 3];
        spec.kernel.invoke(&spec.params, &input, bytemuck::cast_slice_mut(&mut out), 0);
        assert_eq!(out, [3.0, 5.0, 7.0]);
    }
}
