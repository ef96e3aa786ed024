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
