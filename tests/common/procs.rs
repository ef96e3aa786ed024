//! Process checks shared by the engine's integration tests and the MPI member's
//! (`mpi/tests/common` includes this file with `#[path]`): dependency-free, `/proc` only.

use std::time::{Duration, Instant};

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Asserts that every pid in `pids` is gone within 5 s.
pub fn assert_pids_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("processes still alive: {alive:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
