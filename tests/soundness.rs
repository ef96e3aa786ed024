//! Safe code must not reach undefined behaviour: a `Process::spawn` child shares no memory with
//! its parent (its closure is `Send + 'static`, and shmpool's shared mappings are not inherited),
//! and kernels travel to workers only when they lie in the executable image.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use shmpool::{Pool, Process, SharedVec, StartMethod};

fn w1_chunk(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x * 2.0 + 1.0;
    }
}

/// A child that owns a handle to a shared array (moved into its closure) and writes through it
/// faults on the first access: the mapping is not inherited (`MADV_DONTFORK`), so the child can
/// never write memory the parent and the workers share. A child that only drops such a handle
/// exits cleanly (its drop does not unmap anything of the child's own).
#[test]
fn a_process_child_faults_instead_of_writing_a_shared_array_it_owns() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).start_method(StartMethod::Fork).build().unwrap();
        let xs = SharedVec::from_slice(&(0..10_000).map(f64::from).collect::<Vec<_>>()).unwrap();
        let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
        let mut moved = SharedVec::from_slice(&[5.0f64; 1000]).unwrap();
        let writer = Process::spawn(move || {
            moved[0] = -1.0;
            moved[999] = -1.0;
        })
        .unwrap();
        let status = writer.join().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "the child wrote an inherited shared mapping: {status:?}");

        let dropper_input = SharedVec::from_slice(&[1.0f64; 64]).unwrap();
        let dropper = Process::spawn(move || {
            // A large allocation that may reuse the address range the array had in the parent.
            let big = vec![7u8; 8 << 20];
            drop(dropper_input);
            assert!(big.iter().all(|&b| b == 7), "dropping the handle unmapped the child's own memory");
        })
        .unwrap();
        assert_eq!(dropper.join().unwrap().code(), Some(0), "dropping an uninherited array in a child");

        // Fork workers map every array from its descriptor, so they are unaffected.
        for _ in 0..3 {
            pool.map_into(&xs, &mut ys, w1_chunk).unwrap();
            assert!(ys.iter().zip(xs.iter()).all(|(y, x)| *y == x * 2.0 + 1.0));
            let plain: Vec<f64> = (0..50_000).map(f64::from).collect();
            let out = pool.map(&plain, |x: f64| x * 3.0).unwrap();
            assert!(out.iter().zip(&plain).all(|(y, x)| *y == x * 3.0));
        }
    });
    common::assert_nothing_leaked();
}

/// The same for a mapped `.npy` file: a child that owns the mapping faults on reading it.
#[test]
fn a_process_child_faults_instead_of_reading_a_mapped_file_it_owns() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("in.npy");
    let mut out = shmpool::NpyOutput::create(&path, shmpool::Dtype::F64, &[4096]).unwrap();
    out.as_mut_slice::<f64>().unwrap().fill(3.0);
    let child = Process::spawn(move || {
        let s = out.as_mut_slice::<f64>().unwrap();
        s[0] = 1.0;
    })
    .unwrap();
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGSEGV));
    assert!(!path.exists(), "the child's handle was never committed");
    common::assert_nothing_leaked();
}
