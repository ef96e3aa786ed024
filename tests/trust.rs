//! The trust promises, tested as a hostile embedding program would break them: cancellation
//! from another thread, a thread holding std's stdout lock while workers are forked, kernels
//! and strangers that scribble over the ring, a forked child using its parent's pool, dropped
//! arrays pinned in workers, type confusion and size overflow. Each test fails on the engine
//! before these fixes (hang, early return, wrong process touched, or UB-reachable `Ok`).

mod common;

use shmpool::KernelExt;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::workloads::{pattern, w1, w1_chunk};
use shmpool::{Error, KernelSpec, Pool, Process, SharedVec};

/// W1 on a chunk in 20 ms or more (the stimulus: maps that are still running).
fn slow_chunk(xs: &[f64], ys: &mut [f64]) {
    std::thread::sleep(Duration::from_millis(20));
    w1_chunk(xs, ys);
}

/// Asserts that none of `pids` is a live process (zombies count as dead).
fn all_dead(pids: &[u32]) {
    for &p in pids {
        assert!(!common::pid_alive(p), "worker {p} is still alive");
    }
}

#[test]
fn terminate_from_another_thread_cancels_a_running_map_after_reaping_its_workers() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Arc::new(Pool::builder().workers(2).chunk_len(1_000).build().unwrap());
        let pids = pool.pids();
        let xs = SharedVec::from_slice(&(0..200_000).map(pattern).collect::<Vec<_>>()).unwrap();
        let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
        let p2 = pool.clone();
        let killer = std::thread::spawn(move || {
            common::ring_words::await_slot_state(&p2, common::ring_words::CLAIMED); // the map runs
            p2.terminate();
        });
        let r = pool.map_into(&xs, &mut ys, slow_chunk);
        // Returned: no worker may still be able to write `ys`.
        all_dead(&pids);
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        killer.join().unwrap();
        assert!(matches!(pool.map(&[1.0f64], w1), Err(Error::PoolClosed)));
    });
    common::assert_nothing_leaked();
}

#[test]
fn close_and_join_from_another_thread_let_the_running_map_finish() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Arc::new(Pool::builder().workers(2).chunk_len(5_000).build().unwrap());
        let xs = SharedVec::from_slice(&(0..100_000).map(pattern).collect::<Vec<_>>()).unwrap();
        let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
        let p2 = pool.clone();
        let closer = std::thread::spawn(move || {
            common::ring_words::await_slot_state(&p2, common::ring_words::CLAIMED); // the map runs
            p2.close();
            p2.join()
        });
        pool.map_into(&xs, &mut ys, slow_chunk).expect("a map started before close() completes, as in Python");
        assert!(xs.iter().zip(ys.iter()).all(|(x, y)| w1(*x).to_bits() == y.to_bits()));
        closer.join().unwrap().unwrap();
        assert!(pool.pids().is_empty());
    });
    common::assert_nothing_leaked();
}

#[test]
fn respawned_workers_do_not_deadlock_on_a_stdout_lock_held_by_another_thread() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        // A "logger" that holds std's stdout lock almost all the time.
        let logger = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let lock = std::io::stdout().lock();
                std::thread::sleep(Duration::from_millis(2)); // the workload, not a synchronisation
                drop(lock);
            }
        });
        // One chunk per worker: every chunk forks a replacement while the logger may hold the lock.
        let pool = Pool::builder().workers(1).chunk_len(100).max_chunks_per_worker(1).build().unwrap();
        let xs: Vec<f64> = (0..3_000).map(pattern).collect();
        let ys = pool.map(&xs, w1).unwrap();
        assert!(xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()));
        assert!(pool.respawns() >= 20, "{} respawns", pool.respawns());
        assert_eq!(pool.worker_deaths(), 0, "every recycled worker exited on its own");
        drop(pool);
        stop.store(true, Ordering::Relaxed);
        logger.join().unwrap();
    });
    common::assert_nothing_leaked();
}

/// Maps the pool's ring into this process, as a scribbling kernel (or a stray pointer in any
/// process that can see it) would.
fn map_ring(pool: &Pool) -> memmap2::MmapMut {
    let fd = pool.ring_fd_for_test().try_clone_to_owned().unwrap();
    // SAFETY: test only: we deliberately write into memory the pool shares, to check that it
    // detects it; nothing in this process reads the mapping as typed data.
    unsafe { memmap2::MmapMut::map_mut(&File::from(fd)) }.unwrap()
}

#[test]
fn slots_rewritten_as_done_while_chunks_run_make_the_map_fail_after_the_workers_are_dead() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).chunk_len(1_000).build().unwrap();
        let pids = pool.pids();
        let xs = SharedVec::from_slice(&(0..100_000).map(pattern).collect::<Vec<_>>()).unwrap();
        let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
        let mut ring = map_ring(&pool);
        let offsets = pool.slot_offsets_for_test();
        let r = std::thread::scope(|s| {
            let h = s.spawn(|| pool.map_into(&xs, &mut ys, slow_chunk));
            let running = |st: &[u32]| st.contains(&common::ring_words::CLAIMED);
            common::ring_words::await_slots(&pool, "the map's chunks run", running);
            // Every FILLED or CLAIMED slot suddenly says DONE (state word = 3).
            for &o in &offsets {
                let state = u32::from_ne_bytes(ring[o..o + 4].try_into().unwrap());
                if state == 1 || state == 2 {
                    ring[o..o + 4].copy_from_slice(&3u32.to_ne_bytes());
                }
            }
            h.join().unwrap()
        });
        all_dead(&pids);
        assert!(matches!(r, Err(Error::CorruptSlot { .. })), "expected CorruptSlot, got {r:?}");
        assert!(matches!(pool.map(&[1.0f64], w1), Err(Error::PoolBroken { .. })));
    });
    common::assert_nothing_leaked();
}

/// A chunk kernel that writes 4 KiB of zeros past the end of its output.
fn overrunning_chunk(xs: &[f64], ys: &mut [f64]) {
    w1_chunk(xs, ys);
    // SAFETY: none — this is the buggy kernel under test. In an inline map its output lies in a
    // slot payload of the ring mapping, and the bytes after it belong to the ring (the next
    // slot's header and descriptor) or to the mapping's end padding.
    unsafe { std::ptr::write_bytes(ys.as_mut_ptr().add(ys.len()).cast::<u8>(), 0, 4096) };
}

#[test]
fn a_kernel_writing_past_its_inline_output_never_hangs_returns_early_or_panics_the_parent() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        for round in 0..4 {
            let pool = Pool::builder().workers(2).chunk_len(64).payload_bytes(2048).slots(8).build().unwrap();
            let pids = pool.pids();
            let xs: Vec<f64> = (0..2_000).map(|i| pattern(i + round)).collect();
            let spec = KernelSpec::chunk(overrunning_chunk);
            match pool.map(&xs, spec.typed::<f64, f64>().unwrap()) {
                // The overrun only hit this map's own outputs (other chunks' inline results):
                // DESIGN allows a buggy kernel to corrupt its own output. What it must not do is
                // hang the map, return it early or panic the parent.
                Ok(got) => assert_eq!(got.len(), xs.len()),
                Err(Error::CorruptSlot { .. } | Error::PoolBroken { .. }) => all_dead(&pids),
                // Past the end of the ring mapping the write faults, or it lands in the worker's
                // own memory: the worker dies on it (a crash, or an exit after it broke itself).
                Err(Error::WorkerCrashed { .. }) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn random_bytes_over_slot_headers_and_descriptors_give_an_error_or_the_right_answer() {
    let _serial = common::serial();
    let seed: u64 = std::env::var("SHMPOOL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand_seed);
    println!("scribble seed {seed} (rerun with SHMPOOL_SEED={seed})");
    common::watchdog(Duration::from_secs(120), move || {
        let mut rng = seed;
        let mut next = move || {
            // xorshift64*: deterministic from the printed seed.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let xs: Vec<f64> = (0..20_000).map(pattern).collect();
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..12 {
            let pool = Pool::builder().workers(2).chunk_len(500).build().unwrap();
            let pids = pool.pids();
            let mut ring = map_ring(&pool);
            let offsets = pool.slot_offsets_for_test();
            let hits: Vec<(usize, u8)> = (0..1 + next() % 6)
                .map(|_| {
                    let o = offsets[(next() % offsets.len() as u64) as usize] + (next() % 192) as usize;
                    (o, next() as u8)
                })
                .collect();
            let r = std::thread::scope(|s| {
                let h = s.spawn(|| {
                    pool.map(&xs, |x: f64| {
                        std::thread::sleep(Duration::from_micros(2));
                        w1(x)
                    })
                });
                // The stimulus: the bytes land at a random moment of the map.
                std::thread::sleep(Duration::from_millis(1 + next() % 20));
                for &(o, b) in &hits {
                    ring[o] = b;
                }
                h.join().unwrap()
            });
            match r {
                Ok(ys) => {
                    assert!(
                        xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()),
                        "wrong answer, seed {seed}"
                    );
                    ok += 1;
                }
                Err(Error::CorruptSlot { .. } | Error::PoolBroken { .. } | Error::LockTimeout(_)) => {
                    all_dead(&pids);
                    refused += 1;
                }
                Err(e) => panic!("unexpected error {e:?}, seed {seed}"),
            }
        }
        println!("{ok} maps right, {refused} refused");
    });
    common::assert_nothing_leaked();
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
}

#[test]
fn a_forked_child_cannot_use_or_tear_down_its_parents_pool() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = std::sync::Arc::new(Pool::new(2).unwrap());
        let pids = pool.pids();
        // `Process::spawn` takes a `'static` closure: the child owns a handle to the pool.
        let inherited = std::sync::Arc::clone(&pool);
        let child = Process::spawn(move || {
            let pool = &*inherited;
            let xs = SharedVec::from_slice(&[1.0f64, 4.0, 9.0]).unwrap();
            let mut ys = SharedVec::<f64>::zeroed(3).unwrap();
            let wrong = |r: shmpool::Result<()>| !matches!(r, Err(Error::WrongProcess { .. }));
            if wrong(pool.map_into(&xs, &mut ys, w1_chunk)) || wrong(pool.map(&[1.0f64], w1).map(|_| ())) {
                shmpool_exit(1);
            }
            pool.close();
            pool.terminate();
            if wrong(pool.join()) {
                shmpool_exit(2);
            }
            // A bitwise copy of the handle dropped here stands for a child that owns its copy.
            // SAFETY: the original is never used in this child again and the child leaves with
            // `_exit`, so the copy is the only handle dropped here.
            drop(unsafe { std::ptr::read(pool) });
            shmpool_exit(0);
        })
        .unwrap();
        assert_eq!(child.join().unwrap().code(), Some(0), "child saw the pool as its own");
        assert_eq!(pool.pids(), pids, "the child touched the parent's workers");
        let xs: Vec<f64> = (0..10_000).map(pattern).collect();
        assert_eq!(pool.map(&xs, w1).unwrap()[7], w1(xs[7]));
    });
    common::assert_nothing_leaked();
}

fn shmpool_exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// shmpool mappings in a process's address space, from /proc/<pid>/maps.
fn shm_mappings(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/dev/shm/shmpool_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn workers_do_not_pin_arrays_that_existed_when_they_were_forked() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let big = SharedVec::<f64>::zeroed(8 << 20).unwrap(); // 64 MiB, before the workers exist
        let pool = Pool::new(2).unwrap();
        pool.map(&[1.0f64], w1).unwrap(); // every worker is past its start-up
        for pid in pool.pids() {
            // Only the worker's own ring is mapped; `big` (and any other segment) is not. A
            // worker drops what it inherited first thing after the fork; wait until it ran.
            let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
            // Descriptors: stdio, socket, ring, and the duplicate of the program's stderr that
            // diagnostics go to.
            while (shm_mappings(pid).len() > 1 || fds() > 6) && common::pid_alive(pid) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let maps = shm_mappings(pid);
            assert_eq!(maps.len(), 1, "worker {pid} maps {maps:#?}");
            assert!(fds() <= 6, "worker {pid} holds {} descriptors (stdio, socket, ring, stderr dup)", fds());
        }
        drop(big);
        // An array used by a map and then dropped is unmapped by the workers soon after.
        let xs = SharedVec::from_slice(&vec![1.0f64; 1 << 20]).unwrap();
        let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
        pool.map_into(&xs, &mut ys, w1_chunk).unwrap();
        drop((xs, ys));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.pids().iter().any(|&p| shm_mappings(p).len() > 1) {
            assert!(std::time::Instant::now() < deadline, "dropped arrays stay mapped in workers");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn a_kernel_for_other_element_types_is_a_type_mismatch_not_bit_patterns() {
    let _serial = common::serial();
    let pool = Pool::new(1).unwrap();
    let spec = KernelSpec::elem(|x: f64| x * 2.0);
    assert!(matches!(pool.map_into(&[1i64, 2], &mut [0i64; 2], &spec), Err(Error::TypeMismatch { .. })));
    assert!(matches!(spec.typed::<i64, i64>(), Err(Error::TypeMismatch { .. })));
    let xs = SharedVec::from_slice(&[1u64, 2]).unwrap();
    let mut ys = SharedVec::<f64>::zeroed(2).unwrap();
    let e = pool.map_into(&xs, &mut ys, &KernelSpec::chunk(w1_chunk)).unwrap_err();
    assert!(e.to_string().contains("float64 -> float64") && e.to_string().contains("uint64"), "{e}");
    // Same size, same signedness question: u32 vs i32 is refused too.
    assert!(matches!(
        pool.map_into(&[1u32], &mut [0u32], &KernelSpec::elem(|x: i32| x)),
        Err(Error::TypeMismatch { .. })
    ));
}

#[test]
fn sizes_that_overflow_are_errors_not_tiny_arrays() {
    let _serial = common::serial();
    assert!(matches!(SharedVec::<u8>::zeroed(usize::MAX - 10), Err(Error::TooLarge { .. })));
    assert!(matches!(SharedVec::<u64>::zeroed(usize::MAX / 4), Err(Error::TooLarge { .. })));
    assert!(matches!(SharedVec::<f64>::zeroed(usize::MAX / 8), Err(Error::TooLarge { .. } | Error::ShmFull { .. })));
}

#[test]
fn large_parameter_blocks_travel_in_their_own_segment() {
    let _serial = common::serial();
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Table {
        k: [f64; 40_000], // 320 KB, far more than a slot payload
    }
    let mut t = Table { k: [0.0; 40_000] };
    for (i, k) in t.k.iter_mut().enumerate() {
        *k = i as f64;
    }
    let pool = Pool::new(2).unwrap();
    let xs: Vec<u32> = (0..100_000).map(|i| i % 40_000).collect();
    let ys = pool.map(&xs, (|i: u32, t: &Table| t.k[i as usize] * 2.0).with(t)).unwrap();
    assert!(xs.iter().zip(&ys).all(|(&i, &y)| y == 2.0 * i as f64));
    let small = pool.map(&[3u32], (|i: u32, t: &Table| t.k[i as usize]).with(t)).unwrap();
    assert_eq!(small, [3.0]);
    drop(pool);
    common::assert_nothing_leaked();
}

/// Keeps `AsFd` in use for the ring mapping helper on every platform build of this test.
#[allow(dead_code)]
fn _fd_is_borrowed(p: &Pool) -> bool {
    p.ring_fd_for_test().as_fd().try_clone_to_owned().is_ok()
}
