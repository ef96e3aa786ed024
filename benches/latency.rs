//! W3: a 1024-element f64 batch through W1's function and back, through `Pool::map` (inline in
//! a slot), against a single thread and rayon with 2 threads, in the same run. Criterion reports
//! the median; a second pass prints p50 / p99 / p99.9 in µs.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
#[path = "../src/workloads.rs"]
mod workloads;
use shmpool::{Pool, StartMethod};
use workloads::W3_LEN;

fn batch() -> Vec<f64> {
    (0..W3_LEN).map(workloads::pattern).collect()
}

fn percentiles(name: &str, mut f: impl FnMut()) {
    for _ in 0..2000 {
        f();
    }
    let mut t: Vec<f64> = (0..50_000)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    println!("W3 {name:<22} p50 {:>8.2} µs  p99 {:>8.2} µs  p99.9 {:>8.2} µs", p(0.5), p(0.99), p(0.999));
}

/// The start methods, by name, for per-method cases.
const METHODS: [(&str, StartMethod); 3] =
    [("fork", StartMethod::Fork), ("spawn", StartMethod::Spawn), ("forkserver", StartMethod::ForkServer)];

fn main() {
    // Spawned workers are copies of this bench binary.
    shmpool::init();
    let xs = batch();
    let pool = Pool::new(2).unwrap();
    let by_method: Vec<(&str, Pool)> =
        METHODS.iter().map(|&(name, m)| (name, Pool::builder().workers(2).start_method(m).build().unwrap())).collect();
    let rayon2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("W3_latency_1024");
        g.throughput(Throughput::Elements(W3_LEN as u64));
        g.bench_function(BenchmarkId::new("single_thread", 1), |b| {
            b.iter(|| xs.iter().map(|&x| workloads::w1(x)).collect::<Vec<f64>>())
        });
        g.bench_function(BenchmarkId::new("rayon_threads", 2), |b| {
            b.iter(|| rayon2.install(|| xs.par_iter().map(|&x| workloads::w1(x)).collect::<Vec<f64>>()))
        });
        g.bench_function(BenchmarkId::new("shmpool_workers", 2), |b| b.iter(|| pool.map(&xs, workloads::w1).unwrap()));
        // Once a pool is up, how its workers were started must not matter.
        for (name, p) in &by_method {
            g.bench_function(BenchmarkId::new(format!("shmpool_{name}"), 2), |b| {
                b.iter(|| p.map(&xs, workloads::w1).unwrap())
            });
        }
        g.finish();
    }
    if std::env::args().any(|a| a == "--bench") {
        percentiles("single_thread", || {
            std::hint::black_box(xs.iter().map(|&x| workloads::w1(x)).collect::<Vec<f64>>());
        });
        percentiles("rayon_threads(2)", || {
            std::hint::black_box(rayon2.install(|| xs.par_iter().map(|&x| workloads::w1(x)).collect::<Vec<f64>>()));
        });
        percentiles("shmpool_workers(2)", || {
            std::hint::black_box(pool.map(&xs, workloads::w1).unwrap());
        });
        for (name, p) in &by_method {
            percentiles(&format!("shmpool_{name}(2)"), || {
                std::hint::black_box(p.map(&xs, workloads::w1).unwrap());
            });
        }
    }
    c.final_summary();
}
