//! A `.npy` file mapped in, an expression mapped over it, a `.npy` file out, as in Python:
//!
//! ```python
//! x = np.load("in.npy", mmap_mode="r")
//! np.save("out.npy", np.sqrt(x) * 1.5 + 0.25)
//! ```
//!
//! The input is memory-mapped and read in place by the workers; the output is written in place
//! into an unnamed file that is linked as `out.npy` only when the map succeeded.
use shmpool::kernel::expr::Program;
use shmpool::{Dtype, KernelSpec, NpyArray, NpyOutput, Pool};

fn main() -> shmpool::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| shmpool::Error::File {
        op: "create",
        path: "a temporary directory".into(),
        source: e,
    })?;
    let input = dir.path().join("in.npy");
    let output = dir.path().join("out.npy");

    // Make an input file (what `shmpool gen` does): 1M float64 values, shape (1000, 1000).
    let mut gen = NpyOutput::create(&input, Dtype::F64, &[1000, 1000])?;
    for (i, x) in gen.as_mut_slice::<f64>()?.iter_mut().enumerate() {
        *x = (i % 1000) as f64 + 0.5;
    }
    gen.commit()?;

    let pool = Pool::new(2)?;
    // SAFETY: both files live in this example's private temporary directory; nothing else
    // writes or truncates them while they are mapped.
    let x = unsafe { NpyArray::open(&input) }?;
    let program = Program::compile_for("sqrt(x) * 1.5 + 0.25", x.dtype())?;
    let spec = KernelSpec::expr_for(&program, x.dtype(), Dtype::F64)?;
    let mut y = NpyOutput::create(&output, Dtype::F64, x.shape())?;
    pool.map_into(&x, &mut y, &spec)?;
    y.commit()?;

    // SAFETY: as above.
    let y = unsafe { NpyArray::open(&output) }?;
    let ys = y.as_slice::<f64>()?;
    let wrong = x.as_slice::<f64>()?.iter().zip(ys).filter(|(a, b)| a.sqrt() * 1.5 + 0.25 != **b).count();
    println!("out.npy: shape {:?}, dtype {}, {} wrong values", y.shape(), y.dtype(), wrong);
    Ok(())
}
