//! Child processes: `multiprocessing.Process` for Rust, the public face of `launch` (whose
//! fork and exec plumbing the pool's workers use too; nothing there depends on this module).
//!
//! [`Process::spawn`] forks; the child runs the closure under `catch_unwind` and leaves with
//! `_exit` — it never returns into the parent's code, never runs the parent's destructors
//! (which would, for instance, tear down the parent's pools) and never continues as a second
//! copy of the parent, even when the closure panics.
//!
//! Forking a multi-threaded process copies only the calling thread; locks held by other threads
//! stay locked in the child. glibc makes `malloc` safe across `fork`; anything else the closure
//! locks (stdout included) may have been held by another thread at that instant. The child
//! flushes std's stdout on its way out only when the parent was single-threaded at the fork
//! (`println!` output is line-buffered and already written; only a final partial line can stay
//! behind in a multi-threaded parent).

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::launch::{fork, spawn};

/// Converts a `WaitStatus` to the `ExitStatus` std uses.
fn exit_status(ws: WaitStatus) -> Option<ExitStatus> {
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
    /// Forks a child that runs `f` and exits: code 0 when `f` returns, 101 when it panics.
    ///
    /// The child is a copy of the calling process at this instant (like `multiprocessing`'s
    /// `fork` start method), so `f` may use anything it captures. In a multi-threaded program,
    /// locks held by other threads at the fork stay locked in the child; avoid taking them, or
    /// use [`Process::spawn_fn`], which starts a fresh copy of the program instead (a `fn` and a
    /// `Pod` argument, no captures; the program calls [`crate::init`] first).
    ///
    /// Which to use: `spawn` in a single-threaded program, or when the closure only computes
    /// and allocates; `spawn_fn` when other threads may hold locks the child could need
    /// (printing, logging, a runtime's state).
    ///
    /// The child shares no memory with its parent: `f` is `Send + 'static`, so it owns what it
    /// captures and borrows nothing the parent still uses, and shmpool's shared mappings
    /// (arrays, staging buffers, mapped files) are not inherited at all (`MADV_DONTFORK`), so
    /// a child that reaches one through a value it owns faults instead of racing with the
    /// parent and the workers. A closure that borrows does not compile:
    ///
    /// ```compile_fail,E0373
    /// # fn main() -> shmpool::Result<()> {
    /// let mut v = shmpool::SharedVec::<f64>::zeroed(4)?;
    /// let slice = v.as_mut_slice();
    /// let p = shmpool::Process::spawn(|| slice[0] = 1.0)?; // borrows `slice`: not 'static
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `fork` fails.
    pub fn spawn<F: FnOnce() + Send + 'static>(f: F) -> Result<Process> {
        spawn::refuse_uninitialised_child();
        // Flush in the parent so buffered output is not written twice (the parent may wait
        // here for another thread's print; that is a wait, not a deadlock).
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let alone = fork::single_threaded();
        let pid = fork::fork_process(move || {
            f();
            if alone {
                // Nobody else could hold stdout's lock at the fork: flush a final partial line.
                let _ = std::io::stdout().flush();
            }
            0
        })?;
        Ok(Process { pid, status: std::sync::Mutex::new(None) })
    }

    /// Wraps a child of this process started elsewhere (`spawn_fn`).
    pub(crate) fn from_pid(pid: Pid) -> Process {
        Process { pid, status: std::sync::Mutex::new(None) }
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
        assert_eq!(panics.join().unwrap().code(), Some(fork::PANIC_EXIT_CODE));
        let code = Process::spawn(|| fork::exit_now(7)).unwrap();
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
