//! The one entry point of the test suite's child programs. A test that needs a program of its
//! own (a fresh process, a closed stderr, root dropped, a process group to signal) re-runs its
//! own test binary as `TESTBIN --shmpool-test-scenario NAME`; the binary lists its scenarios
//! with [`scenarios!`](crate::scenarios), whose ELF constructor ([`dispatch`]) runs scenario
//! NAME before libtest's `main` and exits with its outcome: 0 when it returned, 101 when it
//! panicked (its message on stderr), 2 for a name the binary does not list. A scenario is a
//! plain `fn()`, never a `#[test]`: `#[ignore]` is left for documented known gaps.
//!
//! Chosen over `--ignored --exact NAME` (a scenario was then an ignored test that passed as a
//! no-op when run by hand) and over an environment variable (which every process the scenario
//! starts would inherit): shmpool's exec'd children get no arguments but their name (or those
//! of `shmpool::set_spawn_route`, which can route them to a scenario too), so a worker never
//! runs a scenario by mistake.
//!
//! What runs before `main` is sound here for the reasons `src/start/hook.rs` gives (glibc, std
//! usable, `std::env::args` captured by std's own earlier constructor). As libtest does, the
//! scenario runs on a thread named after it while the main thread waits, so a scenario sees the
//! multi-threaded process a `#[test]` sees; SIGPIPE is ignored first, as std's runtime does
//! before `main`.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The argument that names a scenario.
pub const FLAG: &str = "--shmpool-test-scenario";

/// A scenario: its name and its body.
pub type Scenario = (&'static str, fn());

/// Lists the scenarios of a test binary, by the names of their `fn()`s:
/// `scenarios!(program_a, program_b);` (once per binary).
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),+ $(,)?) => {
        /// The start-up entry of this binary's child programs (tests/common/scenario.rs).
        extern "C" fn scenario_start_hook() {
            let table: &[$crate::common::scenario::Scenario] = &[$((stringify!($name), $name as fn())),+];
            // Nothing may unwind out of an `extern "C"` function; `dispatch` catches the
            // scenario's panics, so one here is a bug of the dispatcher.
            if std::panic::catch_unwind(|| $crate::common::scenario::dispatch(table)).is_err() {
                std::process::abort();
            }
        }
        // `.init_array` holds pointers to functions that glibc calls before `main` with the C
        // start-up arguments (which a function that takes none may ignore); `#[used]` keeps
        // the entry although nothing reads it.
        #[used]
        #[link_section = ".init_array"]
        static SCENARIO_START_HOOK: extern "C" fn() = scenario_start_hook;
    };
}

/// Runs the scenario this process was started for, if any, and exits; returns at once in an
/// ordinary run of the test binary.
pub fn dispatch(table: &[Scenario]) {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|a| a != FLAG) {
        return;
    }
    let name = args.next().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let Some(&(_, body)) = table.iter().find(|(n, _)| *n == name) else {
        eprintln!(
            "no scenario {name:?} in this test binary; it has {:?}",
            table.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        std::process::exit(2);
    };
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler and has no
    // precondition; std's runtime does the same before `main`.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let ran = std::thread::Builder::new().name(name.clone()).spawn(body).map(|h| h.join());
    let code = match ran {
        Ok(Ok(())) => 0,
        Ok(Err(_)) => 101,
        Err(e) => {
            eprintln!("scenario {name}: cannot start its thread: {e}");
            101
        }
    };
    std::process::exit(code);
}

/// The arguments that start scenario `name` (for `shmpool::set_spawn_route`).
pub fn args(name: &str) -> [String; 2] {
    [FLAG.to_string(), name.to_string()]
}

/// This test binary, set to run scenario `name`, with stdin closed and stdout and stderr
/// captured (add environment variables or change the streams as the test needs).
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
    cmd.args(args(name)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end and returns its output. A run still going after `limit` is
/// SIGKILLed and fails the test: a hang is a failure, a slow run is not measured.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd.spawn().expect("start the scenario");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(limit).is_err() {
        // Our own child, not reaped yet (the reader thread still waits for it).
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        let out = reader.join().expect("reader thread").expect("wait for the scenario");
        panic!(
            "watchdog: {cmd:?} hung for more than {limit:?}; stdout:\n{}\nstderr (end):\n{}",
            String::from_utf8_lossy(&out.stdout),
            super::tail(&out.stderr, 4000)
        );
    }
    reader.join().expect("reader thread").expect("wait for the scenario")
}
