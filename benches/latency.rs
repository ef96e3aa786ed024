//! W3: a 1024-element f64 batch through W1's function and back. shmpool's `submit` /
//! `wait_into` with one worker under each wait strategy, beside the same work done in-process,
//! by a thread over a channel and by a second process over a pipe, all in the same run.
//! Criterion reports medians; with `--bench`, a second pass prints p50 / p99 / p99.9 in µs
//! over 20,000 round trips after a warm-up.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
#[path = "../src/workloads.rs"]
mod workloads;
use shmpool::{Pool, Process, StartMethod, WaitStrategy};
use workloads::W3_LEN;

fn batch() -> Vec<f64> {
    (0..W3_LEN).map(workloads::pattern).collect()
}

fn w1_into(xs: &[f64], ys: &mut [f64]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = workloads::w1(x);
    }
}

fn percentiles(name: &str, mut f: impl FnMut()) {
    for _ in 0..2000 {
        f();
    }
    let mut t: Vec<f64> = (0..20_000)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    println!("W3 {name:<26} p50 {:>8.2} µs  p99 {:>8.2} µs  p99.9 {:>8.2} µs", p(0.5), p(0.99), p(0.999));
}

/// A thread that maps each batch it receives and sends it back (buffers travel, none allocated).
struct ChannelWorker {
    to: mpsc::SyncSender<Box<[f64]>>,
    from: mpsc::Receiver<Box<[f64]>>,
    buf: Option<Box<[f64]>>,
}

impl ChannelWorker {
    fn new() -> Self {
        let (to, rx) = mpsc::sync_channel::<Box<[f64]>>(1);
        let (tx, from) = mpsc::sync_channel::<Box<[f64]>>(1);
        std::thread::spawn(move || {
            while let Ok(mut b) = rx.recv() {
                for y in b.iter_mut() {
                    *y = workloads::w1(*y);
                }
                if tx.send(b).is_err() {
                    break;
                }
            }
        });
        ChannelWorker { to, from, buf: Some(vec![0.0; W3_LEN].into_boxed_slice()) }
    }

    fn round_trip(&mut self, xs: &[f64], ys: &mut [f64]) {
        let mut b = self.buf.take().expect("buffer home");
        b.copy_from_slice(xs);
        self.to.send(b).unwrap();
        let b = self.from.recv().unwrap();
        ys.copy_from_slice(&b);
        self.buf = Some(b);
    }
}

/// A second process that maps each batch it reads from a pipe and writes it back.
struct PipeWorker {
    to: OwnedFd,
    from: OwnedFd,
    _child: Process,
}

fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        match nix::unistd::read(fd.as_fd(), &mut buf[done..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => done += n,
        }
    }
    true
}

fn write_all(fd: &OwnedFd, buf: &[u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        match nix::unistd::write(fd, &buf[done..]) {
            Ok(n) => done += n,
            Err(_) => return false,
        }
    }
    true
}

impl PipeWorker {
    fn new() -> Self {
        let (req_r, req_w) = nix::unistd::pipe().unwrap();
        let (resp_r, resp_w) = nix::unistd::pipe().unwrap();
        let child = Process::spawn(move || {
            let mut b = vec![0.0f64; W3_LEN];
            let mut out = vec![0.0f64; W3_LEN];
            while read_exact(&req_r, bytemuck::cast_slice_mut(&mut b)) {
                w1_into(&b, &mut out);
                if !write_all(&resp_w, bytemuck::cast_slice(&out)) {
                    break;
                }
            }
        })
        .unwrap();
        PipeWorker { to: req_w, from: resp_r, _child: child }
    }

    fn round_trip(&mut self, xs: &[f64], ys: &mut [f64]) {
        assert!(write_all(&self.to, bytemuck::cast_slice(xs)));
        assert!(read_exact(&self.from, bytemuck::cast_slice_mut(ys)));
    }
}

/// The start methods, by name, for per-method cases.
const METHODS: [(&str, StartMethod); 3] =
    [("fork", StartMethod::Fork), ("spawn", StartMethod::Spawn), ("forkserver", StartMethod::ForkServer)];

fn main() {
    // Spawned workers are copies of this bench binary.
    shmpool::init();
    let xs = batch();
    let mut ys = vec![0.0; W3_LEN];
    let pools: Vec<(&str, Pool)> =
        [("spin", WaitStrategy::Spin), ("adaptive", WaitStrategy::Adaptive), ("sleep", WaitStrategy::Sleep)]
            .into_iter()
            .map(|(n, w)| (n, Pool::builder().workers(1).wait_strategy(w).build().unwrap()))
            .collect();
    let mut chan = ChannelWorker::new();
    let mut pipe = PipeWorker::new();
    // Once a pool is up, how its workers were started must not matter.
    let by_method: Vec<(&str, Pool)> =
        METHODS.iter().map(|&(name, m)| (name, Pool::builder().workers(1).start_method(m).build().unwrap())).collect();
    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("W3_latency_1024");
        g.throughput(Throughput::Elements(W3_LEN as u64));
        g.bench_function(BenchmarkId::new("in_process", 1), |b| b.iter(|| w1_into(&xs, &mut ys)));
        g.bench_function(BenchmarkId::new("thread_channel", 1), |b| b.iter(|| chan.round_trip(&xs, &mut ys)));
        g.bench_function(BenchmarkId::new("process_pipe", 1), |b| b.iter(|| pipe.round_trip(&xs, &mut ys)));
        for (name, pool) in pools.iter().chain(&by_method) {
            g.bench_function(BenchmarkId::new(format!("shmpool_submit_{name}"), 1), |b| {
                b.iter(|| pool.submit(&xs, workloads::w1).unwrap().wait_into(&mut ys).unwrap())
            });
        }
        g.finish();
    }
    if std::env::args().any(|a| a == "--bench") {
        percentiles("in_process", || w1_into(&xs, &mut ys));
        percentiles("thread_channel", || chan.round_trip(&xs, &mut ys));
        percentiles("process_pipe", || pipe.round_trip(&xs, &mut ys));
        for (name, pool) in pools.iter().chain(&by_method) {
            percentiles(&format!("shmpool_submit_{name}"), || {
                pool.submit(&xs, workloads::w1).unwrap().wait_into(&mut ys).unwrap()
            });
        }
    }
    c.final_summary();
}
