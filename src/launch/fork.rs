//! The fork primitives the pool's supervisor uses: fork a worker, watch it through a pidfd,
//! tie its life to the forking thread, and leave without touching anything another thread of
//! the parent could have held at the fork.
//!
//! After `fork` only the calling thread exists in the child, and every lock another thread held
//! at that instant stays locked forever: std's stdout and stderr locks, a logger's mutex, the
//! panic-hook lock. So a forked worker never flushes std's buffers, never prints through std,
//! and leaves with `_exit` (no destructors, no `atexit` handlers). glibc resets its allocator
//! locks at fork, so allocating is safe.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Callbacks around every `fork` that shmpool makes in this process (see [`set_fork_hooks`]).
///
/// An interpreter embedding shmpool sets them to do what its own `fork` does: the Python
/// package takes the GIL and calls `PyOS_BeforeFork` in `before`, `PyOS_AfterFork_Parent` and
/// releases the GIL in `after_parent`, and calls `PyOS_AfterFork_Child` in `after_child`, so
/// that forked workers can run Python code.
#[derive(Debug, Clone, Copy)]
pub struct ForkHooks {
    /// Runs in the forking thread just before the fork (a panic cancels the fork, which then
    /// fails with [`Error::Os`]).
    pub before: fn(),
    /// Runs in the forking thread just after the fork (or after a fork that failed).
    pub after_parent: fn(),
    /// Runs in the child first thing, before it becomes what it was forked for (a panic ends
    /// the child as a panicking worker would). Only the forking thread exists there: what holds
    /// for kernels of `Fork` pools holds for it.
    pub after_child: fn(),
}

static HOOKS: std::sync::Mutex<Option<ForkHooks>> = std::sync::Mutex::new(None);

/// Sets (`Some`) or removes (`None`) the callbacks run around every `fork` that shmpool makes
/// in this process: `Fork` workers and their replacements (forked from the pool's supervisor
/// thread, so `before` may run on a thread of shmpool's while the program runs on), a fork
/// server forked from the program, the fork server's own workers, `Process::spawn` children.
/// Children started by `exec` run none of them.
///
/// # Examples
///
/// ```
/// fn before() { /* take the interpreter's lock */ }
/// fn after_parent() { /* release it */ }
/// fn after_child() { /* reinitialise the interpreter's state */ }
/// shmpool::set_fork_hooks(Some(shmpool::ForkHooks { before, after_parent, after_child }));
/// shmpool::set_fork_hooks(None);
/// ```
pub fn set_fork_hooks(hooks: Option<ForkHooks>) {
    *HOOKS.lock().unwrap_or_else(|p| p.into_inner()) = hooks;
}

fn fork_hooks() -> Option<ForkHooks> {
    *HOOKS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Exit code of a child whose closure panicked (the same as a panicking Rust `main`).
pub(crate) const PANIC_EXIT_CODE: i32 = 101;

/// Forks a worker; the child runs `child` and leaves with `_exit(code)`, never returning into
/// the caller's code and never flushing or locking std's streams.
pub(crate) fn fork_worker(child: impl FnOnce() -> i32) -> Result<Pid> {
    fork_child(true, child)
}

/// Forks a `Process` child (see [`fork_worker`]; only the panic hook's wording differs).
pub(crate) fn fork_process(child: impl FnOnce() -> i32) -> Result<Pid> {
    fork_child(false, child)
}

fn fork_child(worker: bool, child: impl FnOnce() -> i32) -> Result<Pid> {
    install_panic_hook();
    // No flush of std's stdout here (`Process::spawn` flushes before it forks): a thread that
    // logs nearly all the time would hold its lock and starve every worker respawn behind it
    // (std's lock is not fair). The price, for `Fork` pools only: a partial line the parent
    // had buffered is repeated by a worker whose kernel prints.
    // SAFETY: in the child we run only `child` and then `_exit`, so control never returns into
    // the caller's frames (a panic inside it is caught below and also ends in `_exit`) and no
    // destructor of the parent's state runs twice. `child` (the worker loop) touches nothing
    // that another thread of the parent could have held at the fork (module docs).
    // Read before the fork: the child must not take the lock (another thread may hold it).
    let hooks = fork_hooks();
    if let Some(h) = hooks {
        if std::panic::catch_unwind(h.before).is_err() {
            return Err(Error::os("fork", std::io::Error::other("the before-fork hook panicked")));
        }
    }
    // SAFETY: in the child we run only the `after_child` hook and `child` and then `_exit`, so
    // control never returns into the caller's frames (a panic inside either is caught below
    // and also ends in `_exit`) and no destructor of the parent's state runs twice. `child`
    // (the worker loop) touches nothing that another thread of the parent could have held at
    // the fork (module docs); the hook is the embedding program's, under the same contract.
    let forked = unsafe { nix::unistd::fork() };
    if let (Some(h), Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_)) = (hooks, &forked) {
        // The child exists (or none does): a panic here must not hide it.
        let _ = std::panic::catch_unwind(h.after_parent);
    }
    match forked.map_err(|e| Error::os("fork", e.into()))? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            mark_child(worker);
            // The fork server must see its control socket close when the program dies, not
            // when the last forked child does.
            close_inherited_private();
            let run = move || {
                if let Some(h) = hooks {
                    (h.after_child)();
                }
                child()
            };
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or(PANIC_EXIT_CODE);
            exit_now(code)
        }
    }
}

/// A descriptor of this process that no forked child may keep (-1: none): the fork server's
/// control socket (`server::connect` sets it). Readable without a lock, because a forked child
/// closes its copy first thing, whatever another thread of the parent held at the fork.
static PRIVATE_FD: AtomicI32 = AtomicI32::new(-1);

/// Sets (`Some`) or clears (`None`) the descriptor every child forked from now on closes at once
/// (see [`PRIVATE_FD`]). Clearing never closes it: its owner does.
pub(crate) fn set_private_fd(fd: Option<i32>) {
    PRIVATE_FD.store(fd.unwrap_or(-1), Ordering::Relaxed);
}

/// In a just-forked child: closes the inherited copy of [`PRIVATE_FD`] (so the fork server
/// still sees end-of-file when the program dies). Takes no lock; the child's registry entry
/// for the server is then stale, and `server::connect` forgets it without closing the number
/// again.
fn close_inherited_private() {
    let fd = PRIVATE_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: `fd` is the control socket this process inherited; nothing in the child uses
        // it (its registry entry is never used by a process that is not its owner).
        unsafe { libc::close(fd) };
    }
}

/// Waits for `pid` (a child that was killed or is exiting), retrying after a handled signal.
pub(crate) fn reap(pid: Pid) {
    while nix::sys::wait::waitpid(pid, None) == Err(nix::errno::Errno::EINTR) {}
}

/// Ends the calling process at once with `code`: no destructors, no `atexit` handlers, no
/// flushing of std's buffers (their locks may be held by a thread that does not exist here).
pub(crate) fn exit_now(code: i32) -> ! {
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

/// Whether the calling process runs a single thread right now (so that no other thread can
/// hold a lock a forked child would inherit).
pub(crate) fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

/// Writes `msg` to the program's stderr with one `write(2)`: no std lock, no allocation, so it
/// is safe in a forked child whatever the parent's threads held; never to a descriptor number
/// that may have been reused (see `stdio`).
pub(crate) fn raw_stderr(msg: &[u8]) {
    crate::os::stdio::write_diagnostic(msg);
}

/// Set in a forked child (worker or `Process`) right after the fork; read by the panic hook.
static FORKED_CHILD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
/// [`FORKED_CHILD`] value of a pool worker.
const CHILD_WORKER: u8 = 1;
/// [`FORKED_CHILD`] value of a `Process` child.
const CHILD_PROCESS: u8 = 2;

/// Installs, once and in the parent, a panic hook that wraps the current one: in a forked
/// child it writes one line with `write(2)` — the child's pid and role, the panic location and
/// message — instead of running the default hook, which locks std's stderr (possibly held by
/// another parent thread at the fork, forever). In every other thread it calls the previous
/// hook unchanged. A hook the program installs later replaces this one for forked children too.
pub(crate) fn install_panic_hook() {
    crate::os::stdio::capture_stderr();
    // An atomic flag, not a `Once`: a `Once` inherited mid-run by a forked child never ends.
    static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !INSTALLED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let role = match FORKED_CHILD.load(std::sync::atomic::Ordering::Relaxed) {
                CHILD_WORKER => "shmpool worker",
                CHILD_PROCESS => "shmpool process",
                _ => return previous(info),
            };
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("panic with a non-string payload");
            let at =
                info.location().map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
            let line = format!("{role} {} panicked{at}: {msg}\n", std::process::id());
            raw_stderr(line.as_bytes());
        }));
    }
}

/// Marks a worker that was not forked by `fork_worker` (started by `exec` or by the fork
/// server) for the panic hook, and installs the hook (it is single-threaded at that point).
pub(crate) fn mark_worker() {
    install_panic_hook();
    mark_child(true);
}

/// Marks the calling (just forked) process as a worker or a `Process` child for the panic hook.
fn mark_child(worker: bool) {
    FORKED_CHILD.store(if worker { CHILD_WORKER } else { CHILD_PROCESS }, std::sync::atomic::Ordering::Relaxed);
}

/// In a freshly forked worker: unmaps every shmpool segment inherited from the parent except
/// the one mapped at `keep_base` (the worker's ring), and closes every descriptor except stdio
/// and `keep_fds`. Without this, an array the parent drops stays mapped — and its
/// `/dev/shm` memory pinned — in every worker forked while it existed, until the pool ends.
pub(crate) fn drop_inherited(keep_base: usize, keep_fds: &[i32]) {
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        for line in maps.lines().filter(|l| l.contains(" /dev/shm/shmpool_")) {
            let Some((start, end)) = line.split_whitespace().next().and_then(|r| r.split_once('-')) else {
                continue;
            };
            let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
                continue;
            };
            if start != keep_base && end > start {
                // SAFETY: the range is a shared-memory mapping this process inherited from its
                // parent and that no code of the worker uses: the worker reaches memory only
                // through its ring (kept) and segments it maps itself after this point.
                unsafe { libc::munmap(start as *mut libc::c_void, end - start) };
            }
        }
    }
    let keep_fds = keep_fds.iter().copied().chain(crate::os::stdio::diag_fd());
    let mut keep: Vec<u32> = keep_fds.filter_map(|f| u32::try_from(f).ok()).filter(|&f| f > 2).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > from {
            close_range(from, k - 1);
        }
        from = k.saturating_add(1);
    }
}

/// Closes descriptors `first..=last` (Linux 5.9+ `close_range`, else one by one from
/// `/proc/self/fd`).
fn close_range(first: u32, last: u32) {
    // SAFETY: close_range takes two integers and flags; it only closes descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc == 0 {
        return;
    }
    let fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|&fd| fd >= first && fd <= last) {
        // SAFETY: closing a descriptor number; nothing in the worker uses descriptors outside
        // its keep list (see `drop_inherited`).
        unsafe { libc::close(fd as i32) };
    }
}
