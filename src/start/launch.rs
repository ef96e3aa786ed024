//! The parent's side of starting a worker by each method: the supervisor's [`Launcher`], the
//! lazily started fork server, and `Process::spawn_fn`.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytemuck::Pod;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{await_hello, send_boot, BootWire, StartMethod, MAX_ARG};
use crate::error::{Error, Result};
use crate::launch::spawn::{self, ExeIdentity, INIT_MISSING_EXIT_CODE};
use crate::launch::{fork, server};
use crate::process::Process;
use crate::ring::Ring;
use crate::worker::{self, WorkerCtx};

/// How a worker was started, which decides how its exit status is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// Our child (forked or spawned by the supervisor thread): `waitpid`.
    Child,
    /// A child of the fork server: it reports the status.
    Served,
}

/// A worker started but not yet known to be ready.
pub(crate) struct Pending {
    pub pid: Pid,
    pub sock: OwnedFd,
    pub how: How,
    /// Opened before the worker can run anything: the fork server reaps its children at once,
    /// so a pidfd opened later could miss a worker that died on its first chunk.
    pub pidfd: Option<OwnedFd>,
    handshake: bool,
    /// `ForkServer`: the start-up record to send once the server has answered with the pid
    /// ([`Launcher::advance`]).
    deferred: Option<(BootWire, Ring)>,
    /// `ForkServer`: the [`Launcher::connections`] count when it was requested (an answer
    /// can only come on that connection).
    connection: u64,
}

/// Starts the workers of one pool by its method.
pub(crate) struct Launcher {
    method: StartMethod,
    identity: Option<ExeIdentity>,
    #[cfg(any(test, feature = "testing"))]
    hooks: TestHooks,
    server: Option<server::Connection>,
    /// Connections to a fork server made so far (a new one after each server death).
    connections: u64,
}

/// The test hooks a launcher applies (`testing` builds only; release launchers have none).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub(crate) struct TestHooks {
    /// The executable `Spawn` workers run instead of this one (a mismatch test).
    pub exe: Option<std::path::PathBuf>,
    /// Where the pool's first workers stop themselves once.
    pub pause: Option<crate::worker::PausePoint>,
    /// How many more launches get `pause`: the pool's first workers, not their replacements.
    pub pauses_left: usize,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher").field("method", &self.method).finish()
    }
}

/// Whether the fork warning of [`resolve`] was printed (or silenced: [`quiet_fork_warning`]).
static WARNED: AtomicBool = AtomicBool::new(false);

/// The warning about `Fork` in a multi-threaded process is not printed (an embedder that warns
/// in its own words: the Python package's `warnings.warn`).
pub(crate) fn quiet_fork_warning() {
    WARNED.store(true, Ordering::Relaxed);
}

/// Chooses the method for a pool (see [`StartMethod`]'s docs for the default: `Fork` in a
/// single-threaded process, else `ForkServer`, whose server is exec'd when other threads run)
/// and warns, once and from the parent, when an explicit `Fork` meets other threads.
pub(crate) fn resolve(requested: Option<StartMethod>) -> StartMethod {
    let alone = fork::single_threaded();
    match requested {
        Some(m) => {
            if m == StartMethod::Fork && !alone && !WARNED.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "shmpool: forking workers from a multi-threaded process: a kernel that takes a lock another \
                     thread held (a logger, stdout) may hang; use StartMethod::ForkServer or Spawn"
                );
            }
            m
        }
        None if alone => StartMethod::Fork,
        None => StartMethod::ForkServer,
    }
}

/// Starts (if need be) and connects to this process's fork server.
///
/// The server is exec'd from this binary (a fresh, small image, which neither shares the
/// program's heap copy-on-write — a server forked from a program holding gigabytes would keep
/// them alive after the program frees them — nor any lock) when the program runs several
/// threads or called `init()`. A single-threaded program that never called `init()` forks it,
/// which is faster and safe while no other thread exists.
fn connect_server() -> Result<server::Connection> {
    server::connect(|| {
        if !spawn::init_called() && fork::single_threaded() {
            return server::start_forked(super::child_main);
        }
        let identity = spawn::exe_identity()?;
        let (mine, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| Error::os("socketpair", e.into()))?;
        // From the keeper thread: the server dies with the thread that spawned it (below).
        let (pid, token) = server::on_keeper_thread(move || spawn::spawn_self(theirs.as_fd(), true))??;
        // A send that fails means the child is gone: `finish_child` reads why from its status.
        let _ = send_boot(&mine, &super::server_boot(identity).with_token(token), None, &[]);
        let p =
            Pending { pid, sock: mine, how: How::Child, pidfd: None, handshake: true, deferred: None, connection: 0 };
        let (pid, control) = finish_child(p, identity, "fork server", reap_child)?;
        Ok((control, pid))
    })
}

fn reap_child(pid: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(s) => return Some(s),
            Err(_) => return None,
        }
    }
}

/// Waits for a started child's answer; on anything but "same binary" kills and reaps it and
/// turns what happened into an error.
fn finish_child(
    p: Pending,
    identity: ExeIdentity,
    what: &'static str,
    mut reap: impl FnMut(Pid) -> Option<WaitStatus>,
) -> Result<(Pid, OwnedFd)> {
    if !p.handshake {
        return Ok((p.pid, p.sock));
    }
    let answer = await_hello(&p.sock);
    if let Ok(Ok(())) = answer {
        return Ok((p.pid, p.sock));
    }
    let _ = kill(p.pid, Signal::SIGKILL);
    let status = reap(p.pid);
    let pid = p.pid.as_raw() as u32;
    Err(match (answer, status) {
        (Ok(Err(found)), _) => Error::BinaryMismatch { expected: identity.to_string(), found: found.to_string() },
        (_, Some(WaitStatus::Exited(_, INIT_MISSING_EXIT_CODE))) => Error::InitNotCalled { what },
        (answer, status) => {
            let reason = match (status, answer) {
                (Some(WaitStatus::Exited(_, code)), _) => format!("exited with code {code} before its handshake"),
                (_, Err(Error::Os { source, .. })) if source.kind() == std::io::ErrorKind::TimedOut => {
                    format!("no handshake within {:?}", super::BOOT_TIMEOUT)
                }
                (Some(WaitStatus::Signaled(_, sig, _)), _) => format!("killed by {sig:?} before its handshake"),
                (_, Err(e)) => e.to_string(),
                _ => "no handshake".to_string(),
            };
            Error::StartFailed { what, pid, reason }
        }
    })
}

/// Applies the pause hook to the pool's first workers.
#[cfg(any(test, feature = "testing"))]
impl TestHooks {
    fn apply(&mut self, mut ctx: WorkerCtx) -> WorkerCtx {
        if self.pauses_left > 0 {
            self.pauses_left -= 1;
            ctx.pause = self.pause;
        }
        ctx
    }
}

impl Launcher {
    /// The same launcher with the test hooks `hooks`.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn with_test_hooks(self, hooks: TestHooks) -> Launcher {
        Launcher { hooks, ..self }
    }

    /// Starts a `Spawn` worker whose socket is `sock`: this program (in a test, perhaps another).
    fn spawn_worker(&self, sock: std::os::fd::BorrowedFd<'_>) -> Result<(Pid, crate::key::Key)> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(exe) = &self.hooks.exe {
            return spawn::spawn_exe(sock, exe, true);
        }
        spawn::spawn_self(sock, true)
    }

    /// A launcher for `method` (already resolved). For `ForkServer` this connects to the
    /// server, starting it if need be: call it from the thread that builds the pool, so that
    /// a forked server comes from that (then single) thread.
    ///
    /// # Errors
    ///
    /// Fork server start-up errors; [`Error::Os`] when the executable cannot be examined.
    pub(crate) fn new(method: StartMethod) -> Result<Launcher> {
        let mut l = Launcher {
            method,
            identity: None,
            #[cfg(any(test, feature = "testing"))]
            hooks: TestHooks::default(),
            server: None,
            connections: 0,
        };
        match method {
            StartMethod::Fork => {}
            StartMethod::Spawn => {
                l.identity = Some(spawn::exe_identity()?);
            }
            StartMethod::ForkServer => {
                l.identity = Some(spawn::exe_identity()?);
                l.server = Some(connect_server()?);
            }
        }
        Ok(l)
    }

    /// Starts one worker with `ctx`; [`Launcher::finish`] completes its handshake. Starting
    /// several before finishing any overlaps their start-up.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `fork`, `posix_spawn` or the fork server fails.
    pub(crate) fn launch(&mut self, ctx: WorkerCtx, parent_end: OwnedFd) -> Result<Pending> {
        #[cfg(any(test, feature = "testing"))]
        let ctx = self.hooks.apply(ctx);
        let identity = self.identity;
        let pending = |pid, how, pidfd, deferred, connection| Pending {
            pid,
            sock: parent_end,
            how,
            pidfd,
            handshake: true,
            deferred,
            connection,
        };
        match self.method {
            StartMethod::Fork => {
                let pid = fork::fork_worker(move || worker::run(ctx))?;
                let pidfd = self.watch(pid, How::Child)?;
                Ok(Pending { handshake: false, ..pending(pid, How::Child, Some(pidfd), None, 0) })
            }
            StartMethod::Spawn => {
                let identity = identity.expect("a Spawn launcher knows the executable");
                let (pid, token) = self.spawn_worker(ctx.sock.as_fd())?;
                let boot = BootWire::worker(identity, &ctx, nix::unistd::getpid().as_raw()).with_token(token);
                let ring: Ring = ctx.ring.clone();
                // Our copy of the child's end must go, so that its death reads as end-of-file.
                drop(ctx);
                // The child may have exited already, but it stays a zombie until we reap it, so
                // its pidfd can be opened.
                let pidfd = self.watch(pid, How::Child)?;
                let p = pending(pid, How::Child, Some(pidfd), None, 0);
                // A send that fails means the child is gone: `finish` reads why from its status.
                let _ = send_boot(&p.sock, &boot, Some(&ring), &[]);
                Ok(p)
            }
            StartMethod::ForkServer => {
                let identity = identity.expect("a ForkServer launcher knows the executable");
                self.ensure_server()?;
                let conn = self.server.as_mut().expect("a ForkServer launcher has a connection");
                if let Err(e) = conn.request_fork(ctx.sock.as_fd()) {
                    // The server may have died since `ensure_server` looked: once more.
                    if !conn.is_closed() {
                        return Err(e);
                    }
                    self.ensure_server()?;
                    let conn = self.server.as_mut().expect("a ForkServer launcher has a connection");
                    conn.request_fork(ctx.sock.as_fd())?;
                }
                let boot = BootWire::worker(identity, &ctx, 0);
                let ring: Ring = ctx.ring.clone();
                drop(ctx);
                Ok(pending(Pid::from_raw(0), How::Served, None, Some((boot, ring)), self.connections))
            }
        }
    }

    /// `ForkServer`: makes sure the connection's server is alive. A dead one (SIGKILLed, the
    /// OOM killer's pick) costs a restart, never the pool: a new server is started (the first
    /// pool to notice starts it, the others connect to it), and this pool connects to it; its
    /// workers, which died with the old server (`PR_SET_PDEATHSIG`), are replaced through it.
    ///
    /// # Errors
    ///
    /// What starting the server returns: notably [`Error::InitNotCalled`] in a program that
    /// never called `init()` and now runs several threads (a server forked from it could
    /// inherit another thread's locks, which is what `ForkServer` promises never happens).
    fn ensure_server(&mut self) -> Result<()> {
        if self.server.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        // Dropping the dead connection closes our end: nothing is left to tell. Requests made
        // on it are never answered (`advance` refuses them).
        self.server = None;
        self.connections += 1;
        self.server = Some(connect_server()?);
        Ok(())
    }

    /// For a `ForkServer` worker: collects its pid from the server, starts watching it and
    /// sends its start-up record (a no-op for the other methods, and when done already).
    /// Advancing every launched worker before finishing any overlaps their round trips.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the server could not fork or the pidfd cannot be opened.
    pub(crate) fn advance(&mut self, p: &mut Pending) -> Result<()> {
        let Some((boot, ring)) = p.deferred.take() else { return Ok(()) };
        let gone = || Error::os("fork server", std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        if p.connection != self.connections {
            // Requested from a server that died since: no answer will ever come.
            return Err(gone());
        }
        let conn = self.server.as_mut().ok_or_else(gone)?;
        p.pid = conn.forked()?;
        // The child waits for its start-up record, so it is alive here.
        p.pidfd = Some(self.watch(p.pid, How::Served)?);
        // A send that fails means the child is gone: `finish` reads why from its status.
        let _ = send_boot(&p.sock, &boot, Some(&ring), &[]);
        Ok(())
    }

    /// Waits for a launched worker to report that it runs the same binary and serves.
    ///
    /// # Errors
    ///
    /// [`Error::BinaryMismatch`], [`Error::InitNotCalled`] (the child exited with the code of a
    /// child that reached `main`), [`Error::StartFailed`]; the worker is killed and reaped in
    /// each case.
    pub(crate) fn finish(&mut self, mut p: Pending) -> Result<(Pid, OwnedFd, OwnedFd)> {
        self.advance(&mut p)?;
        let what = match self.method {
            StartMethod::Spawn => "StartMethod::Spawn worker",
            _ => "fork server worker",
        };
        let identity = self.identity.unwrap_or(bytemuck::Zeroable::zeroed());
        let how = p.how;
        let pidfd = p.pidfd.take().expect("a launched worker has a pidfd");
        let (pid, sock) = finish_child(p, identity, what, |pid| self.reap(pid, how, Duration::from_secs(10)))?;
        Ok((pid, sock, pidfd))
    }

    /// A pidfd for a just-started worker; kills and reaps it if none can be opened.
    fn watch(&mut self, pid: Pid, how: How) -> Result<OwnedFd> {
        fork::pidfd_open(pid).inspect_err(|_| {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = self.reap(pid, how, Duration::from_secs(5));
        })
    }

    /// Collects the exit status of a worker that has exited (or is about to: it was killed).
    pub(crate) fn reap(&mut self, pid: Pid, how: How, timeout: Duration) -> Option<WaitStatus> {
        match how {
            How::Child => reap_child(pid),
            How::Served => self.server.as_mut()?.wait_exit(pid, timeout).ok(),
        }
    }
}

impl Process {
    /// Starts a fresh copy of this program (`posix_spawn` of `/proc/self/exe`) that runs
    /// `f(arg)` and exits: code 0 when `f` returns, 101 when it panics. The copy runs `f`
    /// instead of `main` (see [`StartMethod`]), so this works from any program, `#[test]`
    /// functions included, with no call in `main`.
    ///
    /// Use it instead of [`Process::spawn`] in a multi-threaded program: the child is a new
    /// process, so it cannot inherit a lock another thread held (a logger's, stdout's), at the
    /// price of an `exec` (about a millisecond) and of passing state as a `Pod` argument
    /// instead of a closure's captures. `f` must be a function of this executable.
    ///
    /// # Examples
    ///
    /// ```
    /// fn child(n: u32) {
    ///     println!("child {n} runs in a fresh process");
    /// }
    ///
    /// fn main() -> shmpool::Result<()> {
    ///     // The child runs `child(7)` and never reaches `main`.
    ///     let p = shmpool::Process::spawn_fn(child, 7u32)?;
    ///     assert!(p.join()?.success());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for an argument over 64 KiB; [`Error::Os`] when the spawn fails.
    pub fn spawn_fn<A: Pod>(f: fn(A), arg: A) -> Result<Process> {
        spawn::refuse_uninitialised_child();
        if std::mem::size_of::<A>() + 16 > MAX_ARG {
            return Err(Error::InvalidOption {
                option: "spawn_fn argument",
                value: std::mem::size_of::<A>() as u64,
                allowed: "at most 64 KiB",
            });
        }
        let (entry, mut params) = crate::kernel::process_entry(f)?;
        params.extend_from_slice(bytemuck::bytes_of(&arg));
        let identity = spawn::exe_identity()?;
        let (mine, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| Error::os("socketpair", e.into()))?;
        let (pid, token) = spawn::spawn_self(theirs.as_fd(), false)?;
        drop(theirs);
        let p = Process::from_pid(pid);
        // A send that fails means the child is gone already; its exit status says why.
        let boot = super::process_boot(identity, entry.parts()).with_token(token);
        let _ = send_boot(&mine, &boot, None, &params);
        Ok(p)
    }
}
