//! The small-batch round trip (`submit` + `wait_into`) when the caller and its worker share one
//! CPU: each side spins only as long as it may, then yields the core to the other, so round
//! trips go on (and are right) instead of each waiting out its spin budget or a time slice.

mod common;

use std::time::Duration;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use shmpool::Pool;

/// The first CPU this process may use.
fn first_cpu() -> usize {
    let set = sched_getaffinity(Pid::from_raw(0)).unwrap();
    (0..CpuSet::count()).find(|&c| set.is_set(c).unwrap_or(false)).unwrap()
}

fn only(cpu: usize) -> CpuSet {
    let mut set = CpuSet::new();
    set.set(cpu).unwrap();
    set
}

#[test]
fn a_caller_and_its_worker_pinned_to_one_cpu_hand_off_round_trips() {
    let _g = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::new(1).unwrap();
        let cpu = first_cpu();
        // The caller is this watchdog thread; the worker is the pool's one process.
        sched_setaffinity(Pid::from_raw(0), &only(cpu)).unwrap();
        sched_setaffinity(Pid::from_raw(pool.pids()[0] as i32), &only(cpu)).unwrap();
        let batch: Vec<f64> = (0..1024).map(|i| f64::from(i) + 0.5).collect();
        let want: Vec<f64> = batch.iter().map(|x| x.sqrt() * 1.5 + 0.25).collect();
        let mut out = vec![0.0f64; batch.len()];
        for round in 0..5_000 {
            out.fill(0.0);
            pool.submit(&batch, |x: f64| x.sqrt() * 1.5 + 0.25).unwrap().wait_into(&mut out).unwrap();
            assert_eq!(out, want, "round {round}");
        }
        drop(pool);
    });
    common::assert_nothing_leaked();
}
