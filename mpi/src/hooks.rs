//! Test-only hooks (`testing` feature): hold a rank mid-map, or panic it, as the environment
//! says, so that the tests can kill a rank at a known point.

/// Called from the progress callback of the rank's map, after its first chunk.
/// With SHMPOOL_MPI_TEST_HOLD=DIR, holds the rank (every rank, or only the one
/// SHMPOOL_MPI_TEST_HOLD_RANK names) mid-map after writing its pid and its workers' pids to
/// DIR/rankN.
pub fn mid_map(rank: usize, pool: &shmpool::Pool, mut stop_requested: impl FnMut() -> bool) {
    let chosen = std::env::var("SHMPOOL_MPI_TEST_HOLD_RANK").map_or(true, |r| r == rank.to_string());
    if let (Ok(dir), true) = (std::env::var("SHMPOOL_MPI_TEST_HOLD"), chosen) {
        let pids: Vec<String> = std::iter::once(std::process::id()).chain(pool.pids()).map(|p| p.to_string()).collect();
        let tmp = std::path::Path::new(&dir).join(format!(".rank{rank}"));
        std::fs::write(&tmp, pids.join(" ")).expect("test hook: write the pid file");
        std::fs::rename(&tmp, std::path::Path::new(&dir).join(format!("rank{rank}")))
            .expect("test hook: publish the pid file");
        // Held here, mid-map, as a long map: until the test kills the job, or another rank
        // asks this one to stop (a long map's progress ticks would see that too). A test
        // fixture, not synchronisation: nothing waits for it to end.
        while !stop_requested() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Called when the rank's own map has returned, before the ranks agree on the outcome
/// (the others may still be mapping): a panic here, outside any `catch_unwind`, would
/// unwind into `MPI_Finalize` while the others wait for this rank.
pub fn after_map(rank: usize) {
    if std::env::var("SHMPOOL_MPI_TEST_PANIC_RANK").is_ok_and(|r| r == rank.to_string()) {
        panic!("test hook: rank {rank} panics after its map");
    }
}

/// Called when the rank is about to wait for the others' status: with
/// SHMPOOL_MPI_TEST_HOLD=DIR, writes its pid to DIR/waitingN.
pub fn waiting(rank: usize) {
    if let Ok(dir) = std::env::var("SHMPOOL_MPI_TEST_HOLD") {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join(format!(".waiting{rank}")), std::process::id().to_string())
            .expect("test hook: write the pid file");
        std::fs::rename(dir.join(format!(".waiting{rank}")), dir.join(format!("waiting{rank}")))
            .expect("test hook: publish the pid file");
    }
}

/// Whether this rank's kernel should panic instead of evaluating the expression.
pub fn kernel_panics(rank: usize) -> bool {
    std::env::var("SHMPOOL_MPI_TEST_PANIC_KERNEL_RANK").is_ok_and(|r| r == rank.to_string())
}

/// A float64 → float64 kernel that panics (the tests map float64 files).
pub fn panicking_kernel(_: &[f64], _: &mut [f64]) {
    panic!("test hook: this kernel panics");
}
