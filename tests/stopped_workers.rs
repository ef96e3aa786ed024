//! A stopped worker (SIGSTOP, a debugger) costs at most its own share: an idle worker stopped
//! while it holds the spinner token has the token taken over, and small maps are served by the
//! other workers without waiting for a sleeper's timeout.

mod common;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmpool::Pool;

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).expect("the worker is ours and alive");
}

/// Waits (bounded by the test's watchdog) until `pid` shows state `T` (stopped).
fn wait_stopped(pid: u32) {
    while common::proc_state(pid) != Some('T') {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_idle_worker_stopped_while_spinning_has_its_token_taken_over() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        // A long spin window, so the test can catch the spinner with its token and stop it.
        let pool = Pool::builder().workers(2).spin(Duration::from_secs(2)).build().unwrap();
        let xs = [1.0f64, 4.0, 9.0, 16.0];
        let stopped = loop {
            assert_eq!(pool.map(&xs, f64::sqrt).unwrap(), [1.0, 2.0, 3.0, 4.0]);
            // The worker that ran the chunk now spins with the token (for 2 s, nothing wakes it).
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut s = pool.spinner_for_test();
            while s == 0 && Instant::now() < deadline {
                std::thread::yield_now();
                s = pool.spinner_for_test();
            }
            if s == 0 {
                continue;
            }
            signal(s, Signal::SIGSTOP);
            wait_stopped(s);
            if pool.spinner_for_test() == s {
                break s;
            }
            // It gave the token back just before the stop: try again.
            signal(s, Signal::SIGCONT);
        };
        // Small maps keep working with the other worker while the stopped one stays stopped.
        for round in 0..20 {
            let ys = pool.map(&xs, |x: f64| x * 2.0).unwrap();
            assert_eq!(ys, [2.0, 8.0, 18.0, 32.0], "round {round}");
            let t = pool.submit(&xs, |x: f64| x + 1.0).unwrap();
            assert_eq!(t.wait().unwrap(), [2.0, 5.0, 10.0, 17.0], "round {round}");
        }
        // The mechanism: the stopped worker no longer holds the token (on the old code it kept
        // it forever, and every map waited for the other worker's 1 s idle timeout).
        assert_ne!(pool.spinner_for_test(), stopped, "the stopped worker still holds the spinner token");
        assert_eq!(common::proc_state(stopped), Some('T'), "the stopped worker was resumed");
        assert!(pool.pids().contains(&stopped), "the stopped worker was replaced, not worked around");
        // Resumed, it gives back nothing it no longer holds and serves again.
        signal(stopped, Signal::SIGCONT);
        assert_eq!(pool.map(&xs, f64::sqrt).unwrap(), [1.0, 2.0, 3.0, 4.0]);
    });
    common::assert_nothing_leaked();
}

#[test]
fn a_ticket_bumped_for_a_stopped_spinner_is_still_run_while_nobody_waits() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).spin(Duration::from_secs(2)).build().unwrap();
        let xs = [1.0f64, 4.0];
        let stopped = loop {
            assert_eq!(pool.map(&xs, f64::sqrt).unwrap(), [1.0, 2.0]);
            let s = pool.spinner_for_test();
            if s == 0 {
                continue;
            }
            signal(s, Signal::SIGSTOP);
            wait_stopped(s);
            if pool.spinner_for_test() == s {
                break s;
            }
            signal(s, Signal::SIGCONT);
        };
        // Submit and only poll with `try_wait` (no blocking wait): the chunk was bumped for the
        // stopped spinner; the poll's own check or the supervisor's tick takes the token over
        // and wakes the other worker.
        let mut t = pool.submit(&xs, |x: f64| x * 3.0).unwrap();
        let r = loop {
            if let Some(r) = t.try_wait().transpose() {
                break r;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(r.unwrap(), [3.0, 12.0]);
        assert_eq!(common::proc_state(stopped), Some('T'), "the stopped worker was resumed");
        signal(stopped, Signal::SIGCONT);
    });
    common::assert_nothing_leaked();
}
