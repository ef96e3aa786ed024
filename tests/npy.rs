//! `.npy` interop with real numpy files, numpy's semantics for `shmpool map`, and the bad-input
//! corpus. numpy makes the fixtures and checks the results; it is found, never installed (see
//! tests/pyenv): without it they fail in CI, and a local run says SKIPPED once and passes.

mod common;
mod pyenv;

use common::npy_files::{p, shmpool};
use std::path::Path;

use pyenv::py;

fn map_ok(args: &[&str]) {
    let out = shmpool(args);
    assert!(
        out.status.success(),
        "shmpool {} failed: {}\n{}",
        format!("{args:?}").chars().take(300).collect::<String>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn w1_expression_is_bit_identical_to_numpy() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "x = (np.arange(3_000_001) % 1000) + 0.5\nx[::7] = np.random.default_rng(1).random(x[::7].size) * 1e6\nnp.save(D + '/x.npy', x)");
    map_ok(&["map", &p(dir, "x.npy"), "-o", &p(dir, "y.npy"), "--expr", "sqrt(x) * 1.5 + 0.25", "-j", "2", "--quiet"]);
    let r = py(dir, "x = np.load(D + '/x.npy'); y = np.load(D + '/y.npy'); print(y.dtype, np.array_equal(y, np.sqrt(x) * 1.5 + 0.25))");
    assert_eq!(r, "float64 True");
}

#[test]
fn transcendental_expressions_match_numpy_to_1e_12() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/x.npy', np.random.default_rng(2).uniform(-50, 50, 200_000))");
    let expr = "sin(x) * exp(-x / 100) + atan2(x, 3) + tanh(x / 50) + log10(abs(x) + 1) + cos(x) ** 2 - where(x > 0, sqrt(x), -x) % 7 + floor(x) + round(x / 3) + clamp(x, -1, 1) + maximum(x, 0) + asin(clamp(x / 60, -1, 1)) + cosh(x / 40) - log2(abs(x) + 1) + log(abs(x) + 2) + tan(x / 40) + acos(clamp(x / 70, -1, 1)) + atan(x) + sinh(x / 40) + ceil(x / 2) + pi * e + i / 1000";
    map_ok(&["map", &p(dir, "x.npy"), "-o", &p(dir, "y.npy"), "--expr", expr, "--quiet"]);
    let r = py(
        dir,
        "x = np.load(D + '/x.npy'); y = np.load(D + '/y.npy'); i = np.arange(x.size)\n\
         want = (np.sin(x) * np.exp(-x / 100) + np.arctan2(x, 3) + np.tanh(x / 50) + np.log10(np.abs(x) + 1) + np.cos(x) ** 2\n\
           - np.where(x > 0, np.sqrt(np.abs(x)), -x) % 7 + np.floor(x) + np.round(x / 3) + np.clip(x, -1, 1) + np.maximum(x, 0)\n\
           + np.arcsin(np.clip(x / 60, -1, 1)) + np.cosh(x / 40) - np.log2(np.abs(x) + 1) + np.log(np.abs(x) + 2) + np.tan(x / 40)\n\
           + np.arccos(np.clip(x / 70, -1, 1)) + np.arctan(x) + np.sinh(x / 40) + np.ceil(x / 2) + np.pi * np.e + i / 1000)\n\
         print(np.allclose(y, want, rtol=1e-12, atol=1e-12), float(np.max(np.abs(y - want) / np.maximum(np.abs(want), 1e-300))))",
    );
    assert!(r.starts_with("True"), "{r}");
}

#[test]
fn shapes_dtypes_integers_and_empty_arrays() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "np.save(D + '/a.npy', np.arange(60, dtype=np.float32).reshape(3, 4, 5))\n\
         np.save(D + '/b.npy', np.arange(-500, 500, dtype=np.int16))\n\
         np.save(D + '/c.npy', np.zeros((0, 3)))\n\
         np.save(D + '/u.npy', np.arange(256, dtype=np.uint8))",
    );
    map_ok(&["map", &p(dir, "a.npy"), "-o", &p(dir, "a2.npy"), "--expr", "x * 2 + 1", "--quiet"]);
    map_ok(&["map", &p(dir, "b.npy"), "-o", &p(dir, "b2.npy"), "--expr", "x / 4", "--quiet"]);
    map_ok(&["map", &p(dir, "c.npy"), "-o", &p(dir, "c2.npy"), "--expr", "x + 1", "--quiet"]);
    map_ok(&["map", &p(dir, "u.npy"), "-o", &p(dir, "u2.npy"), "--expr", "255 - x", "--dtype", "u1", "--quiet"]);
    let r = py(
        dir,
        "a = np.load(D + '/a2.npy'); b = np.load(D + '/b2.npy'); c = np.load(D + '/c2.npy'); u = np.load(D + '/u2.npy')\n\
         print(a.shape, a.dtype, np.array_equal(a, np.arange(60, dtype=np.float32).reshape(3, 4, 5) * 2 + 1))\n\
         print(b.dtype, np.array_equal(b, np.arange(-500, 500) / 4))\n\
         print(c.shape, c.dtype)\n\
         print(u.dtype, np.array_equal(u, 255 - np.arange(256, dtype=np.uint8)))",
    );
    assert_eq!(r, "(3, 4, 5) float32 True\nfloat64 True\n(0, 3) float64\nuint8 True");
}

#[test]
fn gen_writes_files_numpy_reads() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    map_ok(&["gen", &p(dir, "g.npy"), "--len", "12345", "--dtype", "float64"]);
    map_ok(&["gen", &p(dir, "r.npy"), "--len", "1000", "--dtype", "int32", "--pattern", "random", "--seed", "7"]);
    let r = py(
        dir,
        "g = np.load(D + '/g.npy'); r = np.load(D + '/r.npy')\n\
         print(np.array_equal(g, (np.arange(12345) % 1000) + 0.5), r.dtype, r.shape)",
    );
    assert_eq!(r, "True int32 (1000,)");
}

/// Files in `dir` (to check that nothing, not even a temporary file, was left).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn refused(dir: &Path, args: &[String], want: &str) {
    let before = listing(dir);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = shmpool(&a);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(want), "{args:?}: expected '{want}' in: {stderr}");
    assert_eq!(listing(dir), before, "{args:?} left files behind");
}

#[test]
fn bad_inputs_give_clear_errors_exit_2_and_leave_nothing() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "np.save(D + '/ok.npy', np.arange(10.0))\n\
         np.save(D + '/complex.npy', np.arange(4) + 1j)\n\
         np.save(D + '/big.npy', np.arange(4, dtype='>f8'))\n\
         np.save(D + '/fortran.npy', np.asfortranarray(np.arange(12.0).reshape(3, 4)))\n\
         np.save(D + '/record.npy', np.zeros(3, dtype=[('a', '<f8'), ('b', '<i4')]))\n\
         np.save(D + '/object.npy', np.array([1, 'a'], dtype=object), allow_pickle=True)\n\
         np.savez(D + '/arch.npz', a=np.arange(3.0))\n\
         import struct\n\
         d = \"{'descr': '<f8', 'fortran_order': False, 'shape': \" + '(' * 40 + '1' + ')' * 40 + ', }'\n\
         open(D + '/nested.npy', 'wb').write(b'\\x93NUMPY\\x01\\x00' + struct.pack('<H', len(d)) + d.encode())\n\
         open(D + '/huge_header.npy', 'wb').write(b'\\x93NUMPY\\x02\\x00' + struct.pack('<I', (4 << 30) - 1) + b' ' * 100)\n\
         raw = open(D + '/ok.npy', 'rb').read()\n\
         open(D + '/truncated_header.npy', 'wb').write(raw[:40])\n\
         open(D + '/short_data.npy', 'wb').write(raw[:-8])\n\
         open(D + '/random.npy', 'wb').write(np.random.default_rng(3).bytes(500))",
    );
    // An expression unless the case gives one (`map` of a file requires `--expr`).
    let s = |v: &[&str]| {
        let expr: &[&str] = if v.contains(&"--expr") { &[] } else { &["--expr", "x"] };
        v.iter().chain(expr).map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let inp = |n: &str| p(dir, n);
    let out = p(dir, "out.npy");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (s(&["map", &inp("missing.npy"), "-o", &out]), "cannot open"),
        (s(&["map", &inp("random.npy"), "-o", &out]), "not a valid .npy file"),
        (s(&["map", &inp("truncated_header.npy"), "-o", &out]), "not a valid .npy file"),
        (s(&["map", &inp("short_data.npy"), "-o", &out]), "data shorter than the header says"),
        (s(&["map", &inp("complex.npy"), "-o", &out]), "unsupported dtype '<c16'"),
        (s(&["map", &inp("big.npy"), "-o", &out]), "big-endian"),
        (s(&["map", &inp("fortran.npy"), "-o", &out]), "Fortran-order"),
        (s(&["map", &inp("record.npy"), "-o", &out]), "structured"),
        (s(&["map", &inp("object.npy"), "-o", &out]), "unsupported dtype"),
        (s(&["map", &inp("arch.npz"), "-o", &out]), "is a .npz archive"),
        (s(&["map", &inp("nested.npy"), "-o", &out]), "not a valid .npy file"),
        (s(&["map", &inp("huge_header.npy"), "-o", &out]), "exceeds numpy's limit of 10000"),
        (s(&["map", &inp("missing.npy"), "-o", &out]), "No such file or directory (os error 2)"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--dtype", "f16"]), "unknown dtype 'f16'"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--expr", "(x > 1) - (x > 2)"]), "boolean subtract"),
        (s(&["map", &inp("ok.npy"), "-o", &p(dir, "no/such/dir/out.npy")]), "cannot create a file in"),
        (s(&["map", &inp("ok.npy"), "-o", &inp("ok.npy")]), "is the input; pass --in-place"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--expr", "sqrt(x) *"]), "column 10"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--expr", "foo(x)"]), "unknown function 'foo'"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--expr", "x + y"]), "unknown variable 'y'"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--dtype", "complex"]), "unknown dtype 'complex'"),
        (s(&["map", &inp("ok.npy")]), "needs -o"),
    ];
    for (args, want) in &cases {
        refused(dir, args, want);
    }
}

#[test]
fn in_place_replaces_the_input_only_on_success() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/v.npy', np.arange(1000.0))");
    let v = p(dir, "v.npy");
    map_ok(&["map", &v, "-o", &v, "--in-place", "--expr", "x * 2", "--quiet"]);
    let r = py(dir, "print(np.array_equal(np.load(D + '/v.npy'), np.arange(1000.0) * 2))");
    assert_eq!(r, "True");
    assert_eq!(listing(dir), ["v.npy"]);
}

/// Maps `expr` over `input` in `dir` into `out` and returns numpy's verdict line for `check`
/// (Python with `x` the input, `y` the output loaded).
fn map_and_check(dir: &Path, input: &str, expr: &str, extra: &[&str], check: &str) -> String {
    let mut args = vec!["map", input, "-o", "y.npy", "--expr", expr, "--quiet", "-j", "2"];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|a| if a.ends_with(".npy") { p(dir, a) } else { a.to_string() }).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    map_ok(&a);
    py(dir, &format!("x = np.load(D + '/{input}'); y = np.load(D + '/y.npy')\n{check}"))
}

#[test]
fn dtype_strings_are_spelled_as_numpy_spells_them() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/big.npy', np.array([2**62 + 1, -2**60 - 3, 7], dtype=np.int64))");
    for (spelling, want) in [
        ("i8", "int64"),
        ("<i8", "int64"),
        ("=i8", "int64"),
        ("u8", "uint64"),
        ("<u8", "uint64"),
        ("int64", "int64"),
        ("i1", "int8"),
        ("|u1", "uint8"),
        ("f4", "float32"),
        ("bool", "bool"),
    ] {
        let r = map_and_check(
            dir,
            "big.npy",
            "x",
            &["--dtype", spelling],
            "print(y.dtype, np.array_equal(y, x.astype(y.dtype)))",
        );
        assert_eq!(r, format!("{want} True"), "--dtype {spelling}");
    }
}

#[test]
fn result_types_and_values_are_numpys() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "np.save(D + '/i8.npy', np.array([2**53 + 1, -7, 0, 2**63 - 1, -2**63], dtype=np.int64))\n\
         np.save(D + '/u1.npy', np.arange(250, 256, dtype=np.uint8))\n\
         np.save(D + '/f4.npy', np.linspace(-3, 3, 7, dtype=np.float32))",
    );
    let same = "print(y.dtype, y.dtype == want.dtype and np.array_equal(y, want, equal_nan=True))";
    let cases = [
        ("i8.npy", "x + 1", "int64"),
        ("i8.npy", "x * 3 - 2", "int64"),
        ("i8.npy", "x // 3", "int64"),
        ("i8.npy", "x % -3", "int64"),
        ("i8.npy", "x // 0 + x % 0", "int64"),
        ("i8.npy", "-x", "int64"),
        ("i8.npy", "x / 2", "float64"),
        ("i8.npy", "x ** 2", "int64"),
        ("u1.npy", "x + 10", "uint8"),
        ("u1.npy", "x * 2", "uint8"),
        ("u1.npy", "x + i", "int64"),
        ("u1.npy", "x / 2", "float64"),
        ("u1.npy", "sqrt(x)", "float16"),
        ("f4.npy", "x * 0.5 + 1", "float32"),
        ("f4.npy", "x // 2", "float32"),
        ("f4.npy", "sqrt(x) + x", "float32"),
    ];
    for (input, expr, dtype) in cases {
        let py_expr =
            expr.replace("sqrt", "np.sqrt").replace('i', "np.arange(x.size)").replace("np.arange(x.size)nt", "int");
        let check = format!("import warnings; warnings.simplefilter('ignore')\nwant = np.asarray({py_expr})\n{same}");
        let r = map_and_check(dir, input, expr, &[], &check);
        assert_eq!(r, format!("{dtype} True"), "{expr} on {input}");
    }
}

#[test]
fn comparisons_chain_and_give_numpy_bool_files() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/x.npy', np.arange(-5.0, 6.0))");
    let r = map_and_check(dir, "x.npy", "-2 < x < 3", &[], "print(y.dtype, np.array_equal(y, (-2 < x) & (x < 3)))");
    assert_eq!(r, "bool True");
    let r = map_and_check(
        dir,
        "x.npy",
        "(x > 0) & (x < 4) | ~(x != -5)",
        &[],
        "print(y.dtype, np.array_equal(y, (x > 0) & (x < 4) | ~(x != -5)))",
    );
    assert_eq!(r, "bool True");
}

#[test]
fn modulo_zero_takes_the_divisors_sign_and_inf_nan_are_constants() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/x.npy', np.array([-4.0, 4.0, -3.0, 0.0, -0.0]))");
    let check = "import warnings; warnings.simplefilter('ignore')\nwant = 1 / (x % 2) + np.inf * 0 + np.where(x > 100, np.nan, 0)\nprint(np.array_equal(y, want, equal_nan=True), y[0])";
    let r = map_and_check(dir, "x.npy", "1 / (x % 2) + inf * 0 + where(x > 100, nan, 0)", &[], check);
    assert_eq!(r, "True nan", "inf * 0 is nan everywhere");
    let r = map_and_check(dir, "x.npy", "1 / (x % 2)", &[], "print(y[0], np.array_equal(y, 1 / (x % 2)))");
    assert_eq!(r, "inf True", "numpy: 1 / (-4 % 2) is +inf");
}

#[test]
fn numexpr_and_numpy_function_names_match_numpy() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/x.npy', np.linspace(-0.99, 0.99, 1001))");
    // Expressions in the style of numexpr's own test suite (numexpr/tests/test_numexpr.py).
    let exprs = [
        "arcsin(x) + arccos(x) + arctan(x)",
        "arcsinh(x) + arccosh(x + 2) + arctanh(x)",
        "asinh(x) * acosh(3 + x) - atanh(x / 2)",
        "log1p(x) + expm1(x)",
        "trunc(x * 10) + sign(x)",
        "fmod(x * 7, 2) + hypot(x, 1)",
        "nextafter(x, 1) - x + copysign(1, x)",
        "arctan2(x, 0.5) + atan2(0.5, x)",
        "where(isnan(x / x), 1, 0) + isinf(1 / x) + isfinite(x)",
    ];
    for e in exprs {
        let np_e = e
            .replace("isnan", "np.isnan")
            .replace("isinf", "np.isinf")
            .replace("isfinite", "np.isfinite")
            .replace("where", "np.where")
            .replace("asinh", "np.arcsinh")
            .replace("acosh", "np.arccosh")
            .replace("atanh", "np.arctanh")
            .replace("atan2", "np.arctan2");
        let np_e = [
            "arcsin",
            "arccos",
            "arctan2",
            "arctan",
            "arcsinh",
            "arccosh",
            "arctanh",
            "log1p",
            "expm1",
            "trunc",
            "sign",
            "fmod",
            "hypot",
            "nextafter",
            "copysign",
        ]
        .iter()
        .fold(np_e, |acc, f| {
            acc.replace(&format!(" {f}("), &format!(" np.{f}(")).replace(&format!("({f}("), &format!("(np.{f}("))
        });
        let np_e = ["arcsin(", "arcsinh(", "asinh(", "log1p(", "trunc(", "fmod(", "nextafter(", "arctan2(", "where("]
            .iter()
            .fold(np_e, |acc, f| if acc.starts_with(f) { format!("np.{acc}") } else { acc });
        let check = format!(
            "import warnings; warnings.simplefilter('ignore')\nwant = {np_e}\nprint(y.dtype == want.dtype, np.allclose(y, want, rtol=1e-14, atol=1e-14, equal_nan=True))"
        );
        let r = map_and_check(dir, "x.npy", e, &[], &check);
        assert_eq!(r, "True True", "{e} (numpy: {np_e})");
    }
}

#[test]
fn long_expressions_run_and_deep_ones_are_refused_in_words() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/x.npy', np.arange(100.0))");
    let deep = format!("{}x{}", "(".repeat(7000), ")".repeat(7000));
    let out = shmpool(&["map", &p(dir, "x.npy"), "-o", &p(dir, "y.npy"), "--expr", &deep]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "no crash (SIGABRT) but a usage error: {stderr}");
    assert!(stderr.contains("too many nested parentheses"), "{stderr}");
    // 3,000 terms: the program travels as the kernel's parameter block, whatever its size.
    let long = (0..3000).map(|k| format!("x * {k}")).collect::<Vec<_>>().join(" + ");
    let r = map_and_check(dir, "x.npy", &long, &[], "print(np.array_equal(y, x * (2999 * 3000 // 2)))");
    assert_eq!(r, "True");
}

/// The fallback for filesystems without `O_TMPFILE` (a hidden named temporary, its name private
/// to shmpool): nothing appears under the final name before the commit, the commit publishes the
/// complete file atomically, and an output dropped without a commit leaves nothing behind.
#[test]
fn named_fallback_output_publishes_atomically_and_leaves_nothing_on_drop() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("o.npy");
    shmpool::testing::force_named_npy_temp_files(true);
    let made = (
        shmpool::NpyOutput::create(&path, shmpool::Dtype::F64, &[1000]),
        shmpool::NpyOutput::create(d.path().join("dropped.npy"), shmpool::Dtype::F64, &[8]),
    );
    shmpool::testing::force_named_npy_temp_files(false);
    let (mut out, dropped) = (made.0.unwrap(), made.1.unwrap());
    let hidden = listing(d.path());
    assert_eq!(hidden.len(), 2, "the fallback writes hidden named temporaries: {hidden:?}");
    assert!(hidden.iter().all(|n| n.starts_with('.') && n.ends_with(".tmp")), "{hidden:?}");
    for (i, v) in out.as_mut_slice::<f64>().unwrap().iter_mut().enumerate() {
        *v = i as f64 * 0.5;
    }
    assert!(!path.exists(), "nothing under the final name before the commit");
    drop(dropped);
    out.commit().unwrap();
    assert_eq!(listing(d.path()), ["o.npy"], "the temporary became the file; the dropped one is gone");
    // SAFETY: the file is complete and nothing else in this test writes or truncates it.
    let back = unsafe { shmpool::NpyArray::open(&path) }.unwrap();
    let xs = back.as_slice::<f64>().unwrap();
    assert_eq!(xs.len(), 1000);
    assert!(xs.iter().enumerate().all(|(i, &v)| v == i as f64 * 0.5));
}

#[test]
fn several_named_inputs_broadcast_and_promote_as_numpy() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "rng = np.random.default_rng(5)\n\
         np.save(D + '/a.npy', rng.standard_normal((1000, 300)))\n\
         np.save(D + '/b.npy', rng.standard_normal(300).astype(np.float32))\n\
         np.save(D + '/c.npy', np.array(2.5))\n\
         np.save(D + '/n.npy', np.arange(1000, dtype=np.int32).reshape(1000, 1))\n\
         np.save(D + '/u.npy', np.arange(300000, dtype=np.uint64).reshape(1000, 300))\n\
         np.save(D + '/s.npy', np.arange(300, dtype=np.int64) - 150)\n\
         np.save(D + '/w.npy', np.zeros(299))",
    );
    let cases = [
        (vec!["a=a.npy", "b=b.npy", "c=c.npy"], "a * b + c", "a * b + c"),
        (vec!["a=a.npy", "n=n.npy"], "a - n + i", "a - n + np.arange(300000).reshape(1000, 300)"),
        (vec!["u=u.npy", "s=s.npy"], "u + s", "u + s"),
        (vec!["u.npy", "n=n.npy"], "where(x > n, x, n * 2)", "np.where(u > n, u, n * 2)"),
    ];
    for (k, (inputs, expr, numpy)) in cases.iter().enumerate() {
        let out = format!("out{k}.npy");
        let mut args: Vec<String> = vec!["map".into()];
        for spec in inputs {
            let (name, file) = spec.split_once('=').map_or((None, *spec), |(n, f)| (Some(n), f));
            args.push(match name {
                Some(n) => format!("{n}={}", p(dir, file)),
                None => p(dir, file),
            });
        }
        args.extend(["-o".into(), p(dir, &out), "--expr".into(), expr.to_string(), "-j".into(), "2".into()]);
        args.push("--quiet".into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        map_ok(&a);
        let r = py(
            dir,
            &format!(
                "a, b, c, n, u, s = (np.load(D + f'/{{v}}.npy') for v in 'abcnus')\n\
                 w = np.asarray({numpy}); y = np.load(D + '/{out}')\n\
                 print(y.dtype == w.dtype, y.shape == w.shape, np.array_equal(y, w))"
            ),
        );
        assert_eq!(r, "True True True", "{expr}");
    }
    // Names used but not given, given but not used, and shapes numpy cannot broadcast: exit 2,
    // nothing written.
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (a, b, n) =
        (format!("a={}", p(dir, "a.npy")), format!("b={}", p(dir, "b.npy")), format!("n={}", p(dir, "n.npy")));
    let out = p(dir, "bad.npy");
    refused(dir, &s(&["map", &a, &b, "-o", &out, "--expr", "a * b + z"]), "uses 'z', which is not an input");
    refused(dir, &s(&["map", &a, &b, "-o", &out, "--expr", "a * 2"]), "input 'b' is not used");
    // The output may replace the input named by --in-place, when its shape and dtype allow.
    let (a_path, b_path) = (p(dir, "a.npy"), p(dir, "b.npy"));
    refused(dir, &s(&["map", &a, &b, "-o", &a_path, "--expr", "a * b"]), "pass --in-place=a to replace it");
    refused(dir, &s(&["map", &a, &b, "-o", &b_path, "--in-place=b", "--expr", "a * b"]), "cannot replace the input");
    let before = py(dir, "a = np.load(D + '/a.npy'); b = np.load(D + '/b.npy'); np.save(D + '/want.npy', a * b)");
    assert_eq!(before, "");
    map_ok(&["map", &a, &b, "-o", &a_path, "--in-place=a", "--expr", "a * b", "--quiet"]);
    let r = py(dir, "print(np.array_equal(np.load(D + '/a.npy'), np.load(D + '/want.npy')))");
    assert_eq!(r, "True");
    let w = format!("w={}", p(dir, "w.npy"));
    refused(
        dir,
        &s(&["map", &n, &w, &a, "-o", &out, "--expr", "a + w + n"]),
        "operands could not be broadcast together with shapes (1000,1) (299,) (1000,300)",
    );
}

#[test]
fn reduce_prints_numpys_value_the_same_for_any_number_of_workers() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "rng = np.random.default_rng(11)\n\
         np.save(D + '/x.npy', rng.standard_normal(300_001) * 1e3)\n\
         np.save(D + '/k.npy', rng.integers(-2**31, 2**31, 300_001, dtype=np.int64).astype(np.int32))\n\
         np.save(D + '/e.npy', np.zeros(0))",
    );
    let reduce = |args: &[&str]| {
        let o = shmpool(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (x, k) = (p(dir, "x.npy"), p(dir, "k.npy"));
    // Exact values: numpy's repr, character for character.
    for (file, expr, numpy) in [
        (&k, "sum(x)", "np.sum(k)"),
        (&k, "prod(x)", "np.prod(k)"),
        (&k, "max(x)", "np.max(k)"),
        (&k, "argmin(x)", "np.argmin(k)"),
        (&x, "min(x * 2)", "np.min(x * 2)"),
        (&x, "count_nonzero(x > 100)", "np.count_nonzero(x > 100)"),
        (&x, "any(x > 4000)", "np.any(x > 4000)"),
        (&k, "mean(x // 1000)", "np.mean(k // 1000)"),
    ] {
        let ours = reduce(&["reduce", file, "--expr", expr, "-j", "2"]);
        let want = py(dir, &format!("x = np.load(D + '/x.npy'); k = np.load(D + '/k.npy'); print(repr({numpy}))"));
        assert_eq!(ours, want, "{expr}");
    }
    // Float sums: numpy's dtype, its value to 1e-12, and the same bits for 1, 2 or 3 workers.
    for (expr, numpy) in [("sum(x * x)", "np.sum(x * x)"), ("std(x)", "np.std(x)"), ("nanmean(x)", "np.nanmean(x)")] {
        let runs: Vec<String> =
            ["1", "2", "3"].iter().map(|j| reduce(&["reduce", &x, "--expr", expr, "-j", j])).collect();
        assert!(runs.iter().all(|r| *r == runs[0]), "{expr}: {runs:?}");
        let check = format!(
            "x = np.load(D + '/x.npy'); w = {numpy}; r = {}\nprint(type(r) is type(w), abs(r - w) <= 1e-12 * abs(w))",
            runs[0]
        );
        assert_eq!(py(dir, &check), "True True", "{expr}: {}", runs[0]);
    }
    // -o writes numpy's 0-d array; an empty min is numpy's error, exit 2.
    reduce(&["reduce", &x, "--expr", "max(x)", "-o", &p(dir, "m.npy")]);
    let r = py(dir, "m = np.load(D + '/m.npy'); x = np.load(D + '/x.npy'); print(m.shape, m.dtype, m == x.max())");
    assert_eq!(r, "() float64 True");
    let o = shmpool(&["reduce", &p(dir, "e.npy"), "--expr", "min(x)"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("zero-size array to reduction operation minimum which has no identity"), "{err}");
    let o = shmpool(&["reduce", &p(dir, "e.npy"), "--expr", "mean(x)"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "np.float64(nan)");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Mean of empty slice"));
}

#[test]
fn reductions_inside_expressions_are_computed_first_with_numpys_types() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "rng = np.random.default_rng(3)\n\
         np.save(D + '/x.npy', (rng.standard_normal((700, 300)) * 100).astype(np.float32))\n\
         np.save(D + '/k.npy', rng.integers(0, 1000, 300, dtype=np.int16))",
    );
    let (x, k) = (p(dir, "x.npy"), p(dir, "k.npy"));
    // map: `x - mean(x)` is float32 (np.mean of float32 is a float32 scalar, not a weak float).
    map_ok(&["map", &x, "-o", &p(dir, "c.npy"), "--expr", "x - mean(x)", "--quiet"]);
    let kk = format!("k={k}");
    let xx = format!("x={x}");
    map_ok(&["map", &xx, &kk, "-o", &p(dir, "z.npy"), "--expr", "(x - mean(x)) / std(x) + k - max(k)", "--quiet"]);
    let r = py(
        dir,
        "x = np.load(D + '/x.npy'); k = np.load(D + '/k.npy')\n\
         c = np.load(D + '/c.npy'); w = x - np.mean(x)\n\
         z = np.load(D + '/z.npy'); v = (x - np.mean(x)) / np.std(x) + k - np.max(k)\n\
         print(c.dtype == w.dtype, np.allclose(c, w, rtol=1e-5, atol=1e-3), z.dtype == v.dtype, np.allclose(z, v, rtol=1e-5, atol=1e-4))",
    );
    assert_eq!(r, "True True True True");
    // reduce: a reduction around an expression with reductions, and an expression of reductions.
    for (expr, numpy) in [
        ("sum((x - mean(x)) ** 2)", "np.sum((x - np.mean(x)) ** 2)"),
        ("sqrt(sum(x * x)) / 3", "np.sqrt(np.sum(x * x)) / 3"),
        ("sqrt(sum(x * x)) / size(x)", "np.sqrt(np.sum(x * x)) / np.size(x)"),
    ] {
        let o = shmpool(&["reduce", &x, "--expr", expr, "-j", "2"]);
        assert!(o.status.success(), "{expr}: {}", String::from_utf8_lossy(&o.stderr));
        let ours = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let check = format!(
            "from numpy import float32\nx = np.load(D + '/x.npy'); w = {numpy}; r = {ours}\n\
             print(type(r) is type(w), abs(float(r) - float(w)) <= 1e-5 * abs(float(w)))"
        );
        assert_eq!(py(dir, &check), "True True", "{expr}: ours {ours}");
    }
    // max/min inside an elementwise expression: numpy's reading is an axis; refused in words.
    let o = shmpool(&["map", &x, "-o", &p(dir, "m.npy"), "--expr", "max(x, 0)"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("use maximum(a, b)"), "{err}");
}
