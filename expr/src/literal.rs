//! Python's arithmetic on literal-only sub-expressions (`2 * 3`, `-1`, `1 / 3`, `1 < 2`):
//! what Python computes before numpy sees anything, so the result stays a weak scalar.

use std::cmp::Ordering;

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
            if *b < 0 {
                return Err("negative shift count (Python raises ValueError)".to_string());
            }
            // Any count from 127 on shifts every bit out (or in: too large) alike.
            let k = u32::try_from(Ord::min(*b, 127)).expect("clamped to 127");
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
        // Python compares an int with a float exactly (`2**53 + 1 == 2.0**53` is False).
        (Fun::Lt, [a, b]) => b2i(compare(*a, *b) == Some(Ordering::Less)),
        (Fun::Le, [a, b]) => b2i(matches!(compare(*a, *b), Some(Ordering::Less | Ordering::Equal))),
        (Fun::Gt, [a, b]) => b2i(compare(*a, *b) == Some(Ordering::Greater)),
        (Fun::Ge, [a, b]) => b2i(matches!(compare(*a, *b), Some(Ordering::Greater | Ordering::Equal))),
        (Fun::Eq, [a, b]) => b2i(compare(*a, *b) == Some(Ordering::Equal)),
        (Fun::Ne, [a, b]) => b2i(compare(*a, *b) != Some(Ordering::Equal)),
        // Python's int / int is correctly rounded (not int -> float, then divide).
        (Fun::Div, [Val::Int(a), Val::Int(b)]) => {
            if *b == 0 {
                return Err(zero());
            }
            Val::Float(int_div(*a, *b))
        }
        (Fun::Add | Fun::Sub | Fun::Mul | Fun::FloorDiv | Fun::Mod | Fun::PowOp, [Val::Int(a), Val::Int(b)]) => {
            int_arith(f, *a, *b)?
        }
        (Fun::Add | Fun::Sub | Fun::Mul | Fun::Div | Fun::FloorDiv | Fun::Mod | Fun::PowOp, [a, b]) => {
            float_arith(f, fl(*a), fl(*b))?
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Python's arithmetic of two ints (`+ - * // % **`).
fn int_arith(f: Fun, a: i128, b: i128) -> std::result::Result<Val, String> {
    let too_big = || "integer constant is too large (shmpool's Python integers stop below 2**127)".to_string();
    let zero = || "division by zero in a constant (Python raises ZeroDivisionError)".to_string();
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
        _ if b < 0 && a == 0 => return Err(zero_power()),
        // Python: a float power, which cannot overflow for an integer base.
        _ if b < 0 => return Ok(Val::Float((a as f64).powf(b as f64))),
        _ => u32::try_from(b).ok().and_then(|e| a.checked_pow(e)),
    };
    Ok(Val::Int(r.ok_or_else(too_big)?))
}

/// Python's arithmetic of two numbers, one a float (`+ - * / // % **`).
fn float_arith(f: Fun, a: f64, b: f64) -> std::result::Result<Val, String> {
    let zero = || "division by zero in a constant (Python raises ZeroDivisionError)".to_string();
    if b == 0.0 && matches!(f, Fun::Div | Fun::FloorDiv | Fun::Mod) {
        return Err(zero());
    }
    Ok(Val::Float(match f {
        Fun::Add => a + b,
        Fun::Sub => a - b,
        Fun::Mul => a * b,
        Fun::Div => a / b,
        Fun::FloorDiv => <f64 as Elem>::floordiv(a, b),
        Fun::Mod => <f64 as Elem>::rem(a, b),
        _ => {
            if a == 0.0 && b < 0.0 {
                return Err(zero_power());
            }
            if a < 0.0 && a.is_finite() && b.is_finite() && b.fract() != 0.0 {
                return Err(format!("({a}) ** {b} is a complex number in Python; shmpool has no complex dtype"));
            }
            let r = <f64 as Elem>::pow(a, b); // Python too returns a NaN operand itself
            if r.is_infinite() && a.is_finite() && b.is_finite() {
                return Err(format!(
                    "({a}) ** {b} overflows a float: Python raises OverflowError (Numerical result out of range)"
                ));
            }
            r
        }
    }))
}

/// Python's ZeroDivisionError for `0 ** -1` and `0.0 ** -1`.
fn zero_power() -> String {
    "0.0 cannot be raised to a negative power (Python raises ZeroDivisionError)".to_string()
}

/// Python's comparison of two numbers: exact between an int and a float; `None` with a NaN.
fn compare(a: Val, b: Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(&y)),
        (Val::Int(k), Val::Float(f)) => int_float_cmp(k, f),
        (Val::Float(f), Val::Int(k)) => int_float_cmp(k, f).map(Ordering::reverse),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(&y),
        // Bools were turned into ints by the caller; registers never reach Python's arithmetic.
        _ => None,
    }
}

/// `k` compared with `f` exactly (Python's int/float comparison, no rounding of `k`).
fn int_float_cmp(k: i128, f: f64) -> Option<Ordering> {
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f.is_nan() {
        return None;
    }
    if f >= TWO_127 {
        return Some(Ordering::Less);
    }
    if f < -TWO_127 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    // |t| < 2**127 and integral: exactly representable as i128.
    match k.cmp(&(t as i128)) {
        Ordering::Equal => (t).partial_cmp(&f),
        other => Some(other),
    }
}

/// Python's true division of two ints, correctly rounded to the nearest float (`b != 0`).
pub(super) fn int_div(a: i128, b: i128) -> f64 {
    let negative = (a < 0) != (b < 0);
    let (n, d) = (a.unsigned_abs(), b.unsigned_abs());
    if n == 0 {
        return if negative { -0.0 } else { 0.0 }; // Python: 0 / -5 == -0.0
    }
    // Long division until the quotient has 65 significant bits (>= 2 beyond f64's 53 + the
    // rounding bit), the remainder kept as a sticky bit: rounding `m | sticky` once, to
    // nearest even, is then the correct rounding of the exact quotient.
    let (mut m, mut r, mut e) = (n / d, n % d, 0i32);
    while m < 1 << 64 {
        // r < d <= 2**127: 2r fits in u128.
        r <<= 1;
        m <<= 1;
        if r >= d {
            r -= d;
            m |= 1;
        }
        e -= 1;
    }
    let q = (m | u128::from(r != 0)) as f64 * 2f64.powi(e);
    // The quotient is at least 2**-127: the scaling by a power of two is exact.
    if negative {
        -q
    } else {
        q
    }
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
