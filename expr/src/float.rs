//! Floating-point element semantics: numpy's `divmod` (floor division and a remainder with
//! the divisor's sign), NaN-propagating `minimum`/`maximum`, `nextafter`, and half precision
//! computed in `f32` and rounded after every operation, as numpy's float16 loops do.
#![allow(unsafe_code)] // calls of C's <math.h> (see `c`), each with its SAFETY comment

use super::elem::{Elem, Float, Hub, H};

/// numpy's `npy_divmod`: floor quotient and the remainder with the divisor's sign (a zero
/// remainder takes the divisor's sign too).
#[inline]
fn divmod<F: FloatOps>(a: F, b: F) -> (F, F) {
    let m = a.c_fmod(b);
    if b == F::ZERO {
        return (a.c_div(b), m);
    }
    let mut div = (a.c_sub(m)).c_div(b);
    let mut m = m;
    if m != F::ZERO {
        if (b < F::ZERO) != (m < F::ZERO) {
            m = m.c_add(b);
            div = div.c_sub(F::ONE);
        }
    } else {
        m = F::ZERO.c_copysign(b);
    }
    let q = if div != F::ZERO {
        let mut f = div.c_floor();
        if div.c_sub(f) > F::HALF {
            f = f.c_add(F::ONE);
        }
        f
    } else {
        F::ZERO.c_copysign(a.c_div(b))
    };
    (q, m)
}

/// The few primitive operations `divmod` needs, for `f32` and `f64`.
trait FloatOps: Copy + PartialOrd {
    const ZERO: Self;
    const ONE: Self;
    const HALF: Self;
    fn c_fmod(self, b: Self) -> Self;
    fn c_add(self, b: Self) -> Self;
    fn c_sub(self, b: Self) -> Self;
    fn c_div(self, b: Self) -> Self;
    fn c_floor(self) -> Self;
    fn c_copysign(self, b: Self) -> Self;
}

/// The C library's inverse hyperbolic functions: Rust's own `asinh`, `acosh`, `atanh` take
/// other formulas (`asinh(f64::MAX)` overflows to inf there; numpy, through libm, gives 710.5).
mod c {
    extern "C" {
        pub fn asinh(x: f64) -> f64;
        pub fn acosh(x: f64) -> f64;
        pub fn atanh(x: f64) -> f64;
        pub fn asinhf(x: f32) -> f32;
        pub fn acoshf(x: f32) -> f32;
        pub fn atanhf(x: f32) -> f32;
    }
}

macro_rules! float_elem {
    ($t:ty, $bits:ty, $asinh:ident, $acosh:ident, $atanh:ident) => {
        impl FloatOps for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const HALF: Self = 0.5;
            #[inline]
            fn c_fmod(self, b: Self) -> Self {
                self % b
            }
            #[inline]
            fn c_add(self, b: Self) -> Self {
                self + b
            }
            #[inline]
            fn c_sub(self, b: Self) -> Self {
                self - b
            }
            #[inline]
            fn c_div(self, b: Self) -> Self {
                self / b
            }
            #[inline]
            fn c_floor(self) -> Self {
                self.floor()
            }
            #[inline]
            fn c_copysign(self, b: Self) -> Self {
                self.copysign(b)
            }
        }
        impl Elem for $t {
            #[inline]
            fn from_imm(k: u64) -> Self {
                <$t>::from_bits(k as $bits)
            }
            #[inline]
            fn to_imm(self) -> u64 {
                self.to_bits() as u64
            }
            #[inline]
            fn to_hub(self) -> Hub {
                Hub::Float(self as f64)
            }
            #[inline]
            fn from_hub(h: Hub) -> Self {
                match h {
                    Hub::Int(v) => v as $t,
                    Hub::Float(f) => f as $t,
                }
            }
            #[inline]
            fn truthy(self) -> bool {
                self != 0.0
            }
            #[inline]
            fn add(self, b: Self) -> Self {
                self + b
            }
            #[inline]
            fn sub(self, b: Self) -> Self {
                self - b
            }
            #[inline]
            fn mul(self, b: Self) -> Self {
                self * b
            }
            #[inline]
            fn neg(self) -> Self {
                -self
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn floordiv(self, b: Self) -> Self {
                divmod(self, b).0
            }
            #[inline]
            fn rem(self, b: Self) -> Self {
                if b == 0.0 {
                    self % b
                } else {
                    divmod(self, b).1
                }
            }
            #[inline]
            fn fmod(self, b: Self) -> Self {
                self % b
            }
            #[inline]
            fn pow(self, b: Self) -> Self {
                // numpy's SIMD loops return a NaN operand itself, sign and payload (libm's
                // `pow` returns a positive NaN): `pow(nan, 0) == pow(1, nan) == 1` still.
                if (self.is_nan() || b.is_nan()) && b != 0.0 && self != 1.0 {
                    return if self.is_nan() { self } else { b };
                }
                self.powf(b)
            }
            #[inline]
            fn min(self, b: Self) -> Self {
                if self.is_nan() || self < b {
                    self
                } else {
                    b
                }
            }
            #[inline]
            fn max(self, b: Self) -> Self {
                if self.is_nan() || self > b {
                    self
                } else {
                    b
                }
            }
            #[inline]
            fn sign(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else if self == 0.0 {
                    0.0
                } else {
                    self
                }
            }
            #[inline]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline]
            fn ceil(self) -> Self {
                <$t>::ceil(self)
            }
            #[inline]
            fn trunc(self) -> Self {
                <$t>::trunc(self)
            }
            #[inline]
            fn round(self) -> Self {
                self.round_ties_even()
            }
        }
        impl Float for $t {
            #[inline]
            fn div(self, b: Self) -> Self {
                self / b
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn expm1(self) -> Self {
                <$t>::exp_m1(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn log2(self) -> Self {
                <$t>::log2(self)
            }
            #[inline]
            fn log10(self) -> Self {
                <$t>::log10(self)
            }
            #[inline]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline]
            fn sin_cos(self) -> (Self, Self) {
                <$t>::sin_cos(self)
            }
            #[inline]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline]
            fn tan(self) -> Self {
                <$t>::tan(self)
            }
            #[inline]
            fn asin(self) -> Self {
                <$t>::asin(self)
            }
            #[inline]
            fn acos(self) -> Self {
                <$t>::acos(self)
            }
            #[inline]
            fn atan(self) -> Self {
                <$t>::atan(self)
            }
            #[inline]
            fn sinh(self) -> Self {
                <$t>::sinh(self)
            }
            #[inline]
            fn cosh(self) -> Self {
                <$t>::cosh(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn asinh(self) -> Self {
                // SAFETY: a C99 <math.h> function of one floating-point value: no pointers,
                // no global state but errno, safe from any thread.
                unsafe { c::$asinh(self) }
            }
            #[inline]
            fn acosh(self) -> Self {
                // SAFETY: a C99 <math.h> function of one floating-point value: no pointers,
                // no global state but errno, safe from any thread.
                unsafe { c::$acosh(self) }
            }
            #[inline]
            fn atanh(self) -> Self {
                // SAFETY: a C99 <math.h> function of one floating-point value: no pointers,
                // no global state but errno, safe from any thread.
                unsafe { c::$atanh(self) }
            }
            #[inline]
            fn atan2(self, b: Self) -> Self {
                <$t>::atan2(self, b)
            }
            #[inline]
            fn hypot(self, b: Self) -> Self {
                <$t>::hypot(self, b)
            }
            #[inline]
            fn copysign(self, b: Self) -> Self {
                <$t>::copysign(self, b)
            }
            fn nextafter(self, b: Self) -> Self {
                if self.is_nan() || b.is_nan() {
                    return self + b;
                }
                if self == b {
                    return b;
                }
                if self == 0.0 {
                    return <$t>::from_bits(1).copysign(b);
                }
                let bits = self.to_bits();
                let up = (b > self) == (self > 0.0);
                <$t>::from_bits(if up { bits + 1 } else { bits - 1 })
            }
            #[inline]
            fn isnan(self) -> bool {
                self.is_nan()
            }
            #[inline]
            fn isinf(self) -> bool {
                self.is_infinite()
            }
            #[inline]
            fn signbit(self) -> bool {
                self.is_sign_negative()
            }
        }
    };
}
float_elem!(f32, u32, asinhf, acoshf, atanhf);
float_elem!(f64, u64, asinh, acosh, atanh);

macro_rules! via_f32 {
    ($($name:ident),*) => {$(
        #[inline] fn $name(self) -> Self { H::round(Float::$name(self.0)) }
    )*};
}
macro_rules! via_f32_elem {
    ($($name:ident),*) => {$(
        #[inline] fn $name(self) -> Self { H::round(Elem::$name(self.0)) }
    )*};
}
macro_rules! via_f32_2 {
    ($tr:ident: $($name:ident),*) => {$(
        #[inline] fn $name(self, b: Self) -> Self { H::round($tr::$name(self.0, b.0)) }
    )*};
}

impl Elem for H {
    fn from_imm(k: u64) -> Self {
        H(f32::from_bits(k as u32))
    }
    fn to_imm(self) -> u64 {
        self.0.to_bits() as u64
    }
    #[inline]
    fn to_hub(self) -> Hub {
        Hub::Float(self.0 as f64)
    }
    #[inline]
    fn from_hub(h: Hub) -> Self {
        match h {
            Hub::Int(v) => H(half::f16::from_f64(v as f64).to_f32()),
            Hub::Float(f) => H(half::f16::from_f64(f).to_f32()),
        }
    }
    #[inline]
    fn truthy(self) -> bool {
        self.0 != 0.0
    }
    via_f32_2!(Elem: add, sub, mul, floordiv, rem, fmod);
    #[inline]
    fn pow(self, b: Self) -> Self {
        // numpy's float16 loop is libm's `powf` (a positive NaN for a NaN operand).
        H::round(self.0.powf(b.0))
    }
    via_f32_elem!(neg, abs, sign, floor, ceil, trunc, round);
    #[inline]
    fn min(self, b: Self) -> Self {
        // numpy's float16 loop keeps `a` on a tie (`minimum(0.0, -0.0)` is 0.0), unlike its
        // float32/float64 SIMD loops, which return `b`.
        if self.0.is_nan() || self.0 <= b.0 {
            self
        } else {
            b
        }
    }
    #[inline]
    fn max(self, b: Self) -> Self {
        if self.0.is_nan() || self.0 >= b.0 {
            self
        } else {
            b
        }
    }
}

impl Float for H {
    fn sin_cos(self) -> (Self, Self) {
        let (s, c) = self.0.sin_cos();
        (H::round(s), H::round(c))
    }
    via_f32_2!(Float: div, atan2, hypot, copysign);
    via_f32!(
        sqrt, exp, expm1, ln, ln_1p, log2, log10, sin, cos, tan, asin, acos, atan, sinh, cosh, tanh, asinh, acosh,
        atanh
    );
    fn nextafter(self, b: Self) -> Self {
        // Steps in half precision (numpy's npy_half_nextafter), not in f32.
        if self.0.is_nan() || b.0.is_nan() {
            return H(f32::NAN);
        }
        if self.0 == b.0 {
            return self; // npy_half_nextafter keeps x when x == y (C's nextafter returns y)
        }
        let bits = half::f16::from_f32(self.0).to_bits();
        let next = if self.0 == 0.0 {
            if b.0 > 0.0 {
                1
            } else {
                0x8001
            }
        } else if (b.0 > self.0) == (self.0 > 0.0) {
            bits + 1
        } else {
            bits - 1
        };
        H(half::f16::from_bits(next).to_f32())
    }
    fn isnan(self) -> bool {
        self.0.is_nan()
    }
    fn isinf(self) -> bool {
        self.0.is_infinite()
    }
    fn signbit(self) -> bool {
        self.0.is_sign_negative()
    }
}
