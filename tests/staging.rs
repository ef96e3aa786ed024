//! What a pool keeps of the staging buffers that plain slices too large to travel inline are
//! copied through: within `staging_cache_bytes` at all times, and nothing once it has been idle
//! for a moment, in the pool's process and in its workers' mappings alike.

mod common;

use std::time::Duration;

use shmpool::Pool;

/// Bytes of shmpool segments `pid` has mapped (from /proc/<pid>/maps).
fn shm_mapped(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| l.contains("/dev/shm/shmpool_"))
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some(usize::from_str_radix(b, 16).ok()? - usize::from_str_radix(a, 16).ok()?)
        })
        .sum()
}

fn staged_input(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i % 1000) as f64).collect()
}

#[test]
fn an_idle_pool_gives_its_staging_memory_back() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).build().unwrap();
        // Before any map, the workers map the ring only.
        let pids = pool.pids();
        let baseline: Vec<usize> = pids.iter().map(|&p| shm_mapped(p)).collect();
        for n in [300_000usize, 1_000_000, 2_000_000, 300_000] {
            let xs = staged_input(n);
            let ys = pool.map(&xs, |x: f64| x + 1.0).unwrap();
            assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x + 1.0));
        }
        assert!(pool.staging_bytes_for_test() > 0, "the spares are kept between maps");
        assert!(pids.iter().zip(&baseline).any(|(&p, &b)| shm_mapped(p) > b), "the workers mapped the staging buffers");
        // Idle: the supervisor drops the spares and the workers unmap them (a second or so;
        // the watchdog bounds the wait).
        while pool.staging_bytes_for_test() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (&p, &b) in pids.iter().zip(&baseline) {
            while shm_mapped(p) > b {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // And the pool still stages the next map as before.
        let xs = staged_input(300_000);
        assert_eq!(pool.map(&xs, |x: f64| x * 2.0).unwrap()[999], 1998.0);
    });
    common::assert_nothing_leaked();
}

#[test]
fn spare_staging_never_exceeds_the_cache_bound() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let cap = 6 << 20;
        let pool = Pool::builder().workers(2).staging_cache_bytes(cap).build().unwrap();
        std::thread::scope(|s| {
            for t in 0..2 {
                let pool = &pool;
                s.spawn(move || {
                    for round in 0..6 {
                        let n = [300_000usize, 500_000, 150_000][(round + t) % 3];
                        let xs = staged_input(n);
                        let ys = pool.submit(&xs, |x: f64| x - 1.0).unwrap().wait().unwrap();
                        assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x - 1.0));
                        let kept = pool.staging_bytes_for_test();
                        assert!(kept <= cap, "{kept} bytes of spare staging, above the {cap} bound");
                    }
                });
            }
        });
        // A pool told to keep nothing keeps nothing.
        let none = Pool::builder().workers(1).staging_cache_bytes(0).build().unwrap();
        let xs = staged_input(300_000);
        assert_eq!(none.map(&xs, |x: f64| x + 0.5).unwrap()[3], 3.5);
        assert_eq!(none.staging_bytes_for_test(), 0);
    });
    common::assert_nothing_leaked();
}
