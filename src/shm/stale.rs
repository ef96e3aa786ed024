//! What `shmpool info` reports: the capacity of `/dev/shm` and the segment names left behind by
//! dead owners (a crash inside the microseconds between creating a name and unlinking it), with
//! the sweep that removes them. This module never maps a segment.
//!
//! A name is not proof: anyone may call a file `/dev/shm/shmpool_1000_elements.npy`. An object
//! counts as a stale segment of ours only when it is a regular file owned by our uid, whose
//! first 64 bytes (read with `pread`) are a shmpool header of this layout version naming that
//! uid, the pid in the name, and the object's size, and whose owner pid is dead. Nothing else
//! is ever unlinked. (The check and the unlink are two steps by name: a file swapped in between
//! by a process of our own uid could still go; nothing another user owns can.)

use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use crate::error::{Error, Result};
use crate::shm::header::Identity;
use crate::shm::{NAME_PREFIX, SHM_DIR};

/// Size and free space of the filesystem behind `/dev/shm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmCapacity {
    /// Total bytes.
    pub total: u64,
    /// Bytes available to this user.
    pub free: u64,
}

/// Size and free bytes of the filesystem behind `/dev/shm`.
///
/// # Errors
///
/// [`Error::Os`] when `statvfs` fails.
pub fn shm_capacity() -> Result<ShmCapacity> {
    let st = nix::sys::statvfs::statvfs(SHM_DIR).map_err(|e| Error::os("statvfs", e.into()))?;
    let frsize = st.fragment_size() as u64;
    Ok(ShmCapacity {
        total: (st.blocks() as u64).saturating_mul(frsize),
        free: (st.blocks_available() as u64).saturating_mul(frsize),
    })
}

/// A segment name in `/dev/shm` whose owner process is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSegment {
    /// File name in `/dev/shm`.
    pub name: String,
    /// Pid of the (dead) owner.
    pub owner_pid: u32,
    /// Size in bytes.
    pub size: u64,
}

fn pid_alive(pid: u32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true, // EPERM: exists, owned by someone else
    }
}

/// Every `shmpool_<pid>_*` name in `/dev/shm`, with its owner pid and size.
pub fn list_segments() -> Vec<StaleSegment> {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(NAME_PREFIX)?;
            let owner_pid = rest.split('_').next()?.parse().ok()?;
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            Some(StaleSegment { name, owner_pid, size })
        })
        .collect()
}

/// The `(device, inode)` of `/dev/shm/<name>` if it is a stale segment of ours: a regular file of
/// our uid holding a shmpool header that names our uid, the pid in the name and the file's size,
/// of an owner that is dead.
fn stale_identity(s: &StaleSegment) -> Option<(u64, u64)> {
    let path = format!("{SHM_DIR}/{}", s.name);
    let uid = nix::unistd::geteuid().as_raw();
    // Never opened unless it is a regular file of ours (opening a device or FIFO can act).
    let named = std::fs::symlink_metadata(&path).ok()?;
    if !named.file_type().is_file() || named.uid() != uid {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.uid() != uid || (meta.dev(), meta.ino()) != (named.dev(), named.ino()) {
        return None;
    }
    let mut head = [0u8; 64];
    file.read_exact_at(&mut head, 0).ok()?;
    let id = Identity::read(&head)?;
    let ours = id.owner_uid == uid && id.owner_pid == s.owner_pid && id.total_len == meta.len();
    (ours && !pid_alive(id.owner_pid)).then_some((meta.dev(), meta.ino()))
}

/// Segments in `/dev/shm` that prove to be shmpool's, made by this uid, whose owner is dead.
pub fn stale_segments() -> Vec<StaleSegment> {
    list_segments().into_iter().filter(|s| stale_identity(s).is_some()).collect()
}

/// Unlinks the stale segments of dead owners (see [`stale_segments`]: nothing that does not
/// prove to be ours); returns what was removed.
pub fn sweep_stale() -> Vec<StaleSegment> {
    list_segments()
        .into_iter()
        .filter(|s| {
            let Some(first) = stale_identity(s) else { return false };
            // Checked again right before the unlink, so that only a file swapped in within
            // these microseconds could be mistaken for the one checked.
            stale_identity(s) == Some(first) && nix::sys::mman::shm_unlink(format!("/{}", s.name).as_str()).is_ok()
        })
        .collect()
}

/// Leaves a named segment as a crash between writing its header and unlinking its name would:
/// `shmpool_<owner_pid>_<random>`, with a header naming `owner_pid` and this uid (test hook).
/// Returns the file name in `/dev/shm`.
///
/// # Errors
///
/// [`Error::Os`] when the file cannot be created or written.
#[cfg(feature = "testing")]
pub(crate) fn leave_stale_segment(owner_pid: u32) -> Result<String> {
    let name = format!("{NAME_PREFIX}{owner_pid}_{:016x}", super::random_u64()?);
    let total = 2 * crate::shm::DATA_OFFSET as u64;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(format!("{SHM_DIR}/{name}"))
        .map_err(|e| Error::os("create", e))?;
    file.set_len(total).map_err(|e| Error::os("ftruncate", e))?;
    file.write_all_at(&Identity::bytes(owner_pid, total), 0).map_err(|e| Error::os("write", e))?;
    Ok(name)
}
