//! Named POSIX shared-memory segments: the only caller of `shared_memory`.
//!
//! A [`Segment`] owns one mapping, its base pointer and its length; every other module asks it
//! for a checked range. Segments are created exclusive (`O_EXCL`), mode 0600, with a random name
//! `shmpool_<owner pid>_<random>` so stale ones can be traced to a dead owner. Their pages are
//! reserved with `posix_fallocate` before anything is published, so a full `/dev/shm` is
//! [`Error::ShmFull`] and never a SIGBUS later.
//!
//! The name is unlinked right after the creator has opened its own descriptor, microseconds
//! after creation: from then on the segment lives exactly as long as some process maps it or
//! holds the descriptor, so not even a SIGKILLed parent can leak it. Workers receive the
//! descriptor (by `fork` or over a Unix socket) instead of opening a name; [`sweep_stale`]
//! cleans up what a crash inside that tiny window may leave, and only that: the header's
//! identity (magic, layout version, owner pid and uid) is written before the name is unlinked,
//! so a leftover proves to be ours; a file that only has a shmpool-like name is never touched.
//!
//! This module must never interpret the data area: it knows the header, nothing else.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use shared_memory::{Shmem, ShmemConf, ShmemError};

use crate::error::{Error, Result};
use header::{MAGIC, READY};

mod header;
mod stale;

use header::LAYOUT_VERSION;
pub(crate) use header::{SegmentHeader, SegmentKind};
#[cfg(feature = "testing")]
pub(crate) use stale::leave_stale_segment;
pub(crate) use stale::{list_segments, shm_capacity, stale_segments, sweep_stale};
pub use stale::{ShmCapacity, StaleSegment};

/// Where a mapped file's data lives, and whether workers may write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileArea {
    /// Byte offset of the data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub len: usize,
    /// Whether workers map it writable (outputs).
    pub writable: bool,
}

/// Offset of the data area: one page, so data is page-aligned (and 64-byte aligned for any
/// element type).
pub(crate) const DATA_OFFSET: usize = 4096;
/// Where POSIX shared memory lives on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";
/// Prefix of every segment name (without the leading `/`).
pub(crate) const NAME_PREFIX: &str = "shmpool_";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

enum Mapping {
    /// The creator's mapping, made by `shared_memory`; held for its `Drop` (unmap, close).
    Created { _shmem: Shmem },
    /// An attacher's mapping of a received descriptor, made by `memmap2`.
    Attached(memmap2::MmapRaw),
}

/// One mapped shared-memory segment.
///
/// # Safety model
///
/// The memory is shared with other processes, which may write it at any time: no `&[u8]` to
/// it is sound unless a protocol (the ring's slot states, the pool's borrow of a `SharedVec`
/// during a map) guarantees that nobody writes the range meanwhile. The unsafe accessors put
/// that obligation on the caller; the checked-range part is done here.
pub(crate) struct Segment {
    /// Dropped by hand in `Drop`: only in the process that made it (see `unshared_in`).
    mapping: std::mem::ManuallyDrop<Mapping>,
    /// The process whose mapping this is, when children do not inherit it (`MADV_DONTFORK`):
    /// in a forked child the range is not mapped at all, and may hold the child's own memory
    /// by the time a moved handle is dropped there, so only this process may unmap it.
    unshared_in: Option<u32>,
    base: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    id: u64,
    /// Where the data area starts in the mapping and how long it is.
    data_off: usize,
    data_len: usize,
    /// Whether the data area may be written (read-only file mappings may not).
    writable: bool,
    /// A mapped file (`.npy`) rather than a shared-memory segment with a `SegmentHeader`.
    file: bool,
}

// SAFETY: the mapping is valid in every thread of the process and the base pointer is never
// used without a range check; synchronisation of the bytes is the caller's contract (see the
// type-level docs), exactly as for `memmap2::MmapRaw`, which is `Send + Sync`.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out raw, range-checked pointers or unsafe slices.
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.unshared_in.is_none_or(|pid| pid == crate::os::pid()) {
            // SAFETY: `mapping` is dropped here exactly once and never used afterwards (this is
            // the segment's own destructor).
            unsafe { std::mem::ManuallyDrop::drop(&mut self.mapping) };
        }
        // Otherwise this is a forked child dropping a handle to a mapping it never inherited
        // (`MADV_DONTFORK`): unmapping the range could unmap the child's own memory; the
        // descriptor still closes with `fd`.
    }
}

/// Keeps `len` bytes of mapping at `base` out of every child forked from now on
/// (`MADV_DONTFORK`): a `Process::spawn` child that reaches an array, a staging buffer or a
/// mapped file through a handle it owns faults, instead of writing memory that the parent and
/// the workers share while the parent holds `&[T]` to it. Pool workers never rely on inherited
/// array mappings: they map every segment from its descriptor.
fn dont_fork(base: NonNull<u8>, len: usize) -> Result<()> {
    // SAFETY: [base, base + len) is exactly one mapping this process made and owns (the
    // caller's fresh `Segment`); MADV_DONTFORK changes only whether `fork` copies it, never
    // its contents or this process's access to it.
    let rc = unsafe { libc::madvise(base.as_ptr().cast(), len, libc::MADV_DONTFORK) };
    if rc != 0 {
        return Err(Error::last_os("madvise(MADV_DONTFORK)"));
    }
    Ok(())
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("id", &self.id).field("len", &self.len).finish()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl Segment {
    /// Creates a new segment with `data_len` usable bytes, reserves its pages, writes and
    /// publishes its header, and unlinks its name.
    ///
    /// # Errors
    ///
    /// [`Error::ShmFull`] when `/dev/shm` cannot hold it; [`Error::Os`] for other failures.
    pub(crate) fn create(kind: SegmentKind, data_len: usize, elem_size: u32, elem_tag: u32) -> Result<Segment> {
        let page = page_size();
        let total = data_len
            .max(1)
            .div_ceil(page)
            .checked_mul(page)
            .and_then(|pages| pages.checked_add(DATA_OFFSET))
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(Error::TooLarge { count: data_len as u64, elem_size: 1 })?;
        let data_pages = total - DATA_OFFSET;
        // No descriptor of a segment may take a standard number a program closed: a worker
        // printing "to stderr" would write into it.
        crate::os::stdio::guard_stdio();
        let available = shm_capacity()?.free;
        if (total as u64) > available {
            return Err(Error::ShmFull { needed: total as u64, available });
        }
        let pid = std::process::id();
        let (mut shmem, name) = loop {
            let name = format!("/{NAME_PREFIX}{pid}_{:016x}", random_u64()?);
            match ShmemConf::new().os_id(&name).size(total).create() {
                Ok(s) => break (s, name),
                Err(ShmemError::MappingIdExists) => continue,
                Err(ShmemError::MapCreateFailed(errno)) => {
                    return Err(shm_error("shm_open", errno, total));
                }
                Err(ShmemError::UnknownOsError(errno)) => return Err(shm_error("mmap", errno, total)),
                Err(other) => return Err(Error::os("shared_memory create", std::io::Error::other(other))),
            }
        };
        // We unlink the name ourselves, right now, instead of in `Shmem`'s drop. Before that,
        // the header's identity (magic, layout version, owner pid and uid) is written, so that
        // a name left by a crash in this window proves to be ours to `sweep_stale`, which
        // unlinks nothing else. (A crash before the header write leaves a name the sweep will
        // not touch: it cannot tell it from a user's file.)
        shmem.set_owner(false);
        let base = NonNull::new(shmem.as_ptr()).expect("shared_memory returned a mapped pointer");
        let named = nix::sys::mman::shm_open(name.as_str(), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::os("shm_open", e.into()))
            .and_then(|fd| {
                // The header page first, so that writing the header cannot SIGBUS.
                reserve(&fd, DATA_OFFSET)?;
                // The ring stays inherited: forked workers serve from the parent's mapping.
                let unshared_in = (kind == SegmentKind::Array).then(crate::os::pid);
                if unshared_in.is_some() {
                    dont_fork(base, total)?;
                }
                let seg = Segment {
                    mapping: std::mem::ManuallyDrop::new(Mapping::Created { _shmem: shmem }),
                    unshared_in,
                    base,
                    len: total,
                    fd,
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    data_off: DATA_OFFSET,
                    data_len: total - DATA_OFFSET,
                    writable: true,
                    file: false,
                };
                seg.write_header(kind, data_pages as u64, elem_size, elem_tag);
                Ok(seg)
            });
        let unlinked = nix::sys::mman::shm_unlink(name.as_str());
        let seg = named?;
        unlinked.map_err(|e| Error::os("shm_unlink", e.into()))?;
        reserve(&seg.fd, total)?;
        seg.publish_header();
        Ok(seg)
    }

    /// A new array segment holding a copy of `bytes` (a parameter block too large for a slot).
    ///
    /// # Errors
    ///
    /// As [`Segment::create`].
    pub(crate) fn create_filled(bytes: &[u8]) -> Result<Segment> {
        let seg = Segment::create(SegmentKind::Array, bytes.len(), 1, 0)?;
        // SAFETY: the segment was created just now and no other process or reference can see
        // it yet (its name is unlinked, its descriptor not passed on); the range is checked.
        unsafe { seg.data_mut(0, bytes.len())? }.copy_from_slice(bytes);
        Ok(seg)
    }

    fn write_header(&self, kind: SegmentKind, data_len: u64, elem_size: u32, elem_tag: u32) {
        let hdr = self.base.as_ptr().cast::<SegmentHeader>();
        let value = SegmentHeader {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: kind as u32,
            total_len: self.len as u64,
            data_offset: DATA_OFFSET as u64,
            data_len,
            owner_pid: std::process::id(),
            owner_uid: nix::unistd::geteuid().as_raw(),
            elem_size,
            elem_tag,
            initialised: AtomicU32::new(0),
            _reserved: 0,
        };
        // SAFETY: the segment is at least DATA_OFFSET (> 64) bytes, page-aligned, its first
        // page reserved (no SIGBUS), and no other shmpool process uses it yet: its descriptor
        // is not passed on, and nothing attaches by name (only `sweep_stale` reads names, with
        // `pread`, and only to unlink names of dead owners).
        unsafe { hdr.write(value) };
    }

    /// Marks the header complete once the whole segment is reserved.
    fn publish_header(&self) {
        // PUBLISH: the header fields written by `write_header` become visible to whoever
        // observes READY.
        self.header().initialised.store(READY, Ordering::Release);
    }

    /// Maps a segment from a descriptor received from its creator and validates its header.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleSegment`] when the header is not a published shmpool header of
    /// `kind` with this layout version, the object's owner uid and the mapping's size.
    pub(crate) fn from_fd(fd: OwnedFd, kind: SegmentKind) -> Result<Segment> {
        let file = File::from(fd);
        let len = file.metadata().map_err(|e| Error::os("fstat", e))?.len() as usize;
        if len < DATA_OFFSET {
            return Err(Error::IncompatibleSegment {
                found: format!("{len} bytes"),
                expected: format!("at least {DATA_OFFSET} bytes"),
            });
        }
        // Arrays are mapped with their page tables filled at once (MAP_POPULATE): a worker
        // otherwise takes one minor fault per page it touches the first time, again whenever
        // the chunk-to-worker assignment changes from map to map, which costs a memory-bound
        // map a tenth of its time. The pages are shared memory, resident already: populating
        // only builds this process's page tables. (File mappings are never populated: a file
        // may be larger than RAM.)
        let mut opts = memmap2::MmapOptions::new();
        if kind == SegmentKind::Array {
            opts.populate();
        }
        let map = opts.map_raw(&file).map_err(|e| Error::os("mmap", e))?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        let unshared_in = (kind == SegmentKind::Array).then(crate::os::pid);
        if unshared_in.is_some() {
            map.advise(memmap2::Advice::DontFork).map_err(|e| Error::os("madvise(MADV_DONTFORK)", e))?;
        }
        let seg = Segment {
            mapping: std::mem::ManuallyDrop::new(Mapping::Attached(map)),
            unshared_in,
            base,
            len,
            fd: OwnedFd::from(file),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            data_off: DATA_OFFSET,
            data_len: len - DATA_OFFSET,
            writable: true,
            file: false,
        };
        seg.validate(kind)?;
        Ok(seg)
    }

    /// Maps a whole file (shared) whose data area is `data_off..data_off + data_len`, for
    /// memory-mapped `.npy` inputs (read-only) and outputs (writable). No shmpool header: the
    /// caller validated the file's own header.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `mmap` fails; [`Error::OutOfBounds`] when the data area is not inside
    /// the file.
    pub(crate) fn map_file(file: File, data_off: usize, data_len: usize, writable: bool) -> Result<Segment> {
        let len = file.metadata().map_err(|e| Error::os("fstat", e))?.len() as usize;
        if data_off.checked_add(data_len).is_none_or(|end| end > len) || len == 0 {
            return Err(Error::OutOfBounds { offset: data_off as u64, len: data_len as u64, size: len as u64 });
        }
        let opts = memmap2::MmapOptions::new();
        let map = if writable { opts.map_raw(&file) } else { opts.map_raw_read_only(&file) }
            .map_err(|e| Error::os("mmap", e))?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        map.advise(memmap2::Advice::DontFork).map_err(|e| Error::os("madvise(MADV_DONTFORK)", e))?;
        // A hint, on local filesystems: 2 MiB folios for a fresh output, one write fault each, not
        // one per 4 KiB (`a * b + c`, 3 x 100M float64: 80k faults, 0.30 s -> 30k, 0.22 s; README).
        let _ = writable && crate::os::local_fs(&file) && map.advise(memmap2::Advice::HugePage).is_ok();
        Ok(Segment {
            mapping: std::mem::ManuallyDrop::new(Mapping::Attached(map)),
            unshared_in: Some(crate::os::pid()),
            base,
            len,
            fd: OwnedFd::from(file),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            data_off,
            data_len,
            writable,
            file: true,
        })
    }

    /// For a mapped file: where its data lives and whether it may be written; `None` for
    /// shared memory.
    pub(crate) fn file_area(&self) -> Option<FileArea> {
        self.file.then_some(FileArea { offset: self.data_off, len: self.data_len, writable: self.writable })
    }

    /// Device and inode of the file or shared-memory object behind the mapping, to tell
    /// whether two mappings are the same file.
    pub(crate) fn identity(&self) -> Option<(u64, u64)> {
        nix::sys::stat::fstat(&self.fd).ok().map(|st| (st.st_dev, st.st_ino))
    }

    /// Writes a writable file mapping's changes back to the file (`msync`); no-op for shared
    /// memory and read-only mappings.
    pub(crate) fn flush(&self) -> Result<()> {
        match (&*self.mapping, self.file && self.writable) {
            // msync(MS_SYNC) writes back the file's dirty pages of the whole mapping, whoever
            // dirtied them (the workers' mappings share the page cache with this one).
            (Mapping::Attached(m), true) => m.flush().map_err(|e| Error::os("msync", e)),
            _ => Ok(()),
        }
    }

    /// Drops this process's pages of a mapped file's data range (`MADV_DONTNEED`), so that
    /// streaming through a file larger than RAM keeps resident memory bounded. Dirty pages
    /// stay in the page cache and are written back; nothing is lost. No-op for shared memory.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        if !self.file || len == 0 {
            return;
        }
        // Round *outward*, to 2 MiB: a read fault maps 64 KiB around the page (a 2 MiB folio
        // maps whole), pages of chunks other workers run, which would stay mapped here. Only
        // this process's entries go; the data lives in the page cache (review_18c).
        let grain = 2 << 20;
        let start = ((self.data_off + offset) / grain) * grain;
        let end = (self.data_off + offset + len).next_multiple_of(grain).min(self.len);
        if let (Mapping::Attached(m), true) = (&*self.mapping, end > start) {
            // SAFETY: [start, end) lies inside this file mapping (clamped to its length), which
            // is MAP_SHARED: DONTNEED only drops this process's page-table entries, the data
            // (dirty or not) stays in the page cache and reads back the same, and the chunk is
            // done: this process holds no slice of the mapping.
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    /// Checks the header: published, magic, version, kind, sizes, and the owner uid against the
    /// owner of the shared-memory object (both recorded when it was made).
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleSegment`] naming the first field that does not match.
    pub(crate) fn validate(&self, kind: SegmentKind) -> Result<()> {
        let owner = nix::sys::stat::fstat(&self.fd).map_err(|e| Error::os("fstat", e.into()))?.st_uid;
        self.header().check(kind, self.len as u64, owner)
    }

    /// The segment header.
    pub(crate) fn header(&self) -> &SegmentHeader {
        // SAFETY: the mapping is at least DATA_OFFSET bytes (checked at create/attach) and
        // page-aligned; SegmentHeader is plain integers plus one atomic, valid for any bytes,
        // and nobody writes its plain fields after publication.
        unsafe { &*self.base.as_ptr().cast::<SegmentHeader>() }
    }

    /// Process-unique id of this mapping (used to name it to workers).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Address of the start of the mapping (to recognise it in `/proc/self/maps`).
    pub(crate) fn base_addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// Usable bytes in the data area.
    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    /// The descriptor of the segment, to pass to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A raw pointer to `len` bytes at `offset` of the data area, after a bounds check.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range is not inside the data area.
    pub(crate) fn data_ptr(&self, offset: usize, len: usize) -> Result<NonNull<u8>> {
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= self.data_len() => {
                // SAFETY: data_off + offset <= data_off + data_len <= self.len (checked when
                // the segment was created or mapped), so the result stays inside (or one past
                // the end of) the mapping.
                let p = unsafe { self.base.as_ptr().add(self.data_off + offset) };
                Ok(NonNull::new(p).expect("inside a non-null mapping"))
            }
            _ => Err(Error::OutOfBounds { offset: offset as u64, len: len as u64, size: self.data_len() as u64 }),
        }
    }

    /// The bytes at `offset..offset+len` of the data area.
    ///
    /// # Safety
    ///
    /// No process may write the range while the returned slice lives.
    ///
    /// # Errors
    ///
    /// As [`Segment::data_ptr`].
    pub(crate) unsafe fn data(&self, offset: usize, len: usize) -> Result<&[u8]> {
        let p = self.data_ptr(offset, len)?;
        // SAFETY: in bounds (data_ptr), and the caller guarantees no concurrent writer.
        Ok(unsafe { std::slice::from_raw_parts(p.as_ptr(), len) })
    }

    /// The bytes at `offset..offset+len` of the data area, mutably.
    ///
    /// # Safety
    ///
    /// No other reference to the range, in this or any other process, may be used while the
    /// returned slice lives.
    ///
    /// # Errors
    ///
    /// As [`Segment::data_ptr`].
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn data_mut(&self, offset: usize, len: usize) -> Result<&mut [u8]> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        let p = self.data_ptr(offset, len)?;
        // SAFETY: in bounds (data_ptr), and the caller guarantees exclusive access.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) })
    }
}

fn shm_error(op: &'static str, errno: u32, total: usize) -> Error {
    let io = std::io::Error::from_raw_os_error(errno as i32);
    if errno as i32 == libc::ENOSPC || errno as i32 == libc::ENOMEM {
        let available = shm_capacity().map(|c| c.free).unwrap_or(0);
        return Error::ShmFull { needed: total as u64, available };
    }
    Error::os(op, io)
}

/// 64 bits from the OS random source (`getrandom(2)`).
pub(crate) fn random_u64() -> Result<u64> {
    getrandom::u64()
        .map_err(|e| Error::os("getrandom", std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))))
}

/// Reserves every page of the segment so that later writes cannot fail with SIGBUS.
fn reserve(fd: &OwnedFd, total: usize) -> Result<()> {
    let rc = loop {
        // SAFETY: fd is an open shm descriptor we own; posix_fallocate has no memory arguments.
        let rc = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, total as libc::off_t) };
        // tmpfs gives up a large reservation when a signal arrives (EINTR); the pages reserved
        // so far stay reserved, so asking again only finishes the job.
        if rc != libc::EINTR {
            break rc;
        }
    };
    match rc {
        0 => Ok(()),
        libc::ENOSPC => {
            Err(Error::ShmFull { needed: total as u64, available: shm_capacity().map(|c| c.free).unwrap_or(0) })
        }
        e => Err(Error::os("posix_fallocate", std::io::Error::from_raw_os_error(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_segment_is_unlinked_and_validates() {
        let seg = Segment::create(SegmentKind::Array, 10_000, 8, 0).unwrap();
        assert!(seg.data_len() >= 10_000);
        seg.validate(SegmentKind::Array).unwrap();
        assert_eq!(seg.header().owner_pid, std::process::id());
        // (Not by listing names of this pid: other tests' segments may be inside their window.)
        let links = nix::sys::stat::fstat(seg.fd()).unwrap().st_nlink;
        assert_eq!(links, 0, "names are unlinked right after creation");
        let dup = seg.fd().try_clone_to_owned().unwrap();
        let other = Segment::from_fd(dup, SegmentKind::Array).unwrap();
        assert_eq!(other.data_len(), seg.data_len());
        assert!(matches!(
            Segment::from_fd(seg.fd().try_clone_to_owned().unwrap(), SegmentKind::Ring),
            Err(Error::IncompatibleSegment { .. })
        ));
    }

    /// Overwrites header bytes at `offset` (test only), then attaches through a new descriptor.
    fn attach_after_corrupting(offset: usize, bytes: &[u8]) -> Result<Segment> {
        let seg = Segment::create(SegmentKind::Array, 4096, 8, 0).unwrap();
        assert!(offset + bytes.len() <= std::mem::size_of::<SegmentHeader>());
        // SAFETY: the header is inside the mapping, and nothing else uses this fresh segment.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), seg.base.as_ptr().add(offset), bytes.len()) };
        Segment::from_fd(seg.fd().try_clone_to_owned().unwrap(), SegmentKind::Array)
    }

    #[test]
    fn header_validation_rejects_wrong_magic_version_size_uid_and_unpublished_headers() {
        let rejected = |offset: usize, bytes: &[u8], what: &str| match attach_after_corrupting(offset, bytes) {
            Err(Error::IncompatibleSegment { found, expected }) => {
                assert!(found.starts_with(what) && expected.starts_with(what), "{found} / {expected}")
            }
            other => panic!("{what}: expected IncompatibleSegment, got {other:?}"),
        };
        rejected(0, b"NOTSHMPL", "magic");
        rejected(8, &(LAYOUT_VERSION + 1).to_ne_bytes(), "layout version");
        rejected(16, &1u64.to_ne_bytes(), "size");
        rejected(44, &(nix::unistd::geteuid().as_raw() + 1).to_ne_bytes(), "owner uid");
        rejected(56, &0u32.to_ne_bytes(), "initialised word");
        assert!(attach_after_corrupting(60, &[0; 4]).is_ok(), "the reserved word is not checked");
    }

    #[test]
    fn a_created_segment_identifies_itself_to_the_sweep_and_foreign_bytes_do_not() {
        use std::os::unix::fs::FileExt;
        let seg = Segment::create(SegmentKind::Array, 10_000, 8, 0).unwrap();
        let file = File::from(seg.fd().try_clone_to_owned().unwrap());
        let mut head = [0u8; 64];
        file.read_exact_at(&mut head, 0).unwrap();
        let id = header::Identity::read(&head).expect("our own header");
        assert_eq!(id.owner_pid, std::process::id());
        assert_eq!(id.owner_uid, nix::unistd::geteuid().as_raw());
        assert_eq!(id.total_len, seg.len as u64);
        let mut npy = head;
        npy[..8].copy_from_slice(b"\x93NUMPY\x01\x00");
        assert_eq!(header::Identity::read(&npy), None);
        let mut old = head;
        old[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_ne_bytes());
        assert_eq!(header::Identity::read(&old), None);
        assert_eq!(header::Identity::read(&[0; 64]), None);
    }

    #[test]
    fn data_ptr_rejects_out_of_bounds_ranges() {
        let seg = Segment::create(SegmentKind::Array, 4096, 1, 0).unwrap();
        assert!(seg.data_ptr(0, 4096).is_ok());
        assert!(seg.data_ptr(4096, 0).is_ok());
        assert!(seg.data_ptr(1, 4096).is_err());
        assert!(seg.data_ptr(usize::MAX, 2).is_err());
    }
}
