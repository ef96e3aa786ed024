//! Helpers of the MPI tests: run `mpirun` under `timeout` with the environment these machines
//! need, the reference `shmpool map`, fixtures, and leak checks by pid.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shmpool::{Dtype, NpyOutput};

// `pid_alive`, `assert_pids_gone`: the engine's tests' own (one copy).
#[path = "../../../tests/common/procs.rs"]
mod procs;
#[allow(unused_imports)] // each test binary uses some of the helpers
pub use procs::{assert_pids_gone, pid_alive};

// The one entry point of the tests' child programs (the engine's tests' own, one copy): a rank
// body is a plain `fn()` listed in `scenarios!`, and mpirun starts `TESTBIN
// --shmpool-test-scenario NAME` on every rank ([`scenario::args`]).
#[path = "../../../tests/common/scenario.rs"]
pub mod scenario;

/// The limit after which `timeout` kills a job: a hang fails the test, slowness does not.
pub const JOB_LIMIT: &str = "120";

pub const BIN: &str = env!("CARGO_BIN_EXE_shmpool-mpi");

/// The `shmpool` binary of the engine (`SHMPOOL_BIN`, or built once in the root's target/).
pub fn shmpool_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SHMPOOL_BIN") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("mpi/ sits in the repository root");
        let st = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--bin", "shmpool", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .status()
            .expect("run cargo to build the shmpool binary");
        assert!(st.success(), "building the shmpool binary failed");
        root.join("target/debug/shmpool")
    })
    .clone()
}

/// A test directory, with Open MPI's own shared-memory files kept in a subdirectory of it
/// (out of /dev/shm).
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("mpi")).unwrap();
        Dir { tmp }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Everything in the directory but Open MPI's subdirectory and `keep`.
    pub fn debris(&self, keep: &[&str]) -> Vec<String> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "mpi" && !keep.contains(&n.as_str()))
            .collect()
    }
}

/// `mpirun` for `np` ranks of `program` with `args`, under `timeout`, as root if need be,
/// oversubscribed, with `ob1` (no UCX start-up) and Open MPI's segments in `dir`.
pub fn mpirun_cmd(dir: &Dir, np: usize, program: &Path, args: &[&str]) -> Command {
    mpirun_cmd_via(dir, &[], np, program, args)
}

/// [`mpirun_cmd`] with mpirun started through `via` (`ip netns exec NS`).
pub fn mpirun_cmd_via(dir: &Dir, via: &[&str], np: usize, program: &Path, args: &[&str]) -> Command {
    mpirun_cmd_exact(dir, via, true, np, program, args)
}

/// The mpirun command, oversubscribed or not: without `--oversubscribe` Open MPI assumes a core
/// per rank (its blocking waits poll; oversubscribed, they yield), and `np` must not exceed
/// the cores.
pub fn mpirun_cmd_exact(
    dir: &Dir,
    via: &[&str],
    oversubscribe: bool,
    np: usize,
    program: &Path,
    args: &[&str],
) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-s", "KILL", JOB_LIMIT]).args(via).arg("mpirun");
    if oversubscribe {
        c.arg("--oversubscribe").env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    }
    c.args(["-np", &np.to_string()])
        .arg(program)
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_backing_directory", dir.path("mpi"))
        .env("OMPI_MCA_pml", "ob1")
        .stdin(Stdio::null());
    c
}

/// Runs `shmpool-mpi` on `np` ranks and waits for it.
pub fn mpirun(dir: &Dir, np: usize, args: &[&str]) -> Output {
    mpirun_cmd(dir, np, Path::new(BIN), args).output().unwrap()
}

/// The last `n` bytes of `bytes`, as text (`scenario`'s watchdog uses it).
pub fn tail(bytes: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(n)..]).into_owned()
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `shmpool map` (the reference) and asserts success.
pub fn shmpool_map(args: &[&str]) {
    let o = Command::new(shmpool_bin()).arg("map").args(args).arg("--quiet").output().unwrap();
    assert!(o.status.success(), "shmpool map failed: {}", text(&o));
}

/// Writes a `.npy` file of `shape` with elements from `f(k)`.
pub fn save<T: bytemuck::Pod>(path: &Path, dtype: Dtype, shape: &[u64], f: impl Fn(usize) -> T) {
    let mut out = NpyOutput::create(path, dtype, shape).unwrap();
    for (k, x) in out.as_mut_slice::<T>().unwrap().iter_mut().enumerate() {
        *x = f(k);
    }
    out.commit().unwrap();
}

/// A float64 input of `n` elements with varied values.
pub fn save_f64(path: &Path, n: u64) {
    save(path, Dtype::F64, &[n], |k| ((k * 7919) % 100_003) as f64 * 0.37 + 0.5);
}

/// Pids of the live descendants of `root` (not zombies).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("Z");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state != "Z" && state != "X" {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = vec![root];
    let mut k = 0;
    while k < out.len() {
        let p = out[k];
        out.extend(parent_of.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        k += 1;
    }
    out.remove(0);
    out
}

/// shmpool segment names in /dev/shm owned by any of `pids`.
pub fn segments_of(pids: &[u32]) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| pids.iter().any(|p| n.starts_with(&format!("shmpool_{p}_"))))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for the job to end (the `timeout` wrapper kills a hung one), collecting every
/// process of the job seen on the way. Returns the exit code, stderr, how long it took after
/// `since`, and the pids seen.
pub fn finish(mut child: Child, since: Instant, mut seen: Vec<u32>) -> (Option<i32>, String, Duration, Vec<u32>) {
    let status = loop {
        for p in descendants(child.id()) {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = since.elapsed();
    let out = child.wait_with_output().unwrap();
    (status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), took, seen)
}

/// Nothing published, no temporary left, no process of the job alive, no segment of it.
pub fn nothing_left(d: &Dir, seen: &[u32]) {
    assert_eq!(
        d.debris(&["x.npy", "hold", "hosts", "agent.sh"]),
        Vec::<String>::new(),
        "output published or debris left"
    );
    assert_pids_gone(seen);
    assert_eq!(segments_of(seen), Vec::<String>::new(), "shared memory left");
}

/// Starts `child` (stderr piped), calls `act` once its first progress line is out (every rank
/// has opened its input and its part of the output by then: the collective that ends the
/// set-up comes first), and returns its exit code and whole stderr.
pub fn act_mid_map(mut child: Child, act: impl FnOnce()) -> (Option<i32>, String) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut told = false;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if !told && line.starts_with("progress:") {
                told = true;
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // The reader drops `tx` at the end of stderr: a job that never reports ends the wait too.
    let started = rx.recv().is_ok();
    if started {
        act();
    }
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert!(started, "the job never reported progress: {err}");
    (status.code(), err)
}
