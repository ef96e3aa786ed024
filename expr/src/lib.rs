//! # shmpool-expr
//!
//! numpy's arithmetic on whole arrays, compiled to a small typed register program that is
//! evaluated over slices in blocks of [`BLOCK`] elements (one tight loop per operation, so it
//! vectorises). The engine (`shmpool`, feature `expr`) sends programs to its workers as a
//! kernel's parameter block; this crate knows nothing of the engine.
//!
//! ```
//! use shmpool_expr::{reduce_bytes, Dtype, Program, Reduction, Value};
//!
//! // One input, `x`: numpy's types (NEP 50: `x + 1` stays int32).
//! let p = Program::compile_for("x * 2 + 1", Dtype::I32)?;
//! let mut y = [0i32; 3];
//! p.eval_slice(&[1i32, 2, 3], &mut y, 0)?;
//! assert_eq!(y, [3, 5, 7]);
//!
//! // Several named inputs, broadcast as numpy: (2, 1) with (3,) gives (2, 3).
//! let p = Program::compile_inputs("a * b", &[("a", Dtype::F64), ("b", Dtype::F32)])?;
//! let (a, b) = ([1.0f64, 2.0], [1.0f32, 10.0, 100.0]);
//! let mut out = [0f64; 6];
//! p.eval_broadcast(
//!     &[(bytemuck::cast_slice(&a), &[2, 1]), (bytemuck::cast_slice(&b), &[3])],
//!     bytemuck::cast_slice_mut(&mut out),
//!     0..6,
//! )?;
//! assert_eq!(out, [1.0, 10.0, 100.0, 2.0, 20.0, 200.0]);
//!
//! // A reduction with numpy's result type: the sum of int32 values is an int64.
//! let (v, _warning) = reduce_bytes(Reduction::Sum, Dtype::I32, bytemuck::cast_slice(&[1i32, 2, 3]))?;
//! assert_eq!(v, Value::Int(6, Dtype::I64));
//! assert_eq!(v.repr(), "np.int64(6)");
//! # Ok::<(), shmpool_expr::Error>(())
//! ```
//!
//! What an expression computes is what numpy computes for the same text with `x` an array of
//! the input's dtype:
//!
//! - **Types** follow numpy's promotion with NEP 50's weak Python scalars: number literals
//!   (Python's `1_000 0x10 0o7 0b1`, `True False pi e inf nan`) take the array's type, so
//!   `x + 1` stays `uint8` for `uint8` input and `x * 0.5` stays `float32`; integers stay integers through `+ - * // % **`,
//!   wrapping on overflow, with `x // 0 == x % 0 == 0`; `/` and functions like `sqrt` give
//!   numpy's float type (`float64` for 32- and 64-bit integers, `float32` for 16-bit,
//!   `float16` for 8-bit and bool). `i` (the flat index) is `int64`. Python integers go to
//!   2**127 - 1 (`x + 2**64` is a float on float arrays, `x < 2**64` exact on integer ones);
//!   where numpy cannot convert one to a C long it is numpy's OverflowError, in words.
//! - **Operators**, with Python's precedence: `+ - * / // % **`, unary `- + ~` (`+` refused
//!   on bool, as numpy's `positive`), `<< >>` (integers only; shifting by the bit width or more
//!   gives 0, or -1 for a negative `>>`), `& | ^` (binding tighter than comparisons, so `(x > 0) & (x < 1)` needs its parentheses, as in
//!   numpy), and comparisons `< <= > >= == !=` giving `bool`, chained as in Python
//!   (`0 < x < 1` is `(0 < x) & (x < 1)`).
//! - **Functions**, under numpy's and numexpr's names: `sqrt exp expm1 log log1p log2 log10
//!   sin cos tan arcsin/asin arccos/acos arctan/atan sinh cosh tanh arcsinh/asinh
//!   arccosh/acosh arctanh/atanh abs/absolute floor ceil trunc round rint sign negative invert
//!   isnan isinf isfinite signbit copy real imag conj/conjugate ones_like positive
//!   left_shift right_shift minimum maximum power/pow fmod arctan2/atan2 hypot copysign
//!   nextafter where clip/clamp`.
//! - **Floating point** is IEEE throughout: division by zero gives inf or nan, never an error;
//!   `%` gives a result (zero included) with the divisor's sign; `minimum`/`maximum` propagate
//!   NaN. The one runtime error is numpy's: an integer raised to a negative integer power.
//!
//! - **Several inputs** ([`Program::compile_inputs`]): named arrays (`a * b + c`) of any
//!   dtypes, promoted as numpy promotes them, broadcast as numpy broadcasts their shapes
//!   ([`broadcast_shapes`], [`Program::eval_broadcast`]); `i` is the flat index of the output.
//!
//! - **Reductions** ([`Reducer`], [`AxisReduction`]): numpy's `sum mean std argmax ...` over
//!   a whole array or along one axis (`sum(x, axis=1)`, numpy's `AxisError` for a bad axis),
//!   and numpy's `repr` of the result ([`Value::repr`], [`array_repr`]).
//!
//! Nesting deeper than [`parse::MAX_DEPTH`] levels is refused with an error; length is not
//! limited (the parser loops over sums and products, and every later pass is a loop).
//!
//! Where numpy's behaviour is a property of its implementation rather than of its types, the
//! rule followed is numpy's: `array ** 2` is `np.square` (int8 for bool), `** 0.5` is `sqrt`,
//! `np.where` wraps an out-of-range literal where arithmetic refuses it, `clip` keeps `-0.0`,
//! int64 and uint64 compare exactly. One deliberate difference: a float cast to an integer type
//! (`--dtype` on a float result) saturates, where numpy leaves out-of-range values to the C
//! cast (undefined; `INT_MIN` on x86).
//!
//! Fusions make an expression cost what the same Rust closure costs: `f(x) * k1 + k2` is one
//! loop, `sin(a)` and `cos(a)` share one `sincos` call, constants are computed once per chunk.
//!
//! Layout: `lex` and [`parse`] (text to tokens, to nodes), `literal` (Python's values and constant arithmetic),
//! `compile` (types, casts, numpy's loop choice; uses `literal`, never the reverse), `fuse` and
//! `alloc` (fusions, registers), `elem` and `float` (numpy's per-type semantics), `eval` (the
//! block evaluator). This crate never touches shared memory or processes and does not depend
//! on the engine (`shmpool`), which runs programs as kernels (its feature `expr`).
//!
//! The only `unsafe` is in `float`: calls of C's `asinh`/`acosh`/`atanh` (numpy's results,
//! which Rust's own differ from in the last bit).
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc, missing_docs)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

mod alloc;
mod axis;
mod broadcast;
mod compensated;
mod compile;
mod decode;
mod elem;
mod error;
mod eval;
mod float;
mod funcs;
mod fuse;
mod lex;
mod literal;
mod op;
pub mod parse;
mod reduce;
mod reduction;
mod repr;
mod scan;
#[cfg(test)]
mod test;
mod value;

use bytemuck::{Pod, Zeroable};

pub use axis::{normalize_axis, warning_code, warning_of_code, AxisReduction, ValueSource, AXIS_WORDS};
pub use broadcast::broadcast_shapes;
pub use error::{Error, Result};
pub use reduce::{reduce_bytes, Reducer, Reduction, Value, REDUCER_BYTES};
pub use repr::array_repr;
pub use shmpool_dtype::{Dtype, UnknownDtype};

use op::Op;

/// Elements per block: each operation runs over this many elements at a time.
pub const BLOCK: usize = 1024;

/// Runs `$body` with `$T` bound to the register type of the dtype `$d`, for the dtypes listed
/// (`Variant => type`); any other dtype is a bug of the validator (`$what` names the operation).
macro_rules! dispatch_reg_type {
    ($d:expr, $T:ident => $body:expr; $what:literal; $($v:ident => $ty:ty),+ $(,)?) => {
        match $d {
            $(Dtype::$v => {
                type $T = $ty;
                $body
            })+
            #[allow(unreachable_patterns)]
            d => unreachable!("validated: {} on {d}", $what),
        }
    };
}
use dispatch_reg_type;

/// Runs `$body` with `$T` bound to the register type of the dtype `$d` (every dtype).
macro_rules! with_reg_type {
    ($d:expr, $T:ident => $body:expr) => {
        $crate::dispatch_reg_type!($d, $T => $body; "an operation";
            Bool => $crate::elem::B, I8 => i8, I16 => i16, I32 => i32, I64 => i64,
            U8 => u8, U16 => u16, U32 => u32, U64 => u64,
            F16 => $crate::elem::H, F32 => f32, F64 => f64)
    };
}
use with_reg_type;

fn dtype_code(d: Dtype) -> u8 {
    Dtype::ALL.iter().position(|&x| x == d).expect("every dtype is in ALL") as u8
}

fn dtype_of_code(c: u8) -> Option<Dtype> {
    Dtype::ALL.get(c as usize).copied()
}

/// Flag: operand `a` is the immediate.
const A_IMM: u8 = 1;
/// Flag: operand `b` is the immediate.
const B_IMM: u8 = 2;
/// Flag: depends on neither `x` nor `i`: computed once per chunk, its register kept.
const INVARIANT: u8 = 4;
/// Flag on a float function: multiply its result by the immediate.
const EPI_MUL: u8 = 8;
/// Flag on a float function: add the constant whose bits are `b` (low) and `c` (high).
const EPI_ADD: u8 = 16;

/// One instruction: `dst = op(a, b, c)` over a block, operands of type `ty`, result of type
/// `out_ty`; `imm` holds a constant's bits (in `ty`) for `Const` and for an operand flagged
/// as immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub(crate) struct Instr {
    op: u32,
    ty: u8,
    out_ty: u8,
    flags: u8,
    _pad: u8,
    dst: u32,
    a: u32,
    b: u32,
    c: u32,
    imm: u64,
}
const _: () = assert!(std::mem::size_of::<Instr>() == 32);

/// A decoded, validated instruction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ins {
    pub op: Op,
    pub ty: Dtype,
    pub out_ty: Dtype,
    pub flags: u8,
    pub dst: u32,
    pub src: [u32; 3],
    pub imm: u64,
}

impl Ins {
    fn encode(&self) -> Instr {
        Instr {
            op: self.op as u32,
            ty: dtype_code(self.ty),
            out_ty: dtype_code(self.out_ty),
            flags: self.flags,
            _pad: 0,
            dst: self.dst,
            a: self.src[0],
            b: self.src[1],
            c: self.src[2],
            imm: self.imm,
        }
    }

    /// Whether operand `k` is a register (not the immediate).
    pub fn is_reg(&self, k: usize) -> bool {
        k < self.op.arity() && !(k == 0 && self.flags & A_IMM != 0) && !(k == 1 && self.flags & B_IMM != 0)
    }

    pub fn invariant(&self) -> bool {
        self.flags & INVARIANT != 0
    }
}

/// A compiled expression: a typed register program for one or more input dtypes,
/// serialisable as a parameter block.
#[derive(Debug, Clone)]
pub struct Program {
    ins: Vec<Ins>,
    n_regs: u32,
    result: u32,
    inputs: Vec<Dtype>,
    output: Dtype,
}

const MAGIC: u32 = 0x4558_5052;
const VERSION: u32 = 3;
const HEADER: usize = 32;
/// Most inputs one program reads.
pub const MAX_INPUTS: usize = 32;

impl Program {
    /// Parses and compiles `src` for `float64` input.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExpression`] with the 1-based column of the problem.
    pub fn compile(src: &str) -> Result<Program> {
        Program::compile_for(src, Dtype::F64)
    }

    /// Parses and compiles `src` for input elements of type `input`; the output type is
    /// numpy's result type for the expression ([`Program::output_dtype`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExpression`] with the 1-based column of the problem: syntax, unknown
    /// names, nesting deeper than [`parse::MAX_DEPTH`], and what numpy refuses for the types
    /// (`x - x` on bool, `x & 1.5`, a Python integer out of bounds for the array's type).
    pub fn compile_for(src: &str, input: Dtype) -> Result<Program> {
        let nodes = parse::parse(src, &["x"])?;
        let (ins, result) = compile::compile(src, &nodes, &[input])?;
        Ok(alloc::allocate(ins, result, vec![input]))
    }

    /// Parses and compiles `src` over several named inputs (`a * b + c`), input `k` being
    /// `inputs[k] = (name, dtype)`; types promote across inputs as numpy's (int32 with float32
    /// is float64, uint64 with int64 float64). Evaluate with [`Program::eval_inputs`] (chunks
    /// of equal length) or [`Program::eval_broadcast`] (numpy broadcasting of shapes).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInputName`] for a name that is not an identifier, or is `i`, a constant
    /// or a function; [`Error::InputNotUsed`] for a name given twice or not used by the
    /// expression; [`Error::InputCount`] for no input, [`Error::TooManyInputs`] for more than
    /// [`MAX_INPUTS`];
    /// [`Error::InvalidExpression`] as [`Program::compile_for`] (a name used but not given).
    pub fn compile_inputs(src: &str, inputs: &[(&str, Dtype)]) -> Result<Program> {
        if inputs.len() > MAX_INPUTS {
            return Err(Error::TooManyInputs { max: MAX_INPUTS, given: inputs.len() });
        }
        if inputs.is_empty() {
            return Err(Error::InputCount { expected: 1, given: 0 });
        }
        let names: Vec<&str> = inputs.iter().map(|&(n, _)| n).collect();
        for (k, n) in names.iter().enumerate() {
            parse::check_input_name(n)?;
            if names[..k].contains(n) {
                return Err(Error::InputNotUsed { name: n.to_string(), problem: "is given twice" });
            }
        }
        let nodes = parse::parse(src, &names)?;
        for (k, n) in names.iter().enumerate() {
            if !nodes.iter().any(|nd| nd.kind == parse::Kind::Input(k as u32)) {
                return Err(Error::InputNotUsed { name: n.to_string(), problem: "is not used by the expression" });
            }
        }
        let dtypes: Vec<Dtype> = inputs.iter().map(|&(_, d)| d).collect();
        let (ins, result) = compile::compile(src, &nodes, &dtypes)?;
        Ok(alloc::allocate(ins, result, dtypes))
    }

    /// The names `src` uses as variables other than `i` and the constants, in order of first
    /// use (what [`Program::compile_inputs`] needs to be given).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExpression`] for a syntax error.
    pub fn variables(src: &str) -> Result<Vec<String>> {
        scan::variables(src)
    }

    /// Parses `src` without compiling it (syntax, names, arity and nesting are checked; types
    /// need the input dtype).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExpression`] as [`Program::compile_for`].
    pub fn check_syntax(src: &str) -> Result<()> {
        parse::parse(src, &["x"]).map(|_| ())
    }

    /// The element type the program reads (its first input's).
    pub fn input_dtype(&self) -> Dtype {
        self.inputs[0]
    }

    /// The element types of the program's inputs, in order.
    pub fn input_dtypes(&self) -> &[Dtype] {
        &self.inputs
    }

    /// The element type the program writes: numpy's result type, or what
    /// [`Program::astype`] set.
    pub fn output_dtype(&self) -> Dtype {
        self.output
    }

    /// The same program with its result cast to `dtype`, as numpy's `astype` (C casts:
    /// integers wrap, floats round to nearest, floats to integers truncate toward zero and
    /// saturate, NaN to integer gives 0).
    pub fn astype(&self, dtype: Dtype) -> Program {
        if dtype == self.output {
            return self.clone();
        }
        let mut ins: Vec<Ins> = self.ins.clone();
        let dst = self.n_regs;
        ins.push(Ins { op: Op::Cast, ty: self.output, out_ty: dtype, flags: 0, dst, src: [self.result, 0, 0], imm: 0 });
        Program { ins, n_regs: self.n_regs + 1, result: dst, inputs: self.inputs.clone(), output: dtype }
    }

    /// The input the program's values are, unchanged (`x` alone, of the output's dtype): a
    /// reduction over it can read the input's bytes in place instead of evaluating them.
    pub fn plain_input(&self) -> Option<usize> {
        match self.ins.as_slice() {
            [i] if i.op == Op::LoadX && i.dst == self.result && i.ty == self.output => usize::try_from(i.imm).ok(),
            _ => None,
        }
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.ins.len()
    }

    /// Whether the program is empty (never: every program computes something).
    pub fn is_empty(&self) -> bool {
        self.ins.is_empty()
    }

    /// The parameter block: a 32-byte header, one `u32` type code per input, then the
    /// instructions.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + 4 * self.inputs.len() + self.ins.len() * std::mem::size_of::<Instr>());
        let head: [u32; 8] = [
            MAGIC,
            VERSION,
            self.ins.len() as u32,
            self.n_regs,
            self.result,
            self.inputs.len() as u32,
            dtype_code(self.output) as u32,
            0,
        ];
        v.extend_from_slice(bytemuck::bytes_of(&head));
        for &d in &self.inputs {
            v.extend_from_slice(&u32::from(dtype_code(d)).to_ne_bytes());
        }
        for i in &self.ins {
            v.extend_from_slice(bytemuck::bytes_of(&i.encode()));
        }
        v
    }

    /// Decodes and validates a parameter block: every opcode known, every type code valid and
    /// defined for its operation, every register in range, no instruction reading the register
    /// it writes (what lets the evaluator borrow them separately), and every register written
    /// by some instruction, as in every program [`Program::compile`] makes. The last bounds
    /// what evaluating costs by the block's own size: each register is [`BLOCK`] elements of 8
    /// bytes, and an instruction writes at most two registers, so a header cannot claim more
    /// registers (memory) than its instructions use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProgram`] when the block is not a program this version wrote (magic,
    /// version, an opcode, a type code, a register, a flag).
    pub fn from_bytes(b: &[u8]) -> Result<Program> {
        Program::decode(b).ok_or(Error::InvalidProgram { reason: "not a valid program of this version" })
    }

    /// Evaluates the program over `xs` into `ys` in this thread (the sequential reference);
    /// `start` is the flat index of `xs[0]`. Element types are the storage types of the
    /// program's input and output dtypes (`u8` for bool, [`half::f16`] for float16).
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when `In` or `Out` does not match the program's types;
    /// [`Error::LengthMismatch`] when the lengths differ; [`Error::NegativeIntegerPower`] as
    /// numpy's `ValueError` (`ys` then holds what the blocks before the error computed).
    pub fn eval_slice<In: Num, Out: Num>(&self, xs: &[In], ys: &mut [Out], start: u64) -> Result<()> {
        self.check_types::<In, Out>()?;
        if xs.len() != ys.len() {
            return Err(Error::LengthMismatch { input: xs.len(), output: ys.len() });
        }
        self.check_input_count(1)?;
        eval::run(self, &[bytemuck::cast_slice(xs)], bytemuck::cast_slice_mut(ys), start)
    }

    /// Evaluates the program over chunks of equal length of each of its inputs (raw element
    /// bytes of their storage types) into `output`; `start` is the flat index of the first
    /// element.
    ///
    /// # Errors
    ///
    /// [`Error::InputCount`] unless one chunk per input is given; [`Error::LengthMismatch`]
    /// when a chunk is not as many whole elements as the output; [`Error::NegativeIntegerPower`]
    /// as [`Program::eval_slice`].
    pub fn eval_inputs(&self, inputs: &[&[u8]], output: &mut [u8], start: u64) -> Result<()> {
        self.check_input_count(inputs.len())?;
        let n = output.len() / self.output.size();
        for (bytes, d) in inputs.iter().zip(&self.inputs) {
            if bytes.len() != n * d.size() || output.len() % self.output.size() != 0 {
                return Err(Error::LengthMismatch { input: bytes.len() / d.size(), output: n });
            }
        }
        eval::run(self, inputs, output, start)
    }

    /// Evaluates the program over whole input arrays of the given shapes (C order), broadcast
    /// together as numpy does, into `output`, which holds the output elements with flat
    /// indices `range` of the broadcast shape (`i` is that flat index). Returns nothing else:
    /// the broadcast shape is [`broadcast_shapes`] of the inputs' shapes.
    ///
    /// # Errors
    ///
    /// [`Error::Broadcast`] for shapes numpy cannot broadcast; [`Error::InputCount`],
    /// [`Error::LengthMismatch`] when an input's bytes are not its shape's elements or
    /// `output` not `range`'s; [`Error::NegativeIntegerPower`] as [`Program::eval_slice`].
    pub fn eval_broadcast(
        &self,
        inputs: &[(&[u8], &[u64])],
        output: &mut [u8],
        range: std::ops::Range<u64>,
    ) -> Result<()> {
        self.check_input_count(inputs.len())?;
        broadcast::eval(self, inputs, output, range)
    }

    fn check_input_count(&self, given: usize) -> Result<()> {
        if given != self.inputs.len() {
            return Err(Error::InputCount { expected: self.inputs.len(), given });
        }
        Ok(())
    }

    /// Evaluates the program over raw element bytes (the storage types of the program's input
    /// and output dtypes), as a kernel does over one chunk; `start` is the flat index of the
    /// first element.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] when the byte lengths are not the same number of whole
    /// elements; [`Error::NegativeIntegerPower`] as [`Program::eval_slice`].
    pub fn eval_bytes(&self, input: &[u8], output: &mut [u8], start: u64) -> Result<()> {
        let (isz, osz) = (self.inputs[0].size(), self.output.size());
        if input.len() % isz != 0 || output.len() % osz != 0 || input.len() / isz != output.len() / osz {
            return Err(Error::LengthMismatch { input: input.len() / isz, output: output.len() / osz });
        }
        self.check_input_count(1)?;
        eval::run(self, &[input], output, start)
    }

    /// Checks that `In`/`Out` are the storage types of the program's input/output dtypes.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when they are not.
    pub fn check_types<In: Num, Out: Num>(&self) -> Result<()> {
        if !In::stores(self.inputs[0]) || !Out::stores(self.output) {
            return Err(Error::TypeMismatch {
                input: self.inputs[0],
                output: self.output,
                data: format!("{} -> {}", In::DTYPE, Out::DTYPE),
            });
        }
        Ok(())
    }
}

/// Element types an expression kernel reads and writes in memory: numpy's numeric types
/// (`u8` also stores `bool`, [`half::f16`] stores `float16`). Sealed: the list is numpy's, so
/// no other crate can add a type the evaluator does not know.
///
/// ```compile_fail,E0277
/// #[derive(Clone, Copy, shmpool::Pod, shmpool::Zeroable)]
/// #[bytemuck(crate = "shmpool::bytemuck")]
/// #[repr(C)]
/// struct Mine(u32);
/// impl shmpool::kernel::expr::Num for Mine {
///     const DTYPE: shmpool::Dtype = shmpool::Dtype::U32;
/// }
/// ```
pub trait Num: Pod + sealed::Sealed {
    /// The dtype this type stores.
    const DTYPE: Dtype;

    /// Whether arrays of `dtype` are stored as this type.
    fn stores(dtype: Dtype) -> bool {
        dtype == Self::DTYPE || (Self::DTYPE == Dtype::U8 && dtype == Dtype::Bool)
    }
}

mod sealed {
    /// Implemented only for the types listed in `num!`.
    pub trait Sealed {}
}

macro_rules! num {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Num for $t {
            const DTYPE: Dtype = Dtype::$d;
        }
    )*};
}
num!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64,
     half::f16 => F16, f32 => F32, f64 => F64);
