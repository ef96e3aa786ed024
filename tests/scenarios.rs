//! The test suite's one entry point for child programs (tests/common/scenario.rs): a test
//! binary started as `TESTBIN --shmpool-test-scenario NAME` runs scenario NAME before libtest
//! and exits with its outcome; shmpool's own exec'd children of a scenario never run it again.

mod common;

scenarios!(returns_on_a_named_thread, panics_with_a_message, maps_with_spawned_workers);

use std::time::Duration;

use shmpool::{Pool, StartMethod};

/// Prints the name of the thread it runs on.
fn returns_on_a_named_thread() {
    println!("scenario thread: {}", std::thread::current().name().unwrap_or("<none>"));
}

fn panics_with_a_message() {
    panic!("the scenario gives up");
}

/// A `Spawn` pool: its workers are exec'd copies of this binary, started with no arguments.
fn maps_with_spawned_workers() {
    let pool = Pool::builder().workers(2).start_method(StartMethod::Spawn).build().unwrap();
    assert_eq!(pool.map(&[1.0f64, 4.0, 9.0], f64::sqrt).unwrap(), [1.0, 2.0, 3.0]);
    println!("mapped with {} spawned workers", pool.pids().len());
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_scenario_that_returns_exits_0_before_libtest_runs_on_a_thread_named_after_it() {
    let out = common::run_scenario("returns_on_a_named_thread", LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("scenario thread: returns_on_a_named_thread"), "{stdout}");
    assert!(!stdout.contains("running ") && !stdout.contains("test result"), "libtest ran:\n{stdout}");
}

#[test]
fn a_scenario_that_panics_exits_101_with_its_message() {
    let out = common::run_scenario("panics_with_a_message", LIMIT);
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the scenario gives up"), "{out:?}");
}

#[test]
fn an_unknown_scenario_exits_2_naming_the_known_ones() {
    let out = common::run_scenario("no_such_scenario", LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("no_such_scenario") && stderr.contains("panics_with_a_message"), "{stderr}");
}

#[test]
fn the_exec_d_workers_of_a_scenario_do_not_run_it_again() {
    let out = common::run_scenario("maps_with_spawned_workers", LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout.matches("mapped with").count(), 1, "{stdout}");
    assert!(stdout.contains("mapped with 2 spawned workers"), "{stdout}");
}
