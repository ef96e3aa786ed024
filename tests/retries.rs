//! Retried chunks apply their kernel once: a chunk kernel given the caller's own array as
//! output (`map_into` over a `SharedVec`) may read it (`y += x`), and a worker killed at any
//! instant of the chunk must cost a retry, never a double update. (A kill after the kernel
//! but before the publish is in tests/review_round3.rs.)

mod common;

use std::time::Duration;

use shmpool::prelude::*;
use shmpool::testing::PausePoint;
use shmpool::Error;

/// Adds its input to whatever its output holds.
fn acc(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += *x;
    }
}

/// Runs `map_into(xs, ys, acc)` on a pool whose first workers stop at `at`, SIGKILLing each
/// stopped worker; returns how many were killed.
fn acc_with_kills(at: PausePoint, xs: &SharedVec<f64>, ys: &mut SharedVec<f64>) -> u64 {
    let pool = Pool::builder().workers(2).chunk_len(1_000).backup_outputs(true).pause_point(at).build().unwrap();
    let (r, killed) = common::with_paused_killed(&pool, || pool.map_into(xs, ys, acc));
    r.unwrap();
    killed
}

#[test]
fn a_chunk_kernel_killed_midway_into_the_callers_array_is_retried_from_the_callers_values() {
    let _g = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let n = 50_000;
        let xs = SharedVec::from_slice(&(0..n).map(|i| (i % 997) as f64 + 1.0).collect::<Vec<_>>()).unwrap();
        let want: Vec<f64> = xs.iter().map(|x| x + 1.0).collect();
        for at in [PausePoint::MidKernel, PausePoint::BeforePublish] {
            let mut ys = SharedVec::from_slice(&vec![1.0f64; n]).unwrap();
            let killed = acc_with_kills(at, &xs, &mut ys);
            assert!(killed >= 1, "{at:?}: no worker paused");
            let wrong = ys.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
            assert_eq!(wrong, 0, "{at:?}: {killed} workers killed");
            // The same array again, no kill: one more update, from the values it holds now.
            let pool = Pool::new(2).unwrap();
            pool.map_into(&xs, &mut ys, acc).unwrap();
            assert!(ys.iter().zip(&want).zip(xs.iter()).all(|((y, w), x)| *y == w + x), "{at:?}: second map");
        }
    });
    common::assert_nothing_leaked();
}

/// Adds its input to its output, then panics if the chunk holds a -1.
fn acc_then_panic(x: &[f64], y: &mut [f64]) {
    acc(x, y);
    assert!(!x.contains(&-1.0), "a -1 in this chunk");
}

#[test]
fn a_chunk_kernel_that_panics_leaves_its_range_of_the_callers_array_as_it_was() {
    let _g = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let n = 20_000;
        let mut x: Vec<f64> = (0..n).map(|i| (i % 997) as f64 + 1.0).collect();
        x[12_345] = -1.0;
        let xs = SharedVec::from_slice(&x).unwrap();
        let mut ys = SharedVec::from_slice(&vec![1.0f64; n]).unwrap();
        let pool = Pool::builder().workers(2).chunk_len(1_000).backup_outputs(true).build().unwrap();
        match pool.map_into(&xs, &mut ys, acc_then_panic) {
            Err(Error::KernelPanicked { range, .. }) => {
                assert!(range.contains(&12_345), "{range:?}");
                assert!(ys[range.clone()].iter().all(|&y| y == 1.0), "the panicked chunk {range:?} was not restored");
            }
            other => panic!("expected a kernel panic, got {other:?}"),
        }
    });
    common::assert_nothing_leaked();
}

/// Adds `a * b` to whatever its output holds.
fn acc_zip((a, b): (&[f64], &[f32]), y: &mut [f64]) {
    for k in 0..y.len() {
        y[k] += a[k] * b[k] as f64;
    }
}

#[test]
fn a_zip_chunk_kernel_killed_midway_into_the_callers_array_is_retried_from_the_callers_values() {
    let _g = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let n = 50_000;
        let a = SharedVec::from_slice(&(0..n).map(|i| (i % 997) as f64 + 1.0).collect::<Vec<_>>()).unwrap();
        let b = SharedVec::from_slice(&(0..n).map(|i| (i % 13) as f32 + 0.5).collect::<Vec<_>>()).unwrap();
        let want: Vec<f64> = a.iter().zip(b.iter()).map(|(a, b)| 1.0 + a * *b as f64).collect();
        for at in [PausePoint::MidKernel, PausePoint::BeforePublish] {
            let mut ys = SharedVec::from_slice(&vec![1.0f64; n]).unwrap();
            let pool =
                Pool::builder().workers(2).chunk_len(1_000).backup_outputs(true).pause_point(at).build().unwrap();
            let (r, killed) = common::with_paused_killed(&pool, || pool.map_into(&(&a, &b), &mut ys, acc_zip));
            r.unwrap();
            assert!(killed >= 1, "{at:?}: no worker paused");
            let wrong = ys.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
            assert_eq!(wrong, 0, "{at:?}: {killed} workers killed");
        }
    });
    common::assert_nothing_leaked();
}
