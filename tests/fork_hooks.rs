//! `shmpool::set_fork_hooks`: the callbacks an embedding interpreter sets around every fork
//! shmpool makes (the Python package: GIL, `PyOS_BeforeFork`, `PyOS_AfterFork_*`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shmpool::{ForkHooks, Pool, StartMethod};

static BEFORE: AtomicU64 = AtomicU64::new(0);
static AFTER_PARENT: AtomicU64 = AtomicU64::new(0);
/// Set by `after_child` in forked children only.
static IN_CHILD: AtomicU64 = AtomicU64::new(0);

fn before() {
    BEFORE.fetch_add(1, Ordering::SeqCst);
}

fn after_parent() {
    AFTER_PARENT.fetch_add(1, Ordering::SeqCst);
}

fn after_child() {
    IN_CHILD.store(1000, Ordering::SeqCst);
}

fn counts() -> (u64, u64) {
    (BEFORE.load(Ordering::SeqCst), AFTER_PARENT.load(Ordering::SeqCst))
}

#[test]
fn every_fork_runs_the_hooks_and_the_child_hook_runs_before_the_worker() {
    let _serial = common::serial();
    shmpool::set_fork_hooks(Some(ForkHooks { before, after_parent, after_child }));
    let (b0, a0) = counts();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).start_method(StartMethod::Fork).build().unwrap();
        let xs: Vec<u64> = (0..50_000).collect();
        // Every chunk ran in a worker whose `after_child` had run.
        let ys = pool.map(&xs, |x: u64| x + IN_CHILD.load(Ordering::SeqCst)).unwrap();
        assert!(xs.iter().zip(&ys).all(|(x, y)| *y == x + 1000));
    });
    let (b1, a1) = counts();
    assert_eq!((b1 - b0, a1 - a0), (2, 2), "one before and one after_parent per forked worker");
    assert_eq!(IN_CHILD.load(Ordering::SeqCst), 0, "after_child ran in the parent");
    shmpool::set_fork_hooks(None);
}

#[test]
fn removed_hooks_run_no_more() {
    let _serial = common::serial();
    shmpool::set_fork_hooks(Some(ForkHooks { before, after_parent, after_child }));
    shmpool::set_fork_hooks(None);
    let (b0, a0) = counts();
    let ys = common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(1).start_method(StartMethod::Fork).build().unwrap();
        pool.map(&[1u64, 2], |x: u64| x + IN_CHILD.load(Ordering::SeqCst)).unwrap()
    });
    assert_eq!(ys, [1, 2]);
    assert_eq!(counts(), (b0, a0));
}
