//! `shmpool gen`: write a synthetic dataset.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use shmpool::{Dtype, NpyOutput};

use super::Failure;

/// Arguments of `shmpool gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Output .npy file.
    output: PathBuf,
    /// Number of elements (a 1-D array). One of --len and --shape is required.
    #[arg(long, conflicts_with = "shape", required_unless_present = "shape")]
    len: Option<u64>,
    /// Shape of an N-D array, comma-separated (`1000,37`), C order.
    #[arg(long, value_delimiter = ',')]
    shape: Option<Vec<u64>>,
    /// Element type as numpy spells it: float64 (f8), float32 (f4), int8..int64 (i1..i8),
    /// uint8..uint64 (u1..u8), float16 (f2), bool.
    #[arg(long, default_value = "float64")]
    dtype: String,
    /// `mod1000`: x[i] = (i % 1000) + 0.5 (integers: i % 1000, bool: i % 2); `random`: uniform
    /// in [0, 1) for floats, in the type's range for integers.
    #[arg(long, default_value = "mod1000")]
    pattern: String,
    /// Seed for `random`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Fills `$xs` (a slice of `$t`) with the pattern; `$from` converts an f64 to `$t`.
macro_rules! fill {
    ($out:expr, $t:ty, $float:expr, $pattern:expr, $seed:expr, $from:expr) => {{
        let xs = $out.as_mut_slice::<$t>()?;
        if $pattern == "mod1000" {
            for (i, x) in xs.iter_mut().enumerate() {
                *x = $from((i % 1000) as f64 + if $float { 0.5 } else { 0.0 });
            }
        } else {
            let mut rng = rand::rngs::StdRng::seed_from_u64($seed);
            for x in xs.iter_mut() {
                *x = if $float {
                    $from(rng.gen::<f64>())
                } else {
                    let mut b = <$t as bytemuck::Zeroable>::zeroed();
                    rng.fill(bytemuck::bytes_of_mut(&mut b));
                    b
                };
            }
        }
    }};
}

pub fn run(args: GenArgs) -> Result<(), Failure> {
    let dtype: Dtype = args.dtype.parse()?;
    if args.pattern != "mod1000" && args.pattern != "random" {
        return Err(Failure::usage(format!("unknown --pattern '{}' (mod1000 or random)", args.pattern)));
    }
    let shape = match (&args.shape, args.len) {
        (Some(s), _) if s.is_empty() => return Err(Failure::usage("--shape needs at least one dimension")),
        (Some(s), _) => s.clone(),
        (None, Some(n)) => vec![n],
        (None, None) => return Err(Failure::usage("gen needs --len N or --shape D1,D2,...")),
    };
    let t = Instant::now();
    // NpyOutput::create refuses a shape whose byte size overflows, before touching the disk.
    let mut out = NpyOutput::create(&args.output, dtype, &shape)?;
    let (p, s, f) = (args.pattern.as_str(), args.seed, dtype.is_float());
    match dtype {
        Dtype::Bool => {
            let xs = out.as_mut_slice::<u8>()?;
            if p == "mod1000" {
                xs.iter_mut().enumerate().for_each(|(i, x)| *x = (i % 2) as u8);
            } else {
                let mut rng = rand::rngs::StdRng::seed_from_u64(s);
                xs.iter_mut().for_each(|x| *x = u8::from(rng.gen::<bool>()));
            }
        }
        Dtype::I8 => fill!(out, i8, f, p, s, |v: f64| v as i8),
        Dtype::I16 => fill!(out, i16, f, p, s, |v: f64| v as i16),
        Dtype::I32 => fill!(out, i32, f, p, s, |v: f64| v as i32),
        Dtype::I64 => fill!(out, i64, f, p, s, |v: f64| v as i64),
        Dtype::U8 => fill!(out, u8, f, p, s, |v: f64| v as u8),
        Dtype::U16 => fill!(out, u16, f, p, s, |v: f64| v as u16),
        Dtype::U32 => fill!(out, u32, f, p, s, |v: f64| v as u32),
        Dtype::U64 => fill!(out, u64, f, p, s, |v: f64| v as u64),
        Dtype::F16 => fill!(out, half::f16, f, p, s, half::f16::from_f64),
        Dtype::F32 => fill!(out, f32, f, p, s, |v: f64| v as f32),
        Dtype::F64 => fill!(out, f64, f, p, s, |v: f64| v),
    }
    out.commit()?;
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    println!(
        "wrote {} {} elements, shape ({}) ({}) to {} in {:.1} s",
        shape.iter().product::<u64>(),
        dtype,
        if dims.len() == 1 { format!("{},", dims[0]) } else { dims.join(", ") },
        args.pattern,
        args.output.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
