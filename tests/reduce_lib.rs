//! `Pool::reduce` and `Pool::map_reduce`: exact against serial computations, the same bits for
//! any number of workers, over slices, `SharedVec`s, `.npy` files and tuples of inputs; killed
//! workers cost a retry, never a wrong value; lengths and empty inputs as documented.

mod common;

use std::time::Duration;

use shmpool::testing::PausePoint;
use shmpool::{Dtype, Error, NpyArray, NpyOutput, Pool, SharedVec};

/// Values with mixed magnitudes, so that the summation order shows in the last bits.
fn data(n: usize) -> Vec<f64> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let m = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            m * 10f64.powi((s % 9) as i32 - 4)
        })
        .collect()
}

/// An associative, non-commutative combine (a polynomial hash of the sequence, in wrapping
/// arithmetic): any change of order changes the result.
fn seq(a: [u64; 2], b: [u64; 2]) -> [u64; 2] {
    [a[0].wrapping_mul(b[1]).wrapping_add(b[0]), a[1].wrapping_mul(b[1])]
}
fn seq_leaf(x: u32) -> [u64; 2] {
    [x as u64 + 1, 1_000_003]
}
const SEQ_ID: [u64; 2] = [0, 1];

fn add(a: f64, b: f64) -> f64 {
    a + b
}

/// The documented grouping, serially: blocks of 65,536, leaves of 256 folded in order from
/// the identity, leaves and blocks combined by the binary-counter pairwise tree.
fn documented_sum(x: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    // Written `left + right` on purpose: the operands' order is the documented one.
    #[allow(clippy::assign_op_pattern)]
    fn pairwise(v: Vec<f64>) -> f64 {
        let mut stack: Vec<(u32, f64)> = Vec::new();
        for mut x in v {
            let mut h = 0;
            while stack.last().is_some_and(|t| t.0 == h) {
                x = stack.pop().unwrap().1 + x;
                h += 1;
            }
            stack.push((h, x));
        }
        let mut acc = stack.pop().map_or(0.0, |t| t.1);
        while let Some((_, v)) = stack.pop() {
            acc = v + acc;
        }
        acc
    }
    let blocks =
        x.chunks(1 << 16).map(|b| pairwise(b.chunks(256).map(|l| l.iter().fold(0.0, |a, &v| a + f(v))).collect()));
    pairwise(blocks.collect())
}

#[test]
fn map_reduce_follows_the_documented_tree_bit_for_bit_for_any_worker_count() {
    let x = data(1_000_003);
    let want = documented_sum(&x, |v| v * v);
    let shared = SharedVec::from_slice(&x).unwrap();
    for workers in 1..=4 {
        let pool = Pool::new(workers).unwrap();
        let got = pool.map_reduce(&shared, 0.0, |v: f64| v * v, add).unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{workers} workers");
        let plain = pool.map_reduce(&x[..], 0.0, |v: f64| v * v, add).unwrap();
        assert_eq!(plain.to_bits(), want.to_bits(), "{workers} workers, plain slice");
    }
    let serial: f64 = x.iter().map(|v| v * v).sum();
    assert!((want - serial).abs() <= 1e-12 * serial.abs(), "the tree sums what a serial loop sums");
}

#[test]
fn block_and_leaf_edges_follow_the_documented_tree() {
    let pool = Pool::new(2).unwrap();
    let x = data(3 * 65_536 + 300);
    for n in [1, 255, 256, 257, 65_535, 65_536, 65_537, 2 * 65_536, 3 * 65_536 + 300] {
        let got = pool.map_reduce(&x[..n], 0.0, |v: f64| v, add).unwrap();
        assert_eq!(got.to_bits(), documented_sum(&x[..n], |v| v).to_bits(), "n = {n}");
    }
}

#[test]
fn order_is_kept_for_a_non_commutative_combine() {
    let x: Vec<u32> = (0..300_001u32).map(|i| i.wrapping_mul(2_654_435_761) >> 7).collect();
    let serial = x.iter().fold(SEQ_ID, |a, &v| seq(a, seq_leaf(v)));
    for workers in [1, 3] {
        let pool = Pool::builder().workers(workers).chunk_len(1000).build().unwrap();
        assert_eq!(pool.map_reduce(&x, SEQ_ID, seq_leaf, seq).unwrap(), serial, "{workers} workers");
        let folded =
            pool.reduce(&x, SEQ_ID, |a: [u64; 2], xs: &[u32]| xs.iter().fold(a, |a, &v| seq(a, seq_leaf(v))), seq);
        assert_eq!(folded.unwrap(), serial, "{workers} workers, chunk fold");
    }
}

#[test]
fn mean_and_std_in_one_pass_match_a_serial_computation() {
    let pool = Pool::new(2).unwrap();
    let x = data(500_000);
    let add3 = |a: [f64; 3], b: [f64; 3]| [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
    let [s, s2, n] = pool.map_reduce(&x, [0.0; 3], |v: f64| [v, v * v, 1.0], add3).unwrap();
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / x.len() as f64;
    assert_eq!(n, 500_000.0);
    assert!((s / n - mean).abs() <= 1e-12 * mean.abs().max(1e-3));
    assert!(((s2 / n - (s / n) * (s / n)).sqrt() - var.sqrt()).abs() <= 1e-9 * var.sqrt());
}

#[test]
fn chunk_folds_are_exact_for_integers() {
    let pool = Pool::new(2).unwrap();
    let x: Vec<i64> = (0..1_000_000i64).map(|i| (i * 7919) % 100_003 - 50_000).collect();
    let sum = pool.reduce(&x, 0i64, |s: i64, x: &[i64]| s + x.iter().sum::<i64>(), |a: i64, b: i64| a + b).unwrap();
    assert_eq!(sum, x.iter().sum::<i64>());
    let minmax = pool
        .reduce(
            &x,
            [i64::MAX, i64::MIN],
            |m: [i64; 2], x: &[i64]| x.iter().fold(m, |m, &v| [m[0].min(v), m[1].max(v)]),
            |a: [i64; 2], b: [i64; 2]| [a[0].min(b[0]), a[1].max(b[1])],
        )
        .unwrap();
    assert_eq!(minmax, [*x.iter().min().unwrap(), *x.iter().max().unwrap()]);
    // A method as the combine (a fn item, zero-sized), as in the README.
    let xf = data(100_000);
    let max = pool.reduce(&xf, f64::MIN, |m: f64, c: &[f64]| c.iter().fold(m, |m, &v| m.max(v)), f64::max).unwrap();
    assert_eq!(max, xf.iter().copied().fold(f64::MIN, f64::max));
}

#[test]
fn tuples_of_inputs_and_npy_files_reduce_in_place() {
    let pool = Pool::new(2).unwrap();
    let (a, b) = (data(200_000), data(200_000).iter().map(|v| v * 2.0 + 1.0).collect::<Vec<_>>());
    let d = tempfile::tempdir().unwrap();
    let mut o = NpyOutput::create(d.path().join("a.npy"), Dtype::F64, &[a.len() as u64]).unwrap();
    pool.map_into(&a[..], &mut o, |v: f64| v).unwrap();
    o.commit().unwrap();
    // SAFETY: the test's own file; nothing writes it while it is open.
    let fa = unsafe { NpyArray::open(d.path().join("a.npy")).unwrap() };
    let sb = SharedVec::from_slice(&b).unwrap();
    let dot = pool.map_reduce(&(&fa, &sb), 0.0, |(x, y): (f64, f64)| x * y, add).unwrap();
    let serial: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((dot - serial).abs() <= 1e-12 * serial.abs().max(1.0));
    let dot2 = pool.map_reduce(&(&a, &b), 0.0, |(x, y): (f64, f64)| x * y, add).unwrap();
    assert_eq!(dot.to_bits(), dot2.to_bits(), "the file and the slice give the same bits");
    let folded = pool.reduce(
        &(&a, &b),
        0.0,
        |s: f64, (x, y): (&[f64], &[f64])| x.iter().zip(y).fold(s, |s, (p, q)| s + p * q),
        add,
    );
    assert!((folded.unwrap() - serial).abs() <= 1e-12 * serial.abs().max(1.0));
    let sum = pool.map_reduce(&fa, 0.0, |v: f64| v, add).unwrap();
    assert_eq!(sum.to_bits(), documented_sum(&a, |v| v).to_bits());
    let e = pool.map_reduce(&fa, 0.0f32, |v: f32| v, |p: f32, q: f32| p + q).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
}

#[test]
fn length_mismatch_and_empty_input() {
    let pool = Pool::new(1).unwrap();
    let e = pool.map_reduce(&(&[1.0f64, 2.0], &[1.0f64]), 0.0, |(x, y): (f64, f64)| x * y, add).unwrap_err();
    assert!(matches!(e, Error::InputLengths { first: 2, input: 1, len: 1 }), "{e}");
    let empty: [f64; 0] = [];
    assert_eq!(pool.map_reduce(&empty, 7.5, |v: f64| v, add).unwrap(), 7.5, "the identity");
    assert_eq!(pool.reduce(&empty, [1u8; 3], |a: [u8; 3], _: &[f64]| a, |a: [u8; 3], _: [u8; 3]| a).unwrap(), [1; 3]);
}

#[test]
fn panics_in_the_map_or_the_combine_are_reported() {
    let pool = Pool::new(1).unwrap();
    let e = pool.map_reduce(&[1.0f64, -1.0], 0.0, |v: f64| if v < 0.0 { panic!("negative") } else { v }, add);
    assert!(
        matches!(e, Err(Error::KernelPanicked { ref range, .. }) if *range == (0..2)),
        "elements, not blocks: {e:?}"
    );
    let x = vec![1.0f64; 200_000];
    let e = pool.map_reduce(&x, 0.0, |v: f64| v, |a: f64, b: f64| if a > 65_536.0 { panic!("too big") } else { a + b });
    assert!(matches!(e, Err(Error::KernelPanicked { .. })), "{e:?}");
    assert_eq!(pool.map_reduce(&x, 0.0, |v: f64| v, add).unwrap(), 200_000.0, "the pool still works");
}

#[test]
fn workers_killed_mid_chunk_give_the_same_bits() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let x = data(2_000_000);
        let want = documented_sum(&x, |v| v * v);
        let pool = Pool::builder().workers(2).pause_point(PausePoint::MidKernel).build().unwrap();
        let shared = SharedVec::from_slice(&x).unwrap();
        let (r, killed) = common::with_paused_killed(&pool, || pool.map_reduce(&shared, 0.0, |v: f64| v * v, add));
        assert_eq!(r.unwrap().to_bits(), want.to_bits());
        assert!(killed >= 1, "no worker paused mid-kernel");
    });
    common::assert_nothing_leaked();
}

#[test]
fn map_reduce_and_reduce_take_a_parameter_block_with_the_documented_tree() {
    use shmpool::KernelExt;
    let x = data(200_003);
    let want = documented_sum(&x, |v| v * 3.0);
    let pool = Pool::new(2).unwrap();
    let got = pool.map_reduce(&x[..], 0.0, (|v: f64, k: &f64| v * k).with(3.0f64), add).unwrap();
    assert_eq!(got.to_bits(), want.to_bits());
    // A parameter block larger than the identity, and an odd-sized identity before it.
    let w = [1u64, 2, 3, 4, 5];
    let xs: Vec<u32> = (0..100_000).collect();
    let got = pool
        .reduce(&xs, [0u8; 3], (|a: [u8; 3], x: &[u32], w: &[u64; 5]| fold3(a, x, w)).with(w), |a: [u8; 3], b| {
            [a[0].wrapping_add(b[0]), a[1] ^ b[1], a[2].max(b[2])]
        })
        .unwrap();
    let serial = fold3([0; 3], &xs, &w);
    assert_eq!(got[0], serial[0]);
    assert_eq!(got[2], serial[2]);
}

/// A fold over a parameter block (the sum wraps, the xor and max do not depend on grouping).
fn fold3(a: [u8; 3], x: &[u32], w: &[u64; 5]) -> [u8; 3] {
    x.iter().fold(a, |a, &v| {
        let t = (u64::from(v) * w[v as usize % 5]) as u8;
        [a[0].wrapping_add(t), a[1] ^ t, a[2].max(t)]
    })
}

#[test]
fn map_reduce_takes_a_kernel_spec_with_the_element_map_s_result() {
    use shmpool::KernelSpec;
    let x = data(150_001);
    let pool = Pool::new(2).unwrap();
    let spec = KernelSpec::elem(|v: f64| v * v);
    let want = pool.map_reduce(&x[..], 0.0, |v: f64| v * v, add).unwrap();
    let by_ref = pool.map_reduce(&x[..], 0.0, &spec, add).unwrap();
    assert_eq!(by_ref.to_bits(), want.to_bits());
    let typed = pool.map_reduce(&x[..], 0.0, spec.typed::<f64, f64>().unwrap(), add).unwrap();
    assert_eq!(typed.to_bits(), want.to_bits());
    // A spec on data of another type, or into another accumulator: typed errors.
    let e = pool.map_reduce(&[1u32, 2], 0.0, &spec, add).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    let e = pool.map_reduce(&x[..], 0u64, &spec, |a: u64, b: u64| a + b).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    let empty: [f64; 0] = [];
    assert_eq!(pool.map_reduce(&empty, 7.0, &spec, add).unwrap(), 7.0);
}
