//! The chaos mix of several callers (blocking maps, `submit` + `wait`, `submit` + `wait_timeout`
//! pollers) on one pool while a killer thread SIGKILLs, SIGSEGVs or stops its workers: every
//! `Ok` is exact; `RingFull` and `WorkerCrashed` are counted, anything else fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::workloads::{pattern, w1};
use shmpool::Error;

/// Runs the mix for `secs` seconds on a pool built from `builder`, killing a random worker
/// every few milliseconds when `kill` is set; returns how many calls failed with `RingFull`.
pub fn chaos_round_with(builder: shmpool::PoolBuilder, secs: u64, kill: bool) -> u64 {
    let rings_full = std::sync::atomic::AtomicU64::new(0);
    let pool = builder.build().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let pool = &pool;
        let stop = &stop;
        let rings_full = &rings_full;
        let mut hs = Vec::new();
        for t in 0..4usize {
            hs.push(s.spawn(move || {
                let mut n = 0u64;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let len = [1usize, 7, 300, 5_000, 70_000][(i + t) % 5];
                    let xs: Vec<f64> = (0..len).map(|k| pattern(k + i)).collect();
                    let ys = match t % 3 {
                        0 => pool.map(&xs, w1),
                        1 => pool.submit(&xs, w1).and_then(|tk| tk.wait()),
                        _ => pool.submit(&xs, w1).and_then(|mut tk| loop {
                            match tk.wait_timeout(Duration::from_millis(3)) {
                                Ok(Some(v)) => break Ok(v),
                                Ok(None) => continue,
                                Err(e) => break Err(e),
                            }
                        }),
                    };
                    match ys {
                        Ok(ys) => {
                            assert!(
                                xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()),
                                "thread {t}: wrong answer for len {len}"
                            );
                            n += 1;
                        }
                        // Counted, not failed: `no_ring_full_in_the_chaos_mix_without_kills`
                        // (tests/callers.rs) checks it; here the test looks for wrong answers and hangs.
                        Err(Error::RingFull { .. }) => {
                            rings_full.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::WorkerCrashed { .. }) => {}
                        Err(e) => panic!("thread {t}: unexpected {e:?}"),
                    }
                }
                n
            }));
        }
        // The killer: SIGKILL or SIGSTOP+SIGKILL or SIGSEGV a random worker every few ms. Its
        // pauses are the stimulus (how often workers die), not a synchronisation; the mix runs
        // for `secs` seconds.
        use nix::sys::signal::{kill as send, Signal};
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let pids = pool.pids();
            if !kill {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if let Some(&p) = pids.get((rng % pids.len().max(1) as u64) as usize) {
                let pid = nix::unistd::Pid::from_raw(p as i32);
                let sig = [Signal::SIGKILL, Signal::SIGSEGV, Signal::SIGSTOP][(rng >> 20) as usize % 3];
                // A worker that already died (and was reaped) is not an error here.
                let _ = send(pid, sig);
                if sig == Signal::SIGSTOP {
                    std::thread::sleep(Duration::from_millis(3));
                    let _ = send(pid, Signal::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(5 + rng % 20));
        }
        stop.store(true, Ordering::Relaxed);
        let done: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        eprintln!(
            "maps per thread: {done:?}, deaths {}, RingFull {}",
            pool.worker_deaths(),
            rings_full.load(Ordering::Relaxed)
        );
    });
    rings_full.load(Ordering::Relaxed)
}
