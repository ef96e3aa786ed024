//! The stale-segment sweep (run by the first pool of every process, and by `shmpool info
//! --sweep`) unlinks only what proves to be a shmpool segment of this uid whose owner is dead,
//! never a user's file that merely has a shmpool-like name.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use shmpool::{Dtype, NpyOutput, Process};

fn dead_pid() -> u32 {
    let p = Process::spawn(|| {}).unwrap();
    p.join().unwrap();
    p.pid()
}

fn shm(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name)
}

/// Removes the named files when the test ends, whatever happened.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn the_first_pool_of_a_program_sweeps_only_stale_segments_that_prove_to_be_ours() {
    let dead = dead_pid();
    let me = std::process::id();

    // A user's own array, named as in the report: `shmpool map` on it deleted its own input.
    let user = shm(&format!("shmpool_{dead}_elements.npy"));
    let mut out = NpyOutput::create(&user, Dtype::F64, &[1000]).unwrap();
    out.as_mut_slice::<f64>().unwrap().iter_mut().enumerate().for_each(|(i, v)| *v = i as f64);
    out.commit().unwrap();
    // A file with our naming and a dead "owner" but not our header.
    let wrong_magic = shm(&shmpool::testing::leave_stale_segment(dead).unwrap());
    std::fs::OpenOptions::new().write(true).open(&wrong_magic).unwrap().write_all_at(b"NOTSHMPL", 0).unwrap();
    // A genuine segment of a live owner (this process).
    let live = shm(&shmpool::testing::leave_stale_segment(me).unwrap());
    // A genuine-looking segment owned by another user (root only: chown).
    let foreign = (nix::unistd::geteuid().is_root()).then(|| {
        let p = shm(&shmpool::testing::leave_stale_segment(dead).unwrap());
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        p
    });
    // A genuine stale segment of ours: a crash between creating and unlinking its name.
    let stale = shm(&shmpool::testing::leave_stale_segment(dead).unwrap());
    let mut cleanup = Cleanup(vec![user.clone(), wrong_magic.clone(), live.clone(), stale.clone()]);
    cleanup.0.extend(foreign.clone());

    let listed: Vec<String> = shmpool::diagnostics::stale_segments().into_iter().map(|s| s.name).collect();
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(listed.contains(&name(&stale)), "{listed:?}");
    for p in [&user, &wrong_magic, &live].into_iter().chain(foreign.as_ref()) {
        assert!(!listed.contains(&name(p)), "{} is listed as stale", p.display());
    }

    // The first pool of a fresh program (`shmpool map` on the user's file) runs the sweep.
    let d = tempfile::tempdir().unwrap();
    let result = d.path().join("doubled.npy");
    let run = common::watchdog(std::time::Duration::from_secs(120), {
        let (user, result) = (user.clone(), result.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_shmpool"))
                .args(["map", "--quiet", "-j", "1", "--expr", "x * 2", "-o"])
                .arg(&result)
                .arg(&user)
                .output()
                .unwrap()
        }
    });
    assert!(run.status.success(), "shmpool map failed: {}", String::from_utf8_lossy(&run.stderr));
    for p in [&user, &wrong_magic, &live].into_iter().chain(foreign.as_ref()) {
        assert!(p.exists(), "the sweep deleted {}", p.display());
    }
    assert!(!stale.exists(), "the genuine stale segment of a dead owner was not swept");
    // SAFETY: nothing else writes or truncates the files while they are mapped here.
    let (input, doubled) =
        unsafe { (shmpool::NpyArray::open(&user).unwrap(), shmpool::NpyArray::open(&result).unwrap()) };
    let (xs, ys) = (input.as_slice::<f64>().unwrap(), doubled.as_slice::<f64>().unwrap());
    assert!(xs.iter().enumerate().all(|(i, &x)| x == i as f64), "the user's input changed");
    assert!(ys.iter().zip(xs).all(|(y, x)| *y == x * 2.0));
    drop(cleanup);
}
