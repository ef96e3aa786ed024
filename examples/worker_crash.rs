//! What `concurrent.futures`' `BrokenProcessPool` would be, done right: a worker dies, shmpool
//! retries its chunk on a fresh worker, and only a chunk that keeps killing workers is reported.
//!
//! ```python
//! with ProcessPoolExecutor(2) as ex:
//!     list(ex.map(f, xs))      # one worker segfaults: BrokenProcessPool, every result lost
//! ```
use shmpool::KernelExt;
use std::time::Duration;

use shmpool::{Error, Pool};

/// Takes 1 ms per 1,000 elements, and crashes (SIGSEGV, like a buggy C kernel) on the element
/// `crash_at`, every time.
fn fragile(x: u64, crash_at: &u64) -> u64 {
    if x % 1000 == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    if x == *crash_at {
        // SAFETY: none: this dereferences null on purpose to die of SIGSEGV.
        unsafe { std::ptr::null_mut::<u64>().write_volatile(x) };
    }
    x * x
}

fn main() -> shmpool::Result<()> {
    let pool = Pool::builder().workers(2).chunk_len(1_000).max_attempts(3).build()?;
    let xs: Vec<u64> = (0..20_000).collect();

    // 1. A worker is killed from outside in the middle of a map: the map still completes.
    let victim = pool.pids()[0];
    std::thread::scope(|s| -> shmpool::Result<()> {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(2));
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL);
        });
        let out = pool.map(&xs, fragile.with(u64::MAX))?;
        let ok = out.iter().zip(&xs).all(|(y, x)| *y == x * x);
        println!("map with a killed worker: {} results, all correct: {ok}", out.len());
        println!("workers that died so far: {}", pool.worker_deaths());
        Ok(())
    })?;

    // 2. A chunk that kills every worker that touches it: reported after max_attempts.
    match pool.map(&xs, fragile.with(13_000u64)) {
        Err(Error::WorkerCrashed { range, signal, attempts }) => {
            println!("chunk {range:?} crashed {attempts} workers (signal {signal}); the pool stays usable")
        }
        other => println!("unexpected: {other:?}"),
    }
    let again = pool.map(&xs, fragile.with(u64::MAX))?;
    println!("next map: {} results, {} workers alive", again.len(), pool.pids().len());
    Ok(())
}
