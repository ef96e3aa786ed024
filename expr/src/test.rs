#![cfg(test)]
//! Unit tests of the expression compiler and evaluator. The expected values are numpy 2.4's;
//! tests/numpy_diff.rs checks random expressions against numpy itself.

use super::*;

/// Evaluates `src` over `xs` (input type `In`) and returns the output dtype and values as f64.
fn run<In: Num>(src: &str, xs: &[In]) -> (Dtype, Vec<f64>) {
    let prog = Program::compile_for(src, In::DTYPE).unwrap_or_else(|e| panic!("{src}: {e}"));
    let d = prog.output_dtype();
    let spec_out = |f: &dyn Fn(&Program) -> Vec<f64>| f(&prog);
    let vals = spec_out(&|p: &Program| match p.output_dtype() {
        Dtype::Bool => out::<In, u8>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::I8 => out::<In, i8>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::I16 => out::<In, i16>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::I32 => out::<In, i32>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::I64 => out::<In, i64>(p, xs).into_iter().map(|v| v as f64).collect(),
        Dtype::U8 => out::<In, u8>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::U16 => out::<In, u16>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::U32 => out::<In, u32>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::U64 => out::<In, u64>(p, xs).into_iter().map(|v| v as f64).collect(),
        Dtype::F16 => out::<In, half::f16>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::F32 => out::<In, f32>(p, xs).into_iter().map(f64::from).collect(),
        Dtype::F64 => out::<In, f64>(p, xs),
    });
    (d, vals)
}

fn out<In: Num, Out: Num>(p: &Program, xs: &[In]) -> Vec<Out> {
    let mut ys = vec![Out::zeroed(); xs.len()];
    p.eval_slice(xs, &mut ys, 0).unwrap();
    ys
}

fn f64s(src: &str, x: f64) -> f64 {
    run(src, &[x]).1[0]
}

#[test]
fn precedence_and_associativity_follow_python() {
    assert_eq!(f64s("1 + 2 * 3 + x", 0.0), 7.0);
    assert_eq!(f64s("-x ** 2", 3.0), -9.0);
    assert_eq!(f64s("2 ** 3 ** 2 + x", 0.0), 512.0);
    assert_eq!(f64s("(1 + 2) * x", 3.0), 9.0);
    assert_eq!(f64s("x - 1 - 1", 5.0), 3.0);
    assert_eq!(f64s("x // 2", 7.0), 3.0);
}

#[test]
fn chained_comparisons_mean_and_and_give_bool() {
    let (d, v) = run("0 < x < 2", &[-1.0f64, 1.0, 3.0]);
    assert_eq!(d, Dtype::Bool);
    assert_eq!(v, [0.0, 1.0, 0.0], "(0 < x) & (x < 2), not ((0 < x) < 2)");
    let (d, v) = run("(x > 0) & (x < 2) | (x == 5)", &[1.0f64, 5.0, 3.0]);
    assert_eq!((d, v), (Dtype::Bool, vec![1.0, 1.0, 0.0]));
    let (_, v) = run("~(x > 0)", &[1.0f64, -1.0]);
    assert_eq!(v, [0.0, 1.0]);
    let msg = Program::compile("x & 1.5").unwrap_err().to_string();
    assert!(msg.contains("bitwise_and"), "{msg}");
}

#[test]
fn integers_stay_integers_and_wrap_like_numpy() {
    let big = (1i64 << 53) + 1;
    let p = Program::compile_for("x + 1", Dtype::I64).unwrap();
    assert_eq!(p.output_dtype(), Dtype::I64);
    assert_eq!(out::<i64, i64>(&p, &[big]), [big + 1], "no trip through f64");
    let (d, v) = run("x + 1", &[255u8]);
    assert_eq!((d, v), (Dtype::U8, vec![0.0]), "uint8 wraps");
    let (d, v) = run("x // 0 + x % 0", &[7i32]);
    assert_eq!((d, v), (Dtype::I32, vec![0.0]));
    assert_eq!(run("x / 2", &[7i32]), (Dtype::F64, vec![3.5]));
    assert_eq!(run("sqrt(x)", &[4u8]).0, Dtype::F16);
    assert_eq!(run("sqrt(x)", &[4i16]).0, Dtype::F32);
    assert_eq!(run("x * 0.5", &[3.0f32]).0, Dtype::F32, "weak float keeps float32");
    assert_eq!(run("x * 0.5", &[3i32]).0, Dtype::F64);
    assert_eq!(run("x + i", &[3u8]).0, Dtype::I64);
    assert_eq!(run("-x", &[1u8]).1, [255.0]);
    assert_eq!(run("x ** 3", &[-3i8]).1, [-27.0]);
    let msg = Program::compile_for("x + 300", Dtype::U8).unwrap_err().to_string();
    assert!(msg.contains("Python integer 300 out of bounds for uint8"), "{msg}");
    assert_eq!(run("x < 300", &[7u8]).1, [1.0], "numpy 2 compares out-of-range integers");
}

#[test]
fn float_details_follow_numpy() {
    let v = run("1 / (x % 2)", &[-4.0f64]).1;
    assert_eq!(v, [f64::INFINITY], "a zero remainder takes the divisor's sign");
    assert_eq!(f64s("x % -3", 7.0), -2.0);
    assert!(f64s("x + nan", 1.0).is_nan());
    assert_eq!(f64s("x - inf", 1.0), f64::NEG_INFINITY);
    assert_eq!(f64s("round(x)", 2.5), 2.0);
    assert!(f64s("minimum(x, 1)", f64::NAN).is_nan());
    assert_eq!(f64s("where(x > 1, 10, 20)", 2.0), 10.0);
    assert_eq!(f64s("clip(x, 0, 1)", 5.0), 1.0);
    assert_eq!(f64s("arctan2(1, 1) * 4 + x", 0.0), std::f64::consts::PI);
    assert_eq!(run("isnan(x)", &[f64::NAN, 1.0]), (Dtype::Bool, vec![1.0, 0.0]));
}

#[test]
fn every_numexpr_function_name_compiles() {
    for f in [
        "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "asin", "acos", "atan", "asinh", "acosh",
        "atanh", "log1p", "expm1", "trunc", "sign", "isnan", "isinf", "isfinite", "sqrt", "exp", "log", "log10", "sin",
        "cos", "tan", "sinh", "cosh", "tanh", "floor", "ceil", "round", "abs",
    ] {
        Program::compile(&format!("{f}(x)")).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    for f in ["arctan2", "hypot", "fmod", "copysign", "nextafter", "atan2", "pow", "power", "minimum", "maximum"] {
        Program::compile(&format!("{f}(x, 2)")).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    assert_eq!(f64s("nextafter(x, 2)", 1.0), 1.0 + f64::EPSILON);
    assert_eq!(f64s("fmod(x, 3)", -7.0), -1.0);
}

#[test]
fn deep_nesting_is_an_error_and_long_sums_compile() {
    let deep = format!("{}x{}", "(".repeat(7000), ")".repeat(7000));
    let msg = Program::compile(&deep).unwrap_err().to_string();
    assert!(msg.contains("too many nested parentheses"), "{msg}");
    let minus = format!("{}x", "-".repeat(100_000));
    assert!(Program::compile(&minus).unwrap_err().to_string().contains("too many nested"));
    let ok = format!("{}x{}", "(".repeat(150), ")".repeat(150));
    assert_eq!(f64s(&ok, 2.0), 2.0);
    let long = vec!["x"; 3000].join(" + ");
    let p = Program::compile(&long).unwrap();
    assert_eq!(out::<f64, f64>(&p, &[1.5]), [4500.0]);
    assert!(p.n_regs < 8, "registers are reused: {}", p.n_regs);
}

#[test]
fn errors_point_at_the_position_and_name_the_unknown() {
    let msg = |s: &str| Program::compile(s).unwrap_err().to_string();
    assert!(msg("sqrt(x) * ").contains("column 11"), "{}", msg("sqrt(x) * "));
    assert!(msg("foo(x)").contains("unknown function 'foo'"));
    assert!(msg("x + y").contains("unknown variable 'y'"));
    assert!(msg("x + y").contains("column 5"));
    assert!(msg("(x + 1").contains("expected ')'"));
    assert!(msg("x $ 2").contains("unexpected character '$'"));
    assert!(msg("atan2(x)").contains("takes 2 arguments"));
    assert!(msg("").contains("empty"));
}

#[test]
fn block_evaluation_matches_element_by_element() {
    let src = "where(x > 500, sqrt(x) * 1.5 + 0.25, sin(x) ** 2 - i % 7)";
    let prog = Program::compile(src).unwrap();
    let xs: Vec<f64> = (0..1000).map(|k| k as f64 + 0.5).collect();
    let mut ys = vec![0f64; xs.len()];
    prog.eval_slice(&xs, &mut ys, 100).unwrap();
    for (k, (x, y)) in xs.iter().zip(&ys).enumerate() {
        let want = if *x > 500.0 { x.sqrt() * 1.5 + 0.25 } else { x.sin() * x.sin() - ((100 + k) % 7) as f64 };
        assert_eq!(y.to_bits(), want.to_bits(), "{k}");
    }
}

#[test]
fn opcodes_decode_exactly_and_malformed_programs_are_refused() {
    for op in Op::ALL {
        assert_eq!(Op::try_from(op as u32), Ok(op));
    }
    for code in [0, 5, 9, 18, 40, 44, 49, 69, 76, 79, 82, u32::MAX] {
        assert_eq!(Op::try_from(code), Err(code), "code {code} is unassigned");
    }
    let good = Program::compile("x * 2 + 1").unwrap().to_bytes();
    assert!(Program::from_bytes(&good).is_ok());
    let mut b = good.clone();
    b[HEADER..HEADER + 4].copy_from_slice(&49u32.to_le_bytes()); // between ADD..NE: unassigned
    assert!(Program::from_bytes(&b).is_err());
    assert!(Program::from_bytes(&good[..10]).is_err());
    let mut b = good.clone();
    let last = b.len() - 32;
    b[last + 8..last + 12].copy_from_slice(&1000u32.to_le_bytes()); // destination out of range
    assert!(Program::from_bytes(&b).is_err());
    let mut b = good;
    b[HEADER + 32 + 4] = 200; // an unknown type code
    assert!(Program::from_bytes(&b).is_err());
}

#[test]
fn constants_survive_every_block() {
    // The constants of `where` are computed once; no later instruction may reuse their registers.
    let xs: Vec<f64> = (0..3 * BLOCK + 7).map(|k| k as f64 - 300.0).collect();
    let (d, v) = run("where(isnan(x / x), 1, 0) + isinf(1 / x) + isfinite(x)", &xs);
    assert_eq!(d, Dtype::I64);
    for (x, y) in xs.iter().zip(&v) {
        assert_eq!(*y, if *x == 0.0 { 3.0 } else { 1.0 }, "x = {x}");
    }
}

#[test]
fn fused_epilogues_and_sincos_compute_what_separate_operations_do() {
    let xs: Vec<f64> = (0..2 * BLOCK + 3).map(|k| k as f64 * 0.37 - 100.0).collect();
    for (src, f) in [
        ("sqrt(x) * 1.5 + 0.25", (|x: f64| x.sqrt() * 1.5 + 0.25) as fn(f64) -> f64),
        ("0.25 + 1.5 * sqrt(x)", |x: f64| 0.25 + 1.5 * x.sqrt()),
        ("exp(x) + 2", |x: f64| x.exp() + 2.0),
        ("sin(x) * cos(x) + exp(-x * x)", |x: f64| x.sin() * x.cos() + (-x * x).exp()),
        ("cos(x) - sin(x) * 2", |x: f64| x.cos() - x.sin() * 2.0),
        ("sqrt(x) * 3 + sqrt(x)", |x: f64| x.sqrt() * 3.0 + x.sqrt()),
    ] {
        let p = Program::compile(src).unwrap();
        let (_, v) = run(src, &xs);
        for (x, y) in xs.iter().zip(&v) {
            assert_eq!(y.to_bits(), f(*x).to_bits(), "{src} at {x}: {:?}", p.ins);
        }
    }
    let w1 = Program::compile("sqrt(x) * 1.5 + 0.25").unwrap();
    assert_eq!(w1.ins.iter().filter(|i| i.op != Op::LoadX).count(), 1, "one loop: {:?}", w1.ins);
    let sc = Program::compile("sin(x) * cos(x)").unwrap();
    assert!(sc.ins.iter().any(|i| i.op == Op::SinCos), "{:?}", sc.ins);
}

#[test]
fn int64_and_uint64_compare_exactly_as_numpy_2_does() {
    let big = (1u64 << 62) + 1;
    let p = Program::compile_for("x == i + 4611686018427387904", Dtype::U64).unwrap();
    let mut y = [0u8; 2];
    p.eval_slice(&[big, 1u64 << 62], &mut y, 1).unwrap();
    assert_eq!(y, [1, 0], "float64 would call both equal");
    let q = Program::compile_for("x > i - 1", Dtype::U64).unwrap();
    let mut y = [0u8; 3];
    q.eval_slice(&[0u64, u64::MAX, 5], &mut y, 0).unwrap();
    assert_eq!(y, [1, 1, 1], "x > -1 for every uint64");
}

#[test]
fn literal_arithmetic_is_pythons() {
    // Python floors: 1 // -7 == -1, 1 % -7 == -6, -1 // -7 == 0, -1 % -7 == -1, 7 // 2 == 3.
    for (src, want) in
        [("1 // -7", -1.0), ("1 % -7", -6.0), ("-1 // -7", 0.0), ("-1 % -7", -1.0), ("7 // 2", 3.0), ("-7 % 2", 1.0)]
    {
        assert_eq!(f64s(&format!("x * 0 + ({src})"), 1.0), want, "{src}");
    }
    assert!(Program::compile("x + (-2.0) ** 0.5").unwrap_err().to_string().contains("complex"));
    assert!(Program::compile("x + 1 // 0").unwrap_err().to_string().contains("ZeroDivisionError"));
}

#[test]
fn unary_plus_is_the_identity_except_on_bool() {
    assert_eq!(run("+x", &[-2i8, 3]), (Dtype::I8, vec![-2.0, 3.0]));
    assert_eq!(run("+3 + x", &[1u8]), (Dtype::U8, vec![4.0]));
    assert_eq!(run("-+x", &[2.5f64]), (Dtype::F64, vec![-2.5]));
    let msg = Program::compile_for("+x", Dtype::Bool).unwrap_err().to_string();
    assert!(msg.contains("positive"), "{msg}");
}

#[test]
fn numexpr_names_signbit_shifts_and_complex_parts_follow_numpy() {
    let (d, v) = run("signbit(x)", &[-0.0f64, 1.0, -2.0, -f64::NAN]);
    assert_eq!((d, v), (Dtype::Bool, vec![1.0, 0.0, 1.0, 1.0]));
    assert_eq!(run("signbit(x)", &[-3i8, 4]), (Dtype::Bool, vec![1.0, 0.0]));
    assert_eq!(run("ones_like(x)", &[7u16]), (Dtype::U16, vec![1.0]));
    assert_eq!(run("imag(x)", &[7.5f32]), (Dtype::F32, vec![0.0]));
    assert_eq!(run("real(x) + conj(x) + copy(x)", &[2i32]), (Dtype::I32, vec![6.0]));
    // numpy: `1 << 2 + 1` is `1 << 3`; `x & 3 << 1` is `x & 6`.
    assert_eq!(run("1 << x + 1", &[2i64]), (Dtype::I64, vec![8.0]));
    assert_eq!(run("x & 3 << 1", &[7u8]), (Dtype::U8, vec![6.0]));
    assert_eq!(run("x << 8", &[1i8, -1]), (Dtype::I8, vec![0.0, 0.0]));
    assert_eq!(run("x >> 9", &[-3i8, 5]), (Dtype::I8, vec![-1.0, 0.0]));
    assert_eq!(run("x >> 1", &[200u8]), (Dtype::U8, vec![100.0]));
    assert!(Program::compile("x << 1").is_err(), "numpy's left_shift has no float loop");
}

#[test]
fn powers_of_a_nan_keep_its_sign_like_numpy() {
    let n = -f64::NAN;
    for src in ["x ** 3", "x ** -1", "x ** 2.5", "pow(x, 3.0)"] {
        let (_, v) = run(src, &[n]);
        assert!(v[0].is_nan() && v[0].is_sign_negative(), "{src}: {}", v[0]);
    }
    assert_eq!(f64s("x ** 0", f64::NAN), 1.0);
    assert_eq!(f64s("1 ** x + 0", f64::NAN), 1.0);
}

#[test]
fn python_integers_beyond_64_bits_are_weak_scalars_like_numpy() {
    assert_eq!(run("x + 2**64", &[1.0f64]), (Dtype::F64, vec![18446744073709551617.0]));
    assert_eq!(run("x * 10**30", &[1.5f32]), (Dtype::F32, vec![1.500000098129063e30]));
    assert_eq!(run("x < 2**64", &[i64::MAX]), (Dtype::Bool, vec![1.0]));
    assert_eq!(run("x == -2**70", &[0u64]), (Dtype::Bool, vec![0.0]));
    assert_eq!(run("2**64 - 2**64 + x", &[-3i8]), (Dtype::I8, vec![-3.0]));
    assert_eq!(run("clip(x, 0, 2**64)", &[-3i16, 9]), (Dtype::I16, vec![0.0, 9.0]));
    assert_eq!(run("x + 2**63", &[1u64]), (Dtype::U64, vec![9223372036854775809.0]));
    for (src, d) in
        [("x + 2**64", Dtype::I64), ("x + 2**64", Dtype::U64), ("x + 2**63", Dtype::I8), ("x < 2**64", Dtype::Bool)]
    {
        let msg = Program::compile_for(src, d).unwrap_err().to_string();
        assert!(msg.contains("OverflowError"), "{src} on {d}: {msg}");
    }
    assert!(Program::compile("x + 2**127").is_err(), "beyond i128: refused in words");
}

#[test]
fn python_literals_true_false_hex_and_underscores() {
    assert_eq!(run("x + 0x10 + 0o10 + 0b10 + 1_000", &[0i64]), (Dtype::I64, vec![1026.0]));
    assert_eq!(run("x + True", &[1i8]), (Dtype::I8, vec![2.0]));
    assert_eq!(run("x & False", &[true as u8]).0, Dtype::U8);
    assert_eq!(run("where(x > 0, True, False)", &[1.0f64, -1.0]), (Dtype::Bool, vec![1.0, 0.0]));
    assert_eq!(f64s("x * 1_0.5", 2.0), 21.0);
    for bad in ["x + 1__0", "x + 1_", "x + 007", "x + 0x", "x + 0b2"] {
        assert!(Program::compile(bad).is_err(), "{bad} is a Python syntax error");
    }
}
