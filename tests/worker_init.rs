//! `PoolBuilder::worker_init` (Python's `Pool(initializer=...)`): it runs once in every worker,
//! replacements included, under every start method, never in the pool's own process; a panic
//! in it stops the pool with a clear error; and the logging recipe of its docs (install a
//! logger that writes to stderr in each worker) makes kernels' log records appear, where
//! without it an exec'd worker's records go nowhere.

mod common;

scenarios!(worker_init_scenario);

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::start::METHODS;
use shmpool::{Pool, StartMethod};

/// The recipe's logger, reduced to what the tests need: installed per process, one line per
/// record on stderr. (Opened per record rather than through std's `Stderr`, whose lock a
/// `Fork` worker may inherit held.)
static LOGGER: AtomicBool = AtomicBool::new(false);

fn log(msg: &str) -> bool {
    if !LOGGER.load(Ordering::Relaxed) {
        return false;
    }
    let line = format!("LOG {} {msg}\n", std::process::id());
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
        let _ = f.write_all(line.as_bytes());
    }
    true
}

/// The `worker_init` of the recipe: install the logger, and say so once.
fn install_logger() {
    LOGGER.store(true, Ordering::Relaxed);
    log("worker_init");
}

/// A kernel that logs once per map and reports whether a logger was there.
fn logs(i: u32) -> u32 {
    if i == 0 {
        log("kernel");
    }
    u32::from(LOGGER.load(Ordering::Relaxed))
}

/// Waits (bounded) until none of `old` is among the pool's workers any more and it has
/// `workers` of them again: the replacement is up.
fn await_replacement(pool: &Pool, killed: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = pool.pids();
        if !pids.contains(&killed) && pids.len() == pool.workers() {
            return pids;
        }
        assert!(Instant::now() < deadline, "no replacement for worker {killed}: {pids:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pools under every method with `install_logger` as `worker_init`; a worker of each is killed
/// and replaced. Prints every worker pid per method; the test below matches them with the
/// `worker_init` lines on stderr. A scenario, run in its own process by that test.
fn worker_init_scenario() {
    println!("scenario pid {}", std::process::id());
    let xs: Vec<u32> = (0..4_000).collect();
    for method in METHODS {
        let pool =
            Pool::builder().workers(2).chunk_len(100).start_method(method).worker_init(install_logger).build().unwrap();
        let mut all = pool.pids();
        assert!(pool.map(&xs, logs).unwrap().iter().all(|&l| l == 1), "{method:?}: a kernel ran without the logger");
        let victim = all[0];
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        let now = await_replacement(&pool, victim);
        all.extend(now.iter().filter(|p| !all.contains(p)).collect::<Vec<_>>());
        assert!(pool.map(&xs, logs).unwrap().iter().all(|&l| l == 1), "{method:?}: a kernel ran without the logger");
        // Dropping the pool waits for every worker to exit; each ran `worker_init` first.
        drop(pool);
        println!("{method:?} workers: {}", all.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    }
    // Without `worker_init`, exec'd workers never run what `main` set up: here the program
    // installs its logger, and a `Spawn` pool's kernels still find none.
    LOGGER.store(true, Ordering::Relaxed);
    let pool = Pool::builder().workers(2).start_method(StartMethod::Spawn).build().unwrap();
    assert!(pool.map(&xs, logs).unwrap().iter().all(|&l| l == 0), "a spawned worker had the program's logger");
    println!("scenario: done");
}

#[test]
fn worker_init_runs_once_in_every_worker_and_replacement() {
    let out = common::run_scenario("worker_init_scenario", Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scenario failed: {}\n{stdout}\n{}", out.status, common::tail(&out.stderr, 4000));
    assert!(stdout.contains("scenario: done"), "{stdout}");
    let inits: Vec<u32> =
        stderr.lines().filter_map(|l| l.strip_prefix("LOG ")?.strip_suffix(" worker_init")?.parse().ok()).collect();
    let count = |pid: u32| inits.iter().filter(|&&p| p == pid).count();
    let me: u32 =
        stdout.lines().find_map(|l| l.split_once("scenario pid ")?.1.parse().ok()).expect("the scenario's pid");
    assert_eq!(count(me), 0, "worker_init ran in the pool's own process");
    for method in METHODS {
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(&format!("{method:?} workers: ")).map(|(_, pids)| pids))
            .unwrap_or_else(|| panic!("no {method:?} line in {stdout}"));
        let pids: Vec<u32> = line.split(' ').map(|p| p.parse().unwrap()).collect();
        assert_eq!(pids.len(), 3, "{method:?}: two workers and a replacement: {pids:?}");
        // Every worker that ran a kernel ran `worker_init` exactly once before; a worker killed
        // before it got that far (the victim may be killed while it still starts up, under
        // load) ran it at most once.
        for pid in pids {
            let ran_kernel = stderr.lines().any(|l| l == format!("LOG {pid} kernel"));
            let want = if ran_kernel { 1..=1 } else { 0..=1 };
            assert!(want.contains(&count(pid)), "{method:?}: worker_init lines of worker {pid}\n{stderr}");
        }
    }
    // Kernels' records reached stderr (the recipe works), from workers only.
    assert!(stderr.lines().any(|l| l.starts_with("LOG ") && l.ends_with(" kernel")), "{stderr}");
}

fn panics_in_init() {
    panic!("no configuration for this worker");
}

#[test]
fn a_panic_in_worker_init_stops_the_pool_with_a_clear_error_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            let pool = Pool::builder().workers(2).start_method(method).worker_init(panics_in_init).build();
            // The handshake comes first, so `build` itself succeeds; no map can.
            let pool = pool.unwrap_or_else(|e| panic!("{method:?}: {e}"));
            let err = pool.map(&[1.0f64, 2.0], f64::sqrt).expect_err("a pool whose workers cannot start maps");
            assert!(err.to_string().contains("worker_init panicked in worker"), "{method:?}: {err}");
            // And it stays stopped, rather than starting workers that panic again.
            let again = pool.map(&[1.0f64], f64::sqrt).expect_err("still stopped");
            assert!(again.to_string().contains("worker_init panicked"), "{method:?}: {again}");
        }
    });
    common::start::assert_nothing_leaked();
}
