//! Start methods: every kernel form under every method, the core map and fault-tolerance
//! checks parameterized over the method, a binary mismatch, and pools built and dropped while
//! eight threads hold locks.
//!
//! How this libtest binary acts as a spawned worker: `setup()` routes children started by
//! `exec` to the `#[ignore]`d test `spawned_child_entry`, which calls `shmpool::init()` and so
//! becomes the worker (or fork server, or `spawn_fn` child) its parent asked for and never
//! returns. libtest's own `main` runs first in the child, but it only parses arguments and
//! starts that one test: it has no side effects a second copy could repeat.

mod common;

use std::time::Duration;

use common::workloads::{pattern, w1, w1_chunk};
use shmpool::kernel::expr::Program;
use shmpool::{KernelSpec, Pool, StartMethod};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

/// The entry point of children this binary spawns (see the module docs).
#[test]
#[ignore = "entry point of spawned children, run by the other tests"]
fn spawned_child_entry() {
    shmpool::init();
}

fn setup() {
    shmpool::testing::route_spawned_children([
        "spawned_child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ]);
}

/// No child but the fork server (which lives as long as this process) and no segment is left.
fn assert_nothing_leaked() {
    let server: Vec<u32> = shmpool::testing::fork_server_pid().into_iter().collect();
    common::assert_nothing_leaked_but(&server);
}

fn pool(method: StartMethod, workers: usize) -> Pool {
    setup();
    Pool::builder().workers(workers).start_method(method).build().unwrap()
}

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Affine {
    a: f64,
    b: f64,
}

fn triple(x: f64) -> f64 {
    x * 3.0
}

fn negate_chunk(xs: &[i64], ys: &mut [i64]) {
    for (y, x) in ys.iter_mut().zip(xs) {
        *y = -x;
    }
}

#[test]
fn every_kernel_form_works_under_every_method() {
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            let pool = pool(method, 2);
            assert_eq!(pool.start_method(), method);
            let xs: Vec<f64> = (0..5_000).map(pattern).collect();
            // A fn item.
            let ys = pool.map(&xs, w1).unwrap();
            assert!(xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()), "{method:?} fn item");
            // A non-capturing closure.
            assert_eq!(pool.map(&[1i32, 2, 3], |x: i32| x * 10).unwrap(), [10, 20, 30], "{method:?} closure");
            // A chunk kernel into a shared array.
            let shared = shmpool::SharedVec::from_slice(&xs).unwrap();
            let mut out = pool.alloc::<f64>(xs.len()).unwrap();
            pool.map_into(&shared, &mut out, w1_chunk).unwrap();
            assert!(xs.iter().zip(out.iter()).all(|(x, y)| w1(*x).to_bits() == y.to_bits()), "{method:?} chunk");
            // A parameter block.
            let p = Affine { a: 2.0, b: 0.5 };
            let got = pool.map_with(&[1.0f64, 2.0], p, |x: f64, p: &Affine| x * p.a + p.b).unwrap();
            assert_eq!(got, [2.5, 4.5], "{method:?} params");
            // Function pointers chosen at run time.
            let f: fn(f64) -> f64 = if xs.len() > 1 { triple } else { w1 };
            let spec = KernelSpec::elem_fn(f);
            let out3: Vec<f64> = pool.map_spec(&[1.0f64, 2.0, 3.0], &spec).unwrap();
            assert_eq!(out3, [3.0, 6.0, 9.0], "{method:?} elem_fn");
            let g: fn(&[i64], &mut [i64]) = negate_chunk;
            let neg: Vec<i64> = pool.map_spec(&[1i64, -2, 3, 0], &KernelSpec::chunk_fn(g)).unwrap();
            assert_eq!(neg, [-1, 2, -3, 0], "{method:?} chunk_fn");
            // An expression program.
            let prog = Program::compile("sqrt(x) * 1.5 + 0.25").unwrap();
            let e: Vec<f64> = pool.map_spec(&xs, &KernelSpec::expr::<f64, f64>(&prog)).unwrap();
            assert!(xs.iter().zip(&e).all(|(x, y)| (w1(*x) - y).abs() < 1e-12), "{method:?} expr");
        }
    });
    assert_nothing_leaked();
}
