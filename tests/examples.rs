//! Every example runs and prints what it promises. `cargo test` builds the examples before the
//! integration tests; we run the binaries it built.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> String {
    example_with(name, &[])
}

fn example_with(name: &str, args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path: PathBuf = dir.join("examples").join(name);
    assert!(path.exists(), "{} is missing: run the tests with `cargo test`, which builds examples", path.display());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out =
        common::watchdog(std::time::Duration::from_secs(120), move || Command::new(&path).args(args).output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn process_example_prints_child_then_parent() {
    assert_eq!(example("process"), "just for an example!\nMain process completed\n");
}

#[test]
fn latency_example_prints_percentiles_beside_the_in_process_baseline() {
    // `--quick`: a few thousand round trips (the figures are the lead's to read on a quiet
    // machine; here only that it runs, reports both lines and gets the right results).
    let out = example_with("latency", &["--quick"]);
    let line = |prefix: &str| out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{out}"));
    for l in [line("in-process (no pool)"), line("Pool::new(1) submit+wait_into")] {
        assert!(l.contains(" p50 ") && l.contains(" p99 ") && l.contains(" p99.9 ") && l.ends_with(" µs"), "{l}");
    }
    assert!(out.lines().any(|l| l == "results correct: true"), "{out}");
}

#[test]
fn pool_map_example_prints_doubled_results() {
    assert_eq!(example("pool_map"), "Results: [2, 4, 6, 8, 10]\n");
}

#[test]
fn four_processes_example_prints_each_process_then_completion() {
    let out = example("four_processes");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let mut first: Vec<&str> = lines[..4].to_vec();
    first.sort();
    assert_eq!(first, ["Process 0 prints: 0", "Process 1 prints: 1", "Process 2 prints: 2", "Process 3 prints: 3"]);
    assert_eq!(lines[4], "All processes completed");
}

#[test]
fn shared_array_example_verifies_w1() {
    let out = example("shared_array");
    assert!(out.contains("W1 over 10000000 elements: all verified"), "{out}");
    assert!(out.starts_with("ys[0..3] = [1.3106601717798214, 2.087117307087383, 2.6217082451262845]"), "{out}");
}

#[test]
fn pool_imap_example_streams_batches_in_order() {
    let out = example("pool_imap");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 9, "{out}");
    for (k, l) in lines[..8].iter().enumerate() {
        assert_eq!(*l, format!("batch {k}: 250000 values"));
    }
    assert_eq!(lines[8], "2000000 values, total 999000.0");
}

#[test]
fn npy_file_example_writes_a_correct_file() {
    assert_eq!(example("npy_file"), "out.npy: shape [1000, 1000], dtype float64, 0 wrong values\n");
}

#[test]
fn worker_crash_example_recovers_then_reports() {
    let out = example("worker_crash");
    assert!(out.contains("map with a killed worker: 20000 results, all correct: true"), "{out}");
    assert!(out.contains("workers that died so far: 1"), "{out}");
    assert!(out.contains("chunk 13000..14000 crashed 3 workers (signal 11); the pool stays usable"), "{out}");
    assert!(out.contains("next map: 20000 results, 2 workers alive"), "{out}");
}

#[test]
fn no_init_example_uses_every_start_method_and_runs_main_once() {
    let out = example("no_init");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "main starts",
            "Fork pool: [1, 2]",
            "Spawn pool: [1, 2]",
            "ForkServer pool: [1, 2]",
            "spawn_fn child: 7",
            "main ran once"
        ],
        "{out}"
    );
}

#[test]
fn a_copy_of_a_program_with_a_marker_but_no_parent_socket_exits_before_main_does_anything() {
    // A marker in shmpool's format naming a descriptor that is not a socket its parent made
    // (what a child whose parent died at once would see): the start-up hook ends it before
    // `main` prints anything.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join("examples").join("no_init");
    let out = Command::new(path).env("SHMPOOL_CHILD", "0:0123456789abcdef0123456789abcdef").output().unwrap();
    assert_eq!(out.status.code(), Some(86));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not its parent's"));
}

#[test]
fn ndarray_example_verifies_elementwise_and_row_maps() {
    let out = example("ndarray");
    assert_eq!(
        out,
        "elementwise over 1000x512: verified\nrow sums of 1000 rows: verified\n\
         transposed view doubled: [0.0, 4.0, 8.0, 2.0, 6.0, 10.0]\n"
    );
}

#[test]
fn zip_reduce_example_zips_three_inputs_and_reduces_deterministically() {
    let out = example("zip_reduce");
    assert!(out.contains("y[999] = a[999] * b[999] + c[999] = 5.495\n"), "{out}");
    assert!(out.contains("mean = 0.4995, std = 0.2887\n"), "{out}");
    assert!(out.contains("same bits on 1 worker: true\n"), "{out}");
}

#[test]
fn floor_map_example_writes_what_shmpool_map_writes() {
    use common::npy_files::{f64_npy, p, shmpool};
    let dir = tempfile::tempdir().unwrap();
    // floor_map's 1M-element chunks over 2.5M elements: two whole ones and a short one.
    let n = (5 << 20) / 2;
    let col = |k: f64| (0..n).map(|i| (i as f64 * k).sin() * 1e3).collect::<Vec<f64>>();
    let (a, b, c) = (col(0.5), col(0.25), col(-0.125));
    for (name, xs) in [("a.npy", &a), ("b.npy", &b), ("c.npy", &c)] {
        f64_npy(dir.path(), name, xs);
    }
    let (fa, fb, fc, floor, y) = (
        p(dir.path(), "a.npy"),
        p(dir.path(), "b.npy"),
        p(dir.path(), "c.npy"),
        p(dir.path(), "floor.npy"),
        p(dir.path(), "y.npy"),
    );
    example_with("floor_map", &["2", &floor, &fa, &fb, &fc]);
    let out = shmpool(&[
        "map",
        &format!("a={fa}"),
        &format!("b={fb}"),
        &format!("c={fc}"),
        "-o",
        &y,
        "--expr",
        "a * b + c",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (floor, y) = (std::fs::read(&floor).unwrap(), std::fs::read(&y).unwrap());
    assert!(floor == y, "floor_map and shmpool map wrote different files");
    let (_, data) = common::npy_files::read_out(dir.path().join("y.npy").as_path());
    let want: Vec<f64> = (0..n).map(|i| a[i] * b[i] + c[i]).collect();
    assert!(common::npy_files::f64s(&data) == want, "a * b + c, element by element");
}
