//! Child processes: `multiprocessing.Process` for Rust, and the fork primitive the pool uses.
//!
//! [`Process::spawn`] forks; the child runs the closure under `catch_unwind`, flushes stdout
//! and stderr, and leaves with `_exit` — it never returns into the parent's code, never runs
//! the parent's destructors (which would, for instance, unlink the parent's shared memory) and
//! never continues as a second copy of the parent, even when the closure panics.
//!
//! Forking a multi-threaded process copies only the calling thread; locks held by other threads
//! stay locked in the child. glibc makes `malloc` safe across `fork`; anything else the closure
//! locks (stdout included) may have been held by another thread at that instant. The pool's
//! workers only touch memory prepared before the fork.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Exit code of a child whose closure panicked (the same as a panicking Rust `main`).
pub const PANIC_EXIT_CODE: i32 = 101;

/// Forks; the child runs `child` and exits with the code it returns (or [`PANIC_EXIT_CODE`]
/// if it panics), never returning into the caller's code.
///
/// Stdout and stderr are flushed first so that buffered output is not written twice.
pub(crate) fn fork_child(child: impl FnOnce() -> i32) -> Result<Pid> {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: in the child we run only `child` and then `_exit`, so control never returns into
    // the caller's frames (a panic inside it is caught below and also ends in `_exit`) and no
    // destructor of the parent's state runs twice. The multi-threaded-fork hazard (locks held
    // by other threads) is documented at the module level and in `Process::spawn`.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::os("fork", e.into()))? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(PANIC_EXIT_CODE);
            exit_now(code)
        }
    }
}

/// Ends the calling process at once with `code`: no destructors, no `atexit` handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit has no preconditions; it ends the process without running destructors
    // or atexit handlers, which is the point.
    unsafe { libc::_exit(code) }
}

/// Asks the kernel to SIGKILL the calling process when the thread that forked it exits, and
/// exits at once if the parent `expected` is already gone (the race `prctl` alone leaves open).
pub(crate) fn die_with_parent(expected: Pid) {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if nix::unistd::getppid() != expected {
        exit_now(0);
    }
}

/// A pidfd for `pid`: readable once the process has exited.
pub(crate) fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Error::last_os("pidfd_open"));
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Converts a `WaitStatus` to the `ExitStatus` std uses.
pub(crate) fn exit_status(ws: WaitStatus) -> Option<ExitStatus> {
    match ws {
        WaitStatus::Exited(_, code) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
        WaitStatus::Signaled(_, sig, core) => Some(ExitStatus::from_raw(sig as i32 | if core { 0x80 } else { 0 })),
        _ => None,
    }
}

/// A child process running a closure: `multiprocessing.Process`.
///
/// # Examples
///
/// ```
/// # fn main() -> shmpool::Result<()> {
/// let n = 7;
/// let p = shmpool::Process::spawn(move || {
///     assert_eq!(n, 7);
/// })?;
/// let status = p.join()?;
/// assert!(status.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Process {
    pid: Pid,
    status: std::sync::Mutex<Option<ExitStatus>>,
}

impl Process {
    /// Forks a child that runs `f` and exits: code 0 when `f` returns, [`PANIC_EXIT_CODE`]
    /// when it panics. The child's stdout and stderr are flushed before it exits.
    ///
    /// The child is a copy of the calling process at this instant (like `multiprocessing`'s
    /// `fork` start method), so `f` may use anything it captures. In a multi-threaded program,
    /// locks held by other threads at the fork stay locked in the child; avoid taking them.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `fork` fails.
    pub fn spawn<F: FnOnce()>(f: F) -> Result<Process> {
        let pid = fork_child(move || {
            f();
            0
        })?;
        Ok(Process { pid, status: std::sync::Mutex::new(None) })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    fn wait(&self, flags: Option<WaitPidFlag>) -> Result<Option<ExitStatus>> {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = *st {
            return Ok(Some(s));
        }
        loop {
            match waitpid(self.pid, flags) {
                Ok(WaitStatus::StillAlive) => return Ok(None),
                Ok(ws) => {
                    if let Some(s) = exit_status(ws) {
                        *st = Some(s);
                        return Ok(Some(s));
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::os("waitpid", e.into())),
            }
        }
    }

    /// Waits for the child to exit and returns its status (cached: later calls return it again).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `waitpid` fails (for example if something else reaped the child).
    pub fn join(&self) -> Result<ExitStatus> {
        Ok(self.wait(None)?.expect("blocking waitpid returns an exit status"))
    }

    /// The exit status if the child has exited, `None` while it runs (Python's `exitcode`).
    ///
    /// # Errors
    ///
    /// As [`Process::join`].
    pub fn exit_status(&self) -> Result<Option<ExitStatus>> {
        self.wait(Some(WaitPidFlag::WNOHANG))
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        matches!(self.exit_status(), Ok(None))
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the signal cannot be sent.
    pub fn terminate(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGKILL.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the signal cannot be sent.
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        if self.exit_status()?.is_some() {
            return Ok(());
        }
        kill(self.pid, sig).map_err(|e| Error::os("kill", e.into()))
    }
}

impl Drop for Process {
    /// A child that was never joined is killed and reaped, so that dropping a `Process` leaves
    /// neither an orphan nor a zombie. Call [`Process::join`] to wait for it instead.
    fn drop(&mut self) {
        if let Ok(None) = self.exit_status() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.wait(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_exit_codes_and_panics_are_reported() {
        let ok = Process::spawn(|| {}).unwrap();
        assert_eq!(ok.join().unwrap().code(), Some(0));
        assert_eq!(ok.join().unwrap().code(), Some(0), "status is cached");
        let panics = Process::spawn(|| panic!("boom")).unwrap();
        assert_eq!(panics.join().unwrap().code(), Some(PANIC_EXIT_CODE));
        let code = Process::spawn(|| exit_now(7)).unwrap();
        assert_eq!(code.join().unwrap().code(), Some(7));
    }

    #[test]
    fn terminate_and_kill_end_a_running_child() {
        let p = Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(30))).unwrap();
        assert!(p.is_alive());
        p.terminate().unwrap();
        assert_eq!(p.join().unwrap().signal(), Some(libc::SIGTERM));
        assert!(!p.is_alive());
        let q = Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(30))).unwrap();
        q.kill().unwrap();
        assert_eq!(q.join().unwrap().signal(), Some(libc::SIGKILL));
    }
}
