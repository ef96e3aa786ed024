//! Pool start-up and shutdown: workers exist while the pool does, use no CPU while idle, and
//! are gone (with every segment) after drop, close/join or terminate.

mod common;

use std::time::Duration;

use shmpool::Pool;

#[test]
fn idle_pool_uses_almost_no_cpu() {
    let pool = Pool::new(2).unwrap();
    // Some work first, so the workers have been through their spin phase.
    pool.map(&[1.0f64; 1000], |x: f64| x * 2.0).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pids = pool.pids();
    assert_eq!(pids.len(), 2);
    let before: Vec<u64> = pids.iter().map(|&p| common::cpu_ticks(p).unwrap()).collect();
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    assert!(hz > 0.0);
    for (p, b) in pids.iter().zip(before) {
        let used = (common::cpu_ticks(*p).unwrap() - b) as f64 / hz;
        let share = used / secs;
        assert!(share < 0.02, "worker {p} used {:.1}% of a core while idle", share * 100.0);
    }
}

#[test]
fn dropping_the_pool_ends_workers_and_leaves_no_segment() {
    let pool = Pool::new(3).unwrap();
    let pids = pool.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| common::pid_alive(p)));
    assert!(common::our_segments().is_empty(), "segment names are unlinked right after creation");
    drop(pool);
    common::assert_pids_gone(&pids);
    assert!(common::our_segments().is_empty());
}

#[test]
fn close_then_join_and_terminate_end_workers() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    pool.close();
    pool.join().unwrap();
    common::assert_pids_gone(&pids);

    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    pool.terminate();
    common::assert_pids_gone(&pids);
    assert!(matches!(pool.map(&[1u8], |x: u8| x), Err(shmpool::Error::PoolClosed)));
}

#[test]
fn many_pools_in_a_row_leak_nothing() {
    let mut all = Vec::new();
    for i in 0..20 {
        let pool = Pool::new(1 + i % 3).unwrap();
        all.extend(pool.pids());
        assert_eq!(pool.map(&[i as u32], |x: u32| x + 1).unwrap(), [i as u32 + 1]);
    }
    common::assert_pids_gone(&all);
    assert!(common::our_segments().is_empty());
}

#[test]
fn a_pool_survives_the_thread_that_created_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits; workers are forked by the pool's
    // own supervisor thread, so a short-lived creating thread does not take them down.
    let pool = std::thread::spawn(|| Pool::new(2).unwrap()).join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pids = pool.pids();
    assert!(pids.iter().all(|&p| common::pid_alive(p)), "workers died with their creating thread");
    assert_eq!(pool.map(&[1i16, 2], |x: i16| -x).unwrap(), [-1, -2]);
}
