//! Starting a fresh copy of the running executable (`posix_spawn` of `/proc/self/exe`) that
//! shmpool's start-up hook (`start::hook`, an ELF constructor that runs before `main`) turns
//! into a worker, a fork server or a `Process` child, and the checks around it: the binary's
//! identity, the marker that proves a process is such a child, and the exit of a child that
//! reached `main` anyway.
//!
//! The child inherits exactly one descriptor, a socket, whose number it finds in
//! [`MARKER_ENV`] beside a one-time random token; it proves to be a spawned child only if that
//! descriptor is the socket its parent made and its start-up record repeats the token.
//! Everything it needs (keys, the ring, what to run) arrives over that socket.
//! Nothing secret travels in argv or the environment (the token is a nonce, not a key). `posix_spawn` (a `vfork`-style clone
//! followed by `exec`) runs no code of ours between the clone and the exec, so it is safe from
//! any thread of a multi-threaded program.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytemuck::{Pod, Zeroable};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::key::Key;

/// The environment variable that tells a spawned child which descriptor is its socket and
/// the one-time token its start-up record repeats: `<fd>:<32 hex digits>`.
pub(crate) const MARKER_ENV: &str = "SHMPOOL_CHILD";

/// Exit code of a spawned child whose `main` reached shmpool without having become what it was
/// started for (its executable lacks shmpool's start-up hook, and `main` did not call `init()`),
/// or whose marker names no usable socket.
pub(crate) const INIT_MISSING_EXIT_CODE: i32 = 86;

/// Where children exec'd by [`spawn_self`] go when the program set one
/// (`shmpool::set_spawn_route`): an interpreter that loads shmpool as an extension module.
#[derive(Debug, Clone)]
pub(crate) struct SpawnRoute {
    /// The executable (`None`: the running one, `/proc/self/exe`).
    pub(crate) exe: Option<PathBuf>,
    /// The arguments after `argv[0]`.
    pub(crate) args: Vec<std::ffi::OsString>,
}

static ROUTE: std::sync::Mutex<Option<SpawnRoute>> = std::sync::Mutex::new(None);

/// Sets the route of exec'd children and records that they reach `init()` themselves: their
/// markers say so, and the start-up hook leaves them to `init()`.
pub(crate) fn set_route(route: SpawnRoute) {
    *ROUTE.lock().unwrap_or_else(|p| p.into_inner()) = Some(route);
    mark_init_called();
}

fn route() -> Option<SpawnRoute> {
    ROUTE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The suffix of a marker whose child was started through a route: it becomes a child in
/// `init()`, called by the route's command, never in the start-up hook (which, in an extension
/// module, runs inside the interpreter's `dlopen`, before the module exists).
const DEFERRED_SUFFIX: &str = ":init";

/// Set by `init()` in every process that calls it.
static INIT_CALLED: AtomicBool = AtomicBool::new(false);
/// Set in a spawned child once it has taken its role.
static IN_ROLE: AtomicBool = AtomicBool::new(false);

/// Records that the program calls `init()`.
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

/// Parses a marker value `<fd>:<32 hex digits>`, optionally followed by [`DEFERRED_SUFFIX`]
/// (the flag returned); `None` for anything else (a variable of that name that shmpool did not
/// write).
fn parse_marker(v: &std::ffi::OsStr) -> Option<(i32, Key, bool)> {
    let v = v.to_str()?;
    let (v, deferred) = match v.strip_suffix(DEFERRED_SUFFIX) {
        Some(v) => (v, true),
        None => (v, false),
    };
    let (fd, token) = v.split_once(':')?;
    let fd: i32 = fd.parse().ok().filter(|&fd| fd >= 0)?;
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let k0 = u64::from_str_radix(&token[..16], 16).ok()?;
    let k1 = u64::from_str_radix(&token[16..], 16).ok()?;
    Some((fd, Key::from_words(k0, k1), deferred))
}

/// The marker of a spawned child, if this process is one.
fn marker() -> Option<(i32, Key, bool)> {
    parse_marker(&std::env::var_os(MARKER_ENV)?)
}

/// Called by shmpool's entry points (building a pool, starting a process): a spawned child
/// whose `main` got here without having taken its role exits at once with
/// [`INIT_MISSING_EXIT_CODE`], so it never runs on as a second copy of the program; its parent
/// reports [`Error::InitNotCalled`]. (The start-up hook takes the role before `main` in every
/// executable that links shmpool, so this is a backstop for hosts that load it otherwise.)
pub(crate) fn refuse_uninitialised_child() {
    if !IN_ROLE.load(Ordering::SeqCst) && marker().is_some() {
        crate::launch::fork::raw_stderr(b"shmpool: spawned child reached shmpool without init(): exiting\n");
        crate::launch::fork::exit_now(INIT_MISSING_EXIT_CODE);
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

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::os("posix_spawn", std::io::Error::from(std::io::ErrorKind::InvalidInput)))
}

/// Starts this program (the route's executable if `shmpool::set_spawn_route` set one, else
/// `/proc/self/exe`, the running executable) with no arguments but its name (and the route's
/// arguments, if one is set), `sock` as its one extra descriptor (same number, close-on-exec cleared by the spawn's
/// `dup2`) and [`MARKER_ENV`] naming it with a fresh random token, which is returned: the
/// child's start-up record must repeat it. The child is a child of the calling thread
/// (`PR_SET_PDEATHSIG` semantics).
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
pub(crate) fn spawn_self(sock: BorrowedFd<'_>, detach: bool) -> Result<(Pid, Key)> {
    let exe = route().and_then(|r| r.exe).unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    spawn_exe(sock, &exe, detach)
}

/// [`spawn_self`] with the executable `exe` (this program's, or in a test another one).
///
/// # Errors
///
/// As [`spawn_self`].
pub(crate) fn spawn_exe(sock: BorrowedFd<'_>, exe: &Path, detach: bool) -> Result<(Pid, Key)> {
    let route = route();
    let path = cstring(exe.as_os_str().as_bytes())?;
    let argv0 = std::env::args_os().next().unwrap_or_else(|| exe.as_os_str().to_os_string());
    let mut argv = vec![cstring(argv0.as_bytes())?];
    for a in route.iter().flat_map(|r| &r.args) {
        argv.push(cstring(a.as_bytes())?);
    }
    let fd = sock.as_raw_fd();
    let token = Key::random();
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os().filter(|(k, _)| k != MARKER_ENV) {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(&kv)?);
    }
    let (k0, k1) = token.words();
    let deferred = if route.is_some() { DEFERRED_SUFFIX } else { "" };
    envp.push(cstring(format!("{MARKER_ENV}={fd}:{k0:016x}{k1:016x}{deferred}").as_bytes())?);
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
    Ok((Pid::from_raw(pid), token))
}

/// Ignores SIGPIPE, as std's runtime does before `main` (a child that becomes a worker before
/// `main` would otherwise die of a write to a closed pipe instead of getting `EPIPE`).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to "ignore" installs no handler and has no
    // preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// What [`take_marker`] found.
pub(crate) enum Marker {
    /// No marker: an ordinary process.
    Absent,
    /// A spawned child: its socket and the token its start-up record must repeat.
    Child(OwnedFd, Key),
    /// A marker in shmpool's format whose descriptor is not the socket its parent made (the
    /// parent died before the child ran, or the descriptor was closed): the child must exit.
    Invalid,
}

/// In a process that [`spawn_self`] started: adopts the socket named by [`MARKER_ENV`] and
/// removes the variable, so that programs this child starts in turn do not mistake themselves
/// for spawned children. A variable not in shmpool's format is left alone ([`Marker::Absent`]).
///
/// The socket must prove to be the one the parent made: an `AF_UNIX` `SOCK_SEQPACKET` socket
/// whose peer process (the one that created the pair) is this process's parent. With the
/// 128-bit token, that is nothing an ordinary program has by accident.
///
/// A marker of a child started through a route (see [`set_route`]) is left alone, as
/// [`Marker::Absent`], unless `in_init` (the call comes from `init()`, which the route's
/// command calls).
///
/// Call it only while the process runs a single thread (before `main`, or first thing in it):
/// it changes the environment.
pub(crate) fn take_marker(in_init: bool) -> Marker {
    let Some((fd, token, deferred)) = marker() else { return Marker::Absent };
    if deferred && !in_init {
        return Marker::Absent;
    }
    // Single-threaded here (the contract above), so no other thread reads the environment while
    // it changes.
    std::env::remove_var(MARKER_ENV);
    if !is_parent_socket(fd) {
        return Marker::Invalid;
    }
    // SAFETY: the descriptor was inherited from the parent for this purpose (the marker names
    // it, and it is the socket the parent created: checked above), and nothing else in this
    // process owns it: the marker is consumed here, once.
    Marker::Child(unsafe { OwnedFd::from_raw_fd(fd) }, token)
}

/// Whether `fd` is an open `AF_UNIX` `SOCK_SEQPACKET` socket created by this process's parent.
fn is_parent_socket(fd: i32) -> bool {
    use nix::sys::socket::{getsockopt, sockopt};
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` through a valid pointer, or fails for a closed descriptor.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it initialised the whole struct.
    let mode = unsafe { st.assume_init() }.st_mode;
    if mode & libc::S_IFMT != libc::S_IFSOCK {
        return false;
    }
    // SAFETY: fstat just proved `fd` open, and nothing closes it while this borrow lives (the
    // process is single-threaded here and the descriptor is not owned elsewhere yet).
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let seqpacket = getsockopt(&sock, sockopt::SockType).is_ok_and(|t| t == nix::sys::socket::SockType::SeqPacket);
    let parent = getsockopt(&sock, sockopt::PeerCredentials)
        .is_ok_and(|c| c.pid() == nix::unistd::getppid().as_raw() && c.pid() > 1);
    seqpacket && parent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_markers_in_shmpool_format_are_recognised() {
        let ok = parse_marker("7:00000000000000010000000000000002".as_ref()).unwrap();
        assert_eq!(ok.0, 7);
        assert_eq!(ok.1.words(), (1, 2));
        assert!(!ok.2);
        let routed = parse_marker("7:00000000000000010000000000000002:init".as_ref()).unwrap();
        assert_eq!((routed.0, routed.1.words(), routed.2), (7, (1, 2), true));
        for bad in [
            "7",
            "7:",
            "x:00000000000000010000000000000002",
            "-1:00000000000000010000000000000002",
            "7:0000000000000001000000000000000",
            "7:0000000000000001000000000000000g",
            "7:00000000000000010000000000000002:",
            "7:00000000000000010000000000000002:other",
        ] {
            assert!(parse_marker(bad.as_ref()).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_descriptor_that_is_not_the_parents_socket_is_refused() {
        let (a, _b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // Made by this process, not by its parent.
        assert!(!is_parent_socket(a.as_raw_fd()));
        assert!(!is_parent_socket(-1));
    }
}
