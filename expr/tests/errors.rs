//! The expression crate's typed errors: what numpy raises at run time comes back as an
//! `Error`, never as a panic, and misuse of the evaluation API is refused in words.

use shmpool_expr::{Dtype, Error, Program};

#[test]
fn negative_integer_power_at_run_time_is_numpys_value_error_not_a_panic() {
    let p = Program::compile_for("x ** x", Dtype::I32).unwrap();
    let mut y = [0i32; 3];
    let r = std::panic::catch_unwind(|| {
        let mut y = [0i32; 3];
        p.eval_slice(&[1i32, -1, 2], &mut y, 0)
    });
    let err = r.expect("no panic").unwrap_err();
    assert_eq!(err, Error::NegativeIntegerPower);
    assert_eq!(err.to_string(), "integers to negative integer powers are not allowed");
    // Non-negative exponents evaluate as numpy does.
    p.eval_slice(&[1i32, 3, 2], &mut y, 0).unwrap();
    assert_eq!(y, [1, 27, 4]);
}

#[test]
fn negative_exponent_in_a_second_block_is_found() {
    let p = Program::compile_for("2 ** x", Dtype::I64).unwrap();
    let mut xs = vec![3i64; shmpool_expr::BLOCK + 10];
    xs[shmpool_expr::BLOCK + 5] = -2;
    let mut y = vec![0i64; xs.len()];
    assert_eq!(p.eval_slice(&xs, &mut y, 0), Err(Error::NegativeIntegerPower));
    assert_eq!(y[0], 8, "blocks before the failing one are written");
}

#[test]
fn wrong_element_types_and_lengths_are_typed_errors() {
    let p = Program::compile_for("x + 1", Dtype::F64).unwrap();
    let mut y = [0f32; 2];
    assert!(matches!(p.eval_slice(&[1.0f64, 2.0], &mut y, 0), Err(Error::TypeMismatch { .. })));
    let mut y = [0f64; 3];
    assert_eq!(p.eval_slice(&[1.0f64, 2.0], &mut y, 0), Err(Error::LengthMismatch { input: 2, output: 3 }));
    let mut out = [0u8; 15];
    assert!(matches!(p.eval_bytes(&[0u8; 16], &mut out, 0), Err(Error::LengthMismatch { .. })));
}

#[test]
fn a_corrupted_parameter_block_is_refused() {
    let p = Program::compile("sqrt(x)").unwrap();
    let mut b = p.to_bytes();
    assert!(Program::from_bytes(&b).is_ok());
    b[0] ^= 1;
    assert!(matches!(Program::from_bytes(&b), Err(Error::InvalidProgram { .. })));
}
