//! Every example runs and prints what it promises. `cargo test` builds the examples before the
//! integration tests; we run the binaries it built.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path: PathBuf = dir.join("examples").join(name);
    assert!(path.exists(), "{} is missing: run the tests with `cargo test`, which builds examples", path.display());
    let out = common::watchdog(std::time::Duration::from_secs(120), move || Command::new(&path).output().unwrap());
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
fn no_init_example_gets_clear_errors_and_runs_main_once() {
    let out = example("no_init");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("Spawn pool: StartMethod::Spawn needs shmpool::init()"), "{out}");
    assert!(lines[1].starts_with("spawn_fn: Process::spawn_fn needs shmpool::init()"), "{out}");
    assert!(
        lines.iter().all(|l| !l.contains("needs") || l.ends_with("call shmpool::init() at the top of main")),
        "{out}"
    );
    assert_eq!(lines[2..], ["Fork pool: [1, 2]", "main ran once"]);
}

#[test]
fn a_program_without_init_started_as_a_spawned_child_exits_before_main_does_anything() {
    // What a spawned child of such a program sees: the marker, but no init() in main. Its first
    // shmpool call ends it with the distinct code, before it prints anything.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join("examples").join("no_init");
    let out = Command::new(path).env("SHMPOOL_CHILD_FD", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(86));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without init()"));
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
