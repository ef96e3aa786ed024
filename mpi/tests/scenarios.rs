//! Rank bodies on the test suite's one entry point for child programs
//! (tests/common/scenario.rs): mpirun starts `TESTBIN --shmpool-test-scenario NAME` on every
//! rank, and the job's exit code is what the tests that drive rank bodies rely on.

mod common;

scenarios!(rank_1_panics_while_rank_0_waits, every_rank_returns);

use common::{mpirun_cmd, scenario, text, Dir};
use mpi::traits::*;

/// Rank 1 panics under `abort_on_panic` while rank 0 waits in a barrier that rank 1 never
/// enters: only the hook's `MPI_Abort` can end the job.
fn rank_1_panics_while_rank_0_waits() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    if world.rank() == 1 {
        panic!("rank body of rank 1 gives up");
    }
    world.barrier();
}

/// Every rank initialises MPI, meets the others and returns.
fn every_rank_returns() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    world.barrier();
    println!("rank {} of {} returned", world.rank(), world.size());
}

/// mpirun running scenario `name` on `np` ranks, under `timeout` (`common::mpirun_cmd`).
fn on_ranks(d: &Dir, np: usize, name: &str) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    let args = scenario::args(name);
    mpirun_cmd(d, np, &exe, &[&args[0], &args[1]]).output().unwrap()
}

#[test]
fn a_rank_body_that_returns_on_every_rank_ends_the_job_with_0_without_libtest() {
    let d = Dir::new();
    let o = on_ranks(&d, 2, "every_rank_returns");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("rank 0 of 2 returned") && out.contains("rank 1 of 2 returned"), "{}", text(&o));
    assert!(!out.contains("test result"), "libtest ran in a rank: {}", text(&o));
}

#[test]
fn a_rank_body_that_panics_under_abort_on_panic_ends_the_job_with_101() {
    let d = Dir::new();
    let o = on_ranks(&d, 2, "rank_1_panics_while_rank_0_waits");
    // 137 would be `timeout`'s SIGKILL: the job hung in rank 0's barrier.
    assert_eq!(o.status.code(), Some(101), "MPI_Abort(101) ends the job: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rank body of rank 1 gives up"), "{}", text(&o));
    // The hook's abort, not the rank's exit status (101 too) after a finished unwind: mpirun's
    // banner says so, or, when Open MPI loses that banner (about one run in three here: its
    // show_help fails to unpack it), the error it logs instead.
    let banner = err.contains("MPI_ABORT was invoked on rank 1");
    let lost = err.contains("show_help.c");
    assert!(banner || lost, "{}", text(&o));
}

#[test]
fn a_rank_body_this_binary_does_not_list_fails_the_job() {
    let d = Dir::new();
    let o = on_ranks(&d, 2, "no_such_rank_body");
    assert!(!o.status.success(), "{}", text(&o));
    assert_ne!(o.status.code(), Some(137), "the job hung: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no scenario \"no_such_rank_body\""), "{}", text(&o));
}
