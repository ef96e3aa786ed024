//! ndarray arrays and views of every dimension and layout as inputs and outputs, the shared
//! n-d array, and row kernels on matrices: results equal ndarray's own `mapv` in logical order.

mod common;

use ndarray::{s, Array, Array1, Array2, Array3, ArrayD, Axis, IxDyn, ShapeBuilder};
use shmpool::nd::SharedArray;
use shmpool::prelude::*;

fn f(x: f64) -> f64 {
    x * 3.0 - 1.0
}

fn pattern(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i * 37 % 1009) as f64 * 0.5).collect()
}

#[test]
fn views_of_every_layout_map_in_logical_order() {
    let _serial = common::serial();
    let pool = Pool::builder().workers(2).chunk_len(100).build().unwrap();
    let c = Array2::from_shape_vec((300, 70), pattern(21_000)).unwrap();
    let fortran = Array2::from_shape_vec((300, 70).f(), pattern(21_000)).unwrap();
    let cube = Array3::from_shape_vec((20, 30, 40), pattern(24_000)).unwrap();
    let dynamic = ArrayD::from_shape_vec(IxDyn(&[4, 5, 6, 7]), pattern(840)).unwrap();
    let zero_d = ndarray::arr0(2.0f64);
    let cases: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("1-d", pool.map(&Array1::from(pattern(5_000)), f).unwrap(), Array1::from(pattern(5_000)).mapv(f).to_vec()),
        ("c order", pool.map(&c, f).unwrap(), c.mapv(f).iter().copied().collect()),
        ("fortran order", pool.map(&fortran, f).unwrap(), fortran.mapv(f).iter().copied().collect()),
        ("transposed", pool.map(&c.t(), f).unwrap(), c.t().mapv(f).iter().copied().collect()),
        (
            "stepped slice",
            pool.map(&c.slice(s![..;3, 5..;2]), f).unwrap(),
            c.slice(s![..;3, 5..;2]).mapv(f).iter().copied().collect(),
        ),
        (
            "reversed",
            pool.map(&c.slice(s![..;-1, ..]), f).unwrap(),
            c.slice(s![..;-1, ..]).mapv(f).iter().copied().collect(),
        ),
        (
            "3-d permuted",
            pool.map(&cube.view().permuted_axes([2, 0, 1]), f).unwrap(),
            cube.view().permuted_axes([2, 0, 1]).mapv(f).iter().copied().collect(),
        ),
        ("dynamic", pool.map(&dynamic, f).unwrap(), dynamic.mapv(f).iter().copied().collect()),
        ("0-d", pool.map(&zero_d, f).unwrap(), vec![f(2.0)]),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn mutable_views_of_every_layout_receive_results_in_logical_order() {
    let _serial = common::serial();
    let pool = Pool::builder().workers(2).chunk_len(100).build().unwrap();
    let a = Array2::from_shape_vec((120, 50), pattern(6_000)).unwrap();
    // Standard layout, written in place.
    let mut out = Array2::<f64>::zeros((120, 50));
    pool.map_into(&a, &mut out, f).unwrap();
    assert_eq!(out, a.mapv(f));
    // A transposed output: element (i, j) of the view is (j, i) of the array.
    let mut t = Array2::<f64>::zeros((50, 120));
    pool.map_into(&a, &mut t.view_mut().reversed_axes(), f).unwrap();
    assert_eq!(t.t(), a.mapv(f));
    // A stepped slice of a larger array: only the selected elements change.
    let mut big = Array2::<f64>::from_elem((240, 50), -7.0);
    pool.map_into(&a, &mut big.slice_mut(s![..;2, ..]), f).unwrap();
    assert_eq!(big.slice(s![..;2, ..]), a.mapv(f));
    assert!(big.slice(s![1..;2, ..]).iter().all(|&x| x == -7.0), "untouched rows stay");
    // Fortran order, through a chunk kernel.
    let mut fo = Array2::<f64>::zeros((120, 50).f());
    let chunk = |x: &[f64], y: &mut [f64]| {
        for (y, x) in y.iter_mut().zip(x) {
            *y = f(*x);
        }
    };
    pool.map_into(&a.view(), &mut fo, chunk).unwrap();
    assert_eq!(fo, a.mapv(f));
    // A length mismatch is an error, not a partial write.
    let mut small = Array1::<f64>::zeros(10);
    assert!(matches!(pool.map_into(&a, &mut small, f), Err(Error::LengthMismatch { .. })));
}

#[test]
fn shared_arrays_are_mapped_in_place_and_seen_through_views() {
    let _serial = common::serial();
    let pool = Pool::new(2).unwrap();
    let a = Array::from_shape_vec((64, 33), pattern(64 * 33)).unwrap();
    let s = SharedArray::from_array(&a.t()).unwrap();
    assert_eq!(s.shape(), [33, 64]);
    assert_eq!(s.view(), a.t());
    let mut out = SharedArray::<f64, _>::zeroed((33, 64)).unwrap();
    pool.map_into(&s, &mut out, f).unwrap();
    assert_eq!(out.view(), a.t().mapv(f));
    out.view_mut()[[0, 0]] = 1.5;
    assert_eq!(out[0], 1.5, "the flat deref is the row-major data");
    // Row sums with a row kernel, from the shared array into a plain one.
    let mut sums = Array1::<f64>::zeros(33);
    let row_sum = |r: &[f64], o: &mut [f64]| o[0] = r.iter().sum();
    pool.map_into(&s, &mut sums, row_sum.by_rows(64, 1)).unwrap();
    let want = a.t().sum_axis(Axis(1));
    assert!(sums.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-9));
    drop((s, out, pool));
    common::assert_nothing_leaked();
}

#[test]
fn tickets_and_streams_take_views() {
    let _serial = common::serial();
    let pool = Pool::new(2).unwrap();
    let a = Array2::from_shape_vec((8, 1000), pattern(8_000)).unwrap();
    let t = pool.submit(&a.column(3), f).unwrap();
    assert_eq!(t.wait().unwrap(), a.column(3).mapv(f).to_vec());
    let rows: Vec<Vec<f64>> = pool.imap(a.outer_iter(), f).collect::<Result<_>>().unwrap();
    assert!(rows.iter().zip(a.outer_iter()).all(|(g, r)| *g == r.mapv(f).to_vec()));
}
