//! Signals the program handles, and job control: a handled signal interrupting the pool's
//! waits (EINTR) is retried, never taken for a timeout; group signals meant for the program
//! (a Ctrl-C it handles included) reach neither the fork server nor spawned workers; a program
//! that ignores SIGCHLD keeps working pools. The child programs are scenarios
//! (tests/common/scenario.rs).

mod common;

scenarios!(job_control_program, stopped_program);

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start::{pool, METHODS, SAFE_METHODS};
use shmpool::{Pool, Process, StartMethod};

extern "C" fn noop(_: libc::c_int) {}

/// Installs a handler that does nothing for `sig`, without `SA_RESTART`: every blocking call
/// it lands in returns EINTR, as with a program's own handler.
fn handle_with_noop(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags); the handler is an
    // async-signal-safe function that touches nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Sends `sig` to every thread of this process (the supervisor threads included) over and
/// over, until dropped.
struct Blaster {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Blaster {
    fn start(sig: libc::c_int) -> Blaster {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let me = std::process::id() as libc::pid_t;
            // SAFETY: gettid has no preconditions.
            let own = unsafe { libc::gettid() };
            let mut sent = 0u64;
            while !s.load(Ordering::Relaxed) {
                let tids: Vec<libc::pid_t> = std::fs::read_dir("/proc/self/task")
                    .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                for tid in tids.into_iter().filter(|&t| t != own) {
                    // SAFETY: tgkill takes integers; a thread that has exited meanwhile only
                    // makes it fail with ESRCH.
                    if unsafe { libc::syscall(libc::SYS_tgkill, me, tid, sig) } == 0 {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(300)); // the signals' pace: the stimulus
            }
            sent
        });
        Blaster { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for Blaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Kills one worker of `pool` and waits until the pool has replaced it and maps again.
fn kill_one_and_wait_for_replacement(pool: &shmpool::Pool, method: StartMethod) {
    let before = pool.pids();
    let victim = before[0];
    let respawns = pool.respawns();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The replacement is counted a moment before the pool's pid list shows it.
    let now = loop {
        let now = pool.pids();
        if pool.respawns() != respawns && !now.contains(&victim) && now.len() == before.len() {
            break now;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(now.len(), before.len(), "{method:?}: every worker replaced ({before:?} -> {now:?})");
    assert!(!now.contains(&victim), "{method:?}: the dead worker is gone from the pool");
    let xs: Vec<f64> = (0..10_000).map(f64::from).collect();
    assert_eq!(pool.map(&xs, |x: f64| x * 2.0).unwrap()[9_999], 19_998.0, "{method:?}: map after the respawn");
}

#[test]
fn handled_signals_during_builds_and_respawns_do_not_break_spawn_or_fork_server_pools() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(300), || {
        handle_with_noop(libc::SIGUSR1);
        let blaster = Blaster::start(libc::SIGUSR1);
        let start = Instant::now();
        for method in SAFE_METHODS {
            for round in 0..20 {
                let p = pool(method, 2);
                let xs: Vec<f64> = (0..5_000).map(f64::from).collect();
                let ys = p.map(&xs, |x: f64| x + 1.0).unwrap_or_else(|e| panic!("{method:?} round {round}: {e}"));
                assert_eq!(ys[4_999], 5_000.0);
                // Reserving a segment's pages (older kernels' tmpfs stops at any signal).
                let big = p.alloc::<f64>(1 << 20).unwrap_or_else(|e| panic!("{method:?} round {round}: {e}"));
                assert_eq!(big.len(), 1 << 20);
                if round % 5 == 0 {
                    kill_one_and_wait_for_replacement(&p, method);
                }
            }
        }
        let sent = blaster.finish();
        assert!(sent > 0, "signals were sent ({sent} in {:?})", start.elapsed());
        common::start::assert_nothing_leaked();
    });
}

/// The job-control test's program (run in a process group of its own by
/// [`group_signals_for_the_program_reach_neither_the_fork_server_nor_spawned_workers`]): it
/// handles every job-control signal, builds a `ForkServer` and a `Spawn` pool, reports the
/// helper processes, and after the test has signalled its group checks that they all still
/// serve. A scenario.
fn job_control_program() {
    use std::io::{BufRead, Write};
    // A SIGQUIT that did reach a helper must not leave a core file behind.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0).unwrap();
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGTSTP, libc::SIGINT] {
        handle_with_noop(sig);
    }
    let served = pool(StartMethod::ForkServer, 2);
    let spawned = pool(StartMethod::Spawn, 2);
    let xs: Vec<f64> = (0..10_000).map(f64::from).collect();
    let want: Vec<f64> = xs.iter().map(|x| x - 1.0).collect();
    assert_eq!(served.map(&xs, |x: f64| x - 1.0).unwrap(), want);
    assert_eq!(spawned.map(&xs, |x: f64| x - 1.0).unwrap(), want);
    let server = shmpool::testing::fork_server_pid().unwrap();
    let list = |v: Vec<u32>| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    println!("ready {server} {} {}", list(served.pids()), list(spawned.pids()));
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).unwrap();
    // Everything still serves: the same server, no worker replaced, and the server forks.
    assert_eq!(shmpool::testing::fork_server_pid(), Some(server), "the fork server survived");
    assert_eq!(served.map(&xs, |x: f64| x - 1.0).unwrap(), want);
    assert_eq!(spawned.map(&xs, |x: f64| x - 1.0).unwrap(), want);
    assert_eq!((served.respawns(), spawned.respawns()), (0, 0), "no worker died");
    let fresh = pool(StartMethod::ForkServer, 1);
    assert_eq!(fresh.map(&xs, |x: f64| x - 1.0).unwrap(), want);
    kill_one_and_wait_for_replacement(&served, StartMethod::ForkServer);
    kill_one_and_wait_for_replacement(&spawned, StartMethod::Spawn);
    println!("ok");
}

/// Kills a process group when dropped (a failed test leaves nothing running).
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn group_signals_for_the_program_reach_neither_the_fork_server_nor_spawned_workers() {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    let mut child = common::scenario::command("job_control_program")
        .process_group(0)
        .stderr(std::process::Stdio::inherit())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let guard = GroupGuard(pgid);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (status, helpers, lines) = common::watchdog(Duration::from_secs(120), move || {
        let mut lines = std::io::BufReader::new(stdout).lines().map(|l| l.unwrap());
        let ready = lines.by_ref().find(|l| l.starts_with("ready ")).expect("the program reports its helpers");
        let helpers: Vec<u32> =
            ready[6..].split([' ', ',']).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
        assert_eq!(helpers.len(), 5, "{ready}");
        let group = nix::unistd::Pid::from_raw(pgid);
        use nix::sys::signal::Signal::*;
        for sig in [SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGTSTP] {
            nix::sys::signal::killpg(group, sig).unwrap();
        }
        // What is checked here is that nothing happens: a helper that took a signal would be
        // dead or stopped within a few milliseconds; watch for much longer than that.
        for _ in 0..50 {
            for &h in &helpers {
                assert!(common::pid_alive(h), "helper {h} was killed by a signal meant for the program");
                assert_ne!(common::proc_state(h), Some('T'), "helper {h} was stopped by the group's SIGTSTP");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stdin.write_all(b"go\n").unwrap();
        let rest: Vec<String> = lines.collect();
        (child.wait().unwrap(), helpers, rest)
    });
    assert!(status.success(), "the program failed ({status:?}): {lines:?}");
    assert!(lines.iter().any(|l| l == "ok"), "{lines:?}");
    drop(guard);
    common::assert_pids_gone(&helpers);
}

/// A kernel that needs about 600 ms of not-stopped time: 30 short sleeps (a stop cuts one
/// sleep short at most, so the chunk still has most of its time to run after a SIGCONT).
fn slow(x: f64) -> f64 {
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(20));
    }
    x + 1.0
}

/// The stop test's program (run in a process group of its own by
/// [`a_stop_of_the_whole_program_is_not_counted_as_chunk_time`]): maps [`slow`] with a chunk
/// timeout of 3 s while the test stops its whole group for 6 s. A scenario.
fn stopped_program() {
    use std::io::Write;
    let p = shmpool::Pool::builder()
        .workers(1)
        .start_method(StartMethod::Fork)
        .chunk_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    println!("mapping");
    std::io::stdout().flush().unwrap();
    match p.map(&[1.0f64], slow) {
        Ok(v) => println!("ok {v:?}"),
        Err(e) => println!("failed: {e:?}"),
    }
}

#[test]
fn a_stop_of_the_whole_program_is_not_counted_as_chunk_time() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut child = common::scenario::command("stopped_program")
        .process_group(0)
        .stderr(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let guard = GroupGuard(pgid);
    let stdout = child.stdout.take().unwrap();
    let (status, lines) = common::watchdog(Duration::from_secs(120), move || {
        let mut lines = std::io::BufReader::new(stdout).lines().map(|l| l.unwrap());
        lines.by_ref().find(|l| l == "mapping").expect("the program starts its map");
        let group = nix::unistd::Pid::from_raw(pgid);
        // Ctrl-Z while the chunk runs, `fg` twice the chunk timeout later: the stop itself is
        // the scenario (not a synchronisation).
        std::thread::sleep(Duration::from_millis(100));
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_secs(6));
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT).unwrap();
        let rest: Vec<String> = lines.collect();
        (child.wait().unwrap(), rest)
    });
    drop(guard);
    assert!(status.success(), "{status:?}: {lines:?}");
    assert!(lines.iter().any(|l| l == "ok [2.0]"), "the map succeeds after the stop: {lines:?}");
}

#[test]
fn a_hung_kernel_still_times_out_when_stops_are_left_out() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for method in [StartMethod::Fork, StartMethod::ForkServer] {
            let p = shmpool::Pool::builder()
                .workers(1)
                .start_method(method)
                .chunk_timeout(Duration::from_millis(300))
                .build()
                .unwrap();
            let r = p.map(&[1.0f64], |_: f64| -> f64 {
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            assert!(matches!(r, Err(shmpool::Error::ChunkTimedOut { .. })), "{method:?}: {r:?}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// A process-group SIGINT the program handles, and a program that ignores SIGCHLD.
// ---------------------------------------------------------------------------------------------

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
                // Part of the stimulus: whatever the SIGINT kills dies before the next map.
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

/// A program that ignores SIGCHLD (common in daemons; the disposition survives `exec`, so the
/// exec'd fork server inherits it) gets its children reaped by the kernel. The pool must still
/// work and drop under every method: here each method builds a pool, loses a worker to
/// SIGKILL, maps, and is dropped; the times are reported, and a method that takes 20 s counts
/// as hung (a watchdog, not a measurement: a drop that waited for the reaping that never
/// comes would hang).
#[test]
fn pools_in_a_program_that_ignores_sigchld_work_and_drop() {
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
                    let gone = || !common::pid_alive(victim);
                    common::wait_until(Duration::from_secs(20), "the killed worker is gone", gone);
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
        assert!(line.contains(": None in") && secs < 20.0, "with SIGCHLD ignored: {report}");
    }
}
