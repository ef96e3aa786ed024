//! Adversarial review of issue #15 (one coherent API, typed errors, ndarray). Each test here
//! states a promise of the issue or of the docs; the ones marked `#[ignore = "review #15: .."]`
//! were confirmed to FAIL (or panic) on the code they were written against.

#[path = "review_15/build.rs"]
mod build;
mod common;
#[path = "review_15/expr.rs"]
mod expr;

use ndarray::{s, Array1, Array2};
use shmpool::nd::SharedArray;
use shmpool::prelude::*;
use shmpool::Dtype;

fn pool() -> Pool {
    Pool::builder().workers(2).chunk_len(4).build().unwrap()
}

fn no_panic<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> R {
    match std::panic::catch_unwind(f) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("the library panicked on user input: {msg:?}")
        }
    }
}

#[test]
fn chunk_len_zero_is_a_typed_error() {
    let _serial = common::serial();
    let r = no_panic(|| Pool::builder().workers(1).chunk_len(0).build().map(|_| ()));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn alloc_of_a_huge_length_is_a_typed_error() {
    let _serial = common::serial();
    let p = pool();
    let r = no_panic(std::panic::AssertUnwindSafe(|| p.alloc::<f64>(usize::MAX / 2).map(|_| ())));
    assert!(r.is_err());
    let r = no_panic(|| SharedVec::<u64>::zeroed(usize::MAX).map(|_| ()));
    assert!(r.is_err());
}

#[test]
fn shared_array_shape_overflow_is_a_typed_error() {
    let r = no_panic(|| SharedArray::<f64, _>::zeroed((usize::MAX, 3)).map(|_| ()));
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
}

#[test]
fn rows_with_zero_columns_is_a_typed_error() {
    let _serial = common::serial();
    let p = pool();
    let r = no_panic(std::panic::AssertUnwindSafe(|| {
        p.map(&[1.0f64, 2.0], (|r: &[f64], o: &mut [f64]| o[0] = r[0]).by_rows(0, 1))
    }));
    assert!(r.is_err());
    let r = no_panic(std::panic::AssertUnwindSafe(|| {
        p.map(&[1.0f64, 2.0], (|r: &[f64], o: &mut [f64]| o[0] = r[0]).by_rows(1, 0))
    }));
    // Zero output columns: either an error or an empty result, never a panic.
    if let Ok(v) = r {
        assert!(v.is_empty());
    }
}

#[test]
fn rows_not_dividing_the_chunk_see_whole_rows() {
    let _serial = common::serial();
    // chunk_len 4 elements, rows of 3: every call must see exactly 3 elements.
    let p = pool();
    let data: Vec<f64> = (0..30).map(|i| i as f64).collect();
    let k = |r: &[f64], o: &mut [f64]| {
        assert_eq!(r.len(), 3);
        o[0] = r.iter().sum();
    };
    let want: Vec<f64> = data.chunks(3).map(|c| c.iter().sum()).collect();
    assert_eq!(p.map(&data, k.by_rows(3, 1)).unwrap(), want);
    let shared = SharedVec::from_slice(&data).unwrap();
    let mut out = p.alloc::<f64>(10).unwrap();
    p.map_into(&shared, &mut out, k.by_rows(3, 1)).unwrap();
    assert_eq!(&out[..], &want[..]);
    let a = Array2::from_shape_vec((10, 3), data.clone()).unwrap();
    let mut o = Array1::<f64>::zeros(10);
    p.map_into(&a, &mut o, k.by_rows(3, 1)).unwrap();
    assert_eq!(o.to_vec(), want);
    // Through submit and imap too.
    assert_eq!(p.submit(&data, k.by_rows(3, 1)).unwrap().wait().unwrap(), want);
    let got: Vec<Vec<f64>> = p.imap(vec![data.clone(), data.clone()], k.by_rows(3, 1)).collect::<Result<_>>().unwrap();
    assert_eq!(got, vec![want.clone(), want.clone()]);
}

#[test]
fn ragged_rows_are_a_typed_error_on_every_verb() {
    let _serial = common::serial();
    let p = pool();
    let data: Vec<f64> = (0..10).map(|i| i as f64).collect();
    let k = |r: &[f64], o: &mut [f64]| o[0] = r[0];
    let e = no_panic(std::panic::AssertUnwindSafe(|| p.map(&data, k.by_rows(3, 1)).unwrap_err()));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = no_panic(std::panic::AssertUnwindSafe(|| p.submit(&data, k.by_rows(3, 1)).map(|_| ()).unwrap_err()));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let r: Vec<_> = no_panic(std::panic::AssertUnwindSafe(|| p.imap(vec![data.clone()], k.by_rows(3, 1)).collect()));
    assert!(r[0].is_err());
    let mut out = vec![0.0f64; 3];
    let e = no_panic(std::panic::AssertUnwindSafe(|| p.map_into(&data, &mut out, k.by_rows(3, 1)).unwrap_err()));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn reversed_mutable_view_as_output() {
    let _serial = common::serial();
    let p = pool();
    let a: Vec<f64> = (0..10).map(|i| i as f64).collect();
    let mut out = Array1::<f64>::zeros(10);
    p.map_into(&a, &mut out.slice_mut(s![..;-1]), |x: f64| x + 1.0).unwrap();
    let want: Vec<f64> = (0..10).rev().map(|i| i as f64 + 1.0).collect();
    assert_eq!(out.to_vec(), want);
    // A chunk kernel into a stepped view.
    let mut out2 = Array1::<f64>::zeros(20);
    p.map_into(&a, &mut out2.slice_mut(s![..;2]), |x: &[f64], y: &mut [f64]| {
        for (y, x) in y.iter_mut().zip(x) {
            *y = -x;
        }
    })
    .unwrap();
    assert_eq!(out2[18], -9.0);
    assert_eq!(out2[19], 0.0);
}

#[test]
fn ndarray_input_and_output_row_kernel_2d_to_2d() {
    let _serial = common::serial();
    let p = pool();
    let a = Array2::from_shape_vec((5, 3), (0..15).map(|i| i as f64).collect()).unwrap();
    let mut o = Array2::<f64>::zeros((5, 2));
    p.map_into(
        &a.t().t(),
        &mut o.view_mut(),
        (|r: &[f64], o: &mut [f64]| {
            o[0] = r[0];
            o[1] = r[2];
        })
        .by_rows(3, 2),
    )
    .unwrap();
    assert_eq!(o[[4, 1]], 14.0);
}

#[test]
fn with_and_with_table_together_on_every_verb() {
    let _serial = common::serial();
    let p = pool();
    let t = SharedVec::from_slice(&[10.0f64, 20.0, 30.0]).unwrap();
    let data: Vec<u32> = (0..9).map(|i| i % 3).collect();
    let k = || (|i: u32, p: &f64, t: &[f64]| t[i as usize] * p).with(2.0f64).with_table(&t);
    let want: Vec<f64> = data.iter().map(|&i| [10.0, 20.0, 30.0][i as usize] * 2.0).collect();
    assert_eq!(p.map(&data, k()).unwrap(), want);
    assert_eq!(p.submit(&data, k()).unwrap().wait().unwrap(), want);
    let got: Vec<Vec<f64>> = p.imap_unordered(vec![data.clone()], k()).collect::<Result<_>>().unwrap();
    assert_eq!(got, vec![want.clone()]);
}

#[test]
fn empty_table_and_empty_input() {
    let _serial = common::serial();
    let p = pool();
    let empty: [f64; 0] = [];
    let k = (|x: f64, t: &[f64]| x + t.len() as f64).with_table(&empty);
    assert_eq!(p.map(&[1.0f64, 2.0], k).unwrap(), [1.0, 2.0]);
    let none: Vec<f64> = vec![];
    assert!(p.map(&none, |x: f64| x).unwrap().is_empty());
    assert!(p.submit(&none, |x: f64| x).unwrap().wait().unwrap().is_empty());
    let r: f64 = p.map_reduce(&none, 5.0, |x: f64| x, |a: f64, b: f64| a + b).unwrap();
    assert_eq!(r, 5.0);
}

#[test]
fn zip_mismatch_is_typed() {
    let _serial = common::serial();
    let p = pool();
    let a = [1.0f64, 2.0, 3.0];
    let b = [1.0f32, 2.0];
    let e = p.map(&(&a, &b), |(x, y): (f64, f32)| x + y as f64).unwrap_err();
    assert!(matches!(e, Error::InputLengths { .. }), "{e}");
}

#[test]
fn typed_spec_with_wrong_types_is_typed() {
    let spec = KernelSpec::elem(|x: f64| x * 2.0);
    let e = spec.typed::<f32, f32>().map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn spec_by_ref_on_wrong_data_type_is_typed() {
    let _serial = common::serial();
    let p = pool();
    let spec = KernelSpec::elem(|x: f64| x * 2.0);
    let mut out = vec![0u8; 3];
    let e = no_panic(std::panic::AssertUnwindSafe(|| p.map_into(&[1u8, 2, 3], &mut out, &spec).unwrap_err()));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn error_display_has_no_doubled_prefix() {
    let _serial = common::serial();
    let p = pool();
    p.terminate();
    let e = p.map(&[1.0f64], |x: f64| x).unwrap_err();
    let s = e.to_string();
    for w in ["pool is broken", "pool is closed", "terminated", "failed"] {
        assert!(s.matches(w).count() <= 1, "doubled: {s}");
    }
    assert_eq!(e.kind(), ErrorKind::PoolUnavailable, "{s}");
}

#[test]
fn negative_integer_power_at_run_time_through_map_into_is_typed() {
    use shmpool::kernel::expr::Program;
    let _serial = common::serial();
    let p = pool();
    let prog = Program::compile_inputs("x ** x", &[("x", Dtype::I32)]).unwrap();
    let spec = KernelSpec::expr::<i32, i32>(&prog).unwrap();
    let mut out = vec![0i32; 3];
    let e = p.map_into(&[1i32, -1, 2], &mut out, &spec).unwrap_err();
    assert!(matches!(e, Error::Expr(_)), "a typed expression error, got {e:?}");
    assert!(!matches!(e, Error::KernelPanicked { .. }), "{e:?}");
}

#[test]
fn negative_integer_power_through_map_and_submit_is_typed() {
    use shmpool::kernel::expr::Program;
    let _serial = common::serial();
    let p = pool();
    let prog = Program::compile_inputs("x ** x", &[("x", Dtype::I64)]).unwrap();
    let spec = KernelSpec::expr::<i64, i64>(&prog).unwrap();
    let e = p.map(&[1i64, -1, 2], spec.typed::<i64, i64>().unwrap()).unwrap_err();
    assert!(matches!(e, Error::Expr(_)), "map: {e:?}");
    let e = p.submit(&[1i64, -1, 2], spec.typed::<i64, i64>().unwrap()).unwrap().wait().unwrap_err();
    assert!(matches!(e, Error::Expr(_)), "submit: {e:?}");
}

#[test]
fn eval_slice_with_mismatched_lengths_is_typed() {
    use shmpool::kernel::expr::Program;
    let p = Program::compile("x * 2").unwrap();
    let mut ys = vec![0f64; 2];
    let r = no_panic(std::panic::AssertUnwindSafe(|| p.eval_slice::<f64, f64>(&[1.0, 2.0, 3.0], &mut ys, 0)));
    assert!(r.is_err());
}

#[test]
fn deeply_nested_expression_is_a_typed_error_not_a_stack_overflow() {
    use shmpool::kernel::expr::Program;
    // Run in a thread with the default 2 MiB stack, as a program's non-main thread would.
    let src = format!("{}x{}", "(".repeat(100_000), ")".repeat(100_000));
    let r =
        std::thread::Builder::new().stack_size(2 << 20).spawn(move || Program::compile(&src).is_err()).unwrap().join();
    assert!(r.is_ok());
}

#[test]

fn submit_accepts_a_zip_input() {
    let _serial = common::serial();
    let p = pool();
    let a = [1.0f64, 2.0, 3.0];
    let b = [10.0f32, 20.0, 30.0];
    let r = p.submit(&(&a, &b), |(x, y): (f64, f32)| x + y as f64).and_then(|t| t.wait());
    assert_eq!(r.unwrap(), [11.0, 22.0, 33.0]);
}

#[test]
fn zip_of_strided_ndarray_views_into_a_shared_array() {
    let _serial = common::serial();
    let p = pool();
    let a = Array2::from_shape_vec((4, 5), (0..20).map(|i| i as f64).collect()).unwrap();
    let b = Array2::from_shape_vec((5, 4), (0..20).map(|i| i as f32).collect()).unwrap();
    let at = a.slice(s![..;-1, ..]);
    let bt = b.t();
    let mut out = SharedArray::<f64, _>::zeroed((4, 5)).unwrap();
    p.map_into(&(&at, &bt), &mut out, |(x, y): (f64, f32)| x * 100.0 + y as f64).unwrap();
    let want: Vec<f64> = at.iter().zip(bt.iter()).map(|(x, y)| x * 100.0 + *y as f64).collect();
    assert_eq!(out.view().iter().copied().collect::<Vec<_>>(), want);
    // The zip chunk form and a reduction over the same views.
    let dot = p.map_reduce(&(&at, &bt), 0.0, |(x, y): (f64, f32)| x * y as f64, |u: f64, v: f64| u + v).unwrap();
    assert_eq!(dot, at.iter().zip(bt.iter()).map(|(x, y)| x * *y as f64).sum::<f64>());
}

#[test]
fn map_into_progress_into_a_strided_view() {
    let _serial = common::serial();
    let p = pool();
    let a: Vec<f64> = (0..50).map(|i| i as f64).collect();
    let mut out = Array2::<f64>::zeros((5, 10));
    let mut seen = 0;
    p.map_into_progress(&a, &mut out.view_mut().reversed_axes(), |x: f64| x * 2.0, &mut |n| seen = n).unwrap();
    assert_eq!(seen, 50);
    let want: Vec<f64> = a.iter().map(|x| x * 2.0).collect();
    assert_eq!(out.t().iter().copied().collect::<Vec<_>>(), want);
}

#[test]
fn ticket_wait_into_wrong_length_is_typed() {
    let _serial = common::serial();
    let p = pool();
    let t = p.submit(&[1.0f64, 2.0, 3.0], |x: f64| x).unwrap();
    let mut out = [0.0f64; 2];
    let r = no_panic(std::panic::AssertUnwindSafe(|| t.wait_into(&mut out)));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn huge_row_width_is_typed() {
    let _serial = common::serial();
    let p = pool();
    let k = |r: &[f64], o: &mut [f64]| o[0] = r[0];
    let r = no_panic(std::panic::AssertUnwindSafe(|| p.map(&[1.0f64, 2.0], k.by_rows(usize::MAX, 1))));
    assert!(r.is_err());
    let r = no_panic(std::panic::AssertUnwindSafe(|| p.map(&[1.0f64, 2.0], k.by_rows(1, usize::MAX / 4))));
    assert!(r.is_err());
}

#[test]
fn npy_output_shape_overflow_is_typed() {
    let d = tempfile::tempdir().unwrap();
    let r = no_panic(|| shmpool::NpyOutput::create(d.path().join("o.npy"), Dtype::F64, &[u64::MAX, 3]).map(|_| ()));
    assert!(r.is_err());
    let r = no_panic(|| shmpool::NpyOutput::create(d.path().join("p.npy"), Dtype::F64, &[1 << 62]).map(|_| ()));
    assert!(r.is_err());
}

#[test]
fn a_large_run_time_table_reaches_every_chunk() {
    let _serial = common::serial();
    let p = Pool::builder().workers(2).chunk_len(1000).build().unwrap();
    // 16 MiB of weights: more than a slot's inline payload.
    let table: Vec<f64> = (0..2_000_000).map(|i| i as f64).collect();
    let shared = SharedVec::from_slice(&table).unwrap();
    let idx: Vec<u32> = (0..10_000).map(|i| (i * 197) % 2_000_000).collect();
    let want: Vec<f64> = idx.iter().map(|&i| i as f64).collect();
    let got = p.map(&idx, (|i: u32, t: &[f64]| t[i as usize]).with_table(&shared)).unwrap();
    assert_eq!(got, want);
    let mut out = vec![0.0f64; idx.len()];
    p.map_into(
        &idx,
        &mut out,
        (|i: &[u32], o: &mut [f64], t: &[f64]| {
            for (o, &i) in o.iter_mut().zip(i) {
                *o = t[i as usize];
            }
        })
        .with_table(&table),
    )
    .unwrap();
    assert_eq!(out, want);
}

#[test]
fn row_kernel_over_a_transposed_view_sees_logical_rows() {
    let _serial = common::serial();
    let p = pool();
    let a = Array2::from_shape_vec((3, 7), (0..21).map(|i| i as f64).collect()).unwrap();
    let t = a.t(); // 7 rows of 3, not contiguous
    let got = p.map(&t, (|r: &[f64], o: &mut [f64]| o[0] = r[0] * 100.0 + r[1] * 10.0 + r[2]).by_rows(3, 1)).unwrap();
    let want: Vec<f64> = ndarray::ArrayBase::rows(&t).into_iter().map(|r| r[0] * 100.0 + r[1] * 10.0 + r[2]).collect();
    assert_eq!(got, want);
}

#[test]
fn kernel_panic_in_a_table_kernel_out_of_range_is_typed() {
    let _serial = common::serial();
    let p = pool();
    let t = [1.0f64, 2.0];
    let e = p.map(&[0u32, 5], (|i: u32, t: &[f64]| t[i as usize]).with_table(&t)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Kernel, "{e}");
    // The pool survives.
    assert_eq!(p.map(&[1.0f64], |x: f64| x + 1.0).unwrap(), [2.0]);
}

#[test]
fn imap_over_shared_and_strided_batches_with_a_spec_and_a_chunk_kernel() {
    let _serial = common::serial();
    let p = pool();
    let spec = KernelSpec::chunk(|x: &[f64], y: &mut [f64]| {
        for (y, x) in y.iter_mut().zip(x) {
            *y = x * 3.0;
        }
    });
    let s1 = SharedVec::from_slice(&[1.0f64, 2.0, 3.0]).unwrap();
    let s2 = SharedVec::from_slice(&[4.0f64; 9]).unwrap();
    let got: Vec<Vec<f64>> = p.imap(vec![s1, s2], spec.typed::<f64, f64>().unwrap()).collect::<Result<_>>().unwrap();
    assert_eq!(got, vec![vec![3.0, 6.0, 9.0], vec![12.0; 9]]);
    let a = Array2::from_shape_vec((3, 4), (0..12).map(|i| i as f64).collect()).unwrap();
    let views = vec![a.t(), a.slice(s![.., ..;-2])];
    let want: Vec<Vec<f64>> = views.iter().map(|v| v.iter().map(|x| x * 3.0).collect()).collect();
    let mut got: Vec<Vec<f64>> =
        p.imap_unordered(views, spec.typed::<f64, f64>().unwrap()).collect::<Result<_>>().unwrap();
    got.sort_by_key(|v| v.len());
    let mut want = want;
    want.sort_by_key(|v| v.len());
    assert_eq!(got, want);
}

#[test]
fn submit_into_npy_and_ndarray_element_types_checked_at_run_time() {
    let _serial = common::serial();
    let p = pool();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("f32.npy");
    {
        let mut o = shmpool::NpyOutput::create(&path, Dtype::F32, &[4]).unwrap();
        o.as_mut_slice::<f32>().unwrap().copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        o.commit().unwrap();
    }
    // SAFETY: the test's own file, which nothing else writes.
    let npy = unsafe { shmpool::NpyArray::open(&path) }.unwrap();
    // An f64 kernel on f32 data: typed, never a panic.
    let e = no_panic(std::panic::AssertUnwindSafe(|| p.map(&npy, |x: f64| x).unwrap_err()));
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    let e = no_panic(std::panic::AssertUnwindSafe(|| p.submit(&npy, |x: f64| x).map(|_| ()).unwrap_err()));
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    assert_eq!(p.map(&npy, |x: f32| x * 2.0).unwrap(), [2.0, 4.0, 6.0, 8.0]);
    let mut out = shmpool::NpyOutput::create(d.path().join("o.npy"), Dtype::F64, &[4]).unwrap();
    p.map_into(&npy, &mut out, |x: f32| f64::from(x) + 0.5).unwrap();
    assert_eq!(out.as_mut_slice::<f64>().unwrap(), [1.5, 2.5, 3.5, 4.5]);
    let e = no_panic(std::panic::AssertUnwindSafe(|| p.map_into(&npy, &mut out, |x: f32| x).unwrap_err()));
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
}

/// The expression error travels as a code that only the crate's trampolines can raise (no
/// message is read back): a closure panicking with numpy's words stays a plain kernel panic.
#[test]
fn a_plain_kernel_panic_is_not_retyped_as_an_expression_error_by_its_message() {
    let _serial = common::serial();
    let p = pool();
    let e = p
        .map(&[1.0f64], |_: f64| -> f64 { panic!("integers to negative integer powers are not allowed") })
        .unwrap_err();
    assert!(matches!(e, Error::KernelPanicked { .. }), "a closure's panic was typed by its message: {e:?}");
    let e = p.map(&[1.0f64], |_: f64| -> f64 { std::panic::panic_any(1u32) }).unwrap_err();
    assert!(matches!(e, Error::KernelPanicked { .. }), "a closure's panic with a code: {e:?}");
}

#[test]
fn empty_and_zero_dimensional_shared_arrays() {
    let _serial = common::serial();
    let p = pool();
    let empty = no_panic(|| SharedArray::<f64, _>::zeroed((0, 3)).map(|a| a.view().len()));
    if let Ok(n) = empty {
        assert_eq!(n, 0);
    }
    let mut zero_d = SharedArray::<f64, _>::zeroed(ndarray::IxDyn(&[])).unwrap();
    p.map_into(&ndarray::arr0(4.0f64), &mut zero_d, |x: f64| x.sqrt()).unwrap();
    assert_eq!(zero_d.view().into_iter().copied().collect::<Vec<_>>(), [2.0]);
    let mut none = Array2::<f64>::zeros((0, 4));
    let input = Array2::<f64>::zeros((4, 0));
    p.map_into(&input.t(), &mut none.view_mut(), |x: f64| x).unwrap();
    let mut mismatched = Array2::<f64>::zeros((2, 2));
    let e = p.map_into(&[1.0f64, 2.0, 3.0], &mut mismatched, |x: f64| x).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
}

#[test]
fn mutated_npy_headers_never_panic() {
    use rand::{Rng, SeedableRng};
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good.npy");
    {
        let mut o = shmpool::NpyOutput::create(&good, Dtype::F64, &[3, 2]).unwrap();
        o.as_mut_slice::<f64>().unwrap().copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        o.commit().unwrap();
    }
    let bytes = std::fs::read(&good).unwrap();
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1515);
    let path = d.path().join("bad.npy");
    let pool = pool();
    for i in 0..600 {
        let mut b = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..header_end);
            b[at] = b"0123456789(),:' {}<>fi8x-\n\x00\xff"[rng.gen_range(0..27)];
        }
        if i % 5 == 0 {
            b.truncate(rng.gen_range(0..b.len()));
        }
        std::fs::write(&path, &b).unwrap();
        // SAFETY: the test's own file, which nothing else writes.
        let r = no_panic(|| unsafe { shmpool::NpyArray::open(&path) }.map(|_| ()));
        if r.is_ok() {
            // SAFETY: as above.
            let a = unsafe { shmpool::NpyArray::open(&path) }.unwrap();
            let _ = no_panic(std::panic::AssertUnwindSafe(|| pool.map(&a, |x: f64| x).map(|_| ())));
        }
    }
}

#[test]
fn reductions_over_npy_strided_views_and_shared_arrays() {
    let _serial = common::serial();
    let p = pool();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("i32.npy");
    {
        let mut o = shmpool::NpyOutput::create(&path, Dtype::I32, &[5]).unwrap();
        o.as_mut_slice::<i32>().unwrap().copy_from_slice(&[1, 2, 3, 4, 5]);
        o.commit().unwrap();
    }
    // SAFETY: the test's own file, which nothing else writes.
    let npy = unsafe { shmpool::NpyArray::open(&path) }.unwrap();
    let add = |a: i64, b: i64| a + b;
    assert_eq!(p.map_reduce(&npy, 0i64, |x: i32| i64::from(x), add).unwrap(), 15);
    let e = p.map_reduce(&npy, 0.0f64, |x: f64| x, |a: f64, b: f64| a + b).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    let a = Array2::from_shape_vec((3, 4), (0..12).map(|i| i as f64).collect()).unwrap();
    let v = a.slice(s![..;-1, 1..;2]);
    let sum = p.reduce(&v, 0.0, |s: f64, x: &[f64]| s + x.iter().sum::<f64>(), |a: f64, b: f64| a + b).unwrap();
    assert_eq!(sum, v.sum());
    let shared = SharedArray::from_array(&a).unwrap();
    let max = p.map_reduce(&shared, f64::MIN, |x: f64| x, f64::max).unwrap();
    assert_eq!(max, 11.0);
}
