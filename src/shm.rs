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
//! cleans up what a crash inside that tiny window may leave.
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

/// First eight bytes of every shmpool segment.
pub const MAGIC: [u8; 8] = *b"SHMPOOL\0";
/// Version of the layout of the header and of everything the segment kinds put after it.
/// Bump it on any change to a `#[repr(C)]` type that lives in shared memory.
pub const LAYOUT_VERSION: u32 = 2;
/// Offset of the data area: one page, so data is page-aligned (and 64-byte aligned for any
/// element type).
pub const DATA_OFFSET: usize = 4096;
/// Value of [`SegmentHeader::initialised`] once the creator has finished the header.
const READY: u32 = 0x5EAD_10AD;
/// Where POSIX shared memory lives on Linux.
pub const SHM_DIR: &str = "/dev/shm";
/// Prefix of every segment name (without the leading `/`).
pub const NAME_PREFIX: &str = "shmpool_";

/// What a segment holds; stored in the header and checked on attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// The pool's control segment: ring header and slot table.
    Ring = 1,
    /// A numeric array (`SharedVec`, staging buffers).
    Array = 2,
}

impl TryFrom<u32> for SegmentKind {
    type Error = u32;
    fn try_from(v: u32) -> std::result::Result<Self, u32> {
        match v {
            1 => Ok(SegmentKind::Ring),
            2 => Ok(SegmentKind::Array),
            other => Err(other),
        }
    }
}

/// The header at offset 0 of every segment.
///
/// Written once by the creator while it is the only process that can see the segment, then
/// published by storing [`SegmentHeader::initialised`] last with `Release`. An attacher loads
/// `initialised` with `Acquire` before reading any other field and refuses any mismatch.
#[repr(C)]
#[derive(Debug)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`SegmentKind`] as an integer.
    pub kind: u32,
    /// Length of the whole mapping in bytes.
    pub total_len: u64,
    /// Offset of the data area ([`DATA_OFFSET`]).
    pub data_offset: u64,
    /// Usable bytes in the data area.
    pub data_len: u64,
    /// Pid of the creator.
    pub owner_pid: u32,
    /// Effective uid of the creator; attachers must have the same.
    pub owner_uid: u32,
    /// Size in bytes of one element (arrays) or of one slot (rings).
    pub elem_size: u32,
    /// Element type tag (arrays) or slot count (rings).
    pub elem_tag: u32,
    /// PUBLISH: stored last by the creator with `Release`; OBSERVE: loaded first by attachers
    /// with `Acquire`.
    pub initialised: AtomicU32,
    _reserved: u32,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 64);

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
pub struct Segment {
    mapping: Mapping,
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

/// Size and free bytes of the filesystem behind `/dev/shm`.
pub fn shm_capacity() -> Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(SHM_DIR).map_err(|e| Error::os("statvfs", e.into()))?;
    let frsize = st.fragment_size() as u64;
    Ok((st.blocks() as u64 * frsize, st.blocks_available() as u64 * frsize))
}

impl Segment {
    /// Creates a new segment with `data_len` usable bytes, reserves its pages, writes and
    /// publishes its header, and unlinks its name.
    ///
    /// # Errors
    ///
    /// [`Error::ShmFull`] when `/dev/shm` cannot hold it; [`Error::Os`] for other failures.
    pub fn create(kind: SegmentKind, data_len: usize, elem_size: u32, elem_tag: u32) -> Result<Segment> {
        let page = page_size();
        let data_pages = data_len.max(1).div_ceil(page) * page;
        let total = DATA_OFFSET
            .checked_add(data_pages)
            .ok_or_else(|| Error::InvalidConfig(format!("segment of {data_len} bytes is too large")))?;
        let (_, available) = shm_capacity()?;
        if (total as u64) > available {
            return Err(Error::ShmFull { needed: total as u64, available });
        }
        let pid = std::process::id();
        let (mut shmem, name) = loop {
            let name = format!("/{NAME_PREFIX}{pid}_{:016x}", rand::random::<u64>());
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
        // We unlink the name ourselves, right now, instead of in `Shmem`'s drop.
        shmem.set_owner(false);
        let opened = nix::sys::mman::shm_open(name.as_str(), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty());
        let unlinked = nix::sys::mman::shm_unlink(name.as_str());
        let fd = opened.map_err(|e| Error::os("shm_open", e.into()))?;
        unlinked.map_err(|e| Error::os("shm_unlink", e.into()))?;
        reserve(&fd, total)?;
        let base = NonNull::new(shmem.as_ptr()).expect("shared_memory returned a mapped pointer");
        let seg = Segment {
            mapping: Mapping::Created { _shmem: shmem },
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
        // SAFETY: the segment is at least DATA_OFFSET (> 64) bytes, page-aligned, and no other
        // process can have it yet (its name is unlinked and its fd not passed on).
        unsafe { hdr.write(value) };
        // PUBLISH: the header fields above become visible to whoever observes READY.
        self.header().initialised.store(READY, Ordering::Release);
    }

    /// Maps a segment from a descriptor received from its creator and validates its header.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleSegment`] when the header is not a published shmpool header of
    /// `kind` with this layout version, this uid and the mapping's size.
    pub fn from_fd(fd: OwnedFd, kind: SegmentKind) -> Result<Segment> {
        let file = File::from(fd);
        let len = file.metadata().map_err(|e| Error::os("fstat", e))?.len() as usize;
        if len < DATA_OFFSET {
            return Err(Error::IncompatibleSegment {
                found: format!("{len} bytes"),
                expected: format!("at least {DATA_OFFSET} bytes"),
            });
        }
        let map = memmap2::MmapOptions::new().map_raw(&file).map_err(|e| Error::os("mmap", e))?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        let seg = Segment {
            mapping: Mapping::Attached(map),
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
    /// [`Error::Os`] when `mmap` fails; [`Error::InvalidConfig`] when the data area is not
    /// inside the file.
    pub fn map_file(file: File, data_off: usize, data_len: usize, writable: bool) -> Result<Segment> {
        let len = file.metadata().map_err(|e| Error::os("fstat", e))?.len() as usize;
        if data_off.checked_add(data_len).is_none_or(|end| end > len) || len == 0 {
            return Err(Error::InvalidConfig(format!(
                "data area {data_off}+{data_len} is not inside a file of {len} bytes"
            )));
        }
        let opts = memmap2::MmapOptions::new();
        let map = if writable { opts.map_raw(&file) } else { opts.map_raw_read_only(&file) }
            .map_err(|e| Error::os("mmap", e))?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        Ok(Segment {
            mapping: Mapping::Attached(map),
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

    /// For a mapped file: (data offset, data length, writable); `None` for shared memory.
    pub fn file_area(&self) -> Option<(usize, usize, bool)> {
        self.file.then_some((self.data_off, self.data_len, self.writable))
    }

    /// Drops this process's pages of a mapped file's data range (`MADV_DONTNEED`), so that
    /// streaming through a file larger than RAM keeps resident memory bounded. Dirty pages
    /// stay in the page cache and are written back; nothing is lost. No-op for shared memory.
    pub fn release(&self, offset: usize, len: usize) {
        if !self.file || len == 0 {
            return;
        }
        // Round *outward*: a page shared with a neighbouring chunk is only unmapped from this
        // process; another worker that still writes it keeps its own mapping, and the data
        // lives in the page cache either way.
        let page = page_size();
        let start = ((self.data_off + offset) / page) * page;
        let end = (self.data_off + offset + len).next_multiple_of(page).min(self.len);
        if let (Mapping::Attached(m), true) = (&self.mapping, end > start) {
            // SAFETY: [start, end) lies inside this file mapping (clamped to its length), which
            // is MAP_SHARED: DONTNEED only drops this process's page-table entries, the data
            // (dirty or not) stays in the page cache, and this process has finished with the
            // range (the chunk is done).
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    /// Checks the header: published, magic, version, kind, sizes, owner uid.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleSegment`] naming the first field that does not match.
    pub fn validate(&self, kind: SegmentKind) -> Result<()> {
        let h = self.header();
        let mismatch = |what: &str, found: String, expected: String| Error::IncompatibleSegment {
            found: format!("{what} {found}"),
            expected: format!("{what} {expected}"),
        };
        // OBSERVE: pairs with the Release store in `write_header`.
        let init = h.initialised.load(Ordering::Acquire);
        if init != READY {
            return Err(mismatch("initialised word", format!("{init:#x}"), format!("{READY:#x}")));
        }
        if h.magic != MAGIC {
            return Err(mismatch("magic", format!("{:?}", h.magic), format!("{MAGIC:?}")));
        }
        if h.version != LAYOUT_VERSION {
            return Err(mismatch("layout version", h.version.to_string(), LAYOUT_VERSION.to_string()));
        }
        if h.kind != kind as u32 {
            return Err(mismatch("kind", h.kind.to_string(), (kind as u32).to_string()));
        }
        if h.total_len != self.len as u64 {
            return Err(mismatch("size", h.total_len.to_string(), self.len.to_string()));
        }
        if h.data_offset != DATA_OFFSET as u64 || h.data_offset.saturating_add(h.data_len) > h.total_len {
            return Err(mismatch(
                "data area",
                format!("{}+{}", h.data_offset, h.data_len),
                format!("{DATA_OFFSET}+{}", h.total_len.saturating_sub(DATA_OFFSET as u64)),
            ));
        }
        let uid = nix::unistd::geteuid().as_raw();
        if h.owner_uid != uid {
            return Err(mismatch("owner uid", h.owner_uid.to_string(), uid.to_string()));
        }
        Ok(())
    }

    /// The segment header.
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: the mapping is at least DATA_OFFSET bytes (checked at create/attach) and
        // page-aligned; SegmentHeader is plain integers plus one atomic, valid for any bytes,
        // and nobody writes its plain fields after publication.
        unsafe { &*self.base.as_ptr().cast::<SegmentHeader>() }
    }

    /// Process-unique id of this mapping (used to name it to workers).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Usable bytes in the data area.
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// The descriptor of the segment, to pass to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A raw pointer to `len` bytes at `offset` of the data area, after a bounds check.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptSlot`] (slot `u32::MAX`) when the range is not inside the data area.
    pub fn data_ptr(&self, offset: usize, len: usize) -> Result<NonNull<u8>> {
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= self.data_len() => {
                // SAFETY: data_off + offset <= data_off + data_len <= self.len (checked when
                // the segment was created or mapped), so the result stays inside (or one past
                // the end of) the mapping.
                let p = unsafe { self.base.as_ptr().add(self.data_off + offset) };
                Ok(NonNull::new(p).expect("inside a non-null mapping"))
            }
            _ => Err(Error::CorruptSlot {
                slot: u32::MAX,
                reason: format!("byte range {offset}+{len} outside data area of {} bytes", self.data_len()),
            }),
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
    pub unsafe fn data(&self, offset: usize, len: usize) -> Result<&[u8]> {
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
    pub unsafe fn data_mut(&self, offset: usize, len: usize) -> Result<&mut [u8]> {
        if !self.writable {
            return Err(Error::CorruptSlot { slot: u32::MAX, reason: "write to a read-only mapping".into() });
        }
        let p = self.data_ptr(offset, len)?;
        // SAFETY: in bounds (data_ptr), and the caller guarantees exclusive access.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) })
    }
}

fn shm_error(op: &'static str, errno: u32, total: usize) -> Error {
    let io = std::io::Error::from_raw_os_error(errno as i32);
    if errno as i32 == libc::ENOSPC || errno as i32 == libc::ENOMEM {
        let available = shm_capacity().map(|c| c.1).unwrap_or(0);
        return Error::ShmFull { needed: total as u64, available };
    }
    Error::os(op, io)
}

/// Reserves every page of the segment so that later writes cannot fail with SIGBUS.
fn reserve(fd: &OwnedFd, total: usize) -> Result<()> {
    // SAFETY: fd is an open shm descriptor we own; posix_fallocate has no memory arguments.
    let rc = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, total as libc::off_t) };
    match rc {
        0 => Ok(()),
        libc::ENOSPC => {
            Err(Error::ShmFull { needed: total as u64, available: shm_capacity().map(|c| c.1).unwrap_or(0) })
        }
        e => Err(Error::os("posix_fallocate", std::io::Error::from_raw_os_error(e))),
    }
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

/// Messages about segments between the supervisor and a worker, over a `SOCK_SEQPACKET` pair.
///
/// A worker that meets an unknown segment id asks for it ([`mail::NEED`]); the supervisor
/// answers with the descriptor attached ([`mail::ADD`], `SCM_RIGHTS`) or [`mail::MISSING`];
/// when the last handle of a segment is gone it tells workers to unmap it ([`mail::FORGET`]).
pub mod mail {
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
    use std::time::Duration;

    use bytemuck::{Pod, Zeroable};
    use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

    use crate::error::{Error, Result};

    /// Worker to supervisor: send me segment `id`.
    pub const NEED: u32 = 1;
    /// Supervisor to worker: segment `id`, descriptor attached.
    pub const ADD: u32 = 2;
    /// Supervisor to worker: unmap segment `id`.
    pub const FORGET: u32 = 3;
    /// Supervisor to worker: segment `id` does not exist (any more).
    pub const MISSING: u32 = 4;

    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Mail {
        op: u32,
        /// Bit 0: a mapped file (not shared memory); bit 1: writable.
        flags: u32,
        id: u64,
        /// File mappings: data offset and length.
        off: u64,
        len: u64,
    }

    /// A received message.
    #[derive(Debug)]
    pub struct Message {
        /// One of the constants above.
        pub op: u32,
        /// The segment id.
        pub id: u64,
        /// The attached descriptor ([`ADD`]).
        pub fd: Option<OwnedFd>,
        /// For a mapped file: (data offset, data length, writable).
        pub file: Option<(usize, usize, bool)>,
    }

    /// Sends one message, with `fd` attached if given.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the socket is closed or full.
    pub fn send(
        sock: BorrowedFd<'_>,
        op: u32,
        id: u64,
        fd: Option<BorrowedFd<'_>>,
        file: Option<(usize, usize, bool)>,
    ) -> Result<()> {
        let (flags, off, len) = match file {
            Some((off, len, writable)) => (1 | if writable { 2 } else { 0 }, off as u64, len as u64),
            None => (0, 0, 0),
        };
        let m = Mail { op, flags, id, off, len };
        let iov = [IoSlice::new(bytemuck::bytes_of(&m))];
        let raw: [RawFd; 1] = [fd.map(|f| f.as_raw_fd()).unwrap_or(-1)];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if fd.is_some() { &cmsg } else { &[] };
        loop {
            match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::os("sendmsg", e.into())),
            }
        }
    }

    /// Receives one message, waiting at most `timeout` (`Duration::ZERO`: do not wait).
    /// `Ok(None)` when nothing arrived in time.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the peer is gone or the socket fails.
    pub fn recv(sock: BorrowedFd<'_>, timeout: Duration) -> Result<Option<Message>> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut pfd = [PollFd::new(sock, PollFlags::POLLIN)];
        let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut pfd, t) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(Error::os("poll", e.into())),
        }
        let mut m = Mail::zeroed();
        let mut cbuf = nix::cmsg_space!([RawFd; 1]);
        let mut fd = None;
        let n = {
            let mut iov = [IoSliceMut::new(bytemuck::bytes_of_mut(&mut m))];
            let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(|e| Error::os("recvmsg", e.into()))?;
            for c in msg.cmsgs().map_err(|e| Error::os("recvmsg", e.into()))? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: SCM_RIGHTS installed `raw` as a new descriptor in this
                        // process; nothing else owns it.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            msg.bytes
        };
        if n == 0 {
            return Err(Error::os("recvmsg", std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
        }
        let file = (m.flags & 1 != 0).then_some((m.off as usize, m.len as usize, m.flags & 2 != 0));
        Ok(Some(Message { op: m.op, id: m.id, fd, file }))
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
        let ours = list_segments().into_iter().filter(|s| s.owner_pid == std::process::id()).count();
        assert_eq!(ours, 0, "names are unlinked right after creation");
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
    fn data_ptr_rejects_out_of_bounds_ranges() {
        let seg = Segment::create(SegmentKind::Array, 4096, 1, 0).unwrap();
        assert!(seg.data_ptr(0, 4096).is_ok());
        assert!(seg.data_ptr(4096, 0).is_ok());
        assert!(seg.data_ptr(1, 4096).is_err());
        assert!(seg.data_ptr(usize::MAX, 2).is_err());
    }
}
