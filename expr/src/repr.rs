//! numpy 2's `repr` of an array (`array([ 6., 22., 38.])`): its default print options
//! (precision 8, `maxprec`, line width 75, summarised beyond 1,000 elements with 3 edge items),
//! the element formats (floats positional or scientific as numpy decides, padded to a common
//! width), nested brackets, and the `shape=` / `dtype=` extras numpy adds.

use crate::{Dtype, Value};

/// numpy's `linewidth`.
const LINE_WIDTH: usize = 75;
/// numpy's `threshold`: more elements than this are summarised.
const THRESHOLD: u64 = 1000;
/// numpy's `edgeitems`.
const EDGE: u64 = 3;
/// numpy's `precision`.
const PRECISION: usize = 8;
/// `array(`: its length is the indentation of continuation lines.
const PREFIX: &str = "array(";

/// numpy's `repr` of the array of `dtype` and `shape` whose elements (C order, little-endian)
/// are `bytes`; a 0-d array is numpy's scalar (`np.float64(2.5)`), as numpy's reductions
/// return one. `None` when `bytes` are not the shape's elements.
pub fn array_repr(dtype: Dtype, shape: &[u64], bytes: &[u8]) -> Option<String> {
    let size = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    if bytes.len() as u64 != size.checked_mul(dtype.size() as u64)? {
        return None;
    }
    // Only the elements shown are decoded (a summarised array shows a few of millions).
    let sz = dtype.size();
    let value = |k: u64| Value::from_le_bytes(dtype, &bytes[k as usize * sz..(k as usize + 1) * sz]);
    if shape.is_empty() {
        return Some(value(0)?.repr());
    }
    let summary = size > THRESHOLD;
    let lst = if size == 0 {
        "[]".to_string()
    } else {
        let shown = shown_indices(shape, summary);
        let format = Format::new(dtype, &shown.iter().map(|&k| value(k)).collect::<Option<Vec<_>>>()?);
        let layout = Layout { shape, value: &value, format: &format, summary };
        layout.recurse(&mut Vec::new(), &" ".repeat(PREFIX.len() + 1), LINE_WIDTH - 1)
    };
    let mut extras = Vec::new();
    if (size == 0 && shape != [0]) || summary {
        extras.push(format!("shape={}", python_tuple(shape)));
    }
    if !matches!(dtype, Dtype::F64 | Dtype::I64 | Dtype::Bool) || size == 0 {
        extras.push(format!("dtype={}", dtype.name()));
    }
    if extras.is_empty() {
        return Some(format!("{PREFIX}{lst})"));
    }
    let arr = format!("{PREFIX}{lst},");
    let extra = format!("{})", extras.join(", "));
    let last_line = arr.len() - arr.rfind('\n').map_or(0, |k| k + 1);
    let spacer =
        if last_line + extra.len() + 1 > LINE_WIDTH { format!("\n{}", " ".repeat(PREFIX.len())) } else { " ".into() };
    Some(format!("{arr}{spacer}{extra}"))
}

/// A shape as Python prints a tuple: `(2000,)`, `(0, 3)`.
fn python_tuple(shape: &[u64]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// Indices along one axis of length `dim` that numpy shows.
fn shown_along(dim: u64, summary: bool) -> Vec<u64> {
    if summary && dim > 2 * EDGE {
        (0..EDGE).chain(dim - EDGE..dim).collect()
    } else {
        (0..dim).collect()
    }
}

/// Flat indices of the elements numpy shows (every one unless summarised).
fn shown_indices(shape: &[u64], summary: bool) -> Vec<u64> {
    let mut flat = vec![0u64];
    for &dim in shape {
        flat = flat.iter().flat_map(|&f| shown_along(dim, summary).into_iter().map(move |i| f * dim + i)).collect();
    }
    flat
}

/// numpy's nested-bracket layout (`_formatArray`).
struct Layout<'a> {
    shape: &'a [u64],
    /// The element at a flat index (every shown one decodes: checked before the layout).
    value: &'a dyn Fn(u64) -> Option<Value>,
    format: &'a Format,
    summary: bool,
}

impl Layout<'_> {
    fn element(&self, index: &[u64]) -> String {
        let flat = index.iter().zip(self.shape).fold(0u64, |f, (&i, &d)| f * d + i);
        self.format.one((self.value)(flat).expect("the shown elements were decoded before the layout"))
    }

    fn recurse(&self, index: &mut Vec<u64>, hanging: &str, width: usize) -> String {
        let axes_left = self.shape.len() - index.len();
        if axes_left == 0 {
            return self.element(index);
        }
        let next_hanging = format!("{hanging} ");
        let dim = self.shape[index.len()];
        let shown = shown_along(dim, self.summary);
        let gap = shown.len() as u64 != dim;
        let item = |i: u64, index: &mut Vec<u64>| {
            index.push(i);
            let s = self.recurse(index, &next_hanging, width - 1);
            index.pop();
            s
        };
        let mut s = String::new();
        if axes_left == 1 {
            let elem_width = width - 1;
            let mut line = hanging.to_string();
            for (k, &i) in shown.iter().enumerate() {
                if gap && k as u64 == EDGE {
                    extend_line(&mut s, &mut line, "...", elem_width, hanging);
                    line.push_str(", ");
                }
                let word = item(i, index);
                extend_line(&mut s, &mut line, &word, elem_width, hanging);
                if k + 1 < shown.len() {
                    line.push_str(", ");
                }
            }
            s.push_str(&line);
        } else {
            let sep = format!(",{}", "\n".repeat(axes_left - 1));
            for (k, &i) in shown.iter().enumerate() {
                if gap && k as u64 == EDGE {
                    s.push_str(&format!("{hanging}...{sep}"));
                }
                s.push_str(hanging);
                s.push_str(&item(i, index));
                if k + 1 < shown.len() {
                    s.push_str(&sep);
                }
            }
        }
        format!("[{}]", &s[hanging.len()..])
    }
}

/// numpy's `_extendLine`: wraps before `word` when the line would pass `width`.
fn extend_line(s: &mut String, line: &mut String, word: &str, width: usize, prefix: &str) {
    if line.len() + word.len() > width && line.len() > prefix.len() {
        s.push_str(line.trim_end());
        s.push('\n');
        *line = prefix.to_string();
    }
    line.push_str(word);
}

/// How every element is printed, decided from the elements shown (numpy's `FloatingFormat`,
/// `IntegerFormat`, `BoolFormat`).
enum Format {
    Bool,
    Int { width: usize },
    Float { exp: bool, pad_left: usize, pad_right: usize, precision: usize, exp_size: usize },
}

impl Format {
    fn new(dtype: Dtype, shown: &[Value]) -> Format {
        if dtype == Dtype::Bool {
            return Format::Bool;
        }
        if !dtype.is_float() {
            let width = shown.iter().map(|v| int_text(*v).len()).max().unwrap_or(0);
            return Format::Int { width };
        }
        let floats: Vec<f64> = shown.iter().map(|v| float_of(*v)).collect();
        let finite: Vec<f64> = floats.iter().copied().filter(|v| v.is_finite()).collect();
        let nonzero: Vec<f64> = finite.iter().map(|v| v.abs()).filter(|&v| v != 0.0).collect();
        let exp = match (nonzero.iter().copied().reduce(f64::max), nonzero.iter().copied().reduce(f64::min)) {
            // numpy 2's cutoff: 10 ** min(8, finfo(dtype).precision).
            (Some(max), Some(min)) => max >= cutoff(dtype) || min < 0.0001 || max / min > 1000.0,
            _ => false,
        };
        let (mut pad_left, pad_right, precision, exp_size) = if finite.is_empty() {
            (0, 0, 0, 0)
        } else if exp {
            let parts: Vec<(String, String, i32)> = finite.iter().map(|&v| scientific(v, dtype)).collect();
            let exp_size = parts.iter().map(|p| exp_digits(p.2).len()).max().unwrap_or(2);
            let precision = parts.iter().map(|p| p.1.len()).max().unwrap_or(0);
            let pad_left = parts.iter().map(|p| p.0.len()).max().unwrap_or(1);
            (pad_left, exp_size + 2 + precision, precision, exp_size)
        } else {
            let parts: Vec<(String, String)> = finite.iter().map(|&v| positional(v, dtype)).collect();
            let pad_left = parts.iter().map(|p| p.0.len()).max().unwrap_or(1);
            let pad_right = parts.iter().map(|p| p.1.len()).max().unwrap_or(0);
            (pad_left, pad_right, 0, 0)
        };
        if finite.len() != floats.len() {
            let neginf = usize::from(floats.iter().any(|v| v.is_infinite() && *v < 0.0));
            let offset = pad_right + 1;
            pad_left = pad_left.max(3usize.saturating_sub(offset)).max((3 + neginf).saturating_sub(offset));
        }
        Format::Float { exp, pad_left, pad_right, precision, exp_size }
    }

    fn one(&self, v: Value) -> String {
        match *self {
            Format::Bool => if matches!(v, Value::Bool(true)) { " True" } else { "False" }.to_string(),
            Format::Int { width } => format!("{:>width$}", int_text(v)),
            Format::Float { exp, pad_left, pad_right, precision, exp_size } => {
                let (f, d) = (float_of(v), v.dtype());
                if !f.is_finite() {
                    let t = if f.is_nan() {
                        "nan"
                    } else if f > 0.0 {
                        "inf"
                    } else {
                        "-inf"
                    };
                    return format!("{t:>w$}", w = pad_left + pad_right + 1);
                }
                if exp {
                    let (mut int, mut frac, mut e) = scientific(f, d);
                    if frac.len() < precision {
                        // numpy's `min_digits`: more digits of the exact value, not zeros (its
                        // first digit and exponent too: 4e-06 may be 3.99e-06).
                        (int, frac, e) = exact_digits(f, precision).unwrap_or((int, frac, e));
                    }
                    let sign = if e < 0 { '-' } else { '+' };
                    format!("{int:>pad_left$}.{frac:0<precision$}e{sign}{:0>exp_size$}", exp_digits(e))
                } else {
                    let (int, frac) = positional(f, d);
                    format!("{int:>pad_left$}.{frac:<pad_right$}")
                }
            }
        }
    }
}

/// `v` in scientific notation with `precision` digits after the point, from its exact value:
/// (sign and first digit, the other digits, the exponent).
fn exact_digits(v: f64, precision: usize) -> Option<(String, String, i32)> {
    let t = format!("{:.*e}", precision, v.abs());
    let (m, e) = t.split_once('e')?;
    let (first, rest) = m.split_once('.')?;
    let sign = if v.is_sign_negative() { "-" } else { "" };
    Some((format!("{sign}{first}"), rest.to_string(), e.parse().ok()?))
}

/// numpy 2's magnitude from which an array of `d` prints in scientific notation.
fn cutoff(d: Dtype) -> f64 {
    match d {
        Dtype::F16 => 1e3,
        Dtype::F32 => 1e6,
        _ => 1e8,
    }
}

fn int_text(v: Value) -> String {
    match v {
        Value::Int(i, _) => i.to_string(),
        Value::UInt(u, _) => u.to_string(),
        Value::Bool(b) => u8::from(b).to_string(),
        Value::Float(f, _) => f.to_string(),
    }
}

fn float_of(v: Value) -> f64 {
    match v {
        Value::Float(f, _) => f,
        Value::Int(i, _) => i as f64,
        Value::UInt(u, _) => u as f64,
        Value::Bool(b) => f64::from(u8::from(b)),
    }
}

/// The digits of the exponent `e`, at least two.
fn exp_digits(e: i32) -> String {
    format!("{:02}", e.unsigned_abs())
}

/// The shortest decimal digits that read back as `v` in dtype `d`, and the exponent of the
/// first: `(digits, exp)` with `v = 0.digits * 10^(exp + 1)`, sign dropped.
fn shortest(v: f64, d: Dtype) -> (String, i32) {
    let sci = crate::value::shortest_sci(v.abs(), d);
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    (if digits.is_empty() { "0".into() } else { digits.to_string() }, exp.parse().expect("an integer exponent"))
}

/// `v` positional, unique digits cut to [`PRECISION`] fractional ones: (sign and integer part,
/// fractional digits).
fn positional(v: f64, d: Dtype) -> (String, String) {
    let (digits, exp) = shortest(v, d);
    let sign = if v.is_sign_negative() { "-" } else { "" };
    let frac_len = (digits.len() as i32 - 1 - exp).max(0) as usize;
    let text = if frac_len > PRECISION {
        let t = format!("{:.*}", PRECISION, v.abs());
        t.trim_end_matches('0').to_string()
    } else if exp >= 0 {
        let e = exp as usize;
        if digits.len() > e + 1 {
            format!("{}.{}", &digits[..e + 1], &digits[e + 1..])
        } else {
            format!("{}{}.", digits, "0".repeat(e + 1 - digits.len()))
        }
    } else {
        format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    (format!("{sign}{int}"), frac.to_string())
}

/// `v` scientific, unique digits cut to [`PRECISION`] fractional ones: (sign and first digit,
/// the other digits, the exponent).
fn scientific(v: f64, d: Dtype) -> (String, String, i32) {
    let (mut digits, mut exp) = shortest(v, d);
    if digits.len() > PRECISION + 1 {
        let t = format!("{:.*e}", PRECISION, v.abs());
        let (m, e) = t.split_once('e').expect("{:e} has an exponent");
        digits = m.replace('.', "").trim_end_matches('0').to_string();
        exp = e.parse().expect("an integer exponent");
    }
    let sign = if v.is_sign_negative() { "-" } else { "" };
    (format!("{sign}{}", &digits[..1]), digits[1..].to_string(), exp)
}
