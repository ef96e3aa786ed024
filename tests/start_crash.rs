//! The fault-tolerance promises, parameterized over the start method: a worker killed at every
//! named point costs a retry, a chunk that kills `max_attempts` workers fails the map with
//! `WorkerCrashed` (the signal comes from `waitpid` or, for the fork server's workers, from the
//! server's report: SIGSEGV and SIGBUS are named under every method), recycling and timeouts
//! replace workers by the pool's method, workers die with the pool's process, and none is left
//! after `terminate` or drop.

mod common;

use shmpool::KernelExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::start::{assert_nothing_leaked, pool, METHODS};
use common::workloads::{pattern, w1};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmpool::testing::PausePoint;
use shmpool::{Error, Pool, Process, SharedVec, StartMethod};

fn w1_input(n: usize) -> Vec<f64> {
    (0..n).map(pattern).collect()
}

fn assert_w1(xs: &[f64], ys: &[f64]) {
    assert_eq!(xs.len(), ys.len());
    let wrong = xs.iter().zip(ys).filter(|(x, y)| w1(**x).to_bits() != y.to_bits()).count();
    assert_eq!(wrong, 0, "{wrong} wrong elements");
}

/// W1 over 400k elements while every worker that stops at `point` is SIGKILLed.
fn survives_kill_at(method: StartMethod, point: PausePoint) {
    let pool = Pool::builder().workers(2).chunk_len(20_000).pause_point(point).start_method(method).build().unwrap();
    let xs = w1_input(400_000);
    let (r, killed) = common::with_paused_killed(&pool, || pool.map(&xs, w1));
    assert_w1(&xs, &r.unwrap());
    assert!(killed >= 1, "{method:?}: no worker paused at {point:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.worker_deaths() < killed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.worker_deaths(), killed, "{method:?} {point:?}");
    let deaths = pool.death_log();
    assert!(deaths.iter().all(|d| d.signal == libc::SIGKILL), "{method:?} {point:?}: {deaths:?}");
    assert_eq!(pool.pids().len(), 2);
    common::start::assert_started_by(&pool, method);
    assert_eq!(pool.map(&[4.0f64], w1).unwrap(), [w1(4.0)]);
}

#[test]
fn worker_killed_at_every_point_loses_nothing_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(240), || {
        for method in METHODS {
            for point in
                [PausePoint::BeforeClaim, PausePoint::InsideLock, PausePoint::MidKernel, PausePoint::BeforePublish]
            {
                survives_kill_at(method, point);
            }
        }
    });
    assert_nothing_leaked();
}

fn crash_kernel(x: i64, how: &i32) -> i64 {
    if x == 777 {
        if *how == 0 {
            // SAFETY: none — this deliberately dereferences null to die of SIGSEGV, as a buggy
            // C kernel would.
            unsafe { std::ptr::null_mut::<i64>().write_volatile(x) };
        } else {
            std::process::abort();
        }
    }
    x * 2
}

#[test]
fn chunk_that_kills_every_worker_fails_with_worker_crashed_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            let pool = Pool::builder().workers(2).chunk_len(100).max_attempts(3).start_method(method).build().unwrap();
            let xs: Vec<i64> = (0..2_000).collect();
            for (how, sig) in [(0, libc::SIGSEGV), (1, libc::SIGABRT)] {
                match pool.map(&xs, crash_kernel.with(how)) {
                    Err(Error::WorkerCrashed { range, signal, attempts }) => {
                        assert_eq!((range, signal, attempts), (700..800, sig, 3), "{method:?}");
                    }
                    other => panic!("{method:?}: expected WorkerCrashed for signal {sig}, got {other:?}"),
                }
                assert_eq!(pool.map(&xs, |x: i64| x + 1).unwrap()[1999], 2000, "{method:?}");
            }
            assert!(pool.worker_deaths() >= 6, "{method:?}");
            common::start::assert_started_by(&pool, method);
        }
    });
    assert_nothing_leaked();
}

#[test]
fn recycled_and_timed_out_workers_are_replaced_by_the_pools_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            let pool = Pool::builder()
                .workers(2)
                .chunk_len(2_000)
                .max_chunks_per_worker(3)
                .start_method(method)
                .build()
                .unwrap();
            let xs = w1_input(60_000);
            assert_w1(&xs, &pool.map(&xs, w1).unwrap());
            assert!(pool.respawns() >= 8, "{method:?}: only {} respawns for 30 chunks", pool.respawns());
            assert_eq!(pool.worker_deaths(), 0, "{method:?}: recycling is not a crash");
            common::start::assert_started_by(&pool, method);

            let limit = Duration::from_millis(300);
            let pool = Pool::builder().workers(2).chunk_len(10).chunk_timeout(limit).start_method(method);
            let pool = pool.build().unwrap();
            let hang = |x: u32| {
                if x == 42 {
                    loop {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                x
            };
            let r = pool.map(&(0..100).collect::<Vec<u32>>(), hang);
            assert!(matches!(r, Err(Error::ChunkTimedOut { ref range, .. }) if *range == (40..50)), "{method:?} {r:?}");
            assert_eq!(pool.map(&[7u32], |x: u32| x * 2).unwrap(), [14], "{method:?}");
            common::start::assert_started_by(&pool, method);
        }
    });
    assert_nothing_leaked();
}

/// Runs a pool in a forked child, SIGKILLs the child, and checks that its workers (and its
/// fork server) exit and no segment of it remains, even though a forked child of the pool's
/// process (which inherited its descriptors) lives on.
fn parent_death(method: StartMethod) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let f2 = file.clone();
    let child = Process::spawn(move || {
        let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
        let xs = SharedVec::from_slice(&w1_input(1000)).unwrap();
        let mut ys = SharedVec::<f64>::zeroed(1000).unwrap();
        pool.map_into(&xs, &mut ys, common::workloads::w1_chunk).unwrap();
        // A forked child of the program that outlives it must not keep the fork server alive.
        // It lives until the test kills it (at most 60 s: a failed test leaves nothing for long).
        let bystander = Process::spawn(|| std::thread::sleep(Duration::from_secs(60))).unwrap();
        let mut pids: Vec<String> = vec![bystander.pid().to_string()];
        pids.extend(pool.pids().iter().map(|p| p.to_string()));
        pids.extend(shmpool::testing::fork_server_pid().map(|p| p.to_string()));
        std::fs::write(&f2, pids.join(" ")).unwrap();
        // Lives until the test kills it (at most 60 s).
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pids: Vec<u32> = loop {
        if let Ok(s) = std::fs::read_to_string(&file) {
            if !s.is_empty() {
                break s.split(' ').map(|p| p.parse().unwrap()).collect();
            }
        }
        assert!(Instant::now() < deadline, "{method:?}: the child never started its pool");
        std::thread::sleep(Duration::from_millis(5));
    };
    let expected = if method == StartMethod::ForkServer { 4 } else { 3 };
    assert_eq!(pids.len(), expected, "{method:?}: {pids:?}");
    let (bystander, pids) = (pids[0], &pids[1..]);
    child.kill().unwrap();
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
    let gone = std::panic::catch_unwind(|| common::assert_pids_gone(pids));
    let _ = kill(Pid::from_raw(bystander as i32), Signal::SIGKILL);
    if let Err(p) = gone {
        std::panic::resume_unwind(p);
    }
    let prefix = format!("shmpool_{}_", child.pid());
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{method:?}: segments left by the dead parent: {left:?}");
}

#[test]
fn workers_die_with_the_pools_process_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            parent_death(method);
        }
    });
    assert_nothing_leaked();
}

#[test]
fn a_pool_keeps_one_method_for_its_whole_life() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        for method in METHODS {
            let pool = pool(method, 2);
            for p in pool.pids() {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
            let xs = w1_input(10_000);
            assert_w1(&xs, &pool.map(&xs, w1).unwrap());
            common::start::assert_started_by(&pool, method);
        }
    });
    assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// The signal `WorkerCrashed` names, and no stale worker after terminate or drop, per method.
// ---------------------------------------------------------------------------------------------

fn segfaults_on_seven(x: i64) -> i64 {
    if x == 7 {
        // A real fault (std's SIGSEGV handler swallows a raised one): the worker dies by SIGSEGV.
        // SAFETY: deliberately invalid; the worker process is meant to die here.
        unsafe { std::ptr::null_mut::<i64>().write_volatile(x) };
    }
    x
}

/// The signal `Error::WorkerCrashed` names for a kernel that dies by `want` on 7, under every
/// method.
fn crash_names_signal<K: Fn(i64) -> i64 + Copy + Send + 'static>(kernel: K, want: i32) {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), move || {
        let mut got = Vec::new();
        for method in METHODS {
            let pool = Pool::builder().workers(2).max_attempts(2).start_method(method).build().unwrap();
            let xs: Vec<i64> = (0..16).collect();
            match pool.map(&xs, kernel) {
                Err(shmpool::Error::WorkerCrashed { signal, .. }) => got.push((method, signal)),
                other => panic!("{method:?}: {other:?}"),
            }
        }
        assert!(got.iter().all(|&(_, s)| s == want), "signal reported per method: {got:?}");
    });
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

/// `Error::WorkerCrashed::signal` is "the signal that killed the last worker", under every method.
/// Under the fork server it was once 0 ("exited without a signal") for a worker killed by SIGSEGV,
/// so the CLI, whose default method is the fork server, said "worker crashed ... (last signal 0)".
#[test]
fn worker_crashed_names_the_signal_under_every_method() {
    crash_names_signal(segfaults_on_seven, libc::SIGSEGV);
}

fn sigbus_on_seven(x: i64) -> i64 {
    if x == 7 {
        // A real SIGBUS: read a page of a file mapping past the file's end.
        let f = tempfile::tempfile().unwrap();
        f.set_len(8192).unwrap();
        // SAFETY: the mapping is private to this kernel; the read past EOF is meant to fault.
        let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        f.set_len(0).unwrap();
        // SAFETY: as above.
        return unsafe { std::ptr::read_volatile(m.as_ptr().add(4096) as *const i64) };
    }
    x
}

/// Same as above with SIGBUS, the signal a truncated input gives.
#[test]
fn worker_crashed_names_sigbus_under_every_method() {
    crash_names_signal(sigbus_on_seven, libc::SIGBUS);
}

/// After `terminate()` (and after `drop`) returns, no worker of the pool is alive, under every
/// method, also when the pool is busy in another thread and when recycling replaced workers.
#[test]
fn no_stale_worker_after_terminate_or_drop_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            for round in 0..6 {
                let pool = std::sync::Arc::new(
                    Pool::builder()
                        .workers(2)
                        .max_chunks_per_worker(1)
                        .chunk_len(64)
                        .start_method(method)
                        .build()
                        .unwrap(),
                );
                let xs: Vec<f64> = (0..20_000).map(f64::from).collect();
                let p2 = pool.clone();
                let busy = std::thread::spawn(move || {
                    let _ = p2.map(&xs, f64::sqrt);
                });
                // The stimulus: each round acts at a later moment of the busy map.
                std::thread::sleep(Duration::from_millis(2 * round));
                let mut seen = pool.pids();
                if round % 2 == 0 {
                    pool.terminate();
                    seen.extend(pool.pids());
                    let alive: Vec<u32> = seen.iter().copied().filter(|&p| common::pid_alive(p)).collect();
                    assert!(alive.is_empty(), "{method:?} round {round}: alive after terminate: {alive:?}");
                }
                busy.join().unwrap();
                seen.extend(pool.pids());
                drop(pool);
                let alive: Vec<u32> = seen.iter().copied().filter(|&p| common::pid_alive(p)).collect();
                assert!(alive.is_empty(), "{method:?} round {round}: alive after drop: {alive:?}");
            }
        }
    });
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}
