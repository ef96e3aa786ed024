//! A descriptor limit lowered below what the supervisor polls (1 + 2 × workers) after the pool
//! was built: the supervisor still notices deaths and replaces workers, instead of spinning on
//! `poll`'s EINVAL and never noticing anything.
//!
//! This file holds one test on purpose: it lowers the process's descriptor limit, which would
//! make any other test running beside it in this process fail.

mod common;

use std::time::Duration;

use common::descriptors::{kill, wait_for_pids, LoweredLimit};
use shmpool::StartMethod;

#[test]
fn deaths_are_noticed_when_the_descriptor_limit_is_below_the_supervisors_poll_set() {
    common::watchdog(Duration::from_secs(120), || {
        let xs: Vec<f64> = (0..3_000).map(f64::from).collect();
        let want: Vec<f64> = xs.iter().map(|x| x + 0.5).collect();
        // 4 workers: the supervisor polls 9 descriptors, more than the limit of 4 below.
        let p = common::start::pool(StartMethod::Fork, 4);
        assert_eq!(p.map(&xs, |x: f64| x + 0.5).unwrap(), want);
        let victims = p.pids();
        let limit = LoweredLimit::to(4);
        // Three workers die, the last ones' pidfds beyond the first part of a split poll set
        // (one stays, so that the pool never has no worker at all).
        let victims = &victims[1..];
        for &pid in victims {
            kill(pid);
        }
        // Each death is noticed (replacements fail for now: no descriptor to spare).
        wait_for_pids(&p, 1, victims);
        drop(limit);
        // The limit is back: the pool is whole again and maps.
        let pids = wait_for_pids(&p, 4, victims);
        assert!(pids.iter().all(|&pid| common::pid_alive(pid)), "{pids:?}");
        assert_eq!(p.map(&xs, |x: f64| x + 0.5).unwrap(), want);
        drop(p);
        common::start::assert_nothing_leaked();
    });
}
