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

use shmpool::{workloads, Pool, SharedVec};

fn main() -> shmpool::Result<()> {
    let n = 10_000_000;
    let pool = Pool::new(2)?;
    let mut xs = pool.alloc::<f64>(n)?;
    workloads::fill_pattern(&mut xs, 0);
    let mut ys: SharedVec<f64> = pool.alloc(n)?;

    let t = Instant::now();
    pool.map_into(&xs, &mut ys, workloads::w1_chunk)?;
    let secs = t.elapsed().as_secs_f64();

    let wrong = xs.iter().zip(ys.iter()).filter(|(x, y)| workloads::w1(**x) != **y).count();
    assert_eq!(wrong, 0, "{wrong} elements differ from the sequential result");
    println!("ys[0..3] = {:?}", &ys[..3]);
    println!("W1 over {n} elements: all verified ({:.0} Melem/s)", n as f64 / secs / 1e6);
    Ok(())
}
