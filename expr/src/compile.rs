//! Types and code generation: numpy's promotion with NEP 50 weak Python scalars, the loop
//! numpy's ufunc would pick for each operation, Python's arithmetic for literal-only
//! sub-expressions, and a linear-scan register allocation. Every pass is a loop over the node
//! arena or the instruction list (no recursion over the expression).

use std::collections::HashMap;

use super::elem::{Elem, Hub};
use super::literal::{int_range, python, python_int_to, Val};
use super::parse::{syntax, Fun, Kind, Node};
use super::{with_reg_type, Ins, Op, A_IMM, B_IMM};
use crate::Dtype;
use crate::Result;

/// An instruction operand: a register or an immediate (bits in the instruction's type).
#[derive(Debug, Clone, Copy)]
enum Opnd {
    R(u32),
    K(u64),
}

/// numpy's `result_type` for two array dtypes.
pub(super) fn promote(a: Dtype, b: Dtype) -> Dtype {
    use Dtype::*;
    if a == b {
        return a;
    }
    if a == Bool {
        return b;
    }
    if b == Bool {
        return a;
    }
    let rank = |d: Dtype| d.size();
    match (a.is_float(), b.is_float()) {
        (true, true) => {
            if rank(a) >= rank(b) {
                a
            } else {
                b
            }
        }
        (true, false) => {
            let need = float_of(b);
            if rank(a) >= rank(need) {
                a
            } else {
                need
            }
        }
        (false, true) => promote(b, a),
        (false, false) => {
            let (sa, sb) = (a.is_signed_int(), b.is_signed_int());
            if sa == sb {
                return if rank(a) >= rank(b) { a } else { b };
            }
            let (s, u) = if sa { (a, b) } else { (b, a) };
            if rank(s) > rank(u) {
                return s;
            }
            match u {
                U8 => I16,
                U16 => I32,
                U32 => I64,
                _ => F64,
            }
        }
    }
}

/// The smallest float type numpy uses for a function of `d` (`sqrt(int8)` is float16).
pub(super) fn float_of(d: Dtype) -> Dtype {
    match d {
        Dtype::Bool | Dtype::I8 | Dtype::U8 => Dtype::F16,
        Dtype::I16 | Dtype::U16 => Dtype::F32,
        Dtype::F16 | Dtype::F32 | Dtype::F64 => d,
        _ => Dtype::F64,
    }
}

fn fun_name(f: Fun) -> &'static str {
    match f {
        Fun::Sub => "subtract",
        Fun::Neg => "negative",
        Fun::Pos => "positive",
        Fun::Sign => "sign",
        Fun::BitAnd => "bitwise_and",
        Fun::BitOr => "bitwise_or",
        Fun::BitXor => "bitwise_xor",
        Fun::Invert => "invert",
        Fun::Shl => "left_shift",
        Fun::Shr => "right_shift",
        _ => "this function",
    }
}

struct Builder {
    ins: Vec<Ins>,
    /// Per instruction: whether its value depends on `x` or `i`.
    array: Vec<bool>,
    x: Vec<Option<u32>>,
    i: Option<u32>,
    casts: HashMap<(u32, Dtype), u32>,
}

/// Compiles the node arena; returns SSA instructions (register k written by instruction k) and
/// the result register.
pub(super) fn compile(src: &str, nodes: &[Node], inputs: &[Dtype]) -> Result<(Vec<Ins>, u32)> {
    let mut b =
        Builder { ins: Vec::new(), array: Vec::new(), x: vec![None; inputs.len()], i: None, casts: HashMap::new() };
    let mut vals: Vec<Val> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let v = match n.kind {
            Kind::Input(k) => Val::Reg(b.load_input(k, inputs[k as usize]), inputs[k as usize]),
            Kind::I => Val::Reg(b.load_i(), Dtype::I64),
            Kind::Int(v) => Val::Int(v),
            Kind::Bool(v) => Val::Bool(v),
            Kind::Float(v) => Val::Float(v),
            Kind::Op(f) => {
                let args: Vec<Val> = n.args[..n.arity].iter().map(|&a| vals[a as usize]).collect();
                b.op(f, &args, n.call).map_err(|m| syntax(src, n.pos, m))?
            }
        };
        vals.push(v);
    }
    let root = *vals.last().expect("the parser returns at least one node");
    // A literal-only expression is a Python scalar; broadcast it as numpy would store it.
    let result = match root {
        Val::Reg(r, _) => r,
        Val::Bool(_) => b.reg(root, Dtype::Bool).map_err(|m| syntax(src, 0, m))?,
        // numpy stores a Python int above int64's range (up to 2**64 - 1) as uint64.
        Val::Int(k) if k > i64::MAX as i128 => b.reg(root, Dtype::U64).map_err(|m| syntax(src, 0, m))?,
        Val::Int(_) => b.reg(root, Dtype::I64).map_err(|m| syntax(src, 0, m))?,
        Val::Float(_) => b.reg(root, Dtype::F64).map_err(|m| syntax(src, 0, m))?,
    };
    Ok((b.ins, result))
}

impl Builder {
    fn push(&mut self, op: Op, ty: Dtype, out_ty: Dtype, ops: &[Opnd], imm: u64) -> u32 {
        let dst = self.ins.len() as u32;
        let mut ins = Ins { op, ty, out_ty, flags: 0, dst, src: [0; 3], imm };
        for (k, o) in ops.iter().enumerate() {
            match *o {
                Opnd::R(r) => ins.src[k] = r,
                Opnd::K(bits) => {
                    ins.flags |= if k == 0 { A_IMM } else { B_IMM };
                    ins.imm = bits;
                }
            }
        }
        let array = matches!(op, Op::LoadX | Op::LoadI)
            || ops.iter().any(|o| matches!(*o, Opnd::R(r) if self.array[r as usize]));
        self.array.push(array);
        self.ins.push(ins);
        dst
    }

    /// Whether `v` is an array (depends on `x` or `i`), not a numpy scalar such as `sqrt(2)`:
    /// numpy's `**` shortcuts apply to arrays only.
    fn is_array(&self, v: Val) -> bool {
        matches!(v, Val::Reg(r, _) if self.array[r as usize])
    }

    /// The register of input `k` (its index travels in the instruction's immediate).
    fn load_input(&mut self, k: u32, ty: Dtype) -> u32 {
        if let Some(r) = self.x[k as usize] {
            return r;
        }
        let r = self.push(Op::LoadX, ty, ty, &[], u64::from(k));
        self.x[k as usize] = Some(r);
        r
    }

    /// The register of the flat index.
    fn load_i(&mut self) -> u32 {
        if let Some(r) = self.i {
            return r;
        }
        let r = self.push(Op::LoadI, Dtype::I64, Dtype::I64, &[], 0);
        self.i = Some(r);
        r
    }

    /// The bits of a weak scalar converted to `d` (numpy refuses an integer out of bounds).
    fn imm(&self, v: Val, d: Dtype) -> std::result::Result<u64, String> {
        self.imm_checked(v, d, true)
    }

    /// As `imm`; `check: false` wraps an out-of-bounds integer as a C cast (np.where does).
    fn imm_checked(&self, v: Val, d: Dtype, check: bool) -> std::result::Result<u64, String> {
        let hub = match v {
            Val::Bool(b) => Hub::Int(i128::from(b)),
            Val::Int(k) => {
                python_int_to(k, d, check)?;
                // numpy converts a Python int to a float type through a C double (two
                // roundings for float32 and float16 above 2**53), never directly.
                if d.is_float() {
                    Hub::Float(k as f64)
                } else {
                    Hub::Int(k)
                }
            }
            Val::Float(f) => Hub::Float(f),
            Val::Reg(..) => unreachable!("imm() is called for weak scalars only"),
        };
        Ok(with_reg_type!(d, T => T::from_hub(hub).to_imm()))
    }

    /// `v` as a register of type `d` (casting or materialising a constant).
    fn reg(&mut self, v: Val, d: Dtype) -> std::result::Result<u32, String> {
        match v {
            Val::Reg(r, t) if t == d => Ok(r),
            Val::Reg(r, t) => {
                if let Some(&c) = self.casts.get(&(r, d)) {
                    return Ok(c);
                }
                let c = self.push(Op::Cast, t, d, &[Opnd::R(r)], 0);
                self.casts.insert((r, d), c);
                Ok(c)
            }
            weak => {
                let bits = self.imm(weak, d)?;
                Ok(self.push(Op::Const, d, d, &[], bits))
            }
        }
    }

    /// As `reg`, wrapping an out-of-bounds Python integer instead of refusing it.
    fn reg_wrapping(&mut self, v: Val, d: Dtype) -> std::result::Result<u32, String> {
        match v {
            Val::Int(_) => {
                let bits = self.imm_checked(v, d, false)?;
                Ok(self.push(Op::Const, d, d, &[], bits))
            }
            other => self.reg(other, d),
        }
    }

    fn opnd(&mut self, v: Val, d: Dtype) -> std::result::Result<Opnd, String> {
        match v {
            Val::Reg(..) => Ok(Opnd::R(self.reg(v, d)?)),
            weak => Ok(Opnd::K(self.imm(weak, d)?)),
        }
    }

    /// numpy's common dtype of the arguments, weak scalars adapting to the arrays (NEP 50).
    fn common(args: &[Val]) -> Dtype {
        let strong = args.iter().filter_map(|v| if let Val::Reg(_, t) = v { Some(*t) } else { None }).reduce(promote);
        let wfloat = args.iter().any(|v| matches!(v, Val::Float(_)));
        let wint = args.iter().any(|v| matches!(v, Val::Int(_)));
        match strong {
            None if wfloat => Dtype::F64,
            None if wint => Dtype::I64,
            None => Dtype::Bool,
            Some(s) if wfloat && !s.is_float() => Dtype::F64,
            Some(Dtype::Bool) if wint => Dtype::I64,
            Some(s) => s,
        }
    }

    fn op(&mut self, f: Fun, args: &[Val], call: bool) -> std::result::Result<Val, String> {
        if f == Fun::Where {
            // Each argument converted on its own: `where(2.0, 4, 10)` is int64.
            return self.where_(args);
        }
        let all_weak = args.iter().all(|v| !matches!(v, Val::Reg(..)));
        if all_weak && !call {
            if let Some(v) = python(f, args)? {
                return Ok(v);
            }
        }
        // A function of Python scalars is numpy's function of numpy scalars (np.sqrt(2) is a
        // float64, not a weak float).
        let args: Vec<Val> = if all_weak {
            let d = Self::common(args);
            let d = if args.len() == 1 {
                match args[0] {
                    Val::Float(_) => Dtype::F64,
                    Val::Bool(_) => Dtype::Bool,
                    Val::Int(k) if k > i64::MAX as i128 => Dtype::U64,
                    _ => Dtype::I64,
                }
            } else {
                d
            };
            let mut v = Vec::with_capacity(args.len());
            for &a in args {
                v.push(Val::Reg(self.reg(a, d)?, d));
            }
            v
        } else {
            args.to_vec()
        };
        if f == Fun::Clip {
            return self.clip(&args);
        }
        let d = Self::common(&args);
        if args.len() == 1 {
            return self.unary(f, args[0], d);
        }
        self.binary(f, args[0], args[1], d)
    }

    fn unary(&mut self, f: Fun, a: Val, d: Dtype) -> std::result::Result<Val, String> {
        let refuse = || Err(format!("numpy's {} is not defined for {d}", fun_name(f)));
        let (op, ty) = match f {
            Fun::Neg if d == Dtype::Bool => {
                return Err("the numpy boolean negative, the '-' operator, is not supported; use '~' instead".into())
            }
            Fun::Sign if d == Dtype::Bool => return refuse(),
            Fun::Pos if d == Dtype::Bool => return refuse(),
            Fun::Pos | Fun::Copy => return Ok(a),
            Fun::Conj if d == Dtype::Bool => return Ok(Val::Reg(self.reg(a, Dtype::I8)?, Dtype::I8)),
            Fun::Conj => return Ok(a),
            Fun::Imag | Fun::OnesLike => return self.filled(a, d, u8::from(f == Fun::OnesLike)),
            Fun::SignBit if d.is_signed_int() => return self.emit2(Op::Lt, d, a, Val::Int(0)),
            Fun::SignBit if !d.is_float() => return self.filled(a, Dtype::Bool, 0),
            Fun::SignBit => (Op::SignBit, d),
            Fun::Invert if d.is_float() => return Err(format!("'~' (invert) is not defined for {d}")),
            Fun::Neg => (Op::Neg, d),
            Fun::Invert => (Op::Not, d),
            Fun::Abs => (Op::Abs, d),
            Fun::Sign => (Op::Sign, d),
            Fun::Floor => (Op::Floor, d),
            Fun::Ceil => (Op::Ceil, d),
            Fun::Trunc => (Op::Trunc, d),
            Fun::Round if d == Dtype::Bool => (Op::Round, Dtype::F16),
            Fun::Round => (Op::Round, d),
            Fun::Rint => (Op::Round, float_of(d)),
            Fun::IsNan | Fun::IsInf | Fun::IsFinite if !d.is_float() => {
                return self.filled(a, Dtype::Bool, u8::from(f == Fun::IsFinite))
            }
            Fun::IsNan => (Op::IsNan, d),
            Fun::IsInf => (Op::IsInf, d),
            Fun::IsFinite => (Op::IsFinite, d),
            _ => (super::op::float_fn(f).ok_or_else(|| format!("{f:?} takes two arguments"))?, float_of(d)),
        };
        let r = self.reg(a, ty)?;
        let out = op.result(ty).expect("unary operation typed above");
        Ok(Val::Reg(self.push(op, ty, out, &[Opnd::R(r)], 0), out))
    }

    /// An array of `d` filled with `k` (0 or 1), shaped like `a`: constant, but still an array
    /// for numpy's `**` shortcuts if `a` is one.
    fn filled(&mut self, a: Val, d: Dtype, k: u8) -> std::result::Result<Val, String> {
        let bits = self.imm(Val::Int(i128::from(k)), d)?;
        let r = self.push(Op::Const, d, d, &[], bits);
        self.array[r as usize] = self.is_array(a);
        Ok(Val::Reg(r, d))
    }

    fn binary(&mut self, f: Fun, a: Val, b: Val, d: Dtype) -> std::result::Result<Val, String> {
        use Dtype::Bool;
        // numpy's `**` computes `array ** 2` as np.square, whose bool loop is int8.
        if let (Fun::PowOp, Val::Reg(_, Bool), Val::Int(2), true) = (f, a, b, self.is_array(a)) {
            let r = self.reg(a, Dtype::I8)?;
            return self.emit2(Op::Mul, Dtype::I8, Val::Reg(r, Dtype::I8), Val::Reg(r, Dtype::I8));
        }
        let cmp = match f {
            Fun::Lt => Some(Op::Lt),
            Fun::Le => Some(Op::Le),
            Fun::Gt => Some(Op::Gt),
            Fun::Ge => Some(Op::Ge),
            Fun::Eq => Some(Op::Eq),
            Fun::Ne => Some(Op::Ne),
            _ => None,
        };
        if let Some(op) = cmp {
            // numpy 2 compares an integer array with an out-of-range Python integer correctly
            // (`uint8 < 300` is all True) instead of refusing it.
            if d.is_int() {
                if let (Val::Reg(_, Bool), Val::Int(k)) | (Val::Int(k), Val::Reg(_, Bool)) = (a, b) {
                    python_int_to(k, Dtype::I64, true)?;
                }
                if let Some(v) = out_of_range(f, a, b, d) {
                    let r = self.push(Op::Const, Bool, Bool, &[], u64::from(v));
                    self.array[r as usize] = self.is_array(a) || self.is_array(b);
                    return Ok(Val::Reg(r, Bool));
                }
            }
            if let (Val::Reg(_, ta), Val::Reg(_, tb)) = (a, b) {
                if ta.is_int() && tb.is_int() && ta.is_signed_int() != tb.is_signed_int() && d == Dtype::F64 {
                    return self.signed_unsigned_cmp(op, a, b);
                }
            }
            return self.emit2(op, d, a, b);
        }
        let (op, ty) = match f {
            Fun::Add => (if d == Bool { Op::Or } else { Op::Add }, d),
            Fun::Mul => (if d == Bool { Op::And } else { Op::Mul }, d),
            Fun::Min => (Op::Min, d),
            Fun::Max => (Op::Max, d),
            Fun::Sub if d == Bool => {
                return Err(
                    "the numpy boolean subtract, the '-' operator, is not supported; use '^' (bitwise_xor) instead"
                        .into(),
                )
            }
            Fun::Sub => (Op::Sub, d),
            Fun::FloorDiv | Fun::Mod | Fun::Fmod | Fun::Pow | Fun::PowOp => {
                let ty = if d == Bool { Dtype::I8 } else { d };
                let op = match f {
                    Fun::FloorDiv => Op::FloorDiv,
                    Fun::Mod => Op::Mod,
                    Fun::Fmod => Op::Fmod,
                    _ => return self.power(a, b, ty),
                };
                (op, ty)
            }
            Fun::Div => (Op::Div, if d.is_float() { d } else { Dtype::F64 }),
            Fun::BitAnd | Fun::BitOr | Fun::BitXor if d.is_float() => {
                return Err(format!(
                    "numpy's {} is not defined for {d} (use it on integers or conditions)",
                    fun_name(f)
                ))
            }
            Fun::Shl | Fun::Shr if d.is_float() => {
                return Err(format!("numpy's {} is not defined for {d} (use it on integers)", fun_name(f)))
            }
            Fun::Shl => (Op::Shl, if d == Bool { Dtype::I8 } else { d }),
            Fun::Shr => (Op::Shr, if d == Bool { Dtype::I8 } else { d }),
            Fun::BitAnd => (Op::And, d),
            Fun::BitOr => (Op::Or, d),
            Fun::BitXor => (Op::Xor, d),
            Fun::Atan2 => (Op::Atan2, float_of(d)),
            Fun::Hypot => (Op::Hypot, float_of(d)),
            Fun::Copysign => (Op::Copysign, float_of(d)),
            Fun::Nextafter => (Op::Nextafter, float_of(d)),
            _ => return Err(format!("{f:?} takes one argument")),
        };
        self.emit2(op, ty, a, b)
    }

    /// A comparison of a signed integer array with a uint64 one, exact as numpy 2 makes it
    /// (their common type, float64, would round both above 2**53): the signed side `s` is
    /// compared as `s < 0` and, reinterpreted as uint64, with the unsigned side.
    fn signed_unsigned_cmp(&mut self, op: Op, a: Val, b: Val) -> std::result::Result<Val, String> {
        use Dtype::{Bool, I64, U64};
        let signed_left = matches!(a, Val::Reg(_, t) if t.is_signed_int());
        // Put the signed operand on the left: `u < s` is `s > u`.
        let (s, u, op) = if signed_left {
            (a, b, op)
        } else {
            let flipped = match op {
                Op::Lt => Op::Gt,
                Op::Le => Op::Ge,
                Op::Gt => Op::Lt,
                Op::Ge => Op::Le,
                other => other,
            };
            (b, a, flipped)
        };
        let s64 = self.reg(s, I64)?;
        let s_u = self.reg(Val::Reg(s64, I64), U64)?;
        let u64r = self.reg(u, U64)?;
        let negative = self.emit2(Op::Lt, I64, Val::Reg(s64, I64), Val::Int(0))?;
        let wide = self.emit2(op, U64, Val::Reg(s_u, U64), Val::Reg(u64r, U64))?;
        let (Val::Reg(neg, _), Val::Reg(cmp, _)) = (negative, wide) else { unreachable!("emit2 returns registers") };
        // A negative signed value is below every unsigned one.
        let (join, neg) = match op {
            Op::Lt | Op::Le | Op::Ne => (Op::Or, neg),
            _ => (Op::And, self.push(Op::Not, Bool, Bool, &[Opnd::R(neg)], 0)),
        };
        Ok(Val::Reg(self.push(join, Bool, Bool, &[Opnd::R(neg), Opnd::R(cmp)], 0), Bool))
    }

    /// `a ** b` in `ty`: numpy computes a float power by a constant 0.5 as `sqrt` and by 2 as
    /// a square; an integer to a negative Python integer is numpy's error.
    fn power(&mut self, a: Val, b: Val, ty: Dtype) -> std::result::Result<Val, String> {
        if ty.is_float() && self.is_array(a) {
            if let Val::Float(k) = b {
                if k == 0.5 {
                    return self.unary(Fun::Sqrt, a, ty);
                }
            }
            // numpy computes `array ** -1` as np.reciprocal (float16's keeps a NaN's sign).
            if matches!(b, Val::Float(-1.0) | Val::Int(-1)) {
                let r = self.reg(a, ty)?;
                return self.emit2(Op::Div, ty, Val::Int(1), Val::Reg(r, ty));
            }
            if matches!(b, Val::Float(2.0) | Val::Int(2)) {
                let r = self.reg(a, ty)?;
                return self.emit2(Op::Mul, ty, Val::Reg(r, ty), Val::Reg(r, ty));
            }
        } else if let (false, Val::Int(k)) = (ty.is_float(), b) {
            if k < 0 {
                return Err("integers to negative integer powers are not allowed".into());
            }
        }
        self.emit2(Op::Pow, ty, a, b)
    }

    /// A binary operation with operands converted to `ty`; one weak operand becomes the
    /// immediate.
    fn emit2(&mut self, op: Op, ty: Dtype, a: Val, b: Val) -> std::result::Result<Val, String> {
        let oa = self.opnd(a, ty)?;
        let mut ob = self.opnd(b, ty)?;
        if let (Opnd::K(_), Opnd::K(_)) = (oa, ob) {
            ob = Opnd::R(self.reg(b, ty)?);
        }
        let out = op.result(ty).ok_or_else(|| format!("{op:?} is not defined for {ty}"))?;
        Ok(Val::Reg(self.push(op, ty, out, &[oa, ob], 0), out))
    }

    /// numpy 2's `np.clip` (`_methods._clip`): on an integer array, a Python int bound beyond
    /// the type's limit on its own side is dropped; any other is converted as usual (so one
    /// out of range the other way is numpy's OverflowError).
    fn clip(&mut self, args: &[Val]) -> std::result::Result<Val, String> {
        let (mut lo, mut hi) = (Some(args[1]), Some(args[2]));
        if let Val::Reg(_, t) = args[0] {
            if t.is_int() {
                let (min, max) = int_range(t);
                if matches!(args[1], Val::Int(k) if k <= min) {
                    lo = None;
                }
                if matches!(args[2], Val::Int(k) if k >= max) {
                    hi = None;
                }
            }
        }
        match (lo, hi) {
            (None, None) => Ok(args[0]),
            (None, Some(h)) => self.binary(Fun::Min, args[0], h, Self::common(&[args[0], h])),
            (Some(l), None) => self.binary(Fun::Max, args[0], l, Self::common(&[args[0], l])),
            (Some(l), Some(h)) => {
                let d = Self::common(args);
                let x = self.reg(args[0], d)?;
                let lo = self.reg(l, d)?;
                let hi = self.reg(h, d)?;
                Ok(Val::Reg(self.push(Op::Clip, d, d, &[Opnd::R(x), Opnd::R(lo), Opnd::R(hi)], 0), d))
            }
        }
    }

    fn where_(&mut self, args: &[Val]) -> std::result::Result<Val, String> {
        let cond = match args[0] {
            Val::Reg(..) => self.reg(args[0], Dtype::Bool)?,
            weak => {
                let truthy = match weak {
                    Val::Bool(b) => b,
                    Val::Int(k) => k != 0,
                    Val::Float(f) => f != 0.0,
                    Val::Reg(..) => unreachable!("matched above"),
                };
                self.push(Op::Const, Dtype::Bool, Dtype::Bool, &[], u64::from(truthy))
            }
        };
        let d = Self::common(&args[1..]);
        let a = self.reg_wrapping(args[1], d)?;
        let b = self.reg_wrapping(args[2], d)?;
        Ok(Val::Reg(self.push(Op::Where, d, d, &[Opnd::R(cond), Opnd::R(a), Opnd::R(b)], 0), d))
    }
}

/// The constant result of comparing an integer array with an out-of-range Python integer.
fn out_of_range(f: Fun, a: Val, b: Val, d: Dtype) -> Option<bool> {
    let (lo, hi) = int_range(d);
    let (k, weak_on_right) = match (a, b) {
        (_, Val::Int(k)) => (k, true),
        (Val::Int(k), _) => (k, false),
        _ => return None,
    };
    if (lo..=hi).contains(&k) {
        return None;
    }
    // With the array on the left: every element is less than a too-large k.
    let less = k > hi;
    let array_lt_k = if weak_on_right { less } else { !less };
    Some(match f {
        Fun::Lt | Fun::Le => array_lt_k,
        Fun::Gt | Fun::Ge => !array_lt_k,
        Fun::Eq => false,
        _ => true,
    })
}
