//! Helpers shared by the integration tests: leak checks and watchdogs.
#![allow(dead_code)]

use std::time::{Duration, Instant};

pub mod chaos;
pub mod descriptors;
pub mod npy_files;
pub mod ring_words;
pub mod scenario;
pub mod start;

// Process checks shared with the MPI member's tests (`mpi/tests/common`).
mod procs;
#[allow(unused_imports)] // each test binary uses some of the helpers
pub use procs::{assert_pids_gone, pid_alive};

#[path = "../../src/workloads.rs"]
pub mod workloads;

/// Pids of live (non-zombie) children of this process.
pub fn live_children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.trim().to_string()) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me && state != "Z" && state != "X" {
            out.push(pid);
        }
    }
    out
}

/// shmpool segment names in /dev/shm owned by this process.
pub fn our_segments() -> Vec<String> {
    let prefix = format!("shmpool_{}_", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect()
        })
        .unwrap_or_default()
}

/// Waits (up to 10 s) until no child process of ours and no segment of ours is left, then
/// asserts it. Tests run in parallel threads under `cargo test`, so other tests' pools may be
/// alive for a moment; the wait absorbs that, a real leak still fails.
/// Serialises the tests of one test binary that check for leaks: `cargo test` runs a binary's
/// tests as threads of one process, and a leak check counts every child of that process, so a
/// long test running beside it would look like a leak. Hold the guard for the whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fork server (a child that lives as long as this process: the default start method of a
/// multi-threaded program, which a test binary is, uses it) does not count.
pub fn assert_nothing_leaked() {
    let server: Vec<u32> = shmpool::testing::fork_server_pid().into_iter().collect();
    assert_nothing_leaked_but(&server);
}

/// [`assert_nothing_leaked`], allowing the children in `expected` (a fork server, which lives
/// as long as the process).
pub fn assert_nothing_leaked_but(expected: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids: Vec<u32> = live_children().into_iter().filter(|k| !expected.contains(k)).collect();
        let segs = our_segments();
        if kids.is_empty() && segs.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("leaked: children {kids:?}, segments {segs:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread and fails the test if it has not finished within `limit` (a hang is
/// a failure; a slow run is not measured).
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) => h.join().expect("test body panicked"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: test hung for more than {limit:?}")
        }
    }
}

/// CPU time (user + system, in clock ticks) a process has used, from /proc/<pid>/stat.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime is field 14 overall => index 11 here, stime 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The state letter of a process (R, S, T, Z, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim().chars().next()
}

/// Runs `job` on another thread and SIGKILLs every worker of `pool` seen stopped at its pause
/// point (state T) until `job` returns: its result, and how many workers were killed.
pub fn with_paused_killed<T: Send>(pool: &shmpool::Pool, job: impl FnOnce() -> T + Send) -> (T, u64) {
    use nix::sys::signal::{kill, Signal};
    let mut killed = 0;
    let out = std::thread::scope(|s| {
        let h = s.spawn(job);
        while !h.is_finished() {
            for pid in pool.pids() {
                if proc_state(pid) == Some('T') {
                    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
                    killed += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        h.join().unwrap()
    });
    (out, killed)
}

/// Runs scenario `name` of this test binary in a child process (see [`scenario`]) and
/// returns its output (stdout and stderr captured). A run still going after `limit` is
/// SIGKILLed and fails the test: a hang is a failure, a slow run is not measured.
pub fn run_scenario(name: &str, limit: Duration) -> std::process::Output {
    scenario::output_within(scenario::command(name), limit)
}

/// The last `n` bytes of `bytes`, as text.
pub fn tail(bytes: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(n)..]).into_owned()
}

/// The pids in `pids` that are still alive (not zombies).
pub fn alive(pids: &[u32]) -> Vec<u32> {
    pids.iter().copied().filter(|&p| pid_alive(p)).collect()
}

/// Live children of `pid` (not zombies).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        if f.next().and_then(|x| x.parse::<u32>().ok()) == Some(pid) && state != "Z" {
            out.push(p);
        }
    }
    out
}

/// Polls `cond` every millisecond until it holds; fails the test with `what` if it does not
/// within `limit` (a watchdog, not a measurement).
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (watchdog: 20 s) until every process in `pids` sleeps (state S): idle workers past
/// their spin.
pub fn await_asleep(pids: &[u32]) {
    wait_until(Duration::from_secs(20), "the workers go to sleep", || pids.iter().all(|&p| proc_state(p) == Some('S')));
}
