//! A reduction whose values are an input's own (`sum(x)`, `mean(x)`, ...) reads the mapped
//! file's bytes directly instead of evaluating `x` into a buffer: its result must be the very
//! bits of the same reduction over the same values computed (`x * 1`), for any number of
//! workers, over files that span many 2 MiB release windows and chunks, for float and integer
//! inputs, with NaN and with an odd tail. No numpy needed: the files are written by hand.

mod common;

use std::path::Path;

use common::npy_files::{npy, shmpool};

fn reduce(file: &Path, expr: &str, jobs: &str) -> String {
    let o = shmpool(&["reduce", file.to_str().unwrap(), "--expr", expr, "-j", jobs]);
    assert!(o.status.success(), "{expr} -j {jobs}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Every reduction of `file` read in place equals the one over computed values, for 1-3 workers.
fn same_as_computed(file: &Path, computed: &str, reductions: &[&str]) {
    for red in reductions {
        let plain = format!("{red}(x)");
        let other = format!("{red}({computed})");
        let want = reduce(file, &other, "2");
        for jobs in ["1", "2", "3"] {
            assert_eq!(reduce(file, &plain, jobs), want, "{plain} -j {jobs} against {other}");
        }
    }
}

#[test]
fn float64_reductions_read_in_place_equal_the_computed_ones_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    // 1.3M values (10 MB: five release windows), mixed magnitudes, an odd tail.
    let n = 1_300_001usize;
    let xs: Vec<f64> = (0..n).map(|k| ((k * 7919 % 10007) as f64 - 5003.0) * 10f64.powi((k % 17) as i32 - 8)).collect();
    let f = npy(d.path(), "x.npy", "<f8", &format!("({n},)"), bytemuck::cast_slice(&xs));
    same_as_computed(&f, "x * 1", &["sum", "mean", "std", "var", "min", "max", "argmax", "prod"]);
    let mut with_nan = xs.clone();
    with_nan[n / 2] = f64::NAN;
    let g = npy(d.path(), "nan.npy", "<f8", &format!("({n},)"), bytemuck::cast_slice(&with_nan));
    same_as_computed(&g, "x * 1", &["sum", "mean", "nansum", "nanmean", "max"]);
    assert_eq!(reduce(&g, "mean(x)", "2"), "np.float64(nan)");
}

#[test]
fn float32_and_integer_reductions_read_in_place_equal_the_computed_ones() {
    let d = tempfile::tempdir().unwrap();
    let n = 700_003usize;
    let fs: Vec<f32> = (0..n).map(|k| (k % 1013) as f32 * 0.37 - 150.0).collect();
    let f = npy(d.path(), "f.npy", "<f4", &format!("({n},)"), bytemuck::cast_slice(&fs));
    same_as_computed(&f, "x * 1", &["sum", "mean", "std", "min"]);
    let ks: Vec<i32> = (0..n).map(|k| (k as i32).wrapping_mul(2_654_435_761u32 as i32)).collect();
    let k = npy(d.path(), "k.npy", "<i4", &format!("({n},)"), bytemuck::cast_slice(&ks));
    same_as_computed(&k, "x + 0", &["sum", "mean", "max", "argmin"]);
    // A 2-d file read whole: a whole-array reduction sees every element once.
    let m = npy(d.path(), "m.npy", "<i4", &format!("({}, 7)", 700_000 / 7), bytemuck::cast_slice(&ks[..700_000]));
    let want: i64 = ks[..700_000].iter().map(|&v| i64::from(v)).sum();
    assert_eq!(reduce(&m, "sum(x)", "2"), format!("np.int64({want})"));
}
