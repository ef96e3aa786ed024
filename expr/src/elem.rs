//! Element types of the evaluator's registers and numpy's per-type semantics: wrapping integer
//! arithmetic with numpy's zero-divisor results, Python's floor division and modulo, IEEE
//! floats with numpy's `divmod`, and half precision computed in `f32` and rounded after every
//! operation (as numpy's float16 loops do).

use bytemuck::{Pod, Zeroable};

/// numpy's `bool` in a register: one byte, 0 or 1.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Pod, Zeroable)]
pub(super) struct B(pub u8);

/// numpy's `float16` in a register: an `f32` that always holds a value representable in half
/// precision.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Pod, Zeroable)]
pub(super) struct H(pub f32);

impl H {
    #[inline]
    pub(super) fn round(v: f32) -> H {
        H(half::f16::from_f32(v).to_f32())
    }
    pub(super) fn from_storage(v: half::f16) -> H {
        H(v.to_f32())
    }
    pub(super) fn to_storage(self) -> half::f16 {
        half::f16::from_f32(self.0)
    }
}

/// A value on its way between two element types (numpy's C casts: integers wrap, floats round
/// to nearest, floats to integers truncate (saturating here, where C leaves it undefined)).
#[derive(Debug, Clone, Copy)]
pub(super) enum Hub {
    Int(i128),
    Float(f64),
}

/// What every register type supports.
pub(super) trait Elem: Pod + PartialEq + PartialOrd {
    fn from_imm(k: u64) -> Self;
    fn to_imm(self) -> u64;
    fn to_hub(self) -> Hub;
    fn from_hub(h: Hub) -> Self;
    fn truthy(self) -> bool;
    fn add(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn floordiv(self, b: Self) -> Self;
    fn rem(self, b: Self) -> Self;
    fn fmod(self, b: Self) -> Self;
    fn pow(self, b: Self) -> Self;
    fn min(self, b: Self) -> Self;
    fn max(self, b: Self) -> Self;
    fn sign(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn trunc(self) -> Self;
    fn round(self) -> Self;
}

/// Bitwise operations (integers and `bool`).
pub(super) trait Bits: Elem {
    fn and(self, b: Self) -> Self;
    fn or(self, b: Self) -> Self;
    fn xor(self, b: Self) -> Self;
    fn not(self) -> Self;
    /// numpy's `left_shift`: 0 when shifting by the bit width or more (or a negative amount).
    fn shl(self, _b: Self) -> Self {
        self
    }
    /// numpy's `right_shift`: 0 or -1 (by the sign) when shifting by the bit width or more.
    fn shr(self, _b: Self) -> Self {
        self
    }
}

/// Floating-point functions.
pub(super) trait Float: Elem {
    fn div(self, b: Self) -> Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn expm1(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn log2(self) -> Self;
    fn log10(self) -> Self;
    fn sin(self) -> Self;
    /// `(sin, cos)`, computed by one `sincos` call where the C library has it.
    fn sin_cos(self) -> (Self, Self);
    fn cos(self) -> Self;
    fn tan(self) -> Self;
    fn asin(self) -> Self;
    fn acos(self) -> Self;
    fn atan(self) -> Self;
    fn sinh(self) -> Self;
    fn cosh(self) -> Self;
    fn tanh(self) -> Self;
    fn asinh(self) -> Self;
    fn acosh(self) -> Self;
    fn atanh(self) -> Self;
    fn atan2(self, b: Self) -> Self;
    fn hypot(self, b: Self) -> Self;
    fn copysign(self, b: Self) -> Self;
    fn nextafter(self, b: Self) -> Self;
    fn isnan(self) -> bool;
    fn isinf(self) -> bool;
    fn signbit(self) -> bool;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline] fn from_imm(k: u64) -> Self { k as $t }
            #[inline] fn to_imm(self) -> u64 { self as u64 }
            #[inline] fn to_hub(self) -> Hub { Hub::Int(self as i128) }
            #[inline] fn from_hub(h: Hub) -> Self { match h { Hub::Int(v) => v as $t, Hub::Float(f) => f as $t } }
            #[inline] fn truthy(self) -> bool { self != 0 }
            #[inline] fn add(self, b: Self) -> Self { self.wrapping_add(b) }
            #[inline] fn sub(self, b: Self) -> Self { self.wrapping_sub(b) }
            #[inline] fn mul(self, b: Self) -> Self { self.wrapping_mul(b) }
            #[inline] fn neg(self) -> Self { self.wrapping_neg() }
            #[allow(unused_comparisons)]
            #[inline] fn abs(self) -> Self { if self < 0 { self.wrapping_neg() } else { self } }
            #[allow(unused_comparisons)]
            #[inline] fn floordiv(self, b: Self) -> Self {
                // numpy: x // 0 is 0; MIN // -1 wraps to MIN.
                if b == 0 { return 0; }
                let q = self.wrapping_div(b);
                if self.wrapping_rem(b) != 0 && ((self < 0) != (b < 0)) { q.wrapping_sub(1) } else { q }
            }
            #[allow(unused_comparisons)]
            #[inline] fn rem(self, b: Self) -> Self {
                // numpy (Python): the result has the divisor's sign; x % 0 is 0.
                if b == 0 { return 0; }
                let r = self.wrapping_rem(b);
                if r != 0 && ((r < 0) != (b < 0)) { r.wrapping_add(b) } else { r }
            }
            #[inline] fn fmod(self, b: Self) -> Self { if b == 0 { 0 } else { self.wrapping_rem(b) } }
            #[allow(unused_comparisons)]
            fn pow(self, b: Self) -> Self {
                if b < 0 {
                    // numpy raises ValueError: the evaluator checks the exponents before it
                    // calls this (`eval::check_pow`) and returns `Error::NegativeIntegerPower`.
                    return 0;
                }
                let (mut base, mut e, mut acc) = (self, b, 1 as $t);
                while e != 0 {
                    if e & 1 == 1 { acc = acc.wrapping_mul(base); }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                acc
            }
            #[inline] fn min(self, b: Self) -> Self { Ord::min(self, b) }
            #[inline] fn max(self, b: Self) -> Self { Ord::max(self, b) }
            #[allow(unused_comparisons)]
            #[inline] fn sign(self) -> Self { if self > 0 { 1 } else if self < 0 { (0 as $t).wrapping_sub(1) } else { 0 } }
            #[inline] fn floor(self) -> Self { self }
            #[inline] fn ceil(self) -> Self { self }
            #[inline] fn trunc(self) -> Self { self }
            #[inline] fn round(self) -> Self { self }
        }
        impl Bits for $t {
            #[inline] fn and(self, b: Self) -> Self { self & b }
            #[inline] fn or(self, b: Self) -> Self { self | b }
            #[inline] fn xor(self, b: Self) -> Self { self ^ b }
            #[inline] fn not(self) -> Self { !self }
            #[inline]
            fn shl(self, b: Self) -> Self {
                match u32::try_from(b) {
                    Ok(k) if k < <$t>::BITS => self << k,
                    _ => 0,
                }
            }
            #[inline]
            #[allow(unused_comparisons)]
            fn shr(self, b: Self) -> Self {
                match u32::try_from(b) {
                    Ok(k) if k < <$t>::BITS => self >> k,
                    _ if self < 0 => !0,
                    _ => 0,
                }
            }
        }
    )*};
}
int_elem!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Elem for B {
    fn from_imm(k: u64) -> Self {
        B(u8::from(k != 0))
    }
    fn to_imm(self) -> u64 {
        self.0 as u64
    }
    #[inline]
    fn to_hub(self) -> Hub {
        Hub::Int(self.0 as i128)
    }
    #[inline]
    fn from_hub(h: Hub) -> Self {
        B(u8::from(match h {
            Hub::Int(v) => v != 0,
            Hub::Float(f) => f != 0.0,
        }))
    }
    #[inline]
    fn truthy(self) -> bool {
        self.0 != 0
    }
    // numpy's bool loops: add is `or`, multiply is `and`, minimum/maximum are `and`/`or`. The
    // operations numpy refuses or computes in int8 never reach a bool register (the compiler
    // casts or reports them), so they are the identity here.
    #[inline]
    fn add(self, b: Self) -> Self {
        B(self.0 | b.0)
    }
    fn sub(self, _: Self) -> Self {
        self
    }
    #[inline]
    fn mul(self, b: Self) -> Self {
        B(self.0 & b.0)
    }
    fn neg(self) -> Self {
        self
    }
    fn abs(self) -> Self {
        self
    }
    fn floordiv(self, _: Self) -> Self {
        self
    }
    fn rem(self, _: Self) -> Self {
        self
    }
    fn fmod(self, _: Self) -> Self {
        self
    }
    fn pow(self, _: Self) -> Self {
        self
    }
    #[inline]
    fn min(self, b: Self) -> Self {
        B(self.0 & b.0)
    }
    #[inline]
    fn max(self, b: Self) -> Self {
        B(self.0 | b.0)
    }
    fn sign(self) -> Self {
        self
    }
    fn floor(self) -> Self {
        self
    }
    fn ceil(self) -> Self {
        self
    }
    fn trunc(self) -> Self {
        self
    }
    fn round(self) -> Self {
        self
    }
}

impl Bits for B {
    #[inline]
    fn and(self, b: Self) -> Self {
        B(self.0 & b.0)
    }
    #[inline]
    fn or(self, b: Self) -> Self {
        B(self.0 | b.0)
    }
    #[inline]
    fn xor(self, b: Self) -> Self {
        B(self.0 ^ b.0)
    }
    #[inline]
    fn not(self) -> Self {
        B(self.0 ^ 1)
    }
}

/// Casts `v` from one register type to another (numpy's `astype`, C semantics).
#[inline]
pub(super) fn cast<A: Elem, T: Elem>(v: A) -> T {
    T::from_hub(v.to_hub())
}
