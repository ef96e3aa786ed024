//! `shmpool map`: the main job, over the built-in dataset or a `.npy` file.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::workloads::{self, W1_LEN};
use shmpool::kernel::expr::Program;
use shmpool::{Dtype, KernelSpec, NpyArray, NpyOutput, Pool, SharedVec};

use super::Failure;

/// The W1 expression, the default kernel.
pub const W1_EXPR: &str = "sqrt(x) * 1.5 + 0.25";

/// Arguments of `shmpool map`.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// Input .npy file (memory-mapped, read in place). Without it: the built-in W1 dataset.
    input: Option<PathBuf>,
    /// Output .npy file (written to a temporary file, renamed into place on success).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Expression over `x` (element) and `i` (flat index). Default: the compiled W1 kernel
    /// on the built-in dataset, `sqrt(x) * 1.5 + 0.25` on files.
    #[arg(long)]
    expr: Option<String>,
    /// Output dtype (default: the input's for floats, float64 for integers).
    #[arg(long)]
    dtype: Option<String>,
    /// Worker processes (default: number of cores).
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// Elements per chunk (default: adaptive).
    #[arg(long)]
    chunk_len: Option<usize>,
    /// Show a progress bar even when stderr is not a terminal.
    #[arg(long, conflicts_with = "quiet")]
    progress: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Allow the output to replace the input (written aside, renamed over it on success).
    #[arg(long)]
    in_place: bool,
    /// Built-in dataset only: number of elements.
    #[arg(long, default_value_t = W1_LEN)]
    len: usize,
    /// Built-in dataset only: timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn build_pool(args: &MapArgs) -> Result<(Pool, usize, f64), Failure> {
    let workers = args.jobs.unwrap_or_else(cores); // -j 0 was refused in `run`
    let t = Instant::now();
    let mut builder = Pool::builder().workers(workers);
    if let Some(c) = args.chunk_len {
        builder = builder.chunk_len(c);
    }
    let pool = builder.build()?;
    Ok((pool, workers, t.elapsed().as_secs_f64() * 1e3))
}

pub fn run(args: MapArgs) -> Result<(), Failure> {
    if args.repeat == 0 {
        return Err(Failure::usage("--repeat must be at least 1"));
    }
    if args.jobs == Some(0) {
        return Err(Failure::usage("-j must be at least 1"));
    }
    match args.input.clone() {
        Some(input) => run_file(&args, &input),
        None => run_builtin(&args),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

fn run_file(args: &MapArgs, input: &Path) -> Result<(), Failure> {
    let output = args.output.as_deref().ok_or_else(|| Failure::usage("map INPUT needs -o OUTPUT.npy"))?;
    if same_file(input, output) && !args.in_place {
        return Err(Failure::usage(format!("output {} is the input; pass --in-place to replace it", output.display())));
    }
    let program = Program::compile(args.expr.as_deref().unwrap_or(W1_EXPR))?;
    let src = NpyArray::open(input)?;
    let out_dtype = match &args.dtype {
        Some(d) => Dtype::parse(d).ok_or_else(|| Failure::usage(format!("unknown --dtype '{d}'")))?,
        None if src.dtype().is_float() => src.dtype(),
        None => Dtype::F64,
    };
    let spec = KernelSpec::expr_for(&program, src.dtype(), out_dtype)?;
    let mut dst = NpyOutput::create(output, out_dtype, src.shape())?;
    let (pool, workers, _) = build_pool(args)?;
    let n = src.len();
    let show = !args.quiet && (args.progress || std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let bar = show.then(|| {
        let b = indicatif::ProgressBar::new(n as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {percent:>3}% {human_pos}/{human_len} {per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        b
    });
    let t = Instant::now();
    let mut tick = |done: usize| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    };
    pool.map_npy(&src, &mut dst, &spec, Some(&mut tick))?;
    let secs = t.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish();
    }
    dst.commit()?;
    let shape: Vec<String> = src.shape().iter().map(|d| d.to_string()).collect();
    println!(
        "mapped {n} elements ({} {} -> {}) in {:.1} ms: {:.1} Melem/s with {workers} workers; wrote {}",
        shape.join("x"),
        src.dtype(),
        out_dtype,
        secs * 1e3,
        n as f64 / secs.max(1e-9) / 1e6,
        output.display()
    );
    Ok(())
}

fn run_builtin(args: &MapArgs) -> Result<(), Failure> {
    let program = args.expr.as_deref().map(Program::compile).transpose()?;
    let n = args.len;
    let label = args.expr.clone().unwrap_or_else(|| format!("{W1_EXPR} (compiled W1 kernel)"));
    println!(
        "dataset: built-in W1, {n} f64 (x[i] = (i % 1000) + 0.5), {} in + {} out in shared memory",
        super::human((n * 8) as u64),
        super::human((n * 8) as u64)
    );
    let t = Instant::now();
    let mut xs = SharedVec::<f64>::zeroed(n)?;
    workloads::fill_pattern(&mut xs, 0);
    let mut ys = SharedVec::<f64>::zeroed(n)?;
    println!("allocated and filled in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let (pool, workers, ready_ms) = build_pool(args)?;
    println!("pool of {workers} worker processes ready in {ready_ms:.3} ms");
    let spec = program.as_ref().map(KernelSpec::expr::<f64, f64>);

    let mut times = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        ys.fill(0.0);
        let t = Instant::now();
        match &spec {
            Some(s) => pool.map_into_spec(&xs, &mut ys, s)?,
            None => pool.map_into(&xs, &mut ys, workloads::w1_chunk)?,
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let want = |k: usize, x: f64| match &program {
        Some(p) => p.eval_one(x, k as f64),
        None => workloads::w1(x),
    };
    let mismatches =
        xs.iter().zip(ys.iter()).enumerate().filter(|(k, (x, y))| want(*k, **x).to_bits() != y.to_bits()).count();
    let verify_ms = t.elapsed().as_secs_f64() * 1e3;
    if mismatches > 0 {
        return Err(Failure::runtime(format!("{mismatches} of {n} elements differ from the sequential result")));
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{label}: median {:.1} ms of {} runs (min {:.1}, max {:.1})",
        median * 1e3,
        times.len(),
        times[0] * 1e3,
        times[times.len() - 1] * 1e3
    );
    println!(
        "throughput: {:.1} Melem/s, {:.2} GB/s (read + write), {workers} workers",
        n as f64 / median / 1e6,
        (n * 16) as f64 / median / 1e9
    );
    println!("verified: all {n} elements bit-identical to the sequential result ({verify_ms:.0} ms)");
    let pids = pool.pids();
    let parent = pss_kib(std::process::id());
    let workers_pss: u64 = pids.iter().filter_map(|&p| pss_kib(p)).sum();
    if let Some(parent) = parent {
        println!(
            "memory: PSS of the process tree {:.0} MiB (parent {:.0} MiB, {} workers {:.0} MiB; shared pages counted once)",
            (parent + workers_pss) as f64 / 1024.0,
            parent as f64 / 1024.0,
            pids.len(),
            workers_pss as f64 / 1024.0
        );
    }
    if let Some(path) = &args.output {
        let t = Instant::now();
        let mut out = NpyOutput::create(path, Dtype::F64, &[n as u64])?;
        out.as_mut_slice::<f64>()?.copy_from_slice(&ys);
        out.commit()?;
        println!("wrote {} ({:.0} ms)", path.display(), t.elapsed().as_secs_f64() * 1e3);
    }
    pool.close();
    pool.join()?;
    Ok(())
}

/// Proportional set size of a process in KiB, from `/proc/<pid>/smaps_rollup`.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
