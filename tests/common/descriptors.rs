//! For the tests that lower the process's descriptor limit (one test per binary: any other test
//! beside it would fail): the lowered limit as a guard, and waiting for a pool's workers
//! without reading any file.

use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft descriptor limit lowered to `limit` (every descriptor this process creates above
/// it fails with EMFILE); restored when dropped. Nothing may read a file while it holds.
pub struct LoweredLimit {
    soft: u64,
    hard: u64,
}

impl LoweredLimit {
    pub fn to(limit: u64) -> LoweredLimit {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).unwrap();
        LoweredLimit { soft, hard }
    }
}

impl Drop for LoweredLimit {
    fn drop(&mut self) {
        setrlimit(Resource::RLIMIT_NOFILE, self.soft, self.hard).unwrap();
    }
}

pub fn kill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Waits (reading no file: there are no descriptors to spare) until `pool` lists `n` workers,
/// none of them in `gone`.
pub fn wait_for_pids(pool: &shmpool::Pool, n: usize, gone: &[u32]) -> Vec<u32> {
    loop {
        let pids = pool.pids();
        if pids.len() == n && !pids.iter().any(|p| gone.contains(p)) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
