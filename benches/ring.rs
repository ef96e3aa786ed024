//! The slot state machine on its own: fill, claim, publish, collect under the robust mutex, in
//! one process, against a std Mutex round trip as the baseline.

use std::sync::Mutex;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use shmpool::testing::RingProbe;

fn round_trip(c: &mut Criterion) {
    let ring = RingProbe::new(8, 4096).unwrap();
    let mut g = c.benchmark_group("ring_round_trip");
    g.bench_function(BenchmarkId::new("shm_ring", 8), |b| b.iter(|| ring.round_trip()));
    let m = Mutex::new(0u64);
    g.bench_function(BenchmarkId::new("std_mutex_x3", 1), |b| {
        b.iter(|| {
            for _ in 0..3 {
                *m.lock().unwrap() += 1;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
