//! The block evaluator: runs a validated program over a chunk, [`BLOCK`] elements at a time,
//! one tight typed loop per instruction. The input is read in place (no copy into a register)
//! and the last instruction writes straight into the output whenever the storage type is the
//! register type (everything but float16).

use super::elem::{cast, Bits, Elem, Float, B, H};
use super::{dispatch_reg_type, with_reg_type, Ins, Op, Program, A_IMM, BLOCK, B_IMM, EPI_ADD, EPI_MUL};
use crate::{Dtype, Error, Result};

fn view<T: bytemuck::Pod>(bytes: &[u8], n: usize) -> &[T] {
    &bytemuck::cast_slice::<u8, T>(bytes)[..n]
}

fn view_mut<T: bytemuck::Pod>(bytes: &mut [u8], n: usize) -> &mut [T] {
    &mut bytemuck::cast_slice_mut::<u8, T>(bytes)[..n]
}

/// Runs `$body` with `$T` bound to the float register type of `$d`.
macro_rules! float {
    ($d:expr, $T:ident => $body:expr) => {
        dispatch_reg_type!($d, $T => $body; "float operation"; F16 => H, F32 => f32, F64 => f64)
    };
}

/// Runs `$body` with `$T` bound to the integer or bool register type of `$d`.
macro_rules! bits {
    ($d:expr, $T:ident => $body:expr) => {
        dispatch_reg_type!($d, $T => $body; "bitwise operation";
            Bool => B, I8 => i8, I16 => i16, I32 => i32, I64 => i64, U8 => u8, U16 => u16, U32 => u32, U64 => u64)
    };
}

/// Runs `$body` with `$T` bound to the integer register type of `$d`.
macro_rules! ints {
    ($d:expr, $T:ident => $body:expr) => {
        dispatch_reg_type!($d, $T => $body; "integer operation";
            I8 => i8, I16 => i16, I32 => i32, I64 => i64, U8 => u8, U16 => u16, U32 => u32, U64 => u64)
    };
}

#[inline(always)]
fn un<T: Elem, U: bytemuck::Pod>(d: &mut [u8], a: &[u8], n: usize, f: impl Fn(T) -> U) {
    let d = view_mut::<U>(d, n);
    let a = view::<T>(a, n);
    for (d, a) in d.iter_mut().zip(a) {
        *d = f(*a);
    }
}

#[inline(always)]
fn bin<T: Elem, U: bytemuck::Pod>(ins: &Ins, d: &mut [u8], s: [&[u8]; 3], n: usize, f: impl Fn(T, T) -> U) {
    let d = view_mut::<U>(d, n);
    if ins.flags & A_IMM != 0 {
        let k = <T as Elem>::from_imm(ins.imm);
        for (d, b) in d.iter_mut().zip(view::<T>(s[1], n)) {
            *d = f(k, *b);
        }
    } else if ins.flags & B_IMM != 0 {
        let k = <T as Elem>::from_imm(ins.imm);
        for (d, a) in d.iter_mut().zip(view::<T>(s[0], n)) {
            *d = f(*a, k);
        }
    } else {
        for ((d, a), b) in d.iter_mut().zip(view::<T>(s[0], n)).zip(view::<T>(s[1], n)) {
            *d = f(*a, *b);
        }
    }
}

/// A float function with its optional affine epilogue (`f(a) * k1 + k2`, rounded as written).
#[inline(always)]
fn fun<T: Float>(ins: &Ins, d: &mut [u8], a: &[u8], n: usize, f: impl Fn(T) -> T) {
    let k1 = T::from_imm(ins.imm);
    let k2 = T::from_imm(u64::from(ins.src[1]) | (u64::from(ins.src[2]) << 32));
    match ins.flags & (EPI_MUL | EPI_ADD) {
        0 => un::<T, T>(d, a, n, f),
        EPI_MUL => un::<T, T>(d, a, n, |v| f(v).mul(k1)),
        EPI_ADD => un::<T, T>(d, a, n, |v| f(v).add(k2)),
        _ => un::<T, T>(d, a, n, |v| f(v).mul(k1).add(k2)),
    }
}

fn b(v: bool) -> B {
    B(u8::from(v))
}

/// Whether an integer power's exponent is negative for one of the `n` elements.
fn negative_exponent(ins: &Ins, s: [&[u8]; 3], n: usize) -> bool {
    ints!(ins.ty, T => {
        let zero = <T as Elem>::from_imm(0);
        if ins.flags & B_IMM != 0 {
            <T as Elem>::from_imm(ins.imm) < zero
        } else {
            view::<T>(s[1], n).iter().any(|&e| e < zero)
        }
    })
}

/// Executes one instruction over `n` elements; `first` is the flat index of the block's first.
///
/// # Errors
///
/// [`Error::NegativeIntegerPower`]: numpy's ValueError, checked before the power is computed.
fn exec(ins: &Ins, d: &mut [u8], d2: &mut [u8], s: [&[u8]; 3], n: usize, first: u64) -> Result<()> {
    if ins.op == Op::Pow && ins.ty.is_int() && negative_exponent(ins, s, n) {
        return Err(Error::NegativeIntegerPower);
    }
    match ins.op {
        Op::SinCos => float!(ins.ty, T => {
            let (sin, cos) = (view_mut::<T>(d, n), view_mut::<T>(d2, n));
            for ((s, c), a) in sin.iter_mut().zip(cos.iter_mut()).zip(view::<T>(s[0], n)) {
                (*s, *c) = a.sin_cos();
            }
        }),
        // Only float16 and bool inputs are loaded (others are aliased, `run`): a bool byte
        // other than 0 is True, as numpy reads it.
        Op::LoadX if ins.ty == Dtype::Bool => un::<u8, B>(d, s[0], n, |v| b(v != 0)),
        Op::LoadX => un::<u16, H>(d, s[0], n, |v| H::from_storage(half::f16::from_bits(v))),
        Op::LoadI => {
            for (k, d) in view_mut::<i64>(d, n).iter_mut().enumerate() {
                *d = (first + k as u64) as i64;
            }
        }
        Op::Const => with_reg_type!(ins.ty, T => view_mut::<T>(d, n).fill(<T as Elem>::from_imm(ins.imm))),
        Op::Cast => with_reg_type!(ins.ty, A => with_reg_type!(ins.out_ty, T => un::<A, T>(d, s[0], n, cast::<A, T>))),
        Op::Neg => with_reg_type!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Elem>::neg)),
        Op::Abs => with_reg_type!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Elem>::abs)),
        Op::Sign => with_reg_type!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Elem>::sign)),
        Op::Floor => with_reg_type!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Elem>::floor)),
        Op::Ceil => with_reg_type!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Elem>::ceil)),
        Op::Trunc => with_reg_type!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Elem>::trunc)),
        Op::Round => with_reg_type!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Elem>::round)),
        Op::Not => bits!(ins.ty, T => un::<T, T>(d, s[0], n, <T as Bits>::not)),
        Op::Where => with_reg_type!(ins.ty, T => {
            let d = view_mut::<T>(d, n);
            let (c, x, y) = (view::<B>(s[0], n), view::<T>(s[1], n), view::<T>(s[2], n));
            for k in 0..n {
                d[k] = if c[k].truthy() { x[k] } else { y[k] };
            }
        }),
        // numpy's clip keeps x when it is not strictly outside (so -0.0 stays -0.0) and NaN,
        // and a NaN bound makes the result NaN (it is `minimum(maximum(x, lo), hi)`). A value
        // unequal to itself is a NaN (never true for integers and bools).
        #[allow(clippy::eq_op)]
        Op::Clip => with_reg_type!(ins.ty, T => {
            let d = view_mut::<T>(d, n);
            let (x, lo, hi) = (view::<T>(s[0], n), view::<T>(s[1], n), view::<T>(s[2], n));
            for k in 0..n {
                let t = if x[k] < lo[k] || lo[k] != lo[k] { lo[k] } else { x[k] };
                d[k] = if t > hi[k] || hi[k] != hi[k] { hi[k] } else { t };
            }
        }),
        _ => {
            if !(exec_float(ins, d, s[0], n) || exec_binary(ins, d, s, n)) {
                unreachable!("every operation is evaluated: {:?}", ins.op);
            }
        }
    }
    Ok(())
}

/// Converts the result register's block into the output's storage.
fn store(ty: Dtype, v: &[u8], out: &mut [u8], n: usize) {
    if ty == Dtype::F16 {
        un::<H, u16>(out, v, n, |h| h.to_storage().to_bits());
    } else {
        out.copy_from_slice(&v[..n * ty.size()]);
    }
}

/// Evaluates `prog` over the chunks `inputs` (one per program input, all of the output's
/// length) into `output` (bytes of the program's storage types).
///
/// # Errors
///
/// [`Error::NegativeIntegerPower`] as numpy; the blocks before the failing one are written.
pub(super) fn run(prog: &Program, inputs: &[&[u8]], output: &mut [u8], start: u64) -> Result<()> {
    let osz = prog.output.size();
    let n = output.len() / osz;
    for (bytes, d) in inputs.iter().zip(&prog.inputs) {
        if bytes.len() != n * d.size() {
            return Err(Error::LengthMismatch { input: bytes.len() / d.size(), output: n });
        }
    }
    let mut regs: Vec<Vec<u64>> = vec![vec![0u64; BLOCK]; prog.n_regs as usize];
    // Registers other than float16 hold elements exactly as the file stores them: an input's
    // register is then an alias of the input's bytes (`aliased[r]` = that input's index).
    // Bool inputs are loaded too, so that any non-zero byte becomes 1 (numpy's True).
    let mut aliased: Vec<Option<usize>> = vec![None; prog.n_regs as usize];
    for i in prog.ins.iter().filter(|i| i.op == Op::LoadX) {
        let k = i.imm as usize; // validated: < inputs
        if !matches!(prog.inputs[k], Dtype::F16 | Dtype::Bool) {
            aliased[i.dst as usize] = Some(k);
        }
    }
    let last = prog.ins.len() - 1;
    let tail = &prog.ins[last];
    let out_direct = prog.output != Dtype::F16
        && tail.dst == prog.result
        && !tail.invariant()
        && !(tail.op == Op::LoadX && aliased[tail.dst as usize].is_some());
    let mut base = 0;
    let mut first_block = true;
    while base < n {
        let m = BLOCK.min(n - base);
        let block = |k: usize| -> &[u8] {
            let sz = prog.inputs[k].size();
            &inputs[k][base * sz..(base + m) * sz]
        };
        for (k, ins) in prog.ins.iter().enumerate() {
            if (ins.invariant() && !first_block) || (ins.op == Op::LoadX && aliased[ins.dst as usize].is_some()) {
                continue;
            }
            // Invariants fill whole registers once; the first block may be the shortest.
            let len = if ins.invariant() { BLOCK } else { m };
            let direct = out_direct && k == last;
            let mut dreg = if direct { Vec::new() } else { std::mem::take(&mut regs[ins.dst as usize]) };
            // SinCos writes a second register (validated: neither its operand nor `dst`).
            let second = (ins.op == Op::SinCos).then_some(ins.src[2] as usize);
            let mut dreg2 = second.map(|r| std::mem::take(&mut regs[r])).unwrap_or_default();
            {
                let d: &mut [u8] = if direct {
                    &mut output[base * osz..(base + m) * osz]
                } else {
                    bytemuck::cast_slice_mut(&mut dreg)
                };
                let src = |s: usize| -> &[u8] {
                    let r = ins.src[s] as usize;
                    if ins.op == Op::LoadX {
                        block(ins.imm as usize)
                    } else if ins.is_reg(s) {
                        match aliased[r] {
                            Some(input) => block(input),
                            None => bytemuck::cast_slice(&regs[r]),
                        }
                    } else {
                        &[]
                    }
                };
                exec(ins, d, bytemuck::cast_slice_mut(&mut dreg2), [src(0), src(1), src(2)], len, start + base as u64)?;
            }
            if let Some(r) = second {
                regs[r] = dreg2;
            }
            if !direct {
                regs[ins.dst as usize] = dreg;
            }
        }
        if !out_direct {
            let v: &[u8] = match aliased[prog.result as usize] {
                Some(input) => block(input),
                None => bytemuck::cast_slice(&regs[prog.result as usize]),
            };
            store(prog.output, v, &mut output[base * osz..(base + m) * osz], m);
        }
        base += m;
        first_block = false;
    }
    Ok(())
}

/// [`exec`] of the float functions of one argument (`sqrt` .. `signbit`); `false` for any
/// other operation.
fn exec_float(ins: &Ins, d: &mut [u8], a: &[u8], n: usize) -> bool {
    match ins.op {
        Op::Sqrt => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::sqrt)),
        Op::Exp => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::exp)),
        Op::Expm1 => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::expm1)),
        Op::Log => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::ln)),
        Op::Log1p => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::ln_1p)),
        Op::Log2 => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::log2)),
        Op::Log10 => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::log10)),
        Op::Sin => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::sin)),
        Op::Cos => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::cos)),
        Op::Tan => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::tan)),
        Op::Asin => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::asin)),
        Op::Acos => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::acos)),
        Op::Atan => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::atan)),
        Op::Sinh => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::sinh)),
        Op::Cosh => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::cosh)),
        Op::Tanh => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::tanh)),
        Op::Asinh => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::asinh)),
        Op::Acosh => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::acosh)),
        Op::Atanh => float!(ins.ty, T => fun::<T>(ins, d, a, n, <T as Float>::atanh)),
        Op::IsNan => float!(ins.ty, T => un::<T, B>(d, a, n, |a| b(a.isnan()))),
        Op::IsInf => float!(ins.ty, T => un::<T, B>(d, a, n, |a| b(a.isinf()))),
        Op::IsFinite => float!(ins.ty, T => un::<T, B>(d, a, n, |a| b(!a.isinf() && !a.isnan()))),
        Op::SignBit => float!(ins.ty, T => un::<T, B>(d, a, n, |a| b(a.signbit()))),
        _ => return false,
    }
    true
}

/// [`exec`] of the operations of two arguments (arithmetic, bits, comparisons); `false` for
/// any other operation.
fn exec_binary(ins: &Ins, d: &mut [u8], s: [&[u8]; 3], n: usize) -> bool {
    match ins.op {
        Op::Shl => ints!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Bits>::shl)),
        Op::Shr => ints!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Bits>::shr)),
        Op::Add => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::add)),
        Op::Sub => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::sub)),
        Op::Mul => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::mul)),
        Op::FloorDiv => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::floordiv)),
        Op::Mod => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::rem)),
        Op::Fmod => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::fmod)),
        Op::Pow => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::pow)),
        Op::Min => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::min)),
        Op::Max => with_reg_type!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Elem>::max)),
        Op::Div => float!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Float>::div)),
        Op::Atan2 => float!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Float>::atan2)),
        Op::Hypot => float!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Float>::hypot)),
        Op::Copysign => float!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Float>::copysign)),
        Op::Nextafter => float!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Float>::nextafter)),
        Op::And => bits!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Bits>::and)),
        Op::Or => bits!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Bits>::or)),
        Op::Xor => bits!(ins.ty, T => bin::<T, T>(ins, d, s, n, <T as Bits>::xor)),
        Op::Lt => with_reg_type!(ins.ty, T => bin::<T, B>(ins, d, s, n, |a, c| b(a < c))),
        Op::Le => with_reg_type!(ins.ty, T => bin::<T, B>(ins, d, s, n, |a, c| b(a <= c))),
        Op::Gt => with_reg_type!(ins.ty, T => bin::<T, B>(ins, d, s, n, |a, c| b(a > c))),
        Op::Ge => with_reg_type!(ins.ty, T => bin::<T, B>(ins, d, s, n, |a, c| b(a >= c))),
        Op::Eq => with_reg_type!(ins.ty, T => bin::<T, B>(ins, d, s, n, |a, c| b(a == c))),
        Op::Ne => with_reg_type!(ins.ty, T => bin::<T, B>(ins, d, s, n, |a, c| b(a != c))),
        _ => return false,
    }
    true
}
