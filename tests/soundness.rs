//! Safe code must not reach undefined behaviour: a `Process::spawn` child shares no memory with
//! its parent (its closure is `Send + 'static`, and shmpool's shared mappings are not inherited),
//! and kernels travel to workers only when they lie in the executable image. A `.npy` output
//! has no name to alias before it is committed and is a complete file after; a shape whose
//! size overflows is an error, not a panic.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use shmpool::{Error, KernelSpec, Pool, Process, SharedVec, StartMethod};

/// No child and no segment of ours left, but the fork server (it lives as long as the process).
fn leak_check() {
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

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
    leak_check();
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
    leak_check();
}

/// `cos` from the C math library, a shared object loaded beside the program (as a `dlopen`ed
/// library would be), as a Rust function pointer. Never called.
fn foreign_cos() -> fn(f64) -> f64 {
    // SAFETY: the names are NUL-terminated literals; dlopen/dlsym only look the symbol up.
    let sym = unsafe {
        let lib = libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW);
        assert!(!lib.is_null(), "libm.so.6 can be loaded");
        libc::dlsym(lib, c"cos".as_ptr())
    };
    assert!(!sym.is_null(), "libm has cos");
    // SAFETY: a non-null code address; the pointer is only compared and refused, never called.
    unsafe { std::mem::transmute::<*mut libc::c_void, fn(f64) -> f64>(sym) }
}

fn foreign_chunk() -> fn(&[f64], &mut [f64]) {
    let f = foreign_cos();
    // SAFETY: as above: a code address outside the image, never called.
    unsafe { std::mem::transmute::<fn(f64) -> f64, fn(&[f64], &mut [f64])>(f) }
}

fn local_double(x: f64) -> f64 {
    x * 2.0
}

fn refused(r: shmpool::Result<Vec<f64>>, what: &str) {
    match r {
        Err(e @ Error::ForeignKernel { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("libm"), "{what}: the error names the library: {msg}");
            assert!(msg.contains("dlopen"), "{what}: the error says why: {msg}");
        }
        other => panic!("{what}: expected ForeignKernel, got {other:?}"),
    }
}

/// A function from another loaded library given as a kernel is refused with a typed error
/// before any worker could jump to its offset, under every start method; the pool stays
/// usable, and function pointers of the program itself still work.
#[test]
fn a_kernel_from_a_dlopened_library_is_refused_before_anything_jumps() {
    let _serial = common::serial();
    for method in [StartMethod::Spawn, StartMethod::ForkServer, StartMethod::Fork] {
        common::watchdog(Duration::from_secs(120), move || {
            let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
            let xs: Vec<f64> = (0..10_000).map(f64::from).collect();
            refused(
                KernelSpec::elem_fn(foreign_cos()).typed::<f64, f64>().and_then(|k| pool.map(&xs, k)),
                &format!("{method:?} elem_fn"),
            );
            refused(
                KernelSpec::chunk_fn(foreign_chunk()).typed::<f64, f64>().and_then(|k| pool.map(&xs, k)),
                &format!("{method:?} chunk_fn"),
            );
            refused(
                KernelSpec::elem_fn(foreign_cos())
                    .typed::<f64, f64>()
                    .and_then(|k| pool.submit(&xs, k))
                    .map(|_| Vec::new()),
                &format!("{method:?} submit"),
            );
            let ys: Vec<f64> = pool
                .map(&xs, KernelSpec::elem_fn(local_double as fn(f64) -> f64).typed::<f64, f64>().unwrap())
                .unwrap();
            assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x * 2.0), "{method:?}: the pool still maps");
        });
    }
    // SAFETY: as in `foreign_chunk`: a code address outside the image, never called.
    let entry = unsafe { std::mem::transmute::<fn(f64) -> f64, fn(f64)>(foreign_cos()) };
    match Process::spawn_fn(entry, 1.0f64) {
        Err(Error::ForeignKernel { .. }) => {}
        other => panic!("spawn_fn of a foreign function: {other:?}"),
    }
    leak_check();
}

// ---------------------------------------------------------------------------------------------
// `.npy` outputs from safe code: nothing to alias before the commit, a complete file after it,
// and a shape whose size overflows is an error, not a panic.
// ---------------------------------------------------------------------------------------------

/// Was: `NpyArray::open` was a safe fn and `NpyOutput::temp_path` named the file being
/// written, so safe code got `&[f64]` and `&mut [f64]` over the same bytes. Now the output has
/// no name until it is committed (`O_TMPFILE`), and mapping a file is an `unsafe fn` whose
/// contract excludes concurrent writers (a safe call does not compile: see the `compile_fail`
/// doctest on `NpyArray`).
#[test]
fn an_npy_output_has_no_name_to_alias_before_it_is_committed() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    // `NpyOutput` has no accessor for the file's name (compile_fail doctest on it).
    let _out = shmpool::NpyOutput::create(d.path().join("o.npy"), shmpool::Dtype::F64, &[4]).unwrap();
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

/// Was: safe code truncated a file behind a live `NpyArray` and read the safe slice (SIGBUS).
/// Mapping now takes `unsafe { NpyArray::open(..) }`, whose `# Safety` contract is that
/// nothing truncates or writes the file while it is mapped; what is left here is the part
/// safe code can still do: a committed output is a complete, ordinary file.
#[test]
fn a_committed_npy_output_is_a_complete_ordinary_file() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("a.npy");
    let mut out = shmpool::NpyOutput::create(&path, shmpool::Dtype::F64, &[100_000]).unwrap();
    out.as_mut_slice::<f64>().unwrap().fill(1.0);
    out.commit().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 + 800_000);
}

/// A shape whose element count overflows must be an error, not a panic (debug) or a tiny file
/// whose header claims 2^61 elements (release).
#[test]
fn npy_output_with_an_overflowing_shape_is_an_error() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let r = std::panic::catch_unwind(|| {
        shmpool::NpyOutput::create(d.path().join("huge.npy"), shmpool::Dtype::F64, &[1 << 61, 1]).map(|o| o.len())
    });
    match r {
        Err(_) => panic!("NpyOutput::create panicked on an overflowing shape"),
        Ok(Ok(len)) => panic!("NpyOutput::create accepted a shape of 2^61 f64 (len {len})"),
        Ok(Err(_)) => {}
    }
}
