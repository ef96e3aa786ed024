//! Python's arithmetic on literal-only sub-expressions (`2 * 3`, `-1`, `1 / 3`, `1 < 2`):
//! what Python computes before numpy sees anything, so the result stays a weak scalar.

use super::elem::Elem;
use super::parse::Fun;
use crate::Dtype;

/// A value during compilation: a weak Python scalar, or a (virtual) register of a dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Val {
    /// A Python `bool` (what a comparison of literals gives): weak, of the lowest kind.
    Bool(bool),
    Int(i128),
    Float(f64),
    Reg(u32, Dtype),
}

/// Python's own arithmetic on literals (`2 * 3`, `-1`, `1 / 3`, `2 ** -1`): the result stays a
/// weak scalar. `None` for functions, which numpy evaluates.
pub(super) fn python(f: Fun, args: &[Val]) -> std::result::Result<Option<Val>, String> {
    // A Python bool is an int in arithmetic; only `& | ^` of two bools stay bools.
    if let [Val::Bool(a), Val::Bool(b)] = args {
        match f {
            Fun::BitAnd => return Ok(Some(Val::Bool(a & b))),
            Fun::BitOr => return Ok(Some(Val::Bool(a | b))),
            Fun::BitXor => return Ok(Some(Val::Bool(a ^ b))),
            _ => {}
        }
    }
    let as_int = |v: &Val| match *v {
        Val::Bool(b) => Val::Int(i128::from(b)),
        other => other,
    };
    let args: Vec<Val> = args.iter().map(as_int).collect();
    let args = args.as_slice();
    let fl = |v: Val| match v {
        Val::Bool(b) => f64::from(u8::from(b)),
        Val::Int(k) => k as f64,
        Val::Float(x) => x,
        Val::Reg(..) => f64::NAN,
    };
    let too_big = || "integer constant is too large (shmpool's Python integers stop below 2**127)".to_string();
    let zero = || "division by zero in a constant (Python raises ZeroDivisionError)".to_string();
    let b2i = Val::Bool;
    let v = match (f, args) {
        (Fun::Pos, [a @ (Val::Int(_) | Val::Float(_))]) => *a,
        (Fun::Neg, [Val::Int(a)]) => Val::Int(a.checked_neg().ok_or_else(too_big)?),
        (Fun::Neg, [Val::Float(a)]) => Val::Float(-a),
        (Fun::Invert, [Val::Int(a)]) => Val::Int(!a),
        (Fun::Invert, [Val::Float(_)]) => return Err("'~' is not defined for a float".into()),
        (Fun::BitAnd | Fun::BitOr | Fun::BitXor, [Val::Int(a), Val::Int(b)]) => Val::Int(match f {
            Fun::BitAnd => a & b,
            Fun::BitOr => a | b,
            _ => a ^ b,
        }),
        (Fun::Shl | Fun::Shr, [Val::Int(a), Val::Int(b)]) => {
            let k = u32::try_from(*b).map_err(|_| "negative shift count (Python raises ValueError)".to_string())?;
            let r = if f == Fun::Shr {
                a >> Ord::min(k, 127)
            } else if *a == 0 {
                0
            } else {
                let p = if k < 127 { 1i128 << k } else { return Err(too_big()) };
                a.checked_mul(p).ok_or_else(too_big)?
            };
            Val::Int(r)
        }
        (Fun::Shl | Fun::Shr, _) => return Err("'<<' and '>>' are not defined for floats".into()),
        (Fun::BitAnd | Fun::BitOr | Fun::BitXor, _) => return Err("'&', '|', '^' are not defined for floats".into()),
        (Fun::Lt, [a, b]) => b2i(fl(*a) < fl(*b)),
        (Fun::Le, [a, b]) => b2i(fl(*a) <= fl(*b)),
        (Fun::Gt, [a, b]) => b2i(fl(*a) > fl(*b)),
        (Fun::Ge, [a, b]) => b2i(fl(*a) >= fl(*b)),
        (Fun::Eq, [a, b]) => b2i(fl(*a) == fl(*b)),
        (Fun::Ne, [a, b]) => b2i(fl(*a) != fl(*b)),
        (Fun::Add | Fun::Sub | Fun::Mul | Fun::FloorDiv | Fun::Mod | Fun::PowOp, [Val::Int(a), Val::Int(b)]) => {
            let (a, b) = (*a, *b);
            let r = match f {
                Fun::Add => a.checked_add(b),
                Fun::Sub => a.checked_sub(b),
                Fun::Mul => a.checked_mul(b),
                Fun::FloorDiv | Fun::Mod => {
                    if b == 0 {
                        return Err(zero());
                    }
                    let (q, r) = (a.div_euclid(b), a.rem_euclid(b));
                    // Python floors; Euclid keeps the remainder non-negative.
                    let (q, r) = if r != 0 && b < 0 { (q - 1, r + b) } else { (q, r) };
                    Some(if f == Fun::FloorDiv { q } else { r })
                }
                _ if b < 0 => return Ok(Some(Val::Float(fl(Val::Int(a)).powf(b as f64)))),
                _ => u32::try_from(b).ok().and_then(|e| a.checked_pow(e)),
            };
            Val::Int(r.ok_or_else(too_big)?)
        }
        (Fun::Add | Fun::Sub | Fun::Mul | Fun::Div | Fun::FloorDiv | Fun::Mod | Fun::PowOp, [a, b]) => {
            let (a, b) = (fl(*a), fl(*b));
            if b == 0.0 && matches!(f, Fun::Div | Fun::FloorDiv | Fun::Mod) {
                return Err(zero());
            }
            Val::Float(match f {
                Fun::Add => a + b,
                Fun::Sub => a - b,
                Fun::Mul => a * b,
                Fun::Div => a / b,
                Fun::FloorDiv => <f64 as Elem>::floordiv(a, b),
                Fun::Mod => <f64 as Elem>::rem(a, b),
                _ => {
                    if a == 0.0 && b < 0.0 {
                        return Err(zero());
                    }
                    if a < 0.0 && a.is_finite() && b.is_finite() && b.fract() != 0.0 {
                        return Err(format!(
                            "({a}) ** {b} is a complex number in Python; shmpool has no complex dtype"
                        ));
                    }
                    <f64 as Elem>::pow(a, b) // Python too returns a NaN operand itself
                }
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// The range of an integer dtype (`(0, 1)` for the others).
pub(super) fn int_range(d: Dtype) -> (i128, i128) {
    match d {
        Dtype::I8 => (i8::MIN as i128, i8::MAX as i128),
        Dtype::I16 => (i16::MIN as i128, i16::MAX as i128),
        Dtype::I32 => (i32::MIN as i128, i32::MAX as i128),
        Dtype::I64 => (i64::MIN as i128, i64::MAX as i128),
        Dtype::U8 => (0, u8::MAX as i128),
        Dtype::U16 => (0, u16::MAX as i128),
        Dtype::U32 => (0, u32::MAX as i128),
        Dtype::U64 => (0, u64::MAX as i128),
        _ => (0, 1),
    }
}

/// Whether numpy converts the Python integer `k` to the integer dtype `d` (floats take every
/// integer): beyond int64 (uint64 for uint64 arrays) it raises OverflowError before looking
/// at `d`; within, out of `d`'s bounds, OverflowError again unless `check` is off (np.where
/// wraps).
pub(super) fn python_int_to(k: i128, d: Dtype, check: bool) -> std::result::Result<(), String> {
    if !d.is_int() {
        return Ok(());
    }
    let (lo, hi) = int_range(d);
    let c_max = if d == Dtype::U64 || !check { u64::MAX as i128 } else { i64::MAX as i128 };
    if k < i64::MIN as i128 || k > c_max {
        return Err(format!(
            "Python integer {k} is too large here: numpy raises OverflowError (Python int too large to convert to C long)"
        ));
    }
    if check && (k < lo || k > hi) {
        return Err(format!("Python integer {k} out of bounds for {d}"));
    }
    Ok(())
}
