//! `Pool::map_into_progress` on files, and a progress callback that panics.
//!
//! In its own test binary on purpose: a panic in one thread while another thread forks can leave
//! the child with std's panic-output lock held (the multi-threaded fork hazard), so no other test
//! of this process may fork workers while this one panics.

mod common;

use shmpool::Pool;
#[test]
fn npy_files_map_in_place_and_a_panicking_progress_callback_stops_the_map_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("in.npy");
    let mut out = shmpool::NpyOutput::create(&src, shmpool::Dtype::F64, &[200_000]).unwrap();
    common::workloads::fill_pattern(out.as_mut_slice::<f64>().unwrap(), 0);
    out.commit().unwrap();
    // SAFETY: the file is this test's own; nothing else writes or truncates it.
    let input = unsafe { shmpool::NpyArray::open(&src) }.unwrap();
    let spec = shmpool::KernelSpec::chunk(common::workloads::w1_chunk);
    let pool = Pool::builder().workers(2).chunk_len(10_000).build().unwrap();

    let mut dst = shmpool::NpyOutput::create(d.path().join("out.npy"), shmpool::Dtype::F64, &[200_000]).unwrap();
    let mut seen = 0;
    pool.map_into_progress(&input, &mut dst, &spec, &mut |n| seen = n).unwrap();
    assert_eq!(seen, 200_000);
    let ys = dst.as_slice::<f64>().unwrap().to_vec();
    assert!(input.as_slice::<f64>().unwrap().iter().zip(&ys).all(|(x, y)| common::workloads::w1(*x) == *y));
    dst.commit().unwrap();

    let mut dst = shmpool::NpyOutput::create(d.path().join("never.npy"), shmpool::Dtype::F64, &[200_000]).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = pool.map_into_progress(&input, &mut dst, &spec, &mut |_| panic!("progress bar broke"));
    }));
    assert!(r.is_err(), "the callback's panic reaches the caller");
    drop(dst);
    assert!(!d.path().join("never.npy").exists());
    assert_eq!(pool.map(&[1.0f64], common::workloads::w1).unwrap(), [1.75]);
}
