//! The value of a reduction with numpy's dtype: its bytes and numpy 2's `repr`.

use half::f16;

use crate::Dtype;

/// The value of a reduction, with numpy's dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// `np.True_` / `np.False_`
    Bool(bool),
    /// A signed integer of the dtype.
    Int(i64, Dtype),
    /// An unsigned integer of the dtype.
    UInt(u64, Dtype),
    /// A float of the dtype (rounded to it).
    Float(f64, Dtype),
}

impl Value {
    /// The value's dtype.
    pub fn dtype(&self) -> Dtype {
        match *self {
            Value::Bool(_) => Dtype::Bool,
            Value::Int(_, d) | Value::UInt(_, d) | Value::Float(_, d) => d,
        }
    }

    /// The value's bytes as numpy stores it (little-endian).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match *self {
            Value::Bool(b) => vec![u8::from(b)],
            Value::Int(v, d) => v.to_le_bytes()[..d.size()].to_vec(),
            Value::UInt(v, d) => v.to_le_bytes()[..d.size()].to_vec(),
            Value::Float(v, Dtype::F16) => f16::from_f64(v).to_le_bytes().to_vec(),
            Value::Float(v, Dtype::F32) => (v as f32).to_le_bytes().to_vec(),
            Value::Float(v, _) => v.to_le_bytes().to_vec(),
        }
    }

    /// The value of `dtype` stored little-endian in `bytes` (`None` if too short).
    pub fn from_le_bytes(dtype: Dtype, bytes: &[u8]) -> Option<Value> {
        let b = bytes.get(..dtype.size())?;
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        let u = u64::from_le_bytes(w);
        let bits = 8 * dtype.size() as u32;
        Some(match dtype {
            Dtype::Bool => Value::Bool(u != 0),
            Dtype::F16 => Value::Float(f16::from_bits(u as u16).to_f64(), dtype),
            Dtype::F32 => Value::Float(f32::from_bits(u as u32) as f64, dtype),
            Dtype::F64 => Value::Float(f64::from_bits(u), dtype),
            d if d.is_signed_int() => Value::Int(((u << (64 - bits)) as i64) >> (64 - bits), d),
            d => Value::UInt(u, d),
        })
    }

    /// numpy 2's `repr` of the value: `np.float64(2.5)`, `np.int64(3)`, `np.True_`.
    pub fn repr(&self) -> String {
        match *self {
            Value::Bool(true) => "np.True_".to_string(),
            Value::Bool(false) => "np.False_".to_string(),
            Value::Int(v, d) => format!("np.{}({v})", d.name()),
            Value::UInt(v, d) => format!("np.{}({v})", d.name()),
            Value::Float(v, d) => format!("np.{}({})", d.name(), python_float(v, d)),
        }
    }
}

/// `v`, a value of the float dtype `d`, in `{:e}` form with the fewest significant digits that
/// read back as the same value of `d` (Dragon4's unique digits, as numpy's): of those, the
/// nearest to `v`, a tie rounded to even (`16892.5625` as float32 is `16892.562`).
pub(crate) fn shortest_sci(v: f64, d: Dtype) -> String {
    let same = |s: &str| match d {
        Dtype::F32 => s.parse::<f32>().ok() == Some(v as f32),
        Dtype::F16 => s.parse::<f64>().ok().map(f16::from_f64) == Some(f16::from_f64(v)),
        _ => s.parse::<f64>().ok() == Some(v),
    };
    let short = match d {
        Dtype::F32 => format!("{:e}", v as f32),
        Dtype::F16 => {
            let h = f16::from_f64(v);
            (1..=5)
                .map(|p| format!("{:.*e}", p - 1, h.to_f64()))
                .find(|s| same(s))
                .unwrap_or_else(|| format!("{:e}", h.to_f64()))
        }
        _ => format!("{v:e}"),
    };
    // The same number of digits from the exact value (`{:.N$e}` rounds it exactly, ties to
    // even): numpy's choice among equally short digits.
    let n = short.split_once('e').map_or(1, |(m, _)| m.chars().filter(char::is_ascii_digit).count());
    let exact = format!("{:.*e}", n.saturating_sub(1), v);
    if same(&exact) {
        exact
    } else {
        short
    }
}

/// Python's `repr` of a float of dtype `d`: the shortest digits that read back as the same
/// value of `d`; positional from 1e-4 to below numpy's cutoff (1e16, 1e6 for float32, 1e3 for
/// float16), else `1e+16` style (numpy 2's scalar repr).
fn python_float(v: f64, d: Dtype) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = shortest_sci(v, d);
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let (neg, mant) = mant.strip_prefix('-').map_or((false, mant), |m| (true, m));
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let sign = if neg { "-" } else { "" };
    let cutoff = match d {
        Dtype::F16 => 1e3,
        Dtype::F32 => 1e6,
        _ => 1e16,
    };
    if v == 0.0 || (v.abs() >= 1e-4 && v.abs() < cutoff) {
        let s = if exp >= 0 {
            let e = exp as usize;
            if digits.len() > e + 1 {
                format!("{}.{}", &digits[..e + 1], &digits[e + 1..])
            } else {
                format!("{}{}.0", digits, "0".repeat(e + 1 - digits.len()))
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits.to_string() };
        format!("{sign}{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}
