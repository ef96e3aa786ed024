//! Start methods: every kernel form under every method, the core map and fault-tolerance
//! checks parameterized over the method, a binary mismatch, pools built and dropped while
//! eight threads hold locks, 128 KiB parameter blocks, a forked child using its parent's pool,
//! and (a known gap of `Fork`) a program's buffered output.
//!
//! This libtest binary needs no entry point for its spawned children: a copy of it that shmpool
//! starts with `exec` becomes the worker (or fork server, or `spawn_fn` child) in shmpool's
//! start-up hook, before libtest's `main` runs. Its own child programs are scenarios
//! (tests/common/scenario.rs).

mod common;

scenarios!(hundred_rounds_of_every_start_method, partial_line_program);

use shmpool::KernelExt;
use std::time::Duration;

use common::npy_files::stderr;
use common::start::{assert_nothing_leaked, assert_started_by, pool, METHODS};
use common::workloads::{pattern, w1, w1_chunk};
use shmpool::kernel::expr::Program;
use shmpool::{Error, KernelSpec, Pool, Process, StartMethod};

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
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            let pool = pool(method, 2);
            assert_eq!(pool.start_method(), method);
            assert_started_by(&pool, method);
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
            let got = pool.map(&[1.0f64, 2.0], (|x: f64, p: &Affine| x * p.a + p.b).with(p)).unwrap();
            assert_eq!(got, [2.5, 4.5], "{method:?} params");
            // Function pointers chosen at run time.
            let f: fn(f64) -> f64 = if xs.len() > 1 { triple } else { w1 };
            let spec = KernelSpec::elem_fn(f);
            let out3: Vec<f64> = pool.map(&[1.0f64, 2.0, 3.0], spec.typed::<f64, f64>().unwrap()).unwrap();
            assert_eq!(out3, [3.0, 6.0, 9.0], "{method:?} elem_fn");
            let g: fn(&[i64], &mut [i64]) = negate_chunk;
            let neg: Vec<i64> =
                pool.map(&[1i64, -2, 3, 0], KernelSpec::chunk_fn(g).typed::<i64, i64>().unwrap()).unwrap();
            assert_eq!(neg, [-1, 2, -3, 0], "{method:?} chunk_fn");
            // An expression program.
            let prog = Program::compile("sqrt(x) * 1.5 + 0.25").unwrap();
            let e: Vec<f64> =
                pool.map(&xs, KernelSpec::expr::<f64, f64>(&prog).unwrap().typed::<f64, f64>().unwrap()).unwrap();
            assert!(xs.iter().zip(&e).all(|(x, y)| (w1(*x) - y).abs() < 1e-12), "{method:?} expr");
        }
    });
    assert_nothing_leaked();
}

#[derive(Clone, Copy, PartialEq, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Point {
    x: f32,
    y: f32,
}

#[test]
fn core_maps_give_the_sequential_answer_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            let pool = Pool::builder().workers(2).chunk_len(7).start_method(method);
            let pool = pool.build().unwrap();
            // Empty, one element, lengths not divisible by the chunk.
            assert!(pool.map(&[] as &[f64], w1).unwrap().is_empty(), "{method:?}");
            assert_eq!(pool.map(&[4.0f64], w1).unwrap(), [w1(4.0)], "{method:?}");
            let xs: Vec<i32> = (0..1001).collect();
            let ys = pool.map(&xs, |x: i32| x * 3 - 1).unwrap();
            assert!(xs.iter().zip(&ys).all(|(x, y)| x * 3 - 1 == *y), "{method:?}");
            // User Pod structs.
            let pts: Vec<Point> = (0..100).map(|i| Point { x: i as f32, y: 1.0 }).collect();
            let n = pool.map(&pts, |p: Point| p.x + p.y).unwrap();
            assert_eq!(n[99], 100.0, "{method:?}");
            // Large inputs are staged and keep their order (W1, bit for bit).
            let big: Vec<f64> = (0..300_000).map(pattern).collect();
            let pool_big = Pool::builder().workers(2).start_method(method).build().unwrap();
            let out = pool_big.map(&big, w1).unwrap();
            assert!(big.iter().zip(&out).all(|(x, y)| w1(*x).to_bits() == y.to_bits()), "{method:?}");
            // A kernel panic is reported and the pool stays usable.
            let r = pool.map(&[1i32, 2, 3], |x: i32| if x == 2 { panic!("two under {x}") } else { x });
            assert!(
                matches!(&r, Err(Error::KernelPanicked { message, .. }) if message.contains("two")),
                "{method:?} {r:?}"
            );
            assert_eq!(pool.map(&[5i32], |x: i32| x + 1).unwrap(), [6], "{method:?}");
        }
    });
    assert_nothing_leaked();
}

#[test]
fn spawn_refuses_a_worker_that_runs_another_binary() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        // A byte-for-byte copy of this test binary is another file (inode, mtime): its kernel
        // offsets might mean anything, so the worker must refuse to serve.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy-of-test-binary");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let build = || Pool::builder().workers(2).start_method(StartMethod::Spawn).spawn_exe_for_test(&copy).build();
        let mut r = build();
        // A process forked by another test thread while the copy was open for writing holds
        // that descriptor for a moment: exec then fails with ETXTBSY. Wait it out.
        for _ in 0..100 {
            match &r {
                Err(Error::Os { source, .. }) if source.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(20));
                    r = build();
                }
                _ => break,
            }
        }
        match r {
            Err(e @ Error::BinaryMismatch { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("another binary") && msg.contains("inode"), "{msg}");
            }
            other => panic!("expected BinaryMismatch, got {other:?}"),
        }
    });
    assert_nothing_leaked();
}

fn write_marker(path: [u8; 64]) {
    let end = path.iter().position(|&b| b == 0).unwrap_or(64);
    let path = std::str::from_utf8(&path[..end]).unwrap();
    // A fresh process: printing cannot hang on a lock another thread held.
    println!("spawn_fn child writes {path}");
    std::fs::write(path, format!("{}", std::process::id())).unwrap();
}

fn panics(_: u8) {
    panic!("spawn_fn child panics");
}

#[test]
fn spawn_fn_runs_a_function_in_a_fresh_copy_of_the_program() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("from-child");
        let mut arg = [0u8; 64];
        arg[..file.as_os_str().len()].copy_from_slice(file.as_os_str().as_encoded_bytes());
        let p = Process::spawn_fn(write_marker, arg).unwrap();
        assert!(p.join().unwrap().success());
        let written = std::fs::read_to_string(&file).unwrap();
        assert_eq!(written, p.pid().to_string(), "the child wrote its own pid");
        let q = Process::spawn_fn(panics, 0u8).unwrap();
        assert_eq!(q.join().unwrap().code(), Some(101));
    });
    assert_nothing_leaked();
}

#[test]
fn the_default_is_fork_in_a_single_threaded_process() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        // A forked child runs a single thread: the default there is plain fork.
        let p = Process::spawn(|| {
            let pool = Pool::builder().workers(1).build().unwrap();
            assert_eq!(pool.start_method(), StartMethod::Fork);
            assert_eq!(pool.map(&[1i32], |x: i32| x + 1).unwrap(), [2]);
        })
        .unwrap();
        assert!(p.join().unwrap().success());
    });
    assert_nothing_leaked();
}

#[test]
fn programs_a_worker_starts_do_not_inherit_the_spawn_marker() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        for method in METHODS {
            let pool = pool(method, 1);
            // The marker names the child's socket; the start-up hook consumes it, so a program a
            // kernel runs does not mistake itself for a spawned child.
            let seen = pool.map(&[0u8], |_: u8| std::env::var_os("SHMPOOL_CHILD").is_some() as u8).unwrap();
            assert_eq!(seen, [0], "{method:?}");
        }
    });
    assert_nothing_leaked();
}

fn add_one_to(n: u32) {
    assert!(n < 1000);
}

/// A program that uses every start method (and `Process::spawn_fn`) 100 times in a row, with
/// no `init()` and no entry point. A scenario, run in its own process by the test below, which
/// reads its output.
fn hundred_rounds_of_every_start_method() {
    let xs: Vec<f64> = (0..3_000).map(pattern).collect();
    let want: Vec<u64> = xs.iter().map(|x| w1(*x).to_bits()).collect();
    for round in 0..100 {
        for method in METHODS {
            let pool = Pool::builder().workers(2).chunk_len(500).start_method(method).build().unwrap();
            let ys = pool.map(&xs, w1).unwrap();
            assert!(ys.iter().map(|y| y.to_bits()).eq(want.iter().copied()), "{method:?} round {round}");
        }
        let p = Process::spawn_fn(add_one_to, round).unwrap();
        assert!(p.join().unwrap().success(), "spawn_fn round {round}");
    }
    println!("scenario: 100 rounds done");
}

/// Item 10 of issue 14: in a test binary, every start method works; the spawned copies of the
/// test binary never run libtest's harness (its "running" and "test result" lines never
/// appear: the scenario itself runs before the harness), never abort ("IO Safety violation")
/// and never lose their socket (ConnectionReset).
#[test]
fn every_start_method_works_from_a_test_function_a_hundred_times() {
    let out = common::run_scenario("hundred_rounds_of_every_start_method", Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        common::tail(&out.stderr, 4000)
    );
    assert!(stdout.contains("scenario: 100 rounds done"), "{stdout}");
    assert!(!stdout.contains("running ") && !stdout.contains("test result:"), "a child ran the harness:\n{stdout}");
    for bad in ["IO Safety violation", "ConnectionReset", "Connection reset", "fatal runtime error"] {
        assert!(!stderr.contains(bad) && !stdout.contains(bad), "{bad}:\n{}", common::tail(&out.stderr, 4000));
    }
}

// ---------------------------------------------------------------------------------------------
// Large parameter blocks, a forked child using its parent's pool, and buffered output, per method.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Big {
    w: [f64; 16384], // 128 KiB
}

/// Parameter blocks of 128 KiB under every start method.
#[test]
fn large_parameter_blocks_work_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                for method in METHODS {
                    let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
                    let mut p = Big { w: [0.0; 16384] };
                    for (k, w) in p.w.iter_mut().enumerate() {
                        *w = k as f64;
                    }
                    let xs: Vec<u32> = (0..10_000).map(|i| i % 16384).collect();
                    let got = pool.map(&xs, (|i: u32, p: &Big| p.w[i as usize] * 2.0).with(p));
                    let got = got.unwrap_or_else(|e| panic!("{method:?}: {e}"));
                    assert!(xs.iter().zip(&got).all(|(&i, &y)| y == i as f64 * 2.0), "{method:?}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

/// A forked child (`Process::spawn`) that uses its parent's pool: it must get an error or the
/// right answer in bounded time, and the parent's own maps must stay right.
#[test]
fn a_forked_child_using_the_parents_pool_neither_hangs_nor_corrupts() {
    let _serial = common::serial();
    for method in METHODS {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("res");
        let f2 = file.clone();
        common::watchdog(Duration::from_secs(60), move || {
            let pool = std::sync::Arc::new(Pool::builder().workers(2).start_method(method).build().unwrap());
            let xs: Vec<f64> = (0..50_000).map(f64::from).collect();
            let child = {
                // `Process::spawn` takes a `'static` closure: the child owns a handle.
                let pool = std::sync::Arc::clone(&pool);
                let xs = xs.clone();
                Process::spawn(move || {
                    let r = pool.map(&xs, |x: f64| x * 3.0);
                    let msg = match r {
                        Ok(ys) if ys.iter().zip(&xs).all(|(y, x)| *y == x * 3.0) => "ok".to_string(),
                        Ok(_) => "WRONG".to_string(),
                        Err(e) => format!("err {e}"),
                    };
                    std::fs::write(&f2, msg).unwrap();
                })
                .unwrap()
            };
            for _ in 0..20 {
                let ys = pool.map(&xs, |x: f64| x + 1.0).unwrap();
                assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x + 1.0), "{method:?}: parent's map corrupted");
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while child.is_alive() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{method:?}: the child's map on its parent's pool hangs");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let msg = std::fs::read_to_string(&file).unwrap_or_else(|_| format!("no result; {:?}", child.join()));
            assert!(msg == "ok" || msg.starts_with("err"), "{method:?}: child got {msg}");
            eprintln!("{method:?}: child: {msg}");
            let ys = pool.map(&xs, |x: f64| x + 1.0).unwrap();
            assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x + 1.0), "{method:?}: parent's map after the child");
        });
    }
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

fn prints(x: f64) -> f64 {
    println!("kernel {x}");
    x
}

/// The program of `forked_workers_do_not_repeat_the_programs_buffered_output` (a scenario).
fn partial_line_program() {
    print!("PARTIAL-LINE ");
    let pool = Pool::builder().workers(2).chunk_len(1).start_method(StartMethod::Fork).build().unwrap();
    pool.map(&[1.0f64, 2.0, 3.0, 4.0], prints).unwrap();
    drop(pool);
    println!("done");
}

/// A program that has printed a partial line (`print!` without a newline: it sits in std's
/// stdout buffer) and then builds a `Fork` pool whose kernel prints: every forked worker
/// inherits the buffer and writes the partial line again with its first line. `Process::spawn`
/// flushes before forking for exactly this reason; pools do not.
#[test]
#[ignore = "known gap (README: Known gaps): Fork workers do not flush the parent's stdout before forking, since a logging thread would starve respawns; ForkServer and Spawn are not affected"]
fn forked_workers_do_not_repeat_the_programs_buffered_output() {
    let _serial = common::serial();
    let o = common::run_scenario("partial_line_program", Duration::from_secs(60));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert_eq!(out.matches("PARTIAL-LINE").count(), 1, "stdout:\n{out}");
}
