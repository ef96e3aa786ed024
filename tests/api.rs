//! The folded map API: every kernel form (element, chunk, indexed, `.with`, `.with_table`,
//! both, `.rows`, `KernelSpec`) with every data form (slice, `Vec`, array, `SharedVec`,
//! `.npy`) through every verb (`map`, `map_into`, `submit`, `imap`, `imap_unordered`); the
//! ticket's `try_wait` shape; errors by kind.

mod common;

use shmpool::prelude::*;
use shmpool::{Dtype, NpyArray, NpyOutput};

fn double(x: f64) -> f64 {
    x * 2.0
}

fn double_chunk(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x * 2.0;
    }
}

fn sequence(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 * 0.5 - 7.0).collect()
}

#[test]
fn every_kernel_form_gives_the_same_results_through_map() {
    let _serial = common::serial();
    let pool = Pool::new(2).unwrap();
    for n in [0, 1, 7, 5_000, 200_000] {
        let xs = sequence(n);
        let want: Vec<f64> = xs.iter().map(|x| x * 2.0).collect();
        assert_eq!(pool.map(&xs, double).unwrap(), want, "elem fn, n={n}");
        assert_eq!(pool.map(&xs, |x: f64| x * 2.0).unwrap(), want, "elem closure, n={n}");
        assert_eq!(pool.map(&xs, double_chunk).unwrap(), want, "chunk fn, n={n}");
        let indexed = |x: &[f64], y: &mut [f64], start: u64| {
            for (k, (y, x)) in y.iter_mut().zip(x).enumerate() {
                // The flat index of each element reaches the kernel.
                *y = if (start as usize + k) < usize::MAX { x * 2.0 } else { 0.0 };
            }
        };
        assert_eq!(pool.map(&xs, indexed).unwrap(), want, "indexed, n={n}");
        assert_eq!(pool.map(&xs, (|x: f64, k: &f64| x * k).with(2.0)).unwrap(), want, "elem with, n={n}");
        let chunk_with = |x: &[f64], y: &mut [f64], k: &f64| {
            for (y, x) in y.iter_mut().zip(x) {
                *y = x * k;
            }
        };
        assert_eq!(pool.map(&xs, chunk_with.with(2.0)).unwrap(), want, "chunk with, n={n}");
        let table = [0.0, 2.0];
        assert_eq!(pool.map(&xs, (|x: f64, t: &[f64]| x * t[1]).with_table(&table)).unwrap(), want, "elem table");
        let chunk_table = |x: &[f64], y: &mut [f64], t: &[f64]| {
            for (y, x) in y.iter_mut().zip(x) {
                *y = x * t[1];
            }
        };
        assert_eq!(pool.map(&xs, chunk_table.with_table(&table)).unwrap(), want, "chunk table, n={n}");
        let both = (|x: f64, k: &f64, t: &[f64]| x * k * t[1]).with(1.0).with_table(&table);
        assert_eq!(pool.map(&xs, both).unwrap(), want, "elem both, n={n}");
        let chunk_both = |x: &[f64], y: &mut [f64], k: &f64, t: &[f64]| {
            for (y, x) in y.iter_mut().zip(x) {
                *y = x * k * t[1];
            }
        };
        assert_eq!(pool.map(&xs, chunk_both.with(1.0).with_table(&table)).unwrap(), want, "chunk both, n={n}");
        let spec = KernelSpec::chunk(double_chunk);
        assert_eq!(pool.map(&xs, spec.typed::<f64, f64>().unwrap()).unwrap(), want, "spec, n={n}");
    }
}

#[test]
fn every_data_form_works_as_input_and_output() {
    let _serial = common::serial();
    let pool = Pool::new(2).unwrap();
    for n in [3, 100_000] {
        let xs = sequence(n);
        let want: Vec<f64> = xs.iter().map(|x| x * 2.0).collect();
        let shared = SharedVec::from_slice(&xs).unwrap();
        // Inputs into a returned Vec.
        assert_eq!(pool.map(&xs[..], double).unwrap(), want);
        assert_eq!(pool.map(&shared, double).unwrap(), want, "SharedVec in, Vec out (staged out)");
        // Every input into every output.
        let mut plain = vec![0.0; n];
        let mut out = SharedVec::<f64>::zeroed(n).unwrap();
        pool.map_into(&xs, &mut plain, double_chunk).unwrap();
        assert_eq!(plain, want, "plain -> plain");
        pool.map_into(&xs, &mut out, double).unwrap();
        assert_eq!(&out[..], &want[..], "plain -> shared (staged in)");
        out.fill(0.0);
        pool.map_into(&shared, &mut out, double).unwrap();
        assert_eq!(&out[..], &want[..], "shared -> shared (in place)");
        plain.fill(0.0);
        pool.map_into(&shared, &mut plain[..], double).unwrap();
        assert_eq!(plain, want, "shared -> plain slice (staged out)");
    }
    let mut arr = [0u32; 4];
    pool.map_into(&[1u8, 2, 3, 4], &mut arr, |x: u8| x as u32 * 3).unwrap();
    assert_eq!(arr, [3, 6, 9, 12], "arrays");
    drop(pool);
    common::assert_nothing_leaked();
}

#[test]
fn npy_files_work_with_closures_and_specs_and_refuse_other_dtypes() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.npy");
    let xs = sequence(10_000);
    let mut f = NpyOutput::create(&path, Dtype::F64, &[xs.len() as u64]).unwrap();
    f.as_mut_slice::<f64>().unwrap().copy_from_slice(&xs);
    f.commit().unwrap();
    // SAFETY: the file is this test's own; nothing else writes or truncates it.
    let input = unsafe { NpyArray::open(&path) }.unwrap();
    let pool = Pool::new(2).unwrap();
    let want: Vec<f64> = xs.iter().map(|x| x * 2.0).collect();
    assert_eq!(pool.map(&input, double).unwrap(), want, "npy in, closure, Vec out");
    let mut out = NpyOutput::create(d.path().join("y.npy"), Dtype::F64, &[xs.len() as u64]).unwrap();
    pool.map_into(&input, &mut out, double_chunk).unwrap();
    assert_eq!(out.as_slice::<f64>().unwrap(), &want[..], "npy -> npy, chunk closure");
    let mut out32 = NpyOutput::create(d.path().join("z.npy"), Dtype::F32, &[xs.len() as u64]).unwrap();
    let e = pool.map_into(&input, &mut out32, double).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = pool.map(&input, |x: f32| x).unwrap_err();
    assert!(e.to_string().contains("float64"), "{e}");
    // A ticket and a stream read the file too.
    assert_eq!(pool.submit(&input, double).unwrap().wait().unwrap(), want);
    let got: Vec<Vec<f64>> = pool.imap([&input, &input], double).collect::<Result<_>>().unwrap();
    assert_eq!(got, [want.clone(), want]);
}

#[test]
fn tickets_and_streams_take_every_kernel_form() {
    let _serial = common::serial();
    let pool = Pool::new(2).unwrap();
    let xs = sequence(50_000);
    let want: Vec<f64> = xs.iter().map(|x| x * 2.0).collect();
    let shared = SharedVec::from_slice(&xs).unwrap();
    assert_eq!(pool.submit(&shared, double_chunk).unwrap().wait().unwrap(), want, "submit chunk from SharedVec");
    let t = pool.submit(&xs, (|x: f64, t: &[f64]| x * t[0]).with_table(&[2.0])).unwrap();
    assert_eq!(t.wait().unwrap(), want, "submit with a table");
    let batches = || (0..5).map(|b| sequence(1000 + b));
    let got: Vec<Vec<f64>> = pool.imap(batches(), double_chunk).collect::<Result<_>>().unwrap();
    assert!(got.iter().zip(batches()).all(|(g, b)| g.iter().zip(&b).all(|(g, b)| *g == b * 2.0)), "imap chunk");
    let mut lens: Vec<usize> =
        pool.imap_unordered(batches(), (|x: f64, k: &f64| x * k).with(2.0)).map(|r| r.unwrap().len()).collect();
    lens.sort_unstable();
    assert_eq!(lens, [1000, 1001, 1002, 1003, 1004], "imap_unordered with params");
    let spec = KernelSpec::chunk(double_chunk);
    let got: Vec<Vec<f64>> = pool.imap([&xs[..10]], spec.typed::<f64, f64>().unwrap()).collect::<Result<_>>().unwrap();
    assert_eq!(got[0], want[..10]);
}

#[test]
fn try_wait_has_the_shape_of_wait_timeout() {
    let _serial = common::serial();
    let pool = Pool::new(1).unwrap();
    let mut t = pool.submit(&[1u32, 2, 3], |x: u32| x * 2).unwrap();
    // A generous limit only against a hang (the ticket is borrowed, so no watchdog thread).
    let hung = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let got = loop {
        match t.try_wait() {
            Ok(Some(v)) => break (v, t.try_wait().map(|_| ()).unwrap_err()),
            Ok(None) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
        assert!(std::time::Instant::now() < hung, "try_wait never completed");
    };
    assert_eq!(got.0, [2, 4, 6]);
    assert!(matches!(got.1, Error::TicketSpent));
    assert_eq!(got.1.kind(), ErrorKind::InvalidInput);
}

#[test]
fn row_kernels_get_whole_rows_whatever_the_chunking() {
    let _serial = common::serial();
    // Chunks of 7 elements would split rows of 5: a row kernel's chunks are whole rows.
    let pool = Pool::builder().workers(2).chunk_len(7).build().unwrap();
    let (rows, cols) = (1_001, 5);
    let m: Vec<f64> = (0..rows * cols).map(|i| i as f64).collect();
    let row_sum = |r: &[f64], s: &mut [f64]| {
        assert_eq!(r.len(), 5, "a whole row");
        s[0] = r.iter().sum();
        s[1] = r[0];
    };
    let want: Vec<f64> = m.chunks(cols).flat_map(|r| [r.iter().sum::<f64>(), r[0]]).collect();
    assert_eq!(pool.map(&m, row_sum.by_rows(cols, 2)).unwrap(), want, "plain");
    let shared = SharedVec::from_slice(&m).unwrap();
    let mut out = SharedVec::<f64>::zeroed(rows * 2).unwrap();
    pool.map_into(&shared, &mut out, row_sum.by_rows(cols, 2)).unwrap();
    assert_eq!(&out[..], &want[..], "shared");
    assert_eq!(pool.submit(&m, row_sum.by_rows(cols, 2)).unwrap().wait().unwrap(), want, "ticket");
    // Data that is not whole rows, an output of the wrong size, a zero width: typed errors.
    let e = pool.map(&m[..12], row_sum.by_rows(cols, 2)).unwrap_err();
    assert!(matches!(e, Error::RaggedRows { len: 12, row: 5 }), "{e}");
    let mut short = vec![0.0; 3];
    let e = pool.map_into(&m, &mut short, row_sum.by_rows(cols, 2)).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { input: 1_001, output: 1 }), "{e}");
    let e = pool.map(&m, row_sum.by_rows(0, 2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[test]
fn tables_sized_at_run_time_reach_every_chunk_small_and_large() {
    let _serial = common::serial();
    let pool = Pool::builder().workers(2).chunk_len(1000).build().unwrap();
    for len in [1, 1000, 200_000] {
        // A table far larger than a slot's payload travels in its own segment.
        let weights = SharedVec::from_slice(&(0..len).map(|i| i as f32 * 0.25).collect::<Vec<_>>()).unwrap();
        let idx: Vec<u32> = (0..20_000).map(|i| (i * 7919) % len as u32).collect();
        let got = pool.map(&idx, (|i: u32, w: &[f32]| w[i as usize]).with_table(&weights)).unwrap();
        assert!(idx.iter().zip(&got).all(|(&i, &y)| y == i as f32 * 0.25), "len {len}");
    }
    drop(pool);
    common::assert_nothing_leaked();
}

#[test]
fn errors_are_matchable_by_kind_and_a_broken_pool_says_so_once() {
    let _serial = common::serial();
    let pool = Pool::new(1).unwrap();
    let e = pool.map_into(&[1.0f64, 2.0], &mut [0.0f64; 3], double).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = pool.map(&[1.0f64], |_: f64| -> f64 { panic!("no") }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Kernel);
    pool.close();
    assert_eq!(pool.map(&[1.0f64], double).unwrap_err().kind(), ErrorKind::PoolUnavailable);
    pool.join().unwrap();
    // Corrupt a waiting chunk: the map fails with CorruptSlot, and the pool reports itself
    // broken from then on, with the reason said once.
    let xs = sequence(10_000);
    for attempt in 0..20 {
        let pool = Pool::builder().workers(1).chunk_len(10).build().unwrap();
        let t = pool.submit(&xs, double).unwrap();
        if pool.corrupt_filled_slots_for_test() == 0 {
            let _ = t.wait();
            continue;
        }
        let e = t.wait().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        let e = pool.map(&xs, double).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PoolUnavailable, "{e}");
        let text = e.to_string();
        assert_eq!(text.matches("pool is broken").count(), 1, "attempt {attempt}: {text}");
        assert!(text.contains("corrupt slot"), "{text}");
        return;
    }
    panic!("no chunk was ever waiting to be corrupted");
}

#[test]
fn death_log_reports_killed_workers() {
    let _serial = common::serial();
    let pool = Pool::new(1).unwrap();
    let pid = pool.pids()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let log = common::watchdog(std::time::Duration::from_secs(60), move || loop {
        // A map after the death runs on the replacement worker.
        assert_eq!(pool.map(&[1.0f64], double).unwrap(), [2.0]);
        let log = pool.death_log();
        if !log.is_empty() {
            break log;
        }
        std::thread::yield_now();
    });
    assert_eq!((log[0].pid, log[0].signal), (pid, libc::SIGKILL));
}
