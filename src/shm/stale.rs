//! What `shmpool info` reports: the capacity of `/dev/shm` and the segment names left behind by
//! dead owners (a crash inside the microseconds between creating a name and unlinking it), with
//! the sweep that removes them. Names only: this module never maps a segment.

use crate::error::{Error, Result};
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

/// Segments in `/dev/shm` whose owner is dead.
pub fn stale_segments() -> Vec<StaleSegment> {
    list_segments().into_iter().filter(|s| !pid_alive(s.owner_pid)).collect()
}

/// Unlinks the segments of dead owners; returns what was removed.
pub fn sweep_stale() -> Vec<StaleSegment> {
    stale_segments()
        .into_iter()
        .filter(|s| nix::sys::mman::shm_unlink(format!("/{}", s.name).as_str()).is_ok())
        .collect()
}
