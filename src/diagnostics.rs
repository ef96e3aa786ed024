//! What `shmpool info` reports: the capacity of `/dev/shm`, and shmpool segment names left in it
//! by processes that died inside the microseconds between creating a name and unlinking it.
#![deny(unsafe_code)]

pub use crate::shm::{ShmCapacity, StaleSegment};

/// Size and free space of the filesystem behind `/dev/shm`.
///
/// # Errors
///
/// [`crate::Error::Os`] when `statvfs` fails.
pub fn shm_capacity() -> crate::Result<ShmCapacity> {
    crate::shm::shm_capacity()
}

/// Every `shmpool_<pid>_*` name in `/dev/shm`, with its owner pid and size.
pub fn segments() -> Vec<StaleSegment> {
    crate::shm::list_segments()
}

/// The names whose owner process is dead.
pub fn stale_segments() -> Vec<StaleSegment> {
    crate::shm::stale_segments()
}

/// Unlinks the names of dead owners; returns what was removed.
pub fn sweep_stale() -> Vec<StaleSegment> {
    crate::shm::sweep_stale()
}
