//! The types of the slot table: states, statuses, headers and descriptors, all `#[repr(C)]`.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64};

use bytemuck::{Pod, Zeroable};

u32_enum! {
/// The state of a slot.
///
/// | state   | who moves it             | to        | when                                   |
/// |---------|--------------------------|-----------|----------------------------------------|
/// | FREE    | the map caller           | FILLED    | it wrote a descriptor (and payload)    |
/// | FILLED  | a worker                 | CLAIMED   | it takes the chunk (records pid, attempt) |
/// | FILLED  | the map caller           | FREE      | it cancels a failed map                |
/// | CLAIMED | the claiming worker      | DONE      | it publishes (status OK/PANICKED/CORRUPT) |
/// | CLAIMED | the supervisor           | FILLED    | the claimer died; `attempt + 1`        |
/// | CLAIMED | the supervisor           | DONE      | the claimer died on the last attempt (CRASHED) or timed out |
/// | DONE    | the map caller           | FREE      | it collected the result                |
///
/// Every transition happens under the ring mutex, and the state word is always written
/// *last*: a holder killed in the middle of a transition leaves the slot in its old state, so
/// repairing the table after `EOWNERDEAD` needs no roll-back (only the dead pid's CLAIMED
/// slots, which the supervisor requeues).
pub(crate) enum SlotState {
    /// Owned by the map caller; may be filled.
    Free = 0,
    /// Holds a descriptor waiting for a worker.
    Filled = 1,
    /// A worker (header `pid`) runs the chunk.
    Claimed = 2,
    /// The result (header `status`) waits for the map caller.
    Done = 3,
}
}

u32_enum! {
/// How a DONE slot ended.
pub(crate) enum Status {
    /// The kernel ran; the output range holds its result.
    Ok = 0,
    /// The kernel panicked; the slot message holds the panic message.
    Panicked = 1,
    /// Workers died on this chunk `attempt` times; header `signal` holds the last signal.
    Crashed = 2,
    /// The descriptor failed its integrity or bounds check; the message says which.
    Corrupt = 3,
    /// The chunk ran longer than the pool's chunk timeout.
    TimedOut = 4,
    /// The kernel reported a typed failure (`Failure` of the kernel layer); the slot message
    /// holds its code in decimal.
    Failed = 5,
}
}

/// The bookkeeping words of one slot. Every field is written only under the ring mutex
/// (Relaxed: the mutex's acquire/release orders them), `state` last.
#[repr(C, align(64))]
pub(crate) struct SlotHeader {
    /// [`SlotState`] as an integer.
    pub state: AtomicU32,
    /// Pid of the claimer (CLAIMED), or of the last claimer (DONE).
    pub pid: AtomicU32,
    /// How many claimers died on this chunk so far (0 on the first run).
    pub attempt: AtomicU32,
    /// [`Status`] of a DONE slot.
    pub status: AtomicU32,
    /// Signal that killed the last claimer (CRASHED).
    pub signal: AtomicU32,
    /// Bytes of the message area in use.
    pub message_len: AtomicU32,
    /// The map this slot belongs to (copied from the descriptor for scanning).
    pub map_id: AtomicU64,
    /// CLOCK_MONOTONIC microseconds when the chunk was claimed (for chunk timeouts).
    pub claimed_at_us: AtomicU64,
    /// Bumped on every claim; a publish must present the generation it claimed.
    pub generation: AtomicU64,
    /// Keyed hash of (slot, generation, map, status, signal, attempt, descriptor MAC), written
    /// with the DONE state by whoever finished the chunk and checked by the map caller before it
    /// trusts the result: a stray write that turns a slot DONE cannot forge it.
    pub stamp: AtomicU64,
    /// Order in which the slot was filled (from `RingHeader::next_fill_seq`): workers claim the
    /// oldest FILLED slot first, so a small map queued behind a big one is served in turn.
    pub fill_seq: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SlotHeader>() == 64);

/// What a chunk is: kernel, parameter block, input and output ranges. Written by the map
/// caller while the slot is FREE, read (copied) by the claimer, never changed in between.
///
/// Segment ids are the caller's process-unique `Segment::id`s; id 0 means the
/// slot's inline payload. Offsets are bytes into the segment's data area (or the payload).
/// `mac` is a keyed hash of every other field and the slot index, with a key that only the
/// pool's processes hold, so shared memory alone cannot forge a descriptor.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct Descriptor {
    /// The map this chunk belongs to.
    pub map_id: u64,
    /// Trampoline offset from the image's anchor function (see `kernel::KernelRef`).
    pub kernel_addr: u64,
    /// Keyed tag of the trampoline offset.
    pub kernel_tag: u64,
    /// Flat index of the first element.
    pub start: u64,
    /// Number of elements.
    pub len: u64,
    /// Input segment id, 0 for the inline payload.
    pub in_seg: u64,
    /// Input byte offset.
    pub in_off: u64,
    /// Output segment id, 0 for the inline payload.
    pub out_seg: u64,
    /// Output byte offset.
    pub out_off: u64,
    /// Bytes of parameter block at payload offset 0.
    pub params_len: u64,
    /// Size of one input element.
    pub in_size: u32,
    /// Size of one output element.
    pub out_size: u32,
    /// Integrity tag over all other fields and the slot index.
    pub mac: u64,
    /// Segment holding a parameter block too large for the payload (0: at payload offset 0).
    pub params_seg: u64,
    /// [`Descriptor::ZERO_OUTPUT`], [`Descriptor::ZIP`], [`Descriptor::VIA_SCRATCH`] (other
    /// bits are reserved, zero).
    pub flags: u32,
    /// With [`Descriptor::ZIP`]: the zip header's keyed digest (`zip::ZipHeader::digest`)
    /// truncated to its low 32 bits (else 0).
    pub zip_digest: u32,
    /// With [`Descriptor::VIA_SCRATCH`]: the segment of the chunk's scratch area (else 0).
    pub scratch_seg: u64,
    /// With [`Descriptor::VIA_SCRATCH`]: bytes between two slots' backup areas in it (slot
    /// `k`'s at `k * scratch_off`): a [`Descriptor::SCRATCH_MARK`]-byte mark, then room for
    /// the chunk's output.
    pub scratch_off: u64,
}

impl Descriptor {
    /// Flag: the claimer zeroes the output range before the kernel runs. The map caller sets it
    /// when the output is a buffer the pool recycles (an inline slot payload, a staging buffer)
    /// and the kernel may leave elements unwritten (a chunk kernel): the kernel must never see
    /// another map's results, nor a killed attempt's partial output.
    pub const ZERO_OUTPUT: u32 = 1;
    /// Flag: the parameter block opens with a [`super::zip::ZipHeader`] naming more input
    /// segments, and the kernel is a several-input trampoline (see `kernel::zip`).
    pub const ZIP: u32 = 2;
    /// Flag: the output is the caller's own array and the kernel may read it (a chunk kernel
    /// into `map_into`'s output): a retry must not apply the kernel twice. The claimer backs
    /// the caller's range up into the scratch area and marks it, runs the kernel in place,
    /// then marks the chunk complete; a retry restores the range from the backup (backup
    /// mark) or has nothing to do (complete mark). See `worker::run_kernel`.
    pub const VIA_SCRATCH: u32 = 4;
    /// Bytes before a scratch area's data: the completion mark (a `u64`), padded so that the
    /// data keeps the 64-byte alignment of any element type.
    pub const SCRATCH_MARK: usize = 64;
}

const _: () = assert!(std::mem::size_of::<Descriptor>() == 128);

/// Bytes of panic message a slot can carry.
pub(crate) const MESSAGE_CAP: usize = 192;
