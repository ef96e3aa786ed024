//! `shmpool reduce`: one number from an expression over memory-mapped `.npy` files, computed
//! in parallel by the pool's workers (`np.sum(x * x)` is `shmpool reduce x.npy --expr
//! 'sum(x * x)'`).
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};

use shmpool::kernel::expr::parse::{extract_reductions, REDUCTION_PREFIX};
use shmpool::kernel::expr::{Program, Reduction};
use shmpool::Pool;

use super::input::open_input;
use super::map::{cores, parse_inputs, with_sizes};
use super::reduced::{reduce_inner, repr, single_axis, write_array, Outer};
use super::Failure;
use shmpool::cli::same_file;

/// Arguments of `shmpool reduce`.
#[derive(Debug, clap::Args)]
pub struct ReduceArgs {
    /// Input .npy files (memory-mapped, read in place): a bare path is `x`; `NAME=PATH` names
    /// an input; shapes broadcast as numpy's.
    #[arg(value_name = "INPUT", required = true)]
    inputs: Vec<String>,
    /// A reduction of an elementwise expression, `sum(x * x)` or `sum((x - mean(x)) ** 2)`,
    /// or an expression of reductions, `sqrt(sum(x * x)) / 3`: sum prod mean min max std var
    /// count_nonzero any all argmin argmax nansum nanmean nanmin nanmax, over the whole array
    /// or along an axis (`sum(x, axis=1)`, `argmax(x, axis=-1)`: an array); no reduction
    /// inside a reduction's own argument beyond one level. Prints numpy's repr of the result.
    #[arg(long, allow_hyphen_values = true)]
    expr: String,
    /// Also write the result as a .npy file (0-d for one value).
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
            "--expr must reduce: one reduction of an expression, e.g. 'sum(x * x)' or 'sum(x, axis=1)', or an \
             expression of reductions, e.g. 'sqrt(sum(x * x))' ({names_list})"
        )));
    }
    let named = parse_inputs(&args.inputs)?;
    if let Some(out) = &args.output {
        if let Some((_, p)) = named.iter().find(|(_, p)| same_file(p, out)) {
            return Err(Failure::usage(format!(
                "output {} is the input {}: reduce never replaces an input",
                out.display(),
                p.display()
            )));
        }
    }
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone().unwrap_or_else(|| "x".to_string())).collect();
    check_names(&args.expr, &names)?;
    let arrays = named.iter().map(|(_, p)| open_input(p)).collect::<Result<Vec<_>, _>>()?;
    let paths: Vec<&Path> = named.iter().map(|(_, p)| p.as_path()).collect();
    let sized = with_sizes(&inner, &names, &arrays)?;
    let (rewritten, calls) = extract_reductions(&sized)?;
    let pool = Pool::builder().workers(args.jobs.unwrap_or_else(cores)).build()?;
    let out = args.output.as_deref();
    if let Some(text) = single_axis(&pool, (&rewritten, &calls), (&names, &paths, &arrays), out)? {
        pool.close();
        pool.join()?;
        println!("{text}");
        return Ok(());
    }
    let reduced = reduce_inner(&pool, &calls, &names, &paths, &arrays)?;
    let outer = Outer::new((&inner, &sized, &rewritten), &names, &arrays, reduced)?;
    let (dtype, shape, bytes, warning) = match kind {
        Some(kind) => {
            let files = outer.files(&paths, &arrays);
            let (v, warning) = shmpool::expr_reduce::reduce_npy(&pool, &outer.program, &files, &outer.values, kind)?;
            (v.dtype(), Vec::new(), v.to_le_bytes(), warning)
        }
        // An expression of reductions' values: computed here.
        None if outer.used.is_empty() => {
            let (dtype, shape, bytes) = outer.evaluate()?;
            (dtype, shape, bytes, None)
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
    println!("{}", repr(dtype, &shape, &bytes));
    if let Some(path) = &args.output {
        write_array(path, dtype, &shape, &bytes)?;
    }
    Ok(())
}

/// Every name the expression uses is an input, every input is used, none is reserved.
fn check_names(expr: &str, names: &[String]) -> Result<(), Failure> {
    let used = Program::variables(expr)?;
    if let Some(u) = used.iter().find(|u| !names.contains(u)) {
        return Err(Failure::usage(format!("the expression uses '{u}', which is not an input ({})", names.join(", "))));
    }
    if let Some(n) = names.iter().find(|n| !used.contains(n)) {
        return Err(Failure::usage(format!("input '{n}' is not used by the expression")));
    }
    if names.iter().any(|n| n.starts_with(REDUCTION_PREFIX)) {
        return Err(Failure::usage(format!("input names starting with {REDUCTION_PREFIX} are reserved")));
    }
    Ok(())
}
