//! Helpers for the start-method suites: check where workers came from, leak checks that allow
//! the fork server.
//!
//! Test binaries need no entry point for spawned children: a copy of this binary that shmpool
//! starts with `exec` becomes the worker (fork server, `spawn_fn` child) in shmpool's start-up
//! hook, before libtest's `main` runs.

use shmpool::{Pool, StartMethod};

/// Every start method.
pub const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];
/// The methods that are safe in a multi-threaded parent.
pub const SAFE_METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::ForkServer];

/// A pool of `workers` started by `method`.
pub fn pool(method: StartMethod, workers: usize) -> Pool {
    Pool::builder().workers(workers).start_method(method).build().unwrap()
}

/// Whether `pid` was started by `exec` from shmpool (its initial environment, which
/// `/proc/PID/environ` shows even after the start-up hook removed the variable, holds the
/// marker).
pub fn exec_started(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv.starts_with(b"SHMPOOL_CHILD=")))
}

/// The parent pid of `pid`.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Checks where the pool's workers came from: our children (forked, or exec'd), or the fork
/// server's.
pub fn assert_started_by(pool: &Pool, method: StartMethod) {
    let me = std::process::id();
    for pid in pool.pids() {
        // A recycled worker may be on its way out: check the live ones.
        let spawned = exec_started(pid);
        if !super::pid_alive(pid) {
            continue;
        }
        match method {
            StartMethod::Fork => assert!(ppid(pid) == Some(me) && !spawned, "forked worker {pid}"),
            StartMethod::Spawn => assert!(ppid(pid) == Some(me) && spawned, "spawned worker {pid}"),
            _ => assert_eq!(ppid(pid), shmpool::testing::fork_server_pid(), "served worker {pid}"),
        }
    }
}

/// No child but the fork server (which lives as long as this process) and no segment is left.
pub fn assert_nothing_leaked() {
    let server: Vec<u32> = shmpool::testing::fork_server_pid().into_iter().collect();
    super::assert_nothing_leaked_but(&server);
}
