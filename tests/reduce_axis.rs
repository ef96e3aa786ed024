//! `axis=` reductions against numpy: `shmpool reduce` prints numpy's repr of the array result
//! (character for character) and writes it with `-o`, the same for any number of workers;
//! float sums along an axis at least as accurate as numpy's; numpy's AxisError; axis
//! reductions inside `map` expressions, broadcast as numpy broadcasts them. numpy makes the
//! fixtures and checks (see tests/pyenv).

mod common;
mod pyenv;

use common::npy_files::{p, shmpool};
use std::path::Path;

use pyenv::py;

fn ok(args: &[&str]) -> String {
    let o = shmpool(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

const LOAD: &str = "x = np.load(D + '/x.npy'); k = np.load(D + '/k.npy'); b = np.load(D + '/b.npy')";

fn fixtures(dir: &Path) {
    py(
        dir,
        "rng = np.random.default_rng(5)\n\
         np.save(D + '/x.npy', rng.integers(-400, 400, (70, 2100)) / 4)\n\
         np.save(D + '/k.npy', rng.integers(-2**31, 2**31, (7, 5, 40), dtype=np.int64).astype(np.int32))\n\
         np.save(D + '/b.npy', (rng.random((9, 4)) * 100).astype(np.float32))",
    );
}

#[test]
fn reduce_along_an_axis_prints_numpys_repr_for_any_number_of_workers() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    fixtures(dir);
    let (x, k, b) = (p(dir, "x.npy"), p(dir, "k.npy"), p(dir, "b.npy"));
    // Values exact in both (quarter multiples, integers): numpy's repr, summarised or not.
    for (file, expr, numpy) in [
        (&x, "sum(x, axis=0)", "np.sum(x, axis=0)"),
        (&x, "sum(x, axis=1)", "np.sum(x, axis=1)"),
        (&x, "mean(x * 2, axis=-1)", "np.mean(x * 2, axis=-1)"),
        (&x, "max(x, axis=-2)", "np.max(x, axis=-2)"),
        (&x, "argmin(x, axis=1)", "np.argmin(x, axis=1)"),
        (&x, "count_nonzero(x > 90, axis=0)", "np.count_nonzero(x > 90, axis=0)"),
        (&k, "sum(x, axis=1)", "np.sum(k, axis=1)"),
        (&k, "prod(x, axis=0)", "np.prod(k, axis=0)"),
        (&k, "argmax(x, axis=-1)", "np.argmax(k, axis=-1)"),
        (&k, "min(x, axis=2)", "np.min(k, axis=2)"),
        (&k, "any(x > 2000000000, axis=0)", "np.any(k > 2000000000, axis=0)"),
        (&k, "all(x < 2000000000, axis=-3)", "np.all(k < 2000000000, axis=-3)"),
        (&b, "max(x, axis=0)", "np.max(b, axis=0)"),
        (&b, "argmax(x, axis=1)", "np.argmax(b, axis=1)"),
        (&x, "sum(x, axis=0) / size(x)", "np.sum(x, axis=0) / x.size"),
    ] {
        let want = py(dir, &format!("{LOAD}; print(repr({numpy}))"));
        for j in ["1", "2", "3"] {
            assert_eq!(ok(&["reduce", file, "--expr", expr, "-j", j]), want, "{expr} -j {j}");
        }
    }
    // -o writes the array: numpy's dtype, shape and values.
    ok(&["reduce", &k, "--expr", "sum(x, axis=1)", "-o", &p(dir, "s.npy")]);
    let r = py(dir, &format!("{LOAD}; s = np.load(D + '/s.npy'); w = np.sum(k, axis=1)\nprint(s.dtype == w.dtype, s.shape == w.shape, (s == w).all())"));
    assert_eq!(r, "True True True");
    // A 1-d input reduced along its axis is numpy's scalar.
    ok(&["reduce", &x, "--expr", "sum(x, axis=0)", "-o", &p(dir, "col.npy")]);
    let col = p(dir, "col.npy");
    let want = py(dir, "c = np.load(D + '/col.npy'); print(repr(np.sum(c, axis=0)))");
    assert_eq!(ok(&["reduce", &col, "--expr", "sum(x, axis=-1)"]), want);
}

#[test]
fn float_sums_along_an_axis_are_at_least_as_accurate_as_numpys_and_the_same_for_any_workers() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // Mixed magnitudes and cancellation down each column (axis 0: numpy's plain running sum)
    // and along each row (axis 1: numpy's pairwise sum).
    py(
        dir,
        "rng = np.random.default_rng(9)\n\
         a = rng.standard_normal((4000, 30)) * 10.0 ** rng.integers(-8, 9, (4000, 30))\n\
         a[::2] *= -1; a[1::7] = 1e16; a[2::7] = -1e16\n\
         np.save(D + '/a.npy', a)\n\
         np.save(D + '/f.npy', a.astype(np.float32).T.copy())",
    );
    for (file, expr, axis, sum) in [
        ("a.npy", "sum(x, axis=0)", 0, "np.sum"),
        ("a.npy", "mean(x, axis=0)", 0, "np.mean"),
        ("f.npy", "sum(x, axis=1)", 1, "np.sum"),
    ] {
        ok(&["reduce", &p(dir, file), "--expr", expr, "-j", "2", "-o", &p(dir, "r.npy")]);
        let check = format!(
            "import math, fractions\n\
             a = np.load(D + '/{file}'); r = np.load(D + '/r.npy'); w = {sum}(a, axis={axis})\n\
             mean = '{sum}' == 'np.mean'\n\
             cols = np.moveaxis(a, {axis}, -1)\n\
             exact = np.array([math.fsum(map(float, c)) / (len(c) if mean else 1) for c in cols])\n\
             ours = np.abs(r.astype(np.float64) - exact); theirs = np.abs(w.astype(np.float64) - exact)\n\
             print(r.dtype == w.dtype, r.shape == w.shape, bool((ours <= theirs).all()), int((ours < theirs).sum()))"
        );
        let verdict = py(dir, &check);
        assert!(verdict.starts_with("True True True"), "{expr}: {verdict}");
        // The same bytes for any number of workers.
        let r2 = std::fs::read(p(dir, "r.npy")).unwrap();
        for j in ["1", "3"] {
            ok(&["reduce", &p(dir, file), "--expr", expr, "-j", j, "-o", &p(dir, "r.npy")]);
            assert!(std::fs::read(p(dir, "r.npy")).unwrap() == r2, "{expr} -j {j}");
        }
    }
}

#[test]
fn a_bad_axis_is_numpys_axis_error_and_empty_axes_are_numpys() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    fixtures(dir);
    py(dir, "np.save(D + '/e.npy', np.zeros((3, 0)))");
    let x = p(dir, "x.npy");
    for (expr, axis) in [("sum(x, axis=2)", "2"), ("argmax(x, axis=-3)", "-3")] {
        let o = shmpool(&["reduce", &x, "--expr", expr]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        let want = py(
            dir,
            &format!(
                "x = np.load(D + '/x.npy')\ntry:\n    {}\nexcept np.exceptions.AxisError as e:\n    print(e)",
                expr.replace("sum(", "np.sum(").replace("argmax(", "np.argmax(")
            ),
        );
        assert_eq!(err.trim(), format!("shmpool: error: {want}"), "axis {axis}");
    }
    let e = p(dir, "e.npy");
    let o = shmpool(&["reduce", &e, "--expr", "max(x, axis=1)"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("zero-size array to reduction operation maximum which has no identity"));
    // Along an empty axis the mean is nan with numpy's warning; along the other, an empty array.
    let o = shmpool(&["reduce", &e, "--expr", "mean(x, axis=1)"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), py(dir, "print(repr(np.full(3, np.nan)))"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Mean of empty slice"));
    let want = py(dir, "print(repr(np.sum(np.zeros((3, 0)), axis=0)))");
    assert_eq!(ok(&["reduce", &e, "--expr", "sum(x, axis=0)"]), want);
}

#[test]
fn axis_reductions_inside_map_broadcast_as_numpy() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    fixtures(dir);
    let (x, b) = (p(dir, "x.npy"), p(dir, "b.npy"));
    let out = p(dir, "o.npy");
    ok(&["map", &x, "-o", &out, "--expr", "x - mean(x, axis=0)", "-j", "2", "--quiet"]);
    let r = py(
        dir,
        &format!(
            "{LOAD}; o = np.load(D + '/o.npy'); w = x - np.mean(x, axis=0)\nprint(o.dtype == w.dtype, (o == w).all())"
        ),
    );
    assert_eq!(r, "True True");
    let bb = format!("b={b}");
    ok(&["map", &bb, "-o", &out, "--expr", "(b - min(b, axis=0)) / (max(b, axis=0) - min(b, axis=0))", "--quiet"]);
    let r = py(dir, &format!("{LOAD}; o = np.load(D + '/o.npy'); w = (b - b.min(axis=0)) / (b.max(axis=0) - b.min(axis=0))\nprint(o.dtype == w.dtype, (o == w).all())"));
    assert_eq!(r, "True True");
    // Without keepdims, (70, 2100) - (70,) does not broadcast: numpy's error, nothing written.
    std::fs::remove_file(&out).unwrap();
    let o = shmpool(&["map", &x, "-o", &out, "--expr", "x - mean(x, axis=1)"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = py(dir, &format!("{LOAD}\ntry:\n    x - np.mean(x, axis=1)\nexcept ValueError as e:\n    print(e)"));
    assert_eq!(err.trim(), format!("shmpool: error: {want}"));
    assert!(!Path::new(&out).exists());
}

#[test]
fn the_library_reduces_along_an_axis_with_numpys_shape_and_axis_error() {
    use shmpool::kernel::expr::{Error as ExprError, Program, Reduction};
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("m.npy");
    {
        let mut out = shmpool::NpyOutput::create(&path, shmpool::Dtype::F64, &[4, 3]).unwrap();
        let v: Vec<f64> = (0..12).map(f64::from).collect();
        out.as_mut_slice::<f64>().unwrap().copy_from_slice(&v);
        out.commit().unwrap();
    }
    // SAFETY: the test's own file, which nothing else writes.
    let array = unsafe { shmpool::NpyArray::open(&path) }.unwrap();
    let program = Program::compile_inputs("x * 2", &[("x", shmpool::Dtype::F64)]).unwrap();
    let pool = shmpool::Pool::new(2).unwrap();
    let files = [(path.as_path(), &array)];
    let r = shmpool::expr_reduce::reduce_npy_axis(&pool, &program, &files, &[], Reduction::Sum, 0).unwrap();
    assert_eq!((r.dtype, r.shape.as_slice(), r.warning), (shmpool::Dtype::F64, &[3u64][..], None));
    assert_eq!(
        r.bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>(),
        [36.0, 44.0, 52.0]
    );
    let r = shmpool::expr_reduce::reduce_npy_axis(&pool, &program, &files, &[], Reduction::ArgMax, -1).unwrap();
    assert_eq!((r.dtype, r.shape.as_slice()), (shmpool::Dtype::I64, &[4u64][..]));
    assert_eq!(
        r.bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>(),
        [2, 2, 2, 2]
    );
    let e = shmpool::expr_reduce::reduce_npy_axis(&pool, &program, &files, &[], Reduction::Mean, 2).unwrap_err();
    assert!(matches!(e, shmpool::Error::Expr(ExprError::Axis { axis: 2, ndim: 2 })), "{e:?}");
    pool.close();
    pool.join().unwrap();
}
