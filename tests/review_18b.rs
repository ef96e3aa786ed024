//! Second adversarial review of issue #18 (several named inputs, reductions, the numpy
//! mismatches) as it stands on main at 04383f3: each test is one break still there, marked
//! `#[ignore = "review #18b: ..."]` so the suite stays green; each fails when run with
//! `--ignored`. Expected values are numpy 2.4.6's (run by hand, written out here, so no numpy
//! is needed) or the promise where numpy has no say.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::npy_files::{f64_npy, npy};

fn shmpool(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    common::watchdog(Duration::from_secs(120), move || {
        Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).output().unwrap()
    })
}

/// `shmpool reduce FILE --expr EXPR -j J` for J = 1, 2, 3: the printed result, which must be
/// the same for every J (the promise), else the test fails there.
fn reduce(file: &Path, expr: &str) -> String {
    let mut seen: Option<String> = None;
    for j in ["1", "2", "3"] {
        let o = shmpool(&["reduce", file.to_str().unwrap(), "--expr", expr, "-j", j]);
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{expr} -j {j}: {err}");
        if let Some(s) = &seen {
            assert_eq!(&out, s, "{expr}: -j {j} differs from -j 1");
        }
        seen = Some(out);
    }
    seen.expect("three runs")
}

fn f32_npy(dir: &Path, name: &str, xs: &[f32]) -> std::path::PathBuf {
    npy(dir, name, "<f4", &format!("({},)", xs.len()), bytemuck::cast_slice(xs))
}

fn f16_npy(dir: &Path, name: &str, shape: &str, bits: &[u16]) -> std::path::PathBuf {
    npy(dir, name, "<f2", shape, bytemuck::cast_slice(bits))
}

// float16 bit patterns (numpy's `np.float16(v).view(np.uint16)`).
const H_1000: u16 = 0x63d0;
const H_0_001: u16 = 0x1419;
const H_1_001: u16 = 0x3c01;
const H_60000: u16 = 0x7b53;
const H_NAN: u16 = 0x7e00;
const H_1: u16 = 0x3c00;
const H_2: u16 = 0x4000;
const H_3: u16 = 0x4200;

// ---------------------------------------------------------------------------------------------
// prod: numpy's float32 product is sequential in float32, float16's is carried in float32
// ---------------------------------------------------------------------------------------------

/// numpy multiplies a float32 array in float32, element after element (checked against a
/// Python loop of `np.float32` products: identical). shmpool multiplies each block of 8,192
/// elements in float32 but joins the blocks' products in float64 (`Reducer::merge`:
/// `fprod *= later.fprod`), so past one block the float32 overflow numpy has disappears:
/// 1e30 at index 0 and at index 8,192, 1e-30 at 16,384 (ones elsewhere) is `np.float32(inf)`
/// in numpy (1e30 * 1e30 overflows float32), `np.float32(1e+30)` here; and 20,000 copies of
/// float32(1.0001) are `np.float32(7.39076)` in numpy (the exact product is 7.3907695, so
/// numpy's is also the closer), `np.float32(7.390752)` here. float64 alike (numpy's product
/// is the sequential loop's, shmpool joins per-block products): 20,000 × 1.0001 is
/// `np.float64(7.388317279514809)` in numpy (exact 7.38831727951493...), here
/// `np.float64(7.388317279514777)`, further from it.
#[test]
fn float_prod_past_one_block_is_numpys_sequential_product() {
    let d = tempfile::tempdir().unwrap();
    let mut x = vec![1.0f32; 3 * 8192];
    (x[0], x[8192], x[16384]) = (1e30, 1e30, 1e-30);
    let x = f32_npy(d.path(), "x.npy", &x);
    assert_eq!(reduce(&x, "prod(x)"), "np.float32(inf)");
    let y = f32_npy(d.path(), "y.npy", &[1.0001f32; 20_000]);
    assert_eq!(reduce(&y, "prod(x)"), "np.float32(7.39076)");
    let z = f64_npy(d.path(), "z.npy", &[1.0001; 20_000]);
    assert_eq!(reduce(&z, "prod(x)"), "np.float64(7.388317279514809)");
}

/// numpy's float16 `multiply.reduce` carries the product in float32 and rounds to float16
/// once (`HALF_multiply`'s reduce loop): `np.prod(np.array([1000, 1000, 0.001], np.float16))`
/// is `np.float16(1.0005e+03)` and the product of 100 × float16(1.001) `np.float16(1.103)`.
/// shmpool rounds every partial product to float16 (`Reducer::one`): `np.float16(inf)`
/// (1e6 overflows float16) and `np.float16(1.098)`; along an axis likewise
/// (`array([inf,  6.], dtype=float16)` for numpy's `array([1.0005e+03, 6.0000e+00],
/// dtype=float16)`).
#[test]
fn float16_prod_carries_float32_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let x = f16_npy(d.path(), "x.npy", "(3,)", &[H_1000, H_1000, H_0_001]);
    assert_eq!(reduce(&x, "prod(x)"), "np.float16(1.0005e+03)");
    let y = f16_npy(d.path(), "y.npy", "(100,)", &[H_1_001; 100]);
    assert_eq!(reduce(&y, "prod(x)"), "np.float16(1.103)");
    let z = f16_npy(d.path(), "z.npy", "(2, 3)", &[H_1000, H_1000, H_0_001, H_1, H_2, H_3]);
    assert_eq!(reduce(&z, "prod(x, axis=1)"), "array([1.0005e+03, 6.0000e+00], dtype=float16)");
}

// ---------------------------------------------------------------------------------------------
// std/var/nanmean of float16/float32: numpy's overflow of the sum itself
// ---------------------------------------------------------------------------------------------

/// numpy's `_var` sums float16/float32 values in their own type to get the mean: when that
/// sum overflows the mean is inf and so are `var` and `std` (`np.std(np.full(100, 1000,
/// np.float16))` is `np.float16(inf)`, `np.std(np.full(4, 2e38, np.float32))` is
/// `np.float32(inf)`, both with an overflow RuntimeWarning). shmpool gives `0.0` for all of
/// them, while its own `mean(x)` of the float32 data is numpy's `inf` (the first round's fix
/// covered the mean and the squares, not the mean inside std/var). Along an axis the same:
/// `std(x, axis=1)` of float32 `[[2e38, 2e38], [1, 2]]` is numpy's `array([inf, 0.5],
/// dtype=float32)`, here `array([0. , 0.5], dtype=float32)`.
#[test]
fn float16_and_float32_std_whose_sum_overflows_are_inf_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let h = f16_npy(d.path(), "h.npy", "(100,)", &[H_1000; 100]);
    assert_eq!(reduce(&h, "std(x)"), "np.float16(inf)");
    assert_eq!(reduce(&h, "var(x)"), "np.float16(inf)");
    let f = f32_npy(d.path(), "f.npy", &[2e38; 4]);
    assert_eq!(reduce(&f, "mean(x)"), "np.float32(inf)", "the mean already agrees with numpy");
    assert_eq!(reduce(&f, "std(x)"), "np.float32(inf)");
    assert_eq!(reduce(&f, "var(x)"), "np.float32(inf)");
    let a = npy(d.path(), "a.npy", "<f4", "(2, 2)", bytemuck::cast_slice(&[2e38f32, 2e38, 1.0, 2.0]));
    assert_eq!(reduce(&a, "std(x, axis=1)"), "array([inf, 0.5], dtype=float32)");
}

/// numpy's `nanmean` replaces NaNs by 0 and sums in the array's own dtype (unlike `mean`,
/// which carries float16 in float32), then divides that float16 sum:
/// `np.nanmean(np.array([60000, 60000, np.nan], np.float16))` is `np.float16(inf)` (overflow
/// warning), shmpool prints `np.float16(6e+04)`; `np.nanmean` of float16 `[0.1, 0.2, 0.3]`
/// is `np.float16(0.2001)` (the sum rounded to float16 first; `np.mean` gives 0.2), shmpool
/// prints `np.float16(0.2)`; along an axis the same.
#[test]
fn float16_nanmean_sums_in_float16_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let h = f16_npy(d.path(), "h.npy", "(3,)", &[H_60000, H_60000, H_NAN]);
    assert_eq!(reduce(&h, "nanmean(x)"), "np.float16(inf)");
    let t = f16_npy(d.path(), "t.npy", "(3,)", &[0x2e66, 0x3266, 0x34cd]); // 0.1, 0.2, 0.3
    assert_eq!(reduce(&t, "nanmean(x)"), "np.float16(0.2001)");
    assert_eq!(reduce(&t, "mean(x)"), "np.float16(0.2)", "mean already agrees with numpy");
}

// ---------------------------------------------------------------------------------------------
// Accuracy: a finite float64 sum that overflows on the way
// ---------------------------------------------------------------------------------------------

/// "Float sums at least as accurate as numpy's pairwise summation": 256 float64 values, all
/// 0 but `f64::MAX` at 0 and 128 and `-f64::MAX` at 136. The exact sum (`math.fsum`) is
/// `f64::MAX`, and numpy's pairwise sum finds it (the halves 0..128 and 128..256 are summed
/// apart: `MAX` and `MAX - MAX`): `np.float64(1.7976931348623157e+308)`. shmpool's lane 0
/// gets `MAX + MAX` = inf, the block falls back to the value-by-value Neumaier sum, which
/// overflows on `MAX + MAX` too and keeps inf for good: `np.float64(inf)`, the same for
/// `sum(x * 1)` and for `mean` (numpy `np.float64(7.022238808055921e+305)`).
#[test]
fn a_float64_sum_overflowing_midway_is_as_accurate_as_numpys() {
    let d = tempfile::tempdir().unwrap();
    let mut x = vec![0.0f64; 256];
    (x[0], x[128], x[136]) = (f64::MAX, f64::MAX, -f64::MAX);
    let x = f64_npy(d.path(), "x.npy", &x);
    assert_eq!(reduce(&x, "sum(x)"), "np.float64(1.7976931348623157e+308)");
    assert_eq!(reduce(&x, "sum(x * 1)"), "np.float64(1.7976931348623157e+308)");
    assert_eq!(reduce(&x, "mean(x)"), "np.float64(7.022238808055921e+305)");
}

// ---------------------------------------------------------------------------------------------
// The library: a worker's cache of file mappings outlives the arrays
// ---------------------------------------------------------------------------------------------

/// `reduce_npy` of `sum(x)` over one file of `n` float64 ones, with a fresh `NpyArray`.
fn sum_of(pool: &shmpool::Pool, path: &Path) -> shmpool::Result<String> {
    use shmpool::kernel::expr::{Program, Reduction};
    // SAFETY: the test's own file; it is rewritten only after this array is dropped.
    let array = unsafe { shmpool::NpyArray::open(path) }.unwrap();
    let program = Program::compile_inputs("x", &[("x", shmpool::Dtype::F64)]).unwrap();
    let (v, _) = shmpool::expr_reduce::reduce_npy(pool, &program, &[(path, &array)], &[], Reduction::Sum)?;
    Ok(format!("{v:?}"))
}

/// The workers keep a file mapped by (device, inode) across maps (`MAPPED` in
/// src/kernel/expr.rs) and never look at it again. `NpyArray::open`'s promise covers the
/// file only while the array exists: once it is dropped, rewriting the file in place
/// (`std::fs::write`, which truncates the same inode) is allowed. Then a second `reduce_npy`
/// on the same pool over the rewritten, longer file (10 ones, then 100,000 ones) must give
/// 100000.0; it fails with "the input ... shrank during the map" (the worker's old mapping
/// is 10 elements long), although nothing shrank.
#[test]
fn reduce_npy_after_the_file_was_rewritten_in_place_reads_the_new_file() {
    let d = tempfile::tempdir().unwrap();
    let path = f64_npy(d.path(), "x.npy", &[1.0; 10]);
    let pool = shmpool::Pool::new(1).unwrap();
    let first = sum_of(&pool, &path).unwrap();
    assert!(first.contains("10.0"), "{first}");
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = ino(&path);
    f64_npy(d.path(), "x.npy", &[1.0; 100_000]);
    assert_eq!(ino(&path), before, "rewritten in place");
    let second = sum_of(&pool, &path);
    pool.close();
    pool.join().unwrap();
    let second = second.expect("the rewritten file reduces");
    assert!(second.contains("100000.0"), "{second}");
}

/// The same cache keeps a removed file mapped in every worker until the pool ends (or 64
/// other files pass): after `reduce_npy` over a 64 MiB file, dropping the array and removing
/// the file, the workers' /proc/PID/maps still list it "(deleted)": its blocks (on tmpfs, its
/// RAM) are not given back for as long as the pool lives.
#[test]
fn a_removed_input_is_not_kept_mapped_by_the_workers() {
    let d = tempfile::tempdir().unwrap();
    let path = f64_npy(d.path(), "big.npy", &vec![1.0; 8 << 20]);
    let pool = shmpool::Pool::new(2).unwrap();
    let s = sum_of(&pool, &path).unwrap();
    assert!(s.contains("8388608.0"), "{s}");
    std::fs::remove_file(&path).unwrap();
    let held: Vec<u32> = pool
        .pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .is_ok_and(|m| m.lines().any(|l| l.contains("big.npy") && l.contains("(deleted)")))
        })
        .collect();
    pool.close();
    pool.join().unwrap();
    assert!(held.is_empty(), "workers {held:?} still map the removed big.npy");
}

// ---------------------------------------------------------------------------------------------
// `size(x)` and `i` beside reductions in `map`
// ---------------------------------------------------------------------------------------------

/// An output file's shape and float64 values.
type Written = Option<(Vec<u64>, Vec<f64>)>;

/// `shmpool map ARGS -o out.npy --quiet --expr EXPR`: the exit code, stderr, and the output's
/// shape and float64 values when it succeeded.
fn map_f64(dir: &Path, args: &[&str], expr: &str) -> (Option<i32>, String, Written) {
    let out = dir.join("out.npy");
    let _ = std::fs::remove_file(&out);
    let mut a = vec!["map"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", out.to_str().unwrap(), "--quiet", "--expr", expr]);
    let o = shmpool(&a);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let got = o.status.success().then(|| {
        // SAFETY: the test's own output file, which nothing writes any more.
        let arr = unsafe { shmpool::NpyArray::open(&out) }.unwrap();
        let (_, data) = common::npy_files::read_out(&out);
        (arr.shape().to_vec(), common::npy_files::f64s(&data))
    });
    (o.status.code(), err, got)
}

/// "`size(name)` may appear anywhere in the expression" (README), and `x * 0 + size(x)`
/// maps fine, but an expression that reads `x` only through `size(x)` fails with an internal
/// message: `shmpool map x.npy -o out.npy --expr 'size(x) * 1.5'` exits 2 with "the program
/// reads 1 inputs, 0 were given". numpy's `np.size(x) * 1.5` is 9.0 for a (2, 3) input;
/// shmpool writes a reduction-only expression as a 0-d file (`2.0 + mean(x)` does), so the
/// expected output is the 0-d 9.0.
#[test]
fn an_expression_reading_x_only_through_size_maps() {
    let d = tempfile::tempdir().unwrap();
    let x = npy(d.path(), "x.npy", "<f8", "(2, 3)", bytemuck::cast_slice(&[0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0]));
    let (code, err, got) = map_f64(d.path(), &[x.to_str().unwrap()], "2.0 + mean(x)");
    assert_eq!((code, got), (Some(0), Some((vec![], vec![4.5]))), "the reduction-only form works: {err}");
    let (code, err, got) = map_f64(d.path(), &[x.to_str().unwrap()], "size(x) * 1.5");
    assert!(!err.contains("the program reads"), "an internal message: {err}");
    assert_eq!((code, got), (Some(0), Some((vec![], vec![9.0]))), "{err}");
}

/// `i` is the flat index of the output, and with a bare path the output has the input's shape
/// even where the expression does not read `x` (`--expr 'i + 1'` on a (2, 3) input writes
/// (2, 3): 1..6). Add a reduction of `x` and the output collapses to one element:
/// `--expr 'i + sum(x)'` writes a 0-d file holding 15.0 instead of the (2, 3) array 15..20
/// (`i + 1` plus a constant). Low severity (no numpy counterpart to `i`), but `i` silently
/// stops meaning "each element's index".
#[test]
fn i_beside_a_reduction_keeps_the_inputs_shape() {
    let d = tempfile::tempdir().unwrap();
    let x = npy(d.path(), "x.npy", "<f8", "(2, 3)", bytemuck::cast_slice(&[0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0]));
    let (_, err, got) = map_f64(d.path(), &[x.to_str().unwrap()], "i + 1.0");
    assert_eq!(got, Some((vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])), "{err}");
    let (_, err, got) = map_f64(d.path(), &[x.to_str().unwrap()], "i + sum(x)");
    assert_eq!(got, Some((vec![2, 3], vec![15.0, 16.0, 17.0, 18.0, 19.0, 20.0])), "{err}");
}

// ---------------------------------------------------------------------------------------------
// bool inputs whose bytes are not 0/1
// ---------------------------------------------------------------------------------------------

/// numpy reads any non-zero byte of a bool array as True (`np.frombuffer(bytes([2, 1, 0,
/// 255]), np.bool_)`, saved with `np.save`, is `[True, True, False, True]`: `a.view(bool)`
/// of uint8 data makes such files). numpy: `np.sum(a)` = 3, `np.mean(a)` = 0.75, `np.std(a)`
/// = 0.4330127018922193, `np.argmax(a)` = 0, `np.sum(a == True)` = 3. shmpool sums the raw
/// bytes: 258, 64.5, 109.98749928969201, argmax 3 (the 255), and `x == True` counts 1.
#[test]
fn bool_bytes_other_than_0_and_1_are_true_as_in_numpy() {
    let d = tempfile::tempdir().unwrap();
    let b = npy(d.path(), "b.npy", "|b1", "(4,)", &[2, 1, 0, 255]);
    assert_eq!(reduce(&b, "sum(x)"), "np.int64(3)");
    assert_eq!(reduce(&b, "sum(x * 1)"), "np.int64(3)");
    assert_eq!(reduce(&b, "mean(x)"), "np.float64(0.75)");
    assert_eq!(reduce(&b, "std(x)"), "np.float64(0.4330127018922193)");
    assert_eq!(reduce(&b, "argmax(x)"), "np.int64(0)");
    assert_eq!(reduce(&b, "sum(x == True)"), "np.int64(3)");
}

// ---------------------------------------------------------------------------------------------
// Errors quote the user's expression
// ---------------------------------------------------------------------------------------------

/// The first round made errors around a reduction quote the user's expression; `size(x)` is
/// still substituted before the error is written: on int8 data `shmpool map x.npy -o out.npy
/// --expr 'x + size(x) * 50'` (numpy: OverflowError, "Python integer 300 out of bounds for
/// int8", right) prints the expression as `x + 6 * 50` with the caret at column 3 under the
/// `6`, an expression the user never wrote; `reduce --expr 'max(x) + size(x) * 50'` likewise
/// (`max(x) + 6 * 50`).
#[test]
fn an_error_beside_size_quotes_the_users_expression() {
    let d = tempfile::tempdir().unwrap();
    let x = npy(d.path(), "x.npy", "|i1", "(6,)", &[0, 1, 2, 3, 4, 5]);
    let out = d.path().join("out.npy");
    let (x, out) = (x.to_str().unwrap(), out.to_str().unwrap());
    let o = shmpool(&["map", x, "-o", out, "--quiet", "--expr", "x + size(x) * 50"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("out of bounds for int8"), "{err}");
    assert!(err.contains("x + size(x) * 50"), "the error quotes another expression: {err}");
    let o = shmpool(&["reduce", x, "--expr", "max(x) + size(x) * 50"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("max(x) + size(x) * 50"), "the error quotes another expression: {err}");
}

// ---------------------------------------------------------------------------------------------
// --in-place
// ---------------------------------------------------------------------------------------------

/// "An output that is one of the inputs is refused unless `--in-place NAME` is given and
/// shapes and dtype allow it." The same file given under two names (`a=f.npy b=f.npy`, same
/// shape and dtype as the output of `a + b`) cannot be replaced at all, and the advice is
/// circular: `--in-place=a` exits 2 with "output f.npy is the input b: pass --in-place=b to
/// replace it", and `--in-place=b` with "... is the input a: pass --in-place=a". Expected:
/// `--in-place=a` replaces f.npy with `a + b` (each element reads only its own index).
#[test]
fn in_place_over_a_file_given_twice_is_allowed() {
    let d = tempfile::tempdir().unwrap();
    let f = f64_npy(d.path(), "f.npy", &[1.0, 2.0, 3.0]);
    let fa = format!("a={}", f.display());
    let fb = format!("b={}", f.display());
    let o = shmpool(&["map", &fa, &fb, "-o", f.to_str().unwrap(), "--in-place=a", "--quiet", "--expr", "a + b"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let (_, data) = common::npy_files::read_out(&f);
    assert_eq!(common::npy_files::f64s(&data), [2.0, 4.0, 6.0]);
}

// ---------------------------------------------------------------------------------------------
// Accuracy: var/std whose squared deviations are subnormal
// ---------------------------------------------------------------------------------------------

/// 24 float64 values near 1.34e-154 spread by ~1e-157 (numpy's
/// `default_rng(3)` adversarial search; bits below): the squared deviations are subnormal.
/// The exact variance (`Fraction`s) is 1.01927235535856e-314; numpy's `np.var` is the
/// correctly rounded `np.float64(1.0192723556e-314)`, shmpool's `np.float64(1.019272355e-314)`
/// is one subnormal step off (its double-double correction is lost below 2^-1022), and
/// `std`, a normal number (exact 1.00959019178999709e-157), follows: numpy's
/// `np.float64(1.0095901918917302e-157)` (relative error 1.0e-10), shmpool's
/// `np.float64(1.009590191647044e-157)` (1.4e-10): less accurate than numpy's, against the
/// issue's "at least as accurate". Fixed: var is numpy's, std the correctly rounded exact
/// value (more accurate than numpy's; README documents the difference).
#[test]
fn var_and_std_with_subnormal_squares_are_as_accurate_as_numpys() {
    const BITS: [u64; 24] = [
        0x1ff571093ee419cf,
        0x1ff57413ba668016,
        0x1ff578eb9dba4c2d,
        0x1ff57863eeb956ba,
        0x1ff56b38e060d9ff,
        0x1ff574a56cd2430c,
        0x1ff575e35ea88403,
        0x1ff5777465ff1864,
        0x1ff572cbde4a6b12,
        0x1ff57bf81aeebe45,
        0x1ff57b62ab3f7bf9,
        0x1ff571c4d150c47c,
        0x1ff56ddf3064720a,
        0x1ff57373d375114e,
        0x1ff5770e08745888,
        0x1ff579f5b4c4be58,
        0x1ff56da0da045893,
        0x1ff57070b9fb680b,
        0x1ff5694ff5a25ce5,
        0x1ff56ec20b53959d,
        0x1ff57a48fa30ab39,
        0x1ff57fd1d2dbe029,
        0x1ff57867c61ff099,
        0x1ff5739f4fb7fb18,
    ];
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &BITS.map(f64::from_bits));
    assert_eq!(reduce(&x, "var(x)"), "np.float64(1.0192723556e-314)");
    // numpy's std (`np.float64(1.0095901918917302e-157)`, relative error 1.0e-10) is the square
    // root of its subnormal var; shmpool's is the exact std correctly rounded, as README says.
    assert_eq!(reduce(&x, "std(x)"), "np.float64(1.0095901917899971e-157)");
}

// ---------------------------------------------------------------------------------------------
// Python integers of 2**127 and more
// ---------------------------------------------------------------------------------------------

/// numpy (NEP 50) takes any Python int beside a float array: `np.arange(3.0) + 10**40` is
/// `[1e+40, 1e+40, 1e+40]` (float64), `np.arange(3.0) * 2**130` likewise, and
/// `np.sum(x) * 10**40` a float64. shmpool refuses all of them, exit 2, "integer constant is
/// too large (shmpool's Python integers stop below 2**127)" (a limit the README does not
/// state), while `x * 2.0**130` works.
#[test]
#[ignore = "known gap (README: expressions): Python ints >= 2**127 beside float data are refused (numpy: floats)"]
fn python_integers_past_2_pow_127_beside_floats_are_numpys_floats() {
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[0.0, 1.0, 2.0]);
    let xs = x.to_str().unwrap();
    let (code, err, got) = map_f64(d.path(), &[xs], "x + 10**40");
    assert_eq!((code, got), (Some(0), Some((vec![3], vec![1e40; 3]))), "{err}");
    let (code, err, got) = map_f64(d.path(), &[xs], "x * 2**130");
    assert_eq!((code, got), (Some(0), Some((vec![3], vec![0.0, 2f64.powi(130), 2f64.powi(131)]))), "{err}");
    assert_eq!(reduce(&x, "sum(x) * 10**40"), "np.float64(3e+40)");
}
