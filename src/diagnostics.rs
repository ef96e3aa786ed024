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

/// The segments that prove to be shmpool's (a shmpool header of this layout version, made by
/// this uid) and whose owner process is dead. A file that merely has a shmpool-like name is
/// never listed here.
pub fn stale_segments() -> Vec<StaleSegment> {
    crate::shm::stale_segments()
}

/// Unlinks the [`stale_segments`], and nothing else; returns what was removed.
pub fn sweep_stale() -> Vec<StaleSegment> {
    crate::shm::sweep_stale()
}
