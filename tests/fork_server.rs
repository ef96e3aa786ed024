//! The fork server: a dead server costs a restart, never a pool; it keeps none of the program's
//! descriptors and leaks none of its own, serves pools from many threads, and dies with its
//! program. Its one child program is a scenario (tests/common/scenario.rs).

mod common;

scenarios!(forked_child_scenario);

use std::process::Command;
use std::time::Duration;

use common::npy_files::stderr;
use common::start::{pool, ppid, METHODS};
use shmpool::{Pool, Process, StartMethod};

fn kill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Waits until every worker of `pool` is a live child of a fork server other than `old`, and
/// returns that server.
fn wait_for_workers_of_a_new_server(pool: &shmpool::Pool, old: u32) -> u32 {
    loop {
        let pids = pool.pids();
        if let Some(server) = shmpool::testing::fork_server_pid() {
            if server != old
                && pids.len() == pool.workers()
                && pids.iter().all(|&p| common::pid_alive(p) && ppid(p) == Some(server))
            {
                return server;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_killed_fork_server_is_restarted_and_its_pools_get_their_workers_back() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let a = pool(StartMethod::ForkServer, 2);
        let b = pool(StartMethod::ForkServer, 1);
        let xs: Vec<f64> = (0..20_000).map(f64::from).collect();
        let want: Vec<f64> = xs.iter().map(|x| x * 3.0).collect();
        assert_eq!(a.map(&xs, |x: f64| x * 3.0).unwrap(), want);
        let mut server = shmpool::testing::fork_server_pid().expect("a fork server runs");
        for round in 0..3 {
            // As the OOM killer would: no warning, no clean-up.
            kill(server);
            let next = wait_for_workers_of_a_new_server(&a, server);
            assert_eq!(wait_for_workers_of_a_new_server(&b, server), next, "round {round}: one new server");
            assert!(
                !std::path::Path::new(&format!("/proc/{server}")).exists(),
                "round {round}: the dead server was reaped"
            );
            server = next;
            assert_eq!(a.map(&xs, |x: f64| x * 3.0).unwrap(), want, "round {round}: pool a maps");
            assert_eq!(b.map(&xs, |x: f64| x * 3.0).unwrap(), want, "round {round}: pool b maps");
            // A pool built now uses the new server.
            let c = pool(StartMethod::ForkServer, 1);
            assert_eq!(c.map(&xs, |x: f64| x * 3.0).unwrap(), want, "round {round}: a new pool maps");
            assert!(c.pids().iter().all(|&p| ppid(p) == Some(server)));
        }
        drop((a, b));
        common::start::assert_nothing_leaked();
    });
}

#[test]
fn a_fork_server_killed_in_the_middle_of_a_map_costs_a_retry_not_the_map() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = shmpool::Pool::builder()
            .workers(2)
            .chunk_len(20_000)
            .pause_point(shmpool::testing::PausePoint::MidKernel)
            .start_method(StartMethod::ForkServer)
            .build()
            .unwrap();
        let server = shmpool::testing::fork_server_pid().expect("a fork server runs");
        let xs: Vec<f64> = (0..200_000).map(f64::from).collect();
        let mut killed = false;
        std::thread::scope(|s| {
            let h = s.spawn(|| pool.map(&xs, |x: f64| x * 0.5));
            // The first workers stop themselves in the middle of a chunk: kill their server
            // then, which takes them with it.
            while !h.is_finished() {
                if !killed && pool.pids().iter().any(|&p| common::proc_state(p) == Some('T')) {
                    kill(server);
                    killed = true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let ys = h.join().unwrap().unwrap();
            assert!(xs.iter().zip(&ys).all(|(x, y)| *y == x * 0.5));
        });
        assert!(killed, "no worker paused");
        let next = wait_for_workers_of_a_new_server(&pool, server);
        assert!(pool.pids().iter().all(|&p| ppid(p) == Some(next)));
        assert_eq!(pool.map(&[8.0f64], |x: f64| x * 0.5).unwrap(), [4.0]);
    });
}

/// Where the child of [`an_execd_fork_server_outlives_the_thread_that_started_it_but_not_its_program`]
/// leaves its fork server's pid (named by the test process's pid, the child's parent).
fn execd_server_pid_file(test_pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shmpool_fork_server_execd_{test_pid}"))
}

/// The child: builds a ForkServer pool from a thread that then ends (two threads run at the
/// build, so the server is exec'd, not forked), maps with it after that thread is gone, then
/// SIGSTOPs the server and exits with the pool alive.
fn build_on_a_thread_stop_the_server_and_exit(_: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (pool, server) = std::thread::spawn(|| {
        let pool = pool(StartMethod::ForkServer, 2);
        let server = shmpool::testing::fork_server_pid().expect("a fork server runs");
        (pool, server)
    })
    .join()
    .unwrap();
    assert_eq!(pool.map(&[1.0f64, 2.0], |x: f64| x * 2.0).unwrap(), vec![2.0, 4.0]);
    assert_eq!(
        shmpool::testing::fork_server_pid(),
        Some(server),
        "the server died with the thread that built the pool"
    );
    assert!(common::pid_alive(server));
    assert!(common::start::exec_started(server), "the fork server was forked, not exec'd");
    std::fs::write(execd_server_pid_file(std::os::unix::process::parent_id()), server.to_string()).unwrap();
    kill(Pid::from_raw(server as i32), Signal::SIGSTOP).unwrap();
    while common::proc_state(server) != Some('T') {
        std::thread::yield_now();
    }
    std::mem::forget(pool);
    std::process::exit(0);
}

/// An exec'd fork server dies with its program even when stopped (a stopped process never sees
/// its control socket close: `PR_SET_PDEATHSIG`), yet not with the thread that happened to
/// start it (it is spawned from a keeper thread that lives as long as the program).
#[test]
fn an_execd_fork_server_outlives_the_thread_that_started_it_but_not_its_program() {
    let _g = common::serial();
    let file = execd_server_pid_file(std::process::id());
    let _ = std::fs::remove_file(&file);
    let p = shmpool::Process::spawn_fn(build_on_a_thread_stop_the_server_and_exit, 0u32).unwrap();
    let ok = common::watchdog(Duration::from_secs(60), move || p.join().unwrap().success());
    assert!(ok, "the child failed (its stderr above says how)");
    let server: u32 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    let _ = std::fs::remove_file(&file);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::pid_alive(server) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphan = common::pid_alive(server);
    if orphan {
        // Let it run, so that it sees its socket closed and exits with its workers.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server as i32), nix::sys::signal::Signal::SIGCONT);
    }
    assert!(!orphan, "fork server {server} outlived its program by 10 s");
}

// ---------------------------------------------------------------------------------------------
// The fork server: inherited descriptors, many threads, descriptor leaks, the death of its
// program or of itself, and a forked child building a pool while other threads do.
// ---------------------------------------------------------------------------------------------

/// Descriptors of the pipe with this inode in `pid`'s table.
fn holds_inode(pid: u32, inode: u64) -> bool {
    let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == format!("pipe:[{inode}]")))
}

/// A descriptor the program holds without close-on-exec (inherited from its own parent: a
/// make/cargo jobserver pipe, a `3>file` redirection) is not kept open by shmpool's helpers after
/// the program closes it, or a reader waiting for EOF on that pipe would wait for as long as the
/// program lives. Forked and spawned workers close everything but their socket (`drop_inherited`),
/// and so does the fork server, the exec'd one included (the default in a threaded program, or in
/// one that calls `init()`), which once kept every inherited descriptor.
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
            // Lives until the test kills it (at most 30 s: a failed test leaves nothing for long).
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
                            // The stimulus: terminate `b` while its map starts.
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
    while !common::children_of(server).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "fork server still has workers: {:?}",
            common::children_of(server)
        );
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
        let idle = || common::children_of(server).is_empty();
        common::wait_until(Duration::from_secs(20), "the warm-up pool's worker exits", idle);
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
        // Every pool is gone once the server has no worker left; its descriptors go with it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (mine1, server1) = (fd_count(me), fd_count(server));
            if mine1 <= mine0 + 2 && server1 <= server0 && common::children_of(server).is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fds: program {mine0} -> {mine1}, server {server0} -> {server1}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// "Workers die with the program under every method", also when the SIGKILLed program had forked a
/// child of its own that is still alive (plain `fork()`, as a daemonising helper or another library
/// does; not `Process::spawn`, which closes the fork server's control socket). The server once
/// outlived such a program with its workers for as long as the bystander lived: it had no
/// `PR_SET_PDEATHSIG` and only watched its control socket, which the raw-forked child inherited.
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
            // Lives until the test kills it (at most 30 s: a failed test leaves nothing for long).
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
            // The stimulus: kill the server during the map (which takes far longer).
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
        // A watchdog, not a measurement: a drop waiting on the dead server would hang.
        assert!(t.elapsed() < Duration::from_secs(20), "drop hung for {:?}", t.elapsed());
        let pool = Pool::builder().workers(2).start_method(StartMethod::ForkServer).build().unwrap();
        assert_ne!(shmpool::testing::fork_server_pid(), Some(server));
        assert_eq!(pool.map(&[4.0f64], f64::sqrt).unwrap(), [2.0]);
    });
}

/// "A forked child (`Process::spawn`) that builds its own pool", forked while another thread
/// builds the process's first pool: that thread is inside `sweep_once()` (a `std::sync::Once`
/// that sweeps stale segments, src/pool/builder.rs:354), the child inherits the `Once` in its
/// running state and its own `Pool::build` waits on it forever (gdb: futex_wait in
/// `Once::call` from `sweep_once`). `SHMPOOL_TEST_GDB=1` prints the hung child's stack. Other
/// process-wide locks taken by `build` (`SERVER` in `server::connect`) have the same
/// exposure in a smaller window.
#[test]
#[ignore = "known gap (README: Known gaps), intermittent (about 1 child in several hundred): shmpool's own Once/locks are fork-safe now, but a Process::spawn child of a threaded program can still inherit a std lock (output capture, panic hook) held by another thread and hang in its own pool build; Process::spawn_fn is the documented choice there"]
fn a_forked_child_builds_a_pool_while_other_threads_build_pools() {
    let _serial = common::serial();
    // In a fresh process, so that its first pool build is the one racing the fork.
    let o = common::run_scenario("forked_child_scenario", Duration::from_secs(170));
    assert!(o.status.success(), "{}", stderr(&o).lines().filter(|l| l.contains("hung")).collect::<Vec<_>>().join("\n"));
}

/// The body of `a_forked_child_builds_a_pool_while_other_threads_build_pools`, run as a
/// separate program (a scenario).
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
                let kids = common::children_of(pid);
                let wchan = |p: u32| std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default();
                eprintln!(
                    "hung child {pid}: wchan {} (threads {}), its children {:?} wchan {:?}",
                    wchan(pid),
                    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0),
                    kids,
                    kids.iter().map(|&k| wchan(k)).collect::<Vec<_>>()
                );
                if std::env::var_os("SHMPOOL_TEST_GDB").is_some() {
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
