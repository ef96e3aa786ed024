//! `Pool.map`, as in Python:
//!
//! ```python
//! from multiprocessing import Pool
//! def f(x): return x * 2
//! with Pool(4) as p:
//!     print("Results:", p.map(f, [1, 2, 3, 4, 5]))
//! ```
fn main() -> shmpool::Result<()> {
    let pool = shmpool::Pool::new(4)?;
    let results = pool.map(&[1, 2, 3, 4, 5], |x: i32| x * 2)?;
    println!("Results: {results:?}");
    Ok(())
}
