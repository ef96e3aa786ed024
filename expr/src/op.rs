//! The operations of the register program: their codes, arities and the types they are
//! defined for. Decoded from shared memory with `TryFrom<u32>`, which knows exactly the codes
//! listed here (no range checks).

use crate::Dtype;

/// An operation of the register program. Stored as its `u32` code; decoded with `TryFrom`,
/// which knows exactly the codes listed here.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    LoadX = 1,
    LoadI = 2,
    Const = 3,
    Cast = 4,
    Neg = 10,
    Abs = 11,
    Sign = 12,
    Floor = 13,
    Ceil = 14,
    Trunc = 15,
    Round = 16,
    Not = 17,
    Sqrt = 20,
    Exp = 21,
    Expm1 = 22,
    Log = 23,
    Log1p = 24,
    Log2 = 25,
    Log10 = 26,
    Sin = 27,
    Cos = 28,
    Tan = 29,
    Asin = 30,
    Acos = 31,
    Atan = 32,
    Sinh = 33,
    Cosh = 34,
    Tanh = 35,
    Asinh = 36,
    Acosh = 37,
    Atanh = 38,
    /// `sin` into `dst` and `cos` into register `c` of the same operand, in one loop.
    SinCos = 39,
    IsNan = 45,
    IsInf = 46,
    IsFinite = 47,
    SignBit = 48,
    Add = 50,
    Sub = 51,
    Mul = 52,
    Div = 53,
    FloorDiv = 54,
    Mod = 55,
    Fmod = 56,
    Pow = 57,
    Min = 58,
    Max = 59,
    And = 60,
    Or = 61,
    Xor = 62,
    Atan2 = 63,
    Hypot = 64,
    Copysign = 65,
    Nextafter = 66,
    Shl = 67,
    Shr = 68,
    Lt = 70,
    Le = 71,
    Gt = 72,
    Ge = 73,
    Eq = 74,
    Ne = 75,
    Where = 80,
    Clip = 81,
}

impl Op {
    pub(super) const ALL: [Op; 63] = [
        Op::LoadX,
        Op::LoadI,
        Op::Const,
        Op::Cast,
        Op::Neg,
        Op::Abs,
        Op::Sign,
        Op::Floor,
        Op::Ceil,
        Op::Trunc,
        Op::Round,
        Op::Not,
        Op::Sqrt,
        Op::Exp,
        Op::Expm1,
        Op::Log,
        Op::Log1p,
        Op::Log2,
        Op::Log10,
        Op::Sin,
        Op::Cos,
        Op::Tan,
        Op::Asin,
        Op::Acos,
        Op::Atan,
        Op::Sinh,
        Op::Cosh,
        Op::Tanh,
        Op::Asinh,
        Op::Acosh,
        Op::Atanh,
        Op::SinCos,
        Op::IsNan,
        Op::IsInf,
        Op::IsFinite,
        Op::SignBit,
        Op::Add,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::FloorDiv,
        Op::Mod,
        Op::Fmod,
        Op::Pow,
        Op::Min,
        Op::Max,
        Op::And,
        Op::Or,
        Op::Xor,
        Op::Atan2,
        Op::Hypot,
        Op::Copysign,
        Op::Nextafter,
        Op::Shl,
        Op::Shr,
        Op::Lt,
        Op::Le,
        Op::Gt,
        Op::Ge,
        Op::Eq,
        Op::Ne,
        Op::Where,
        Op::Clip,
    ];

    /// Register operands read.
    pub(super) fn arity(self) -> usize {
        match self {
            Op::LoadX | Op::LoadI | Op::Const => 0,
            Op::Where | Op::Clip => 3,
            op if (op as u32) < Op::Add as u32 => 1,
            _ => 2,
        }
    }

    /// Which operand types the operation is defined for, and its result type given the
    /// operand type (`None`: not defined for that type).
    pub(super) fn result(self, ty: Dtype) -> Option<Dtype> {
        let float = ty.is_float();
        match self {
            Op::LoadX | Op::LoadI | Op::Const | Op::Cast => Some(ty),
            Op::Not | Op::And | Op::Or | Op::Xor => (!float).then_some(ty),
            Op::Sqrt
            | Op::Exp
            | Op::Expm1
            | Op::Log
            | Op::Log1p
            | Op::Log2
            | Op::Log10
            | Op::Sin
            | Op::Cos
            | Op::Tan
            | Op::Asin
            | Op::Acos
            | Op::Atan
            | Op::Sinh
            | Op::Cosh
            | Op::Tanh
            | Op::Asinh
            | Op::Acosh
            | Op::Atanh
            | Op::SinCos
            | Op::Div
            | Op::Atan2
            | Op::Hypot
            | Op::Copysign
            | Op::Nextafter => float.then_some(ty),
            Op::IsNan | Op::IsInf | Op::IsFinite | Op::SignBit => float.then_some(Dtype::Bool),
            Op::Shl | Op::Shr => ty.is_int().then_some(ty),
            Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Eq | Op::Ne => Some(Dtype::Bool),
            Op::Neg
            | Op::Abs
            | Op::Sign
            | Op::Floor
            | Op::Ceil
            | Op::Trunc
            | Op::Round
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::FloorDiv
            | Op::Mod
            | Op::Fmod
            | Op::Pow
            | Op::Min
            | Op::Max
            | Op::Where
            | Op::Clip => Some(ty),
        }
    }
}

impl TryFrom<u32> for Op {
    type Error = u32;

    fn try_from(code: u32) -> std::result::Result<Op, u32> {
        Op::ALL.into_iter().find(|op| *op as u32 == code).ok_or(code)
    }
}

/// The operation of a one-argument float function of the parser.
pub(super) fn float_fn(f: super::parse::Fun) -> Option<Op> {
    Some(match f {
        super::parse::Fun::Sqrt => Op::Sqrt,
        super::parse::Fun::Exp => Op::Exp,
        super::parse::Fun::Expm1 => Op::Expm1,
        super::parse::Fun::Log => Op::Log,
        super::parse::Fun::Log1p => Op::Log1p,
        super::parse::Fun::Log2 => Op::Log2,
        super::parse::Fun::Log10 => Op::Log10,
        super::parse::Fun::Sin => Op::Sin,
        super::parse::Fun::Cos => Op::Cos,
        super::parse::Fun::Tan => Op::Tan,
        super::parse::Fun::Asin => Op::Asin,
        super::parse::Fun::Acos => Op::Acos,
        super::parse::Fun::Atan => Op::Atan,
        super::parse::Fun::Sinh => Op::Sinh,
        super::parse::Fun::Cosh => Op::Cosh,
        super::parse::Fun::Tanh => Op::Tanh,
        super::parse::Fun::Asinh => Op::Asinh,
        super::parse::Fun::Acosh => Op::Acosh,
        super::parse::Fun::Atanh => Op::Atanh,
        _ => return None,
    })
}
