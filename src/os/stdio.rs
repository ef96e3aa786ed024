//! Where shmpool's raw diagnostics go, and the standard descriptors shmpool relies on.
//!
//! A program that closed fd 2 makes the next descriptor opened take number 2: the ring's, an
//! array's, an output file's. A worker that then writes a kernel-panic report "to stderr" writes
//! it into shared memory and corrupts the ring. So:
//!
//! - [`guard_stdio`] occupies a closed 0, 1 or 2 with `/dev/null` (as std does at program start)
//!   before shmpool opens any descriptor of its own (segments, the pool's pipes and sockets,
//!   `.npy` files), so none of them ever gets a standard number, and a kernel that prints in a
//!   worker cannot write into the ring;
//! - [`capture_stderr`] keeps, from the first pool or child on, a duplicate of the program's
//!   stderr (above 2, close-on-exec, kept by forked workers), and records its device and inode;
//! - [`write_diagnostic`] writes only to that duplicate, after `fstat` shows it is still the
//!   same file, and never to a number that may have been reused. Before any capture it writes to
//!   fd 2 only when fd 2 is not an unlinked regular file (a segment or a file being written
//!   never is anyone's stderr).
//!
//! Everything here is a few syscalls on atomics: no lock and no allocation, so it is safe in a
//! forked child whatever the parent's other threads held.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};

/// The duplicate of the program's stderr, or -1.
static DIAG_FD: AtomicI32 = AtomicI32::new(-1);
/// Device and inode of the file behind [`DIAG_FD`].
static DIAG_DEV: AtomicU64 = AtomicU64::new(0);
static DIAG_INO: AtomicU64 = AtomicU64::new(0);
/// 0: nothing captured; 1: a thread is capturing; 2: [`DIAG_FD`] and its identity are set.
static STATE: AtomicU8 = AtomicU8::new(0);

fn fstat(fd: i32) -> Option<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid, writable `struct stat`; fstat fills it or fails (EBADF for a
    // closed number) without touching anything else.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    // SAFETY: fstat returned 0, so it initialised the whole struct.
    (rc == 0).then(|| unsafe { st.assume_init() })
}

/// Whether a file may be someone's stderr: anything but an unlinked regular file (shmpool's
/// segments, and `.npy` outputs before their commit, are unlinked regular files).
fn may_be_stderr(st: &libc::stat) -> bool {
    !((st.st_mode & libc::S_IFMT) == libc::S_IFREG && st.st_nlink == 0)
}

/// Opens `/dev/null` on every one of the descriptors 0, 1 and 2 that is closed, so that no
/// descriptor shmpool opens afterwards gets a standard number.
pub(crate) fn guard_stdio() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if closed.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // SAFETY: the path is a NUL-terminated literal; open returns a new descriptor or -1.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if null >= 0 && null != fd {
            // Another thread took `fd` meanwhile: it is open now, which is what we wanted;
            // this descriptor is ours alone to close.
            // SAFETY: `null` was just opened here and nothing else knows it.
            unsafe { libc::close(null) };
        }
    }
}

/// Keeps a duplicate of the program's stderr for diagnostics, once: the first call that finds
/// fd 2 open and not an unlinked regular file wins (see the module docs).
pub(crate) fn capture_stderr() {
    guard_stdio();
    if STATE.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return;
    }
    let captured = (|| {
        let st = fstat(2).filter(may_be_stderr)?;
        // SAFETY: F_DUPFD_CLOEXEC duplicates fd 2 onto the lowest free number >= 3, or fails.
        let dup = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return None;
        }
        match fstat(dup) {
            // The same file as checked above (fd 2 cannot have changed in between unnoticed).
            Some(d) if d.st_dev == st.st_dev && d.st_ino == st.st_ino => Some((dup, d)),
            _ => {
                // SAFETY: `dup` was made just now by this function and nothing else knows it.
                unsafe { libc::close(dup) };
                None
            }
        }
    })();
    match captured {
        Some((fd, st)) => {
            DIAG_DEV.store(st.st_dev, Ordering::Relaxed);
            DIAG_INO.store(st.st_ino, Ordering::Relaxed);
            DIAG_FD.store(fd, Ordering::Relaxed);
            // PUBLISH: the descriptor and its identity, for readers that observe 2.
            STATE.store(2, Ordering::Release);
        }
        // Not captured (fd 2 closed or unusable): a later pool may try again.
        None => STATE.store(0, Ordering::Release),
    }
}

/// The duplicate of stderr, for the list of descriptors a forked worker keeps.
pub(crate) fn diag_fd() -> Option<i32> {
    // OBSERVE: pairs with the Release store of 2 in `capture_stderr`.
    (STATE.load(Ordering::Acquire) == 2).then(|| DIAG_FD.load(Ordering::Relaxed))
}

/// Writes `msg` with one `write(2)` to the program's stderr as captured, if it is still that
/// file; before any capture, to fd 2 if it may be a stderr at all. Never to a reused number.
pub(crate) fn write_diagnostic(msg: &[u8]) {
    let fd = match diag_fd() {
        Some(fd) => {
            let same = fstat(fd).is_some_and(|st| {
                st.st_dev == DIAG_DEV.load(Ordering::Relaxed) && st.st_ino == DIAG_INO.load(Ordering::Relaxed)
            });
            if !same {
                return;
            }
            fd
        }
        None if fstat(2).is_some_and(|st| may_be_stderr(&st)) => 2,
        None => return,
    };
    // SAFETY: `msg` is a valid byte slice for the duration of the call and `fd` an open
    // descriptor of the program's stderr (checked above); write touches nothing else.
    let _ = unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlinked_regular_files_are_never_taken_for_stderr() {
        let seg = crate::shm::Segment::create(crate::shm::SegmentKind::Array, 4096, 1, 0).unwrap();
        let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&seg.fd())).unwrap();
        assert!(!may_be_stderr(&st), "a segment is an unlinked regular file");
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(may_be_stderr(&fstat(std::os::fd::AsRawFd::as_raw_fd(&null)).unwrap()));
    }
}
