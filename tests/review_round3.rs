//! Third-round review of issue 14 (trust) and issue 15's folded map API: each test is a
//! promise the README, the crate docs or the issue makes, broken from safe user code. Every
//! test here FAILS on the reviewed code (branch r14 at 450548f); none is `#[ignore]`d so that
//! the breaks stay visible until they are fixed.

mod common;

use std::time::Duration;

use shmpool::prelude::*;

/// Adds its input to whatever its output holds: any stale output shows as a wrong sum.
fn acc(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += *x;
    }
}

/// Runs `f` under tests/common's watchdog (a hang fails the test, a panic is re-raised).
fn watchdog<R: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    eprintln!("watchdog {secs} s: {what}");
    common::watchdog(Duration::from_secs(secs), f)
}

fn wrong(got: &[f64], want: &[f64]) -> usize {
    got.iter().zip(want).filter(|(g, w)| g.to_bits() != w.to_bits()).count()
}

/// Issue 14 item 1 ("output buffers a kernel writes into start zeroed"; README: a chunk kernel
/// never sees another map's output). A `SharedVec` input with a plain (`Vec`/slice) output
/// takes the `(Data::Shared, Sink::Plain)` path of src/pool/api.rs:299: the output is a recycled
/// staging buffer, but `map_shared` marks it `Dest::Caller` (src/pool/mod.rs:522), so the workers do not zero it (run.rs:209) and
/// `acc` returns x, 2x, 3x for the same call.
#[test]
fn chunk_kernel_over_a_shared_vec_into_a_plain_output_starts_from_zeros() {
    let _g = common::serial();
    let pool = Pool::builder().workers(2).build().unwrap();
    let n = 300_000;
    let xs: Vec<f64> = (0..n).map(|i| (i % 997) as f64 + 1.0).collect();
    let shared = SharedVec::from_slice(&xs).unwrap();
    for round in 0..3 {
        let ys: Vec<f64> = pool.map(&shared, acc).unwrap();
        assert_eq!(wrong(&ys, &xs), 0, "map(&SharedVec, chunk) round {round}: the kernel saw an earlier map's output");
        let mut out = vec![0.0f64; n];
        pool.map_into(&shared, &mut out, acc).unwrap();
        assert_eq!(wrong(&out, &xs), 0, "map_into(&SharedVec, &mut Vec, chunk) round {round}");
    }
    drop(pool);
    common::assert_nothing_leaked();
}

/// Issue 14 item 1 and issue 15 (ndarray: "non-contiguous views handled correctly"): a
/// `SharedArray` input into a non-contiguous (transposed) ndarray output is scattered from a
/// buffer staged through the same unzeroed path: the chunk kernel sees the previous map's
/// results, from another caller's map just as well.
#[test]
fn chunk_kernel_over_a_shared_array_into_a_transposed_view_starts_from_zeros() {
    use ndarray::Array2;
    use shmpool::nd::SharedArray;
    let _g = common::serial();
    let pool = Pool::builder().workers(2).build().unwrap();
    let a = Array2::from_shape_fn((400, 500), |(i, j)| (i * 500 + j) as f64 + 1.0);
    let s = SharedArray::from_array(&a).unwrap();
    for round in 0..3 {
        let mut out = Array2::<f64>::zeros((500, 400));
        let mut view = out.view_mut().reversed_axes(); // (400, 500), not standard layout
        pool.map_into(&s, &mut view, acc).unwrap();
        let bad = out.t().iter().zip(a.iter()).filter(|(g, w)| g != w).count();
        assert_eq!(bad, 0, "round {round}: the kernel saw an earlier map's output");
    }
}

/// Adds each row's sum to what its output row holds (a row kernel that accumulates).
fn row_sum_acc(x: &[f64], y: &mut [f64]) {
    y[0] += x.iter().sum::<f64>();
}

/// Adds its input and the table's length to what its output holds.
fn table_acc(x: &[f64], y: &mut [f64], t: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += *x + t.len() as f64;
    }
}

/// Issue 15 / merge 450548f ("row and table kernels get zeroed outputs") and issue 14 item 1:
/// a row kernel and a table kernel over a `SharedVec` whose results come back as a `Vec`
/// (`pool.map(&shared, kernel)`, the first line of the README's table) accumulate into the
/// previous map's rows: the second call returns twice the row sums.
#[test]
fn row_and_table_kernels_over_a_shared_vec_start_from_zeros() {
    let _g = common::serial();
    let pool = Pool::builder().workers(2).build().unwrap();
    let xs: Vec<f64> = (0..300_000).map(|i| (i % 1000) as f64).collect();
    let shared = SharedVec::from_slice(&xs).unwrap();
    let rows: Vec<f64> = xs.chunks(3).map(|c| c.iter().sum()).collect();
    let table = [0.5f64; 4];
    let tabled: Vec<f64> = xs.iter().map(|x| x + 4.0).collect();
    for round in 0..3 {
        let got = pool.map(&shared, row_sum_acc.by_rows(3, 1)).unwrap();
        assert_eq!(wrong(&got, &rows), 0, "row kernel, round {round}: it saw an earlier map's rows");
        let got = pool.map(&shared, table_acc.with_table(&table)).unwrap();
        assert_eq!(wrong(&got, &tabled), 0, "table kernel, round {round}: it saw an earlier map's output");
    }
}

/// README, "What shmpool promises": "A worker killed at any instant costs a retry, never a hang
/// or a wrong answer", together with "A `SharedVec` of the caller's reaches the kernel as it
/// is" (accumulating into it is the caller's choice, tests/output_buffers.rs): a worker that
/// is killed after its kernel wrote the caller's array but before it published the chunk
/// (PausePoint::BeforePublish) gets its chunk redone on top of its own output, so `y += x`
/// adds x twice there, unless the chunk runs through a scratch area that is marked complete
/// before the copy into the caller's range (`Descriptor::VIA_SCRATCH`): a retry then only
/// redoes the copy. That backup is `PoolBuilder::backup_outputs(true)` (off by default: it
/// costs W1's chunk form 1.85x).
#[test]
fn a_retried_chunk_into_the_callers_shared_vec_does_not_apply_the_kernel_twice() {
    use shmpool::testing::PausePoint;
    let _g = common::serial();
    watchdog(60, "retry into a SharedVec", || {
        let pool = Pool::builder()
            .workers(2)
            .chunk_len(1_000)
            .backup_outputs(true)
            .pause_point(PausePoint::BeforePublish)
            .build()
            .unwrap();
        let n = 100_000;
        let xs = SharedVec::from_slice(&(0..n).map(|i| (i % 997) as f64 + 1.0).collect::<Vec<_>>()).unwrap();
        let mut ys = SharedVec::from_slice(&vec![1.0f64; n]).unwrap();
        let (r, killed) = common::with_paused_killed(&pool, || pool.map_into(&xs, &mut ys, acc));
        r.unwrap();
        assert!(killed >= 1, "no worker paused before publishing");
        let want: Vec<f64> = xs.iter().map(|x| x + 1.0).collect();
        assert_eq!(wrong(&ys, &want), 0, "a retried chunk added its input twice ({killed} workers killed)");
    });
    common::assert_nothing_leaked();
}

/// The child of [`a_fork_server_started_during_a_descriptor_shortage_serves_pools_after_it`]:
/// builds ForkServer pools under RLIMIT_NOFILE = (descriptors open) + k for k = 0, 1, ... (a
/// transient shortage, each build's limit restored right after it) until one of them started
/// the fork server; then, with the limit back to normal, builds a pool and maps.
fn fork_server_after_emfile(_: u32) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use shmpool::StartMethod;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let mut k = 0;
    while shmpool::testing::fork_server_pid().is_none() {
        assert!(k < 256, "no fork server started");
        setrlimit(Resource::RLIMIT_NOFILE, open + k, hard).unwrap();
        let r = Pool::builder().workers(2).start_method(StartMethod::ForkServer).build().map(drop);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        eprintln!("limit open+{k}: {r:?}");
        k += 1;
    }
    for round in 0..3 {
        let r = Pool::builder()
            .workers(2)
            .start_method(StartMethod::ForkServer)
            .build()
            .and_then(|p| p.map(&[1.0f64, 2.0], |x: f64| x * 2.0));
        assert!(matches!(&r, Ok(v) if v == &[2.0, 4.0]), "round {round}: a pool built with the limit restored: {r:?}");
    }
}

/// Issue 14 items 3 and 4 ("a dead fork server costs a restart, never the pool"; "a transient
/// shortage ... is retried"): a fork server that happens to be started while the program is
/// short of descriptors (EMFILE) inherits that RLIMIT_NOFILE for the rest of the program's
/// life. Once the program's limit is back, every later ForkServer pool still fails
/// ("recvmsg: UnexpectedEof", "pidfd_open: ESRCH": the server cannot give its workers their
/// descriptors), and the server is alive, so it is never replaced. Run in a fresh process
/// (`Process::spawn_fn`) because the fork server is per process. Cause: src/process/server.rs
/// `start_forked` (the server keeps the limit of the instant it was forked).
#[test]
fn a_fork_server_started_during_a_descriptor_shortage_serves_pools_after_it() {
    let _g = common::serial();
    let ok = watchdog(120, "fork server after EMFILE", || {
        let p = shmpool::Process::spawn_fn(fork_server_after_emfile, 0u32).unwrap();
        p.join().unwrap().success()
    });
    assert!(ok, "the child's pools failed after a transient EMFILE (its stderr above says how)");
}

/// Where the child of [`a_stopped_fork_server_does_not_outlive_its_program`] leaves its fork
/// server's pid (named by the test process's pid, which is the child's parent).
fn server_pid_file(test_pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shmpool_review3_server_{test_pid}"))
}

/// The child: builds a ForkServer pool, writes its server's pid down, SIGSTOPs the server (a
/// debugger, a `kill -STOP`, a stray SIGSTOP to the wrong pid) and exits with the pool alive.
fn stop_the_server_then_exit(_: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pool = Pool::builder().workers(2).start_method(shmpool::StartMethod::ForkServer).build().unwrap();
    let server = shmpool::testing::fork_server_pid().expect("a fork server runs");
    std::fs::write(server_pid_file(std::os::unix::process::parent_id()), server.to_string()).unwrap();
    kill(Pid::from_raw(server as i32), Signal::SIGSTOP).unwrap();
    while common::proc_state(server) != Some('T') {
        std::thread::yield_now();
    }
    std::mem::forget(pool); // the program ends with its pool: nothing may outlive it
    std::process::exit(0);
}

/// Crate docs, "Failure model" ("the fork server's workers die with the server, which exits
/// when the program's end of its socket closes") and issue 14 (d: no orphan processes after
/// any failure): a fork server that is stopped when its program ends never sees the socket
/// close, and has no `PR_SET_PDEATHSIG`, so it stays forever, reparented to init, in state T,
/// holding its workers as zombies and their pidfds. Cause: src/process/server.rs
/// `start_forked` / `serve` rely only on the control socket's EOF (and `getppid` polling),
/// which a stopped process never runs.
#[test]
fn a_stopped_fork_server_does_not_outlive_its_program() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _g = common::serial();
    let file = server_pid_file(std::process::id());
    let _ = std::fs::remove_file(&file);
    let p = shmpool::Process::spawn_fn(stop_the_server_then_exit, 0u32).unwrap();
    assert!(watchdog(60, "the child", move || p.join().unwrap().success()), "the child failed");
    let server: u32 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    let _ = std::fs::remove_file(&file);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::pid_alive(server) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphan = common::pid_alive(server);
    if orphan {
        // Clean up what the test left: let the server run, so that it sees its socket closed
        // and exits with its workers (never a kill by name).
        let _ = kill(Pid::from_raw(server as i32), Signal::SIGCONT);
    }
    assert!(!orphan, "fork server {server} outlived its program by 10 s (stopped, reparented to init)");
}

/// Issue 14 items 3 and 4 ("a dead fork server costs a restart, never the pool"; a shortage
/// during a respawn is retried, "a stopped worker costs at most its own share") and the
/// README ("a pool left with no worker at all for 5 s fails its maps"): with the fork server
/// stopped (SIGSTOP: a debugger, a stray signal; it is alive, so it is never replaced) and one
/// of two workers killed, a map that the surviving worker could run alone instead fails with
/// `PoolBroken` ("no worker could be started for 5 s ... fork server failed: timed out"), after
/// tens of seconds, and the pool is broken for good. Cause: the replacement waits for the
/// server's answer synchronously (src/process/server.rs ANSWER_TIMEOUT, `forked`) and a
/// server that does not answer is neither replaced nor bypassed.
#[test]
fn a_stopped_fork_server_does_not_break_a_pool_that_still_has_a_worker() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _g = common::serial();
    let pool = Pool::builder().workers(2).start_method(shmpool::StartMethod::ForkServer).build().unwrap();
    let server = shmpool::testing::fork_server_pid().expect("a fork server runs");
    kill(Pid::from_raw(server as i32), Signal::SIGSTOP).unwrap();
    let victim = pool.pids()[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let xs: Vec<f64> = (0..100_000).map(|i| i as f64).collect();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| (0..5).map(|_| pool.map(&xs, |x: f64| x + 1.0).map(|v| v[99_999])).collect::<Vec<_>>());
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let done = h.is_finished();
        // Let the server run again whatever happened, so that nothing stays stopped (it may
        // be gone: a pool that found it stopped killed, reaped and replaced it).
        let _ = kill(Pid::from_raw(server as i32), Signal::SIGCONT);
        assert!(done, "maps still running 120 s after the fork server was stopped");
        h.join().unwrap()
    });
    let deaths = pool.death_log();
    assert!(
        r.iter().all(|m| matches!(m, Ok(v) if *v == 100_000.0)),
        "maps with one live worker: {r:?}; deaths {deaths:?}"
    );
}
