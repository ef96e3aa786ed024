//! How workers (and `Process::spawn_fn` children) come to life: the [`StartMethod`]s, the
//! start-up record a non-forked child receives, and the start-up hook (`hook`, an ELF
//! constructor, with [`init`] as its explicit twin), which turns a freshly exec'd copy of the
//! program into what its parent asked for before the program's `main` runs.
//!
//! - `Fork`: the supervisor forks; the worker inherits the ring mapping and the keys.
//! - `Spawn`: the supervisor `posix_spawn`s `/proc/self/exe`; in the child, before `main`, the
//!   hook finds the marker, reads a [`BootWire`] (role, the one-time token, the parent's
//!   executable identity, the MAC and kernel keys, the worker's settings) and the ring's
//!   descriptor from its one inherited socket, checks that it runs the very same binary,
//!   answers with a [`HelloWire`] and serves.
//! - `ForkServer`: a single-threaded server process (`launch::server`) forks the worker, which
//!   then receives the same start-up record as a spawned one.
//!
//! Kernels travel as offsets from an anchor function (`kernel`), so they mean the same in every
//! process that runs the same executable. This module never touches a slot.
#![deny(unsafe_code)]

mod hook;
pub(crate) mod launch;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};

pub(crate) use launch::{How, Launcher, Pending};

use crate::error::{Error, Result};
use crate::ipc::{recv_record, send_record};
use crate::key::Key;
use crate::launch::fork;
use crate::launch::spawn::{self, ExeIdentity, Marker};
use crate::ring::Ring;
use crate::shm::{Segment, SegmentKind};
#[cfg(any(test, feature = "testing"))]
use crate::worker::PausePoint;
use crate::worker::WorkerCtx;

/// How a pool starts its workers (and replacements after a crash or recycling).
///
/// The default, when [`PoolBuilder::start_method`](crate::PoolBuilder::start_method) is not
/// called, is chosen when the pool is built: `Fork` if the process runs a single thread (the
/// fastest, and nothing can be inherited half-locked), otherwise `ForkServer` (safe, nearly as
/// fast): a multi-threaded program never forks its workers unless it asks for `Fork`. Python
/// made the same move away from plain `fork` in 3.14. (Refusing to build in a threaded program
/// until it adds something would be the other safe choice; it would fail every rayon or tokio
/// program, which is threaded as soon as it starts, for no gain: the fork server is safe
/// there and costs a few milliseconds once.)
///
/// A `Fork` pool forks its *replacement* workers (after a crash, a timeout, recycling) from
/// its supervisor thread while the program runs on, so even in a program that was
/// single-threaded at `build`, a kernel that takes a lock the program held at that instant
/// (stdout's, a logger's) can hang in a replacement. Pools whose kernels print or log should
/// use `ForkServer` or `Spawn`.
///
/// Every method works in every program that links shmpool, test binaries included, with no
/// call in `main`: a copy of the program that shmpool starts with `exec` (a `Spawn` worker, the
/// fork server, a [`Process::spawn_fn`](crate::Process::spawn_fn) child) becomes what it was
/// started for in an ELF constructor, before `main` (and before libtest's harness) runs. So
/// from `#[test]` functions (as `tests/start_methods.rs` does, 100 times in a row):
///
/// ```text
/// #[cfg(test)]
/// mod tests {
///     use shmpool::{Pool, StartMethod};
///
///     #[test]
///     fn spawned_workers_from_a_test() -> shmpool::Result<()> {
///         let pool = Pool::builder().workers(2).start_method(StartMethod::Spawn).build()?;
///         assert_eq!(pool.map(&[4.0f64], f64::sqrt)?, [2.0]);
///         Ok(())
///     }
/// }
/// ```
///
/// | method | 2-worker pool ready (2-core VM, medians) | safe with other threads |
/// |---|---|---|
/// | `Fork` | 0.7-0.8 ms | shmpool's worker code is; a kernel that takes a lock another thread held at the fork (a logger, stdout) may hang |
/// | `ForkServer` | 0.8-1.0 ms (the first pool also starts the server: +3-4 ms once) | yes |
/// | `Spawn` | 1.6-2.4 ms (an `exec` per worker) | yes |
///
/// Once a pool is up, its maps run the same way whatever the method. Workers started by
/// `exec` (`Spawn`, and `ForkServer` when its server was exec'd) never run `main`, so state
/// `main` sets up (a logger, environment) is not there: set it up in
/// [`PoolBuilder::worker_init`](crate::PoolBuilder::worker_init). For the same reason, ELF
/// constructors of the executable that come after shmpool's in `.init_array` (a statically
/// linked C++ library's globals, say; shared libraries' constructors all run before) do not
/// run in those workers: initialise what a kernel needs from them in `worker_init` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// Workers are forked from the pool's process. An explicit `Fork` in a multi-threaded
    /// process forks anyway and warns once on stderr.
    Fork,
    /// Workers are fresh copies of the executable (`posix_spawn` of `/proc/self/exe`) that
    /// become workers before `main` runs.
    Spawn,
    /// Workers are forked by a single-threaded fork server, started once per process on
    /// first need: exec'd from the executable (a fresh, small image that shares no memory or
    /// lock with the program) when the program runs several threads or called [`init`], else
    /// forked from the (then single-threaded) program.
    ForkServer,
}

/// Turns a process that shmpool started with `exec` (a `Spawn` worker, the fork server, a
/// [`Process::spawn_fn`](crate::Process::spawn_fn) child) into what its parent asked for, and
/// never returns in it; in any other process it does nothing else than record the call (a
/// program that calls it gets an exec'd fork server even while single-threaded).
///
/// **No program needs it any more**: shmpool runs the same step in an ELF constructor before
/// `main` (and before libtest's harness, so every start method works from `#[test]`
/// functions), and by the time `main` calls `init()` there is nothing left to do. It stays for
/// programs written for earlier versions, and as the explicit entry for a host that loads
/// shmpool in a way that runs no constructor before its own code (call it first thing there).
///
/// # Examples
///
/// ```
/// use shmpool::{Pool, StartMethod};
///
/// fn main() -> shmpool::Result<()> {
///     shmpool::init(); // optional: the spawned workers never get here
///     let pool = Pool::builder().workers(2).start_method(StartMethod::Spawn).build()?;
///     assert_eq!(pool.map(&[1.0f64, 9.0], f64::sqrt)?, [1.0, 3.0]);
///     Ok(())
/// }
/// ```
pub fn init() {
    spawn::mark_init_called();
    become_child_if_started(true);
}

/// If this process was started by shmpool (`spawn::take_marker`), becomes what it was started
/// for and exits; otherwise returns. Runs in the start-up hook before `main`, and in [`init`]
/// (`in_init`: the only place a child started through `shmpool::set_spawn_route` takes its
/// role).
fn become_child_if_started(in_init: bool) {
    match spawn::take_marker(in_init) {
        Marker::Absent => {}
        Marker::Invalid => {
            fork::raw_stderr(
                b"shmpool: started as a shmpool child, but the start-up socket is not its parent's: exiting\n",
            );
            fork::exit_now(spawn::INIT_MISSING_EXIT_CODE)
        }
        Marker::Child(sock, token) => {
            spawn::mark_in_role();
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_child(sock, Some(token))))
                .unwrap_or(fork::PANIC_EXIT_CODE);
            fork::exit_now(code)
        }
    }
}

/// Start-up roles.
const ROLE_WORKER: u32 = 1;
const ROLE_SERVER: u32 = 2;
const ROLE_PROCESS: u32 = 3;

const BOOT_MAGIC: u64 = 0x544f_4f42_4c4f_4f50; // "POOLBOOT"
const HELLO_MAGIC: u64 = 0x4f4c_4c45_484c_4f50; // "POLHELLO"
const HELLO_OK: u32 = 1;
const HELLO_MISMATCH: u32 = 2;

/// Exit code of a spawned child that found another binary than its parent's.
pub(crate) const MISMATCH_EXIT_CODE: i32 = 85;
/// Exit code of a spawned child whose start-up record was missing or malformed.
const BOOT_FAILED_EXIT_CODE: i32 = 84;
/// How long a child waits for its start-up record, and a parent for the answer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `Process::spawn_fn` argument.
pub(crate) const MAX_ARG: usize = 64 * 1024;

/// The start-up record: the first datagram on a non-forked child's socket (the ring's
/// descriptor attached for workers, the entry's argument appended for processes).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct BootWire {
    magic: u64,
    role: u32,
    /// Bit 0: the idle spin yields the core between polls (`WorkerCtx::polite`). Bits 1-3, in
    /// `testing` builds only: 0 for no pause point, else 1 + its index in `PAUSES`.
    flags: u32,
    identity: ExeIdentity,
    ring_key: Key,
    kernel_key: Key,
    /// The pid the child must have as parent (it dies with it), 0 for none.
    parent: i32,
    /// CPU to pin to, -1 for none.
    cpu: i32,
    spin_ns: u64,
    /// 0: never recycle.
    recycle_after: u64,
    /// `Process::spawn_fn`: the entry trampoline (offset, tag).
    entry: [u64; 2],
    /// The one-time token of an exec'd child's marker (zero for a child the fork server forks).
    token: Key,
    /// The pool's `worker_init` function (offset, tag), zeros for none.
    worker_init: [u64; 2],
}

/// The child's answer: it runs the same binary (`HELLO_OK`) or another (`HELLO_MISMATCH`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct HelloWire {
    magic: u64,
    status: u32,
    _pad: u32,
    found: ExeIdentity,
}

/// The pause points in their wire order (a test hook, see `BootWire::flags`).
#[cfg(any(test, feature = "testing"))]
const PAUSES: [PausePoint; 4] =
    [PausePoint::BeforeClaim, PausePoint::InsideLock, PausePoint::MidKernel, PausePoint::BeforePublish];

#[cfg(any(test, feature = "testing"))]
fn encode_pause(p: Option<PausePoint>) -> u32 {
    p.and_then(|p| PAUSES.iter().position(|&q| q == p)).map_or(0, |i| i as u32 + 1)
}

#[cfg(any(test, feature = "testing"))]
fn decode_pause(v: u32) -> Option<PausePoint> {
    v.checked_sub(1).and_then(|i| PAUSES.get(i as usize).copied())
}

impl BootWire {
    fn new(role: u32, identity: ExeIdentity) -> BootWire {
        BootWire { magic: BOOT_MAGIC, role, identity, kernel_key: crate::kernel::key(), cpu: -1, ..BootWire::zeroed() }
    }

    /// The record for a worker with `ctx`'s settings.
    pub(crate) fn worker(identity: ExeIdentity, ctx: &WorkerCtx, parent: i32) -> BootWire {
        let w = BootWire {
            worker_init: ctx.init.map_or([0; 2], crate::kernel::init_fn_parts),
            ring_key: ctx.ring.key(),
            parent,
            cpu: ctx.cpu.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1),
            spin_ns: u64::try_from(ctx.spin.as_nanos()).unwrap_or(u64::MAX),
            flags: u32::from(ctx.polite),
            recycle_after: ctx.recycle_after.unwrap_or(0),
            ..BootWire::new(ROLE_WORKER, identity)
        };
        #[cfg(any(test, feature = "testing"))]
        let w = BootWire { flags: w.flags | encode_pause(ctx.pause) << 1, ..w };
        w
    }

    /// The same record, for the exec'd child whose marker carries `token`.
    pub(crate) fn with_token(self, token: Key) -> BootWire {
        BootWire { token, ..self }
    }
}

/// Waits for a child's [`HelloWire`]. `Ok(Ok(()))`: same binary; `Ok(Err(found))`: another
/// binary; `Err`: no answer (the socket closed: the child exited, or timed out).
pub(crate) fn await_hello(sock: &OwnedFd) -> Result<std::result::Result<(), ExeIdentity>> {
    let mut h = HelloWire::zeroed();
    match recv_record(sock.as_fd(), bytemuck::bytes_of_mut(&mut h), BOOT_TIMEOUT)? {
        Some((n, _)) if n == std::mem::size_of::<HelloWire>() && h.magic == HELLO_MAGIC => match h.status {
            HELLO_OK => Ok(Ok(())),
            HELLO_MISMATCH => Ok(Err(h.found)),
            other => Err(Error::Protocol { what: "start-up answer", value: other.into() }),
        },
        Some((n, _)) => Err(Error::Protocol { what: "start-up answer length", value: n as u64 }),
        None => Err(Error::os("start-up handshake", std::io::Error::from(std::io::ErrorKind::TimedOut))),
    }
}

fn hello(sock: &OwnedFd, status: u32, found: ExeIdentity) -> Result<()> {
    let h = HelloWire { magic: HELLO_MAGIC, status, _pad: 0, found };
    send_record(sock.as_fd(), bytemuck::bytes_of(&h), None)
}

/// The body of every worker the fork server forks (see [`run_child`]). Returns the exit code.
pub(crate) fn child_main(sock: OwnedFd) -> i32 {
    run_child(sock, None)
}

/// The body of every non-forked child: reads the start-up record, checks the token (an exec'd
/// child: `token` is its marker's) and the binary, and becomes a worker, the fork server or a
/// process. Returns the exit code.
fn run_child(sock: OwnedFd, token: Option<Key>) -> i32 {
    let mut buf = vec![0u8; std::mem::size_of::<BootWire>() + MAX_ARG];
    let Ok(Some((n, fd))) = recv_record(sock.as_fd(), &mut buf, BOOT_TIMEOUT) else { return BOOT_FAILED_EXIT_CODE };
    if n < std::mem::size_of::<BootWire>() {
        return BOOT_FAILED_EXIT_CODE;
    }
    let boot: BootWire = bytemuck::pod_read_unaligned(&buf[..std::mem::size_of::<BootWire>()]);
    if boot.magic != BOOT_MAGIC || token.is_some_and(|t| t != boot.token) {
        return BOOT_FAILED_EXIT_CODE;
    }
    let Ok(me) = spawn::exe_identity() else { return BOOT_FAILED_EXIT_CODE };
    if me != boot.identity {
        let _ = hello(&sock, HELLO_MISMATCH, me);
        return MISMATCH_EXIT_CODE;
    }
    crate::kernel::set_key(boot.kernel_key);
    // A child started by exec runs before `main`: std's runtime has not ignored SIGPIPE yet,
    // as it has in every Rust program that reaches `main` (and did in the parent).
    if token.is_some() {
        spawn::ignore_sigpipe();
    }
    match boot.role {
        ROLE_WORKER => {
            fork::mark_worker();
            if boot.parent != 0 {
                fork::die_with_parent(nix::unistd::Pid::from_raw(boot.parent));
            }
            let Some(ring_fd) = fd else { return BOOT_FAILED_EXIT_CODE };
            let ring = match Segment::from_fd(ring_fd, SegmentKind::Ring)
                .and_then(|s| Ring::attach(Arc::new(s), boot.ring_key))
            {
                Ok(r) => r,
                Err(_) => return crate::worker::FATAL_EXIT_CODE,
            };
            if hello(&sock, HELLO_OK, me).is_err() {
                return BOOT_FAILED_EXIT_CODE;
            }
            let ctx = WorkerCtx {
                ring,
                sock,
                parent: nix::unistd::getppid(),
                spin: Duration::from_nanos(boot.spin_ns),
                polite: boot.flags & 1 != 0,
                recycle_after: (boot.recycle_after != 0).then_some(boot.recycle_after),
                #[cfg(any(test, feature = "testing"))]
                pause: decode_pause((boot.flags >> 1) & 7),
                cpu: usize::try_from(boot.cpu).ok(),
                init: match boot.worker_init {
                    [0, 0] => None,
                    [offset, tag] => match crate::kernel::init_fn_from_parts(offset, tag) {
                        Some(f) => Some(f),
                        None => return BOOT_FAILED_EXIT_CODE,
                    },
                },
            };
            crate::worker::run(ctx)
        }
        ROLE_SERVER => {
            if hello(&sock, HELLO_OK, me).is_err() {
                return BOOT_FAILED_EXIT_CODE;
            }
            crate::launch::server::serve(sock, child_main)
        }
        ROLE_PROCESS => {
            let arg = &buf[std::mem::size_of::<BootWire>()..n];
            drop(sock);
            let Some(entry) = crate::kernel::KernelRef::from_parts(boot.entry[0], boot.entry[1], false) else {
                return BOOT_FAILED_EXIT_CODE;
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.invoke(arg, &[], &mut [], 0)));
            // A fresh process: nothing else can hold std's locks, so flushing is safe.
            let _ = std::io::Write::flush(&mut std::io::stdout());
            match r {
                Ok(()) => 0,
                Err(_) => fork::PANIC_EXIT_CODE,
            }
        }
        _ => BOOT_FAILED_EXIT_CODE,
    }
}

/// Sends the start-up record (and the ring's descriptor, or the argument bytes) to a child.
pub(crate) fn send_boot(sock: &OwnedFd, boot: &BootWire, ring: Option<&Ring>, arg: &[u8]) -> Result<()> {
    let mut bytes = bytemuck::bytes_of(boot).to_vec();
    bytes.extend_from_slice(arg);
    send_record(sock.as_fd(), &bytes, ring.map(|r| r.segment().fd()))
}

/// The start-up record of the fork server.
pub(crate) fn server_boot(identity: ExeIdentity) -> BootWire {
    BootWire::new(ROLE_SERVER, identity)
}

/// The start-up record of a `Process::spawn_fn` child running `entry`.
pub(crate) fn process_boot(identity: ExeIdentity, entry: (u64, u64)) -> BootWire {
    BootWire { entry: [entry.0, entry.1], ..BootWire::new(ROLE_PROCESS, identity) }
}

#[cfg(test)]
mod tests {
    use super::*;

    static RAN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn entry(n: u32) {
        RAN.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// A `Process::spawn_fn` start-up record sent to `run_child` in this process, as an exec'd
    /// child whose marker carries `expected` would receive it.
    fn run_record(token: Key, expected: Key, arg: u32) -> i32 {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (parent, child) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let (entry, mut params) = crate::kernel::process_entry(entry).unwrap();
        params.extend_from_slice(bytemuck::bytes_of(&arg));
        let boot = process_boot(spawn::exe_identity().unwrap(), entry.parts()).with_token(token);
        send_boot(&parent, &boot, None, &params).unwrap();
        run_child(child, Some(expected))
    }

    #[test]
    fn a_start_up_record_runs_only_with_the_markers_token() {
        let token = Key::from_words(0x1234, 0x5678);
        assert_eq!(run_record(token, Key::from_words(0x1234, 0x5679), 7), BOOT_FAILED_EXIT_CODE);
        assert_eq!(RAN.load(std::sync::atomic::Ordering::SeqCst), 0, "ran with another token");
        assert_eq!(run_record(token, token, 9), 0);
        assert_eq!(RAN.load(std::sync::atomic::Ordering::SeqCst), 9);
    }

    #[test]
    fn pause_points_round_trip_through_the_start_up_record() {
        assert_eq!(decode_pause(encode_pause(None)), None);
        for p in PAUSES {
            assert_eq!(decode_pause(encode_pause(Some(p))), Some(p));
        }
        assert_eq!(decode_pause(99), None);
    }
}
