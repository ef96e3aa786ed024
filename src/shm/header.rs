//! The `#[repr(C)]` header at offset 0 of every shmpool segment, and its check on attach.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::shm::DATA_OFFSET;

/// First eight bytes of every shmpool segment.
pub(crate) const MAGIC: [u8; 8] = *b"SHMPOOL\0";
/// Version of the layout of the header and of everything the segment kinds put after it.
/// Bump it on any change to a `#[repr(C)]` type that lives in shared memory.
pub(crate) const LAYOUT_VERSION: u32 = 5;
/// Value of [`SegmentHeader::initialised`] once the creator has finished the header.
pub(crate) const READY: u32 = 0x5EAD_10AD;

u32_enum! {
/// What a segment holds; stored in the header and checked on attach.
pub(crate) enum SegmentKind {
    /// The pool's control segment: ring header and slot table.
    Ring = 1,
    /// A numeric array (`SharedVec`, staging buffers).
    Array = 2,
}
}

/// The header at offset 0 of every segment.
///
/// Written once by the creator while it is the only process that can see the segment, then
/// published by storing [`SegmentHeader::initialised`] last with `Release`. An attacher loads
/// `initialised` with `Acquire` before reading any other field and refuses any mismatch.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SegmentHeader {
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
    /// Effective uid of the creator. Attachers compare it with the owner the kernel recorded
    /// for the object when it was made, not with their own uid: a program that drops its
    /// privileges after building its pool keeps using its pool and arrays.
    pub owner_uid: u32,
    /// Size in bytes of one element (arrays) or of one slot (rings).
    pub elem_size: u32,
    /// Element type tag (arrays) or slot count (rings).
    pub elem_tag: u32,
    /// PUBLISH: stored last by the creator with `Release`; OBSERVE: loaded first by attachers
    /// with `Acquire`.
    pub initialised: AtomicU32,
    pub(crate) _reserved: u32,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 64);

/// What the first bytes of a named shared-memory object say about who made it, read with
/// `pread` (never mapped) by the stale-segment sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The creator's pid.
    pub owner_pid: u32,
    /// The creator's effective uid.
    pub owner_uid: u32,
    /// The length of the whole object the creator made.
    pub total_len: u64,
}

fn word<const N: usize>(bytes: &[u8; 64], offset: usize) -> [u8; N] {
    bytes[offset..offset + N].try_into().expect("N bytes")
}

impl Identity {
    /// The identity in a header's bytes, if they carry shmpool's magic, this layout version, a
    /// known segment kind and the data area at its place; `None` for anything else.
    pub(crate) fn read(bytes: &[u8; 64]) -> Option<Identity> {
        use std::mem::offset_of;
        let u32_at = |o: usize| u32::from_ne_bytes(word(bytes, o));
        let u64_at = |o: usize| u64::from_ne_bytes(word(bytes, o));
        let ours = word::<8>(bytes, offset_of!(SegmentHeader, magic)) == MAGIC
            && u32_at(offset_of!(SegmentHeader, version)) == LAYOUT_VERSION
            && SegmentKind::try_from(u32_at(offset_of!(SegmentHeader, kind))).is_ok()
            && u64_at(offset_of!(SegmentHeader, data_offset)) == DATA_OFFSET as u64;
        ours.then(|| Identity {
            owner_pid: u32_at(offset_of!(SegmentHeader, owner_pid)),
            owner_uid: u32_at(offset_of!(SegmentHeader, owner_uid)),
            total_len: u64_at(offset_of!(SegmentHeader, total_len)),
        })
    }

    /// The first 64 bytes of a segment made by `owner_pid` as this uid, as a crash between
    /// writing the header and unlinking the name leaves them (test hook).
    #[cfg(feature = "testing")]
    pub(crate) fn bytes(owner_pid: u32, total_len: u64) -> [u8; 64] {
        use std::mem::offset_of;
        let mut b = [0u8; 64];
        let mut put = |o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
        put(offset_of!(SegmentHeader, magic), &MAGIC);
        put(offset_of!(SegmentHeader, version), &LAYOUT_VERSION.to_ne_bytes());
        put(offset_of!(SegmentHeader, kind), &(SegmentKind::Array as u32).to_ne_bytes());
        put(offset_of!(SegmentHeader, total_len), &total_len.to_ne_bytes());
        put(offset_of!(SegmentHeader, data_offset), &(DATA_OFFSET as u64).to_ne_bytes());
        put(offset_of!(SegmentHeader, data_len), &(total_len.saturating_sub(DATA_OFFSET as u64)).to_ne_bytes());
        put(offset_of!(SegmentHeader, owner_pid), &owner_pid.to_ne_bytes());
        put(offset_of!(SegmentHeader, owner_uid), &nix::unistd::geteuid().as_raw().to_ne_bytes());
        b
    }
}

impl SegmentHeader {
    /// Checks a header mapped in a segment of `mapped_len` bytes whose owner (as the kernel
    /// recorded it at creation, `st_uid`) is `object_uid`: published, magic, version, kind,
    /// sizes, owner uid.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleSegment`] naming the first field that does not match.
    pub(crate) fn check(&self, kind: SegmentKind, mapped_len: u64, object_uid: u32) -> Result<()> {
        let mismatch = |what: &str, found: String, expected: String| Error::IncompatibleSegment {
            found: format!("{what} {found}"),
            expected: format!("{what} {expected}"),
        };
        // OBSERVE: pairs with the Release store in `write_header`.
        let init = self.initialised.load(Ordering::Acquire);
        if init != READY {
            return Err(mismatch("initialised word", format!("{init:#x}"), format!("{READY:#x}")));
        }
        if self.magic != MAGIC {
            return Err(mismatch("magic", format!("{:?}", self.magic), format!("{MAGIC:?}")));
        }
        if self.version != LAYOUT_VERSION {
            return Err(mismatch("layout version", self.version.to_string(), LAYOUT_VERSION.to_string()));
        }
        if self.kind != kind as u32 {
            return Err(mismatch("kind", self.kind.to_string(), (kind as u32).to_string()));
        }
        if self.total_len != mapped_len {
            return Err(mismatch("size", self.total_len.to_string(), mapped_len.to_string()));
        }
        if self.data_offset != DATA_OFFSET as u64 || self.data_offset.saturating_add(self.data_len) > self.total_len {
            return Err(mismatch(
                "data area",
                format!("{}+{}", self.data_offset, self.data_len),
                format!("{DATA_OFFSET}+{}", self.total_len.saturating_sub(DATA_OFFSET as u64)),
            ));
        }
        // The uid recorded when the segment was made, twice: in the header and by the kernel.
        // Never the attacher's current euid, which a privilege drop changes.
        if self.owner_uid != object_uid {
            return Err(mismatch("owner uid", self.owner_uid.to_string(), object_uid.to_string()));
        }
        Ok(())
    }
}
