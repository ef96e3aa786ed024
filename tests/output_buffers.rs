//! The output a chunk kernel writes into starts zeroed whatever buffer the pool recycles: the
//! slots' inline payloads (small maps and tickets) and the staging buffers (larger plain
//! slices), from one caller or from several threads, and after a killed attempt. A caller's own
//! `SharedVec` is handed to the kernel as it is.

mod common;

use std::time::Duration;

use shmpool::testing::PausePoint;
use shmpool::{KernelSpec, Pool, SharedVec};

/// Adds its input to whatever its output holds: it sees any stale output as a wrong sum.
fn acc(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += *x;
    }
}

/// `acc` over integers: any stale bit pattern shows (0xAB.. read as f64 is a negligible -4e-97).
fn acc_u64(x: &[u64], y: &mut [u64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = y.wrapping_add(*x);
    }
}

/// Writes only where the input is positive: elsewhere it leaves whatever the buffer holds.
fn positive_only(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        if *x > 0.0 {
            *y = *x * 10.0;
        }
    }
}

fn input(n: usize, sign: f64) -> Vec<f64> {
    (0..n).map(|i| sign * ((i % 997) as f64 + 1.0)).collect()
}

fn wrong(got: &[f64], want: impl Fn(usize) -> f64) -> usize {
    got.iter().enumerate().filter(|(i, y)| y.to_bits() != want(*i).to_bits()).count()
}

/// `acc` three times over the same input, with `map_spec` and `submit_spec`: x every time.
fn accumulate_kernel_sees_zeros(n: usize) {
    let pool = Pool::builder().workers(2).build().unwrap();
    let xs = input(n, 1.0);
    let spec = KernelSpec::chunk(acc);
    for round in 0..3 {
        let ys: Vec<f64> = pool.map(&xs, spec.typed::<f64, f64>().unwrap()).unwrap();
        assert_eq!(wrong(&ys, |i| xs[i]), 0, "map_spec round {round} of {n}: the kernel saw an earlier output");
        let ys: Vec<f64> = pool.submit(&xs, spec.typed::<f64, f64>().unwrap()).unwrap().wait().unwrap();
        assert_eq!(wrong(&ys, |i| xs[i]), 0, "submit_spec round {round} of {n}: the kernel saw an earlier output");
        let mut into = vec![f64::NAN; n];
        pool.submit(&xs, spec.typed::<f64, f64>().unwrap()).unwrap().wait_into(&mut into).unwrap();
        assert_eq!(wrong(&into, |i| xs[i]), 0, "wait_into round {round} of {n}");
    }
}

#[test]
fn a_chunk_kernel_over_a_small_slice_starts_from_zeroed_output_every_time() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || accumulate_kernel_sees_zeros(1_000));
    common::assert_nothing_leaked();
}

#[test]
fn a_chunk_kernel_over_a_staged_slice_starts_from_zeroed_output_every_time() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || accumulate_kernel_sees_zeros(300_000));
    common::assert_nothing_leaked();
}

#[test]
fn a_kernel_that_writes_only_some_elements_never_returns_another_maps_values() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).build().unwrap();
        let spec = KernelSpec::chunk(positive_only);
        for n in [1_000, 300_000] {
            let secret: Vec<f64> = pool.map(&input(n, 1.0), spec.typed::<f64, f64>().unwrap()).unwrap();
            assert!(secret.iter().all(|&y| y > 0.0));
            let ys: Vec<f64> = pool.map(&input(n, -1.0), spec.typed::<f64, f64>().unwrap()).unwrap();
            assert_eq!(wrong(&ys, |_| 0.0), 0, "{n} elements: the previous map's values leaked");
            let ys: Vec<f64> = pool.submit(&input(n, -1.0), spec.typed::<f64, f64>().unwrap()).unwrap().wait().unwrap();
            assert_eq!(wrong(&ys, |_| 0.0), 0, "{n} elements (ticket): the previous map's values leaked");
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn callers_on_two_threads_never_see_each_others_results() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(180), || {
        let pool = Pool::builder().workers(2).build().unwrap();
        let spec = KernelSpec::chunk(positive_only);
        std::thread::scope(|s| {
            // One thread maps "secrets" (positive inputs: every element written), the other
            // maps inputs where the kernel writes nothing: it must get zeros only.
            let writer = s.spawn(|| {
                for round in 0..40 {
                    let n = if round % 2 == 0 { 1_000 } else { 300_000 };
                    let xs = input(n, 1.0);
                    let ys: Vec<f64> = pool.map(&xs, spec.typed::<f64, f64>().unwrap()).unwrap();
                    assert_eq!(wrong(&ys, |i| xs[i] * 10.0), 0);
                }
            });
            let reader = s.spawn(|| {
                for round in 0..40 {
                    let n = if round % 2 == 0 { 300_000 } else { 1_000 };
                    let ys: Vec<f64> = if round % 3 == 0 {
                        pool.submit(&input(n, -1.0), spec.typed::<f64, f64>().unwrap()).unwrap().wait().unwrap()
                    } else {
                        pool.map(&input(n, -1.0), spec.typed::<f64, f64>().unwrap()).unwrap()
                    };
                    assert_eq!(wrong(&ys, |_| 0.0), 0, "round {round}: another caller's results leaked");
                }
            });
            writer.join().unwrap();
            reader.join().unwrap();
        });
    });
    common::assert_nothing_leaked();
}

#[test]
fn a_retried_chunk_does_not_see_the_killed_attempts_partial_output() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        // The first workers write 0xAB over half their chunk's output, then stop; we kill them
        // there, and the chunk is redone by a replacement.
        for n in [1_000usize, 300_000] {
            let pool = Pool::builder().workers(2).pause_point(PausePoint::MidKernel).build().unwrap();
            let xs: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
            let spec = KernelSpec::chunk(acc_u64);
            let (r, killed) = common::with_paused_killed(&pool, || pool.map(&xs, spec.typed::<u64, u64>().unwrap()));
            let ys = r.unwrap();
            let bad = ys.iter().zip(&xs).filter(|(y, x)| y != x).count();
            assert_eq!(bad, 0, "{n} elements: a retry saw the dead attempt's output");
            assert!(killed >= 1, "no worker paused mid-kernel");
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn a_callers_own_shared_vec_reaches_the_kernel_as_it_is() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        // `map_into` writes the caller's array in place: accumulating into it is the caller's
        // choice, and the pool must not clear it.
        let pool = Pool::builder().workers(2).build().unwrap();
        for n in [1_000usize, 300_000] {
            let xs = SharedVec::from_slice(&input(n, 1.0)).unwrap();
            let mut ys = pool.alloc::<f64>(n).unwrap();
            pool.map_into(&xs, &mut ys, acc).unwrap();
            pool.map_into(&xs, &mut ys, acc).unwrap();
            assert_eq!(wrong(&ys, |i| 2.0 * xs[i]), 0);
        }
    });
    common::assert_nothing_leaked();
}
