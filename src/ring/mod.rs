//! The slot table: the only code that changes a slot's state.
//!
//! A ring is one [`SegmentKind::Ring`] segment: a [`RingHeader`] (the robust mutex, two
//! doorbells, flags) followed by `slots` slots of `stride` bytes, each a [`SlotHeader`], a
//! [`Descriptor`], a message area and an inline payload area. See `README.md` beside this file
//! for the state machine and its orderings. Descriptors are bounds-checked against the segments
//! they name before any byte of them is touched, so a corrupted slot is an error, never an
//! out-of-bounds access. This module never runs a kernel and never forks.

pub(crate) mod index;
pub(crate) mod layout;
pub(crate) mod slot;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::shm::{Segment, SegmentKind};
use crate::sync::{now_us, Doorbell, ShmMutex, ShmMutexGuard};
pub(crate) use slot::{Descriptor, SlotHeader, SlotState, Status, MESSAGE_CAP};

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
}

const SLOT_FIXED: usize = std::mem::size_of::<SlotHeader>() + std::mem::size_of::<Descriptor>() + MESSAGE_CAP;
const HEADER_LEN: usize = std::mem::size_of::<RingHeader>().next_multiple_of(64);

/// A process-local view of a ring segment.
#[derive(Clone)]
pub(crate) struct Ring {
    seg: Arc<Segment>,
    key: RandomState,
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

/// What the map caller sees of a slot it filled, read under the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// Waiting for a worker (FILLED).
    Waiting,
    /// A worker runs it (CLAIMED): the pid the slot names.
    Running(u32),
    /// Finished; ready for [`RingGuard::take`].
    Done,
    /// A state the caller never leaves its own slot in (FREE), or no state at all.
    Corrupt(u32),
}

/// A finished chunk taken by the map caller.
#[derive(Debug)]
pub(crate) struct Taken {
    /// How it ended.
    pub status: Status,
    /// Last signal (CRASHED).
    pub signal: u32,
    /// Attempts made.
    pub attempt: u32,
    /// Panic or corruption message.
    pub message: String,
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
        Ring::attach(Arc::new(seg), RandomState::new())
    }

    /// A view of an existing ring segment, after validating its header and geometry.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleSegment`] when the segment is not a ring of this layout.
    pub(crate) fn attach(seg: Arc<Segment>, key: RandomState) -> Result<Ring> {
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

    /// Records that a live worker found its claim refused (corruption) and wakes the caller.
    pub(crate) fn report_corruption(&self) {
        self.header().corrupt.store(1, Ordering::SeqCst);
        self.header().done.ring();
    }

    /// Whether a worker reported corruption.
    pub(crate) fn corruption_reported(&self) -> bool {
        self.header().corrupt.load(Ordering::SeqCst) != 0
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

/// Domain separator of completion stamps (so a stamp can never equal a descriptor MAC).
const STAMP_DOMAIN: u64 = 0x0053_5441_4d50;
/// Most slots a ring may have.
const MAX_SLOTS: u32 = 4096;
/// Largest inline payload per slot.
const MAX_PAYLOAD: usize = 1 << 30;

/// Proof that this thread holds the ring mutex; all slot transitions are its methods.
pub(crate) struct RingGuard<'a> {
    ring: &'a Ring,
    _guard: ShmMutexGuard<'a>,
}

impl RingGuard<'_> {
    fn state(&self, slot: u32) -> Option<SlotState> {
        SlotState::try_from(self.ring.slot_header(slot).state.load(Ordering::Relaxed)).ok()
    }

    fn set_state(&self, slot: u32, s: SlotState) {
        let was_done = self.state(slot) == Some(SlotState::Done);
        let pending = &self.ring.header().done_pending;
        match (was_done, s == SlotState::Done) {
            (false, true) => {
                pending.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                // Saturating: a corrupted counter must not wrap into "everything is pending".
                let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
            }
            _ => {}
        }
        self.ring.slot_header(slot).state.store(s as u32, Ordering::Relaxed);
    }

    /// Sets how many DONE slots the map caller wants before a worker's publish wakes it.
    pub(crate) fn set_wanted(&mut self, n: u32) {
        self.ring.header().done_wanted.store(n.max(1), Ordering::Relaxed);
    }

    /// Whether enough DONE slots are pending to wake the map caller.
    pub(crate) fn caller_wanted(&self) -> bool {
        let h = self.ring.header();
        h.done_pending.load(Ordering::Relaxed) >= h.done_wanted.load(Ordering::Relaxed)
    }

    /// Fills a FREE slot with `desc` (its MAC is set here) and lets `payload` write the inline
    /// payload. Returns the slot and the sealed descriptor (the caller keeps it to check the
    /// result against), or `None` when every slot is busy.
    pub(crate) fn fill(&mut self, desc: &Descriptor, payload: impl FnOnce(&mut [u8])) -> Option<(u32, Descriptor)> {
        let slot = (0..self.ring.slots).find(|&s| self.state(s) == Some(SlotState::Free))?;
        let mut d = *desc;
        d.mac = self.ring.mac(slot, &d);
        // SAFETY: the slot is FREE and we hold the lock: only the map caller (us) may touch
        // a FREE slot's descriptor; the pointer is in bounds (desc_ptr checks).
        unsafe { self.ring.desc_ptr(slot).write(d) };
        let base = self.ring.payload_offset(slot);
        // SAFETY: a FREE slot's payload belongs to the map caller; in bounds by geometry.
        let buf = unsafe { self.ring.seg.data_mut(base, self.ring.payload_cap) }.expect("payload inside segment");
        payload(buf);
        let h = self.ring.slot_header(slot);
        h.attempt.store(0, Ordering::Relaxed);
        h.pid.store(0, Ordering::Relaxed);
        h.status.store(Status::Ok as u32, Ordering::Relaxed);
        h.signal.store(0, Ordering::Relaxed);
        h.message_len.store(0, Ordering::Relaxed);
        h.stamp.store(0, Ordering::Relaxed);
        h.map_id.store(d.map_id, Ordering::Relaxed);
        // PUBLISH: the descriptor and payload above, to the claimer, via the mutex release.
        self.set_state(slot, SlotState::Filled);
        Some((slot, d))
    }

    /// Claims the first FILLED slot for `pid`. A slot whose descriptor fails its MAC is moved
    /// to DONE with status CORRUPT and skipped.
    pub(crate) fn claim(&mut self, pid: u32) -> Option<Claim> {
        for slot in 0..self.ring.slots {
            if self.state(slot) != Some(SlotState::Filled) {
                continue;
            }
            // SAFETY: FILLED slots' descriptors are written only while FREE; we hold the lock,
            // and read_unaligned copies the bytes whatever they are (Descriptor is Pod).
            let desc = unsafe { self.ring.desc_ptr(slot).read_unaligned() };
            let h = self.ring.slot_header(slot);
            if self.ring.mac(slot, &desc) != desc.mac {
                self.finish(slot, Status::Corrupt, 0, "descriptor integrity check failed");
                continue;
            }
            let generation = h.generation.load(Ordering::Relaxed).wrapping_add(1);
            h.generation.store(generation, Ordering::Relaxed);
            h.pid.store(pid, Ordering::Relaxed);
            h.claimed_at_us.store(now_us(), Ordering::Relaxed);
            let attempt = h.attempt.load(Ordering::Relaxed);
            self.set_state(slot, SlotState::Claimed);
            return Some(Claim { slot, attempt, generation, desc });
        }
        None
    }

    /// Moves `slot` to DONE with `status`, its message, and the completion stamp.
    fn finish(&self, slot: u32, status: Status, signal: u32, message: &str) {
        let h = self.ring.slot_header(slot);
        let bytes = message.as_bytes();
        let n = bytes.len().min(MESSAGE_CAP);
        // SAFETY: we hold the lock and the slot is being moved to DONE by us; the message area
        // is in bounds (message_ptr checks) and only written under the lock.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring.message_ptr(slot), n) };
        // SAFETY: under the lock; read_unaligned copies whatever bytes are there (Pod).
        let mac = unsafe { self.ring.desc_ptr(slot).read_unaligned() }.mac;
        let (generation, map_id, attempt) =
            (h.generation.load(Ordering::Relaxed), h.map_id.load(Ordering::Relaxed), h.attempt.load(Ordering::Relaxed));
        h.message_len.store(n as u32, Ordering::Relaxed);
        h.status.store(status as u32, Ordering::Relaxed);
        h.signal.store(signal, Ordering::Relaxed);
        let stamp = self.ring.stamp(slot, generation, map_id, (status as u32, signal, attempt), mac);
        h.stamp.store(stamp, Ordering::Relaxed);
        self.set_state(slot, SlotState::Done);
    }

    /// Publishes a claimed chunk as DONE. Returns `false` (and changes nothing) when the claim
    /// is stale: the slot was requeued or timed out since.
    pub(crate) fn publish(&mut self, claim: &Claim, pid: u32, status: Status, message: &str) -> bool {
        let h = self.ring.slot_header(claim.slot);
        let current = self.state(claim.slot) == Some(SlotState::Claimed)
            && h.pid.load(Ordering::Relaxed) == pid
            && h.generation.load(Ordering::Relaxed) == claim.generation;
        if current {
            self.finish(claim.slot, status, 0, message);
        }
        current
    }

    /// The state of a slot the map caller filled, as far as the caller may act on it.
    pub(crate) fn observe(&self, slot: u32) -> Observed {
        let raw = self.ring.slot_header(slot).state.load(Ordering::Relaxed);
        match SlotState::try_from(raw) {
            Ok(SlotState::Filled) => Observed::Waiting,
            Ok(SlotState::Claimed) => Observed::Running(self.ring.slot_header(slot).pid.load(Ordering::Relaxed)),
            Ok(SlotState::Done) => Observed::Done,
            Ok(SlotState::Free) | Err(_) => Observed::Corrupt(raw),
        }
    }

    /// Takes the result of a DONE slot that the caller filled with `sealed`: checks that the
    /// slot still holds exactly that descriptor, that its status is known and its completion
    /// stamp genuine, lets `copy_out` read the inline payload, then clears the descriptor and
    /// frees the slot.
    ///
    /// # Errors
    ///
    /// A sentence saying which check failed; the slot is left as it is (the map fails and the
    /// pool kills its workers).
    pub(crate) fn take(
        &mut self,
        slot: u32,
        sealed: &Descriptor,
        copy_out: impl FnOnce(&[u8]),
    ) -> std::result::Result<Taken, String> {
        if self.state(slot) != Some(SlotState::Done) {
            return Err(format!("slot {slot} is not DONE"));
        }
        let h = self.ring.slot_header(slot);
        // SAFETY: DONE slots are owned by the map caller (us, under the lock); read_unaligned
        // copies whatever bytes are there (Descriptor is Pod).
        let desc = unsafe { self.ring.desc_ptr(slot).read_unaligned() };
        if desc != *sealed {
            return Err(format!("slot {slot} holds another descriptor than the one its map wrote"));
        }
        let (raw_status, signal, attempt) =
            (h.status.load(Ordering::Relaxed), h.signal.load(Ordering::Relaxed), h.attempt.load(Ordering::Relaxed));
        let status = Status::try_from(raw_status).map_err(|v| format!("slot {slot} has unknown status {v}"))?;
        let expected = self.ring.stamp(
            slot,
            h.generation.load(Ordering::Relaxed),
            h.map_id.load(Ordering::Relaxed),
            (raw_status, signal, attempt),
            desc.mac,
        );
        if h.map_id.load(Ordering::Relaxed) != sealed.map_id || h.stamp.load(Ordering::Relaxed) != expected {
            return Err(format!("slot {slot} was marked DONE without a valid completion stamp"));
        }
        let len = (h.message_len.load(Ordering::Relaxed) as usize).min(MESSAGE_CAP);
        // SAFETY: as above; in bounds (MESSAGE_CAP).
        let msg = unsafe { std::slice::from_raw_parts(self.ring.message_ptr(slot), len) };
        let message = String::from_utf8_lossy(msg).into_owned();
        if status == Status::Ok {
            let base = self.ring.payload_offset(slot);
            // SAFETY: as above: the payload of a DONE slot is the caller's until it frees it.
            let payload = unsafe { self.ring.seg.data(base, self.ring.payload_cap) }.expect("payload inside segment");
            copy_out(payload);
        }
        self.release(slot);
        Ok(Taken { status, signal, attempt, message })
    }

    /// Clears a slot's descriptor and frees it, so that nothing can later be read back from it
    /// as a chunk of this map.
    fn release(&mut self, slot: u32) {
        // SAFETY: the caller owns the slot (DONE taken, or FILLED cancelled) under the lock.
        unsafe { self.ring.desc_ptr(slot).write_unaligned(Descriptor::default()) };
        self.ring.slot_header(slot).map_id.store(0, Ordering::Relaxed);
        self.set_state(slot, SlotState::Free);
    }

    /// Withdraws a FILLED slot (a failed map stops early). Returns `false` when a worker holds
    /// it or it finished meanwhile.
    pub(crate) fn withdraw(&mut self, slot: u32) -> bool {
        let filled = self.state(slot) == Some(SlotState::Filled);
        if filled {
            self.release(slot);
        }
        filled
    }

    /// A slot outside `mine` that claims to be a DONE chunk of `map_id`: a stray write made an
    /// old or foreign slot look like one of ours.
    pub(crate) fn foreign_done(&self, map_id: u64, mine: impl Fn(u32) -> bool) -> Option<u32> {
        (0..self.ring.slots).find(|&s| {
            !mine(s)
                && self.state(s) == Some(SlotState::Done)
                && self.ring.slot_header(s).map_id.load(Ordering::Relaxed) == map_id
        })
    }

    /// Handles the death of worker `pid` (killed by `signal`): each of its CLAIMED slots goes
    /// back to FILLED with `attempt + 1`, or to DONE/CRASHED once `max_attempts` claimers died
    /// on it.
    pub(crate) fn requeue_dead(&mut self, pid: u32, signal: u32, max_attempts: u32) -> Requeued {
        let mut r = Requeued::default();
        for slot in 0..self.ring.slots {
            let h = self.ring.slot_header(slot);
            if self.state(slot) != Some(SlotState::Claimed) || h.pid.load(Ordering::Relaxed) != pid {
                continue;
            }
            let attempt = h.attempt.load(Ordering::Relaxed).saturating_add(1);
            h.attempt.store(attempt, Ordering::Relaxed);
            if attempt >= max_attempts {
                self.finish(slot, Status::Crashed, signal, "");
                r.failed += 1;
            } else {
                h.pid.store(0, Ordering::Relaxed);
                self.set_state(slot, SlotState::Filled);
                r.requeued += 1;
            }
        }
        r
    }

    /// CLAIMED slots whose chunk started more than `limit_us` before `now_us`, with their pid.
    pub(crate) fn overdue(&self, now_us: u64, limit_us: u64) -> Vec<(u32, u32)> {
        (0..self.ring.slots)
            .filter(|&s| self.state(s) == Some(SlotState::Claimed))
            .filter(|&s| {
                now_us.saturating_sub(self.ring.slot_header(s).claimed_at_us.load(Ordering::Relaxed)) > limit_us
            })
            .map(|s| (s, self.ring.slot_header(s).pid.load(Ordering::Relaxed)))
            .collect()
    }

    /// Moves every CLAIMED slot of `pid` to DONE/TIMED_OUT; called once the worker that ran
    /// past the chunk timeout has been killed *and reaped*, so it can no longer write.
    pub(crate) fn time_out_pid(&mut self, pid: u32) -> usize {
        let mut n = 0;
        for slot in 0..self.ring.slots {
            let h = self.ring.slot_header(slot);
            if self.state(slot) == Some(SlotState::Claimed) && h.pid.load(Ordering::Relaxed) == pid {
                self.finish(slot, Status::TimedOut, libc::SIGKILL as u32, "");
                n += 1;
            }
        }
        n
    }

    /// Counts slots per state (FREE, FILLED, CLAIMED, DONE).
    #[cfg(test)]
    pub(crate) fn census(&self) -> [usize; 4] {
        let mut c = [0; 4];
        for s in 0..self.ring.slots {
            if let Some(st) = self.state(s) {
                c[st as usize] += 1;
            }
        }
        c
    }

    /// Overwrites a slot's stored descriptor without re-sealing it (tests of corruption).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn corrupt_descriptor_for_test(&mut self, slot: u32, f: impl FnOnce(&mut Descriptor)) {
        // SAFETY: we hold the lock; read/modify/write of a Pod value in bounds.
        unsafe {
            let p = self.ring.desc_ptr(slot);
            let mut d = p.read_unaligned();
            f(&mut d);
            p.write_unaligned(d);
        }
    }

    /// Flips a bit of the length of every FILLED slot's descriptor (tests of corruption).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn corrupt_filled_for_test(&mut self) -> usize {
        let filled: Vec<u32> = (0..self.ring.slots).filter(|&s| self.state(s) == Some(SlotState::Filled)).collect();
        for &s in &filled {
            self.corrupt_descriptor_for_test(s, |d| d.len ^= 1 << 40);
        }
        filled.len()
    }

    /// Re-seals a descriptor after changing it (tests of bounds checks behind a valid MAC).
    #[cfg(test)]
    pub(crate) fn rewrite_descriptor_for_test(&mut self, slot: u32, f: impl FnOnce(&mut Descriptor)) {
        self.corrupt_descriptor_for_test(slot, f);
        // SAFETY: as above.
        unsafe {
            let p = self.ring.desc_ptr(slot);
            let mut d = p.read_unaligned();
            d.mac = self.ring.mac(slot, &d);
            p.write_unaligned(d);
        }
    }
}

/// What [`RingGuard::requeue_dead`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Requeued {
    /// Chunks back to FILLED for another attempt.
    pub requeued: usize,
    /// Chunks that used up their attempts (DONE/CRASHED).
    pub failed: usize,
}

#[cfg(test)]
mod test;
