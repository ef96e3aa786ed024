//! Review of issue #18 (several named inputs, reductions, the numpy mismatches) as merged in
//! 47efc60: each test is one break found by a hostile user; each failed on 47efc60 and passes
//! now that the break is fixed. Where the review's case turned out not to be a break (shmpool
//! more exact than numpy, a limit now stated in words), the test asserts what we promise and its
//! doc says why. The expected values are numpy 2.4's (or the promise where numpy has no
//! say), written out by hand, so no numpy is needed.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::npy_files::{f64_npy, npy};
use shmpool::Pool;

fn shmpool(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    common::watchdog(Duration::from_secs(120), move || {
        Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).output().unwrap()
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `shmpool reduce ARGS... --expr EXPR`: (exit code, stdout trimmed, stderr).
fn reduce(args: &[&str], expr: &str) -> (Option<i32>, String, String) {
    let mut a = vec!["reduce"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--expr", expr, "-j", "2"]);
    let o = shmpool(&a);
    (o.status.code(), text(&o.stdout).trim().to_string(), text(&o.stderr))
}

fn p(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------------------------

type Big = [[u64; 4096]; 8];

fn big_add(mut a: Big, b: Big) -> Big {
    for (r, s) in a.iter_mut().zip(b.iter()) {
        for (x, y) in r.iter_mut().zip(s.iter()) {
            *x += y;
        }
    }
    a
}

/// A 256 KiB `Pod` accumulator (a histogram of 32,768 u64 bins) for `Pool::map_reduce`: "a
/// large accumulator cannot overflow a worker's stack" (3fe56b0), and nothing in the docs
/// bounds `A`. In the test (debug) build every worker dies of SIGSEGV (stack overflow on its
/// 8 MiB stack: the accumulator is copied by value through the leaf fold and the pairwise
/// tree), three attempts, then `WorkerCrashed { signal: 11 }`. 128 KiB passes. The caller runs
/// on a 512 MiB stack so that only the pool is under test.
#[test]
fn a_256_kib_accumulator_reduces_without_crashing_the_workers() {
    let h = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(|| {
            let pool = Pool::new(2).unwrap();
            let x: Vec<u32> = (0..140_000u32).collect();
            let r: Box<Big> = Box::new(
                pool.map_reduce(
                    &x,
                    [[0u64; 4096]; 8],
                    |v: u32| {
                        let mut a = [[0u64; 4096]; 8];
                        a[(v % 8) as usize][(v % 4096) as usize] = 1;
                        a
                    },
                    big_add,
                )
                .unwrap(),
            );
            r.iter().flatten().sum::<u64>()
        })
        .unwrap();
    assert_eq!(h.join().unwrap(), 140_000);
}

// ---------------------------------------------------------------------------------------------
// `shmpool reduce`: values, words and limits against numpy
// ---------------------------------------------------------------------------------------------

fn f32_npy(dir: &std::path::Path, name: &str, xs: &[f32]) -> std::path::PathBuf {
    npy(dir, name, "<f4", &format!("({},)", xs.len()), bytemuck::cast_slice(xs))
}

fn i64_npy(dir: &std::path::Path, name: &str, xs: &[i64]) -> std::path::PathBuf {
    npy(dir, name, "<i8", &format!("({},)", xs.len()), bytemuck::cast_slice(xs))
}

/// numpy evaluates any number of reductions in one expression; shmpool's reduce plan turns
/// each reduction inside a larger expression into an input of the final program, and a program
/// reads at most 32 inputs. The review found the limit unstated and worded backwards ("the
/// program reads 32 inputs, 33 were given"). Not lifted (the program format holds 32 inputs):
/// the limit is now stated in words, the numbers the right way round; 32 still work.
#[test]
fn thirty_three_reductions_in_one_expression_state_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..10).map(f64::from).collect();
    let x = f64_npy(d.path(), "x.npy", &xs);
    let expr = vec!["sum(x)"; 33].join(" + ");
    let (code, _, err) = reduce(&[p(&x)], &expr);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at most 32 inputs") && err.contains("this one reads 33"), "{err}");
    let (code, out, err) = reduce(&[p(&x)], &vec!["sum(x)"; 32].join(" + "));
    assert_eq!((code, out.as_str()), (Some(0), "np.float64(1440.0)"), "{err}");
    let means = vec!["mean(x)"; 32].join(" + ");
    let y = d.path().join("y.npy");
    let o = shmpool(&["map", p(&x), "-o", p(&y), "--quiet", "--expr", &format!("x - ({means})")]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("at most 32 inputs") && err.contains("this one reads 33"), "{err}");
}

/// An error in the expression around a reduction shows shmpool's rewritten program, not the
/// user's: `sum(x) ** -1` on int64 prints "integers to negative integer powers are not
/// allowed" over `__r0**-1` with the caret under it. numpy: ValueError "Integers to negative
/// integer powers are not allowed." about the user's expression.
#[test]
fn errors_around_a_reduction_quote_the_users_expression() {
    let d = tempfile::tempdir().unwrap();
    let x = i64_npy(d.path(), "x.npy", &[1, 2]);
    let (code, _, err) = reduce(&[p(&x)], "sum(x) ** -1");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("negative integer powers are not allowed"), "{err}");
    assert!(!err.contains("__r"), "internal names leak into the message: {err}");
    assert!(err.contains("sum(x) ** -1"), "the user's expression is quoted: {err}");
}

/// numpy accepts `axis=0` and `axis=-1` on a 0-d array for ufunc reductions
/// (`np.sum(np.array(3.5), axis=0)` is `np.float64(3.5)`); shmpool refuses with "axis 0 is out
/// of bounds for array of dimension 0".
#[test]
fn axis_zero_and_minus_one_on_a_0d_input_reduce_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let x = npy(d.path(), "x.npy", "<f8", "()", &3.5f64.to_le_bytes());
    for expr in ["sum(x, axis=0)", "sum(x, axis=-1)", "max(x, axis=0)"] {
        let (code, out, err) = reduce(&[p(&x)], expr);
        assert_eq!((code, out.as_str()), (Some(0), "np.float64(3.5)"), "{expr}: {err}");
    }
}

/// numpy's words for an empty argmax / nanmin: `np.argmax([])` raises "attempt to get argmax
/// of an empty sequence" (shmpool: "zero-size array to reduction operation argmax which has no
/// identity", a sentence numpy never prints for argmax); `np.nanmin([])` names `fmin`
/// (shmpool: `minimum`).
#[test]
fn empty_argmax_and_nanmin_fail_in_numpys_words() {
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[]);
    let (code, _, err) = reduce(&[p(&x)], "argmax(x)");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("attempt to get argmax of an empty sequence"), "{err}");
    let (code, _, err) = reduce(&[p(&x)], "nanmin(x)");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("zero-size array to reduction operation fmin which has no identity"), "{err}");
}

/// numpy's float32 `mean`/`std` accumulate in float32: `np.mean(np.array([3e38, 3e38],
/// np.float32))` overflows to `np.float32(inf)` (with a RuntimeWarning); shmpool prints
/// `np.float32(3e+38)`. Same for `std` of `[3e38, -3e38]` (numpy inf, shmpool 3e+38).
#[test]
fn float32_mean_and_std_overflow_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let x = f32_npy(d.path(), "x.npy", &[3e38, 3e38]);
    let (_, out, err) = reduce(&[p(&x)], "mean(x)");
    assert_eq!(out, "np.float32(inf)", "{err}");
    let y = f32_npy(d.path(), "y.npy", &[3e38, -3e38]);
    let (_, out, err) = reduce(&[p(&y)], "std(x)");
    assert_eq!(out, "np.float32(inf)", "{err}");
}

/// numpy's int64 `mean` converts each element to float64 before summing:
/// `np.mean(np.array([2**53 + 1, 1]))` is `np.float64(4503599627370496.0)`, while the exact
/// mean is 2**52 + 1 = 4503599627370497, a double. NOT a break: shmpool sums the integers
/// exactly (in 128 bits) and divides once, so its mean is the exact value here and never less
/// accurate than numpy's; the issue asks for sums "at least as accurate as numpy's", and an
/// int64 mean has no float accumulator type of its own that numpy's result would define.
#[test]
fn int64_mean_above_2_pow_53_is_the_exact_value() {
    let d = tempfile::tempdir().unwrap();
    let x = i64_npy(d.path(), "x.npy", &[(1 << 53) + 1, 1]);
    let (_, out, err) = reduce(&[p(&x)], "mean(x)");
    assert_eq!(out, "np.float64(4503599627370497.0)", "{err}");
}

/// Signed zeros: numpy 2.4 gives `np.max([0.0, -0.0])` = `-0.0`, `np.max([-0.0, 0.0])` =
/// `0.0` and `np.min([-0.0, 0.0])` = `0.0`; shmpool prints the other zero each time.
#[test]
fn max_and_min_over_signed_zeros_are_numpys() {
    let d = tempfile::tempdir().unwrap();
    let a = f64_npy(d.path(), "a.npy", &[0.0, -0.0]);
    let b = f64_npy(d.path(), "b.npy", &[-0.0, 0.0]);
    assert_eq!(reduce(&[p(&a)], "max(x)").1, "np.float64(-0.0)");
    assert_eq!(reduce(&[p(&b)], "max(x)").1, "np.float64(0.0)");
    assert_eq!(reduce(&[p(&b)], "min(x)").1, "np.float64(0.0)");
}

/// numpy takes the axis positionally (`np.sum(x, 1)`); `max(x, 0)` is refused on purpose
/// (#18), but `sum(x, 1)`, which no elementwise function shadows, is refused too ("sum() takes
/// one argument and axis=INT"). numpy: `array([ 6., 22., 38.])` for `arange(12.).reshape(3, 4)`.
#[test]
fn sum_with_a_positional_axis_reduces_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..12).map(f64::from).collect();
    let x = npy(d.path(), "x.npy", "<f8", "(3, 4)", bytemuck::cast_slice(&xs));
    let (code, out, err) = reduce(&[p(&x)], "sum(x, 1)");
    assert_eq!((code, out.as_str()), (Some(0), "array([ 6., 22., 38.])"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Names, outputs and memory
// ---------------------------------------------------------------------------------------------

/// "Names are identifiers, not function names or `i`" (#18): `sum=a.npy --expr 'sum + 1'` is
/// accepted and writes a result.
#[test]
fn an_input_named_like_a_function_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let a = f64_npy(d.path(), "a.npy", &[0.0, 1.0, 2.0]);
    let y = d.path().join("y.npy");
    let o = shmpool(&["map", &format!("sum={}", p(&a)), "-o", p(&y), "--quiet", "--expr", "sum + 1"]);
    assert_eq!(o.status.code(), Some(2), "accepted: {}", text(&o.stdout));
    assert!(!y.exists(), "nothing written");
}

/// `i=a.npy` is not read as a name at all: the error is "cannot open i=a.npy: No such file or
/// directory", which does not tell the user that `i` is reserved (the flat index); `pi=`
/// likewise.
#[test]
fn an_input_named_i_gets_a_reserved_name_error() {
    let d = tempfile::tempdir().unwrap();
    let a = f64_npy(d.path(), "a.npy", &[0.0, 1.0, 2.0]);
    let y = d.path().join("y.npy");
    for name in ["i", "pi"] {
        let input = format!("{name}={}", p(&a));
        let o = shmpool(&["map", &input, "-o", p(&y), "--quiet", "--expr", &format!("{name} + 1")]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(!err.contains("No such file"), "{name}: {err}");
        assert!(err.contains(&format!("'{name}'")), "names the reserved word: {err}");
    }
}

/// `map` refuses an output that is one of its inputs unless `--in-place` (#18); `reduce -o`
/// has no such check: `shmpool reduce a=k.npy --expr 'sum(a)' -o k.npy` replaces the input
/// array with the 0-d result, silently (exit 0).
#[test]
fn reduce_refuses_an_output_that_is_its_input() {
    let d = tempfile::tempdir().unwrap();
    let k = f64_npy(d.path(), "k.npy", &[0.0, 1.0, 2.0]);
    let before = std::fs::read(&k).unwrap();
    let o = shmpool(&["reduce", &format!("a={}", p(&k)), "--expr", "sum(a)", "-o", p(&k)]);
    assert_eq!(std::fs::read(&k).unwrap(), before, "the input was replaced: {}", text(&o.stdout));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// Memory: "every input memory-mapped ... memory stays flat at any size". An axis reduction
/// with a large result holds several copies of it: `sum(x, axis=1)` over a (4,000,000, 2)
/// float64 input (64 MB; the result is 32 MB) peaks at ~133 MB resident (4x the result, 2x the
/// input), with or without `-o`; 12.5M rows peak at ~400 MB. A map on the same input stays at
/// ~10 MB. Allowed here: one copy of the result plus 16 MB.
#[test]
fn an_axis_reduction_holds_at_most_one_copy_of_its_result() {
    let d = tempfile::tempdir().unwrap();
    let rows = 4_000_000usize;
    // The input is written in pieces, never held here: the child's `ru_maxrss` starts from
    // this process's own peak (a vfork'd child's exec records its parent's high-water mark).
    let x = npy(d.path(), "x.npy", "<f8", &format!("({rows}, 2)"), &[]);
    let mut f = std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&x).unwrap());
    for k in 0..2 * rows {
        std::io::Write::write_all(&mut f, &((k % 1000) as f64).to_le_bytes()).unwrap();
    }
    drop(f);
    let y = d.path().join("y.npy");
    let args: Vec<String> =
        ["reduce", p(&x), "--expr", "sum(x, axis=1)", "-o", p(&y), "-j", "2"].iter().map(|s| s.to_string()).collect();
    // The child is reaped by `wait4` (for its rusage), not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let (status, peak_kb) = common::watchdog(Duration::from_secs(120), move || {
        let child = Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).spawn().unwrap();
        let (mut status, mut ru) = (0, std::mem::MaybeUninit::<libc::rusage>::zeroed());
        // SAFETY: `child` is this thread's own unwaited child (its pid cannot have been reused);
        // `status` and `ru` are valid for writes; an all-zero `rusage` is a valid value.
        let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, ru.as_mut_ptr()) };
        assert_eq!(r, child.id() as libc::pid_t);
        // SAFETY: zero-initialised above and filled by `wait4`.
        (status, unsafe { ru.assume_init() }.ru_maxrss)
    });
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    let peak_mb = peak_kb as f64 / 1024.0;
    let result_mb = (rows * 8) as f64 / 1e6;
    assert!(peak_mb < result_mb + 16.0, "peak {peak_mb:.0} MB for a {result_mb:.0} MB result");
}

/// `std`/`var` on three ordinary float64 numbers. The review found shmpool's `var` of
/// `[-0.39, -4.68, 1.29]` to be `6.3186`, less accurate than numpy's `6.318599999999999` (the
/// exact variance of these doubles is 6.31859999999999953…): a break, fixed (the corrected
/// two-pass formula with exact squares, carried in double-double), so `var` is now the correctly
/// rounded value, numpy's here. Its `std` is NOT a break: numpy prints
/// `np.float64(2.5136825575239206)`, but the exact standard deviation of these doubles is
/// 2.51368255752392080…, whose nearest double is `2.513682557523921` (shmpool's): the issue asks
/// "at least as accurate as numpy", so shmpool keeps the correctly rounded value. For
/// `[-0.36, 1.08, 7.14]` numpy's std is the correctly rounded one, and so is shmpool's.
#[test]
fn std_and_var_of_three_floats_are_correctly_rounded() {
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[-0.39, -4.68, 1.29]);
    assert_eq!(reduce(&[p(&x)], "var(x)").1, "np.float64(6.318599999999999)");
    assert_eq!(reduce(&[p(&x)], "std(x)").1, "np.float64(2.513682557523921)");
    let y = f64_npy(d.path(), "y.npy", &[-0.36, 1.08, 7.14]);
    assert_eq!(reduce(&[p(&y)], "var(x)").1, "np.float64(10.560799999999999)");
    assert_eq!(reduce(&[p(&y)], "std(x)").1, "np.float64(3.2497384510141734)");
}

/// numpy's float16 `var`/`std` sum the squared deviations in float16: for 300 values ±20
/// (squares 400, total 120,000 > 65,504) numpy gives `np.float16(inf)` for both (with an
/// overflow RuntimeWarning); shmpool prints `np.float16(400.0)` and `np.float16(20.0)`.
#[test]
fn float16_var_and_std_overflow_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<u16> = (0..300).map(|k| if k % 2 == 0 { 0x4d00 } else { 0xcd00 }).collect(); // ±20.0
    let x = npy(d.path(), "x.npy", "<f2", "(300,)", bytemuck::cast_slice(&xs));
    assert_eq!(reduce(&[p(&x)], "var(x)").1, "np.float16(inf)");
    assert_eq!(reduce(&[p(&x)], "std(x)").1, "np.float16(inf)");
}

/// "Prints numpy's repr of the value": numpy switches float16/float32 scalars to scientific
/// notation where their precision runs out, shmpool prints them positionally as float64
/// would: float16 1000 is `np.float16(1e+03)` in numpy (shmpool `np.float16(1000.0)`), float16
/// 60000 `np.float16(6e+04)` (shmpool `np.float16(60000.0)`), float32 12345678
/// `np.float32(1.2345678e+07)` (shmpool `np.float32(12345678.0)`), float32 0.0001 (just below
/// 1e-4 in float32) `np.float32(1e-04)` (shmpool `np.float32(0.0001)`).
#[test]
fn float16_and_float32_scalars_print_numpys_repr() {
    let d = tempfile::tempdir().unwrap();
    for (bits, want) in [(0x63d0u16, "np.float16(1e+03)"), (0x7b53, "np.float16(6e+04)")] {
        let x = npy(d.path(), "h.npy", "<f2", "(1,)", &bits.to_le_bytes());
        assert_eq!(reduce(&[p(&x)], "max(x)").1, want);
    }
    for (v, want) in [(12_345_678f32, "np.float32(1.2345678e+07)"), (1e-4, "np.float32(1e-04)")] {
        let x = f32_npy(d.path(), "f.npy", &[v]);
        assert_eq!(reduce(&[p(&x)], "max(x)").1, want);
    }
}

/// numpy's repr of float16/float32 arrays, with the values right (`-o` writes numpy's bits):
/// float16 `[884.5, 110.44, 1359.]` prints `array([8.8450e+02, 1.1044e+02, 1.3590e+03],
/// dtype=float16)` in numpy (values of 1e3 and more have no unique positional float16 form),
/// shmpool `array([ 884.5 ,  110.44, 1359.  ], dtype=float16)`; float32 bits 0x5b828c99 and
/// 0x5c12e8ea print `array([7.3492671e+16, 1.6540575e+17], dtype=float32)` in numpy, shmpool
/// `7.3492670e+16` (padded with a zero instead of numpy's digits).
#[test]
fn float16_and_float32_arrays_print_numpys_repr() {
    let d = tempfile::tempdir().unwrap();
    let h: [u16; 3] = [0x62e9, 0x56e7, 0x654f];
    let x = npy(d.path(), "h.npy", "<f2", "(3, 1)", bytemuck::cast_slice(&h));
    assert_eq!(reduce(&[p(&x)], "max(x, axis=1)").1, "array([8.8450e+02, 1.1044e+02, 1.3590e+03], dtype=float16)");
    let f: [u32; 2] = [0x5b82_8c99, 0x5c12_e8ea];
    let y = npy(d.path(), "f.npy", "<f4", "(2, 1)", bytemuck::cast_slice(&f));
    assert_eq!(reduce(&[p(&y)], "max(x, axis=1)").1, "array([7.3492671e+16, 1.6540575e+17], dtype=float32)");
}

/// The digits of float32/float16 array elements are not numpy's: float32 16892.5625 prints
/// `16892.562` in numpy (its exact value rounded half to even), `16892.563` in shmpool; the
/// float16 subnormal 0x0305 prints `4.607e-05` in numpy, `4.610e-05` in shmpool (the shortest
/// float16 digits padded with zeros). One run of `max(x, axis=1)` over random float32 data
/// (n = 999, scale 1e4..1e15) differs from numpy's repr in 14 of 120 cases.
#[test]
fn float32_and_float16_array_digits_are_numpys() {
    let d = tempfile::tempdir().unwrap();
    let f: [u32; 2] = [0x4683_f920, 0xc4df_c3ee];
    let x = npy(d.path(), "f.npy", "<f4", "(2, 1)", bytemuck::cast_slice(&f));
    assert_eq!(reduce(&[p(&x)], "max(x, axis=1)").1, "array([16892.562 , -1790.1228], dtype=float32)");
    let h: [u16; 2] = [0x0305, 0x0717];
    let y = npy(d.path(), "h.npy", "<f2", "(2, 1)", bytemuck::cast_slice(&h));
    assert_eq!(reduce(&[p(&y)], "max(x, axis=1)").1, "array([4.607e-05, 1.082e-04], dtype=float16)");
}

/// 33 named inputs (`v1=... v33=... --expr 'v1 + ... + v33'`, numpy has no such limit) fail in
/// `map` and `reduce` with "the program reads 32 inputs, 33 were given": a limit the user
/// cannot know of, worded backwards (the expression reads 33). Either the sum (numpy) or an
/// error that states the limit ("at most 32 inputs") would do.
#[test]
fn thirty_three_named_inputs_work_or_state_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[1.0, 2.0]);
    let inputs: Vec<String> = (1..=33).map(|k| format!("v{k}={}", p(&x))).collect();
    let expr = (1..=33).map(|k| format!("v{k}")).collect::<Vec<_>>().join(" + ");
    let y = d.path().join("y.npy");
    let mut args: Vec<&str> = vec!["map"];
    args.extend(inputs.iter().map(String::as_str));
    args.extend(["-o", p(&y), "--quiet", "--expr", &expr]);
    let o = shmpool(&args);
    let err = text(&o.stderr);
    assert!(o.status.success() || err.contains("at most 32"), "{err}");
}

/// numpy refuses `max`/`argmax` along an empty axis even when the result is empty too: on a
/// (0, 0) array `np.max(x, axis=-1)` raises "zero-size array to reduction operation maximum
/// which has no identity" and `np.argmax(x, axis=0)` "attempt to get argmax of an empty
/// sequence"; shmpool prints `array([], dtype=float64)` / `array([], dtype=int64)`, exit 0.
#[test]
fn max_and_argmax_along_an_empty_axis_of_a_0_by_0_input_fail_as_numpy() {
    let d = tempfile::tempdir().unwrap();
    let x = npy(d.path(), "x.npy", "<f8", "(0, 0)", &[]);
    let (code, out, err) = reduce(&[p(&x)], "max(x, axis=-1)");
    assert_eq!(code, Some(2), "printed {out}");
    assert!(err.contains("zero-size array to reduction operation maximum which has no identity"), "{err}");
    let (code, out, _) = reduce(&[p(&x)], "argmax(x, axis=0)");
    assert_eq!(code, Some(2), "printed {out}");
}
