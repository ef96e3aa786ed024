//! The numpy contract of `shmpool map --expr`, case by case (the random differential test is
//! tests/numpy_diff.rs): NaN bounds, Python integers beyond 64 bits, numexpr's function names,
//! bool arithmetic numpy refuses, the sign of a NaN; and a very long expression under every start
//! method. Expected values were taken from numpy 2.x; the fixtures are written by hand, so these
//! tests need no numpy.

mod common;

use std::time::Duration;

use common::npy_files::{f64_npy, f64s, map_expr as map, npy, read_out, stderr};
use common::start::METHODS;
use shmpool::Pool;

/// `np.clip(x, nan, 1)` is NaN everywhere (numpy 2 propagates a NaN bound: clip is
/// `minimum(maximum(x, lo), hi)`); shmpool once ignored the NaN bound and returned `x` clipped to
/// 1.
#[test]
fn clip_with_a_nan_bound_gives_nan_like_numpy() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[0.0, -1.0, 2.0, 0.5]);
    for expr in ["clip(x, nan, 1)", "clip(x, 0, nan)"] {
        let y = d.path().join("y.npy");
        let o = map(&x, &y, expr);
        assert!(o.status.success(), "{expr}: {}", stderr(&o));
        let (dt, bytes) = read_out(&y);
        assert_eq!(dt, shmpool::Dtype::F64);
        let ys = f64s(&bytes);
        assert!(ys.iter().all(|v| v.is_nan()), "{expr}: numpy gives [nan nan nan nan], shmpool {ys:?}");
    }
}

/// Python integers beyond 64 bits are valid weak scalars for numpy: `x + 2**64` on float64 is
/// `x + 1.8446744073709552e19`, and `x < 2**64` is all True for every integer dtype (numpy 2
/// compares out-of-range Python ints exactly). shmpool used to refuse them at compile time.
#[test]
fn python_integers_beyond_64_bits_work_where_numpy_accepts_them() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[0.0, 1.0]);
    let i = npy(d.path(), "i.npy", "<i8", "(2,)", bytemuck::cast_slice(&[i64::MIN, i64::MAX]));
    let y = d.path().join("y.npy");
    let o = map(&x, &y, "x + 2**64");
    assert!(o.status.success(), "float64 `x + 2**64` works in numpy: {}", stderr(&o));
    let (_, bytes) = read_out(&y);
    assert_eq!(f64s(&bytes), [18446744073709551616.0, 18446744073709551616.0]);
    let o = map(&x, &y, "x * 10**30");
    assert!(o.status.success(), "float64 `x * 10**30` works in numpy: {}", stderr(&o));
    let o = map(&i, &y, "x < 2**64");
    assert!(o.status.success(), "int64 `x < 2**64` is all True in numpy 2: {}", stderr(&o));
    assert_eq!(read_out(&y), (shmpool::Dtype::Bool, vec![1, 1]));
}

/// numexpr's function names (numexpr 2.10+: `signbit`; always: `conj`, `real`, `imag`, `copy`,
/// `ones_like`) and its shift operators `<<` `>>` are promised ("every function name numexpr
/// offers"); all were once refused as unknown. numpy: `signbit([-0., 1., -2.]) == [T, F, T]`.
#[test]
fn every_numexpr_function_name_is_accepted() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[-0.0, 1.0, -2.0]);
    let y = d.path().join("y.npy");
    let o = map(&x, &y, "signbit(x)");
    assert!(o.status.success(), "signbit: {}", stderr(&o));
    assert_eq!(read_out(&y), (shmpool::Dtype::Bool, vec![1, 0, 1]));
    let mut refused = Vec::new();
    for expr in ["conj(x)", "real(x)", "imag(x)", "copy(x)", "ones_like(x)"] {
        let o = map(&x, &y, expr);
        if !o.status.success() {
            refused.push(format!("{expr}: {}", stderr(&o).lines().next().unwrap_or("")));
        }
    }
    let i = npy(d.path(), "i.npy", "<i8", "(2,)", bytemuck::cast_slice(&[3i64, -4]));
    for expr in ["x << 1", "x >> 1"] {
        let o = map(&i, &y, expr);
        if !o.status.success() {
            refused.push(format!("{expr}: {}", stderr(&o).lines().next().unwrap_or("")));
        }
    }
    assert!(refused.is_empty(), "numexpr names numpy evaluates, refused:\n{}", refused.join("\n"));
}

/// `+x` on a bool array is an error in numpy (`np.positive` has no bool loop:
/// UFuncTypeError); shmpool used to return the array.
#[test]
fn unary_plus_on_bool_is_an_error_like_numpy() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = npy(d.path(), "b.npy", "|b1", "(2,)", &[1, 0]);
    let y = d.path().join("y.npy");
    let o = map(&x, &y, "+x");
    assert!(!o.status.success(), "numpy refuses +x on bool; shmpool wrote {:?}", read_out(&y));
    assert!(!y.exists());
}

/// `x ** 3` and `x ** -1` on a NaN keep the NaN's sign in numpy (its SIMD power loop and
/// `reciprocal` return the NaN operand; glibc's `pow` gives a positive NaN, as numpy's float16 loop
/// does), which `copysign` makes visible: for x = 0.0, numpy's `copysign(1, (x / x) ** 3)` is -1.0
/// (0/0 is the x86 default NaN, negative); shmpool's was once 1.0.
#[test]
fn integer_powers_keep_the_sign_of_a_nan_like_numpy() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[0.0]);
    let y = d.path().join("y.npy");
    let mut wrong = Vec::new();
    for expr in ["copysign(1, (x / x) ** 3)", "copysign(1, (x / x) ** -1)", "copysign(1, x / x)"] {
        let o = map(&x, &y, expr);
        assert!(o.status.success(), "{expr}: {}", stderr(&o));
        let got = f64s(&read_out(&y).1)[0];
        if got != -1.0 {
            wrong.push(format!("{expr} = {got} (numpy: -1.0)"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// "Any expression that parses runs": a 400,000-term expression (a long generated formula;
/// only the command line's argv limit keeps the CLI below ~130 KB) through the library under
/// every start method.
#[test]
fn a_very_long_expression_runs_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(300), || {
        let text: String =
            (0..400_000).map(|k| if k == 0 { "x".to_string() } else { format!("+x*{}", k % 7) }).collect();
        let prog = shmpool::kernel::expr::Program::compile(&text).expect("parses and compiles");
        let spec = shmpool::KernelSpec::expr::<f64, f64>(&prog).unwrap();
        for method in METHODS {
            let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
            let ys: Vec<f64> = pool
                .map(&[1.0f64, 2.0], spec.typed::<f64, f64>().unwrap())
                .unwrap_or_else(|e| panic!("{method:?}: {e}"));
            let per: f64 = 1.0 + (1..400_000).map(|k| (k % 7) as f64).sum::<f64>();
            assert_eq!(ys, [per, 2.0 * per], "{method:?}");
        }
    });
}
