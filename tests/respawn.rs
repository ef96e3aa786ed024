//! Replacing dead workers: a transient shortage (here a real EMFILE) during a replacement
//! costs capacity for a while, never for the pool's life; a pool left with no worker for
//! longer than a bound fails its maps with a clear error.
//!
//! This file holds one test on purpose: it lowers the process's descriptor limit, which would
//! make any other test running beside it in this process fail.

mod common;

use std::time::Duration;

use common::descriptors::{kill, wait_for_pids, LoweredLimit};
use common::start::{pool, METHODS};
use shmpool::{Error, StartMethod};

/// The lowered limit: 5, so that every descriptor this process creates fails with EMFILE, even
/// in the numbers a dead worker's socket and pidfd free (the pool's own descriptors, made first,
/// hold every number below 5). Not lower: `poll` refuses more descriptors than the limit, and a
/// 2-worker pool's supervisor polls 5.
const LIMIT: u64 = 5;

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
            let shortage = LoweredLimit::to(LIMIT);
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
        let shortage = LoweredLimit::to(LIMIT);
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
