//! `shmpool gen`: write a synthetic dataset.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use shmpool::kernel::expr::Num;
use shmpool::{Dtype, NpyOutput};

use super::Failure;

/// Arguments of `shmpool gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Output .npy file.
    output: PathBuf,
    /// Number of elements.
    #[arg(long)]
    len: u64,
    /// Element type (f64, f32, i8..i64, u8..u64, or numpy names).
    #[arg(long, default_value = "f64")]
    dtype: String,
    /// `mod1000`: x[i] = (i % 1000) + 0.5 (integers: i % 1000); `random`: uniform in [0, 1)
    /// for floats, in the type's range for integers.
    #[arg(long, default_value = "mod1000")]
    pattern: String,
    /// Seed for `random`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn fill<T: Num>(out: &mut NpyOutput, pattern: &str, seed: u64, float: bool) -> Result<(), Failure> {
    let xs = out.as_mut_slice::<T>()?;
    match pattern {
        "mod1000" => {
            for (i, x) in xs.iter_mut().enumerate() {
                let v = (i % 1000) as f64 + if float { 0.5 } else { 0.0 };
                *x = T::from_f64(v);
            }
        }
        _ => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for x in xs.iter_mut() {
                *x = if float {
                    T::from_f64(rng.gen::<f64>())
                } else {
                    let mut b = T::zeroed();
                    rng.fill(bytemuck::bytes_of_mut(&mut b));
                    b
                };
            }
        }
    }
    Ok(())
}

pub fn run(args: GenArgs) -> Result<(), Failure> {
    let dtype = Dtype::parse(&args.dtype).ok_or_else(|| Failure::usage(format!("unknown --dtype '{}'", args.dtype)))?;
    if args.pattern != "mod1000" && args.pattern != "random" {
        return Err(Failure::usage(format!("unknown --pattern '{}' (mod1000 or random)", args.pattern)));
    }
    let t = Instant::now();
    let mut out = NpyOutput::create(&args.output, dtype, &[args.len])?;
    let f = dtype.is_float();
    match dtype {
        Dtype::I8 => fill::<i8>(&mut out, &args.pattern, args.seed, f),
        Dtype::I16 => fill::<i16>(&mut out, &args.pattern, args.seed, f),
        Dtype::I32 => fill::<i32>(&mut out, &args.pattern, args.seed, f),
        Dtype::I64 => fill::<i64>(&mut out, &args.pattern, args.seed, f),
        Dtype::U8 => fill::<u8>(&mut out, &args.pattern, args.seed, f),
        Dtype::U16 => fill::<u16>(&mut out, &args.pattern, args.seed, f),
        Dtype::U32 => fill::<u32>(&mut out, &args.pattern, args.seed, f),
        Dtype::U64 => fill::<u64>(&mut out, &args.pattern, args.seed, f),
        Dtype::F32 => fill::<f32>(&mut out, &args.pattern, args.seed, f),
        Dtype::F64 => fill::<f64>(&mut out, &args.pattern, args.seed, f),
    }?;
    out.commit()?;
    println!(
        "wrote {} {} elements ({}) to {} in {:.1} s",
        args.len,
        dtype,
        args.pattern,
        args.output.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
