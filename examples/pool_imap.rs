//! `Pool.imap` over batches, as in Python:
//!
//! ```python
//! with Pool(2) as p:
//!     for out in p.imap(process_batch, batches):   # in order, bounded memory
//!         total += out.sum()
//! ```
//!
//! Eight batches of 250,000 readings are streamed through the pool; only one batch is held at
//! a time.
use shmpool::Pool;

fn main() -> shmpool::Result<()> {
    let pool = Pool::new(2)?;
    let batches = (0..8u64).map(|b| (0..250_000u64).map(|i| ((b * 250_000 + i) % 1000) as f32).collect::<Vec<f32>>());
    let mut total = 0.0f64;
    let mut count = 0usize;
    for (k, out) in pool.imap(batches, |x: f32| (x as f64) * 0.001).enumerate() {
        let out = out?;
        count += out.len();
        total += out.iter().sum::<f64>();
        println!("batch {k}: {} values", out.len());
    }
    // Each batch holds 250 full cycles of 0..1000, scaled by 0.001: 250 * 499.5 per batch.
    println!("{count} values, total {total:.1}");
    Ok(())
}
