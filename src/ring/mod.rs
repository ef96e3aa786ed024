//! The slot table: the only code that changes a slot's state.
//!
//! A ring is one [`SegmentKind::Ring`] segment: a [`RingHeader`] (the robust mutex, two
//! doorbells, flags) followed by `slots` slots of `stride` bytes, each a [`SlotHeader`], a
//! [`Descriptor`], a message area and an inline payload area. See `README.md` beside this file
//! for the state machine and its orderings. Descriptors are bounds-checked against the segments
//! they name before any byte of them is touched, so a corrupted slot is an error, never an
//! out-of-bounds access. This module never runs a kernel and never forks.

pub mod index;
pub mod slot;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::shm::{Segment, SegmentKind};
use crate::sync::{Doorbell, ShmMutex, ShmMutexGuard};
pub use slot::{Descriptor, SlotHeader, SlotState, Status, MESSAGE_CAP};

/// How long any pool process waits for the ring mutex before reporting
/// [`Error::LockTimeout`]. The lock is only ever held for a few slot-state changes, and a
/// holder that dies releases it through `EOWNERDEAD`, so reaching this means a holder is
/// stopped (SIGSTOP, debugger), not dead.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring's own header, at the start of the data area.
#[repr(C, align(64))]
pub struct RingHeader {
    /// Guards every slot's state change.
    pub lock: ShmMutex,
    /// Workers wait here for FILLED slots, mail and shutdown.
    pub work: Doorbell,
    /// The map caller waits here for DONE slots.
    pub done: Doorbell,
    /// Set (SeqCst) by the pool when workers must exit; read by workers before each claim.
    pub shutdown: AtomicU32,
    /// Bumped by the supervisor when it put a message in worker sockets.
    pub mail: AtomicU32,
    /// Pid of the one worker allowed to spin while idle (0: none), so that idle workers never
    /// outnumber the cores with busy-waiting.
    pub spinner: AtomicU32,
    /// How many times a lock holder died inside the lock (diagnostics).
    pub owner_deaths: AtomicU32,
    /// Number of slots (copied from the creator's config; checked against the header).
    pub slots: u32,
    /// Inline payload bytes per slot.
    pub payload_cap: u32,
    /// Bytes per slot.
    pub stride: u32,
    _pad: u32,
    /// DONE slots not yet collected. Changed only under the lock, by `set_state`.
    pub done_pending: AtomicU32,
    /// How many DONE slots the map caller wants before it is woken (set under the lock before
    /// it sleeps). Batching wake-ups keeps the caller from preempting workers once per chunk.
    pub done_wanted: AtomicU32,
}

const SLOT_FIXED: usize = std::mem::size_of::<SlotHeader>() + std::mem::size_of::<Descriptor>() + MESSAGE_CAP;
const HEADER_LEN: usize = std::mem::size_of::<RingHeader>().next_multiple_of(64);

/// Monotonic microseconds, the same clock in every process.
pub fn now_us() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000
}

/// A process-local view of a ring segment.
#[derive(Clone)]
pub struct Ring {
    seg: Arc<Segment>,
    key: RandomState,
    slots: u32,
    payload_cap: usize,
    stride: usize,
}

/// A chunk a worker has claimed: its slot, the attempt and generation it claimed, and a copy
/// of its (verified) descriptor.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// Slot index.
    pub slot: u32,
    /// Attempt number at claim time.
    pub attempt: u32,
    /// Generation at claim time.
    pub generation: u64,
    /// The descriptor.
    pub desc: Descriptor,
}

/// The byte ranges a claimed chunk reads and writes.
pub struct ChunkIo<'a> {
    /// The parameter block.
    pub params: &'a [u8],
    /// The input elements.
    pub input: &'a [u8],
    /// The output elements.
    pub output: &'a mut [u8],
}

/// A DONE slot handed to the map caller by [`RingGuard::collect`].
pub struct Done<'a> {
    /// Slot index.
    pub slot: u32,
    /// The descriptor the slot was filled with.
    pub desc: Descriptor,
    /// How it ended.
    pub status: Status,
    /// Last signal (CRASHED).
    pub signal: u32,
    /// Attempts made.
    pub attempt: u32,
    /// Panic or corruption message.
    pub message: String,
    /// The inline payload (outputs of inline chunks live here).
    pub payload: &'a [u8],
}

impl Ring {
    /// Creates a ring segment with `slots` slots of `payload_cap` inline bytes each.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for zero slots or absurd sizes; segment creation errors.
    pub fn create(slots: u32, payload_cap: usize) -> Result<Ring> {
        if slots == 0 || slots > 4096 {
            return Err(Error::InvalidConfig(format!("slots must be 1..=4096, got {slots}")));
        }
        if payload_cap > (1 << 30) {
            return Err(Error::InvalidConfig(format!("payload of {payload_cap} bytes per slot is too large")));
        }
        let payload_cap = payload_cap.next_multiple_of(64);
        let stride = SLOT_FIXED + payload_cap;
        let total = HEADER_LEN + stride * slots as usize;
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
    pub fn attach(seg: Arc<Segment>, key: RandomState) -> Result<Ring> {
        seg.validate(SegmentKind::Ring)?;
        let h = seg.header();
        let (stride, slots) = (h.elem_size as usize, h.elem_tag);
        let needed = HEADER_LEN + stride * slots as usize;
        let bad = |what: &str, found: String, expected: String| Error::IncompatibleSegment {
            found: format!("{what} {found}"),
            expected: format!("{what} {expected}"),
        };
        if stride < SLOT_FIXED || stride % 64 != 0 || needed > seg.data_len() {
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
    pub fn header(&self) -> &RingHeader {
        let p = self.seg.data_ptr(0, HEADER_LEN).expect("ring header inside segment (checked at attach)");
        // SAFETY: in bounds and 64-aligned (page-aligned data area); RingHeader consists of
        // atomics, the pthread mutex (only used through pthread calls) and integers that are
        // written once before workers exist.
        unsafe { &*p.as_ptr().cast::<RingHeader>() }
    }

    /// The segment behind the ring.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Inline payload bytes per slot.
    pub fn payload_cap(&self) -> usize {
        self.payload_cap
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

    /// Takes the ring mutex. After an owner death the table needs no roll-back (states are
    /// written last), so the guard is marked repaired at once and the death counted; the dead
    /// pid's CLAIMED slots are the supervisor's to requeue.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`] after [`LOCK_TIMEOUT`]; [`Error::Os`] for a broken mutex.
    pub fn lock(&self) -> Result<RingGuard<'_>> {
        let mut guard = self.header().lock.lock_timeout(LOCK_TIMEOUT)?;
        if guard.owner_died().is_some() {
            self.header().owner_deaths.fetch_add(1, Ordering::Relaxed);
            guard.mark_repaired();
        }
        Ok(RingGuard { ring: self, _guard: guard })
    }

    /// Tells workers to exit and wakes them.
    pub fn request_shutdown(&self) {
        self.header().shutdown.store(1, Ordering::SeqCst);
        self.header().work.ring();
    }

    /// Whether workers must exit.
    pub fn shutdown_requested(&self) -> bool {
        self.header().shutdown.load(Ordering::SeqCst) != 0
    }

    /// Resolves a claimed chunk's descriptor into byte slices, checking every range.
    ///
    /// `resolve` maps a segment id to the claimer's mapping of it.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptSlot`] when a size, range or overlap check fails; whatever `resolve`
    /// returns for an unknown segment.
    pub fn chunk_io<'a>(
        &'a self,
        claim: &Claim,
        mut resolve: impl FnMut(u64) -> Result<&'a Segment>,
    ) -> Result<ChunkIo<'a>> {
        let d = &claim.desc;
        let corrupt = |reason: String| Error::CorruptSlot { slot: claim.slot, reason };
        if d.in_size == 0 || d.out_size == 0 {
            return Err(corrupt("zero element size".into()));
        }
        let bytes = |n: u32| {
            d.len
                .checked_mul(n as u64)
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| corrupt(format!("length {} overflows", d.len)))
        };
        let (in_bytes, out_bytes) = (bytes(d.in_size)?, bytes(d.out_size)?);
        let params_len = usize::try_from(d.params_len).map_err(|_| corrupt("parameter length".into()))?;
        let in_off = usize::try_from(d.in_off).map_err(|_| corrupt("input offset".into()))?;
        let out_off = usize::try_from(d.out_off).map_err(|_| corrupt("output offset".into()))?;
        let cap = self.payload_cap;
        let within = |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= cap);
        if !within(0, params_len) {
            return Err(corrupt(format!("parameter block of {params_len} bytes exceeds payload of {cap}")));
        }
        let overlaps = |a: usize, al: usize, b: usize, bl: usize| al > 0 && bl > 0 && a < b + bl && b < a + al;
        // The output is written through `&mut`: it must not overlap anything read.
        if d.out_seg == 0 {
            if !within(out_off, out_bytes) {
                return Err(corrupt(format!("inline output {out_off}+{out_bytes} exceeds payload of {cap}")));
            }
            if overlaps(out_off, out_bytes, 0, params_len) {
                return Err(corrupt("inline output overlaps the parameter block".into()));
            }
            if d.in_seg == 0 && overlaps(out_off, out_bytes, in_off, in_bytes) {
                return Err(corrupt("inline output overlaps the input".into()));
            }
        } else if d.in_seg == d.out_seg && overlaps(out_off, out_bytes, in_off, in_bytes) {
            return Err(corrupt("output range overlaps the input range".into()));
        }
        if d.in_seg == 0 && !within(in_off, in_bytes) {
            return Err(corrupt(format!("inline input {in_off}+{in_bytes} exceeds payload of {cap}")));
        }
        let base = self.payload_offset(claim.slot);
        // SAFETY: (this and the slices below) the slot is CLAIMED by this process, so nobody else touches
        // its payload until it publishes; the payload ranges were checked above to lie inside
        // the slot's payload and the output not to overlap any input. Segment ranges are checked
        // by `Segment::data*`; the pool never gives two chunks overlapping output ranges and
        // nobody writes an input during a map (the map caller borrows it), and the descriptor's
        // MAC (verified at claim) proves the pool wrote these ranges.
        let params = unsafe { self.seg.data(base, params_len)? };
        let input = if d.in_seg == 0 {
            // SAFETY: see above.
            unsafe { self.seg.data(base + in_off, in_bytes)? }
        } else {
            let seg = resolve(d.in_seg)?;
            // SAFETY: see above.
            unsafe { seg.data(in_off, in_bytes).map_err(|e| relabel(e, claim.slot))? }
        };
        let output = if d.out_seg == 0 {
            // SAFETY: see above.
            unsafe { self.seg.data_mut(base + out_off, out_bytes)? }
        } else {
            let seg = resolve(d.out_seg)?;
            // SAFETY: see above.
            unsafe { seg.data_mut(out_off, out_bytes).map_err(|e| relabel(e, claim.slot))? }
        };
        Ok(ChunkIo { params, input, output })
    }
}

fn relabel(e: Error, slot: u32) -> Error {
    match e {
        Error::CorruptSlot { reason, .. } => Error::CorruptSlot { slot, reason },
        other => other,
    }
}

/// Proof that this thread holds the ring mutex; all slot transitions are its methods.
pub struct RingGuard<'a> {
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
                pending.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.ring.slot_header(slot).state.store(s as u32, Ordering::Relaxed);
    }

    /// Sets how many DONE slots the map caller wants before a worker's publish wakes it.
    pub fn set_wanted(&mut self, n: u32) {
        self.ring.header().done_wanted.store(n.max(1), Ordering::Relaxed);
    }

    /// Whether enough DONE slots are pending to wake the map caller.
    pub fn caller_wanted(&self) -> bool {
        let h = self.ring.header();
        h.done_pending.load(Ordering::Relaxed) >= h.done_wanted.load(Ordering::Relaxed)
    }

    /// Fills a FREE slot with `desc` (its MAC is set here) and lets `payload` write the inline
    /// payload. Returns the slot, or `None` when every slot is busy.
    pub fn fill(&mut self, desc: &Descriptor, payload: impl FnOnce(&mut [u8])) -> Option<u32> {
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
        h.map_id.store(d.map_id, Ordering::Relaxed);
        // PUBLISH: the descriptor and payload above, to the claimer, via the mutex release.
        self.set_state(slot, SlotState::Filled);
        Some(slot)
    }

    /// Claims the first FILLED slot for `pid`. A slot whose descriptor fails its MAC is moved
    /// to DONE with status CORRUPT and skipped.
    pub fn claim(&mut self, pid: u32) -> Option<Claim> {
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
            let generation = h.generation.load(Ordering::Relaxed) + 1;
            h.generation.store(generation, Ordering::Relaxed);
            h.pid.store(pid, Ordering::Relaxed);
            h.claimed_at_us.store(now_us(), Ordering::Relaxed);
            let attempt = h.attempt.load(Ordering::Relaxed);
            self.set_state(slot, SlotState::Claimed);
            return Some(Claim { slot, attempt, generation, desc });
        }
        None
    }

    fn finish(&self, slot: u32, status: Status, signal: u32, message: &str) {
        let h = self.ring.slot_header(slot);
        let bytes = message.as_bytes();
        let n = bytes.len().min(MESSAGE_CAP);
        // SAFETY: we hold the lock and the slot is being moved to DONE by us; the message area
        // is in bounds (message_ptr checks) and only written under the lock.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring.message_ptr(slot), n) };
        h.message_len.store(n as u32, Ordering::Relaxed);
        h.status.store(status as u32, Ordering::Relaxed);
        h.signal.store(signal, Ordering::Relaxed);
        self.set_state(slot, SlotState::Done);
    }

    /// Publishes a claimed chunk as DONE. Returns `false` (and changes nothing) when the claim
    /// is stale: the slot was requeued or timed out since.
    pub fn publish(&mut self, claim: &Claim, pid: u32, status: Status, message: &str) -> bool {
        let h = self.ring.slot_header(claim.slot);
        let current = self.state(claim.slot) == Some(SlotState::Claimed)
            && h.pid.load(Ordering::Relaxed) == pid
            && h.generation.load(Ordering::Relaxed) == claim.generation;
        if current {
            self.finish(claim.slot, status, 0, message);
        }
        current
    }

    /// Hands every DONE slot of `map_id` to `f`, then frees it. Returns how many.
    pub fn collect(&mut self, map_id: u64, mut f: impl FnMut(Done<'_>)) -> usize {
        let mut n = 0;
        for slot in 0..self.ring.slots {
            let h = self.ring.slot_header(slot);
            if self.state(slot) != Some(SlotState::Done) || h.map_id.load(Ordering::Relaxed) != map_id {
                continue;
            }
            // SAFETY: DONE slots are owned by the map caller (us, under the lock); nobody
            // writes their descriptor, message or payload until they are FREE again.
            let desc = unsafe { self.ring.desc_ptr(slot).read_unaligned() };
            // The caller uses the descriptor's ranges to copy results: check it is still the
            // one it sealed before trusting them.
            let sealed = self.ring.mac(slot, &desc) == desc.mac;
            let len = (h.message_len.load(Ordering::Relaxed) as usize).min(MESSAGE_CAP);
            // SAFETY: as above; in bounds (MESSAGE_CAP).
            let msg = unsafe { std::slice::from_raw_parts(self.ring.message_ptr(slot), len) };
            let base = self.ring.payload_offset(slot);
            // SAFETY: as above.
            let payload = unsafe { self.ring.seg.data(base, self.ring.payload_cap) }.expect("payload inside segment");
            let (status, message) = match Status::try_from(h.status.load(Ordering::Relaxed)) {
                Ok(st) if sealed => (st, String::from_utf8_lossy(msg).into_owned()),
                Ok(_) => (Status::Corrupt, "descriptor integrity check failed after the chunk ran".to_string()),
                Err(v) => (Status::Corrupt, format!("unknown status {v}")),
            };
            f(Done {
                slot,
                desc,
                status,
                signal: h.signal.load(Ordering::Relaxed),
                attempt: h.attempt.load(Ordering::Relaxed),
                message,
                payload,
            });
            self.set_state(slot, SlotState::Free);
            n += 1;
        }
        n
    }

    /// Frees every FILLED slot of `map_id` (a failed map stops early) and returns how many of
    /// its slots are still CLAIMED or DONE.
    pub fn cancel(&mut self, map_id: u64) -> usize {
        let mut outstanding = 0;
        for slot in 0..self.ring.slots {
            if self.ring.slot_header(slot).map_id.load(Ordering::Relaxed) != map_id {
                continue;
            }
            match self.state(slot) {
                Some(SlotState::Filled) => self.set_state(slot, SlotState::Free),
                Some(SlotState::Claimed) | Some(SlotState::Done) => outstanding += 1,
                _ => {}
            }
        }
        outstanding
    }

    /// Handles the death of worker `pid` (killed by `signal`): each of its CLAIMED slots goes
    /// back to FILLED with `attempt + 1`, or to DONE/CRASHED once `max_attempts` claimers died
    /// on it. Returns (requeued, failed).
    pub fn requeue_dead(&mut self, pid: u32, signal: u32, max_attempts: u32) -> (usize, usize) {
        let (mut requeued, mut failed) = (0, 0);
        for slot in 0..self.ring.slots {
            let h = self.ring.slot_header(slot);
            if self.state(slot) != Some(SlotState::Claimed) || h.pid.load(Ordering::Relaxed) != pid {
                continue;
            }
            let attempt = h.attempt.load(Ordering::Relaxed) + 1;
            h.attempt.store(attempt, Ordering::Relaxed);
            if attempt >= max_attempts {
                self.finish(slot, Status::Crashed, signal, "");
                failed += 1;
            } else {
                h.pid.store(0, Ordering::Relaxed);
                self.set_state(slot, SlotState::Filled);
                requeued += 1;
            }
        }
        (requeued, failed)
    }

    /// CLAIMED slots whose chunk started more than `limit_us` before `now_us`, with their pid.
    pub fn overdue(&self, now_us: u64, limit_us: u64) -> Vec<(u32, u32)> {
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
    pub fn time_out_pid(&mut self, pid: u32) -> usize {
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
    pub fn census(&self) -> [usize; 4] {
        let mut c = [0; 4];
        for s in 0..self.ring.slots {
            if let Some(st) = self.state(s) {
                c[st as usize] += 1;
            }
        }
        c
    }

    /// Overwrites a slot's stored descriptor without re-sealing it (tests of corruption).
    #[doc(hidden)]
    pub fn corrupt_descriptor_for_test(&mut self, slot: u32, f: impl FnOnce(&mut Descriptor)) {
        // SAFETY: we hold the lock; read/modify/write of a Pod value in bounds.
        unsafe {
            let p = self.ring.desc_ptr(slot);
            let mut d = p.read_unaligned();
            f(&mut d);
            p.write_unaligned(d);
        }
    }

    /// Flips a bit of the length of every FILLED slot's descriptor (tests of corruption).
    #[doc(hidden)]
    pub fn corrupt_filled_for_test(&mut self) -> usize {
        let filled: Vec<u32> = (0..self.ring.slots).filter(|&s| self.state(s) == Some(SlotState::Filled)).collect();
        for &s in &filled {
            self.corrupt_descriptor_for_test(s, |d| d.len ^= 1 << 40);
        }
        filled.len()
    }

    /// Re-seals a descriptor after changing it (tests of bounds checks behind a valid MAC).
    #[doc(hidden)]
    pub fn rewrite_descriptor_for_test(&mut self, slot: u32, f: impl FnOnce(&mut Descriptor)) {
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

#[cfg(test)]
mod test;
