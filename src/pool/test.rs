#![cfg(test)]

use super::*;

#[test]
fn zero_workers_is_an_invalid_option() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidOption { option: "workers", value: 0, .. })));
    assert!(matches!(
        Pool::builder().workers(1).max_attempts(0).build(),
        Err(Error::InvalidOption { option: "max_attempts", .. })
    ));
}

#[test]
fn closed_pool_refuses_work_and_join_needs_close() {
    let pool = Pool::new(1).unwrap();
    assert!(matches!(pool.join(), Err(Error::JoinWhileOpen)));
    assert_eq!(pool.map(&[1u32], |x: u32| x + 1).unwrap(), [2]);
    pool.close();
    assert!(matches!(pool.map(&[1u32], |x: u32| x + 1), Err(Error::PoolClosed)));
    pool.join().unwrap();
    assert!(pool.pids().is_empty());
}
