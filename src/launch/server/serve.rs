//! The server's side: [`start_forked`] forks it, [`serve`] is its loop (connections, fork
//! requests, exit reports through pidfds), until the program or its control socket is gone.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;

use super::wire::{recv, send, Op};
use crate::error::{Error, Result};
use crate::launch::fork;

/// How often (ms) the server checks that the program that started it is still its parent.
const PARENT_CHECK_MS: u16 = 200;

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

/// A worker the server forked, watched through its pidfd.
struct Child {
    pid: Pid,
    pidfd: OwnedFd,
}

/// One connection (one pool) and the workers forked for it.
type Conn = (OwnedFd, Vec<Child>);

/// What one `poll` found ready.
struct Ready {
    control: bool,
    /// Per connection, whether it has a request (or closed).
    conns: Vec<bool>,
    /// (connection, worker) pairs whose pidfd says the worker exited, in index order.
    exited: Vec<(usize, usize)>,
}

/// The server's loop on `control` (see the module docs); returns its exit code.
pub(crate) fn serve(control: OwnedFd, body: fn(OwnedFd) -> i32) -> i32 {
    become_server(&control);
    // The program that started us: when it is gone (even SIGKILLed while a child it forked
    // still holds our control socket), we go too, with our workers.
    let program = nix::unistd::getppid();
    let me = nix::unistd::getpid();
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let Ok(ready) = wait_ready(&control, &conns) else { return 1 };
        if nix::unistd::getppid() != program {
            // Reparented: the program died. Our workers die with us (PDEATHSIG).
            return 0;
        }
        // Reap and report, highest index first so that removals keep the others valid.
        for &(i, k) in ready.exited.iter().rev() {
            reap_and_report(&mut conns[i], k);
        }
        for i in (0..ready.conns.len()).rev() {
            if ready.conns[i] && !answer(&mut conns[i], me, body) {
                // The pool is gone (or spoke nonsense): its workers go with it.
                let (_, kids) = conns.swap_remove(i);
                kill_and_reap(kids);
            }
        }
        if ready.control {
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

/// Turns the calling process into a helper that belongs to no one but the program.
fn become_server(control: &OwnedFd) {
    // The server is a helper, not part of the program: it keeps none of the descriptors the
    // program left open across exec (a jobserver pipe, a redirected file), and runs in a
    // session of its own (set up by whoever started it), so the signals the terminal or a
    // `kill -PGID` send to the program's group (Ctrl-C, Ctrl-Z, SIGTERM, SIGHUP, SIGQUIT...)
    // are for the program, which may handle them; the server (and the workers it forks, which
    // inherit its session and this) go when the program or their pool does. SIGINT is also
    // ignored, for a server whose session could not be changed.
    fork::drop_inherited(0, &[control.as_raw_fd()]);
    raise_descriptor_limit();
    // Die with the program even while stopped (SIGKILL ends a stopped process; the socket's
    // end-of-file and the `getppid` check in `serve` need the server to run). The signal comes
    // when the thread that started us exits: a forked server comes from the program's only
    // thread, an exec'd one from its keeper thread (`keeper::on_keeper_thread`), both of which
    // live as long as the program. If the program was gone before this call, `getppid` in
    // `serve` no longer names it, and the control socket is already closed: we exit on either.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    // SAFETY: setting SIGINT's disposition to "ignore" in this single-threaded helper process
    // has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // A program that ignores SIGCHLD passes that on through exec: the kernel would then reap
    // our workers itself and we could not report how they ended. The server's own setting.
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// Waits (up to [`PARENT_CHECK_MS`]) for the control socket, a connection or a worker's pidfd.
///
/// # Errors
///
/// The `poll` error other than `EINTR` (which counts as nothing ready).
fn wait_ready(control: &OwnedFd, conns: &[Conn]) -> std::result::Result<Ready, nix::errno::Errno> {
    let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
    for (c, kids) in conns {
        fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        fds.extend(kids.iter().map(|k| PollFd::new(k.pidfd.as_fd(), PollFlags::POLLIN)));
    }
    match poll(&mut fds, PollTimeout::from(PARENT_CHECK_MS)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e),
    }
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    let mut at = 1;
    let mut out = Ready { control: ready(&fds[0]), conns: Vec::with_capacity(conns.len()), exited: Vec::new() };
    for (i, (_, kids)) in conns.iter().enumerate() {
        out.conns.push(ready(&fds[at]));
        out.exited.extend((0..kids.len()).filter(|k| ready(&fds[at + 1 + k])).map(|k| (i, k)));
        at += 1 + kids.len();
    }
    Ok(out)
}

/// Reaps worker `k` of `conn` (its pidfd is readable) and reports its wait status to the pool.
fn reap_and_report(conn: &mut Conn, k: usize) {
    let child = conn.1.swap_remove(k);
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
        let _ = send(conn.0.as_fd(), Op::Exited, r, status.into(), None);
    }
}

/// Answers one request on `conn` (a fork); `false` when the pool is gone or spoke nonsense.
fn answer(conn: &mut Conn, me: Pid, body: fn(OwnedFd) -> i32) -> bool {
    match recv(conn.0.as_fd(), Duration::ZERO) {
        Ok(Some((Op::Fork, _, Some(sock)))) => {
            let (op, pid, value) = match fork_worker(me, sock, body) {
                Ok(child) => {
                    let pid = child.pid.as_raw();
                    conn.1.push(child);
                    (Op::Forked, pid, 0)
                }
                Err(errno) => (Op::Failed, 0, errno as i64),
            };
            let _ = send(conn.0.as_fd(), op, pid, value, None);
            true
        }
        Ok(None) => true,
        Ok(Some(_)) | Err(_) => false,
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
        fork::reap(k.pid);
    }
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
            fork::reap(pid);
            Err(errno(e))
        }
    }
}
