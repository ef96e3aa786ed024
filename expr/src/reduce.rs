//! Reductions of an expression's values to one number, as numpy's `sum prod mean min max std
//! var count_nonzero any all argmin argmax nansum nanmean nanmin nanmax` compute them over a
//! whole array (no `axis` yet): numpy's result types (int32 sums are int64, means of integers
//! float64, bool sums int64), NaN propagation, numpy's errors and warnings for empty inputs.
//!
//! Float sums are compensated (Neumaier) in `f64`: never less accurate than numpy's pairwise
//! summation in practice, and exact on cancellations pairwise summation loses. The values are
//! consumed in index order; [`Reducer::merge`] joins reducers of consecutive ranges in a fixed
//! order, so a result does not depend on how the input was split.

use half::f16;

use crate::compensated::{deviation_lanes, lanes, neumaier, two_sum};
pub use crate::reduction::Reduction;
use crate::reduction::NAMES;
pub use crate::value::Value;
use crate::{Dtype, Error, Result};

/// A reduction in progress over values given in index order.
#[derive(Debug, Clone)]
pub struct Reducer {
    kind: Reduction,
    input: Dtype,
    /// Values seen (not NaN, for the nan- reductions).
    n: u64,
    /// Compensated sum (Neumaier): `sum + comp`.
    sum: f64,
    comp: f64,
    /// Integer sums and products, wrapping in their low 64 bits as numpy's.
    isum: i128,
    iprod: i128,
    fprod: f64,
    /// Best value and its index (min, max, arg-).
    best: Option<(f64, i128, u64)>,
    nan_at: Option<u64>,
    count: u64,
    /// The second pass of `std`/`var`: the mean, and the compensated sum of squares.
    mean: Option<f64>,
    sq: f64,
    sqc: f64,
    /// The largest magnitude of a float value of the first pass (NaNs aside), and the power
    /// of two the second pass multiplies the values and the mean by (1, or more when every
    /// value is so small that squared deviations would be subnormal: [`Reducer::second_pass`]).
    big: f64,
    scale: f64,
}

/// Bytes of [`Reducer::to_bytes`].
pub const REDUCER_BYTES: usize = 160;

impl Reducer {
    /// A reduction of values of `input`.
    pub fn new(kind: Reduction, input: Dtype) -> Reducer {
        Reducer {
            kind,
            input,
            n: 0,
            sum: 0.0,
            comp: 0.0,
            isum: 0,
            iprod: 1,
            fprod: 1.0,
            best: None,
            nan_at: None,
            count: 0,
            mean: None,
            sq: 0.0,
            sqc: 0.0,
            big: 0.0,
            scale: 1.0,
        }
    }

    /// The reducer's state as bytes (to travel between processes as a partial result).
    pub fn to_bytes(&self) -> [u8; REDUCER_BYTES] {
        let mut b = [0u8; REDUCER_BYTES];
        let kind = NAMES.iter().position(|(_, r)| *r == self.kind).expect("named") as u64;
        let input = Dtype::ALL.iter().position(|d| *d == self.input).expect("in ALL") as u64;
        let (bf, bi, bk) = self.best.unwrap_or((0.0, 0, 0));
        let words: [u64; 20] = [
            kind | (input << 8)
                | (u64::from(self.best.is_some()) << 16)
                | (u64::from(self.nan_at.is_some()) << 17)
                | (u64::from(self.mean.is_some()) << 18),
            self.n,
            self.sum.to_bits(),
            self.comp.to_bits(),
            self.isum as u64,
            (self.isum >> 64) as u64,
            self.iprod as u64,
            (self.iprod >> 64) as u64,
            self.fprod.to_bits(),
            bf.to_bits(),
            bi as u64,
            (bi >> 64) as u64,
            bk,
            self.nan_at.unwrap_or(0),
            self.count,
            self.mean.unwrap_or(0.0).to_bits(),
            self.sq.to_bits(),
            self.sqc.to_bits(),
            self.big.to_bits(),
            self.scale.to_bits(),
        ];
        for (k, w) in words.iter().enumerate() {
            b[k * 8..k * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// A reducer from [`Reducer::to_bytes`]; `None` if the bytes are not one.
    pub fn from_bytes(b: &[u8]) -> Option<Reducer> {
        if b.len() != REDUCER_BYTES {
            return None;
        }
        let w = |k: usize| u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
        let head = w(0);
        let kind = NAMES.get((head & 0xff) as usize)?.1;
        let input = *Dtype::ALL.get(((head >> 8) & 0xff) as usize)?;
        let wide = |lo: u64, hi: u64| (u128::from(lo) | (u128::from(hi) << 64)) as i128;
        let mean = (head >> 18 & 1 == 1).then(|| f64::from_bits(w(15)));
        let (sq, sqc) = (f64::from_bits(w(16)), f64::from_bits(w(17)));
        Some(Reducer {
            kind,
            input,
            n: w(1),
            sum: f64::from_bits(w(2)),
            comp: f64::from_bits(w(3)),
            isum: wide(w(4), w(5)),
            iprod: wide(w(6), w(7)),
            fprod: f64::from_bits(w(8)),
            best: (head >> 16 & 1 == 1).then(|| (f64::from_bits(w(9)), wide(w(10), w(11)), w(12))),
            nan_at: (head >> 17 & 1 == 1).then(|| w(13)),
            count: w(14),
            mean,
            sq,
            sqc,
            big: f64::from_bits(w(18)),
            scale: f64::from_bits(w(19)),
        })
    }

    /// Whether the reduction reads the values twice (`std`, `var`: the mean, then the squares
    /// of the deviations). Call [`Reducer::second_pass`] between the passes.
    pub fn two_passes(&self) -> bool {
        matches!(self.kind, Reduction::Std | Reduction::Var)
    }

    /// Whether the values must be reduced by one reducer, in order, never as joined partial
    /// results ([`Reducer::merge`]): numpy's float product rounds after every value.
    pub fn sequential(&self) -> bool {
        self.kind == Reduction::Prod && self.input.is_float()
    }

    /// Starts the second pass (`std`, `var`): the values are given again, in the same order.
    ///
    /// In parallel: merge the first passes, call this once, clone the result for each range
    /// of the second pass, and merge those clones in order.
    pub fn second_pass(&mut self) {
        (self.sq, self.sqc) = (0.0, 0.0);
        let n = self.n.max(1) as f64;
        let total = self.sum + self.comp;
        // numpy's `_var` sums float16/float32 in their own type for the mean: past the type's
        // range the mean is an infinity, and so are `var` and `std` (the second pass is skipped).
        let overflows = round_to(total, self.input).is_infinite() && total.is_finite();
        // Values all below 2^-400 (a deviation below 2^-511 squares to a subnormal, losing the
        // bits that make var and std correctly rounded): the second pass scales the values and
        // the mean by the power of two that brings the largest near 1 (exact), `variance` scales
        // the results back.
        let tiny = self.input.is_float() && self.big > 0.0 && self.big < 2f64.powi(-400);
        let e = (((self.big.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(-1022);
        self.scale = if tiny { 2f64.powi(-e) } else { 1.0 };
        self.mean = Some(match () {
            _ if overflows => f64::INFINITY,
            _ if self.input.is_float() => total / n * self.scale,
            _ => self.isum as f64 / n,
        });
        // From here on `sum + comp` is the sum of the deviations from the rounded mean (the
        // correction of the two-pass algorithm).
        (self.sum, self.comp) = (0.0, 0.0);
    }

    /// Consumes the values in `bytes` (elements of the input dtype's storage type), whose first
    /// has flat index `first`.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] when `bytes` is not whole elements.
    pub fn update(&mut self, bytes: &[u8], first: u64) -> Result<()> {
        let size = self.input.size();
        if bytes.len() % size != 0 {
            return Err(Error::LengthMismatch { input: bytes.len() / size, output: bytes.len() / size + 1 });
        }
        macro_rules! each {
            ($t:ty, $conv:expr) => {
                for (k, c) in bytes.chunks_exact(size).enumerate() {
                    let v: $t = <$t>::from_le_bytes(c.try_into().expect("chunks of the element size"));
                    self.one($conv(v), first + k as u64);
                }
            };
        }
        if self.fast_float_sum(bytes) || self.mean.is_some_and(f64::is_infinite) {
            return Ok(());
        }
        let f = |v: f64| (v, 0i128);
        match self.input {
            // numpy reads any non-zero bool byte as True.
            Dtype::Bool => each!(u8, |v: u8| (f64::from(u8::from(v != 0)), i128::from(v != 0))),
            Dtype::U8 => each!(u8, |v: u8| (v as f64, v as i128)),
            Dtype::I8 => each!(i8, |v: i8| (v as f64, v as i128)),
            Dtype::I16 => each!(i16, |v: i16| (v as f64, v as i128)),
            Dtype::U16 => each!(u16, |v: u16| (v as f64, v as i128)),
            Dtype::I32 => each!(i32, |v: i32| (v as f64, v as i128)),
            Dtype::U32 => each!(u32, |v: u32| (v as f64, v as i128)),
            Dtype::I64 => each!(i64, |v: i64| (v as f64, v as i128)),
            Dtype::U64 => each!(u64, |v: u64| (v as f64, v as i128)),
            Dtype::F16 => each!(u16, |v: u16| f(f16::from_bits(v).to_f64())),
            Dtype::F32 => each!(f32, |v: f32| f(v as f64)),
            Dtype::F64 => each!(f64, f),
        }
        Ok(())
    }

    /// The first pass of a float `sum`/`mean`/`std`/`var` over `bytes` in `compensated::LANES`
    /// branch-free compensated sums (vectorised; as exact, and fixed for given `bytes`).
    /// False, changing nothing, for other reductions or passes, or on an infinity or NaN (the
    /// value-by-value path then gives numpy's inf / NaN and records where the NaN was).
    fn fast_float_sum(&mut self, bytes: &[u8]) -> bool {
        use Reduction::*;
        if !matches!(self.kind, Sum | Mean | Std | Var) {
            return false;
        }
        if let Some(m) = self.mean {
            // The second pass, likewise: the squared deviations and the deviations.
            let acc = match self.input {
                Dtype::F64 if self.scale == 1.0 => deviation_lanes::<8>(bytes, f64::from_le_bytes, m),
                Dtype::F32 if self.scale == 1.0 => deviation_lanes::<4>(bytes, |b| f32::from_le_bytes(b) as f64, m),
                Dtype::F64 => deviation_lanes::<8>(bytes, |b| f64::from_le_bytes(b) * self.scale, m),
                Dtype::F32 => deviation_lanes::<4>(bytes, |b| f32::from_le_bytes(b) as f64 * self.scale, m),
                _ => return false,
            };
            if acc.iter().flatten().any(|v| !v.is_finite()) {
                return false;
            }
            let [sq, sqc, d, dc] = acc;
            for (((sq, sqc), d), dc) in sq.into_iter().zip(sqc).zip(d).zip(dc) {
                neumaier(&mut self.sq, &mut self.sqc, sq);
                self.sqc += sqc;
                neumaier(&mut self.sum, &mut self.comp, d);
                self.comp += dc;
            }
            return true;
        }
        let (s, c, n, big) = match self.input {
            // The largest magnitude only where the second pass may need it (std, var).
            Dtype::F64 if self.two_passes() => lanes::<8, true>(bytes, f64::from_le_bytes),
            Dtype::F32 if self.two_passes() => lanes::<4, true>(bytes, |b| f32::from_le_bytes(b) as f64),
            Dtype::F64 => lanes::<8, false>(bytes, f64::from_le_bytes),
            Dtype::F32 => lanes::<4, false>(bytes, |b| f32::from_le_bytes(b) as f64),
            _ => return false,
        };
        if s.iter().chain(&c).any(|v| !v.is_finite()) {
            return self.input == Dtype::F64 && self.scaled_sum(bytes);
        }
        for (s, c) in s.iter().zip(&c) {
            neumaier(&mut self.sum, &mut self.comp, *s);
            self.comp += c;
        }
        self.n += n;
        self.big = self.big.max(big);
        true
    }

    /// The first pass of a float64 sum whose lanes overflowed: the same lanes over the values
    /// scaled by a power of two that keeps any partial sum of them finite, joined in that
    /// scale, then scaled back (exact but for values below 2^-1000), so that a sum that is
    /// finite is found whatever its partial sums were, as numpy's pairwise summation finds it
    /// when its halves are. False, changing nothing, when a value is an infinity or NaN.
    fn scaled_sum(&mut self, bytes: &[u8]) -> bool {
        let n = (bytes.len() / 8) as u64;
        // 2^-(bits of n + 1): n values of at most f64::MAX each sum to less than f64::MAX.
        let k = 65 - n.leading_zeros() as i32;
        let (scale, unscale) = (2f64.powi(-k), 2f64.powi(k));
        let (s, c, _, big) = lanes::<8, true>(bytes, |b| f64::from_le_bytes(b) * scale);
        if s.iter().chain(&c).any(|v| !v.is_finite()) {
            return false;
        }
        let (mut t, mut tc) = (0.0, 0.0);
        for (s, c) in s.iter().zip(&c) {
            neumaier(&mut t, &mut tc, *s);
            tc += c;
        }
        let (t, tc) = two_sum(t, tc);
        neumaier(&mut self.sum, &mut self.comp, t * unscale);
        self.comp += tc * unscale;
        self.n += n;
        self.big = self.big.max(big * unscale);
        true
    }

    /// One value: `fv` as a float, `iv` exactly for integer inputs.
    #[inline]
    fn one(&mut self, (fv, iv): (f64, i128), index: u64) {
        use Reduction::*;
        let float = self.input.is_float();
        let nan = fv.is_nan();
        if nan && self.nan_at.is_none() {
            self.nan_at = Some(index);
        }
        let skip_nan = matches!(self.kind, NanSum | NanMean | NanMin | NanMax);
        if nan && skip_nan {
            return;
        }
        if let Some(m) = self.mean {
            // The deviation exactly, `dv + de` (two-sum), and its square `sq` plus the
            // rounding errors (fma), so that the sums below are exact to their last bits.
            let (dv, de) = two_sum(if float { fv * self.scale } else { iv as f64 }, -m);
            let sq = dv * dv;
            neumaier(&mut self.sq, &mut self.sqc, sq);
            if sq.is_finite() {
                self.sqc += dv.mul_add(dv, -sq) + 2.0 * dv * de;
            }
            neumaier(&mut self.sum, &mut self.comp, dv);
            self.comp += de;
            return;
        }
        self.n += 1;
        match self.kind {
            Sum | NanSum | Mean | NanMean | Std | Var => {
                if float {
                    self.big = self.big.max(fv.abs());
                    neumaier(&mut self.sum, &mut self.comp, fv);
                } else {
                    self.isum = self.isum.wrapping_add(iv);
                }
            }
            Prod => {
                if float {
                    // numpy multiplies float32 in float32 and carries float16 in float32
                    // (rounded to float16 once, by `finish`).
                    self.fprod = match self.input {
                        Dtype::F16 | Dtype::F32 => ((self.fprod as f32) * (fv as f32)) as f64,
                        _ => self.fprod * fv,
                    };
                } else {
                    self.iprod = self.iprod.wrapping_mul(iv);
                }
            }
            Min | Max | NanMin | NanMax | ArgMin | ArgMax => {
                let want_max = matches!(self.kind, Max | NanMax | ArgMax);
                // numpy's float max/min keep the later of equal values (`max([0.0, -0.0])` is
                // -0.0); argmax/argmin the first.
                let later = !matches!(self.kind, ArgMin | ArgMax);
                let better = match self.best {
                    None => true,
                    Some((bf, bi, _)) => {
                        if float {
                            if want_max {
                                fv > bf || (later && fv == bf)
                            } else {
                                fv < bf || (later && fv == bf)
                            }
                        } else if want_max {
                            iv > bi
                        } else {
                            iv < bi
                        }
                    }
                };
                if better {
                    self.best = Some((fv, iv, index));
                }
            }
            CountNonzero | Any | All => {
                if fv != 0.0 || nan {
                    self.count += 1;
                }
            }
        }
    }

    /// Joins the reducer of the values right after this one's (same reduction, same pass).
    pub fn merge(&mut self, later: &Reducer) {
        if self.mean.is_some() {
            // Second pass: both started from the same first pass; only the squares add up.
            neumaier(&mut self.sq, &mut self.sqc, later.sq);
            neumaier(&mut self.sq, &mut self.sqc, later.sqc);
            neumaier(&mut self.sum, &mut self.comp, later.sum);
            neumaier(&mut self.sum, &mut self.comp, later.comp);
            return;
        }
        self.n += later.n;
        self.big = self.big.max(later.big);
        neumaier(&mut self.sum, &mut self.comp, later.sum);
        neumaier(&mut self.sum, &mut self.comp, later.comp);
        self.isum = self.isum.wrapping_add(later.isum);
        self.iprod = self.iprod.wrapping_mul(later.iprod);
        self.fprod = match self.input {
            Dtype::F16 | Dtype::F32 => ((self.fprod as f32) * (later.fprod as f32)) as f64,
            _ => self.fprod * later.fprod,
        };
        self.count += later.count;
        if self.nan_at.is_none() {
            self.nan_at = later.nan_at;
        }
        if let Some((lf, li, lk)) = later.best {
            let want_max = matches!(self.kind, Reduction::Max | Reduction::NanMax | Reduction::ArgMax);
            let better = match self.best {
                None => true,
                Some((bf, _, _)) if self.input.is_float() => {
                    let later = !matches!(self.kind, Reduction::ArgMin | Reduction::ArgMax);
                    if want_max {
                        lf > bf || (later && lf == bf)
                    } else {
                        lf < bf || (later && lf == bf)
                    }
                }
                Some((_, bi, _)) => {
                    if want_max {
                        li > bi
                    } else {
                        li < bi
                    }
                }
            };
            if better {
                self.best = Some((lf, li, lk));
            }
        }
    }

    /// The result, with numpy's warning in words when numpy warns (`Mean of empty slice`).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyReduction`] for `min`, `max`, `argmin`, `argmax` (and the nan- forms) of
    /// no values, as numpy's ValueError.
    pub fn finish(&self) -> Result<(Value, Option<&'static str>)> {
        use Reduction::*;
        let out = self.kind.result_dtype(self.input);
        let float = self.input.is_float();
        let total = |r: &Reducer| r.sum + r.comp;
        let fl = |v: f64| Value::Float(round_to(v, out), out);
        let int = |v: i128| match out {
            Dtype::U64 => Value::UInt(v as u64, out),
            _ => Value::Int(v as i64, out),
        };
        let nan_propagates = float && self.nan_at.is_some();
        let empty = |what: &'static str| Error::EmptyReduction { operation: what };
        Ok(match self.kind {
            Sum | NanSum => (if float { fl(total(self)) } else { int(self.isum) }, None),
            Prod => (if float { fl(self.fprod) } else { int(self.iprod) }, None),
            Mean | NanMean => {
                if self.n == 0 {
                    (fl(f64::NAN), Some("Mean of empty slice"))
                } else if float {
                    // numpy sums float16/float32 in float32: past its range the mean is inf;
                    // otherwise it is the mean of the exact sum, rounded once.
                    let t = total(self);
                    if self.kind == NanMean && self.input == Dtype::F16 {
                        // numpy's nanmean sums float16 in float16, then divides that sum.
                        return Ok((fl(round_to(t, Dtype::F16) / self.n as f64), None));
                    }
                    let overflows = out != Dtype::F64 && round_to(t, Dtype::F32).is_infinite();
                    (fl(if overflows { round_to(t, Dtype::F32) } else { t / self.n as f64 }), None)
                } else {
                    (fl(self.isum as f64 / self.n as f64), None)
                }
            }
            Std | Var => {
                if self.n == 0 {
                    (fl(f64::NAN), Some("Degrees of freedom <= 0 for slice"))
                } else if nan_propagates {
                    (fl(f64::NAN), None)
                } else {
                    let (var, std) = self.variance();
                    (fl(if self.kind == Std { std } else { var }), None)
                }
            }
            Min | Max | NanMin | NanMax => {
                let what = match self.kind {
                    Min => "minimum",
                    NanMin => "fmin",
                    NanMax => "fmax",
                    _ => "maximum",
                };
                if matches!(self.kind, NanMin | NanMax) && self.best.is_none() && self.nan_at.is_some() {
                    return Ok((fl(f64::NAN), Some("All-NaN slice encountered")));
                }
                let (bf, bi, _) = self.best.ok_or(empty(what))?;
                if matches!(self.kind, Min | Max) && nan_propagates {
                    (fl(f64::NAN), None)
                } else if float {
                    (fl(bf), None)
                } else if out == Dtype::Bool {
                    (Value::Bool(bi != 0), None)
                } else if matches!(out, Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64) {
                    (Value::UInt(bi as u64, out), None)
                } else {
                    (Value::Int(bi as i64, out), None)
                }
            }
            ArgMin | ArgMax => {
                let what = if self.kind == ArgMin { "argmin" } else { "argmax" };
                let (_, _, k) = self.best.ok_or(empty(what))?;
                let k = if float { self.nan_at.unwrap_or(k) } else { k };
                (Value::Int(k as i64, Dtype::I64), None)
            }
            CountNonzero => (Value::Int(self.count as i64, Dtype::I64), None),
            Any => (Value::Bool(self.count > 0), None),
            All => (Value::Bool(self.count == self.n), None),
        })
    }
}

impl Reducer {
    /// `(var, std)` from the second pass: the corrected two-pass formula, `(Σd² - (Σd)²/n) / n`
    /// with `d` the deviations from the rounded mean, its sums compensated and the division and
    /// square root carried in double-double, so both are (nearly always) the correctly rounded
    /// values: at least as accurate as numpy's mean-then-pairwise-sum. numpy sums float16 and
    /// float32 squares in their own type: a sum of squares past the type's range is an infinity.
    fn variance(&self) -> (f64, f64) {
        let n = self.n as f64;
        let (s1, s2) = (self.sum + self.comp, self.sq + self.sqc);
        if s2.is_nan() {
            return (f64::NAN, f64::NAN);
        }
        if round_to(s2, self.input).is_infinite() || self.mean.is_some_and(f64::is_infinite) {
            return (f64::INFINITY, f64::INFINITY);
        }
        // s2 + lo is the numerator in double-double.
        let lo = (self.sq - s2) + self.sqc - s1 * s1 / n;
        let hi = s2 / n;
        let var_lo = (hi.mul_add(-n, s2) + lo) / n;
        let var = hi + var_lo;
        let std0 = var.sqrt();
        if std0 == 0.0 || !std0.is_finite() {
            return (var, std0);
        }
        let std = std0 + (std0.mul_add(-std0, hi) + var_lo) / (2.0 * std0);
        if self.scale != 1.0 {
            // Back from the second pass's scale (exact for std; var rounds once more if subnormal).
            return (var / self.scale / self.scale, std / self.scale);
        }
        (var, std)
    }
}

/// `v` rounded to the float dtype `d` (kept in an `f64`).
fn round_to(v: f64, d: Dtype) -> f64 {
    match d {
        Dtype::F16 => f16::from_f64(v).to_f64(),
        Dtype::F32 => v as f32 as f64,
        _ => v,
    }
}

/// Reduces the values in `bytes` (elements of `input`'s storage type), both passes.
///
/// # Errors
///
/// As [`Reducer::update`] and [`Reducer::finish`].
pub fn reduce_bytes(kind: Reduction, input: Dtype, bytes: &[u8]) -> Result<(Value, Option<&'static str>)> {
    let mut r = Reducer::new(kind, input);
    r.update(bytes, 0)?;
    if r.two_passes() {
        r.second_pass();
        r.update(bytes, 0)?;
    }
    r.finish()
}
