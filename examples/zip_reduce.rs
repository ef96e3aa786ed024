//! Several inputs and reductions, as numexpr / numpy users write them:
//!
//! ```python
//! import numpy as np
//! a, b, c = np.load("a.npy", mmap_mode="r"), np.load("b.npy", mmap_mode="r"), np.load("c.npy", mmap_mode="r")
//! y = a * b + c                      # numexpr.evaluate("a * b + c")
//! total = np.sum(a * a)              # numexpr.evaluate("sum(a * a)")
//! mean, std = a.mean(), a.std()
//! ```
//!
//! Here three `SharedVec`s are zipped into one kernel with `map_into` (the workers read all
//! three in place), and `map_reduce` computes `sum(a * a)` and mean / std in one pass, with the
//! same bits for any number of workers.
use shmpool::{Pool, SharedVec};

/// `a * b + c`, one element of each input at a time.
fn fma((a, b, c): (f64, f64, f64)) -> f64 {
    a * b + c
}

/// [sum, sum of squares, count] of one element, and how two partial results combine.
fn moments(x: f64) -> [f64; 3] {
    [x, x * x, 1.0]
}
fn add3(p: [f64; 3], q: [f64; 3]) -> [f64; 3] {
    [p[0] + q[0], p[1] + q[1], p[2] + q[2]]
}

fn main() -> shmpool::Result<()> {
    let n = 1_000_000;
    let pool = Pool::new(2)?;
    let a = SharedVec::from_slice(&(0..n).map(|i| (i % 1000) as f64 * 0.001).collect::<Vec<_>>())?;
    let b = SharedVec::from_slice(&(0..n).map(|i| (i % 7) as f64).collect::<Vec<_>>())?;
    let c = SharedVec::from_slice(&vec![0.5; n])?;

    let mut y = pool.alloc::<f64>(n)?;
    pool.map_into(&(&a, &b, &c), &mut y, fma)?;
    println!("y[999] = a[999] * b[999] + c[999] = {}", y[999]);

    let sum_sq = pool.map_reduce(&a, 0.0, |x: f64| x * x, |p: f64, q: f64| p + q)?;
    let [s, s2, count] = pool.map_reduce(&a, [0.0; 3], moments, add3)?;
    let mean = s / count;
    let std = (s2 / count - mean * mean).sqrt();
    println!("sum(a * a) = {sum_sq:.3}");
    println!("mean = {mean:.4}, std = {std:.4}");

    // The same sum on one worker: bit-identical (fixed blocks, fixed combine tree).
    let one = Pool::new(1)?.map_reduce(&a, 0.0, |x: f64| x * x, |p: f64, q: f64| p + q)?;
    println!("same bits on 1 worker: {}", one.to_bits() == sum_sq.to_bits());
    Ok(())
}
