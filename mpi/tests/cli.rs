//! `mpirun -np N shmpool-mpi map ...` against `shmpool map` on one machine: byte-identical
//! outputs for every shape, dtype and n (n smaller than the ranks, not divisible by them), and
//! bad input refused by rank 0 with one message and the same exit code on every rank.

mod common;

use common::{mpirun, save, save_f64, shmpool_map, text, Dir};
use shmpool::Dtype;

/// Maps `input` with `shmpool map` and with `shmpool-mpi` on 1, 2 and 3 ranks; asserts the
/// outputs are byte-identical and nothing else is left in the directory.
fn same_as_shmpool_map(d: &Dir, input: &str, extra: &[&str], ranks: &[usize]) {
    let reference = d.s("ref.npy");
    let mut args = vec![d.s(input), "-o".to_string(), reference.clone()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    shmpool_map(&a);
    let want = std::fs::read(&reference).unwrap();
    for &np in ranks {
        let out = d.s(&format!("out{np}.npy"));
        let mut args = vec!["map".to_string(), d.s(input), "-o".to_string(), out.clone(), "-j".into(), "2".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = mpirun(d, np, &a);
        assert!(o.status.success(), "-np {np} {extra:?}: {}", text(&o));
        let got = std::fs::read(&out).unwrap();
        assert!(
            got == want,
            "-np {np} {extra:?}: output differs from shmpool map's ({} vs {} bytes)",
            got.len(),
            want.len()
        );
        let mode = |p: &str| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
        assert_eq!(mode(&out), mode(&reference), "np.save's permissions, as shmpool map");
        std::fs::remove_file(&out).unwrap();
    }
    std::fs::remove_file(&reference).unwrap();
    assert_eq!(d.debris(&[input]), Vec::<String>::new(), "debris left");
}

#[test]
fn one_d_float64_is_byte_identical_to_shmpool_map_on_1_2_and_3_ranks() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1_000_003);
    same_as_shmpool_map(&d, "x.npy", &["--expr", "sqrt(x) * 1.5 + 0.25"], &[1, 2, 3]);
    same_as_shmpool_map(&d, "x.npy", &["--expr", "sqrt(x) * 1.5 + 0.25 + i"], &[2, 3]);
}

#[test]
fn two_d_int32_with_the_global_index_is_byte_identical_on_1_2_and_3_ranks() {
    let d = Dir::new();
    save(&d.path("m.npy"), Dtype::I32, &[301, 1009], |k| ((k * 2_654_435_761) % 200_001) as i32 - 100_000);
    same_as_shmpool_map(&d, "m.npy", &["--expr", "x * 3 - i"], &[1, 2, 3]);
    same_as_shmpool_map(&d, "m.npy", &["--expr", "(x + i) % 1000", "--dtype", "int16"], &[3]);
}

#[test]
fn seven_elements_are_byte_identical_on_1_2_and_3_ranks() {
    let d = Dir::new();
    save_f64(&d.path("s.npy"), 7);
    same_as_shmpool_map(&d, "s.npy", &["--expr", "x * i + 1"], &[1, 2, 3]);
}

#[test]
fn two_elements_on_three_ranks_leave_one_rank_idle_and_the_output_right() {
    let d = Dir::new();
    save(&d.path("t.npy"), Dtype::I64, &[2], |k| k as i64 * 10 + 3);
    same_as_shmpool_map(&d, "t.npy", &["--expr", "x - i"], &[3]);
}

/// Asserts a refused job: the exit code on every rank, one message (from rank 0) containing
/// `needle` and saying what `shmpool map` says for the same arguments, and nothing written.
fn refused(d: &Dir, np: usize, args: &[&str], code: i32, needle: &str, keep: &[&str]) {
    let o = mpirun(d, np, args);
    assert_eq!(o.status.code(), Some(code), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("shmpool-mpi: error:").count(), 1, "one message, from rank 0: {}", text(&o));
    let reference = std::process::Command::new(common::shmpool_bin()).args(args).output().unwrap();
    assert_eq!(reference.status.code(), Some(code), "shmpool map's exit code: {}", text(&reference));
    let theirs = String::from_utf8_lossy(&reference.stderr);
    let message = |s: &str, prefix: &str| -> String {
        let at = s.find(prefix).map(|k| k + prefix.len()).unwrap_or(0);
        s[at..].lines().take_while(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(
        message(&err, "shmpool-mpi: error:"),
        message(&theirs, "shmpool: error:"),
        "the same message as shmpool map"
    );
    assert!(err.contains(needle), "the message names the problem ({needle}): {}", text(&o));
    assert!(!err.contains("rank 1:") && !err.contains("rank 2:"), "{}", text(&o));
    assert_eq!(d.debris(keep), Vec::<String>::new(), "nothing is written");
}

#[test]
fn a_missing_input_is_one_message_from_rank_0_and_exit_2_on_every_rank() {
    let d = Dir::new();
    let (missing, out) = (d.s("missing.npy"), d.s("out.npy"));
    refused(&d, 3, &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &missing, "-o", &out], 2, "cannot open", &[]);
}

#[test]
fn a_bad_expression_is_one_message_from_rank_0_and_exit_2_on_every_rank() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1000);
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    refused(&d, 3, &["map", &x, "-o", &out, "--expr", "sqrt(x"], 2, "invalid expression at column", &["x.npy"]);
    refused(&d, 2, &["map", &x, "-o", &out, "--expr", "x + y"], 2, "y", &["x.npy"]);
}

#[test]
fn bad_arguments_are_refused_like_shmpool_map_refuses_them() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1000);
    let x = d.s("x.npy");
    refused(&d, 2, &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x], 2, "map INPUT needs -o OUTPUT.npy", &["x.npy"]);
    refused(
        &d,
        2,
        &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &x],
        2,
        "is the input; pass --in-place",
        &["x.npy"],
    );
    let nowhere = d.s("no/such/dir/out.npy");
    refused(
        &d,
        2,
        &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &nowhere],
        2,
        "cannot create a file in",
        &["x.npy"],
    );
    refused(
        &d,
        2,
        &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &d.s("o.npy"), "-j", "0"],
        2,
        "-j must be at least 1",
        &["x.npy"],
    );
    let o = mpirun(&d, 2, &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &d.s("o.npy"), "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stderr).matches("unexpected argument").count(), 1, "{}", text(&o));
}

#[test]
fn progress_is_aggregated_on_rank_0_across_ranks() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 600_000);
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    let o = mpirun(&d, 3, &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "-j", "1", "--progress"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("progress: 100.0% 600000/600000 elements").count(), 1, "{}", text(&o));
    for line in err.lines().filter(|l| l.starts_with("progress:")) {
        assert!(line.contains("/600000 elements"), "every line counts all ranks' elements: {line}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.matches("mapped 600000 elements").count(), 1, "rank 0 alone reports: {}", text(&o));
}

#[test]
fn in_place_replaces_the_input_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 100_000);
    std::fs::set_permissions(d.path("x.npy"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let x = d.s("x.npy");
    shmpool_map(&[&x, "-o", &d.s("ref.npy"), "--expr", "x * 2 + i"]);
    let o = mpirun(&d, 2, &["map", &x, "-o", &x, "--in-place", "--expr", "x * 2 + i"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(&x).unwrap() == std::fs::read(d.path("ref.npy")).unwrap());
    assert_eq!(std::fs::metadata(&x).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(d.debris(&["x.npy", "ref.npy"]), Vec::<String>::new());
}

#[test]
fn an_empty_array_is_byte_identical_on_2_ranks() {
    let d = Dir::new();
    save(&d.path("e.npy"), Dtype::F64, &[0, 3], |_| 0f64);
    same_as_shmpool_map(&d, "e.npy", &["--expr", "x + i"], &[2]);
}
