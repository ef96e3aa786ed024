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
//! Kernels must not capture: capturing closures are rejected at compile time, because the
//! worker rebuilds the kernel value from nothing (it has no bytes):
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
pub(crate) use side::Side;

#[cfg(feature = "expr")]
pub mod expr;
mod image;
mod shape;
mod side;
mod trampoline;

pub use shape::{marker, Dynamic, Fits, Kernel, KernelExt, RowKernel, Typed, With, WithTable};

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

fn tag_of(offset: u64) -> u64 {
    key().hash_one((offset, 0x0053_484d_504f_4f4c_u64))
}

/// A trampoline, as its offset from the image's anchor, with a keyed tag proving it was
/// produced by `KernelRef::of` in a process of this pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelRef {
    offset: u64,
    tag: u64,
}

impl KernelRef {
    fn of(t: Trampoline) -> KernelRef {
        let offset = offset_of(t as usize);
        KernelRef { offset, tag: tag_of(offset) }
    }

    /// Rebuilds a reference from the two words stored in a descriptor, if the tag matches and
    /// the address lies in this executable image.
    pub(crate) fn from_parts(offset: u64, tag: u64) -> Option<KernelRef> {
        (tag_of(offset) == tag && in_image(addr_at(offset))).then_some(KernelRef { offset, tag })
    }

    /// The two words to store in a descriptor.
    pub(crate) fn parts(&self) -> (u64, u64) {
        (self.offset, self.tag)
    }

    /// Runs the kernel on one chunk. Panics (to be caught by the worker) when the byte slices
    /// do not fit the kernel's element types.
    pub(crate) fn invoke(&self, params: &[u8], input: &[u8], output: &mut [u8], start: u64) {
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

    fn describe(self) -> String {
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
}

impl KernelSpec {
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

    /// An expression kernel reading `In` and writing `Out` elements (feature `expr`): `In` must store the
    /// program's input dtype; the result is cast to `Out` ([`expr::Program::astype`]) when it
    /// is not the program's output dtype. `u8` reads and writes `bool`, [`half::f16`] float16.
    ///
    /// # Errors
    ///
    /// [`Error::Expr`] ([`expr::Error::TypeMismatch`]) when `In` is not the type the program
    /// was compiled for, ([`expr::Error::InputCount`]) when it reads more than one input.
    #[cfg(feature = "expr")]
    pub fn expr<In: expr::Num, Out: expr::Num>(program: &expr::Program) -> Result<KernelSpec> {
        let given = program.input_dtypes().len();
        if given != 1 {
            // A chunk kernel reads one input: several named inputs need another engine path.
            return Err(expr::Error::InputCount { expected: 1, given }.into());
        }
        let program = if Out::stores(program.output_dtype()) { program.clone() } else { program.astype(Out::DTYPE) };
        program.check_types::<In, Out>()?;
        // The evaluator writes every element of its output (numpy's `out = f(x)`).
        Ok(Self::new::<In, Out>(expr::eval::<In, Out>, program.to_bytes(), FILLS))
    }

    /// An expression kernel (feature `expr`) for element types chosen at run time: reads `input` (the type the
    /// program was compiled for) and writes `output`, casting the result as numpy's `astype`
    /// when `output` is not the program's output dtype.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when `input` is not the program's input dtype.
    #[cfg(feature = "expr")]
    pub fn expr_for(program: &expr::Program, input: Dtype, output: Dtype) -> Result<KernelSpec> {
        if input != program.input_dtype() {
            return Err(Error::TypeMismatch {
                kernel: format!("an expression compiled for {} input", program.input_dtype()),
                data: input.to_string(),
            });
        }
        let program = program.astype(output);
        macro_rules! out {
            ($i:ty) => {
                match output {
                    Dtype::Bool | Dtype::U8 => Self::expr::<$i, u8>(&program),
                    Dtype::I8 => Self::expr::<$i, i8>(&program),
                    Dtype::I16 => Self::expr::<$i, i16>(&program),
                    Dtype::I32 => Self::expr::<$i, i32>(&program),
                    Dtype::I64 => Self::expr::<$i, i64>(&program),
                    Dtype::U16 => Self::expr::<$i, u16>(&program),
                    Dtype::U32 => Self::expr::<$i, u32>(&program),
                    Dtype::U64 => Self::expr::<$i, u64>(&program),
                    Dtype::F16 => Self::expr::<$i, half::f16>(&program),
                    Dtype::F32 => Self::expr::<$i, f32>(&program),
                    Dtype::F64 => Self::expr::<$i, f64>(&program),
                }
            };
        }
        let mut spec = match input {
            Dtype::Bool | Dtype::U8 => out!(u8),
            Dtype::I8 => out!(i8),
            Dtype::I16 => out!(i16),
            Dtype::I32 => out!(i32),
            Dtype::I64 => out!(i64),
            Dtype::U16 => out!(u16),
            Dtype::U32 => out!(u32),
            Dtype::U64 => out!(u64),
            Dtype::F16 => out!(half::f16),
            Dtype::F32 => out!(f32),
            Dtype::F64 => out!(f64),
        }?;
        // `u8` stores bool: the spec records the dtypes the program reads and writes.
        spec.input.dtype = Some(input);
        spec.output.dtype = Some(output);
        spec.check_dtypes(input, output)?;
        Ok(spec)
    }

    /// An expression kernel over several `.npy` inputs (feature `expr`), broadcast as numpy
    /// does: map it with [`crate::Pool::map_into`] from `inputs[main]`, which must have the
    /// broadcast shape, into an output of that shape and of dtype `output` (the result is cast
    /// as numpy's `astype`). Input `k` is `inputs[k] = (path, array)`, `program` compiled with
    /// [`expr::Program::compile_inputs`] for their dtypes. Every worker maps each file itself,
    /// read-only, and checks it is the very file (device and inode) that was opened here.
    ///
    /// # Safety
    ///
    /// Every array of `inputs` must outlive every map with this kernel: the workers map the
    /// very files the arrays map (checked by device and inode), and only the promise made to
    /// [`crate::NpyArray::open`] (nothing truncates or modifies the file while the array
    /// exists) keeps their mappings valid and immutable; the kernel does not borrow them.
    /// ([`crate::Pool::reduce_npy`] borrows its arrays for its whole run and is safe.)
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when the inputs are not the program's, in number or dtype;
    /// [`Error::Expr`] ([`expr::Error::Broadcast`]) for shapes numpy cannot broadcast;
    /// [`Error::InvalidOption`] when `inputs[main]` does not have the broadcast shape;
    /// [`Error::File`] when a path cannot be resolved.
    #[cfg(feature = "expr")]
    pub unsafe fn expr_files(
        program: &expr::Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[expr::Value],
        main: usize,
        output: Dtype,
    ) -> Result<KernelSpec> {
        let (files, out_shape) = Self::file_inputs(program, inputs, constants)?;
        if inputs.get(main).is_none_or(|(_, a)| a.shape() != out_shape.as_slice()) {
            return Err(Error::InvalidOption {
                option: "main input",
                value: main as u64,
                allowed: "an input of the broadcast shape",
            });
        }
        let dtypes = program.input_dtypes().to_vec();
        let program = program.astype(output);
        let params = expr::encode_files(&program.to_bytes(), &files);
        let input = dtypes[main];
        macro_rules! by_size {
            ($size:expr, $T:ident => $body:expr) => {
                match $size {
                    1 => {
                        type $T = u8;
                        $body
                    }
                    2 => {
                        type $T = u16;
                        $body
                    }
                    4 => {
                        type $T = u32;
                        $body
                    }
                    _ => {
                        type $T = u64;
                        $body
                    }
                }
            };
        }
        let mut spec = by_size!(input.size(), I => by_size!(output.size(), O => Self::new::<I, O>(expr::eval_files, params.clone(), FILLS)));
        spec.input.dtype = Some(input);
        spec.output.dtype = Some(output);
        Ok(spec)
    }

    /// What workers need to map the inputs of a several-input expression themselves, and the
    /// broadcast shape.
    #[cfg(feature = "expr")]
    fn file_inputs(
        program: &expr::Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[expr::Value],
    ) -> Result<(Vec<expr::FileInput>, Vec<u64>)> {
        let dtypes: Vec<Dtype> =
            inputs.iter().map(|(_, a)| a.dtype()).chain(constants.iter().map(expr::Value::dtype)).collect();
        if dtypes != program.input_dtypes() {
            let names = |d: &[Dtype]| d.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
            return Err(Error::TypeMismatch {
                kernel: format!("an expression compiled for ({})", names(program.input_dtypes())),
                data: format!("({})", names(&dtypes)),
            });
        }
        let mut shapes: Vec<&[u64]> = inputs.iter().map(|(_, a)| a.shape()).collect();
        shapes.extend(constants.iter().map(|_| &[][..]));
        let out_shape = expr::broadcast_shapes(&shapes)?;
        let mut files = Vec::with_capacity(inputs.len());
        for (path, a) in inputs {
            let seg = a.segment();
            let (dev, ino) = seg.identity().unwrap_or((0, 0));
            let data_off = seg.file_area().map_or(0, |f| f.offset as u64);
            let path = path.canonicalize().map_err(|e| Error::File {
                op: "resolve",
                path: path.display().to_string(),
                source: e,
            })?;
            files.push(expr::FileInput { path, dev, ino, data_off, shape: a.shape().to_vec(), data: Vec::new() });
        }
        for c in constants {
            let data = c.to_le_bytes();
            files.push(expr::FileInput {
                path: Default::default(),
                dev: 0,
                ino: 0,
                data_off: 0,
                shape: Vec::new(),
                data,
            });
        }
        Ok((files, out_shape))
    }

    /// A reduction kernel: maps block numbers (`u64`) to the partial results of `start`
    /// (a fresh reducer, or one after its first pass) over `program`'s values, block by block.
    /// As [`KernelSpec::expr_files`], the arrays must outlive every map with it: the caller
    /// ([`crate::Pool::reduce_npy`]) borrows them for as long as the kernel exists.
    #[cfg(feature = "expr")]
    pub(crate) fn reduce_blocks(
        start: &expr::Reducer,
        program: &expr::Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[expr::Value],
    ) -> Result<(KernelSpec, u64)> {
        let (files, out_shape) = Self::file_inputs(program, inputs, constants)?;
        let total: u64 = out_shape.iter().product();
        let params = expr::encode_reduce(start, total, &program.to_bytes(), &files);
        Ok((Self::new::<u64, [u8; expr::REDUCER_BYTES]>(expr::eval_reduce, params, FILLS), total))
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
        let fits = |k: &ElemType, s: Side| match s {
            Side::Typed(t) => k.id == t.id,
            Side::Dtype(d) => k.dtype == Some(d),
        };
        if fits(&self.input, input) && fits(&self.output, output) {
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
        let k = KernelRef::from_parts(offset, tag).unwrap();
        assert!(KernelRef::from_parts(offset, tag ^ 1).is_none());
        assert!(KernelRef::from_parts(offset + 1, tag).is_none());
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
        assert!(KernelRef::from_parts(offset, tag_of(offset)).is_none(), "a worker refuses the descriptor");
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
