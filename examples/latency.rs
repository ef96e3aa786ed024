//! W3 from a user's program: a 1024-element `f64` batch through W1's function and back, with the
//! pool exactly as the README shows it (`Pool::new(1)`, the default wait strategy, `submit` then
//! `wait_into`), beside the same work done in-process, in the same run. The Python it replaces:
//!
//! ```python
//! with Pool(1) as p:
//!     for _ in range(n):
//!         out = p.apply_async(w1, (batch,)).get()
//! ```
//!
//! `cargo run --release --example latency` measures 200,000 round trips after a warm-up;
//! `--quick` (what the test suite runs) a few thousand; `--methods` adds a pool per start method.
//! Latency needs a quiet machine: on a loaded one the figures measure the load.

use std::hint::black_box;
use std::time::Instant;

use shmpool::{Pool, StartMethod, WaitStrategy};

const LEN: usize = 1024;

fn w1(x: f64) -> f64 {
    x.sqrt() * 1.5 + 0.25
}

/// p50 / p99 / p99.9 in µs of `rounds` calls of `f` after `warm` unmeasured ones.
fn percentiles(warm: usize, rounds: usize, mut f: impl FnMut() -> shmpool::Result<()>) -> shmpool::Result<[f64; 3]> {
    for _ in 0..warm {
        f()?;
    }
    let mut t = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    Ok([p(0.5), p(0.99), p(0.999)])
}

fn report(name: &str, [p50, p99, p999]: [f64; 3]) {
    println!("{name:<38} p50 {p50:>7.2} µs  p99 {p99:>7.2} µs  p99.9 {p999:>7.2} µs");
}

/// Minor page faults of process `pid` so far (field 10 of /proc/<pid>/stat), for `--methods`:
/// a path that keeps faulting in its steady state shows here.
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().nth(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

fn main() -> shmpool::Result<()> {
    // Only needed by `--methods` (Spawn and ForkServer workers start as copies of this binary).
    shmpool::init();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let methods = args.iter().any(|a| a == "--methods");
    let (warm, rounds) = if quick { (500, 3_000) } else { (20_000, 200_000) };

    let batch: Vec<f64> = (0..LEN).map(|i| (i % 1000) as f64 + 0.5).collect();
    let want: Vec<f64> = batch.iter().map(|&x| w1(x)).collect();
    let mut out = vec![0.0f64; LEN];

    // The pool as a user's program builds it: everything default.
    let pool = Pool::new(1)?;
    let shm = percentiles(warm, rounds, || pool.submit(&batch, |x: f64| x.sqrt() * 1.5 + 0.25)?.wait_into(&mut out))?;
    let correct = out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
    let inproc = percentiles(warm, rounds, || {
        for (o, &x) in out.iter_mut().zip(black_box(&batch)) {
            *o = w1(x);
        }
        black_box(&mut out);
        Ok(())
    })?;
    println!("W3: {LEN} f64 through sqrt(x) * 1.5 + 0.25 and back, {rounds} round trips after {warm}");
    report("in-process (no pool)", inproc);
    report(&format!("Pool::new(1) submit+wait_into ({:?})", pool.start_method()), shm);
    drop(pool);
    if methods {
        // The same round trip with each start method and wait strategy, and the page faults
        // the caller and the worker take per round trip in the steady state.
        let configs = [
            ("Fork", StartMethod::Fork, WaitStrategy::Adaptive),
            ("ForkServer", StartMethod::ForkServer, WaitStrategy::Adaptive),
            ("Spawn", StartMethod::Spawn, WaitStrategy::Adaptive),
            ("Fork, WaitStrategy::Spin", StartMethod::Fork, WaitStrategy::Spin),
        ];
        for (name, m, w) in configs {
            let pool = Pool::builder().workers(1).start_method(m).wait_strategy(w).build()?;
            let worker = pool.pids()[0];
            let (mut calls, mut faults) = (0, (0, 0));
            let r = percentiles(warm, rounds, || {
                if calls == warm {
                    // The first measured round trip: count faults from here.
                    faults = (minor_faults(std::process::id()), minor_faults(worker));
                }
                calls += 1;
                pool.submit(&batch, w1)?.wait_into(&mut out)
            })?;
            let per = |before: u64, pid: u32| (minor_faults(pid) - before) as f64 / rounds as f64;
            let (caller, work) = (per(faults.0, std::process::id()), per(faults.1, worker));
            report(name, r);
            println!("{:<38} faults per round trip: caller {caller:.3}, worker {work:.3}", "");
        }
    }
    println!("results correct: {correct}");
    Ok(())
}
