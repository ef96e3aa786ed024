//! The `shmpool` binary: the main job and the exit codes.

mod common;

use std::process::Command;

fn shmpool(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    common::watchdog(std::time::Duration::from_secs(120), move || {
        Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).output().unwrap()
    })
}

#[test]
fn map_without_input_runs_and_verifies_w1() {
    let out = shmpool(&["map", "--len", "2000000", "--repeat", "2", "-j", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("verified: all 2000000 elements bit-identical"), "{stdout}");
    assert!(stdout.contains("Melem/s"), "{stdout}");
    assert!(stdout.contains("2 workers"), "{stdout}");
}

#[test]
fn usage_errors_exit_with_code_2() {
    assert_eq!(shmpool(&["map", "-j", "0"]).status.code(), Some(2));
    assert_eq!(shmpool(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn info_reports_dev_shm() {
    let out = shmpool(&["info"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/dev/shm:"));
}

#[test]
fn map_without_input_can_write_its_result() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("w1.npy");
    let o = shmpool(&["map", "--len", "10000", "--repeat", "1", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let arr = shmpool::NpyArray::open(&out).unwrap();
    assert_eq!(arr.shape(), &[10000]);
    let ys = arr.as_slice::<f64>().unwrap();
    assert_eq!(ys[7].to_bits(), common::workloads::w1(7.5).to_bits());
}

#[test]
fn bench_quick_prints_every_workload_with_baselines() {
    let o = shmpool(&["bench", "--quick", "--runs", "1", "--json"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in ["W1 sqrt", "W2 64x sin", "single thread", "rayon", "shmpool --expr", "p99_us", "startup"] {
        assert!(s.contains(needle), "missing {needle}: {s}");
    }
}
