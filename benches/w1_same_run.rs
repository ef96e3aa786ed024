//! The same-run W1 check: rayon with 2 threads over a plain `Vec` with `par_chunks_mut(65536)`,
//! as a plain user would write it, against `Pool::map_into` over `SharedVec`s, 50M f64,
//! interleaved, medians of 12 maps after one warm-up, with the workers' minor page faults per
//! map (`/proc/<pid>/stat`). `cargo bench --bench w1_same_run [-- ROUNDS]`.
use rayon::prelude::*;
use std::time::Instant;
fn w1(x: f64) -> f64 {
    x.sqrt() * 1.5 + 0.25
}
fn w1_chunk(xs: &[f64], ys: &mut [f64]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = w1(x);
    }
}
fn minflt(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|r| r.1.to_string()).unwrap_or_default();
    rest.split_whitespace().nth(7).and_then(|v| v.parse().ok()).unwrap_or(0)
}
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
fn main() {
    let n = 50_000_000;
    // `cargo bench` passes `--bench`; a number among the arguments sets the rounds.
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(12);
    shmpool::init();
    let pool = shmpool::Pool::new(2).unwrap();
    let rayon2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let xs_v: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 + 0.5).collect();
    let mut ys_v = vec![0.0; n];
    let xs = shmpool::SharedVec::from_slice(&xs_v).unwrap();
    let mut ys = pool.alloc::<f64>(n).unwrap();
    let (mut tr, mut ts, mut faults) = (vec![], vec![], vec![]);
    for r in 0..=rounds {
        let t = Instant::now();
        rayon2.install(|| ys_v.par_chunks_mut(65536).zip(xs_v.par_chunks(65536)).for_each(|(y, x)| w1_chunk(x, y)));
        let a = t.elapsed().as_secs_f64() * 1e3;
        let f0: u64 = pool.pids().iter().map(|&p| minflt(p)).sum();
        let t = Instant::now();
        pool.map_into(&xs, &mut ys, w1_chunk).unwrap();
        let b = t.elapsed().as_secs_f64() * 1e3;
        let f1: u64 = pool.pids().iter().map(|&p| minflt(p)).sum();
        if r > 0 {
            tr.push(a);
            ts.push(b);
            faults.push((f1 - f0) as f64);
        }
        println!("round {r}: rayon {a:.1} ms, shmpool {b:.1} ms, worker minor faults {}", f1 - f0);
    }
    let (mr, ms) = (median(tr), median(ts));
    println!(
        "median rayon {mr:.1} ms, shmpool {ms:.1} ms, shmpool/rayon speed {:.3}x, median faults/map {}",
        mr / ms,
        median(faults)
    );
}
