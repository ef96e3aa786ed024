//! `shmpool map`: the main job.
#![deny(unsafe_code)]

use std::time::Instant;

use shmpool::workloads::{self, W1_LEN};
use shmpool::{Pool, SharedVec};

use super::Failure;

/// Arguments of `shmpool map`.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// Worker processes (default: number of cores).
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// Elements of the built-in dataset.
    #[arg(long, default_value_t = W1_LEN)]
    len: usize,
    /// Elements per chunk (default: adaptive).
    #[arg(long)]
    chunk_len: Option<usize>,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

pub fn run(args: MapArgs) -> Result<(), Failure> {
    let workers = args.jobs.unwrap_or_else(cores);
    if workers == 0 {
        return Err(Failure::usage("-j must be at least 1"));
    }
    if args.repeat == 0 {
        return Err(Failure::usage("--repeat must be at least 1"));
    }
    let n = args.len;
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

    let t = Instant::now();
    let mut builder = Pool::builder().workers(workers);
    if let Some(c) = args.chunk_len {
        builder = builder.chunk_len(c);
    }
    let pool = builder.build()?;
    println!("pool of {workers} worker processes ready in {:.3} ms", t.elapsed().as_secs_f64() * 1e3);

    let mut times = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        ys.fill(0.0);
        let t = Instant::now();
        pool.map_into(&xs, &mut ys, workloads::w1_chunk)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let mismatches = xs.iter().zip(ys.iter()).filter(|(x, y)| workloads::w1(**x).to_bits() != y.to_bits()).count();
    let verify_ms = t.elapsed().as_secs_f64() * 1e3;
    if mismatches > 0 {
        return Err(Failure::runtime(format!("{mismatches} of {n} elements differ from the sequential result")));
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let eps = n as f64 / median;
    let gbs = (n * 16) as f64 / median / 1e9;
    println!(
        "W1 sqrt(x) * 1.5 + 0.25: median {:.1} ms of {} runs (min {:.1}, max {:.1})",
        median * 1e3,
        times.len(),
        times[0] * 1e3,
        times[times.len() - 1] * 1e3
    );
    println!("throughput: {:.1} Melem/s, {:.2} GB/s (read + write), {workers} workers", eps / 1e6, gbs);
    println!("verified: all {n} elements bit-identical to the sequential result ({verify_ms:.0} ms)");
    let pids = pool.pids();
    let parent = pss_kib(std::process::id());
    let workers: u64 = pids.iter().filter_map(|&p| pss_kib(p)).sum();
    if let Some(parent) = parent {
        println!(
            "memory: PSS of the process tree {:.0} MiB (parent {:.0} MiB, {} workers {:.0} MiB; shared pages counted once)",
            (parent + workers) as f64 / 1024.0,
            parent as f64 / 1024.0,
            pids.len(),
            workers as f64 / 1024.0
        );
    }
    pool.close();
    pool.join()?;
    Ok(())
}

/// Proportional set size of a process in KiB, from `/proc/<pid>/smaps_rollup`.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
