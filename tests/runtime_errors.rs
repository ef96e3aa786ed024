//! numpy's errors raised while an expression runs (an integer to a negative integer power):
//! typed errors with numpy's words from the command line and the library, never a kernel
//! panic or a worker's "panicked at" line. numpy makes the fixtures (see tests/pyenv).

mod common;
mod pyenv;

use common::npy_files::{p, shmpool};
use std::path::Path;

use pyenv::py;

const NUMPY_WORDS: &str = "integers to negative integer powers are not allowed";

#[test]
fn negative_integer_power_at_run_time_is_numpys_value_error_in_map_and_reduce() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "np.save(D + '/v.npy', np.array([1, -1, 2] * 50_000, dtype=np.int32))\n\
         np.save(D + '/a.npy', np.ones((150_000,), dtype=np.int64))\n\
         try:\n    v = np.load(D + '/v.npy'); v ** v\nexcept ValueError as e:\n    print(e)",
    );
    let v = p(dir, "v.npy");
    let a = p(dir, "a.npy");
    let out = p(dir, "o.npy");
    let (nv, na) = (format!("v={v}"), format!("a={a}"));
    let runs: [Vec<&str>; 4] = [
        vec!["map", &v, "-o", &out, "--expr", "x ** x", "-j", "2"],
        vec!["map", &nv, &na, "-o", &out, "--expr", "a + v ** v", "-j", "2"],
        vec!["reduce", &v, "--expr", "sum(x ** x)", "-j", "2"],
        vec!["map", &v, "-o", &out, "--expr", "x - mean(x ** x)", "-j", "2"],
    ];
    for args in &runs {
        let o = shmpool(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim(), format!("shmpool: error: {NUMPY_WORDS}"), "{args:?}");
        assert!(!Path::new(&out).exists(), "{args:?} left an output");
    }
}

#[test]
fn reduce_npy_returns_the_typed_error_not_a_kernel_panic() {
    use shmpool::kernel::expr::{Error as ExprError, Program, Reduction};
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("v.npy");
    {
        let mut out = shmpool::NpyOutput::create(&path, shmpool::Dtype::I32, &[3]).unwrap();
        out.as_mut_slice::<i32>().unwrap().copy_from_slice(&[1, -1, 2]);
        out.commit().unwrap();
    }
    // SAFETY: the test's own file, which nothing else writes.
    let array = unsafe { shmpool::NpyArray::open(&path) }.unwrap();
    let program = Program::compile_inputs("x ** x", &[("x", shmpool::Dtype::I32)]).unwrap();
    let pool = shmpool::Pool::new(2).unwrap();
    let e = shmpool::expr_reduce::reduce_npy(&pool, &program, &[(&path, &array)], &[], Reduction::Sum).unwrap_err();
    assert!(matches!(e, shmpool::Error::Expr(ExprError::NegativeIntegerPower)), "{e:?}");
    assert_eq!(e.to_string(), NUMPY_WORDS);
    pool.close();
    pool.join().unwrap();
}
