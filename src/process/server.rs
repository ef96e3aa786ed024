//! The fork server: a single-threaded template process that forks workers on request, so a
//! multi-threaded program gets fork's speed without fork's hazard (its children never inherit
//! another thread's locks: the server has no other threads).
//!
//! One server per process, started on first need (exec'd, and turned into the server by the
//! start-up hook, when the program runs several threads or called `init()`; else forked while
//! the program is still single-threaded). The program keeps the *control* socket;
//! each pool opens its own *connection* (a socket pair whose far end travels over the control
//! socket with `SCM_RIGHTS`) and asks on it for workers, sending the worker's socket along.
//! The server answers with the new pid and, since the pool cannot `waitpid` a process that is
//! not its child, reports every exit status of that connection's workers (it watches each
//! through a pidfd and reaps it; not `SIGCHLD`, which another thread of an exec'd server's
//! process — libtest's, in the test suite — could take). The pool still notices deaths at once through pidfds.
//!
//! Lifetimes: a connection that closes (its pool is gone) has its remaining workers killed; when
//! the control socket closes (the program is gone) the server kills every worker and exits.
//! Workers also have `PR_SET_PDEATHSIG` tied to the server, so they never outlive it, and the
//! server has it tied to the program's thread that started it (the program's only thread for a
//! forked server, a keeper thread for an exec'd one: [`on_keeper_thread`]), so that even a
//! stopped server, which reads no end-of-file, dies with the program. A server that a pool
//! waits for in vain (stopped, or silent past [`ANSWER_TIMEOUT`]) is killed and replaced.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
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
        CONTROL_FD.store(-1, Ordering::Relaxed);
        let dead = server.take().expect("checked above");
        let _ = kill(dead.pid, Signal::SIGKILL);
        reap(dead.pid);
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

/// How often (ms) the server checks that the program that started it is still its parent.
const PARENT_CHECK_MS: u16 = 200;

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
    let me = crate::sync::pid();
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
/// The control socket's descriptor number (-1: none), readable without the lock from a forked
/// child, which closes its copy at once (`close_inherited_control`).
static CONTROL_FD: AtomicI32 = AtomicI32::new(-1);

/// In a just-forked child: closes the inherited copy of the fork server's control socket, so
/// the server still sees end-of-file when the program dies. Takes no lock (another thread may
/// have held `SERVER` at the fork); the child's `SERVER` entry is then stale, and `connect`
/// forgets it without closing the number again.
pub(crate) fn close_inherited_control() {
    let fd = CONTROL_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: `fd` is the control socket this process inherited; nothing in the child uses
        // it (its `SERVER` entry is never used by a process that is not its owner).
        unsafe { libc::close(fd) };
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
        // right after the fork (`close_inherited_control`): forget it, do not close it again.
        std::mem::forget(server.take());
    }
    for _ in 0..2 {
        if server.is_none() {
            let (control, pid) = start()?;
            CONTROL_FD.store(control.as_raw_fd(), Ordering::Relaxed);
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
                CONTROL_FD.store(-1, Ordering::Relaxed);
                let dead = server.take().expect("set above");
                use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
                if let Ok(WaitStatus::StillAlive) = waitpid(dead.pid, Some(WaitPidFlag::WNOHANG)) {
                    let _ = kill(dead.pid, Signal::SIGKILL);
                    reap(dead.pid);
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
    let parent = nix::unistd::getpid();
    let pid = fork::fork_process(move || {
        // A session of its own (see `spawn::spawn_self`'s `detach`): the group's and the
        // terminal's signals are for the program, not its helper.
        let _ = nix::unistd::setsid();
        // Dies with the program even when stopped (a stopped process never reads its socket's
        // end-of-file nor polls `getppid`, but SIGKILL ends it all the same). PDEATHSIG fires
        // when the *thread* that forked us exits: we are forked only while the program is
        // single-threaded, so that thread is the program's only one, its main thread, which
        // lives as long as the program (unless it calls `pthread_exit`, which then kills the
        // server early: a dead server costs a restart, never a pool).
        fork::die_with_parent(parent);
        fork::drop_inherited(0, &[keep]);
        serve(theirs, body)
    })?;
    Ok((control, pid))
}

/// A job for the keeper thread.
type KeeperJob = Box<dyn FnOnce() + Send>;

/// This process's keeper thread: (the process it belongs to, the way to hand it jobs).
/// Published once per process and leaked (a forked child makes its own: threads do not survive
/// a fork), like the fork server's registry.
static KEEPER: std::sync::atomic::AtomicPtr<(u32, std::sync::mpsc::Sender<KeeperJob>)> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Runs `job` on this process's keeper thread, a thread that does nothing else and lives as
/// long as the process, and returns its result.
///
/// The exec'd fork server sets `PR_SET_PDEATHSIG` (SIGKILL) so that it dies with the program
/// even while it is stopped (a stopped process never sees its socket close). The kernel sends
/// that signal when the *thread* that spawned it exits, so it is spawned from this thread,
/// never from the (perhaps short-lived) thread that builds a pool; from the main thread the
/// job runs at once, on it. The keeper is started only when a thread other than the main
/// one first starts an exec'd server (the program is multi-threaded then anyway). That covers every end of
/// the program, SIGKILL and `exec` included (both end this thread). Not covered: a program
/// that is itself stopped keeps its server (it is not gone).
///
/// # Errors
///
/// [`Error::Os`] when the thread cannot be started.
pub(crate) fn on_keeper_thread<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    use std::sync::mpsc;
    if nix::unistd::gettid() == nix::unistd::getpid() {
        // The main thread lives as long as the program: no need for another thread (which
        // would make a program that is otherwise single-threaded a multi-threaded one, and so
        // change the start method its later pools default to).
        return Ok(job());
    }
    let me = std::process::id();
    let keeper = loop {
        let p = KEEPER.load(Ordering::Acquire);
        // SAFETY: a non-null pointer in KEEPER came from `Box::into_raw` below and is never
        // freed (published once per process, then leaked on purpose).
        if let Some(k) = unsafe { p.as_ref() } {
            if k.0 == me {
                break k;
            }
        }
        let (tx, rx) = mpsc::channel::<KeeperJob>();
        std::thread::Builder::new()
            .name("shmpool-keeper".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Error::os("start the fork server's keeper thread", e))?;
        let fresh = Box::into_raw(Box::new((me, tx)));
        if KEEPER.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: just published; never freed (see above).
            break unsafe { &*fresh };
        }
        // Another thread published first: ours ends once its channel is dropped here.
        // SAFETY: `fresh` was never published; this is its only owner.
        drop(unsafe { Box::from_raw(fresh) });
    };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let gone = || Error::os("the fork server's keeper thread", std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    keeper
        .1
        .send(Box::new(move || {
            let _ = done_tx.send(job());
        }))
        .map_err(|_| gone())?;
    done_rx.recv().map_err(|_| gone())
}

/// A worker the server forked, watched through its pidfd.
struct Child {
    pid: Pid,
    pidfd: OwnedFd,
}

/// The server's loop on `control` (see the module docs); returns its exit code.
pub(crate) fn serve(control: OwnedFd, body: fn(OwnedFd) -> i32) -> i32 {
    // The server is a helper, not part of the program: it keeps none of the descriptors the
    // program left open across exec (a jobserver pipe, a redirected file), and runs in a
    // session of its own (set up by whoever started it), so the signals the terminal or a
    // `kill -PGID` send to the program's group (Ctrl-C, Ctrl-Z, SIGTERM, SIGHUP, SIGQUIT...)
    // are for the program, which may handle them; the server (and the workers it forks, which
    // inherit its session and this) go when the program or their pool does. SIGINT is also
    // ignored, for a server whose session could not be changed.
    crate::process::fork::drop_inherited(0, &[std::os::fd::AsRawFd::as_raw_fd(&control)]);
    raise_descriptor_limit();
    // Die with the program even while stopped (SIGKILL ends a stopped process; the socket's
    // end-of-file and the `getppid` check below need the server to run). The signal comes when
    // the thread that started us exits: a forked server comes from the program's only thread,
    // an exec'd one from its keeper thread ([`on_keeper_thread`]), both of which
    // live as long as the program. If the program was gone before this call, `getppid` below
    // no longer names it, and the control socket is already closed: we exit on either.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    // SAFETY: setting SIGINT's disposition to "ignore" in this single-threaded helper process
    // has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // A program that ignores SIGCHLD passes that on through exec: the kernel would then reap
    // our workers itself and we could not report how they ended. The server's own setting.
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    // The program that started us: when it is gone (even SIGKILLed while a child it forked
    // still holds our control socket), we go too, with our workers.
    let program = nix::unistd::getppid();
    let me = nix::unistd::getpid();
    // Connections and the workers forked for each.
    let mut conns: Vec<(OwnedFd, Vec<Child>)> = Vec::new();
    loop {
        let (control_ready, conn_ready, exited) = {
            let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
            for (c, kids) in &conns {
                fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                fds.extend(kids.iter().map(|k| PollFd::new(k.pidfd.as_fd(), PollFlags::POLLIN)));
            }
            match poll(&mut fds, PollTimeout::from(PARENT_CHECK_MS)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return 1,
            }
            if nix::unistd::getppid() != program {
                // Reparented: the program died. Our workers die with us (PDEATHSIG).
                return 0;
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let mut at = 1;
            let mut conn_ready = Vec::with_capacity(conns.len());
            let mut exited = Vec::new();
            for (i, (_, kids)) in conns.iter().enumerate() {
                conn_ready.push(ready(&fds[at]));
                for (k, _) in kids.iter().enumerate() {
                    if ready(&fds[at + 1 + k]) {
                        exited.push((i, k));
                    }
                }
                at += 1 + kids.len();
            }
            (ready(&fds[0]), conn_ready, exited)
        };
        // Reap and report, highest index first so that removals keep the others valid.
        for &(i, k) in exited.iter().rev() {
            let child = conns[i].1.swap_remove(k);
            let mut status: libc::c_int = 0;
            let r = loop {
                // SAFETY: waitpid writes the status through a valid pointer to a local.
                let r = unsafe { libc::waitpid(child.pid.as_raw(), &mut status, 0) };
                // A forked server keeps the program's signal handlers: EINTR is not an answer.
                if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break r;
                }
            };
            if r == child.pid.as_raw() {
                let _ = send(conns[i].0.as_fd(), Op::Exited, r, status.into(), None);
            }
        }
        for i in (0..conn_ready.len()).rev() {
            if !conn_ready[i] {
                continue;
            }
            match recv(conns[i].0.as_fd(), Duration::ZERO) {
                Ok(Some((Op::Fork, _, Some(sock)))) => {
                    let (op, pid, value) = match fork_worker(me, sock, body) {
                        Ok(child) => {
                            let pid = child.pid.as_raw();
                            conns[i].1.push(child);
                            (Op::Forked, pid, 0)
                        }
                        Err(errno) => (Op::Failed, 0, errno as i64),
                    };
                    let _ = send(conns[i].0.as_fd(), op, pid, value, None);
                }
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    // The pool is gone (or spoke nonsense): its workers go with it.
                    let (_, kids) = conns.swap_remove(i);
                    kill_and_reap(kids);
                }
            }
        }
        if control_ready {
            match recv(control.as_fd(), Duration::ZERO) {
                Ok(Some((Op::Connect, _, Some(c)))) => conns.push((c, Vec::new())),
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    // The program is gone: so are its workers, and the server.
                    for (_, kids) in conns {
                        kill_and_reap(kids);
                    }
                    return 0;
                }
            }
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: the server may have been started while
/// the program was short of descriptors (its soft limit lowered, or exhausted), and it keeps
/// its limit for the rest of the program's life; at that limit it could not receive the
/// sockets its pools send (`SCM_RIGHTS` under EMFILE truncates them away) nor open its
/// workers' pidfds, and every later pool would fail while the server stays alive. Its
/// workers inherit the raised limit. A failure leaves the limit as it was.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn kill_and_reap(kids: Vec<Child>) {
    for k in &kids {
        let _ = kill(k.pid, Signal::SIGKILL);
    }
    for k in kids {
        reap(k.pid);
    }
}

/// Waits for `pid` (a child that was killed or is exiting), retrying after a handled signal.
fn reap(pid: Pid) {
    while nix::sys::wait::waitpid(pid, None) == Err(nix::errno::Errno::EINTR) {}
}

/// Forks one worker running `body(sock)`; the child closes every other descriptor and dies
/// with the server.
fn fork_worker(server: Pid, sock: OwnedFd, body: fn(OwnedFd) -> i32) -> std::result::Result<Child, i32> {
    let keep = sock.as_raw_fd();
    let r = fork::fork_worker(move || {
        fork::die_with_parent(server);
        fork::drop_inherited(0, &[keep]);
        body(sock)
    });
    let errno = |e: Error| match e {
        Error::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EAGAIN),
        _ => libc::EAGAIN,
    };
    let pid = r.map_err(errno)?;
    match fork::pidfd_open(pid) {
        Ok(pidfd) => Ok(Child { pid, pidfd }),
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            reap(pid);
            Err(errno(e))
        }
    }
}
