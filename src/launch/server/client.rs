//! The program's side of the fork server: one server per process (a registry that a forked
//! child does not share), connections for pools, fork requests and exit reports, and the
//! watchdog that abandons a server that is stopped or silent.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::wire::{recv, send, Op};
use crate::error::{Error, Result};
use crate::launch::fork;

/// How long a pool waits for the server to answer a fork request: a server that has not
/// answered by then is treated as dead (killed, reaped, replaced). Well under the 10 s for
/// which a worker waits for its supervisor's answer (`worker::MAIL_TIMEOUT`): a supervisor
/// waiting here must not make its live workers give up on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a server may be seen stopped (SIGSTOP, a debugger) while a pool waits for it before
/// it is treated as dead: a stopped server answers nothing, forks nothing and reports no exit,
/// and a supervisor that waited for it could not serve its live workers meanwhile (they give up
/// on a supervisor that does not answer for 10 s). Short stops (shorter than this) are waited out.
const STOPPED_LIMIT: Duration = Duration::from_secs(1);
/// How often a wait for the server checks whether it is stopped.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Whether process `pid` is stopped (state `T`, or `t`: stopped by a tracer).
fn is_stopped(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|c| c == 'T' || c == 't')
}

/// Treats this process's fork server `pid` as dead: SIGKILLs it (which ends even a stopped
/// process), reaps it and forgets it, so that the next [`connect`] starts a new one. Its
/// workers die with it (`PR_SET_PDEATHSIG`), and their pools replace them through the new
/// server. Does nothing when `pid` is no longer this process's server (already replaced): a
/// pid that is not ours is never signalled.
fn abandon(pid: Pid) {
    let mut server = server_slot().lock().unwrap_or_else(|p| p.into_inner());
    if server.as_ref().is_some_and(|s| s.pid == pid && s.owner == std::process::id()) {
        fork::set_private_fd(None);
        let dead = server.take().expect("checked above");
        let _ = kill(dead.pid, Signal::SIGKILL);
        fork::reap(dead.pid);
    }
}

/// The program's handle on its server.
struct Server {
    control: OwnedFd,
    pid: Pid,
    /// The process that started it: a forked child of the program does not share it (its
    /// pools get their own server, which dies with that child).
    owner: u32,
}

/// This process's fork server, behind a mutex that belongs to this process: a child forked
/// while another thread held the parent's would inherit it locked forever, so a process whose
/// pid differs from the registry's owner makes a fresh one (the inherited one, and the
/// parent's server in it, are simply abandoned: the child closed the control socket).
struct Registry {
    owner: u32,
    server: Mutex<Option<Server>>,
}

static REGISTRY: std::sync::atomic::AtomicPtr<Registry> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

fn server_slot() -> &'static Mutex<Option<Server>> {
    let me = crate::os::pid();
    loop {
        let p = REGISTRY.load(Ordering::Acquire);
        // SAFETY: a non-null pointer in REGISTRY came from `Box::into_raw` below and is never
        // freed (a registry is published once per process and then leaked on purpose).
        if let Some(r) = unsafe { p.as_ref() } {
            if r.owner == me {
                return &r.server;
            }
        }
        let fresh = Box::into_raw(Box::new(Registry { owner: me, server: Mutex::new(None) }));
        if REGISTRY.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: just published; never freed (see above).
            return unsafe { &(*fresh).server };
        }
        // Another thread of this process published first: use its registry.
        // SAFETY: `fresh` was never published; this is its only owner.
        drop(unsafe { Box::from_raw(fresh) });
    }
}
/// The pid of this process's fork server, if one runs.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn pid() -> Option<Pid> {
    server_slot()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|s| s.owner == std::process::id())
        .map(|s| s.pid)
}

/// One pool's connection to the fork server.
pub(crate) struct Connection {
    sock: OwnedFd,
    server: Pid,
    /// Exit statuses that arrived while waiting for something else.
    exited: HashMap<i32, i64>,
    /// Workers forked on this connection whose exit has not been reported yet: a worker of an
    /// earlier (dead) server gets no report here, and waiting for one would be in vain.
    children: std::collections::HashSet<i32>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("server", &self.server).finish()
    }
}

/// Opens a connection to this process's fork server, starting the server with `start` (which
/// returns the control socket and the server's pid) if none runs or the last one died.
///
/// # Errors
///
/// What `start` returns; [`Error::Os`] when no connection can be made.
pub(crate) fn connect(start: impl Fn() -> Result<(OwnedFd, Pid)>) -> Result<Connection> {
    let mut server = server_slot().lock().unwrap_or_else(|p| p.into_inner());
    let me = std::process::id();
    if server.as_ref().is_some_and(|s| s.owner != me) {
        // Inherited through a fork: our parent's server, not ours. Its descriptor was closed
        // right after the fork (`fork::set_private_fd`): forget it, do not close it again.
        std::mem::forget(server.take());
    }
    for _ in 0..2 {
        if server.is_none() {
            let (control, pid) = start()?;
            fork::set_private_fd(Some(control.as_raw_fd()));
            *server = Some(Server { control, pid, owner: me });
        }
        let s = server.as_ref().expect("set above");
        let (mine, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| Error::os("socketpair", e.into()))?;
        match send(s.control.as_fd(), Op::Connect, 0, 0, Some(theirs.as_fd())) {
            Ok(()) => {
                return Ok(Connection {
                    sock: mine,
                    server: s.pid,
                    exited: HashMap::new(),
                    children: Default::default(),
                })
            }
            Err(_) => {
                // The server died (SIGKILL, the OOM killer): reap it, it is our child, and
                // start another. It closed its end of the control socket on its way out, which
                // may come a moment before it is a zombie: if it is not one yet, finish it.
                fork::set_private_fd(None);
                let dead = server.take().expect("set above");
                use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
                if let Ok(WaitStatus::StillAlive) = waitpid(dead.pid, Some(WaitPidFlag::WNOHANG)) {
                    let _ = kill(dead.pid, Signal::SIGKILL);
                    fork::reap(dead.pid);
                }
            }
        }
    }
    Err(Error::os("connect to the fork server", std::io::Error::from(std::io::ErrorKind::BrokenPipe)))
}

impl Connection {
    /// Whether the server's end of this connection is gone (the server died): nothing sent
    /// on it can be answered any more. Checked without waiting.
    pub(crate) fn is_closed(&self) -> bool {
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            && fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
    }

    /// Asks the server to fork a worker that gets `child_sock`, without waiting: several
    /// requests in a row overlap their round trips; [`Connection::forked`] collects the pids,
    /// in the order of the requests.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the server is gone.
    pub(crate) fn request_fork(&mut self, child_sock: BorrowedFd<'_>) -> Result<()> {
        send(self.sock.as_fd(), Op::Fork, 0, 0, Some(child_sock))
    }

    /// The pid of the worker forked for the oldest unanswered request.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the server failed to fork, is gone or does not answer in time; a
    /// server that does not answer within [`ANSWER_TIMEOUT`], or is seen stopped for
    /// [`STOPPED_LIMIT`], is killed and reaped first (the next [`connect`] starts another).
    pub(crate) fn forked(&mut self) -> Result<Pid> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut waits = StopWatch::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || waits.gave_up(self.server) {
                // No answer in time (or the server is stopped): it is as good as dead.
                abandon(self.server);
                return Err(Error::os("fork server", std::io::Error::from(std::io::ErrorKind::TimedOut)));
            }
            match recv(self.sock.as_fd(), left.min(STOP_CHECK))? {
                Some((Op::Forked, w, _)) => {
                    self.children.insert(w.pid);
                    return Ok(Pid::from_raw(w.pid));
                }
                Some((Op::Failed, w, _)) => {
                    return Err(Error::os("fork (fork server)", std::io::Error::from_raw_os_error(w.value as i32)))
                }
                Some((Op::Exited, w, _)) => {
                    self.exited.insert(w.pid, w.value);
                }
                Some((_, w, _)) => return Err(Error::Protocol { what: "fork server answer", value: w.op.into() }),
                None => {}
            }
        }
    }

    /// Waits (up to `timeout`) for the exit status of worker `pid`, which the server reports
    /// once it has reaped it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] on a timeout or a lost server; a server seen stopped for
    /// [`STOPPED_LIMIT`] is killed and reaped first (the next [`connect`] starts another).
    pub(crate) fn wait_exit(&mut self, pid: Pid, timeout: Duration) -> Result<WaitStatus> {
        let deadline = Instant::now() + timeout;
        let mut waits = StopWatch::default();
        loop {
            if let Some(raw) = self.exited.remove(&pid.as_raw()) {
                self.children.remove(&pid.as_raw());
                return WaitStatus::from_raw(pid, raw as i32).map_err(|e| Error::os("wait status", e.into()));
            }
            if !self.children.contains(&pid.as_raw()) {
                // Forked by an earlier server, which died: nobody reaped it for us to hear of.
                return Err(Error::os("fork server exit report", std::io::Error::from(std::io::ErrorKind::NotFound)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let stopped = waits.gave_up(self.server);
            if stopped {
                // A stopped server reports nothing: it is as good as dead.
                abandon(self.server);
            }
            if left.is_zero() || stopped {
                return Err(Error::os("fork server exit report", std::io::Error::from(std::io::ErrorKind::TimedOut)));
            }
            match recv(self.sock.as_fd(), left.min(STOP_CHECK))? {
                Some((Op::Exited, w, _)) => {
                    self.exited.insert(w.pid, w.value);
                }
                Some((_, w, _)) => return Err(Error::Protocol { what: "fork server message", value: w.op.into() }),
                None => {}
            }
        }
    }
}

/// Watches, during one wait for the server, whether it stays stopped.
#[derive(Default)]
struct StopWatch {
    /// Since when the server has been seen stopped (without a check seeing it run since).
    stopped_since: Option<Instant>,
}

impl StopWatch {
    /// Whether the server has been seen stopped for [`STOPPED_LIMIT`] (checked now).
    fn gave_up(&mut self, server: Pid) -> bool {
        if !is_stopped(server) {
            self.stopped_since = None;
            return false;
        }
        self.stopped_since.get_or_insert_with(Instant::now).elapsed() >= STOPPED_LIMIT
    }
}
