//! A server that builds its pool as root and then drops its privileges (`setuid`) keeps a
//! working pool: workers started after the drop attach the ring and the arrays made before it,
//! because segments are checked against the uid recorded when they were made, never against
//! the attacher's current euid.
//!
//! The program is a scenario (this test binary re-run as a child program: tests/common/scenario.rs) that
//! runs as root, builds its pool and arrays, `setuid`s to `nobody` and maps on. Needs root (CI
//! runs as root); elsewhere the test says SKIPPED.

mod common;

scenarios!(program_that_drops_root_after_building_its_pool);

use std::time::Duration;

use shmpool::{Pool, SharedVec, StartMethod};

const NOBODY: u32 = 65534;

fn w1_chunk(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x.sqrt() * 1.5 + 0.25;
    }
}

fn method_from_env() -> StartMethod {
    match std::env::var("SHMPOOL_PRIV_METHOD").as_deref() {
        Ok("spawn") => StartMethod::Spawn,
        Ok("forkserver") => StartMethod::ForkServer,
        _ => StartMethod::Fork,
    }
}

/// The program: builds a pool (workers replaced after every chunk, so that every map after the
/// drop runs on workers started as `nobody`) and two arrays as root, drops to `nobody`, maps.
/// A scenario of `pool_and_arrays_keep_working_after_the_program_drops_root`.
fn program_that_drops_root_after_building_its_pool() {
    let pool = Pool::builder()
        .workers(2)
        .start_method(method_from_env())
        .max_chunks_per_worker(1)
        .chunk_len(1000)
        .build()
        .unwrap();
    let xs = SharedVec::from_slice(&(0..10_000).map(f64::from).collect::<Vec<_>>()).unwrap();
    let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
    pool.map_into(&xs, &mut ys, w1_chunk).unwrap();

    // SAFETY: setgroups/setgid/setuid take plain integers; glibc applies them to every thread.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setgid(NOBODY), 0);
        assert_eq!(libc::setuid(NOBODY), 0);
    }
    assert_eq!(nix::unistd::geteuid().as_raw(), NOBODY);

    for round in 0..3 {
        ys.fill(0.0);
        pool.map_into(&xs, &mut ys, w1_chunk).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(ys.iter().zip(xs.iter()).all(|(y, x)| *y == x.sqrt() * 1.5 + 0.25), "round {round}");
        // An array made after the drop, and plain slices through staging made after it.
        let late = SharedVec::from_slice(&xs[..5000]).unwrap();
        let mut out = pool.alloc::<f64>(late.len()).unwrap();
        pool.map_into(&late, &mut out, w1_chunk).unwrap();
        assert!(out.iter().zip(late.iter()).all(|(y, x)| *y == x.sqrt() * 1.5 + 0.25));
        let plain: Vec<f64> = (0..20_000).map(f64::from).collect();
        let got = pool.map(&plain, |x: f64| x * 2.0).unwrap();
        assert!(got.iter().zip(&plain).all(|(y, x)| *y == x * 2.0));
    }
    println!("PRIVILEGE DROP OK");
}

#[test]
fn pool_and_arrays_keep_working_after_the_program_drops_root() {
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root, where this test must run");
        eprintln!("SKIPPED pool_and_arrays_keep_working_after_the_program_drops_root: needs root to setuid");
        return;
    }
    let _serial = common::serial();
    for method in ["fork", "spawn", "forkserver"] {
        let mut program = common::scenario::command("program_that_drops_root_after_building_its_pool");
        program.env("SHMPOOL_PRIV_METHOD", method);
        let out = common::scenario::output_within(program, Duration::from_secs(120));
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && stdout.contains("PRIVILEGE DROP OK"),
            "{method}: the program that dropped root lost its pool ({:?})\n{stdout}\n{stderr}",
            out.status
        );
    }
    common::assert_nothing_leaked();
}
