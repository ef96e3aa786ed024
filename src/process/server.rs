//! The fork server: a single-threaded template process that forks workers on request, so a
//! multi-threaded program gets fork's speed without fork's hazard (its children never inherit
//! another thread's locks: the server has no other threads).
//!
//! One server per process, started on first need (forked while the program is still
//! single-threaded, else exec'd through `init()`). The program keeps the *control* socket;
//! each pool opens its own *connection* (a socket pair whose far end travels over the control
//! socket with `SCM_RIGHTS`) and asks on it for workers, sending the worker's socket along.
//! The server answers with the new pid and, since the pool cannot `waitpid` a process that is
//! not its child, reports every exit status of that connection's workers (it reaps them on
//! `SIGCHLD` through a signalfd). The pool still notices deaths at once through pidfds.
//!
//! Lifetimes: a connection that closes (its pool is gone) has its remaining workers killed; when
//! the control socket closes (the program is gone) the server kills every worker and exits.
//! Workers also have `PR_SET_PDEATHSIG` tied to the server, so they never outlive it.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::ipc::{recv_record, send_record};
use crate::process::fork;

u32_enum! {
/// Fork-server operations.
enum Op {
    /// Program → server (control socket): a new connection, its socket attached.
    Connect = 1,
    /// Pool → server: fork a worker, its socket attached.
    Fork = 2,
    /// Server → pool: the worker's pid.
    Forked = 3,
    /// Server → pool: fork failed with errno `value`.
    Failed = 4,
    /// Server → pool: worker `pid` exited with raw wait status `value`.
    Exited = 5,
}
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Wire {
    op: u32,
    pid: i32,
    value: i64,
}

fn send(sock: BorrowedFd<'_>, op: Op, pid: i32, value: i64, fd: Option<BorrowedFd<'_>>) -> Result<()> {
    send_record(sock, bytemuck::bytes_of(&Wire { op: op as u32, pid, value }), fd)
}

fn recv(sock: BorrowedFd<'_>, timeout: Duration) -> Result<Option<(Op, Wire, Option<OwnedFd>)>> {
    let mut w = Wire::zeroed();
    let Some((n, fd)) = recv_record(sock, bytemuck::bytes_of_mut(&mut w), timeout)? else { return Ok(None) };
    if n != std::mem::size_of::<Wire>() {
        return Err(Error::Protocol { what: "fork server record length", value: n as u64 });
    }
    let op = Op::try_from(w.op).map_err(|v| Error::Protocol { what: "fork server operation", value: v.into() })?;
    Ok(Some((op, w, fd)))
}

/// How long a pool waits for the server to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The program's handle on its server.
struct Server {
    control: OwnedFd,
    pid: Pid,
    /// The process that started it: a forked child of the program does not share it (its
    /// pools get their own server, which dies with that child).
    owner: u32,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// Whether this process has a fork server running (or started one that has not failed yet).
pub(crate) fn running() -> bool {
    SERVER.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|s| s.owner == std::process::id())
}

/// The pid of this process's fork server, if one runs.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn pid() -> Option<Pid> {
    SERVER.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|s| s.owner == std::process::id()).map(|s| s.pid)
}

/// One pool's connection to the fork server.
pub(crate) struct Connection {
    sock: OwnedFd,
    server: Pid,
    /// Exit statuses that arrived while waiting for something else.
    exited: HashMap<i32, i64>,
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
    let mut server = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let me = std::process::id();
    if server.as_ref().is_some_and(|s| s.owner != me) {
        // Inherited through a fork: our parent's server, not ours.
        *server = None;
    }
    for _ in 0..2 {
        if server.is_none() {
            let (control, pid) = start()?;
            *server = Some(Server { control, pid, owner: me });
        }
        let s = server.as_ref().expect("set above");
        let (mine, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| Error::os("socketpair", e.into()))?;
        match send(s.control.as_fd(), Op::Connect, 0, 0, Some(theirs.as_fd())) {
            Ok(()) => return Ok(Connection { sock: mine, server: s.pid, exited: HashMap::new() }),
            Err(_) => {
                // The server died: reap it if it is our child, and start another.
                let dead = server.take().expect("set above");
                let _ = nix::sys::wait::waitpid(dead.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            }
        }
    }
    Err(Error::os("connect to the fork server", std::io::Error::from(std::io::ErrorKind::BrokenPipe)))
}

impl Connection {
    /// Asks the server to fork a worker that gets `child_sock`; returns its pid.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the server fails to fork or is gone.
    pub(crate) fn fork(&mut self, child_sock: BorrowedFd<'_>) -> Result<Pid> {
        send(self.sock.as_fd(), Op::Fork, 0, 0, Some(child_sock))?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match recv(self.sock.as_fd(), left)? {
                Some((Op::Forked, w, _)) => return Ok(Pid::from_raw(w.pid)),
                Some((Op::Failed, w, _)) => {
                    return Err(Error::os("fork (fork server)", std::io::Error::from_raw_os_error(w.value as i32)))
                }
                Some((Op::Exited, w, _)) => {
                    self.exited.insert(w.pid, w.value);
                }
                Some((_, w, _)) => return Err(Error::Protocol { what: "fork server answer", value: w.op.into() }),
                None => return Err(Error::os("fork server", std::io::Error::from(std::io::ErrorKind::TimedOut))),
            }
        }
    }

    /// Waits (up to `timeout`) for the exit status of worker `pid`, which the server reports
    /// once it has reaped it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] on a timeout or a lost server.
    pub(crate) fn wait_exit(&mut self, pid: Pid, timeout: Duration) -> Result<WaitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(raw) = self.exited.remove(&pid.as_raw()) {
                return WaitStatus::from_raw(pid, raw as i32).map_err(|e| Error::os("wait status", e.into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match recv(self.sock.as_fd(), left)? {
                Some((Op::Exited, w, _)) => {
                    self.exited.insert(w.pid, w.value);
                }
                Some((_, w, _)) => return Err(Error::Protocol { what: "fork server message", value: w.op.into() }),
                None => return Err(Error::os("fork server exit report", std::io::Error::from(std::io::ErrorKind::TimedOut))),
            }
        }
    }
}

/// Forks the server from the calling process, which must be single-threaded (so the server
/// inherits no lock another thread held). `body` is what a forked worker runs.
///
/// # Errors
///
/// [`Error::Os`] when `socketpair` or `fork` fails.
pub(crate) fn start_forked(body: fn(OwnedFd) -> i32) -> Result<(OwnedFd, Pid)> {
    let (control, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Error::os("socketpair", e.into()))?;
    let keep = theirs.as_raw_fd();
    let pid = fork::fork_process(move || {
        fork::drop_inherited(0, &[keep]);
        serve(theirs, body)
    })?;
    Ok((control, pid))
}

/// The server's loop on `control` (see the module docs); returns its exit code.
pub(crate) fn serve(control: OwnedFd, body: fn(OwnedFd) -> i32) -> i32 {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if mask.thread_block().is_err() {
        return 1;
    }
    let Ok(sfd) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) else { return 1 };
    let me = nix::unistd::getpid();
    // Connections and the pids of the workers forked for each.
    let mut conns: Vec<(OwnedFd, Vec<Pid>)> = Vec::new();
    loop {
        let (control_ready, child_ready, conn_ready) = {
            let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            fds.extend(conns.iter().map(|(c, _)| PollFd::new(c.as_fd(), PollFlags::POLLIN)));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return 1,
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]), fds[2..].iter().map(ready).collect::<Vec<_>>())
        };
        if child_ready {
            while sfd.read_signal().is_ok_and(|s| s.is_some()) {}
            reap(&mut conns);
        }
        for i in (0..conn_ready.len()).rev() {
            if !conn_ready[i] {
                continue;
            }
            match recv(conns[i].0.as_fd(), Duration::ZERO) {
                Ok(Some((Op::Fork, _, Some(sock)))) => {
                    let answer = fork_worker(me, &mask, sock, body);
                    let (op, pid, value) = match answer {
                        Ok(pid) => {
                            conns[i].1.push(pid);
                            (Op::Forked, pid.as_raw(), 0)
                        }
                        Err(errno) => (Op::Failed, 0, errno as i64),
                    };
                    let _ = send(conns[i].0.as_fd(), op, pid, value, None);
                }
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    // The pool is gone (or spoke nonsense): its workers go with it.
                    let (_, pids) = conns.swap_remove(i);
                    for p in pids {
                        let _ = kill(p, Signal::SIGKILL);
                    }
                }
            }
        }
        if control_ready {
            match recv(control.as_fd(), Duration::ZERO) {
                Ok(Some((Op::Connect, _, Some(c)))) => conns.push((c, Vec::new())),
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    // The program is gone: so are its workers, and the server.
                    for (_, pids) in &conns {
                        for &p in pids {
                            let _ = kill(p, Signal::SIGKILL);
                        }
                    }
                    return 0;
                }
            }
        }
    }
}

/// Reaps every exited child and reports its status to the connection that asked for it.
fn reap(conns: &mut [(OwnedFd, Vec<Pid>)]) {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status through a valid pointer to a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let pid = Pid::from_raw(pid);
        for (c, pids) in conns.iter_mut() {
            if let Some(k) = pids.iter().position(|&p| p == pid) {
                pids.swap_remove(k);
                let _ = send(c.as_fd(), Op::Exited, pid.as_raw(), status.into(), None);
                break;
            }
        }
    }
}

/// Forks one worker running `body(sock)`; the child restores the signal mask, closes every
/// other descriptor and dies with the server.
fn fork_worker(server: Pid, mask: &SigSet, sock: OwnedFd, body: fn(OwnedFd) -> i32) -> std::result::Result<Pid, i32> {
    let keep = sock.as_raw_fd();
    let mask = *mask;
    let r = fork::fork_worker(move || {
        let _ = mask.thread_unblock();
        fork::die_with_parent(server);
        fork::drop_inherited(0, &[keep]);
        body(sock)
    });
    match r {
        Ok(pid) => Ok(pid),
        Err(Error::Os { source, .. }) => Err(source.raw_os_error().unwrap_or(libc::EAGAIN)),
        Err(_) => Err(libc::EAGAIN),
    }
}
