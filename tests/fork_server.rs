//! The fork server: a dead server costs a restart, never a pool.

mod common;

use std::time::Duration;

use common::start::{pool, ppid};
use shmpool::StartMethod;

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
