//! `Pool::map`, `.with(params)`, `map_into`: results equal a sequential map for any length, worker
//! count, chunk length and element types.

mod common;

use bytemuck::{Pod, Zeroable};
use proptest::prelude::*;
use shmpool::KernelExt;
use shmpool::{Error, Pool, SharedVec};

#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: f32,
    y: f32,
}

fn norm(p: Point) -> f64 {
    ((p.x as f64).powi(2) + (p.y as f64).powi(2)).sqrt()
}

#[test]
fn empty_input_gives_empty_output() {
    let pool = Pool::new(2).unwrap();
    let out: Vec<f64> = pool.map(&[] as &[f64], |x: f64| x + 1.0).unwrap();
    assert!(out.is_empty());
    let xs = SharedVec::<f64>::zeroed(0).unwrap();
    let mut ys = SharedVec::<f64>::zeroed(0).unwrap();
    pool.map_into(&xs, &mut ys, common::workloads::w1_chunk).unwrap();
}

#[test]
fn one_element_and_lengths_not_divisible_by_the_chunk() {
    let pool = Pool::builder().workers(3).chunk_len(7).build().unwrap();
    assert_eq!(pool.map(&[41u64], |x: u64| x + 1).unwrap(), [42]);
    for n in [1usize, 6, 7, 8, 13, 15, 100, 1001] {
        let xs: Vec<i32> = (0..n as i32).collect();
        let got = pool.map(&xs, |x: i32| x * 3 - 1).unwrap();
        let want: Vec<i32> = xs.iter().map(|x| x * 3 - 1).collect();
        assert_eq!(got, want, "n = {n}");
    }
}

#[test]
fn large_inputs_are_staged_and_mapped_in_order() {
    let pool = Pool::new(2).unwrap();
    let xs: Vec<f64> = (0..3_000_000).map(common::workloads::pattern).collect();
    let got = pool.map(&xs, common::workloads::w1).unwrap();
    assert!(xs.iter().zip(&got).all(|(x, y)| common::workloads::w1(*x).to_bits() == y.to_bits()));
    // The staging buffers are reused by the next map, smaller this time.
    let got = pool.map(&xs[..100_000], |x: f64| x as f32).unwrap();
    assert_eq!(got.len(), 100_000);
    assert_eq!(got[99_999], xs[99_999] as f32);
}

#[test]
fn user_pod_structs_map_to_other_types() {
    let pool = Pool::new(2).unwrap();
    let pts: Vec<Point> = (0..10_000).map(|i| Point { x: i as f32, y: (i % 7) as f32 }).collect();
    let got = pool.map(&pts, norm).unwrap();
    let want: Vec<f64> = pts.iter().copied().map(norm).collect();
    assert_eq!(got, want);
}

#[test]
fn parameter_blocks_replace_captures() {
    #[derive(Clone, Copy, Pod, Zeroable)]
    #[repr(C)]
    struct Affine {
        a: f64,
        b: f64,
    }
    let pool = Pool::new(2).unwrap();
    let xs: Vec<f64> = (0..100_000).map(|i| i as f64).collect();
    let got = pool.map(&xs, (|x: f64, p: &Affine| p.a * x + p.b).with(Affine { a: 2.0, b: -1.0 })).unwrap();
    assert!(got.iter().enumerate().all(|(i, y)| *y == 2.0 * i as f64 - 1.0));
    let src = SharedVec::from_slice(&xs).unwrap();
    let mut dst = pool.alloc::<f32>(xs.len()).unwrap();
    let scale = |x: &[f64], y: &mut [f32], k: &f64| {
        for (y, x) in y.iter_mut().zip(x) {
            *y = (x * k) as f32;
        }
    };
    pool.map_into(&src, &mut dst, scale.with(0.5f64)).unwrap();
    assert_eq!(dst[99_999], 49_999.5);
}

#[test]
fn map_into_with_different_lengths_is_a_length_mismatch() {
    let pool = Pool::new(1).unwrap();
    let xs = SharedVec::<f64>::zeroed(10).unwrap();
    let mut ys = SharedVec::<f64>::zeroed(11).unwrap();
    match pool.map_into(&xs, &mut ys, common::workloads::w1_chunk) {
        Err(Error::LengthMismatch { input: 10, output: 11 }) => {}
        other => panic!("expected LengthMismatch, got {other:?}"),
    }
}

#[test]
fn zero_workers_is_an_invalid_config() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidOption { option: "workers", .. })));
    assert!(matches!(
        Pool::builder().workers(2).chunk_len(0).build(),
        Err(Error::InvalidOption { option: "chunk_len", .. })
    ));
}

#[test]
fn kernel_panic_is_reported_and_the_pool_stays_usable() {
    let pool = Pool::new(2).unwrap();
    let xs: Vec<i64> = (0..1000).collect();
    let err = pool.map(&xs, |x: i64| if x == 500 { panic!("bad element {x}") } else { x }).unwrap_err();
    match err {
        Error::KernelPanicked { message, range } => {
            assert!(message.contains("bad element 500"), "{message}");
            assert!(range.contains(&500));
        }
        other => panic!("expected KernelPanicked, got {other:?}"),
    }
    assert_eq!(pool.map(&xs, |x: i64| x + 1).unwrap()[999], 1000);
}

#[test]
fn map_results_are_bit_identical_to_sequential_for_w1_via_map_into() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let n = 1_000_003;
    let mut xs = pool.alloc::<f64>(n).unwrap();
    common::workloads::fill_pattern(&mut xs, 0);
    let mut ys = pool.alloc::<f64>(n).unwrap();
    pool.map_into(&xs, &mut ys, common::workloads::w1_chunk).unwrap();
    assert!(xs.iter().zip(ys.iter()).all(|(x, y)| common::workloads::w1(*x).to_bits() == y.to_bits()));
    let pids = pool.pids();
    drop(pool);
    common::assert_pids_gone(&pids);
}

fn check<In: Pod + std::fmt::Debug, Out: Pod + PartialEq + std::fmt::Debug>(
    pool: &Pool,
    xs: &[In],
    f: fn(In) -> Out,
    got: Vec<Out>,
) -> Result<(), TestCaseError> {
    let want: Vec<Out> = xs.iter().copied().map(f).collect();
    prop_assert_eq!(got.len(), want.len());
    prop_assert!(got == want, "map differs from sequential on {} elements with {} workers", xs.len(), pool.workers());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn map_equals_sequential_map(
        len in prop_oneof![0usize..100, 100usize..20_000, 20_000usize..1_000_000],
        workers in 1usize..=8,
        chunk in proptest::option::of(1usize..50_000),
        seed in any::<u64>(),
        kind in 0u8..5,
    ) {
        let mut b = Pool::builder().workers(workers);
        if let Some(c) = chunk {
            b = b.chunk_len(c);
        }
        let pool = b.build().unwrap();
        let mut s = seed | 1;
        let mut rnd = move || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
        match kind {
            0 => {
                let xs: Vec<f64> = (0..len).map(|_| (rnd() % 1_000_000) as f64 / 7.0).collect();
                let got = pool.map(&xs, |x: f64| x.sqrt() * 1.5 + 0.25).unwrap();
                check(&pool, &xs, |x: f64| x.sqrt() * 1.5 + 0.25, got)?;
            }
            1 => {
                let xs: Vec<i8> = (0..len).map(|_| rnd() as i8).collect();
                let got = pool.map(&xs, |x: i8| x as f32 * 0.5).unwrap();
                check(&pool, &xs, |x: i8| x as f32 * 0.5, got)?;
            }
            2 => {
                let xs: Vec<u16> = (0..len).map(|_| rnd() as u16).collect();
                let got = pool.map(&xs, |x: u16| (x as u64) << 20).unwrap();
                check(&pool, &xs, |x: u16| (x as u64) << 20, got)?;
            }
            3 => {
                let xs: Vec<i32> = (0..len).map(|_| rnd() as i32).collect();
                let got = pool.map(&xs, |x: i32| x.wrapping_mul(3) as f64).unwrap();
                check(&pool, &xs, |x: i32| x.wrapping_mul(3) as f64, got)?;
            }
            _ => {
                let xs: Vec<Point> = (0..len).map(|_| Point { x: (rnd() % 1000) as f32, y: (rnd() % 1000) as f32 }).collect();
                let got = pool.map(&xs, norm).unwrap();
                check(&pool, &xs, norm, got)?;
            }
        }
    }
}
