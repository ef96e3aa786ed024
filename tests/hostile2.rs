//! Hostile QA, round 2: start methods and the numpy contract of `shmpool map`.
//!
//! Every test here is a reproducer of a broken promise (it fails, or hangs under the watchdog,
//! until the library is fixed). Expected values were taken from numpy 2.x.

mod common;

use shmpool::KernelExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A `.npy` file (format 1.0, header padded to 64 bytes as `np.save` does).
fn npy(dir: &Path, name: &str, descr: &str, shape: &str, data: &[u8]) -> PathBuf {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = (10 + dict.len() + 1).next_multiple_of(64);
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, out).unwrap();
    p
}

fn f64_npy(dir: &Path, name: &str, xs: &[f64]) -> PathBuf {
    npy(dir, name, "<f8", &format!("({},)", xs.len()), bytemuck::cast_slice(xs))
}

/// Runs `shmpool map IN -o OUT --quiet --expr EXPR`; returns the output (stdout, stderr).
fn map(input: &Path, output: &Path, expr: &str) -> std::process::Output {
    let args: Vec<String> = ["map", input.to_str().unwrap(), "-o", output.to_str().unwrap(), "--quiet", "--expr", expr]
        .iter()
        .map(|s| s.to_string())
        .collect();
    common::watchdog(Duration::from_secs(60), move || {
        Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).output().unwrap()
    })
}

/// The dtype and the raw data bytes of a `.npy` file the CLI wrote.
fn read_out(path: &Path) -> (shmpool::Dtype, Vec<u8>) {
    // SAFETY: the file is this test's own; nothing else writes or truncates it.
    let a = unsafe { shmpool::NpyArray::open(path) }.unwrap();
    let raw = std::fs::read(path).unwrap();
    let (pre, hlen) = match raw[6] {
        1 => (10, u16::from_le_bytes([raw[8], raw[9]]) as usize),
        _ => (12, u32::from_le_bytes(raw[8..12].try_into().unwrap()) as usize),
    };
    let data = raw[pre + hlen..].to_vec();
    assert_eq!(data.len(), a.len() * a.dtype().size(), "data size");
    (a.dtype(), data)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// B. The numpy contract
// ---------------------------------------------------------------------------------------------

/// `np.clip(x, nan, 1)` is NaN everywhere (numpy 2 propagates a NaN bound: clip is
/// `minimum(maximum(x, lo), hi)`); shmpool ignores the NaN bound and returns `x` clipped to 1.
#[test]
fn clip_with_a_nan_bound_gives_nan_like_numpy() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[0.0, -1.0, 2.0, 0.5]);
    for expr in ["clip(x, nan, 1)", "clip(x, 0, nan)"] {
        let y = d.path().join("y.npy");
        let o = map(&x, &y, expr);
        assert!(o.status.success(), "{expr}: {}", stderr(&o));
        let (dt, bytes) = read_out(&y);
        assert_eq!(dt, shmpool::Dtype::F64);
        let ys = f64s(&bytes);
        assert!(ys.iter().all(|v| v.is_nan()), "{expr}: numpy gives [nan nan nan nan], shmpool {ys:?}");
    }
}

/// Python integers beyond 64 bits are valid weak scalars for numpy: `x + 2**64` on float64 is
/// `x + 1.8446744073709552e19`, and `x < 2**64` is all True for every integer dtype (numpy 2
/// compares out-of-range Python ints exactly). shmpool used to refuse them at compile time.
#[test]
fn python_integers_beyond_64_bits_work_where_numpy_accepts_them() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[0.0, 1.0]);
    let i = npy(d.path(), "i.npy", "<i8", "(2,)", bytemuck::cast_slice(&[i64::MIN, i64::MAX]));
    let y = d.path().join("y.npy");
    let o = map(&x, &y, "x + 2**64");
    assert!(o.status.success(), "float64 `x + 2**64` works in numpy: {}", stderr(&o));
    let (_, bytes) = read_out(&y);
    assert_eq!(f64s(&bytes), [18446744073709551616.0, 18446744073709551616.0]);
    let o = map(&x, &y, "x * 10**30");
    assert!(o.status.success(), "float64 `x * 10**30` works in numpy: {}", stderr(&o));
    let o = map(&i, &y, "x < 2**64");
    assert!(o.status.success(), "int64 `x < 2**64` is all True in numpy 2: {}", stderr(&o));
    assert_eq!(read_out(&y), (shmpool::Dtype::Bool, vec![1, 1]));
}

/// numexpr's function names (numexpr 2.10+: `signbit`; always: `conj`, `real`, `imag`,
/// `copy`, `ones_like`) and its shift operators `<<` `>>` are promised ("every function name
/// numexpr offers"); all were refused as unknown. numpy: `signbit([-0., 1., -2.]) == [T, F, T]`.
#[test]
fn every_numexpr_function_name_is_accepted() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[-0.0, 1.0, -2.0]);
    let y = d.path().join("y.npy");
    let o = map(&x, &y, "signbit(x)");
    assert!(o.status.success(), "signbit: {}", stderr(&o));
    assert_eq!(read_out(&y), (shmpool::Dtype::Bool, vec![1, 0, 1]));
    let mut refused = Vec::new();
    for expr in ["conj(x)", "real(x)", "imag(x)", "copy(x)", "ones_like(x)"] {
        let o = map(&x, &y, expr);
        if !o.status.success() {
            refused.push(format!("{expr}: {}", stderr(&o).lines().next().unwrap_or("")));
        }
    }
    let i = npy(d.path(), "i.npy", "<i8", "(2,)", bytemuck::cast_slice(&[3i64, -4]));
    for expr in ["x << 1", "x >> 1"] {
        let o = map(&i, &y, expr);
        if !o.status.success() {
            refused.push(format!("{expr}: {}", stderr(&o).lines().next().unwrap_or("")));
        }
    }
    assert!(refused.is_empty(), "numexpr names numpy evaluates, refused:\n{}", refused.join("\n"));
}

/// `+x` on a bool array is an error in numpy (`np.positive` has no bool loop:
/// UFuncTypeError); shmpool used to return the array.
#[test]
fn unary_plus_on_bool_is_an_error_like_numpy() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = npy(d.path(), "b.npy", "|b1", "(2,)", &[1, 0]);
    let y = d.path().join("y.npy");
    let o = map(&x, &y, "+x");
    assert!(!o.status.success(), "numpy refuses +x on bool; shmpool wrote {:?}", read_out(&y));
    assert!(!y.exists());
}

// ---------------------------------------------------------------------------------------------
// B. Signals
// ---------------------------------------------------------------------------------------------

/// `nohup shmpool map ...` (SIGHUP ignored by the parent) must survive a hangup, as every
/// program that installs cleanup handlers only for signals not ignored at start-up does
/// (and as numpy under `nohup python` does). shmpool installs its SIGHUP handler over the
/// inherited SIG_IGN and cancels the map with exit 129. The same holds for SIGINT, which
/// non-interactive shells set to SIG_IGN for background jobs (`cmd &` in a script).
#[test]
fn nohup_map_survives_a_hangup() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..3_000_000).map(|i| i as f64).collect();
    let x = f64_npy(d.path(), "x.npy", &xs);
    let y = d.path().join("y.npy");
    let script = format!(
        "trap '' HUP; exec {:?} map {:?} -o {:?} --progress -j 2 --chunk-len 65536 --expr \
         'sin(x) ** 2 + cos(x) ** 3 + tanh(x) + exp(-x * x) + log1p(x) + arctan(x)'",
        env!("CARGO_BIN_EXE_shmpool"),
        x,
        y
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let err = child.stderr.take().unwrap();
    let status = common::watchdog(Duration::from_secs(120), move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(err).lines();
        let first = lines.next().expect("a progress line").unwrap();
        assert!(first.starts_with("progress:"), "{first}");
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        for _ in lines {}
        child.wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "SIGHUP was ignored by the caller (nohup): {status:?}");
    assert!(y.exists());
}

fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

// ---------------------------------------------------------------------------------------------
// A. Start methods
// ---------------------------------------------------------------------------------------------

use shmpool::{Pool, Process, StartMethod};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Big {
    w: [f64; 16384], // 128 KiB
}

/// Parameter blocks of 128 KiB under every start method.
#[test]
fn large_parameter_blocks_work_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                for method in METHODS {
                    let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
                    let mut p = Big { w: [0.0; 16384] };
                    for (k, w) in p.w.iter_mut().enumerate() {
                        *w = k as f64;
                    }
                    let xs: Vec<u32> = (0..10_000).map(|i| i % 16384).collect();
                    let got = pool.map(&xs, (|i: u32, p: &Big| p.w[i as usize] * 2.0).with(p));
                    let got = got.unwrap_or_else(|e| panic!("{method:?}: {e}"));
                    assert!(xs.iter().zip(&got).all(|(&i, &y)| y == i as f64 * 2.0), "{method:?}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

/// Descriptors of the pipe with this inode in `pid`'s table.
fn holds_inode(pid: u32, inode: u64) -> bool {
    let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == format!("pipe:[{inode}]")))
}

/// A descriptor the program holds without close-on-exec (inherited from its own parent:
/// a make/cargo jobserver pipe, a `3>file` redirection) must not be kept open by shmpool's
/// helpers after the program closes it: a reader waiting for EOF on that pipe would wait for
/// as long as the program lives. Forked workers and spawned workers close everything but their
/// socket (`drop_inherited`), the forked fork server too, but the *exec'd* fork server
/// (the default in a threaded program, or in one that calls `init()`) keeps every inherited
/// descriptor.
#[test]
fn the_exec_d_fork_server_does_not_keep_the_programs_descriptors() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("pids");
    let f2 = file.clone();
    common::watchdog(Duration::from_secs(60), move || {
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two descriptors into a valid array (no O_CLOEXEC: an inherited
        // descriptor, as a jobserver's).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", fds[1])).unwrap().ino();
        // A fresh process of this program (forked: its pools get their own fork server).
        let child = Process::spawn(move || {
            // A program that calls init() gets an exec'd fork server even while single-threaded.
            shmpool::init();
            let pool = Pool::builder().workers(2).start_method(StartMethod::ForkServer).build().unwrap();
            assert_eq!(pool.map(&[1.0f64, 4.0], f64::sqrt).unwrap(), [1.0, 2.0]);
            let mut pids: Vec<u32> = pool.pids();
            pids.extend(shmpool::testing::fork_server_pid());
            drop(pool);
            std::fs::write(&f2, pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        })
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let pids: Vec<u32> = loop {
            if let Some(s) = std::fs::read_to_string(&file).ok().filter(|s| !s.is_empty()) {
                break s.split(' ').map(|p| p.parse().unwrap()).collect();
            }
            assert!(std::time::Instant::now() < deadline, "the child never built its pool");
            std::thread::sleep(Duration::from_millis(5));
        };
        let server = *pids.last().unwrap();
        let held = holds_inode(server, inode);
        child.kill().unwrap();
        let _ = child.join();
        // SAFETY: closing the two descriptors this test created.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert!(!held, "fork server {server} holds the program's non-CLOEXEC pipe (inode {inode})");
    });
}

fn segfaults_on_seven(x: i64) -> i64 {
    if x == 7 {
        // A real fault (std's SIGSEGV handler swallows a raised one): the worker dies by SIGSEGV.
        // SAFETY: deliberately invalid; the worker process is meant to die here.
        unsafe { std::ptr::null_mut::<i64>().write_volatile(x) };
    }
    x
}

/// `Error::WorkerCrashed::signal` is "the signal that killed the last worker". Under the fork
/// server it is 0 ("exited without a signal") for a worker killed by SIGSEGV: the CLI, whose
/// default method is the fork server, then says "worker crashed ... (last signal 0)" for an
/// input truncated under a running map (SIGBUS).
#[test]
fn worker_crashed_names_the_signal_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let mut got = Vec::new();
        for method in METHODS {
            let pool = Pool::builder().workers(2).max_attempts(2).start_method(method).build().unwrap();
            let xs: Vec<i64> = (0..16).collect();
            match pool.map(&xs, segfaults_on_seven) {
                Err(shmpool::Error::WorkerCrashed { signal, .. }) => got.push((method, signal)),
                other => panic!("{method:?}: {other:?}"),
            }
        }
        assert!(got.iter().all(|&(_, s)| s == libc::SIGSEGV), "signal reported per method: {got:?}");
    });
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

fn sigbus_on_seven(x: i64) -> i64 {
    if x == 7 {
        // A real SIGBUS: read a page of a file mapping past the file's end.
        let f = tempfile::tempfile().unwrap();
        f.set_len(8192).unwrap();
        // SAFETY: the mapping is private to this kernel; the read past EOF is meant to fault.
        let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        f.set_len(0).unwrap();
        // SAFETY: as above.
        return unsafe { std::ptr::read_volatile(m.as_ptr().add(4096) as *const i64) };
    }
    x
}

/// Same as above with SIGBUS, the signal a truncated input gives.
#[test]
fn worker_crashed_names_sigbus_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let mut got = Vec::new();
        for method in METHODS {
            let pool = Pool::builder().workers(2).max_attempts(2).start_method(method).build().unwrap();
            let xs: Vec<i64> = (0..16).collect();
            match pool.map(&xs, sigbus_on_seven) {
                Err(shmpool::Error::WorkerCrashed { signal, .. }) => got.push((method, signal)),
                other => panic!("{method:?}: {other:?}"),
            }
        }
        assert!(got.iter().all(|&(_, s)| s == libc::SIGBUS), "signal reported per method: {got:?}");
    });
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

/// After `terminate()` (and after `drop`) returns, no worker of the pool is alive, under every
/// method, also when the pool is busy in another thread and when recycling replaced workers.
#[test]
fn no_stale_worker_after_terminate_or_drop_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in METHODS {
            for round in 0..6 {
                let pool = std::sync::Arc::new(
                    Pool::builder()
                        .workers(2)
                        .max_chunks_per_worker(1)
                        .chunk_len(64)
                        .start_method(method)
                        .build()
                        .unwrap(),
                );
                let xs: Vec<f64> = (0..20_000).map(f64::from).collect();
                let p2 = pool.clone();
                let busy = std::thread::spawn(move || {
                    let _ = p2.map(&xs, f64::sqrt);
                });
                std::thread::sleep(Duration::from_millis(2 * round));
                let mut seen = pool.pids();
                if round % 2 == 0 {
                    pool.terminate();
                    seen.extend(pool.pids());
                    let alive: Vec<u32> = seen.iter().copied().filter(|&p| common::pid_alive(p)).collect();
                    assert!(alive.is_empty(), "{method:?} round {round}: alive after terminate: {alive:?}");
                }
                busy.join().unwrap();
                seen.extend(pool.pids());
                drop(pool);
                let alive: Vec<u32> = seen.iter().copied().filter(|&p| common::pid_alive(p)).collect();
                assert!(alive.is_empty(), "{method:?} round {round}: alive after drop: {alive:?}");
            }
        }
    });
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

/// An input truncated under a running map must give "a clear error": the CLI says
/// "worker crashed on index range A..B after 3 attempts (last signal 0)" or "pool is broken
/// ...: 5 workers in a row exited at start" — nothing names the input or says it changed, and
/// "signal 0" is wrong (the workers exit with code 3 after failing to map the shrunken file).
#[test]
fn an_input_truncated_mid_map_gives_an_error_that_names_the_input() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..4_000_000).map(|i| i as f64).collect();
    let x = f64_npy(d.path(), "input-under-test.npy", &xs);
    let y = d.path().join("y.npy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmpool"))
        .args(["map", x.to_str().unwrap(), "-o", y.to_str().unwrap(), "--progress", "-j", "2", "--chunk-len", "65536"])
        .args(["--expr", "sin(x) ** 2 + cos(x) ** 3 + tanh(x) + exp(-x * x) + log1p(x) + arctan(x)"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let x2 = x.clone();
    let (status, text) = common::watchdog(Duration::from_secs(120), move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(err).lines();
        let first = lines.next().expect("a progress line").unwrap();
        assert!(first.starts_with("progress:"), "{first}");
        std::fs::OpenOptions::new().write(true).open(&x2).unwrap().set_len(1000).unwrap();
        let rest: Vec<String> = lines.map_while(Result::ok).filter(|l| !l.starts_with("progress:")).collect();
        (child.wait().unwrap(), rest.join("\n"))
    });
    assert!(!y.exists());
    if status.success() {
        return; // finished before the truncation: a correct result is allowed
    }
    assert_eq!(status.code(), Some(1), "{status:?}: {text}");
    assert!(
        text.contains("input-under-test.npy") || text.contains("truncated") || text.contains("changed"),
        "the error does not say the input changed: {text}"
    );
    assert!(!text.contains("signal 0"), "a worker that exited is reported as killed by 'signal 0': {text}");
}

/// `x ** 3` and `x ** -1` on a NaN keep the NaN's sign in numpy (its SIMD power loop and
/// `reciprocal` return the NaN operand; glibc's `pow` gives a positive NaN, as numpy's float16
/// loop does); shmpool returned a positive NaN, which `copysign` makes visible: for x = 0.0,
/// numpy's `copysign(1, (x / x) ** 3)` is -1.0 (0/0 is the x86 default NaN, negative),
/// shmpool's was 1.0.
#[test]
fn integer_powers_keep_the_sign_of_a_nan_like_numpy() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[0.0]);
    let y = d.path().join("y.npy");
    let mut wrong = Vec::new();
    for expr in ["copysign(1, (x / x) ** 3)", "copysign(1, (x / x) ** -1)", "copysign(1, x / x)"] {
        let o = map(&x, &y, expr);
        assert!(o.status.success(), "{expr}: {}", stderr(&o));
        let got = f64s(&read_out(&y).1)[0];
        if got != -1.0 {
            wrong.push(format!("{expr} = {got} (numpy: -1.0)"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// Live children of `pid` (not zombies).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        if f.next().and_then(|x| x.parse::<u32>().ok()) == Some(pid) && state != "Z" {
            out.push(p);
        }
    }
    out
}

/// The fork server under load: four threads each building pools (two at a time per thread),
/// mapping, terminating one mid-map from a third thread, recycling; afterwards the server has
/// no worker left and every result was right.
#[test]
fn fork_server_serves_pools_in_many_threads_and_keeps_no_worker() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(180), || {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..8 {
                        let a = Pool::builder().workers(2).start_method(StartMethod::ForkServer).build().unwrap();
                        let b = std::sync::Arc::new(
                            Pool::builder()
                                .workers(1)
                                .max_chunks_per_worker(2)
                                .chunk_len(256)
                                .start_method(StartMethod::ForkServer)
                                .build()
                                .unwrap(),
                        );
                        let xs: Vec<f64> = (0..20_000).map(|i| (i * (t + 1)) as f64).collect();
                        let b2 = b.clone();
                        let xs2 = xs.clone();
                        let h = std::thread::spawn(move || b2.map(&xs2, f64::sqrt));
                        if round % 3 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                            b.terminate();
                        }
                        let ya = a.map(&xs, f64::sqrt).unwrap();
                        assert!(xs.iter().zip(&ya).all(|(x, y)| x.sqrt() == *y), "thread {t} round {round}");
                        match h.join().unwrap() {
                            Ok(yb) => assert!(xs.iter().zip(&yb).all(|(x, y)| x.sqrt() == *y)),
                            Err(e) => assert!(round % 3 == 0, "thread {t} round {round}: {e}"),
                        }
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
    });
    let server = shmpool::testing::fork_server_pid().expect("a fork server");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !children_of(server).is_empty() {
        assert!(std::time::Instant::now() < deadline, "fork server still has workers: {:?}", children_of(server));
        std::thread::sleep(Duration::from_millis(20));
    }
    common::assert_nothing_leaked_but(&[server]);
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Building and dropping pools (and terminating them mid-map) leaks no descriptor, neither in
/// the program nor in the fork server.
#[test]
fn pools_built_and_dropped_leak_no_descriptor() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(180), || {
        let warm = Pool::builder().workers(1).start_method(StartMethod::ForkServer).build().unwrap();
        drop(warm);
        let server = shmpool::testing::fork_server_pid().unwrap();
        let me = std::process::id();
        std::thread::sleep(Duration::from_millis(100));
        let (mine0, server0) = (fd_count(me), fd_count(server));
        for method in METHODS {
            for k in 0..15 {
                let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
                let xs: Vec<f64> = (0..5000).map(f64::from).collect();
                let _ = pool.map(&xs, f64::sqrt).unwrap();
                if k % 2 == 0 {
                    pool.terminate();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let (mine1, server1) = (fd_count(me), fd_count(server));
        assert!(
            mine1 <= mine0 + 2 && server1 <= server0,
            "fds: program {mine0} -> {mine1}, server {server0} -> {server1}"
        );
    });
}

/// "`-j 1000` on small inputs is quiet and quick": true for a file input (capped at one worker
/// per 65,536 elements), not for the built-in dataset: `map -j 1000 --len 1000` starts 1000
/// worker processes and its one map of 1000 elements takes ~7 s (8.4 s in all) on 2 cores.
#[test]
fn j_1000_on_the_small_built_in_dataset_is_quick() {
    let _serial = common::serial();
    let t = std::time::Instant::now();
    let o = common::watchdog(Duration::from_secs(120), || {
        Command::new(env!("CARGO_BIN_EXE_shmpool"))
            .args(["map", "-j", "1000", "--len", "1000", "--repeat", "1"])
            .output()
            .unwrap()
    });
    let secs = t.elapsed().as_secs_f64();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.contains("1000 worker processes"), "1000 workers for 1000 elements:\n{out}");
    assert!(secs < 2.0, "took {secs:.1} s:\n{out}");
}

/// "Workers die with the program under every method": a program SIGKILLed while a child it
/// forked itself (plain `fork()`, as a daemonising helper or another library does; not
/// `Process::spawn`, which closes the fork server's control socket) is still alive leaves its
/// fork server and that server's workers running for as long as the bystander lives. The
/// server has no `PR_SET_PDEATHSIG` and only watches its control socket, which the raw-forked
/// child inherited.
#[test]
fn fork_server_and_its_workers_die_with_a_sigkilled_program_that_forked_a_helper() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("pids");
    let f2 = file.clone();
    let (pids, bystander) = common::watchdog(Duration::from_secs(60), move || {
        let child = Process::spawn(move || {
            // A program that calls init() gets an exec'd fork server even while single-threaded.
            shmpool::init();
            let pool = Pool::builder().workers(2).start_method(StartMethod::ForkServer).build().unwrap();
            assert_eq!(pool.map(&[1.0f64, 4.0], f64::sqrt).unwrap(), [1.0, 2.0]);
            // SAFETY: the helper only sleeps and exits with _exit.
            let helper = unsafe { libc::fork() };
            if helper == 0 {
                // SAFETY: async-signal-safe calls only.
                unsafe {
                    libc::sleep(30);
                    libc::_exit(0);
                }
            }
            let mut pids: Vec<u32> = vec![helper as u32];
            pids.extend(pool.pids());
            pids.extend(shmpool::testing::fork_server_pid());
            std::fs::write(&f2, pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        })
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let pids: Vec<u32> = loop {
            if let Some(s) = std::fs::read_to_string(&file).ok().filter(|s| !s.is_empty()) {
                break s.split(' ').map(|p| p.parse().unwrap()).collect();
            }
            assert!(std::time::Instant::now() < deadline, "the child never built its pool");
            std::thread::sleep(Duration::from_millis(5));
        };
        child.kill().unwrap();
        let _ = child.join();
        (pids[1..].to_vec(), pids[0])
    });
    let gone = std::panic::catch_unwind(|| common::assert_pids_gone(&pids));
    // Clean up whatever is left (the bystander, and the server and workers if they survived).
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(bystander as i32), nix::sys::signal::Signal::SIGKILL);
    for &p in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL);
    }
    if gone.is_err() {
        panic!("workers and fork server {pids:?} outlived their SIGKILLed program (bystander {bystander} alive)");
    }
}

/// A forked child (`Process::spawn`) that uses its parent's pool: it must get an error or the
/// right answer in bounded time, and the parent's own maps must stay right.
#[test]
fn a_forked_child_using_the_parents_pool_neither_hangs_nor_corrupts() {
    let _serial = common::serial();
    for method in METHODS {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("res");
        let f2 = file.clone();
        common::watchdog(Duration::from_secs(60), move || {
            let pool = std::sync::Arc::new(Pool::builder().workers(2).start_method(method).build().unwrap());
            let xs: Vec<f64> = (0..50_000).map(f64::from).collect();
            let child = {
                // `Process::spawn` takes a `'static` closure: the child owns a handle.
                let pool = std::sync::Arc::clone(&pool);
                let xs = xs.clone();
                Process::spawn(move || {
                    let r = pool.map(&xs, |x: f64| x * 3.0);
                    let msg = match r {
                        Ok(ys) if ys.iter().zip(&xs).all(|(y, x)| *y == x * 3.0) => "ok".to_string(),
                        Ok(_) => "WRONG".to_string(),
                        Err(e) => format!("err {e}"),
                    };
                    std::fs::write(&f2, msg).unwrap();
                })
                .unwrap()
            };
            for _ in 0..20 {
                let ys = pool.map(&xs, |x: f64| x + 1.0).unwrap();
                assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x + 1.0), "{method:?}: parent's map corrupted");
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while child.is_alive() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{method:?}: the child's map on its parent's pool hangs");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let msg = std::fs::read_to_string(&file).unwrap_or_else(|_| format!("no result; {:?}", child.join()));
            assert!(msg == "ok" || msg.starts_with("err"), "{method:?}: child got {msg}");
            eprintln!("{method:?}: child: {msg}");
            let ys = pool.map(&xs, |x: f64| x + 1.0).unwrap();
            assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x + 1.0), "{method:?}: parent's map after the child");
        });
    }
    common::assert_nothing_leaked_but(&shmpool::testing::fork_server_pid().into_iter().collect::<Vec<_>>());
}

/// `-o` naming a device or a FIFO: `np.save` writes into it (`-o /dev/null` discards the
/// result, `-o fifo` feeds a reader); shmpool replaces the node with a regular file (link
/// aside + rename over it). As root, `shmpool map x.npy -o /dev/null` would replace the
/// system's /dev/null with a 4 MB regular file. (Reproduced on a private `mknod` copy of
/// /dev/null and on a FIFO.)
#[test]
fn output_to_a_device_or_fifo_writes_into_it_and_never_replaces_the_node() {
    use std::os::unix::fs::FileTypeExt;
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..1000).map(f64::from).collect();
    let x = f64_npy(d.path(), "x.npy", &xs);
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A reader, so that a writer would not block.
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let _ = map(&x, &fifo, "x");
    let fifo_kept = std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo();
    drop(reader);
    let null = d.path().join("null");
    let dev = nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    );
    let mut kept_dev = true;
    if dev.is_ok() {
        let _ = map(&x, &null, "x");
        kept_dev = std::fs::symlink_metadata(&null).unwrap().file_type().is_char_device();
    }
    assert!(
        fifo_kept && kept_dev,
        "node replaced by a regular file: fifo kept {fifo_kept}, /dev/null copy kept {kept_dev}"
    );
}

fn prints(x: f64) -> f64 {
    println!("kernel {x}");
    x
}

/// Run by `forked_workers_do_not_repeat_the_programs_buffered_output` as a separate program.
#[test]
#[ignore = "run as a child program by another test"]
fn partial_line_program() {
    print!("PARTIAL-LINE ");
    let pool = Pool::builder().workers(2).chunk_len(1).start_method(StartMethod::Fork).build().unwrap();
    pool.map(&[1.0f64, 2.0, 3.0, 4.0], prints).unwrap();
    drop(pool);
    println!("done");
}

/// A program that has printed a partial line (`print!` without a newline: it sits in std's
/// stdout buffer) and then builds a `Fork` pool whose kernel prints: every forked worker
/// inherits the buffer and writes the partial line again with its first line. `Process::spawn`
/// flushes before forking for exactly this reason; pools do not.
#[test]
#[ignore = "known gap (a trade-off): Fork workers do not flush the parent's stdout before forking, since a logging thread would starve respawns; ForkServer and Spawn are not affected"]
fn forked_workers_do_not_repeat_the_programs_buffered_output() {
    let _serial = common::serial();
    let o = common::run_scenario("partial_line_program", Duration::from_secs(60));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert_eq!(out.matches("PARTIAL-LINE").count(), 1, "stdout:\n{out}");
}

/// "Any expression that parses runs": a 400,000-term expression (a long generated formula;
/// only the command line's argv limit keeps the CLI below ~130 KB) through the library under
/// every start method.
#[test]
fn a_very_long_expression_runs_under_every_method() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(300), || {
        let text: String =
            (0..400_000).map(|k| if k == 0 { "x".to_string() } else { format!("+x*{}", k % 7) }).collect();
        let prog = shmpool::kernel::expr::Program::compile(&text).expect("parses and compiles");
        let spec = shmpool::KernelSpec::expr::<f64, f64>(&prog).unwrap();
        for method in METHODS {
            let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
            let ys: Vec<f64> = pool
                .map(&[1.0f64, 2.0], spec.typed::<f64, f64>().unwrap())
                .unwrap_or_else(|e| panic!("{method:?}: {e}"));
            let per: f64 = 1.0 + (1..400_000).map(|k| (k % 7) as f64).sum::<f64>();
            assert_eq!(ys, [per, 2.0 * per], "{method:?}");
        }
    });
}

/// A program that ignores SIGCHLD (common in daemons; the disposition survives `exec`, so the
/// exec'd fork server inherits it) gets its children reaped by the kernel. The pool must still
/// work and drop promptly under every method: here each method builds a pool, loses a worker
/// to SIGKILL, maps, and is dropped; the times are reported.
#[test]
fn pools_in_a_program_that_ignores_sigchld_work_and_drop_promptly() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("res");
    let f2 = file.clone();
    common::watchdog(Duration::from_secs(120), move || {
        let child = Process::spawn(move || {
            // SAFETY: setting a signal disposition to SIG_IGN.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
            let mut report = Vec::new();
            for method in METHODS {
                let t = std::time::Instant::now();
                let r = (|| -> shmpool::Result<()> {
                    let pool = Pool::builder().workers(2).start_method(method).build()?;
                    let xs: Vec<f64> = (0..20_000).map(f64::from).collect();
                    assert_eq!(pool.map(&xs, f64::sqrt)?.len(), xs.len());
                    let victim = pool.pids()[0];
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(victim as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    std::thread::sleep(Duration::from_millis(50));
                    let ys = pool.map(&xs, f64::sqrt)?;
                    assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x.sqrt()));
                    drop(pool);
                    Ok(())
                })();
                report.push(format!(
                    "{method:?}: {:?} in {:.2} s",
                    r.err().map(|e| e.to_string()),
                    t.elapsed().as_secs_f64()
                ));
            }
            std::fs::write(&f2, report.join("\n")).unwrap();
        })
        .unwrap();
        let _ = child.join();
    });
    let report = std::fs::read_to_string(&file).unwrap_or_else(|_| "the child wrote no report".into());
    eprintln!("{report}");
    for line in report.lines() {
        let secs: f64 = line.rsplit(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(f64::MAX);
        assert!(line.contains(": None in") && secs < 2.0, "with SIGCHLD ignored: {report}");
    }
}

fn slowish(x: f64) -> f64 {
    let mut y = x;
    for _ in 0..2000 {
        y = (y * 1.000001).sqrt() + 0.5;
    }
    y
}

/// The fork server SIGKILLed (OOM killer, a stray `kill`) while one of its pools maps: the
/// map ends (error or right answer) in bounded time, and the next pool works (a new server).
#[test]
fn a_killed_fork_server_fails_its_pools_cleanly_and_is_replaced() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).chunk_len(256).start_method(StartMethod::ForkServer).build().unwrap();
        let server = shmpool::testing::fork_server_pid().unwrap();
        let xs: Vec<f64> = (0..200_000).map(f64::from).collect();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(server as i32), nix::sys::signal::Signal::SIGKILL);
        });
        let t = std::time::Instant::now();
        let r = pool.map(&xs, slowish);
        killer.join().unwrap();
        eprintln!("map with the server killed: {:?} after {:.2} s", r.as_ref().err(), t.elapsed().as_secs_f64());
        if let Ok(ys) = &r {
            assert!(ys.iter().zip(&xs).all(|(y, x)| *y == slowish(*x)));
        }
        let t = std::time::Instant::now();
        drop(pool);
        assert!(t.elapsed() < Duration::from_secs(2), "drop took {:?}", t.elapsed());
        let pool = Pool::builder().workers(2).start_method(StartMethod::ForkServer).build().unwrap();
        assert_ne!(shmpool::testing::fork_server_pid(), Some(server));
        assert_eq!(pool.map(&[4.0f64], f64::sqrt).unwrap(), [2.0]);
    });
}

/// Output "permissions like np.save": `np.save` over an existing file writes into it, so the
/// file keeps its owner and group (and every hard link sees the new data). shmpool links a
/// new file over it: run as root (sudo) over a user's file, the result belongs to root:root
/// (the user can no longer write it), and a second hard link keeps the old contents.
/// (Needs root to create a file owned by another user; skipped otherwise.)
#[test]
#[ignore = "design choice: outputs are published atomically under a new inode, so owner and other hard links are not kept"]
fn a_replaced_output_keeps_its_owner_and_hard_links_like_np_save() {
    use std::os::unix::fs::MetadataExt;
    let _serial = common::serial();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[1.0, 2.0]);
    let out = d.path().join("users.npy");
    std::fs::write(&out, b"old").unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let link = d.path().join("link.npy");
    std::fs::hard_link(&out, &link).unwrap();
    let o = map(&x, &out, "x * 2");
    assert!(o.status.success(), "{}", stderr(&o));
    let m = std::fs::metadata(&out).unwrap();
    let link_data = std::fs::read(&link).unwrap();
    assert!(
        (m.uid(), m.gid()) == (65534, 65534) && link_data != b"old",
        "owner {}:{} (was 65534:65534); hard link still holds the old data: {}",
        m.uid(),
        m.gid(),
        link_data == b"old"
    );
}

/// `shmpool map x.npy -o y.npy | head -0` (or `| true`, or a pager quit early): the summary
/// line hits a closed pipe and the CLI panics ("failed printing to stdout: Broken pipe",
/// exit 101, a backtrace with RUST_BACKTRACE) after having written the output; the built-in
/// dataset run panics with its pool alive. Documented exit codes are 0, 1, 2 and 128+N.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[1.0, 2.0]);
    let y = d.path().join("y.npy");
    let mut bad = Vec::new();
    for args in [
        vec![
            "map".to_string(),
            x.to_str().unwrap().into(),
            "-o".into(),
            y.to_str().unwrap().into(),
            "--expr".into(),
            "x".into(),
        ],
        vec!["map".into(), "-j".into(), "2".into(), "--len".into(), "1000".into(), "--repeat".into(), "1".into()],
    ] {
        let o = common::watchdog(Duration::from_secs(60), move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_shmpool"))
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take()); // the reader is gone
            child.wait_with_output().unwrap()
        });
        let err = stderr(&o);
        if err.contains("panicked") || o.status.code() == Some(101) {
            bad.push(format!("{:?}: {}", o.status, err.lines().take(3).collect::<Vec<_>>().join(" | ")));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// `gen` refuses overflowing lengths, but a zero-sized shape with a dimension above numpy's
/// limit (intp max, 2**63 - 1) is written: `gen --shape 0,18446744073709551615` exits 0 and
/// `np.load` refuses the file ("Maximum allowed dimension exceeded"); `map` copies such a
/// shape from its input into its output the same way.
#[test]
fn gen_refuses_dimensions_numpy_cannot_load() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("z.npy");
    let o = common::watchdog(Duration::from_secs(30), {
        let out = out.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_shmpool"))
                .args(["gen", out.to_str().unwrap(), "--shape", "0,18446744073709551615"])
                .output()
                .unwrap()
        }
    });
    assert!(!o.status.success(), "wrote {} (numpy cannot load a dimension > 2**63-1)", out.display());
}

/// "A forked child (`Process::spawn`) that builds its own pool", forked while another thread
/// builds the process's first pool: that thread is inside `sweep_once()` (a `std::sync::Once`
/// that sweeps stale segments, src/pool/builder.rs:354), the child inherits the `Once` in its
/// running state and its own `Pool::build` waits on it forever (gdb: futex_wait in
/// `Once::call` from `sweep_once`). `HOSTILE2_GDB=1` prints the hung child's stack. Other
/// process-wide locks taken by `build` (`SERVER` in `server::connect`) have the same
/// exposure in a smaller window.
#[test]
#[ignore = "known gap, intermittent (about 1 child in several hundred): shmpool's own Once/locks are fork-safe now, but a Process::spawn child of a threaded program can still inherit a std lock (output capture, panic hook) held by another thread and hang in its own pool build; Process::spawn_fn is the documented choice there"]
fn a_forked_child_builds_a_pool_while_other_threads_build_pools() {
    let _serial = common::serial();
    // In a fresh process, so that its first pool build is the one racing the fork.
    let o = common::run_scenario("forked_child_scenario", Duration::from_secs(170));
    assert!(o.status.success(), "{}", stderr(&o).lines().filter(|l| l.contains("hung")).collect::<Vec<_>>().join("\n"));
}

/// The body of `a_forked_child_builds_a_pool_while_other_threads_build_pools`, run as a
/// separate program.
#[test]
#[ignore = "run as a child program by another test"]
fn forked_child_scenario() {
    common::watchdog(Duration::from_secs(160), || {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let builders: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let p = Pool::builder().workers(1).start_method(StartMethod::ForkServer).build().unwrap();
                        drop(p);
                    }
                })
            })
            .collect();
        let mut hung = 0;
        let mut tried = 0;
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(10) && hung == 0 {
            tried += 1;
            let child = Process::spawn(|| {
                let pool = Pool::builder().workers(1).start_method(StartMethod::ForkServer).build().unwrap();
                assert_eq!(pool.map(&[4.0f64], f64::sqrt).unwrap(), [2.0]);
            })
            .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while child.is_alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if child.is_alive() {
                hung += 1;
                let pid = child.pid();
                let kids = children_of(pid);
                let wchan = |p: u32| std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default();
                eprintln!(
                    "hung child {pid}: wchan {} (threads {}), its children {:?} wchan {:?}",
                    wchan(pid),
                    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0),
                    kids,
                    kids.iter().map(|&k| wchan(k)).collect::<Vec<_>>()
                );
                if std::env::var_os("HOSTILE2_GDB").is_some() {
                    let bt =
                        Command::new("gdb").args(["-p", &pid.to_string(), "-batch", "-ex", "bt"]).output().unwrap();
                    eprintln!("{}", String::from_utf8_lossy(&bt.stdout));
                }
                for k in kids {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(k as i32), nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.kill();
            }
            let _ = child.join();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for b in builders {
            b.join().unwrap();
        }
        assert_eq!(hung, 0, "a forked child's Pool::build hung (after {tried} children)");
    });
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Ctrl-C in a terminal signals the whole foreground process group: a program that handles
/// SIGINT and carries on (a REPL, "press Ctrl-C again to quit") expects its pools to keep
/// working. Workers killed by the SIGINT are replaced under `Fork` and `Spawn`; under
/// `ForkServer` the server (same process group, default disposition after `exec`) dies too,
/// and every later map of the pool fails ("pool is broken: sendmsg failed").
#[test]
fn pools_survive_a_process_group_sigint_the_program_handles() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("res");
    let f2 = file.clone();
    common::watchdog(Duration::from_secs(120), move || {
        let child = Process::spawn(move || {
            // SAFETY: plain libc calls on this (forked, single-threaded) process.
            unsafe {
                libc::setpgid(0, 0);
                libc::signal(libc::SIGINT, ignore_signal as *const () as libc::sighandler_t);
            }
            let mut report = Vec::new();
            for method in METHODS {
                let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
                assert_eq!(pool.map(&[4.0f64], f64::sqrt).unwrap(), [2.0]);
                // SAFETY: signals our own process group (this process, its pool's processes).
                unsafe { libc::kill(0, libc::SIGINT) };
                std::thread::sleep(Duration::from_millis(200));
                let xs: Vec<f64> = (0..10_000).map(f64::from).collect();
                let r = pool.map(&xs, f64::sqrt).map(|ys| ys.len());
                report.push(format!("{method:?}: {r:?}"));
            }
            std::fs::write(&f2, report.join("\n")).unwrap();
        })
        .unwrap();
        let _ = child.join();
    });
    let report = std::fs::read_to_string(&file).unwrap_or_else(|_| "the child wrote no report".into());
    assert!(report.lines().count() == 3 && report.lines().all(|l| l.ends_with("Ok(10000)")), "after Ctrl-C:\n{report}");
}
