//! `shmpool bench`: the standard workloads with shmpool, a single thread and in-process threads
//! (rayon), measured in one run with runs interleaved; medians and same-run ratios.
#![deny(unsafe_code)]

use std::time::Instant;

use crate::workloads::{self, W1_LEN, W2_LEN, W3_LEN};
use rayon::prelude::*;
use shmpool::kernel::expr::Program;
use shmpool::{KernelSpec, Pool, Process, SharedVec};

use super::Failure;

/// Arguments of `shmpool bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Workers and threads (default: number of cores).
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// Timed runs per case (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Small sizes (for a smoke test): W1 2M, W2 50K, W3 2,000 batches.
    #[arg(long)]
    quick: bool,
}

struct Row {
    workload: &'static str,
    variant: String,
    median_ms: f64,
    melem_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

type Case<'a> = (String, Box<dyn FnMut() -> Result<(), Failure> + 'a>);

/// Times each case `runs` times, round-robin, and returns the medians in ms.
fn interleaved(runs: usize, cases: &mut [Case<'_>]) -> Result<Vec<f64>, Failure> {
    let mut times = vec![Vec::new(); cases.len()];
    for (_, f) in cases.iter_mut() {
        f()?; // warm-up: page faults, mappings
    }
    for _ in 0..runs {
        for (k, (_, f)) in cases.iter_mut().enumerate() {
            let t = Instant::now();
            f()?;
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times.into_iter().map(median).collect())
}

/// The compute-heavy expression case, `sin(x) * cos(x) + exp(-x * x)`.
pub const HEAVY_EXPR: &str = "sin(x) * cos(x) + exp(-x * x)";

/// [`HEAVY_EXPR`] compiled, for its same-run ratio with the expression kernel.
fn heavy_chunk(xs: &[f64], ys: &mut [f64]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = x.sin() * x.cos() + (-x * x).exp();
    }
}

/// A throughput workload: W1, W2, or the compute-heavy expression.
#[derive(Clone, Copy, PartialEq)]
enum Workload {
    W1,
    W2,
    Heavy,
}

#[allow(clippy::too_many_arguments)] // one call site per workload; a struct would only rename them
fn throughput(
    rows: &mut Vec<Row>,
    pool: &Pool,
    rayon: &rayon::ThreadPool,
    j: usize,
    runs: usize,
    name: &'static str,
    n: usize,
    w: Workload,
) -> Result<(), Failure> {
    let mut xs = SharedVec::<f64>::zeroed(n)?;
    workloads::fill_pattern(&mut xs, 0);
    let ys = std::cell::RefCell::new(SharedVec::<f64>::zeroed(n)?);
    let kernel: fn(&[f64], &mut [f64]) = match w {
        Workload::W1 => workloads::w1_chunk,
        Workload::W2 => workloads::w2_chunk,
        Workload::Heavy => heavy_chunk,
    };
    let expr = Program::compile(if w == Workload::Heavy { HEAVY_EXPR } else { "sqrt(x) * 1.5 + 0.25" })?;
    let expr_spec = KernelSpec::expr::<f64, f64>(&expr)?;
    let mut cases: Vec<Case<'_>> = vec![
        (
            "single thread".into(),
            Box::new(|| {
                kernel(&xs, &mut ys.borrow_mut());
                Ok(())
            }),
        ),
        (
            format!("rayon, {j} threads"),
            Box::new(|| {
                let mut guard = ys.borrow_mut();
                let y: &mut [f64] = &mut guard;
                let x: &[f64] = &xs;
                let c = (n / (j * 32)).clamp(1024, 1 << 16);
                rayon.install(|| y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(y, x)| kernel(x, y)));
                Ok(())
            }),
        ),
    ];
    match w {
        Workload::W2 => cases.push((
            format!("shmpool, {j} workers"),
            Box::new(|| Ok(pool.map_into(&xs, &mut *ys.borrow_mut(), workloads::w2_chunk)?)),
        )),
        Workload::W1 => cases.push((
            format!("shmpool, {j} workers"),
            Box::new(|| Ok(pool.map_into(&xs, &mut *ys.borrow_mut(), workloads::w1_chunk)?)),
        )),
        Workload::Heavy => cases.push((
            format!("shmpool, {j} workers"),
            Box::new(|| Ok(pool.map_into(&xs, &mut *ys.borrow_mut(), heavy_chunk)?)),
        )),
    }
    if w != Workload::W2 {
        cases.push((
            format!("shmpool --expr, {j} workers"),
            Box::new(|| Ok(pool.map_into(&xs, &mut *ys.borrow_mut(), &expr_spec)?)),
        ));
    }
    let meds = interleaved(runs, &mut cases)?;
    for ((label, _), m) in cases.iter().zip(meds) {
        rows.push(Row { workload: name, variant: label.clone(), median_ms: m, melem_s: n as f64 / m / 1e3 });
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let j = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    if j == 0 || args.runs == 0 {
        return Err(Failure::usage("-j and --runs must be at least 1"));
    }
    let (n1, n2, n3) = if args.quick { (2_000_000, 50_000, 2_000) } else { (W1_LEN, W2_LEN, 50_000) };
    let pool = Pool::new(j)?;
    let rayon = rayon::ThreadPoolBuilder::new().num_threads(j).build().map_err(|e| Failure::runtime(e.to_string()))?;
    let mut rows = Vec::new();

    // W3: latency of one 1024-element batch, percentiles over many batches.
    let batch: Vec<f64> = (0..W3_LEN).map(workloads::pattern).collect();
    let mut lat: Vec<(String, [f64; 3])> = Vec::new();
    let mut measure = |label: String, f: &mut dyn FnMut() -> Result<(), Failure>| -> Result<(), Failure> {
        for _ in 0..n3 / 10 {
            f()?;
        }
        let mut t = Vec::with_capacity(n3);
        for _ in 0..n3 {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64() * 1e6);
        }
        lat.push((label, [pct(&mut t, 0.5), pct(&mut t, 0.99), pct(&mut t, 0.999)]));
        Ok(())
    };
    measure("single thread".into(), &mut || {
        std::hint::black_box(batch.iter().map(|&x| workloads::w1(x)).collect::<Vec<f64>>());
        Ok(())
    })?;
    measure(format!("rayon, {j} threads"), &mut || {
        std::hint::black_box(rayon.install(|| batch.par_iter().map(|&x| workloads::w1(x)).collect::<Vec<f64>>()));
        Ok(())
    })?;
    measure(format!("shmpool, {j} workers"), &mut || {
        std::hint::black_box(pool.map(&batch, workloads::w1)?);
        Ok(())
    })?;

    throughput(&mut rows, &pool, &rayon, j, args.runs, "W1 sqrt, memory-bound", n1, Workload::W1)?;
    throughput(&mut rows, &pool, &rayon, j, args.runs, "W2 64x sin, compute-bound", n2, Workload::W2)?;
    throughput(&mut rows, &pool, &rayon, j, args.runs, "sin*cos+exp, expression", n2, Workload::Heavy)?;

    // Start-up.
    let mut start: Vec<(String, f64)> = Vec::new();
    for m in [shmpool::StartMethod::Fork, shmpool::StartMethod::ForkServer, shmpool::StartMethod::Spawn] {
        drop(Pool::builder().workers(j).start_method(m).build()?); // the fork server starts once
        let mut t = Vec::new();
        for _ in 0..15 {
            let s = Instant::now();
            let p = Pool::builder().workers(j).start_method(m).build()?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
            drop(p);
        }
        start.push((format!("shmpool pool of {j} ready ({m:?})"), median(t)));
    }
    let mut t = Vec::new();
    for _ in 0..15 {
        let s = Instant::now();
        Process::spawn(|| {})?.join()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    start.push(("bare fork + exit + join".into(), median(t)));
    let mut t = Vec::new();
    for _ in 0..15 {
        let s = Instant::now();
        drop(rayon::ThreadPoolBuilder::new().num_threads(j).build().map_err(|e| Failure::runtime(e.to_string()))?);
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    start.push((format!("rayon pool of {j} threads"), median(t)));

    if args.json {
        print_json(&rows, &lat, &start, j, args.runs);
    } else {
        print_table(&rows, &lat, &start, j, args.runs);
    }
    Ok(())
}

fn baseline<'a>(rows: &'a [Row], workload: &str, prefix: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.workload == workload && r.variant.starts_with(prefix))
}

fn print_table(rows: &[Row], lat: &[(String, [f64; 3])], start: &[(String, f64)], j: usize, runs: usize) {
    println!("shmpool bench: {j} workers/threads, median of {runs} interleaved runs each");
    println!(
        "{:<28} {:<28} {:>10} {:>12} {:>9} {:>9}",
        "workload", "variant", "median ms", "Melem/s", "vs 1 thr", "vs rayon"
    );
    for r in rows {
        let single = baseline(rows, r.workload, "single").map_or(f64::NAN, |b| b.median_ms / r.median_ms);
        let rayon = baseline(rows, r.workload, "rayon").map_or(f64::NAN, |b| b.median_ms / r.median_ms);
        println!(
            "{:<28} {:<28} {:>10.2} {:>12.1} {:>8.2}x {:>8.2}x",
            r.workload, r.variant, r.median_ms, r.melem_s, single, rayon
        );
    }
    for r in rows.iter().filter(|r| r.variant.starts_with("shmpool --expr")) {
        if let Some(c) = rows.iter().find(|c| c.workload == r.workload && c.variant.starts_with("shmpool,")) {
            println!("{:<28} --expr vs compiled kernel: {:.2}x (same run)", r.workload, c.median_ms / r.median_ms);
        }
    }
    println!();
    println!("{:<28} {:<28} {:>10} {:>10} {:>10}", "W3 latency, 1024 f64", "variant", "p50 µs", "p99 µs", "p99.9 µs");
    for (label, p) in lat {
        println!("{:<28} {:<28} {:>10.2} {:>10.2} {:>10.2}", "", label, p[0], p[1], p[2]);
    }
    println!();
    println!("{:<57} {:>10}", "start-up", "median ms");
    for (label, m) in start {
        println!("{label:<57} {m:>10.3}");
    }
}

fn print_json(rows: &[Row], lat: &[(String, [f64; 3])], start: &[(String, f64)], j: usize, runs: usize) {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\\\""));
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"workload\":{},\"variant\":{},\"median_ms\":{:.4},\"melem_per_s\":{:.2}}}",
                q(r.workload),
                q(&r.variant),
                r.median_ms,
                r.melem_s
            )
        })
        .collect();
    let lat: Vec<String> = lat
        .iter()
        .map(|(l, p)| {
            format!("{{\"variant\":{},\"p50_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3}}}", q(l), p[0], p[1], p[2])
        })
        .collect();
    let start: Vec<String> =
        start.iter().map(|(l, m)| format!("{{\"case\":{},\"median_ms\":{:.4}}}", q(l), m)).collect();
    println!(
        "{{\"workers\":{j},\"runs\":{runs},\"throughput\":[{}],\"latency_w3\":[{}],\"startup\":[{}]}}",
        rows.join(","),
        lat.join(","),
        start.join(",")
    );
}
