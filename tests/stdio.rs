//! A program that closed its stderr: shmpool's descriptors never take the number 2, and
//! workers write their diagnostics only to the program's stderr as it was when the first pool
//! was built (a duplicate checked with `fstat`), never to whatever now has the number 2.
//!
//! The programs are scenarios: this test binary re-run as a child program
//! (tests/common/scenario.rs).

mod common;

scenarios!(program_with_stderr_closed_before_its_pool, program_with_stderr_closed_after_its_first_pool);

use std::time::Duration;

use shmpool::{Error, Pool, StartMethod};

fn panics_on_positive(x: f64) -> f64 {
    if x > 0.0 {
        eprintln!("a kernel that prints to stderr, then panics");
        panic!("kernel panic on purpose");
    }
    x
}

/// `n` maps whose kernel panics (and prints to stderr first), then a map that must be right.
fn panic_n_times_then_map(pool: &Pool, n: usize) {
    for i in 0..n {
        match pool.map(&[1.0f64, 2.0], panics_on_positive) {
            Err(Error::KernelPanicked { .. }) => {}
            other => panic!("panic {i}: expected KernelPanicked, got {other:?}"),
        }
    }
    let xs: Vec<f64> = (0..200_000).map(|i| -(i as f64)).collect();
    let ys = pool.map(&xs, panics_on_positive).unwrap_or_else(|e| panic!("the pool broke after {n} panics: {e}"));
    assert_eq!(ys, xs, "wrong results after {n} panics");
}

fn run_child(name: &str) -> std::process::Output {
    common::run_scenario(name, Duration::from_secs(120))
}

fn close_stderr() {
    // SAFETY: closing fd 2 is what the program under test does; nothing in this process uses
    // a `File` or `OwnedFd` for it.
    assert_eq!(unsafe { libc::close(2) }, 0);
}

/// A scenario of `a_closed_stderr_never_lets_worker_diagnostics_into_the_ring`.
fn program_with_stderr_closed_before_its_pool() {
    close_stderr();
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
        panic_n_times_then_map(&pool, 50);
    }
    println!("CLOSED BEFORE OK");
}

/// A scenario of `a_closed_stderr_never_lets_worker_diagnostics_into_the_ring`.
fn program_with_stderr_closed_after_its_first_pool() {
    let first = Pool::builder().workers(1).start_method(StartMethod::Fork).build().unwrap();
    close_stderr();
    let pool = Pool::builder().workers(2).start_method(StartMethod::Fork).build().unwrap();
    panic_n_times_then_map(&pool, 20);
    panic_n_times_then_map(&first, 5);
    drop((pool, first));
    println!("CLOSED AFTER OK");
}

#[test]
fn a_closed_stderr_never_lets_worker_diagnostics_into_the_ring() {
    let _serial = common::serial();
    let before = run_child("program_with_stderr_closed_before_its_pool");
    let out = String::from_utf8_lossy(&before.stdout);
    assert!(
        before.status.success() && out.contains("CLOSED BEFORE OK"),
        "stderr closed before the pool: {:?}\n{out}",
        before.status
    );

    let after = run_child("program_with_stderr_closed_after_its_first_pool");
    let (out, err) = (String::from_utf8_lossy(&after.stdout), String::from_utf8_lossy(&after.stderr));
    assert!(
        after.status.success() && out.contains("CLOSED AFTER OK"),
        "stderr closed later: {:?}\n{out}\n{err}",
        after.status
    );
    // The panic reports still reach the program's real stderr, through the duplicate taken
    // when the first pool was built.
    let reports = err.lines().filter(|l| l.contains("panicked") && l.contains("kernel panic on purpose")).count();
    assert_eq!(reports, 25, "worker panic reports on the program's stderr:\n{err}");
    common::assert_nothing_leaked();
}
