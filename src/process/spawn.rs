//! Starting a fresh copy of the running executable (`posix_spawn` of `/proc/self/exe`) that
//! `shmpool::init()` turns into a worker, a fork server or a `Process` child, and the checks
//! around it: the binary's identity, whether the program calls `init()`, and the exit of a
//! child whose `main` does not.
//!
//! The child inherits exactly one descriptor, a socket, whose number it finds in
//! [`MARKER_ENV`]; everything it needs (keys, the ring, what to run) arrives over that socket.
//! Nothing secret travels in argv or the environment. `posix_spawn` (a `vfork`-style clone
//! followed by `exec`) runs no code of ours between the clone and the exec, so it is safe from
//! any thread of a multi-threaded program.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytemuck::{Pod, Zeroable};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The environment variable that tells a spawned child which descriptor is its socket.
pub(crate) const MARKER_ENV: &str = "SHMPOOL_CHILD_FD";

/// Exit code of a spawned child whose `main` reached shmpool without calling `init()` first.
pub(crate) const INIT_MISSING_EXIT_CODE: i32 = 86;

/// Set by `init()` in every process that calls it.
static INIT_CALLED: AtomicBool = AtomicBool::new(false);
/// Set by `init()` in a spawned child once it has taken its role.
static IN_ROLE: AtomicBool = AtomicBool::new(false);

/// Records that the program calls `init()` (so children started from this binary will too).
pub(crate) fn mark_init_called() {
    INIT_CALLED.store(true, Ordering::SeqCst);
}

/// Whether `init()` has been called in this process.
pub(crate) fn init_called() -> bool {
    INIT_CALLED.load(Ordering::SeqCst)
}

/// Records that this spawned child has taken its role (worker, server, process).
pub(crate) fn mark_in_role() {
    IN_ROLE.store(true, Ordering::SeqCst);
}

/// The socket descriptor a spawned child was given, if this process is one.
pub(crate) fn marker() -> Option<i32> {
    std::env::var_os(MARKER_ENV)?.to_str()?.parse().ok()
}

/// Called by shmpool's entry points (building a pool, starting a process): a spawned child
/// whose `main` got here without `init()` exits at once with [`INIT_MISSING_EXIT_CODE`], so it
/// never runs on as a second copy of the program; its parent reports
/// [`Error::InitNotCalled`].
pub(crate) fn refuse_uninitialised_child() {
    if !IN_ROLE.load(Ordering::SeqCst) && marker().is_some() {
        crate::process::fork::raw_stderr(b"shmpool: spawned child reached shmpool without init(): exiting\n");
        crate::process::fork::exit_now(INIT_MISSING_EXIT_CODE);
    }
}

/// Who the executable is: device, inode, size and modification time of `/proc/self/exe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct ExeIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl std::fmt::Display for ExeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dev {} inode {} size {} mtime {}.{:09}",
            self.dev, self.ino, self.size, self.mtime_sec, self.mtime_nsec
        )
    }
}

/// The identity of the running executable.
///
/// # Errors
///
/// [`Error::Os`] when `/proc/self/exe` cannot be examined.
pub(crate) fn exe_identity() -> Result<ExeIdentity> {
    let st = nix::sys::stat::stat("/proc/self/exe").map_err(|e| Error::os("stat /proc/self/exe", e.into()))?;
    Ok(ExeIdentity {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
    })
}

/// How spawned children are started: which executable and which arguments. Normally the
/// running executable with no arguments; test binaries route the child to a test that calls
/// `init()`, and the binary-mismatch test points it at a copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpawnRoute {
    pub exe: Option<PathBuf>,
    pub args: Vec<OsString>,
}

static ROUTE: Mutex<Option<SpawnRoute>> = Mutex::new(None);

/// Sets the arguments spawned children get (test binaries: the name of the test that calls
/// `init()`), and records that such children will call `init()`.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn set_route(route: SpawnRoute) {
    *ROUTE.lock().unwrap_or_else(|p| p.into_inner()) = Some(route);
    mark_init_called();
}

/// The current route (default: the running executable, no arguments). Never blocks for
/// good: a forked child may have inherited the lock held by another thread of its parent; the
/// lock is only ever held for a clone, so a lock still busy after many tries is such a one, and
/// the default route is used (only tests ever set another).
pub(crate) fn route() -> SpawnRoute {
    for _ in 0..1000 {
        match ROUTE.try_lock() {
            Ok(g) => return g.clone().unwrap_or_default(),
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner().clone().unwrap_or_default(),
            Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
    SpawnRoute::default()
}

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::os("posix_spawn", std::io::Error::from(std::io::ErrorKind::InvalidInput)))
}

/// Starts the executable of `route` (default `/proc/self/exe`) with `sock` as its one extra
/// descriptor (same number, close-on-exec cleared by the spawn's `dup2`) and [`MARKER_ENV`]
/// naming it. The child is a child of the calling thread (`PR_SET_PDEATHSIG` semantics).
///
/// `detach` (the fork server, `Spawn` workers: helpers, not part of the program) starts the
/// child in a session of its own, so the terminal's and the process group's signals meant for
/// the program (Ctrl-C, Ctrl-Z, Ctrl-\\, a hang-up, `kill -TERM -PGID`) never reach it: it
/// goes when the program or its pool does (`PR_SET_PDEATHSIG`, end-of-file on its socket).
/// A `Process::spawn_fn` child stays in the program's group, as `multiprocessing`'s do.
///
/// # Errors
///
/// [`Error::Os`] when `posix_spawn` fails.
pub(crate) fn spawn_self(sock: BorrowedFd<'_>, route: &SpawnRoute, detach: bool) -> Result<Pid> {
    let exe = route.exe.clone().unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let path = cstring(exe.as_os_str().as_bytes())?;
    let argv0 = std::env::args_os().next().unwrap_or_else(|| exe.clone().into_os_string());
    let mut argv = vec![cstring(argv0.as_bytes())?];
    for a in &route.args {
        argv.push(cstring(a.as_bytes())?);
    }
    let fd = sock.as_raw_fd();
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os().filter(|(k, _)| k != MARKER_ENV) {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(&kv)?);
    }
    envp.push(cstring(format!("{MARKER_ENV}={fd}").as_bytes())?);
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|c| c.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|c| c.as_ptr().cast_mut()).collect();
    envp_p.push(std::ptr::null_mut());

    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: init functions write a valid object into the MaybeUninit storage; each is
    // destroyed below exactly once, after posix_spawn.
    unsafe {
        libc::posix_spawn_file_actions_init(actions.as_mut_ptr());
        libc::posix_spawnattr_init(attr.as_mut_ptr());
    }
    let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut pid: libc::pid_t = 0;
    // SAFETY: `actions` and `attr` were initialised above; `empty` is initialised by
    // sigemptyset before use; `path`, `argv_p` and `envp_p` are NUL-terminated strings in
    // null-terminated arrays that outlive the call. dup2(fd, fd) in the file actions clears
    // FD_CLOEXEC on `fd` in the child only (glibc 2.29+), so the child inherits the socket.
    let rc = unsafe {
        libc::posix_spawn_file_actions_adddup2(actions.as_mut_ptr(), fd, fd);
        libc::sigemptyset(empty.as_mut_ptr());
        libc::posix_spawnattr_setsigmask(attr.as_mut_ptr(), empty.as_ptr());
        let setsid = if detach { libc::POSIX_SPAWN_SETSID } else { 0 };
        libc::posix_spawnattr_setflags(attr.as_mut_ptr(), libc::POSIX_SPAWN_SETSIGMASK as libc::c_short | setsid);
        libc::posix_spawn(&mut pid, path.as_ptr(), actions.as_ptr(), attr.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr())
    };
    // SAFETY: both objects were initialised above and are not used after this.
    unsafe {
        libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
        libc::posix_spawnattr_destroy(attr.as_mut_ptr());
    }
    if rc != 0 {
        return Err(Error::os("posix_spawn", std::io::Error::from_raw_os_error(rc)));
    }
    Ok(Pid::from_raw(pid))
}

/// In a spawned child: adopts the socket named by [`MARKER_ENV`] and removes the variable, so
/// that programs this child starts in turn do not mistake themselves for spawned children.
/// `None` in an ordinary process (no marker, or the descriptor is not a socket).
pub(crate) fn take_marker_socket() -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = marker()?;
    // `init()` runs first thing in `main`, before the program starts threads (its documented
    // contract), so no other thread reads the environment while it changes.
    std::env::remove_var(MARKER_ENV);
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` through a valid pointer, or fails for a closed descriptor.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it initialised the whole struct.
    let mode = unsafe { st.assume_init() }.st_mode;
    if mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: the descriptor was inherited from the parent for this purpose (the marker names
    // it), it is open (fstat succeeded) and nothing else in this process owns it: the marker is
    // consumed here, once.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
