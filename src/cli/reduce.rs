//! `shmpool reduce`: one number from an expression over memory-mapped `.npy` files, computed
//! in parallel by the pool's workers (`np.sum(x * x)` is `shmpool reduce x.npy --expr
//! 'sum(x * x)'`).
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};

use shmpool::kernel::expr::parse::{extract_reductions, REDUCTION_PREFIX};
use shmpool::kernel::expr::{Program, Reduction, Value};
use shmpool::{Dtype, NpyArray, NpyOutput, Pool};

use super::map::{cores, open_input, outer_program, parse_inputs, reduce_inner, with_sizes};
use super::Failure;

/// Arguments of `shmpool reduce`.
#[derive(Debug, clap::Args)]
pub struct ReduceArgs {
    /// Input .npy files (memory-mapped, read in place): a bare path is `x`; `NAME=PATH` names
    /// an input; shapes broadcast as numpy's.
    #[arg(value_name = "INPUT", required = true)]
    inputs: Vec<String>,
    /// A reduction of an elementwise expression, `sum(x * x)` or `sum((x - mean(x)) ** 2)`,
    /// or an expression of reductions, `sqrt(sum(x * x)) / 3`: sum prod mean min max std var
    /// count_nonzero any all argmin argmax nansum nanmean nanmin nanmax (over the whole array:
    /// no axis= yet; no reduction inside a reduction's own argument beyond one level). Prints
    /// numpy's repr of the result.
    #[arg(long, allow_hyphen_values = true)]
    expr: String,
    /// Also write the result as a 0-d .npy file.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Worker processes (default: number of cores).
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
}

pub fn run(args: ReduceArgs) -> Result<(), Failure> {
    if args.jobs == Some(0) {
        return Err(Failure::usage("-j must be at least 1"));
    }
    let names_list = Reduction::names().collect::<Vec<_>>().join(" ");
    let (kind, inner) = match Reduction::split(&args.expr) {
        Some((k, inner)) => (Some(k), inner.to_string()),
        None => (None, args.expr.clone()),
    };
    if kind.is_none() && matches!(extract_reductions(&inner), Ok((_, r)) if r.is_empty()) {
        return Err(Failure::usage(format!(
            "--expr must reduce: one reduction of an expression, e.g. 'sum(x * x)', or an expression of \
             reductions, e.g. 'sqrt(sum(x * x))' ({names_list}); axis= is not supported yet"
        )));
    }
    let named = parse_inputs(&args.inputs)?;
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone().unwrap_or_else(|| "x".to_string())).collect();
    let used = Program::variables(&args.expr)?;
    if let Some(u) = used.iter().find(|u| !names.contains(u)) {
        return Err(Failure::usage(format!("the expression uses '{u}', which is not an input ({})", names.join(", "))));
    }
    if let Some(n) = names.iter().find(|n| !used.contains(n)) {
        return Err(Failure::usage(format!("input '{n}' is not used by the expression")));
    }
    if names.iter().any(|n| n.starts_with(REDUCTION_PREFIX)) {
        return Err(Failure::usage(format!("input names starting with {REDUCTION_PREFIX} are reserved")));
    }
    let arrays = named.iter().map(|(_, p)| open_input(p)).collect::<Result<Vec<_>, _>>()?;
    let paths: Vec<&Path> = named.iter().map(|(_, p)| p.as_path()).collect();
    let (rewritten, reductions) = extract_reductions(&with_sizes(&inner, &names, &arrays)?)?;
    let pool = Pool::builder().workers(args.jobs.unwrap_or_else(cores)).build()?;
    let values = reduce_inner(&pool, &reductions, &names, &paths, &arrays)?;
    let (outer, program) = outer_program(&rewritten, &names, &arrays, &values)?;
    let (value, warning) = match kind {
        Some(kind) => {
            let files: Vec<(&Path, &NpyArray)> = outer.iter().map(|&k| (paths[k], &arrays[k])).collect();
            pool.reduce_npy(&program, &files, &values, kind)?
        }
        None if outer.is_empty() => {
            // An expression of reductions' values: one element, computed here.
            let bytes: Vec<Vec<u8>> = values.iter().map(Value::to_le_bytes).collect();
            let ops: Vec<(&[u8], &[u64])> = bytes.iter().map(|b| (&b[..], &[][..])).collect();
            let mut out = vec![0u8; program.output_dtype().size()];
            program.eval_broadcast(&ops, &mut out, 0..1)?;
            let v = Value::from_le_bytes(program.output_dtype(), &out).expect("one element of the output dtype");
            (v, None)
        }
        None => {
            return Err(Failure::usage(
                "the result is an array (an input is used outside every reduction): use shmpool map, \
                 or put one reduction around the whole expression",
            ))
        }
    };
    pool.close();
    pool.join()?;
    if let Some(w) = warning {
        eprintln!("RuntimeWarning: {w}");
    }
    println!("{}", value.repr());
    if let Some(path) = &args.output {
        write_scalar(path, &value)?;
    }
    Ok(())
}

/// Writes `value` as a 0-d `.npy` of its dtype.
fn write_scalar(path: &Path, value: &Value) -> Result<(), Failure> {
    fn put<T: bytemuck::Pod>(out: &mut NpyOutput, bytes: &[u8]) -> Result<(), Failure> {
        out.as_mut_slice::<T>()?[0] = bytemuck::pod_read_unaligned(bytes);
        Ok(())
    }
    let mut out = NpyOutput::create(path, value.dtype(), &[])?;
    let b = value.to_le_bytes();
    match value.dtype() {
        Dtype::Bool | Dtype::U8 => put::<u8>(&mut out, &b)?,
        Dtype::I8 => put::<i8>(&mut out, &b)?,
        Dtype::I16 => put::<i16>(&mut out, &b)?,
        Dtype::U16 => put::<u16>(&mut out, &b)?,
        Dtype::I32 => put::<i32>(&mut out, &b)?,
        Dtype::U32 => put::<u32>(&mut out, &b)?,
        Dtype::I64 => put::<i64>(&mut out, &b)?,
        Dtype::U64 => put::<u64>(&mut out, &b)?,
        Dtype::F16 => put::<half::f16>(&mut out, &b)?,
        Dtype::F32 => put::<f32>(&mut out, &b)?,
        Dtype::F64 => put::<f64>(&mut out, &b)?,
    }
    out.commit()?;
    Ok(())
}
