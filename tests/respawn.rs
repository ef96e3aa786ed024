//! Replacing dead workers: a transient shortage (here a real EMFILE) during a replacement
//! costs capacity for a while, never for the pool's life; a pool left with no worker for
//! longer than a bound fails its maps with a clear error.
//!
//! This file holds one test on purpose: it lowers the process's descriptor limit, which would
//! make any other test running beside it in this process fail.

mod common;

use std::time::Duration;

use common::start::{pool, METHODS};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use shmpool::{Error, StartMethod};

/// Lowers the soft descriptor limit to 5 so that every descriptor this process creates fails
/// with EMFILE, even in the numbers a dead worker's socket and pidfd free (the pool's own
/// descriptors, made first, hold every number below 5); restores it when dropped. Not lower:
/// `poll` refuses more descriptors than the limit, and a 2-worker pool's supervisor polls 5.
/// Nothing here may read a file while it holds.
struct NoMoreDescriptors {
    soft: u64,
    hard: u64,
}

impl NoMoreDescriptors {
    fn now() -> NoMoreDescriptors {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, 5, hard).unwrap();
        NoMoreDescriptors { soft, hard }
    }
}

impl Drop for NoMoreDescriptors {
    fn drop(&mut self) {
        setrlimit(Resource::RLIMIT_NOFILE, self.soft, self.hard).unwrap();
    }
}

fn kill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Waits (reading no file: there are no descriptors to spare) until `pool` lists `n` workers,
/// none of them in `gone`.
fn wait_for_pids(pool: &shmpool::Pool, n: usize, gone: &[u32]) -> Vec<u32> {
    loop {
        let pids = pool.pids();
        if pids.len() == n && !pids.iter().any(|p| gone.contains(p)) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_replacement_that_meets_emfile_is_retried_until_the_pool_is_whole_again_and_no_worker_at_all_fails_maps() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(240), || {
        let xs: Vec<f64> = (0..3_000).map(f64::from).collect();
        let want: Vec<f64> = xs.iter().map(|x| x + 0.5).collect();
        for method in METHODS {
            let p = pool(method, 2);
            assert_eq!(p.map(&xs, |x: f64| x + 0.5).unwrap(), want);
            let victim = p.pids()[0];
            let shortage = NoMoreDescriptors::now();
            kill(victim);
            // The death is handled and its replacement fails (no descriptor for its socket).
            wait_for_pids(&p, 1, &[victim]);
            // The pool still maps with the worker it has.
            assert_eq!(p.map(&[1.0f64, 2.0], |x: f64| x + 0.5).unwrap(), [1.5, 2.5], "{method:?}: one worker maps");
            drop(shortage);
            // The shortage is over: the missing worker is started again.
            let pids = wait_for_pids(&p, 2, &[victim]);
            assert!(pids.iter().all(|&pid| common::pid_alive(pid)), "{method:?}: {pids:?}");
            assert_eq!(p.respawns(), 1, "{method:?}");
            assert_eq!(p.map(&xs, |x: f64| x + 0.5).unwrap(), want, "{method:?}: the whole pool maps");
        }
        // No worker at all, and none can be started: maps fail with a clear error, after a
        // bounded wait, instead of waiting for ever.
        let p = pool(StartMethod::Fork, 2);
        let pids = p.pids();
        let shortage = NoMoreDescriptors::now();
        for &pid in &pids {
            kill(pid);
        }
        wait_for_pids(&p, 0, &pids);
        let r = p.map(&[1.0f64, 2.0], |x: f64| x + 0.5);
        drop(shortage);
        match r {
            Err(Error::PoolBroken { reason }) => {
                assert!(reason.contains("no worker could be started"), "{reason}");
                assert!(reason.contains("Too many open files") || reason.contains("os error 24"), "{reason}");
            }
            other => panic!("expected a broken pool, got {other:?}"),
        }
        drop(p);
        common::start::assert_nothing_leaked();
    });
}
