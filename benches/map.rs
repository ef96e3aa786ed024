//! W1 (memory-bound) and W2 (compute-bound) through `Pool::map_into` with 2 workers, against a
//! single thread and rayon with 2 threads on the same data, in the same run, and W1 under each
//! start method. Also pool start-up per start method against a bare fork, a bare fork+exec and a
//! 2-thread rayon pool.

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
#[path = "../src/workloads.rs"]
mod workloads;
use shmpool::{Pool, SharedVec, StartMethod};
use workloads::{W1_LEN, W2_LEN};

fn inputs(n: usize) -> (SharedVec<f64>, SharedVec<f64>) {
    let mut xs = SharedVec::<f64>::zeroed(n).unwrap();
    workloads::fill_pattern(&mut xs, 0);
    let mut ys = SharedVec::<f64>::zeroed(n).unwrap();
    ys.fill(1.0); // fault the pages in, as the other runs will find them
    (xs, ys)
}

fn workload<E, C>(c: &mut Criterion, name: &str, n: usize, elem: E, chunk: C)
where
    E: Fn(f64) -> f64 + Copy + Sync + 'static,
    C: Fn(&[f64], &mut [f64]) + Copy + Sync + 'static,
{
    let (xs, mut ys) = inputs(n);
    let rayon2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let pool = Pool::new(2).unwrap();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function(BenchmarkId::new("single_thread", 1), |b| {
        b.iter(|| {
            for (y, &x) in ys.iter_mut().zip(xs.iter()) {
                *y = elem(x);
            }
        })
    });
    g.bench_function(BenchmarkId::new("rayon_elem_threads", 2), |b| {
        b.iter(|| {
            rayon2.install(|| ys.par_iter_mut().zip(xs.par_iter()).for_each(|(y, &x)| *y = elem(x)));
        })
    });
    // The same chunk kernel shmpool runs, over 64 Ki-element chunks: the fairest baseline.
    g.bench_function(BenchmarkId::new("rayon_chunk_threads", 2), |b| {
        b.iter(|| {
            rayon2.install(|| ys.par_chunks_mut(1 << 16).zip(xs.par_chunks(1 << 16)).for_each(|(y, x)| chunk(x, y)));
        })
    });
    g.bench_function(BenchmarkId::new("shmpool_workers", 2), |b| {
        b.iter(|| pool.map_into(&xs, &mut ys, chunk).unwrap())
    });
    if name.starts_with("W1") {
        // Once a pool is up, how its workers were started must not matter.
        for (mname, m) in METHODS {
            let p = Pool::builder().workers(2).start_method(m).build().unwrap();
            g.bench_function(BenchmarkId::new(format!("shmpool_{mname}"), 2), |b| {
                b.iter(|| p.map_into(&xs, &mut ys, chunk).unwrap())
            });
        }
    }
    g.finish();
}

/// The start methods, by name, for per-method cases.
const METHODS: [(&str, StartMethod); 3] =
    [("fork", StartMethod::Fork), ("spawn", StartMethod::Spawn), ("forkserver", StartMethod::ForkServer)];

fn w1(c: &mut Criterion) {
    workload(c, "W1_sqrt_50M", W1_LEN, workloads::w1, workloads::w1_chunk);
}

fn w2(c: &mut Criterion) {
    workload(c, "W2_sin64_2M", W2_LEN, workloads::w2, workloads::w2_chunk);
}

fn startup(c: &mut Criterion) {
    let mut g = c.benchmark_group("startup");
    g.sample_size(30);
    g.bench_function(BenchmarkId::new("shmpool_pool_ready", 2), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let pool = Pool::new(2).unwrap();
                total += t.elapsed();
                drop(pool);
            }
            total
        })
    });
    for (name, m) in METHODS {
        // Created to ready: the ring, the supervisor, two workers started and (Spawn,
        // ForkServer) past their handshake. The fork server itself starts once, before timing.
        let _warm = Pool::builder().workers(2).start_method(m).build().unwrap();
        g.bench_function(BenchmarkId::new(format!("pool_ready_{name}"), 2), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let pool = Pool::builder().workers(2).start_method(m).build().unwrap();
                    total += t.elapsed();
                    drop(pool);
                }
                total
            })
        });
    }
    g.bench_function(BenchmarkId::new("bare_fork_exec_true", 1), |b| {
        b.iter(|| std::process::Command::new("/bin/true").status().unwrap())
    });
    g.bench_function(BenchmarkId::new("bare_fork_and_join", 1), |b| {
        b.iter(|| shmpool::Process::spawn(|| {}).unwrap().join().unwrap())
    });
    g.bench_function(BenchmarkId::new("rayon_pool_build", 2), |b| {
        b.iter(|| rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap())
    });
    g.finish();
}

criterion_group!(benches, w1, w2, startup);

fn main() {
    // Spawned workers (and the fork server, from this multi-threaded bench) are copies of
    // this binary.
    shmpool::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
