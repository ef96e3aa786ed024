//! `.npy` interop with real numpy files, and the bad-input corpus of `shmpool map`.
//!
//! numpy makes the fixtures and checks the results (`python3 -m pip install numpy` runs once
//! if it is missing, so a fresh machine needs nothing else).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

fn shmpool(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    common::watchdog(std::time::Duration::from_secs(300), move || {
        Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).output().unwrap()
    })
}

fn ensure_numpy() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let ok =
            |_: ()| Command::new("python3").args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success());
        if !ok(()) {
            let st = Command::new("python3").args(["-m", "pip", "install", "--quiet", "numpy"]).status().unwrap();
            assert!(st.success(), "pip install numpy failed");
        }
        assert!(ok(()), "numpy is not importable");
    });
}

/// Runs a Python snippet with numpy imported as np; `D` is the test directory.
fn py(dir: &Path, code: &str) -> String {
    ensure_numpy();
    let script = format!("import numpy as np, sys\nD = {:?}\n{code}\n", dir.display().to_string());
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), code);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn map_ok(args: &[&str]) {
    let out = shmpool(args);
    assert!(
        out.status.success(),
        "shmpool {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn w1_expression_is_bit_identical_to_numpy() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "x = (np.arange(3_000_001) % 1000) + 0.5\nx[::7] = np.random.default_rng(1).random(x[::7].size) * 1e6\nnp.save(D + '/x.npy', x)");
    map_ok(&["map", &p(dir, "x.npy"), "-o", &p(dir, "y.npy"), "--expr", "sqrt(x) * 1.5 + 0.25", "-j", "2", "--quiet"]);
    let r = py(dir, "x = np.load(D + '/x.npy'); y = np.load(D + '/y.npy'); print(y.dtype, np.array_equal(y, np.sqrt(x) * 1.5 + 0.25))");
    assert_eq!(r, "float64 True");
}

#[test]
fn transcendental_expressions_match_numpy_to_1e_12() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/x.npy', np.random.default_rng(2).uniform(-50, 50, 200_000))");
    let expr = "sin(x) * exp(-x / 100) + atan2(x, 3) + tanh(x / 50) + log10(abs(x) + 1) + cos(x) ** 2 - where(x > 0, sqrt(x), -x) % 7 + floor(x) + round(x / 3) + clamp(x, -1, 1) + max(x, 0) + asin(clamp(x / 60, -1, 1)) + cosh(x / 40) - log2(abs(x) + 1) + log(abs(x) + 2) + tan(x / 40) + acos(clamp(x / 70, -1, 1)) + atan(x) + sinh(x / 40) + ceil(x / 2) + pi * e + i / 1000";
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
    map_ok(&["map", &p(dir, "u.npy"), "-o", &p(dir, "u2.npy"), "--expr", "255 - x", "--dtype", "u8", "--quiet"]);
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
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    map_ok(&["gen", &p(dir, "g.npy"), "--len", "12345", "--dtype", "f64"]);
    map_ok(&["gen", &p(dir, "r.npy"), "--len", "1000", "--dtype", "i32", "--pattern", "random", "--seed", "7"]);
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
         np.save(D + '/bool.npy', np.array([True, False]))\n\
         raw = open(D + '/ok.npy', 'rb').read()\n\
         open(D + '/truncated_header.npy', 'wb').write(raw[:40])\n\
         open(D + '/short_data.npy', 'wb').write(raw[:-8])\n\
         open(D + '/random.npy', 'wb').write(np.random.default_rng(3).bytes(500))",
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
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
        (s(&["map", &inp("bool.npy"), "-o", &out]), "unsupported dtype '|b1'"),
        (s(&["map", &inp("ok.npy"), "-o", &p(dir, "no/such/dir/out.npy")]), "cannot create a file in"),
        (s(&["map", &inp("ok.npy"), "-o", &inp("ok.npy")]), "is the input; pass --in-place"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--expr", "sqrt(x) *"]), "column 10"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--expr", "foo(x)"]), "unknown function 'foo'"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--expr", "x + y"]), "unknown variable 'y'"),
        (s(&["map", &inp("ok.npy"), "-o", &out, "--dtype", "complex"]), "unknown --dtype"),
        (s(&["map", &inp("ok.npy")]), "needs -o"),
    ];
    for (args, want) in &cases {
        refused(dir, args, want);
    }
}

#[test]
fn in_place_replaces_the_input_only_on_success() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/v.npy', np.arange(1000.0))");
    let v = p(dir, "v.npy");
    map_ok(&["map", &v, "-o", &v, "--in-place", "--expr", "x * 2", "--quiet"]);
    let r = py(dir, "print(np.array_equal(np.load(D + '/v.npy'), np.arange(1000.0) * 2))");
    assert_eq!(r, "True");
    assert_eq!(listing(dir), ["v.npy"]);
}
