//! ndarray's parallel zip, with worker processes instead of threads. In ndarray with rayon:
//!
//! ```rust,ignore
//! par_azip!((y in &mut ys, &x in &xs) *y = x.sqrt() * 1.5 + 0.25);
//! par_azip!((s in &mut sums, row in m.rows()) *s = row.sum());
//! ```
//!
//! and with shmpool (feature `ndarray`): the same kernels run in a pool's workers, over a
//! `SharedArray` in place (zero copies) or over any ndarray view (copied in and out; strided
//! views are gathered and scattered in logical order).
use ndarray::{Array2, Axis};
use shmpool::nd::SharedArray;
use shmpool::prelude::*;

fn main() -> shmpool::Result<()> {
    shmpool::init();
    let pool = Pool::new(2)?;
    let (rows, cols) = (1000, 512);

    // par_azip!((y in &mut ys, &x in &xs) *y = x.sqrt() * 1.5 + 0.25), in shared memory.
    let mut xs = SharedArray::<f64, _>::zeroed((rows, cols))?;
    for (i, x) in xs.iter_mut().enumerate() {
        *x = (i % 1000) as f64 + 0.5;
    }
    let mut ys = SharedArray::<f64, _>::zeroed((rows, cols))?;
    pool.map_into(&xs, &mut ys, |x: f64| x.sqrt() * 1.5 + 0.25)?;
    let ok = xs.view().iter().zip(ys.view().iter()).all(|(x, y)| *y == x.sqrt() * 1.5 + 0.25);
    println!("elementwise over {rows}x{cols}: {}", if ok { "verified" } else { "WRONG" });

    // par_azip!((s in &mut sums, row in m.rows()) *s = row.sum()): a row kernel gets whole rows.
    let mut sums = ndarray::Array1::<f64>::zeros(rows);
    pool.map_into(&xs, &mut sums, (|row: &[f64], s: &mut [f64]| s[0] = row.iter().sum()).by_rows(cols, 1))?;
    let ok = sums.iter().zip(xs.view().sum_axis(Axis(1)).iter()).all(|(a, b)| (a - b).abs() < 1e-6);
    println!("row sums of {rows} rows: {}", if ok { "verified" } else { "WRONG" });

    // A transposed (non-contiguous) view of a plain array, in logical order.
    let m = Array2::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f64);
    let doubled = pool.map(&m.t(), |x: f64| x * 2.0)?;
    println!("transposed view doubled: {doubled:?}");
    Ok(())
}
