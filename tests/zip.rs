//! Zip maps: one kernel over several inputs read together (a tuple of inputs), over slices,
//! `SharedVec`s, `.npy` files and ndarray views, element and chunk kernels. Every result is
//! checked against a serial loop; workers killed mid-chunk cost a retry, never a wrong value.

mod common;

use std::time::Duration;

use ndarray::{s, Array1, Array2};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmpool::testing::PausePoint;
use shmpool::{Dtype, Error, NpyArray, NpyOutput, Pool, SharedVec};

fn f64s(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i % 997) as f64 * 0.5 - 100.0).collect()
}
fn f32s(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 13) as f32 + 0.25).collect()
}
fn i32s(n: usize) -> Vec<i32> {
    (0..n).map(|i| (i % 101) as i32 - 50).collect()
}

fn axpy((a, b, c): (f64, f32, i32)) -> f64 {
    a * b as f64 + c as f64
}

fn serial(a: &[f64], b: &[f32], c: &[i32]) -> Vec<f64> {
    a.iter().zip(b).zip(c).map(|((&a, &b), &c)| axpy((a, b, c))).collect()
}

#[test]
fn three_shared_inputs_feed_a_chunk_kernel_in_place() {
    let n = 300_001;
    let pool = Pool::new(2).unwrap();
    let (a, b, c) = (f64s(n), f32s(n), i32s(n));
    let (sa, sb, sc) =
        (SharedVec::from_slice(&a).unwrap(), SharedVec::from_slice(&b).unwrap(), SharedVec::from_slice(&c).unwrap());
    let mut out = pool.alloc::<f64>(n).unwrap();
    pool.map_into(&(&sa, &sb, &sc), &mut out, |(a, b, c): (&[f64], &[f32], &[i32]), y: &mut [f64]| {
        for k in 0..y.len() {
            y[k] = axpy((a[k], b[k], c[k]));
        }
    })
    .unwrap();
    assert_eq!(&out[..], &serial(&a, &b, &c)[..]);
}

#[test]
fn element_kernels_over_slices_and_shared_vecs_mixed_return_a_vec() {
    let n = 100_000;
    let pool = Pool::new(2).unwrap();
    let (a, b, c) = (f64s(n), f32s(n), i32s(n));
    let sb = SharedVec::from_slice(&b).unwrap();
    let ys = pool.map(&(&a[..], &sb, &c), axpy).unwrap();
    assert_eq!(ys, serial(&a, &b, &c));
    // Two and four inputs, small enough to have travelled inline in the one-input path.
    let small = pool.map(&(&[1u8, 2, 3], &[10u16, 20, 30]), |(x, y): (u8, u16)| x as u32 * y as u32).unwrap();
    assert_eq!(small, [10, 40, 90]);
    let four = pool
        .map(&(&a[..5], &b[..5], &c[..5], &a[..5]), |(p, q, r, s): (f64, f32, i32, f64)| p + q as f64 + r as f64 - s)
        .unwrap();
    let want: Vec<f64> = (0..5).map(|k| a[k] + b[k] as f64 + c[k] as f64 - a[k]).collect();
    assert_eq!(four, want);
}

#[test]
fn npy_files_are_zipped_in_place_into_an_npy_output() {
    let n = 200_000;
    let pool = Pool::new(2).unwrap();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (f64s(n), f64s(n).iter().map(|x| x * 3.0 + 1.0).collect::<Vec<_>>());
    for (name, data) in [("a.npy", &a), ("b.npy", &b)] {
        let mut o = NpyOutput::create(d.path().join(name), Dtype::F64, &[n as u64]).unwrap();
        pool.map_into(&data[..], &mut o, |x: f64| x).unwrap();
        o.commit().unwrap();
    }
    // SAFETY: the files are this test's own; nothing else writes them while they are open.
    let (fa, fb) =
        unsafe { (NpyArray::open(d.path().join("a.npy")).unwrap(), NpyArray::open(d.path().join("b.npy")).unwrap()) };
    let mut o = NpyOutput::create(d.path().join("y.npy"), Dtype::F64, &[n as u64]).unwrap();
    pool.map_into(&(&fa, &fb), &mut o, |(x, y): (f64, f64)| x * y + 2.0).unwrap();
    o.commit().unwrap();
    // SAFETY: as above.
    let y = unsafe { NpyArray::open(d.path().join("y.npy")).unwrap() };
    let got: Vec<f64> = pool.map(&y, |v: f64| v).unwrap();
    let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y + 2.0).collect();
    assert_eq!(got, want);
    // A file whose dtype is not the kernel's is refused with both sides named.
    let e = pool.map(&(&fa, &fb), |(x, y): (f32, f64)| x as f64 + y).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
}

#[test]
fn ndarray_views_zip_in_row_major_order() {
    let pool = Pool::new(2).unwrap();
    let m = Array2::from_shape_fn((40, 30), |(i, j)| (i * 30 + j) as f64);
    let t = m.t();
    let v = Array1::from_shape_fn(1200, |k| k as f64 * 0.5);
    let ys = pool.map(&(&t, &v.slice(s![..])), |(x, w): (f64, f64)| x - w).unwrap();
    let want: Vec<f64> = t.iter().zip(v.iter()).map(|(x, w)| x - w).collect();
    assert_eq!(ys, want);
}

#[test]
fn inputs_of_different_lengths_are_a_typed_error() {
    let pool = Pool::new(1).unwrap();
    let e = pool.map(&(&[1.0f64, 2.0, 3.0], &[1.0f64, 2.0]), |(x, y): (f64, f64)| x + y).unwrap_err();
    assert!(matches!(e, Error::InputLengths { first: 3, input: 1, len: 2 }), "{e}");
    let mut out = [0.0f64; 2];
    let e =
        pool.map_into(&(&[1.0f64, 2.0, 3.0], &[1.0f64, 2.0, 3.0]), &mut out, |(x, y): (f64, f64)| x + y).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { input: 3, output: 2 }), "{e}");
    let e = pool.submit(&(&[1.0f64], &[1.0f64, 2.0]), |(x, y): (f64, f64)| x + y).unwrap_err();
    assert!(matches!(e, Error::InputLengths { first: 1, input: 1, len: 2 }), "{e}");
    let r: Vec<_> = pool.imap(vec![(vec![1.0f64], vec![1.0f64, 2.0])], |(x, y): (f64, f64)| x + y).collect();
    assert!(matches!(r[0], Err(Error::InputLengths { .. })), "{r:?}");
}

#[test]
fn submit_and_imap_take_tuples_of_inputs_inline_staged_and_shared() {
    let _s = common::serial();
    let pool = Pool::builder().workers(2).chunk_len(1000).build().unwrap();
    let n = 50_001;
    let (a, b) = (f64s(n), f32s(n));
    let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * f64::from(*y)).collect();
    let k = |(x, y): (f64, f32)| x * f64::from(y);
    // Large plain inputs, copied at submit: changing them afterwards changes nothing.
    let (mut a2, b2) = (a.clone(), SharedVec::from_slice(&b).unwrap());
    let t = pool.submit(&(&a2, &b2), k).unwrap();
    a2.iter_mut().for_each(|x| *x = 0.0);
    assert_eq!(t.wait().unwrap(), want);
    // Small inputs, a chunk kernel with parameters, three inputs.
    let k3 = |(x, y, z): (&[f64], &[f32], &[i32]), o: &mut [f64], p: &f64| {
        for (k, o) in o.iter_mut().enumerate() {
            *o = x[k] + f64::from(y[k]) + f64::from(z[k]) * p;
        }
    };
    let t = pool.submit(&(&[1.0f64, 2.0], &[0.5f32, 0.25], &[3i32, 4]), shmpool::KernelExt::with(k3, 10.0f64));
    assert_eq!(t.unwrap().wait().unwrap(), [31.5, 42.25]);
    let empty: [f64; 0] = [];
    assert!(pool.submit(&(&empty, &empty), |(x, y): (f64, f64)| x + y).unwrap().wait().unwrap().is_empty());
    // imap and imap_unordered over batches of pairs, in order and not.
    let batches: Vec<(Vec<f64>, Vec<f32>)> =
        (0..5).map(|i| (a[i * 1000..(i + 1) * 1000 + i].to_vec(), b[i * 1000..(i + 1) * 1000 + i].to_vec())).collect();
    let wants: Vec<Vec<f64>> =
        batches.iter().map(|(x, y)| x.iter().zip(y).map(|(x, y)| x * f64::from(*y)).collect()).collect();
    let got: Vec<Vec<f64>> = pool.imap(batches.iter().map(|(x, y)| (x, y)), k).collect::<shmpool::Result<_>>().unwrap();
    assert_eq!(got, wants);
    let mut got: Vec<Vec<f64>> =
        pool.imap_unordered(batches.iter().map(|(x, y)| (x, y)), k).collect::<shmpool::Result<_>>().unwrap();
    got.sort_by_key(Vec::len);
    assert_eq!(got, wants);
    drop(pool);
    common::assert_nothing_leaked();
}

#[test]
fn empty_inputs_give_an_empty_result() {
    let pool = Pool::new(1).unwrap();
    let e: [f64; 0] = [];
    assert!(pool.map(&(&e, &e), |(x, y): (f64, f64)| x + y).unwrap().is_empty());
}

#[test]
fn a_panicking_zip_kernel_is_reported_and_the_pool_survives() {
    let pool = Pool::new(1).unwrap();
    let e = pool.map(&(&[1.0f64, -1.0], &[1.0f64, 1.0]), |(x, y): (f64, f64)| {
        assert!(x > 0.0, "negative input");
        x + y
    });
    assert!(matches!(e, Err(Error::KernelPanicked { .. })), "{e:?}");
    assert_eq!(pool.map(&(&[1.0f64], &[2.0f64]), |(x, y): (f64, f64)| x + y).unwrap(), [3.0]);
}

/// The zip header travels in the parameter block, outside the descriptor's MAC; its keyed
/// digest in the descriptor makes a header changed in shared memory (here: the element size of
/// the second input, which would make the worker slice another range) a corrupt slot, reported
/// as such, rather than a kernel that reads what the header now says.
#[test]
fn a_scribbled_zip_header_is_corruption() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let n = 1000;
        let pool = Pool::builder().workers(1).slots(1).pause_point(PausePoint::BeforeClaim).build().unwrap();
        let (sa, sb) = (SharedVec::from_slice(&f64s(n)).unwrap(), SharedVec::from_slice(&f64s(n)).unwrap());
        let mut out = pool.alloc::<f64>(n).unwrap();
        let fd = pool.ring_fd_for_test().try_clone_to_owned().unwrap();
        // SAFETY: test only: we deliberately scribble into memory the pool shares.
        let mut ring = unsafe { memmap2::MmapMut::map_mut(&std::fs::File::from(fd)) }.unwrap();
        let slot = pool.slot_offsets_for_test()[0];
        let worker = pool.pids()[0];
        let r = std::thread::scope(|s| {
            let h = s.spawn(|| pool.map_into(&(&sa, &sb), &mut out, |(x, y): (f64, f64)| x + y));
            // The worker stops before it claims; the caller fills the one slot meanwhile.
            while common::proc_state(worker) != Some('T') || ring[slot..slot + 4] != 1u32.to_ne_bytes() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Payload after the 64-byte slot header, the 128-byte descriptor and the 192-byte
            // message: count, then [segment, element size, block, total] per extra input.
            let elem_size = slot + 384 + 16;
            assert_eq!(ring[elem_size..elem_size + 8], 8u64.to_le_bytes(), "the header as documented");
            ring[elem_size..elem_size + 8].copy_from_slice(&4u64.to_le_bytes());
            let _ = kill(Pid::from_raw(worker as i32), Signal::SIGCONT);
            h.join().unwrap()
        });
        match r {
            Err(Error::CorruptSlot { reason, .. }) => assert!(reason.contains("zip header"), "{reason}"),
            other => panic!("expected a corrupt slot, got {other:?}"),
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn workers_killed_mid_chunk_redo_their_chunk_exactly() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let n = 400_000;
        let pool = Pool::builder().workers(2).chunk_len(40_000).pause_point(PausePoint::MidKernel).build().unwrap();
        let (a, b, c) = (f64s(n), f32s(n), i32s(n));
        let (sa, sb, sc) = (
            SharedVec::from_slice(&a).unwrap(),
            SharedVec::from_slice(&b).unwrap(),
            SharedVec::from_slice(&c).unwrap(),
        );
        let mut out = pool.alloc::<f64>(n).unwrap();
        let (r, killed) = common::with_paused_killed(&pool, || pool.map_into(&(&sa, &sb, &sc), &mut out, axpy));
        r.unwrap();
        assert!(killed >= 1, "no worker paused mid-kernel");
        assert_eq!(&out[..], &serial(&a, &b, &c)[..]);
    });
    common::assert_nothing_leaked();
}

#[test]
fn zip_kernels_take_a_parameter_block() {
    use shmpool::KernelExt;
    let pool = Pool::new(2).unwrap();
    let (a, b) = (f64s(70_000), f32s(70_000));
    let ys =
        pool.map(&(&a, &b), (|(x, y): (f64, f32), k: &[f64; 2]| x * k[0] + y as f64 * k[1]).with([2.0, -1.0])).unwrap();
    let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * 2.0 - *y as f64).collect();
    assert_eq!(ys, want);
    let chunk = |(x, y): (&[f64], &[f32]), out: &mut [f64], k: &f64| {
        for i in 0..out.len() {
            out[i] = x[i] + y[i] as f64 * k;
        }
    };
    let mut out = vec![0.0; a.len()];
    pool.map_into(&(&a, &b), &mut out, chunk.with(0.5)).unwrap();
    assert_eq!(out, a.iter().zip(&b).map(|(x, y)| x + *y as f64 * 0.5).collect::<Vec<_>>());
}

#[test]
fn zip_maps_and_reductions_run_on_every_start_method() {
    use shmpool::StartMethod;
    let (a, b, c) = (f64s(50_000), f32s(50_000), i32s(50_000));
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
        assert_eq!(pool.map(&(&a, &b, &c), axpy).unwrap(), serial(&a, &b, &c), "{method:?}");
        let dot = pool.map_reduce(&(&a, &a), 0.0, |(x, y): (f64, f64)| x * y, |p: f64, q: f64| p + q).unwrap();
        let one = Pool::new(1).unwrap().map_reduce(&a, 0.0, |x: f64| x * x, |p: f64, q: f64| p + q).unwrap();
        assert_eq!(dot.to_bits(), one.to_bits(), "{method:?}");
    }
}
