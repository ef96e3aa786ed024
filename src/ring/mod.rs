//! The slot table: the only code that changes a slot's state.
//!
//! A ring is one [`SegmentKind::Ring`] segment: a [`RingHeader`] (the robust mutex, two
//! doorbells, flags) followed by `slots` slots of `stride` bytes, each a [`SlotHeader`], a
//! [`Descriptor`], a message area and an inline payload area. See `README.md` beside this file
//! for the state machine and its orderings. Descriptors are bounds-checked against the segments
//! they name before any byte of them is touched, so a corrupted slot is an error, never an
//! out-of-bounds access. This module never runs a kernel and never forks.

mod guard;
pub(crate) mod index;
pub(crate) mod layout;
pub(crate) mod scratch;
pub(crate) mod slot;
pub(crate) mod zip;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::shm::{Segment, SegmentKind};
use crate::sync::{Doorbell, ShmMutex};
#[cfg(test)]
use slot::SlotState;
pub(crate) use slot::{Descriptor, SlotHeader, Status, MESSAGE_CAP};

#[cfg(test)]
use guard::Requeued;
pub(crate) use guard::{Observed, RingGuard, Sealed};
use layout::{io_ranges, Place};

/// How long any pool process waits for the ring mutex before reporting
/// [`Error::LockTimeout`]. The lock is only ever held for a few slot-state changes, and a
/// holder that dies releases it through `EOWNERDEAD`, so reaching this means a holder is
/// stopped (SIGSTOP, debugger), not dead.
pub(crate) const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring's own header, at the start of the data area.
#[repr(C, align(64))]
pub(crate) struct RingHeader {
    /// Guards every slot's state change.
    pub(crate) lock: ShmMutex,
    /// Workers wait here for FILLED slots, mail and shutdown.
    pub(crate) work: Doorbell,
    /// The map caller waits here for DONE slots.
    pub(crate) done: Doorbell,
    /// Set (SeqCst) by the pool when workers must exit; read by workers before each claim.
    pub(crate) shutdown: AtomicU32,
    /// Bumped by the supervisor when it put a message in worker sockets.
    pub(crate) mail: AtomicU32,
    /// Pid of the one worker allowed to spin while idle (0: none), so that idle workers never
    /// outnumber the cores with busy-waiting.
    pub(crate) spinner: AtomicU32,
    /// How many times a lock holder died inside the lock (diagnostics).
    pub(crate) owner_deaths: AtomicU32,
    /// Number of slots (copied from the creator's config; checked against the header).
    pub(crate) slots: u32,
    /// Inline payload bytes per slot.
    pub(crate) payload_cap: u32,
    /// Bytes per slot.
    pub(crate) stride: u32,
    /// Set (SeqCst) by a live worker whose publish was refused: only a corrupted slot header
    /// can make a current claim stale. Read by the map caller, which then fails the map.
    pub(crate) corrupt: AtomicU32,
    /// DONE slots not yet collected. Changed only under the lock, by `set_state`.
    pub(crate) done_pending: AtomicU32,
    /// How many DONE slots the map caller wants before it is woken (set under the lock before
    /// it sleeps). Batching wake-ups keeps the caller from preempting workers once per chunk.
    pub(crate) done_wanted: AtomicU32,
    /// CLAIMED slots right now (workers running a chunk). Changed only under the lock, by
    /// `set_state`; read without it (Relaxed) by waiters deciding whether spinning would
    /// oversubscribe the cores.
    pub(crate) claimed_now: AtomicU32,
    /// Next `SlotHeader::fill_seq`. Changed only under the lock.
    pub(crate) next_fill_seq: AtomicU64,
    /// CLOCK_MONOTONIC µs when the holder of the `spinner` token last polled (Relaxed: a hint).
    /// Written by the spinning worker right after it takes the token and then at every few
    /// polls; read by the supervisor at its tick and by a map caller whose chunk was not taken
    /// for a while, which take the token over when it is stale
    /// ([`Ring::take_over_stale_spinner`]): a stopped spinner (SIGSTOP, a debugger) must not
    /// leave chunks to a sleeper's timeout. On a cache line of its own: the spinner writes it
    /// constantly, and the words callers read on every map must not move with it.
    pub(crate) spin_beat: SpinBeat,
    /// Where the waiters run: see [`CpuHints`].
    pub(crate) cpus: CpuHints,
}

/// The CPU (`cpu + 1`, 0: unknown) the last waiting map caller and the last spinning or
/// claiming worker ran on (Relaxed: hints, stale as soon as the scheduler moves a process).
/// A spinner that finds the process it waits for on its own CPU yields the core at once
/// instead of after [`crate::sync::POLITE_AFTER`]: that process cannot run before it does
/// (the scheduler often places a caller and a worker on one CPU of a busy machine, and every
/// hand-off then cost the polite delay). On a cache line of its own, beside the spin beat.
#[repr(C, align(64))]
pub(crate) struct CpuHints {
    pub(crate) caller: AtomicU32,
    pub(crate) worker: AtomicU32,
}

impl CpuHints {
    /// How long a spinner on `me` (a [`crate::sync::raw::cpu_hint`]) waiting for a process last
    /// seen on `other` spins before it yields between polls.
    pub(crate) fn polite_after(me: u32, other: &AtomicU32) -> Duration {
        if me != 0 && other.load(Ordering::Relaxed) == me {
            Duration::ZERO
        } else {
            crate::sync::POLITE_AFTER
        }
    }
}

/// [`RingHeader::spin_beat`], alone on its cache line.
#[repr(C, align(64))]
pub(crate) struct SpinBeat(pub(crate) AtomicU64);

/// A spinner whose last poll is older than this (µs) is not running: a caller whose chunk it
/// has not taken takes its token over. A live one polls every fraction of a µs, and yields the
/// core only between polls; a false alarm (a spinner descheduled for this long) costs one
/// wake-up of the sleepers.
pub(crate) const SPINNER_STALE_US: u64 = 200;

const SLOT_FIXED: usize = std::mem::size_of::<SlotHeader>() + std::mem::size_of::<Descriptor>() + MESSAGE_CAP;
const HEADER_LEN: usize = std::mem::size_of::<RingHeader>().next_multiple_of(64);

/// A process-local view of a ring segment.
#[derive(Clone)]
pub(crate) struct Ring {
    seg: Arc<Segment>,
    /// The MAC and stamp key: private memory of the pool's processes (see `crate::key`).
    key: Key,
    slots: u32,
    payload_cap: usize,
    stride: usize,
}

/// A chunk a worker has claimed: its slot, the attempt and generation it claimed, and a copy
/// of its (verified) descriptor. Neither `Copy` nor `Clone`: one claim, one [`ChunkIo`].
#[derive(Debug)]
pub(crate) struct Claim {
    slot: u32,
    #[cfg_attr(not(test), allow(dead_code))]
    attempt: u32,
    generation: u64,
    desc: Descriptor,
}

impl Claim {
    /// Slot index.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// How many claimers died on this chunk before this one.
    #[cfg(test)]
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The verified descriptor.
    pub(crate) fn desc(&self) -> &Descriptor {
        &self.desc
    }
}

/// The byte ranges a claimed chunk reads and writes.
pub(crate) struct ChunkIo<'a> {
    /// The parameter block.
    pub params: &'a [u8],
    /// The input elements.
    pub input: &'a [u8],
    /// The output elements.
    pub output: &'a mut [u8],
}

impl Ring {
    /// Creates a ring segment with `slots` slots of `payload_cap` inline bytes each.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for zero or too many slots, or an absurd payload; segment
    /// creation errors.
    pub(crate) fn create(slots: u32, payload_cap: usize) -> Result<Ring> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(Error::InvalidOption { option: "slots", value: slots.into(), allowed: "1..=4096" });
        }
        if payload_cap > MAX_PAYLOAD {
            return Err(Error::InvalidOption {
                option: "payload_bytes",
                value: payload_cap as u64,
                allowed: "at most 1 GiB",
            });
        }
        let payload_cap = payload_cap.next_multiple_of(64);
        let stride = SLOT_FIXED + payload_cap;
        let total = stride
            .checked_mul(slots as usize)
            .and_then(|b| b.checked_add(HEADER_LEN))
            .ok_or(Error::TooLarge { count: slots.into(), elem_size: stride as u64 })?;
        let seg = Segment::create(SegmentKind::Ring, total, stride as u32, slots)?;
        let hdr = seg.data_ptr(0, HEADER_LEN)?.as_ptr().cast::<RingHeader>();
        // SAFETY: the segment is fresh (zeroed by fallocate), private to this process until
        // workers are forked, and large enough for the header; `addr_of_mut!` makes no reference.
        unsafe { ShmMutex::init(std::ptr::addr_of_mut!((*hdr).lock))? };
        // SAFETY: as above; plain integer fields of a header nobody else sees yet.
        unsafe {
            std::ptr::addr_of_mut!((*hdr).slots).write(slots);
            std::ptr::addr_of_mut!((*hdr).payload_cap).write(payload_cap as u32);
            std::ptr::addr_of_mut!((*hdr).stride).write(stride as u32);
        }
        Ring::attach(Arc::new(seg), Key::random())
    }

    /// A view of an existing ring segment, after validating its header and geometry.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleSegment`] when the segment is not a ring of this layout.
    pub(crate) fn attach(seg: Arc<Segment>, key: Key) -> Result<Ring> {
        seg.validate(SegmentKind::Ring)?;
        let h = seg.header();
        let (stride, slots) = (h.elem_size as usize, h.elem_tag);
        let needed = stride.checked_mul(slots as usize).and_then(|b| b.checked_add(HEADER_LEN));
        let bad = |what: &str, found: String, expected: String| Error::IncompatibleSegment {
            found: format!("{what} {found}"),
            expected: format!("{what} {expected}"),
        };
        if stride < SLOT_FIXED || stride % 64 != 0 || slots > MAX_SLOTS || needed.is_none_or(|n| n > seg.data_len()) {
            return Err(bad("ring geometry", format!("{slots}x{stride}"), format!("fits {}", seg.data_len())));
        }
        let ring = Ring { seg, key, slots, payload_cap: stride - SLOT_FIXED, stride };
        let h = ring.header();
        if h.slots != slots || h.stride as usize != stride {
            return Err(bad("ring header", format!("{}x{}", h.slots, h.stride), format!("{slots}x{stride}")));
        }
        Ok(ring)
    }

    /// The ring header.
    pub(crate) fn header(&self) -> &RingHeader {
        let p = self.seg.data_ptr(0, HEADER_LEN).expect("ring header inside segment (checked at attach)");
        // SAFETY: in bounds and 64-aligned (page-aligned data area); RingHeader consists of
        // atomics, the pthread mutex (only used through pthread calls) and integers that are
        // written once before workers exist.
        unsafe { &*p.as_ptr().cast::<RingHeader>() }
    }

    /// The MAC and stamp key (sent to workers that do not inherit it).
    pub(crate) fn key(&self) -> Key {
        self.key
    }

    /// The segment behind the ring.
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Number of slots.
    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    /// Inline payload bytes per slot.
    pub(crate) fn payload_cap(&self) -> usize {
        self.payload_cap
    }

    /// Offsets of the slots from the start of the mapping (tests that scribble on the ring).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn slot_offsets_for_test(&self) -> Vec<usize> {
        (0..self.slots).map(|s| crate::shm::DATA_OFFSET + self.slot_offset(s)).collect()
    }

    fn slot_offset(&self, slot: u32) -> usize {
        debug_assert!(slot < self.slots);
        HEADER_LEN + slot as usize * self.stride
    }

    fn slot_header(&self, slot: u32) -> &SlotHeader {
        let p = self
            .seg
            .data_ptr(self.slot_offset(slot), std::mem::size_of::<SlotHeader>())
            .expect("slot inside segment (geometry checked at attach)");
        // SAFETY: in bounds, 64-aligned (stride and header length are multiples of 64);
        // SlotHeader is all atomics.
        unsafe { &*p.as_ptr().cast::<SlotHeader>() }
    }

    fn desc_ptr(&self, slot: u32) -> *mut Descriptor {
        let off = self.slot_offset(slot) + std::mem::size_of::<SlotHeader>();
        self.seg.data_ptr(off, std::mem::size_of::<Descriptor>()).expect("descriptor inside segment").as_ptr().cast()
    }

    fn message_ptr(&self, slot: u32) -> *mut u8 {
        let off = self.slot_offset(slot) + std::mem::size_of::<SlotHeader>() + std::mem::size_of::<Descriptor>();
        self.seg.data_ptr(off, MESSAGE_CAP).expect("message inside segment").as_ptr()
    }

    fn payload_offset(&self, slot: u32) -> usize {
        self.slot_offset(slot) + SLOT_FIXED
    }

    fn mac(&self, slot: u32, d: &Descriptor) -> u64 {
        let mut copy = *d;
        copy.mac = 0;
        self.key.hash_one((slot, bytemuck::bytes_of(&copy)))
    }

    /// The completion stamp of a DONE slot: `outcome` is (status, signal, attempt).
    fn stamp(&self, slot: u32, generation: u64, map_id: u64, outcome: (u32, u32, u32), mac: u64) -> u64 {
        self.key.hash_one((STAMP_DOMAIN, slot, generation, map_id, outcome, mac))
    }

    /// Takes the ring mutex. After an owner death the table needs no roll-back (states are
    /// written last), so the guard is marked repaired at once and the death counted; the dead
    /// pid's CLAIMED slots are the supervisor's to requeue.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`] after [`LOCK_TIMEOUT`]; [`Error::Os`] for a broken mutex.
    pub(crate) fn lock(&self) -> Result<RingGuard<'_>> {
        let mut guard = self.header().lock.lock_timeout(LOCK_TIMEOUT)?;
        if guard.owner_died().is_some() {
            self.header().owner_deaths.fetch_add(1, Ordering::Relaxed);
            guard.mark_repaired();
        }
        Ok(RingGuard { ring: self, _guard: guard })
    }

    /// Records that a worker found the slot table corrupted, and wakes the map callers.
    pub(crate) fn report_corruption(&self, what: Corruption) {
        self.header().corrupt.store(what as u32, Ordering::SeqCst);
        self.header().done.ring();
    }

    /// What a worker reported, if anything (an unknown code is corruption too).
    pub(crate) fn corruption_reported(&self) -> Option<&'static str> {
        match self.header().corrupt.load(Ordering::SeqCst) {
            0 => None,
            c => Some(match Corruption::try_from(c) {
                Ok(Corruption::ClaimOverwritten) => "a worker's claim was overwritten while its kernel ran",
                Ok(Corruption::BadDescriptor) => "a worker found a descriptor that fails its integrity check",
                Err(_) => "the ring's corruption word holds an unknown code",
            }),
        }
    }

    /// Takes the spinner token from a holder that has not polled within `stale_us` of `now_us`,
    /// so that another idle worker may spin and callers wake sleepers instead of bumping for
    /// it. Returns the pid it was taken from. The caller must ring `work` afterwards: a chunk
    /// bumped for the stale holder may be waiting.
    pub(crate) fn take_over_stale_spinner(&self, now_us: u64, stale_us: u64) -> Option<u32> {
        let h = self.header();
        let pid = h.spinner.load(Ordering::SeqCst);
        if pid == 0 || now_us.saturating_sub(h.spin_beat.0.load(Ordering::Relaxed)) <= stale_us {
            return None;
        }
        h.spinner.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::Relaxed).ok()
    }

    /// Tells workers to exit and wakes them.
    pub(crate) fn request_shutdown(&self) {
        self.header().shutdown.store(1, Ordering::SeqCst);
        self.header().work.ring();
    }

    /// Whether workers must exit.
    pub(crate) fn shutdown_requested(&self) -> bool {
        self.header().shutdown.load(Ordering::SeqCst) != 0
    }

    /// Resolves a claimed chunk's descriptor into byte slices, checking every range
    /// ([`layout::io_ranges`] for the arithmetic, [`Segment::data`] for segment bounds).
    ///
    /// `resolve` maps a segment id to the claimer's mapping of it. The claim is borrowed
    /// exclusively for as long as the slices live, so one claim never yields two `&mut` to
    /// the same output. A [`Claim`] exists only as returned by [`RingGuard::claim`] (its fields
    /// are private), and it stays current until it is published: the supervisor requeues or
    /// times out a slot only after its claimer has been killed and reaped.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptSlot`] when a size, range or overlap check fails; whatever `resolve`
    /// returns for an unknown segment.
    pub(crate) fn chunk_io<'a>(
        &'a self,
        claim: &'a mut Claim,
        mut resolve: impl FnMut(u64) -> Result<&'a Segment>,
    ) -> Result<ChunkIo<'a>> {
        let corrupt = |reason: String| Error::CorruptSlot { slot: claim.slot, reason };
        let r = io_ranges(&claim.desc, self.payload_cap).map_err(corrupt)?;
        let base = self.payload_offset(claim.slot);
        let bounds = |e: Error| match e {
            Error::OutOfBounds { .. } | Error::ReadOnly => corrupt(e.to_string()),
            other => other,
        };
        // SAFETY (all three slices): the slot is CLAIMED by this process (a live `Claim`, see
        // above), so nobody else touches its payload until it publishes; the inline ranges lie inside
        // the payload (io_ranges) and segment ranges inside their segment (Segment::data
        // checks); the output overlaps no input (io_ranges). The pool never gives two chunks
        // overlapping output ranges and nobody writes an input during a map (the map caller
        // borrows it); the descriptor's MAC (verified at claim) says the pool wrote these ranges.
        let params = match r.params.place {
            // SAFETY: see above.
            Place::Inline => unsafe { self.seg.data(base + r.params.offset, r.params.len)? },
            // SAFETY: see above.
            Place::Segment(id) => unsafe { resolve(id)?.data(r.params.offset, r.params.len).map_err(bounds)? },
        };
        let input = match r.input.place {
            // SAFETY: see above.
            Place::Inline => unsafe { self.seg.data(base + r.input.offset, r.input.len)? },
            // SAFETY: see above.
            Place::Segment(id) => unsafe { resolve(id)?.data(r.input.offset, r.input.len).map_err(bounds)? },
        };
        let output = match r.output.place {
            // SAFETY: see above.
            Place::Inline => unsafe { self.seg.data_mut(base + r.output.offset, r.output.len)? },
            // SAFETY: see above.
            Place::Segment(id) => unsafe { resolve(id)?.data_mut(r.output.offset, r.output.len).map_err(bounds)? },
        };
        Ok(ChunkIo { params, input, output })
    }
}

u32_enum! {
/// What a worker found corrupted (stored in `RingHeader::corrupt`).
pub(crate) enum Corruption {
    /// Its publish was refused although it is alive: the slot header changed under it.
    ClaimOverwritten = 1,
    /// A FILLED slot's descriptor failed its MAC.
    BadDescriptor = 2,
}
}

/// Domain separator of completion stamps (so a stamp can never equal a descriptor MAC).
const STAMP_DOMAIN: u64 = 0x0053_5441_4d50;
/// Most slots a ring may have.
const MAX_SLOTS: u32 = 4096;
/// Largest inline payload per slot.
const MAX_PAYLOAD: usize = 1 << 30;

#[cfg(test)]
mod test;
