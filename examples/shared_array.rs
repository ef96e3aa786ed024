//! A shared array filled in place, then mapped with zero copies, as in Python:
//!
//! ```python
//! from multiprocessing import shared_memory, Pool
//! import numpy as np
//! shm = shared_memory.SharedMemory(create=True, size=n * 8)
//! x = np.ndarray((n,), dtype=np.float64, buffer=shm.buf)
//! x[:] = np.arange(n) % 1000 + 0.5
//! # ... workers attach by name and write np.sqrt(x) * 1.5 + 0.25 into a second block
//! ```
//!
//! Here W1 runs over a 10M-element `SharedVec` with `map_into`: the workers read `xs` and
//! write `ys` in place.
use std::time::Instant;

use shmpool::{Pool, SharedVec};

/// W1's element function.
fn w1(x: f64) -> f64 {
    x.sqrt() * 1.5 + 0.25
}

/// W1 as a chunk kernel: the workers run it over their ranges in place.
fn w1_chunk(xs: &[f64], ys: &mut [f64]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = w1(x);
    }
}

fn main() -> shmpool::Result<()> {
    let n = 10_000_000;
    let pool = Pool::new(2)?;
    let mut xs = pool.alloc::<f64>(n)?;
    for (i, x) in xs.iter_mut().enumerate() {
        *x = (i % 1000) as f64 + 0.5;
    }
    let mut ys: SharedVec<f64> = pool.alloc(n)?;

    let t = Instant::now();
    pool.map_into(&xs, &mut ys, w1_chunk)?;
    let secs = t.elapsed().as_secs_f64();

    let wrong = xs.iter().zip(ys.iter()).filter(|(x, y)| w1(**x) != **y).count();
    assert_eq!(wrong, 0, "{wrong} elements differ from the sequential result");
    println!("ys[0..3] = {:?}", &ys[..3]);
    println!("W1 over {n} elements: all verified ({:.0} Melem/s)", n as f64 / secs / 1e6);
    Ok(())
}
