//! `shmpool map`: the main job, over the built-in dataset or a `.npy` file.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::workloads::{self, W1_LEN};
use shmpool::cli::same_file;
use shmpool::kernel::expr::parse::{extract_reductions, substitute_sizes};
use shmpool::kernel::expr::Program;
use shmpool::{Dtype, KernelSpec, NpyArray, NpyOutput, Pool, SharedVec};

use super::input::open_input;
use super::reduced::{reduce_inner, Outer, RowDriver};
use super::Failure;

/// The W1 expression, the default kernel.
pub const W1_EXPR: &str = "sqrt(x) * 1.5 + 0.25";

/// Arguments of `shmpool map`: those of a map over files (shared with `shmpool-mpi map`) and
/// the built-in dataset's.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    #[command(flatten)]
    files: shmpool::cli::MapArgs,
    /// Built-in dataset only: number of elements.
    #[arg(long, default_value_t = W1_LEN)]
    len: usize,
    /// Built-in dataset only: timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

impl std::ops::Deref for MapArgs {
    type Target = shmpool::cli::MapArgs;
    fn deref(&self) -> &shmpool::cli::MapArgs {
        &self.files
    }
}

pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// How long a signalled map may take to return after its pool was terminated.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Elements per worker below which another worker would only add start-up time.
pub const MIN_ELEMENTS_PER_WORKER: usize = 65_536;

/// The workers a map of `n` elements can use: `-j` (or the cores), at most one per
/// [`MIN_ELEMENTS_PER_WORKER`] elements, at least one.
fn worker_count(jobs: Option<usize>, n: usize) -> usize {
    let want = jobs.unwrap_or_else(cores); // -j 0 was refused in `run`
    want.min(n.div_ceil(MIN_ELEMENTS_PER_WORKER)).max(1)
}

fn build_pool(args: &MapArgs, workers: usize) -> Result<(Pool, f64), Failure> {
    let t = Instant::now();
    let mut builder = Pool::builder().workers(workers);
    if let Some(c) = args.chunk_len {
        builder = builder.chunk_len(c);
    }
    let pool = builder.build()?;
    Ok((pool, t.elapsed().as_secs_f64() * 1e3))
}

pub fn run(args: MapArgs) -> Result<(), Failure> {
    if args.repeat == 0 {
        return Err(Failure::usage("--repeat must be at least 1"));
    }
    if args.jobs == Some(0) {
        return Err(Failure::usage("-j must be at least 1"));
    }
    let named = parse_inputs(&args.inputs)?;
    // `x - mean(x)` or `size(x)`: the reductions and sizes first, then the map (the
    // several-input path).
    let reductions = args.expr.as_deref().is_some_and(|e| {
        matches!(extract_reductions(e), Ok((_, r)) if !r.is_empty()) || substitute_sizes(e, &[]).is_err()
    });
    match named.as_slice() {
        [] => run_builtin(&args),
        [(None, path)] if !reductions => run_file(&args, path),
        _ => run_inputs(&args, &named),
    }
}

/// `expr` with every `size(NAME)` replaced by the input's number of elements.
pub(super) fn with_sizes(expr: &str, names: &[String], arrays: &[NpyArray]) -> Result<String, Failure> {
    let sizes: Vec<(&str, u64)> = names.iter().zip(arrays).map(|(n, a)| (n.as_str(), a.len() as u64)).collect();
    Ok(substitute_sizes(expr, &sizes)?)
}

/// The INPUT arguments (see [`shmpool::cli::parse_inputs`], shared with `shmpool-mpi`).
pub(super) fn parse_inputs(raw: &[String]) -> Result<Vec<(Option<String>, PathBuf)>, Failure> {
    shmpool::cli::parse_inputs(raw).map_err(Failure::from)
}

/// `shmpool map a=a.npy b=b.npy -o out.npy --expr 'a * b + c'`: several inputs, broadcast.
fn run_inputs(args: &MapArgs, named: &[(Option<String>, PathBuf)]) -> Result<(), Failure> {
    let output = args.output.as_deref().ok_or_else(|| Failure::usage("map INPUT... needs -o OUTPUT.npy"))?;
    let expr =
        args.expr.as_deref().ok_or_else(|| Failure::usage("map INPUT... needs --expr EXPRESSION (see --help)"))?;
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone().unwrap_or_else(|| "x".to_string())).collect();
    // The output may replace one input, named by --in-place (checked below: its shape and dtype
    // must be the output's). Workers read the input's own inode; the output is a new file linked
    // over it only when complete.
    // A file given under several names is replaced when --in-place names any of them.
    let same: Vec<usize> = (0..named.len()).filter(|&k| same_file(&named[k].1, output)).collect();
    let replaced = same.iter().copied().find(|&k| args.in_place.as_deref() == Some(names[k].as_str()));
    if let (Some(&k), None) = (same.first(), replaced) {
        return Err(Failure::usage(format!(
            "output {} is the input {}: pass --in-place={} to replace it",
            output.display(),
            names[k],
            names[k]
        )));
    }
    let out_dtype = args.dtype.as_deref().map(str::parse::<Dtype>).transpose()?;
    // Names before files: a name used but not given, or given but not used, opens nothing.
    let used = Program::variables(expr)?;
    if let Some(u) = used.iter().find(|u| !names.contains(u)) {
        return Err(Failure::usage(format!("the expression uses '{u}', which is not an input ({})", names.join(", "))));
    }
    if let Some(n) = names.iter().find(|n| !used.contains(n)) {
        return Err(Failure::usage(format!("input '{n}' is not used by the expression")));
    }
    shmpool::cli::check_not_reserved(names.iter().map(String::as_str))?;
    let arrays = named.iter().map(|(_, p)| open_input(p)).collect::<Result<Vec<_>, _>>()?;
    let paths: Vec<&Path> = named.iter().map(|(_, p)| p.as_path()).collect();
    let user = expr;
    let expr = &with_sizes(expr, &names, &arrays)?;
    let (rewritten, reductions) = extract_reductions(expr)?;
    let reduced = if reductions.is_empty() {
        Vec::new()
    } else {
        let pool = Pool::builder().workers(worker_count(args.jobs, usize::MAX)).build()?;
        let reduced = reduce_inner(&pool, &reductions, &names, &paths, &arrays)?;
        pool.close();
        pool.join()?;
        reduced
    };
    let outer = Outer::new((user, expr, &rewritten), &names, &arrays, reduced)?;
    let files = outer.files(&paths, &arrays);
    let shapes: Vec<&[u64]> = files.iter().map(|(_, a)| a.shape()).collect();
    let out_shape = shmpool::kernel::expr::broadcast_shapes(&shapes)?;
    let main = files.iter().position(|(_, a)| a.shape() == out_shape.as_slice());
    let out_dtype = out_dtype.unwrap_or(outer.program.output_dtype());
    if let Some(k) = replaced {
        if arrays[k].shape() != out_shape.as_slice() || arrays[k].dtype() != out_dtype {
            return Err(Failure::usage(format!(
                "--in-place={}: the output ({out_dtype}, shape {out_shape:?}) cannot replace the input ({}, shape {:?})",
                names[k],
                arrays[k].dtype(),
                arrays[k].shape()
            )));
        }
    }
    let Some(main) = main else {
        // No input has the output's shape ((n, 1) with (1, m)): the map runs over row numbers.
        let rows = RowDriver::new(&out_shape)?;
        // SAFETY: as below.
        #[allow(unsafe_code)]
        let spec = unsafe { KernelSpec::expr_files_rows(&outer.program, &files, &outer.values, rows.row, out_dtype) }?;
        return run_map(args, (&rows.ids, &rows.path, &out_shape), output, out_dtype, &spec);
    };
    // SAFETY: `arrays` and `outer` outlive the map below (they are dropped when this function
    // returns), and they were opened under the contract of `shmpool map` (see `open_input`).
    #[allow(unsafe_code)]
    let spec = unsafe { KernelSpec::expr_files(&outer.program, &files, &outer.values, main, out_dtype) }?;
    run_map(args, (files[main].1, files[main].0, &out_shape), output, out_dtype, &spec)
}

/// Whether `sig` is ignored in this process (inherited from whoever started it).
#[allow(unsafe_code)]
fn ignored(sig: i32) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`, valid writable storage.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction succeeded, so it filled `old` (zeroed storage is a valid sigaction too).
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

pub use shmpool::cli::functions_help;

fn run_file(args: &MapArgs, input: &Path) -> Result<(), Failure> {
    let output = args.output.as_deref().ok_or_else(|| Failure::usage("map INPUT needs -o OUTPUT.npy"))?;
    let expr = args.expr.as_deref().ok_or_else(|| {
        Failure::usage("map INPUT needs --expr EXPRESSION (e.g. --expr 'sqrt(x) * 1.5 + 0.25'; see --help)")
    })?;
    if same_file(input, output) && args.in_place.is_none() {
        return Err(Failure::usage(format!("output {} is the input; pass --in-place to replace it", output.display())));
    }
    let out_dtype = args.dtype.as_deref().map(str::parse::<Dtype>).transpose()?;
    Program::check_syntax(expr)?; // before opening anything
    let src = open_input(input)?;
    let program = Program::compile_for(expr, src.dtype())?;
    let out_dtype = out_dtype.unwrap_or(program.output_dtype());
    let spec = KernelSpec::expr_for(&program, src.dtype(), out_dtype)?;
    run_map(args, (&src, input, src.shape()), output, out_dtype, &spec)
}

/// One map from `src` (at `input`) into a new `output`, stopped by SIGINT, SIGTERM, SIGHUP.
fn run_map(
    args: &MapArgs,
    (src, input, out_shape): (&NpyArray, &Path, &[u64]),
    output: &Path,
    out_dtype: Dtype,
    spec: &KernelSpec,
) -> Result<(), Failure> {
    // Output elements: a broadcast map's units are rows of several.
    let n = out_shape.iter().product::<u64>() as usize;
    let workers = worker_count(args.jobs, n);

    // SIGINT, SIGTERM and SIGHUP stop the map: a thread waits for them and terminates the pool,
    // the map returns, the unpublished output is dropped (nothing of it is on disk) and the
    // process exits with 128 + the signal.
    let caught = Arc::new(AtomicI32::new(0));
    // A signal the program was started with ignored (`nohup`, a background job of a script)
    // stays ignored, as for any Unix tool.
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| !ignored(s)).collect();
    let mut signals =
        Signals::new(wanted).map_err(|e| Failure::runtime(format!("cannot install signal handlers: {e}")))?;
    let handle = signals.handle();
    let pool: Arc<OnceLock<Pool>> = Arc::new(OnceLock::new());
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (caught, pool, finished) = (caught.clone(), pool.clone(), finished.clone());
        std::thread::Builder::new()
            .name("shmpool-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    caught.store(sig, Ordering::SeqCst);
                    if let Some(p) = pool.get() {
                        p.terminate();
                    }
                    // Safety net: the map returns once its workers are dead; should it not
                    // within the grace period, leave anyway. The output has no name yet
                    // (O_TMPFILE), so exiting leaves nothing on disk, and every segment name
                    // was unlinked when it was created.
                    let deadline = Instant::now() + CANCEL_GRACE;
                    while !finished.load(Ordering::SeqCst) {
                        if Instant::now() > deadline {
                            eprintln!("shmpool: stopped by signal {sig}");
                            std::process::exit(128 + sig);
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                signals
            })
            .map_err(|e| Failure::runtime(format!("cannot start the signal thread: {e}")))?
    };
    let result = map_file(args, (src, input, out_shape), output, out_dtype, spec, workers, &pool, &caught);
    finished.store(true, Ordering::SeqCst);
    handle.close();
    // The handlers stay installed until the process exits, and so does their reader: a signal
    // handler writes to a self-pipe, and one that lands after the reader is gone (while the
    // pool is dropped, say) raised SIGPIPE, which kills the process with 141 after a complete
    // map. Kept, a late SIGINT/SIGTERM/SIGHUP is swallowed and the exit code says what the map
    // did (0, 1, 2 or 128 + a signal caught while it ran). The CLI maps once per process.
    if let Ok(signals) = watcher.join() {
        std::mem::forget(signals);
    }
    let sig = caught.load(Ordering::SeqCst);
    if sig != 0 && result.is_err() {
        return Err(Failure::signalled(sig));
    }
    result
}

#[allow(clippy::too_many_arguments)] // the pieces of one map, prepared by run_file
fn map_file(
    args: &MapArgs,
    (src, input, out_shape): (&NpyArray, &Path, &[u64]),
    output: &Path,
    out_dtype: Dtype,
    spec: &KernelSpec,
    workers: usize,
    pool: &OnceLock<Pool>,
    caught: &AtomicI32,
) -> Result<(), Failure> {
    let interrupted = || match caught.load(Ordering::SeqCst) {
        0 => Ok(()),
        sig => Err(Failure::signalled(sig)),
    };
    let mut dst = NpyOutput::create(output, out_dtype, out_shape)?;
    interrupted()?;
    let (p, _) = build_pool(args, workers)?;
    let pool = pool.get_or_init(|| p);
    interrupted()?;
    let n = src.len();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = (!args.quiet && (args.progress || terminal)).then(|| Progress::new(n, terminal));
    let t = Instant::now();
    let mut tick = |done: usize| {
        if let Some(p) = progress.as_mut() {
            p.update(done);
        }
    };
    let size_before = std::fs::metadata(input).map(|m| m.len()).ok();
    if let Err(e) = pool.map_into_progress(src, &mut dst, spec, &mut tick) {
        // A worker that cannot read its chunk of a file that shrank under it dies (SIGBUS) or
        // exits; say what happened to the input rather than only that workers died.
        let size_now = std::fs::metadata(input).map(|m| m.len()).ok();
        if size_now != size_before {
            let now = size_now.map_or("gone".to_string(), |n| format!("{n} bytes"));
            return Err(Failure::runtime(format!(
                "the input {} changed during the map (it is now {now}, it was {} bytes): {}",
                input.display(),
                size_before.unwrap_or(0),
                super::chain(&e)
            )));
        }
        return Err(e.into());
    }
    let secs = t.elapsed().as_secs_f64();
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    interrupted()?;
    dst.commit()?;
    let shape: Vec<String> = out_shape.iter().map(|d| d.to_string()).collect();
    // A broadcast map is driven by row numbers: say so rather than their dtype.
    let from = if src.shape() == out_shape { src.dtype().to_string() } else { "broadcast".to_string() };
    let n: u64 = out_shape.iter().product();
    println!(
        "mapped {n} elements ({} {} -> {}) in {:.1} ms: {:.1} Melem/s with {workers} workers; wrote {}",
        shape.join("x"),
        from,
        out_dtype,
        secs * 1e3,
        n as f64 / secs.max(1e-9) / 1e6,
        output.display()
    );
    Ok(())
}

/// Progress on stderr: indicatif's bar on a terminal; elsewhere plain lines with percent,
/// elements/s and ETA at most once per [`Progress::LINE_INTERVAL`], and a last line at 100%.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    n: usize,
    start: Instant,
    last_line: Option<Instant>,
    done: usize,
}

impl Progress {
    const LINE_INTERVAL: Duration = Duration::from_secs(1);

    fn new(n: usize, terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let b = indicatif::ProgressBar::new(n as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {percent:>3}% {human_pos}/{human_len} {per_sec} ETA {eta}",
                )
                .expect("valid template"),
            );
            b
        });
        Progress { bar, n, start: Instant::now(), last_line: None, done: 0 }
    }

    fn update(&mut self, done: usize) {
        self.done = done;
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            return;
        }
        let now = Instant::now();
        if self.last_line.is_none_or(|t| now - t >= Self::LINE_INTERVAL) {
            self.last_line = Some(now);
            self.line();
        }
    }

    fn line(&self) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = self.done as f64 / secs;
        let pct = if self.n == 0 { 100.0 } else { self.done as f64 * 100.0 / self.n as f64 };
        let eta = if rate > 0.0 { (self.n - self.done.min(self.n)) as f64 / rate } else { f64::NAN };
        eprintln!("progress: {pct:5.1}% {}/{} elements, {:.1} Melem/s, ETA {eta:.0} s", self.done, self.n, rate / 1e6);
    }

    fn finish(&mut self) {
        match &self.bar {
            Some(b) => b.finish(),
            None => {
                self.done = self.n;
                self.line();
            }
        }
    }
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
    let workers = worker_count(args.jobs, args.len);
    let (pool, ready_ms) = build_pool(args, workers)?;
    println!("pool of {workers} worker processes ready in {ready_ms:.3} ms");
    let spec = program.as_ref().map(KernelSpec::expr::<f64, f64>).transpose()?;

    let mut times = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        ys.fill(0.0);
        let t = Instant::now();
        match &spec {
            Some(s) => pool.map_into(&xs, &mut ys, s)?,
            None => pool.map_into(&xs, &mut ys, workloads::w1_chunk)?,
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let verify_ms = verify_builtin(program.as_ref(), &xs, &ys)?;
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
    print_memory(&pool);
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

/// Checks the built-in job's output against the sequential result, a block at a time (the
/// sequential result is never held whole: it would add the size of the output to the peak
/// memory this job reports). Returns the milliseconds it took.
fn verify_builtin(program: Option<&Program>, xs: &[f64], ys: &[f64]) -> Result<f64, Failure> {
    let n = xs.len();
    let t = Instant::now();
    const VERIFY_BLOCK: usize = 1 << 16;
    let mut want = vec![0f64; VERIFY_BLOCK.min(n)];
    let mut mismatches = 0;
    for start in (0..n).step_by(VERIFY_BLOCK) {
        let end = (start + VERIFY_BLOCK).min(n);
        let w = &mut want[..end - start];
        match program {
            Some(p) => p.eval_slice(&xs[start..end], w, start as u64)?,
            None => w.iter_mut().zip(&xs[start..end]).for_each(|(w, &x)| *w = workloads::w1(x)),
        }
        mismatches += w.iter().zip(&ys[start..end]).filter(|(w, y)| w.to_bits() != y.to_bits()).count();
    }
    let verify_ms = t.elapsed().as_secs_f64() * 1e3;
    if mismatches > 0 {
        return Err(Failure::runtime(format!("{mismatches} of {n} elements differ from the sequential result")));
    }
    Ok(verify_ms)
}

/// Prints the proportional set size of the process tree (shared pages counted once).
fn print_memory(pool: &Pool) {
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
}

/// Proportional set size of a process in KiB, from `/proc/<pid>/smaps_rollup`.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
