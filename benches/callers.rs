//! Many callers and streaming, beside rayon doing the same batches in the same run:
//! 4 threads × 2,000 submits of 1024-element batches on 2 workers, and `imap` /
//! `imap_unordered` over 2,000 such batches. Throughput is in batches per second.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
#[path = "../src/workloads.rs"]
mod workloads;
use shmpool::Pool;
use workloads::W3_LEN;

const THREADS: usize = 4;
const PER_THREAD: usize = 2000;
const STREAM: usize = 2000;

fn batch(b: usize) -> Vec<f64> {
    (0..W3_LEN).map(|i| workloads::pattern(b + i)).collect()
}

fn main() {
    let pool = Pool::new(2).unwrap();
    let rayon2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let batches: Vec<Vec<f64>> = (0..THREADS).map(batch).collect();
    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(5)).sample_size(10);
    {
        let mut g = c.benchmark_group("many_callers_4x2000_batches");
        g.throughput(Throughput::Elements((THREADS * PER_THREAD) as u64));
        g.bench_function(BenchmarkId::new("rayon_threads", 2), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for xs in &batches {
                        let rayon2 = &rayon2;
                        s.spawn(move || {
                            let mut ys = vec![0.0; W3_LEN];
                            for _ in 0..PER_THREAD {
                                rayon2.install(|| {
                                    ys.par_iter_mut().zip(xs.par_iter()).for_each(|(y, &x)| *y = workloads::w1(x))
                                });
                            }
                        });
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("shmpool_submit", 2), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for xs in &batches {
                        let pool = &pool;
                        s.spawn(move || {
                            let mut ys = vec![0.0; W3_LEN];
                            for _ in 0..PER_THREAD {
                                pool.submit(xs, workloads::w1).unwrap().wait_into(&mut ys).unwrap();
                            }
                        });
                    }
                })
            })
        });
        g.finish();
    }
    let stream: Vec<Vec<f64>> = (0..64).map(batch).collect();
    let batches_of = || (0..STREAM).map(|b| &stream[b % stream.len()]);
    {
        let mut g = c.benchmark_group("stream_2000_batches");
        g.throughput(Throughput::Elements(STREAM as u64));
        g.bench_function(BenchmarkId::new("rayon_threads", 2), |b| {
            b.iter(|| {
                // Every batch's results materialised, as imap hands them out (not `count()`,
                // which an indexed rayon iterator answers without running the map).
                rayon2.install(|| {
                    batches_of()
                        .collect::<Vec<_>>()
                        .par_iter()
                        .map(|xs| xs.iter().map(|&x| workloads::w1(x)).collect::<Vec<f64>>())
                        .collect::<Vec<_>>()
                        .len()
                })
            })
        });
        g.bench_function(BenchmarkId::new("shmpool_imap", 2), |b| {
            b.iter(|| pool.imap(batches_of(), workloads::w1).map(|r| r.unwrap().len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("shmpool_imap_unordered", 2), |b| {
            b.iter(|| pool.imap_unordered(batches_of(), workloads::w1).map(|r| r.unwrap().len()).sum::<usize>())
        });
        g.finish();
    }
    c.final_summary();
}
