//! Signals the program handles, and job control: a handled signal interrupting the pool's
//! waits (EINTR) is retried, never taken for a timeout.
//!
//! How this libtest binary acts as a spawned worker: see tests/start_methods.rs
//! (`spawned_child_entry`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start::{pool, SAFE_METHODS};
use shmpool::StartMethod;

/// The entry point of children this binary spawns (see the module docs).
#[test]
#[ignore = "entry point of spawned children, run by the other tests"]
fn spawned_child_entry() {
    shmpool::init();
}

extern "C" fn noop(_: libc::c_int) {}

/// Installs a handler that does nothing for `sig`, without `SA_RESTART`: every blocking call
/// it lands in returns EINTR, as with a program's own handler.
fn handle_with_noop(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags); the handler is an
    // async-signal-safe function that touches nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Sends `sig` to every thread of this process (the supervisor threads included) over and
/// over, until dropped.
struct Blaster {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Blaster {
    fn start(sig: libc::c_int) -> Blaster {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let me = std::process::id() as libc::pid_t;
            // SAFETY: gettid has no preconditions.
            let own = unsafe { libc::gettid() };
            let mut sent = 0u64;
            while !s.load(Ordering::Relaxed) {
                let tids: Vec<libc::pid_t> = std::fs::read_dir("/proc/self/task")
                    .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                for tid in tids.into_iter().filter(|&t| t != own) {
                    // SAFETY: tgkill takes integers; a thread that has exited meanwhile only
                    // makes it fail with ESRCH.
                    if unsafe { libc::syscall(libc::SYS_tgkill, me, tid, sig) } == 0 {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(300));
            }
            sent
        });
        Blaster { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for Blaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Kills one worker of `pool` and waits until the pool has replaced it and maps again.
fn kill_one_and_wait_for_replacement(pool: &shmpool::Pool, method: StartMethod) {
    let before = pool.pids();
    let victim = before[0];
    let respawns = pool.respawns();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    while pool.respawns() == respawns {
        std::thread::sleep(Duration::from_millis(2));
    }
    let now = pool.pids();
    assert_eq!(now.len(), before.len(), "{method:?}: every worker replaced ({before:?} -> {now:?})");
    assert!(!now.contains(&victim), "{method:?}: the dead worker is gone from the pool");
    let xs: Vec<f64> = (0..10_000).map(f64::from).collect();
    assert_eq!(pool.map(&xs, |x: f64| x * 2.0).unwrap()[9_999], 19_998.0, "{method:?}: map after the respawn");
}

#[test]
fn handled_signals_during_builds_and_respawns_do_not_break_spawn_or_fork_server_pools() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(300), || {
        handle_with_noop(libc::SIGUSR1);
        let blaster = Blaster::start(libc::SIGUSR1);
        let start = Instant::now();
        for method in SAFE_METHODS {
            for round in 0..20 {
                let p = pool(method, 2);
                let xs: Vec<f64> = (0..5_000).map(f64::from).collect();
                let ys = p.map(&xs, |x: f64| x + 1.0).unwrap_or_else(|e| panic!("{method:?} round {round}: {e}"));
                assert_eq!(ys[4_999], 5_000.0);
                if round % 5 == 0 {
                    kill_one_and_wait_for_replacement(&p, method);
                }
            }
        }
        let sent = blaster.finish();
        assert!(sent > 0, "signals were sent ({sent} in {:?})", start.elapsed());
        common::start::assert_nothing_leaked();
    });
}
