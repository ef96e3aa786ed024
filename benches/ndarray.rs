//! W1 over a 2-d array (`sqrt(x) * 1.5 + 0.25`) beside ndarray's `par_azip!` (rayon, 2 threads)
//! in the same group and run: shmpool with 2 workers over a `SharedArray` (in place), and over
//! a plain `Array2` (copied in and out), against `azip!` on one thread.

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ndarray::{azip, par_azip, Array2};
use shmpool::nd::SharedArray;
use shmpool::Pool;

fn w1(x: f64) -> f64 {
    x.sqrt() * 1.5 + 0.25
}

fn w1_chunk(xs: &[f64], ys: &mut [f64]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = w1(x);
    }
}

fn ndarray_w1(c: &mut Criterion) {
    let (rows, cols) = (2_000, 2_500);
    let xs = Array2::from_shape_fn((rows, cols), |(i, j)| ((i * cols + j) % 1000) as f64 + 0.5);
    let mut ys = Array2::<f64>::ones((rows, cols));
    let shared_xs = SharedArray::from_array(&xs).unwrap();
    let mut shared_ys = SharedArray::<f64, _>::zeroed((rows, cols)).unwrap();
    let rayon2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let pool = Pool::new(2).unwrap();

    let mut g = c.benchmark_group("ndarray_W1");
    g.throughput(Throughput::Elements((rows * cols) as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function(BenchmarkId::new("azip_single_thread", 1), |b| {
        b.iter(|| azip!((y in &mut ys, &x in &xs) *y = w1(x)))
    });
    g.bench_function(BenchmarkId::new("par_azip_threads", 2), |b| {
        b.iter(|| rayon2.install(|| par_azip!((y in &mut ys, &x in &xs) *y = w1(x))))
    });
    g.bench_function(BenchmarkId::new("shmpool_shared_array", 2), |b| {
        b.iter(|| pool.map_into(&shared_xs, &mut shared_ys, w1_chunk).unwrap())
    });
    g.bench_function(BenchmarkId::new("shmpool_plain_array", 2), |b| {
        b.iter(|| pool.map_into(&xs, &mut ys, w1_chunk).unwrap())
    });
    g.finish();
}

criterion_group!(benches, ndarray_w1);

fn main() {
    shmpool::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
