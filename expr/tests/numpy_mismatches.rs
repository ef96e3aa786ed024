//! The last mismatches against numpy an independent differential fuzz found (issue 18, items
//! (1)-(9)), each pinned to what numpy 2.4 / Python 3.11 compute (checked by hand with numpy).

use shmpool_expr::{Dtype, Error, Num, Program};

fn compile_error(src: &str, input: Dtype) -> String {
    match Program::compile_for(src, input) {
        Err(Error::InvalidExpression { message, .. }) => message,
        Err(other) => panic!("{src}: unexpected error {other}"),
        Ok(p) => panic!("{src}: compiled to {} (numpy raises)", p.output_dtype()),
    }
}

fn eval<In: Num, Out: Num + Default>(src: &str, input: Dtype, xs: &[In]) -> (Dtype, Vec<Out>) {
    let p = Program::compile_for(src, input).unwrap_or_else(|e| panic!("{src}: {e}"));
    let mut ys = vec![Out::default(); xs.len()];
    p.eval_slice(xs, &mut ys, 0).unwrap_or_else(|e| panic!("{src}: {e}"));
    (p.output_dtype(), ys)
}

#[test]
fn clip_with_an_integer_bound_out_of_range_the_other_way_is_numpys_overflow_error() {
    // np.clip(uint16, x, -13): OverflowError (Python integer -13 out of bounds for uint16).
    let m = compile_error("clip(x, x, -13)", Dtype::U16);
    assert!(m.contains("-13 out of bounds for uint16"), "{m}");
    assert!(compile_error("clip(x, 70000, 5)", Dtype::U16).contains("70000 out of bounds for uint16"));
    // A bound beyond the type's limit on its own side is dropped, as numpy's _clip does.
    let (d, v) = eval::<u16, u16>("clip(x, -1, 100)", Dtype::U16, &[1, 500, 60000]);
    assert_eq!((d, v), (Dtype::U16, vec![1, 100, 100]));
    let (d, v) = eval::<u16, u16>("clip(x, 0, 70000)", Dtype::U16, &[1, 500, 60000]);
    assert_eq!((d, v), (Dtype::U16, vec![1, 500, 60000]));
    let (d, v) = eval::<u8, u8>("clip(x, -1, 300)", Dtype::U8, &[1, 2, 255]);
    assert_eq!((d, v), (Dtype::U8, vec![1, 2, 255]));
    // On bool, numpy's clip promotes to int64 and takes the bounds as they are.
    let (d, v) = eval::<u8, i64>("clip(x, -1, 300)", Dtype::Bool, &[1, 0]);
    assert_eq!((d, v), (Dtype::I64, vec![1, 0]));
}

#[test]
fn where_of_literals_converts_each_argument_on_its_own_and_wraps_as_numpy() {
    // np.where(2.0, 4, 10) is an int64 0-d array (not the condition's float64): + float32
    // gives float64, + int8 int64.
    let (d, v) = eval::<f32, f64>("where(2.0, 4, 10) + x", Dtype::F32, &[1.5, 2.5]);
    assert_eq!((d, v), (Dtype::F64, vec![5.5, 6.5]));
    let (d, v) = eval::<i8, i64>("where(2.0, 4, 10) + x", Dtype::I8, &[1, -2]);
    assert_eq!((d, v), (Dtype::I64, vec![5, 2]));
    // np.where(True, 2**63, 1) wraps to int64's minimum; 2**64 is OverflowError.
    let (d, v) = eval::<f64, i64>("where(True, 2**63, 1) + 0 * i", Dtype::F64, &[0.0]);
    assert_eq!((d, v), (Dtype::I64, vec![i64::MIN]));
    assert!(compile_error("where(True, 2**64, 1) + x", Dtype::F64).contains("too large"));
    let (d, v) = eval::<u8, u8>("where(x > 1, x, 300)", Dtype::U8, &[1, 2, 3]);
    assert_eq!((d, v), (Dtype::U8, vec![44, 2, 3]));
    let (d, v) = eval::<f64, f64>("where(True, 1.5, 1) + 0 * x", Dtype::F64, &[7.0]);
    assert_eq!((d, v), (Dtype::F64, vec![1.5]));
}

#[test]
fn literal_arithmetic_python_refuses_is_refused() {
    for (src, words) in [
        ("x + 10.0 ** 400", "OverflowError"),
        ("x + 2.0 ** 1024", "OverflowError"),
        ("x + 0.5 ** -2000", "OverflowError"),
        ("x + 10 ** 400.0", "OverflowError"),
        ("x + 0 ** -1", "ZeroDivisionError"),
        ("x + 0.0 ** -1", "ZeroDivisionError"),
    ] {
        let m = compile_error(src, Dtype::F64);
        assert!(m.contains(words), "{src}: {m}");
    }
    // What Python computes without complaint stays: float overflow by `*` and `/` is inf, an
    // integer to a negative power underflows to 0.0.
    let (_, v) = eval::<f64, f64>("x + 1e308 * 10 + 2 ** -2000", Dtype::F64, &[0.0]);
    assert_eq!(v, [f64::INFINITY]);
}

#[test]
fn negative_integer_power_raises_even_when_its_value_is_unused() {
    let p = Program::compile_for("isfinite(x ** x)", Dtype::I32).unwrap();
    let mut y = [0u8; 3];
    assert_eq!(p.eval_slice(&[1i32, -1, 2], &mut y, 0), Err(Error::NegativeIntegerPower));
    p.eval_slice(&[1i32, 3, 2], &mut y, 0).unwrap();
    assert_eq!(y, [1, 1, 1]);
    // numpy computes both branches of where: the unselected power still raises.
    let p = Program::compile_for("where(x > 5, x, 2 ** x)", Dtype::I64).unwrap();
    let mut y = [0i64; 2];
    assert_eq!(p.eval_slice(&[-1i64, 9], &mut y, 0), Err(Error::NegativeIntegerPower));
}

#[test]
fn literal_shift_by_a_huge_count_is_pythons() {
    let (_, v) = eval::<f64, i64>("(5 >> 2**40) + (-5 >> 2**40) + (0 << 2**40) + 0 * i", Dtype::F64, &[0.0]);
    assert_eq!(v, [-1]);
    let m = compile_error("x + (1 << 2**40)", Dtype::F64);
    assert!(m.contains("too large"), "{m}");
    assert!(!m.contains("negative"), "{m}");
    assert!(compile_error("x + (5 << -1)", Dtype::F64).contains("negative shift count"));
}

#[test]
fn int_true_division_of_literals_is_correctly_rounded() {
    // Python: 31 / 10**30 == 3.1e-29 exactly as written (0x1.3a6099ef4648bp-95).
    let (_, v) = eval::<f64, f64>("x + 31 / 10**30", Dtype::F64, &[0.0]);
    assert_eq!(v[0].to_bits(), 3.1e-29f64.to_bits());
    let cases: [(i128, i128, f64); 5] = [
        (1, 3, 1.0 / 3.0),
        (-7, 2, -3.5),
        (0, -5, -0.0),
        ((1 << 100) + 1, 1 << 50, 1125899906842624.0),
        (i128::MAX, 3, 5.671372782015641e37),
    ];
    for (a, b, want) in cases {
        let (_, v) = eval::<f64, f64>(&format!("x + ({a}) / ({b})"), Dtype::F64, &[0.0]);
        assert_eq!(v[0].to_bits(), (0.0 + want).to_bits(), "{a} / {b}");
    }
}

#[test]
fn python_int_meets_float32_through_a_double_as_numpy() {
    // 2**60 + 2**36 + 1: to float32 directly rounds up; numpy goes through a double (2**60 + 2**36),
    // then ties to even: 2**60. So float32(2**60) == k in numpy.
    let k = "(2**60 + 2**36 + 1)";
    let (_, v) = eval::<f32, u8>(&format!("x == {k}"), Dtype::F32, &[2f32.powi(60)]);
    assert_eq!(v, [1]);
    let (_, v) = eval::<f32, u8>(&format!("x < {k}"), Dtype::F32, &[2f32.powi(60)]);
    assert_eq!(v, [0]);
}

#[test]
fn int_and_float_literals_compare_exactly_as_python() {
    for (src, want) in [
        ("2**53 + 1 == 2.0**53", 0u8),
        ("2**53 + 1 > 2.0**53", 1),
        ("2**53 == 2.0**53", 1),
        ("170141183460469231731687303715884105727 < 1e300", 1),
        ("-170141183460469231731687303715884105727 > -1e300", 1),
        ("3 < 2.5", 0),
        ("1 != nan", 1),
        ("1 < nan", 0),
    ] {
        let (d, v) = eval::<f64, u8>(&format!("({src}) | (x > 1)"), Dtype::F64, &[0.0]);
        assert_eq!((d, v[0]), (Dtype::Bool, want), "{src}");
    }
}

#[test]
fn underscores_only_between_digits_as_python() {
    for bad in ["x + 1_e5", "x + 1e_5", "x + 1_.5", "x + 1._5", "x + 1__0", "x + 1_", "x + 0x_"] {
        assert!(Program::compile_for(bad, Dtype::F64).is_err(), "{bad} is a SyntaxError in Python");
    }
    let (_, v) = eval::<f64, f64>("x + 1_000.5 + 1e1_0 + 0x_f + 0b1_0", Dtype::F64, &[0.0]);
    assert_eq!(v, [1000.5 + 1e10 + 15.0 + 2.0]);
}
