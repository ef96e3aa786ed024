//! Fault tolerance: workers killed at every named point and by every kind of signal, kernels
//! that panic, hang or crash, recycling, parent death, a full /dev/shm, corrupted slots, kills
//! under several callers on tiny rings, streams dropped around a kill, and a chaos loop. Every map either returns the exact sequential answer or a clear error; nothing
//! hangs (watchdogs), nothing leaks.

mod common;

use shmpool::KernelExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::workloads::{pattern, w1, w2_chunk};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmpool::testing::PausePoint;
use shmpool::{Error, Pool, Process, SharedVec};

fn sigkill(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

fn w1_input(n: usize) -> Vec<f64> {
    (0..n).map(pattern).collect()
}

fn assert_w1(xs: &[f64], ys: &[f64]) {
    assert_eq!(xs.len(), ys.len());
    let wrong = xs.iter().zip(ys).filter(|(x, y)| w1(**x).to_bits() != y.to_bits()).count();
    assert_eq!(wrong, 0, "{wrong} wrong elements");
}

/// Runs W1 over 1M elements while SIGKILLing every worker that stops at `point`.
fn survives_kill_at(point: PausePoint) {
    common::watchdog(Duration::from_secs(60), move || {
        let pool = Pool::builder().workers(2).chunk_len(50_000).pause_point(point).build().unwrap();
        let xs = w1_input(1_000_000);
        let (r, killed) = common::with_paused_killed(&pool, || pool.map(&xs, w1));
        let ys = r.unwrap();
        assert_w1(&xs, &ys);
        assert!(killed >= 1, "no worker paused at {point:?}");
        // Deaths are counted by the supervisor once it has reaped them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.worker_deaths() < killed && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.worker_deaths(), killed);
        if point == PausePoint::InsideLock {
            assert!(pool.lock_owner_deaths() >= 1, "the lock holder's death was not seen");
        }
        // The pool is whole again and still works.
        assert_eq!(pool.pids().len(), 2);
        assert_eq!(pool.map(&[4.0f64], w1).unwrap(), [w1(4.0)]);
    });
}

#[test]
fn worker_killed_before_claim_loses_nothing() {
    survives_kill_at(PausePoint::BeforeClaim);
}

#[test]
fn worker_killed_holding_the_ring_lock_does_not_hang_the_pool() {
    survives_kill_at(PausePoint::InsideLock);
}

#[test]
fn worker_killed_mid_kernel_has_its_chunk_redone() {
    survives_kill_at(PausePoint::MidKernel);
}

#[test]
fn worker_killed_after_writing_output_but_before_publishing_has_its_chunk_redone() {
    survives_kill_at(PausePoint::BeforePublish);
}

#[test]
fn external_signals_of_every_kind_mid_map_still_give_the_exact_answer() {
    for sig in [Signal::SIGKILL, Signal::SIGSEGV, Signal::SIGABRT, Signal::SIGBUS, Signal::SIGTERM] {
        common::watchdog(Duration::from_secs(60), move || {
            // Every worker stops itself once mid-kernel (half its output written): the signal
            // lands there, whatever the machine's load (a victim picked by its CPU time could
            // be idle by the time the sender looked, and then never use any).
            let pool = Pool::builder().workers(2).chunk_len(2_000).pause_point(PausePoint::MidKernel).build().unwrap();
            let xs = SharedVec::from_slice(&w1_input(60_000)).unwrap();
            let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
            let mut signalled = 0u64;
            std::thread::scope(|s| {
                let h = s.spawn(|| pool.map_into(&xs, &mut ys, w2_chunk));
                while !h.is_finished() {
                    for pid in pool.pids() {
                        if common::proc_state(pid) != Some('T') {
                            continue;
                        }
                        let victim = Pid::from_raw(pid as i32);
                        signalled += 1;
                        // A stopped process takes a signal when continued. std's SIGSEGV/SIGBUS
                        // handler (stack-overflow detection) swallows one signal sent from
                        // outside and resets to the default action: repeat until it is gone,
                        // as a real fault would.
                        while common::pid_alive(pid) && kill(victim, sig).is_ok() {
                            let _ = kill(victim, Signal::SIGCONT);
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                h.join().unwrap().unwrap();
            });
            assert!(signalled >= 1, "{sig:?}: no worker stopped mid-kernel");
            // Deaths are counted by the supervisor once it has reaped them (bounded by the
            // watchdog).
            while pool.worker_deaths() < signalled {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut want = vec![0.0; xs.len()];
            w2_chunk(&xs, &mut want);
            assert!(want.iter().zip(ys.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "{sig:?}");
        });
    }
}

fn crash_kernel(x: i64, how: &i32) -> i64 {
    if x == 777 {
        match *how {
            0 => {
                // SAFETY: none — this deliberately dereferences null to die of SIGSEGV, as a
                // buggy C kernel would.
                unsafe { std::ptr::null_mut::<i64>().write_volatile(x) };
            }
            1 => std::process::abort(),
            2 => {
                let _ = nix::sys::signal::raise(Signal::SIGKILL);
            }
            _ => {
                // The Rust runtime's SIGBUS handler (stack-overflow detection) swallows a raised
                // SIGBUS once; a real bus error faults again after it. Restore the default first.
                // SAFETY: installing SIG_DFL for SIGBUS in this worker process has no preconditions.
                unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
                let _ = nix::sys::signal::raise(Signal::SIGBUS);
            }
        }
    }
    x * 2
}

#[test]
fn chunk_that_kills_every_worker_fails_with_worker_crashed_after_max_attempts() {
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).chunk_len(100).max_attempts(3).build().unwrap();
        let xs: Vec<i64> = (0..2_000).collect();
        for (how, sig) in [(0, libc::SIGSEGV), (1, libc::SIGABRT), (2, libc::SIGKILL), (3, libc::SIGBUS)] {
            match pool.map(&xs, crash_kernel.with(how)) {
                Err(Error::WorkerCrashed { range, signal, attempts }) => {
                    assert_eq!(range, 700..800);
                    assert_eq!(signal, sig);
                    assert_eq!(attempts, 3);
                }
                other => panic!("expected WorkerCrashed for signal {sig}, got {other:?}"),
            }
            // The pool stays usable for the next call.
            let ok = pool.map(&xs, |x: i64| x + 1).unwrap();
            assert_eq!(ok[1999], 2000);
        }
        assert!(pool.worker_deaths() >= 12);
    });
}

#[test]
fn worker_killed_while_asleep_on_the_doorbell_loses_no_wake_up() {
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).spin(Duration::ZERO).build().unwrap();
        pool.map(&[1.0f64; 100], w1).unwrap();
        let pids = pool.pids();
        // Wait (bounded by the watchdog) until both are asleep in futex_wait.
        while !pids.iter().all(|&p| common::proc_state(p) == Some('S')) {
            std::thread::sleep(Duration::from_millis(5));
        }
        sigkill(pids[0]);
        let xs = w1_input(500_000);
        assert_w1(&xs, &pool.map(&xs, w1).unwrap());
        // Both killed while asleep: the replacements still get the work.
        for p in pool.pids() {
            sigkill(p);
        }
        assert_w1(&xs, &pool.map(&xs, w1).unwrap());
    });
}

#[test]
fn chunk_running_past_the_timeout_is_killed_and_reported() {
    common::watchdog(Duration::from_secs(60), || {
        let limit = Duration::from_millis(300);
        let pool = Pool::builder().workers(2).chunk_len(10).chunk_timeout(limit).build().unwrap();
        let xs: Vec<u32> = (0..100).collect();
        let before = pool.pids();
        let hang = |x: u32| {
            if x == 42 {
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            x
        };
        match pool.map(&xs, hang) {
            Err(Error::ChunkTimedOut { range, limit: l }) => {
                assert_eq!(range, 40..50);
                assert_eq!(l, limit);
            }
            other => panic!("expected ChunkTimedOut, got {other:?}"),
        }
        assert_eq!(pool.map(&xs, |x: u32| x * 2).unwrap()[99], 198);
        // The killed worker was reaped before the error was reported; its replacement shows
        // up in `pids` as soon as the supervisor has forked it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let after = pool.pids();
            if after.len() == 2 && before.iter().any(|p| !after.contains(p)) {
                break;
            }
            assert!(Instant::now() < deadline, "the hung worker was not replaced: {before:?} -> {after:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(pool.worker_deaths() >= 1);
    });
}

#[test]
fn workers_are_recycled_after_max_chunks() {
    let pool = Pool::builder().workers(2).chunk_len(1_000).max_chunks_per_worker(3).build().unwrap();
    let xs = w1_input(100_000);
    assert_w1(&xs, &pool.map(&xs, w1).unwrap());
    assert!(pool.respawns() >= 25, "only {} respawns for 100 chunks", pool.respawns());
    assert_eq!(pool.worker_deaths(), 0, "recycling is not a crash");
}

#[test]
fn corrupted_descriptor_is_reported_as_corrupt_slot() {
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(1).chunk_len(1_000).pause_point(PausePoint::BeforeClaim).build().unwrap();
        let pid = pool.pids()[0];
        let xs = w1_input(10_000);
        std::thread::scope(|s| {
            let h = s.spawn(|| pool.map(&xs, w1));
            while common::proc_state(pid) != Some('T') {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut corrupted = 0;
            while corrupted == 0 {
                corrupted = pool.corrupt_filled_slots_for_test();
            }
            kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
            match h.join().unwrap() {
                Err(Error::CorruptSlot { reason, .. }) => assert!(reason.contains("descriptor"), "{reason}"),
                other => panic!("expected CorruptSlot, got {other:?}"),
            }
        });
        // The workers were killed and reaped before the error came back; the pool is broken.
        assert!(pool.pids().is_empty());
        assert!(!common::pid_alive(pid), "worker {pid} outlived a corrupted map");
        assert!(matches!(pool.map(&xs, w1), Err(Error::PoolBroken { .. })));
    });
}

/// Runs a pool in a child process, SIGKILLs (or SIGTERMs) the child, and checks that its
/// workers exit and no segment of it remains. Returns how long the workers took to go.
fn parent_death(sig: Signal) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let f2 = file.clone();
    let child = Process::spawn(move || {
        // A shell without job control starts background jobs with SIGINT ignored; this child
        // stands for a normal program, whose SIGINT and SIGTERM terminate it.
        // SAFETY: restoring default dispositions in a single-threaded child has no preconditions.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
        let pool = Pool::new(2).unwrap();
        let xs = SharedVec::from_slice(&w1_input(1000)).unwrap();
        let mut ys = SharedVec::<f64>::zeroed(1000).unwrap();
        pool.map_into(&xs, &mut ys, common::workloads::w1_chunk).unwrap();
        let pids: Vec<String> = pool.pids().iter().map(|p| p.to_string()).collect();
        std::fs::write(&f2, pids.join(" ")).unwrap();
        // Lives until the test kills it (at most 60 s: a failed test leaves nothing for long).
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
        assert!(Instant::now() < deadline, "child never started its pool");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(pids.len(), 2);
    let t = Instant::now();
    kill(Pid::from_raw(child.pid() as i32), sig).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.is_alive() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the pool's parent did not die of {sig:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    common::assert_pids_gone(&pids);
    let took = t.elapsed();
    let prefix = format!("shmpool_{}_", child.pid());
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "segments left by the dead parent: {left:?}");
    took
}

#[test]
fn workers_exit_and_no_segment_remains_when_the_parent_is_sigkilled() {
    let took = parent_death(Signal::SIGKILL);
    println!("workers gone {took:?} after the parent's SIGKILL");
}

#[test]
fn workers_exit_when_the_parent_gets_sigterm_or_sigint() {
    parent_death(Signal::SIGTERM);
    parent_death(Signal::SIGINT);
}

#[test]
fn stale_segments_of_dead_owners_are_swept() {
    let dead = Process::spawn(|| {}).unwrap();
    dead.join().unwrap();
    let name = shmpool::testing::leave_stale_segment(dead.pid()).unwrap();
    assert!(shmpool::diagnostics::stale_segments().iter().any(|s| s.name == name));
    let removed = shmpool::diagnostics::sweep_stale();
    assert!(removed.iter().any(|s| s.name == name));
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());
}

#[test]
fn full_dev_shm_is_a_clear_error_not_a_sigbus() {
    // A private mount namespace with a 4 MiB tmpfs on /dev/shm; needs root (CI runs as root).
    let probe = std::process::Command::new("unshare").args(["-m", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        // CI runs as root, where this must work: there, a skip is a failure.
        assert!(std::env::var_os("CI").is_none(), "CI must be able to create a mount namespace (root, unshare)");
        eprintln!("SKIPPED full_dev_shm_is_a_clear_error_not_a_sigbus: cannot create a mount namespace here (needs root and unshare)");
        return;
    }
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs /dev/shm && exec {} map --len 1000000 --repeat 1 -j 2",
        env!("CARGO_BIN_EXE_shmpool")
    );
    let out = std::process::Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "status {:?}, stderr: {stderr}", out.status);
    assert!(stderr.contains("shared memory is full: needed"), "{stderr}");
    // A pool's own ring does not fit in 64 KiB either: the error comes before any work.
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs /dev/shm && exec {} map --len 1000 --repeat 1 -j 2",
        env!("CARGO_BIN_EXE_shmpool")
    );
    let out = std::process::Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("shared memory is full"), "{stderr}");
}

struct ChaosReport {
    maps: u64,
    kills: u64,
    wrong: u64,
    detect_us: Vec<u64>,
    replace_us: Vec<u64>,
}

/// Repeated maps of `n` f64 while another thread SIGKILLs a random worker every few ms.
fn chaos(n: usize, stop: impl Fn(&ChaosReport) -> bool, seed: u64) -> ChaosReport {
    let pool = Pool::builder().workers(2).chunk_len(50_000).max_attempts(1000).build().unwrap();
    let mut xs = pool.alloc::<f64>(n).unwrap();
    common::workloads::fill_pattern(&mut xs, 0);
    let mut ys = pool.alloc::<f64>(n).unwrap();
    let done = AtomicBool::new(false);
    let kills = AtomicU64::new(0);
    let mut report = ChaosReport { maps: 0, kills: 0, wrong: 0, detect_us: vec![], replace_us: vec![] };
    let mut replace = Vec::new();
    let mut kill_times = Vec::new();
    std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let mut r = seed | 1;
            let mut replace_us = Vec::new();
            let mut kill_times = Vec::new();
            while !done.load(Ordering::Relaxed) {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                std::thread::sleep(Duration::from_micros(2_000 + r % 8_000)); // the kills' pace: the stimulus
                let pids = pool.pids();
                if pids.len() < 2 {
                    continue;
                }
                let victim = pids[(r as usize / 7) % pids.len()];
                let t = Instant::now();
                kill_times.push((victim, shmpool::testing::now_us()));
                sigkill(victim);
                kills.fetch_add(1, Ordering::Relaxed);
                // Time until the victim is replaced (pids full again without it).
                while !done.load(Ordering::Relaxed) {
                    let now = pool.pids();
                    if now.len() == 2 && !now.contains(&victim) {
                        replace_us.push(t.elapsed().as_micros() as u64);
                        break;
                    }
                    std::thread::yield_now();
                }
            }
            (replace_us, kill_times)
        });
        let mut want = vec![0.0; n];
        common::workloads::w1_chunk(&xs, &mut want);
        loop {
            report.kills = kills.load(Ordering::Relaxed);
            if stop(&report) {
                break;
            }
            ys.fill(0.0);
            pool.map_into(&xs, &mut ys, common::workloads::w1_chunk).expect("map failed under chaos");
            report.maps += 1;
            if want.iter().zip(ys.iter()).any(|(a, b)| a.to_bits() != b.to_bits()) {
                report.wrong += 1;
            }
        }
        done.store(true, Ordering::Relaxed);
        (replace, kill_times) = killer.join().unwrap();
    });
    report.kills = kills.load(Ordering::Relaxed);
    report.replace_us = replace;
    let log = pool.death_log();
    report.detect_us = kill_times
        .iter()
        .filter_map(|(pid, at)| log.iter().find(|d| d.pid == *pid).map(|d| d.detected_at_us.saturating_sub(*at)))
        .collect();
    report
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn print_report(r: &mut ChaosReport, seed: u64) {
    println!(
        "chaos seed {seed}: {} maps, {} kills survived, {} wrong results, median death detection {} µs, median replacement {} µs",
        r.maps,
        r.kills,
        r.wrong,
        median(&mut r.detect_us),
        median(&mut r.replace_us)
    );
}

/// The chaos loop: 15 s of maps while workers are killed (`SHMPOOL_CHAOS_SECS`), or, for a
/// long run by hand, until `SHMPOOL_CHAOS_KILLS` kills (e.g. 1000, with no time limit);
/// `SHMPOOL_CHAOS_SEED` replays a seed the report printed.
#[test]
fn chaos_maps_stay_exact_while_workers_are_killed() {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let secs = var("SHMPOOL_CHAOS_SECS").unwrap_or(15);
    let kills = var("SHMPOOL_CHAOS_KILLS");
    let seed = var("SHMPOOL_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("chaos seed {seed}");
    let limit = if kills.is_some() { Duration::MAX / 2 } else { Duration::from_secs(secs + 60) };
    let mut r = common::watchdog(limit, move || {
        let start = Instant::now();
        chaos(
            10_000_000,
            move |r| match kills {
                Some(k) => r.kills >= k,
                None => start.elapsed() > Duration::from_secs(secs),
            },
            seed,
        )
    });
    print_report(&mut r, seed);
    assert_eq!(r.wrong, 0);
    assert!(r.kills > 0 && r.maps > 0);
}

// ---------------------------------------------------------------------------------------------
// Kills under several callers on tiny rings, streams dropped around a kill, timeouts.
// ---------------------------------------------------------------------------------------------

fn chaos_round(builder: shmpool::PoolBuilder, secs: u64) {
    common::chaos::chaos_round_with(builder, secs, true);
}

#[test]
fn kills_under_four_callers_on_a_one_slot_ring() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        chaos_round(Pool::builder().workers(2).slots(1).max_attempts(50).payload_bytes(4096), 6);
    });
    common::assert_nothing_leaked();
}

#[test]
fn kills_under_four_callers_on_a_two_slot_ring_with_recycling_and_timeouts() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        chaos_round(
            Pool::builder()
                .workers(2)
                .slots(2)
                .max_attempts(50)
                .max_chunks_per_worker(1)
                .chunk_timeout(Duration::from_secs(5))
                .payload_bytes(1024),
            6,
        );
    });
    common::assert_nothing_leaked();
}

/// W1 taking 15 ms per element (the stimulus: chunks still running when the test acts).
fn slow_elem(x: f64) -> f64 {
    std::thread::sleep(Duration::from_millis(15));
    w1(x)
}

/// Drop an `imap` and an `imap_unordered` while their chunks are CLAIMED and after a worker
/// running one was SIGKILLed, on a two-slot ring; the pool must then still give exact answers
/// from several threads.
#[test]
fn dropping_streams_with_claimed_chunks_after_a_kill_leaves_a_tiny_ring_usable() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(90), || {
        let pool = Pool::builder().workers(2).slots(2).build().unwrap();
        for round in 0..6 {
            let batches = (0..50).map(|b| vec![b as f64; 3]);
            if round % 2 == 0 {
                let mut it = pool.imap(batches, slow_elem);
                let _ = it.next();
            } else {
                let mut it = pool.imap_unordered(batches, slow_elem);
                let _ = it.next();
            }
            // Dropped above with chunks in flight; kill a worker that may be running one.
            let pids = pool.pids();
            unsafe { libc::kill(pids[round % pids.len()] as i32, libc::SIGKILL) };
            std::thread::scope(|s| {
                for t in 0..3 {
                    let pool = &pool;
                    s.spawn(move || {
                        for i in 0..20 {
                            let xs: Vec<f64> = (0..1 + (i * 37 + t) % 500).map(pattern).collect();
                            let ys = pool.map(&xs, w1).unwrap();
                            assert!(xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()));
                        }
                    });
                }
            });
        }
    });
    common::assert_nothing_leaked();
}

/// An absurdly long chunk timeout must not wrap around into an immediate one.
#[test]
fn a_huge_chunk_timeout_does_not_wrap_into_a_tiny_one() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let pool = Pool::builder().workers(1).chunk_timeout(Duration::from_secs(1 << 60)).build().unwrap();
        let r = pool.map(&[1.0f64, 2.0], |x: f64| {
            // A chunk that outlasts any timeout that wrapped around to a tiny one.
            std::thread::sleep(Duration::from_millis(200));
            x
        });
        assert!(r.is_ok(), "a 36-billion-year timeout killed a 200 ms chunk: {r:?}");
    });
    common::assert_nothing_leaked();
}
