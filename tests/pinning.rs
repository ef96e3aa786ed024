//! Pinning: a worker running a large chunk is pinned to one CPU of the building thread's
//! affinity mask, never outside it, and the workers of different pools of one process are
//! spread over the CPUs instead of all taking the first.

mod common;

scenarios!(pinning_child_under_a_restricted_mask);

use std::time::Duration;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use shmpool::{Pool, SharedVec, StartMethod};

/// Elements per chunk: 2 MiB of input and output, above the 1 MiB at which workers pin.
const LEN: usize = 1 << 17;

/// The CPUs the calling thread (or, in a worker, the process) may run on.
fn allowed() -> Vec<usize> {
    let set = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect()
}

/// A chunk kernel that reports, in every output element, the CPU mask of the worker running it
/// (bit `c` for CPU `c`, CPUs 0..64; CPUs above are reported as bit 63).
fn report_mask(_: &[u64], out: &mut [u64]) {
    let mask = allowed().into_iter().fold(0u64, |m, c| m | 1u64 << c.min(63));
    out.fill(mask);
}

/// The mask a worker of `pool` has while it runs one large chunk.
fn mask_while_running(pool: &Pool) -> u64 {
    let xs = SharedVec::<u64>::zeroed(LEN).unwrap();
    let mut ys = pool.alloc::<u64>(LEN).unwrap();
    pool.map_into(&xs, &mut ys, report_mask).unwrap();
    assert!(ys.iter().all(|&m| m == ys[0]));
    ys[0]
}

fn cpus_of(mask: u64) -> Vec<usize> {
    (0..64).filter(|c| mask >> c & 1 == 1).collect()
}

#[test]
fn two_one_worker_pools_pin_to_different_cpus() {
    let _serial = common::serial();
    let cpus = allowed();
    if cpus.len() < 2 {
        eprintln!("skipped: this thread may run on {cpus:?} only");
        return;
    }
    common::watchdog(Duration::from_secs(120), move || {
        let a = Pool::builder().workers(1).chunk_len(LEN).build().unwrap();
        let b = Pool::builder().workers(1).chunk_len(LEN).build().unwrap();
        let (ma, mb) = (mask_while_running(&a), mask_while_running(&b));
        assert_eq!(cpus_of(ma).len(), 1, "pool a's worker is not pinned: {:?}", cpus_of(ma));
        assert_eq!(cpus_of(mb).len(), 1, "pool b's worker is not pinned: {:?}", cpus_of(mb));
        assert_ne!(ma, mb, "both pools pinned their worker to CPU {:?}", cpus_of(ma));
        // A pool built after one is dropped takes the CPU that was freed.
        let freed = ma;
        drop(a);
        let c = Pool::builder().workers(1).chunk_len(LEN).build().unwrap();
        assert_eq!(mask_while_running(&c), freed, "the freed CPU was not reused");
    });
    common::assert_nothing_leaked();
}

/// The child half of `pinning_stays_inside_a_restricted_affinity_mask`: a scenario, run with
/// the CPU to keep in `PIN_TEST_CPU`.
fn pinning_child_under_a_restricted_mask() {
    let cpu: usize = std::env::var("PIN_TEST_CPU").expect("PIN_TEST_CPU").parse().unwrap();
    let mut one = CpuSet::new();
    one.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    // (Fork: the other start methods need `init()`, which this test binary does not call.)
    let pool = Pool::builder().workers(1).chunk_len(LEN).start_method(StartMethod::Fork).build().unwrap();
    let mask = mask_while_running(&pool);
    assert_eq!(cpus_of(mask), [cpu], "pinned outside the mask");
    drop(pool);
    // More workers than the mask has CPUs: none is pinned (they would be stacked), and none
    // runs outside the mask.
    let pool = Pool::builder().workers(2).chunk_len(LEN).build().unwrap();
    let mask = mask_while_running(&pool);
    assert_eq!(cpus_of(mask), [cpu], "ran outside the mask");
    println!("child ok");
}

#[test]
fn pinning_stays_inside_a_restricted_affinity_mask() {
    let cpus = allowed();
    // The last CPU we may use: a pool that pinned to "CPU 0" or to the first CPU of the
    // machine would show.
    let cpu = *cpus.last().unwrap();
    let mut child = common::scenario::command("pinning_child_under_a_restricted_mask");
    child.env("PIN_TEST_CPU", cpu.to_string());
    let out = common::scenario::output_within(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child ok"),
        "child failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
