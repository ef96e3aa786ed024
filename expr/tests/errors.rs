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

/// A header may not claim registers that no instruction writes (each costs `BLOCK` elements
/// of memory when evaluated); every compiled program, cast or not, passes.
#[test]
fn a_header_claiming_unused_registers_is_refused() {
    for src in ["x * 2 + 1", "sin(x) + cos(x)", "where(x > 0, sqrt(x), x ** 2)", "x"] {
        for p in [Program::compile(src).unwrap(), Program::compile(src).unwrap().astype(Dtype::I16)] {
            let b = p.to_bytes();
            assert!(Program::from_bytes(&b).is_ok(), "{src}");
            let regs = u32::from_ne_bytes(b[12..16].try_into().unwrap());
            for claim in [regs + 1, 0x00ff_0000, u32::MAX] {
                let mut bad = b.clone();
                bad[12..16].copy_from_slice(&claim.to_ne_bytes());
                assert!(matches!(Program::from_bytes(&bad), Err(Error::InvalidProgram { .. })), "{src}: {claim}");
            }
        }
    }
}

/// The run-time errors travel out of a worker as codes: each turns back into itself, and no
/// other number is a code.
#[test]
fn runtime_codes_round_trip() {
    let runtime = [
        Error::NegativeIntegerPower,
        Error::EmptyReduction { operation: "minimum" },
        Error::EmptyReduction { operation: "maximum" },
        Error::EmptyReduction { operation: "argmin" },
        Error::EmptyReduction { operation: "argmax" },
    ];
    for e in &runtime {
        let code = e.runtime_code().unwrap();
        assert_ne!(code, 0);
        assert_eq!(Error::from_runtime_code(code).as_ref(), Some(e));
    }
    assert_eq!(Error::InvalidProgram { reason: "x" }.runtime_code(), None);
    for code in [0, 6, 7, u32::MAX] {
        assert_eq!(Error::from_runtime_code(code), None, "{code}");
    }
}
