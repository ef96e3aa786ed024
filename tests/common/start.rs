//! Helpers for the start-method suites: route spawned children, check where workers came from,
//! leak checks that allow the fork server.

use shmpool::{Pool, StartMethod};

/// Every start method.
pub const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];
/// The methods that are safe in a multi-threaded parent.
pub const SAFE_METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::ForkServer];

/// Name of the `#[ignore]`d test every start-method suite declares as its children's entry
/// point: `#[test] #[ignore] fn spawned_child_entry() { shmpool::init(); }`.
pub const ENTRY: &str = "spawned_child_entry";

/// Routes children started by `exec` to [`ENTRY`] in this test binary: libtest's `main` runs
/// first in the child, but it only parses its arguments and starts that one test, which calls
/// `shmpool::init()` and becomes the worker (fork server, `spawn_fn` child) and never returns.
pub fn route_to(entry: &str) {
    shmpool::testing::route_spawned_children([entry, "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"]);
}

/// A pool of `workers` started by `method`, children routed to [`ENTRY`].
pub fn pool(method: StartMethod, workers: usize) -> Pool {
    route_to(ENTRY);
    Pool::builder().workers(workers).start_method(method).build().unwrap()
}

/// The parent pid of `pid`.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Checks where the pool's workers came from: our children (forked, or exec'd running this
/// binary's child entry), or the fork server's.
pub fn assert_started_by(pool: &Pool, method: StartMethod) {
    let me = std::process::id();
    for pid in pool.pids() {
        // A recycled worker may be on its way out: check the live ones.
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if !super::pid_alive(pid) {
            continue;
        }
        let spawned = String::from_utf8_lossy(&cmdline).contains(ENTRY);
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
