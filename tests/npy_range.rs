//! Mapping a range of a `.npy` file into a range of an output (`NpyArray::range`,
//! `NpyOutput::range` with `map_into`), an output other processes write parts of
//! (`NpyOutput::create_shared` / `open_part`), and maps whose kernel sees shifted indices
//! (`KernelSpec::index_offset`): the pieces MPI ranks (shmpool-mpi) build one output from.

mod common;

use shmpool::kernel::expr::Program;
use shmpool::{Dtype, Error, KernelSpec, NpyArray, NpyOutput, Pool, SharedVec};

/// Writes `xs` as a `.npy` file of `shape`.
fn save_i32(path: &std::path::Path, shape: &[u64], xs: &[i32]) {
    let mut out = NpyOutput::create(path, Dtype::I32, shape).unwrap();
    out.as_mut_slice::<i32>().unwrap().copy_from_slice(xs);
    out.commit().unwrap();
}

fn open(path: &std::path::Path) -> NpyArray {
    // SAFETY: the test's own temporary file; nothing else writes it.
    unsafe { NpyArray::open(path) }.unwrap()
}

fn hidden_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn ranges_mapped_by_separate_parts_give_the_whole_files_map_byte_for_byte() {
    let _s = common::serial();
    let d = tempfile::tempdir().unwrap();
    let (rows, cols) = (37u64, 1001u64);
    let n = (rows * cols) as usize;
    let xs: Vec<i32> = (0..n as i32).map(|k| k.wrapping_mul(7919) % 100_003 - 50_000).collect();
    save_i32(&d.path().join("x.npy"), &[rows, cols], &xs);
    let src = open(&d.path().join("x.npy"));
    let program = Program::compile_for("x * 3 + i % 11", Dtype::I32).unwrap();
    let out_dtype = program.output_dtype();
    let spec = KernelSpec::expr_for(&program, Dtype::I32, out_dtype).unwrap();
    let pool = Pool::new(2).unwrap();

    let mut whole = NpyOutput::create(d.path().join("whole.npy"), out_dtype, src.shape()).unwrap();
    pool.map_into(&src, &mut whole, &spec).unwrap();
    whole.commit().unwrap();

    // One creator, two parts opened by name, three uneven ranges (one of them empty).
    // SAFETY: the name is used only to open the parts below.
    let (creator, temp) =
        unsafe { NpyOutput::create_shared(d.path().join("parts.npy"), out_dtype, src.shape()) }.unwrap();
    assert!(temp.exists());
    let cuts = [0, 1, 1, 20_000, n];
    for w in cuts.windows(2) {
        let mut done = 0;
        // SAFETY: each part writes only its own range, and no slice of the file is held.
        let mut part = unsafe { NpyOutput::open_part(&temp, out_dtype, src.shape()) }.unwrap();
        let mut progress = |k: usize| done = done.max(k);
        let (input, spec) = (src.range(w[0]..w[1]).unwrap(), spec.index_offset(w[0] as u64));
        pool.map_into_progress(&input, &mut part.range(w[0]..w[1]).unwrap(), &spec, &mut progress).unwrap();
        part.commit().unwrap();
        assert!(temp.exists(), "a part never publishes nor removes the file");
        assert!(done <= w[1] - w[0], "progress counts the elements of the range: {done} of {w:?}");
    }
    creator.commit().unwrap();
    assert!(!temp.exists());
    let a = std::fs::read(d.path().join("whole.npy")).unwrap();
    let b = std::fs::read(d.path().join("parts.npy")).unwrap();
    assert!(a == b, "the parts' file differs from the whole map's");
    assert!(hidden_files(d.path()).is_empty());
    drop((src, pool));
    common::assert_nothing_leaked();
}

#[test]
fn a_range_outside_the_arrays_is_refused_before_anything_runs() {
    let _s = common::serial();
    let d = tempfile::tempdir().unwrap();
    save_i32(&d.path().join("x.npy"), &[10], &[1; 10]);
    let src = open(&d.path().join("x.npy"));
    let spec = KernelSpec::expr_for(&Program::compile_for("x", Dtype::I32).unwrap(), Dtype::I32, Dtype::I32).unwrap();
    let mut out = NpyOutput::create(d.path().join("y.npy"), Dtype::I32, &[10]).unwrap();
    let pool = Pool::new(1).unwrap();
    let past = src.range(5..11).map(|_| ());
    assert!(matches!(past, Err(Error::InvalidOption { option: "range end", value: 11, .. })), "{past:?}");
    let past = out.range(5..11).map(|_| ());
    assert!(matches!(past, Err(Error::InvalidOption { option: "range end", value: 11, .. })), "{past:?}");
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = src.range(6..5).map(|_| ());
    assert!(matches!(reversed, Err(Error::InvalidOption { option: "range start", value: 6, .. })), "{reversed:?}");
    // Ranges of different lengths: the map's length check.
    let e = pool.map_into(&src.range(0..5).unwrap(), &mut out.range(0..4).unwrap(), &spec).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
    assert_eq!(out.as_slice::<i32>().unwrap(), &[0; 10], "nothing was written");
    drop((src, out, pool));
    common::assert_nothing_leaked();
}

#[test]
fn an_unpublished_shared_output_leaves_nothing_on_disk() {
    let d = tempfile::tempdir().unwrap();
    // SAFETY: the name is used only to open a part and to check what is on disk.
    let (creator, temp) = unsafe { NpyOutput::create_shared(d.path().join("y.npy"), Dtype::F64, &[3, 4]) }.unwrap();
    assert_eq!(temp.parent(), Some(d.path()), "the temporary lives in the output's directory");
    // SAFETY: nothing writes the file.
    let part = unsafe { NpyOutput::open_part(&temp, Dtype::F64, &[3, 4]) }.unwrap();
    drop(part);
    assert!(temp.exists(), "dropping a part keeps the creator's file");
    drop(creator);
    assert!(std::fs::read_dir(d.path()).unwrap().next().is_none(), "debris left: {:?}", hidden_files(d.path()));
}

#[test]
fn a_part_with_another_dtype_or_shape_than_the_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    // SAFETY: the name is used only to open a part and to check what is on disk.
    let (_creator, temp) = unsafe { NpyOutput::create_shared(d.path().join("y.npy"), Dtype::F64, &[3, 4]) }.unwrap();
    for (dtype, shape) in [(Dtype::F32, &[3u64, 4][..]), (Dtype::F64, &[4, 3][..]), (Dtype::F64, &[12][..])] {
        // SAFETY: nothing writes the file.
        let r = unsafe { NpyOutput::open_part(&temp, dtype, shape) };
        assert!(matches!(r, Err(Error::BadNpy { .. })), "{dtype} {shape:?}: {:?}", r.map(|_| ()));
    }
    // SAFETY: as above.
    let missing = unsafe { NpyOutput::open_part(d.path().join("nope"), Dtype::F64, &[3, 4]) };
    assert!(matches!(missing, Err(Error::File { op: "open", .. })));
}

#[test]
fn an_indexed_map_shows_the_kernel_shifted_indices() {
    let _s = common::serial();
    let spec = KernelSpec::expr::<f64, f64>(&Program::compile("x + i").unwrap()).unwrap();
    let n = 200_000;
    let xs = SharedVec::from_slice(&vec![0.25f64; n]).unwrap();
    let mut ys = SharedVec::<f64>::zeroed(n).unwrap();
    let pool = Pool::new(2).unwrap();
    pool.map_into(&xs, &mut ys, &spec.index_offset(1_000_000)).unwrap();
    assert!(ys.iter().enumerate().all(|(k, &y)| y == 1_000_000.25 + k as f64));
    // Every path sees the offset: inline slots, staging, a ticket; the spec itself is unchanged.
    let small = [0.5f64; 5];
    let want: Vec<f64> = (0..5).map(|k| 7.5 + k as f64).collect();
    let shifted = spec.index_offset(7);
    assert_eq!(pool.map(&small, shifted.typed::<f64, f64>().unwrap()).unwrap(), want);
    assert_eq!(pool.submit(&small, shifted.typed::<f64, f64>().unwrap()).unwrap().wait().unwrap(), want);
    let big: Vec<f64> = pool.map(&xs[..], shifted.typed::<f64, f64>().unwrap()).unwrap();
    assert!(big.iter().enumerate().all(|(k, &y)| y == 7.25 + k as f64));
    assert_eq!(pool.map(&small, spec.typed::<f64, f64>().unwrap()).unwrap()[1], 1.5);
    drop((xs, ys, pool));
    common::assert_nothing_leaked();
}

#[test]
fn ranges_that_do_not_line_up_are_copied_and_still_map_the_right_elements() {
    let _s = common::serial();
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<i32> = (0..100).collect();
    save_i32(&d.path().join("x.npy"), &[100], &xs);
    let src = open(&d.path().join("x.npy"));
    let mut out = NpyOutput::create(d.path().join("y.npy"), Dtype::I64, &[100]).unwrap();
    let pool = Pool::new(2).unwrap();
    let k = |x: i32| i64::from(x) * 10;
    // Input elements 10..30 into output elements 50..70; a plain slice into 0..5; a range into a Vec.
    pool.map_into(&src.range(10..30).unwrap(), &mut out.range(50..70).unwrap(), k).unwrap();
    pool.map_into(&[1i32, 2, 3, 4, 5], &mut out.range(0..5).unwrap(), k).unwrap();
    // A whole shared input into a range that does not start at 0.
    let small = SharedVec::from_slice(&[7i32, 8]).unwrap();
    pool.map_into(&small, &mut out.range(80..82).unwrap(), k).unwrap();
    let mut plain = vec![0i64; 3];
    pool.map_into(&src.range(97..100).unwrap(), &mut plain, k).unwrap();
    assert_eq!(plain, [970, 980, 990]);
    assert_eq!(pool.map(&src.range(3..6).unwrap(), k).unwrap(), [30, 40, 50]);
    let o = out.as_slice::<i64>().unwrap();
    assert_eq!(&o[..6], &[10, 20, 30, 40, 50, 0]);
    assert_eq!(o[50], 100);
    assert_eq!(o[69], 290);
    assert_eq!(o[70], 0);
    assert_eq!(&o[79..83], &[0, 70, 80, 0]);
    assert!(o[5..50].iter().all(|&v| v == 0));
    // A zip map reads a range as a copy; it cannot write into a range of an output.
    let got = pool.map(&(&src.range(1..4).unwrap(), &[1i32, 1, 1]), |(a, b): (i32, i32)| a + b).unwrap();
    assert_eq!(got, [2, 3, 4]);
    let e = pool.map_into(&(&[1i32], &[2i32]), &mut out.range(9..10).unwrap(), |(a, b): (i32, i32)| i64::from(a + b));
    assert!(matches!(e, Err(Error::InvalidOption { .. })), "{e:?}");
    drop((src, out, pool));
    common::assert_nothing_leaked();
}

#[test]
fn a_shared_output_in_a_missing_directory_names_the_directory_and_the_os_error_alone() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("no/such");
    // SAFETY: nothing is created, so no name is used.
    let Err(e) = (unsafe { NpyOutput::create_shared(dir.join("y.npy"), Dtype::F64, &[3]) }) else { panic!("created") };
    assert!(matches!(e, Error::File { op: "create a file in", .. }), "{e:?}");
    let plain = NpyOutput::create(dir.join("y.npy"), Dtype::F64, &[3]).err().unwrap();
    let chain = |e: &dyn std::error::Error| format!("{e}: {}", e.source().map(|s| s.to_string()).unwrap_or_default());
    assert_eq!(chain(&e), chain(&plain), "the same message as an unnamed output's");
    assert!(!chain(&e).contains("at path"), "{}", chain(&e));
}

#[test]
fn a_shared_output_takes_any_name_the_filesystem_takes_its_temporary_included() {
    let d = tempfile::tempdir().unwrap();
    // 250 bytes: below NAME_MAX (255), though `.NAME.XXXXXX.tmp` would not be.
    let out = d.path().join(format!("{}.npy", "a".repeat(246)));
    // SAFETY: the name is used only to check where the temporary is.
    let (creator, temp) = unsafe { NpyOutput::create_shared(&out, Dtype::F64, &[3]) }.unwrap();
    assert_eq!(temp.parent(), Some(d.path()), "the temporary lives in the output's directory");
    assert!(temp.file_name().unwrap().len() <= 255, "{temp:?}");
    creator.commit().unwrap();
    assert!(out.exists() && !temp.exists());
}
