//! Process-wide facts every layer needs, below all of them: this process's pid (cached, right
//! after a `fork` too), the monotonic clock shared by all processes, and the standard
//! descriptors and raw diagnostics (`stdio`). It uses nothing else of shmpool's.

pub(crate) mod stdio;

/// This process's pid, without a system call: cached, and refreshed in the child after every
/// `fork` (a `pthread_atfork` handler), so a forked child never sees its parent's pid. Used on
/// hot paths (every lock, every ownership check).
pub(crate) fn pid() -> u32 {
    // An atomic flag, not a `Once`: a `Once` inherited mid-run by a forked child never ends.
    static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // A plain load first: this runs on every lock and ownership check, and a locked swap each
    // time would cost a read-modify-write on every call.
    if !REGISTERED.load(std::sync::atomic::Ordering::Relaxed)
        && !REGISTERED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        extern "C" fn refresh() {
            PID.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe, takes
        // no lock), valid for the life of the program.
        unsafe { libc::pthread_atfork(None, None, Some(refresh)) };
    }
    match PID.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {
            let p = std::process::id();
            PID.store(p, std::sync::atomic::Ordering::Relaxed);
            p
        }
        p => p,
    }
}

static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Monotonic microseconds, the same clock in every process (chunk timeouts, death times).
pub(crate) fn now_us() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    (ts.tv_sec().max(0) as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec().max(0) as u64 / 1000)
}

/// Whether `file` is on a local filesystem (ext2/3/4, xfs, btrfs, tmpfs), where asking for
/// 2 MiB page-cache folios for an output is safe. Not on network filesystems: there, ranks on
/// other nodes write neighbouring bytes of one file, and a dirty folio goes back whole.
pub(crate) fn local_fs(file: &std::fs::File) -> bool {
    use nix::sys::statfs::{fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
    fstatfs(file).is_ok_and(|s| {
        [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, TMPFS_MAGIC].contains(&s.filesystem_type())
    })
}
