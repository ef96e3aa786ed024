//! The slot transitions: every state change of a slot is a method of [`RingGuard`], the proof
//! that the caller holds the ring's robust mutex. Each writes the state word last (see
//! `README.md`), so a holder killed mid-transition leaves the slot in its previous state.

use std::sync::atomic::Ordering;

use super::slot::{Descriptor, SlotState, Status, MESSAGE_CAP};
use super::{Claim, Ring};
use crate::sync::{now_us, ShmMutexGuard};

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

/// Proof that this thread holds the ring mutex; all slot transitions are its methods.
pub(crate) struct RingGuard<'a> {
    pub(super) ring: &'a Ring,
    pub(super) _guard: ShmMutexGuard<'a>,
}

impl RingGuard<'_> {
    fn state(&self, slot: u32) -> Option<SlotState> {
        SlotState::try_from(self.ring.slot_header(slot).state.load(Ordering::Relaxed)).ok()
    }

    fn set_state(&self, slot: u32, s: SlotState) {
        let was = self.state(slot);
        let was_done = was == Some(SlotState::Done);
        let claimed = &self.ring.header().claimed_now;
        match (was == Some(SlotState::Claimed), s == SlotState::Claimed) {
            (false, true) => {
                claimed.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                let _ = claimed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
            }
            _ => {}
        }
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
    pub(crate) fn fill(&mut self, desc: &Descriptor, payload: impl FnOnce(&mut [u8])) -> Option<(u32, Sealed)> {
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
        h.fill_seq.store(self.ring.header().next_fill_seq.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        // PUBLISH: the descriptor and payload above, to the claimer, via the mutex release.
        self.set_state(slot, SlotState::Filled);
        Some((slot, Sealed { desc: d, generation: h.generation.load(Ordering::Relaxed) }))
    }

    /// Claims the first FILLED slot for `pid`. A slot whose descriptor fails its MAC is moved
    /// to DONE with status CORRUPT and skipped.
    pub(crate) fn claim(&mut self, pid: u32) -> Option<Claim> {
        loop {
            // The oldest FILLED slot: first come, first served across maps.
            let slot = (0..self.ring.slots)
                .filter(|&s| self.state(s) == Some(SlotState::Filled))
                .min_by_key(|&s| self.ring.slot_header(s).fill_seq.load(Ordering::Relaxed))?;
            // SAFETY: FILLED slots' descriptors are written only while FREE; we hold the lock,
            // and read_unaligned copies the bytes whatever they are (Descriptor is Pod).
            let desc = unsafe { self.ring.desc_ptr(slot).read_unaligned() };
            let h = self.ring.slot_header(slot);
            if self.ring.mac(slot, &desc) != desc.mac {
                self.finish(slot, Status::Corrupt, 0, "descriptor integrity check failed");
                // The slot may belong to no map (a FREE slot scribbled to FILLED): make sure
                // some map caller hears of it, or the slot would be lost silently.
                self.ring.report_corruption(super::Corruption::BadDescriptor);
                continue;
            }
            let generation = h.generation.load(Ordering::Relaxed).wrapping_add(1);
            h.pid.store(pid, Ordering::Relaxed);
            h.claimed_at_us.store(now_us(), Ordering::Relaxed);
            let attempt = h.attempt.load(Ordering::Relaxed);
            self.set_state(slot, SlotState::Claimed);
            // The one exception to "state last": the generation counts *completed* claims (the
            // map caller checks claims against attempts), so it is bumped after the state. A
            // claimer killed in between leaves a CLAIMED slot with its pid, which the
            // supervisor requeues (attempt + 1) like any other; its claim never counted.
            h.generation.store(generation, Ordering::Relaxed);
            return Some(Claim { slot, attempt, generation, desc });
        }
    }

    /// How many slots are in each state, and whether any DONE slot belongs to `map_id`.
    pub(crate) fn census(&self, map_id: u64) -> Census {
        let mut c = Census::default();
        for s in 0..self.ring.slots {
            match self.state(s) {
                Some(SlotState::Free) => c.free += 1,
                Some(SlotState::Filled) => c.filled += 1,
                Some(SlotState::Claimed) => c.claimed += 1,
                Some(SlotState::Done) => {
                    c.done += 1;
                    c.done_mine |= self.ring.slot_header(s).map_id.load(Ordering::Relaxed) == map_id;
                }
                None => {}
            }
        }
        c
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
        sealed: &Sealed,
        copy_out: impl FnOnce(&[u8]),
    ) -> std::result::Result<Taken, String> {
        let (generation_at_fill, sealed) = (sealed.generation, &sealed.desc);
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
        // Every claim bumps the generation; a second claim is legitimate only after the first
        // claimer died (which bumps `attempt`). More claims than that: a stray write made the
        // slot FILLED again while a worker ran it, and that worker may still be writing.
        let claims = h.generation.load(Ordering::Relaxed).wrapping_sub(generation_at_fill);
        if claims > u64::from(attempt) + 1 {
            return Err(format!("slot {slot} was claimed {claims} times in {attempt} attempts"));
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

    /// CLAIMED slots whose chunk has run for more than `limit_us`, with their pid: `running_us`
    /// turns a claim's CLOCK_MONOTONIC stamp into the time the chunk counts as running (the
    /// supervisor leaves out the time the program was stopped).
    pub(crate) fn overdue(&self, limit_us: u64, running_us: impl Fn(u64) -> u64) -> Vec<(u32, u32)> {
        (0..self.ring.slots)
            .filter(|&s| self.state(s) == Some(SlotState::Claimed))
            .filter(|&s| running_us(self.ring.slot_header(s).claimed_at_us.load(Ordering::Relaxed)) > limit_us)
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

/// What the map caller keeps of a slot it filled: the sealed descriptor, and the slot's claim
/// generation at that moment (to count the claims made since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub desc: Descriptor,
    pub generation: u64,
}

/// Slots per state (see [`RingGuard::census`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Census {
    pub free: usize,
    pub filled: usize,
    pub claimed: usize,
    pub done: usize,
    /// Whether a DONE slot names the map asked about.
    pub done_mine: bool,
}

/// What [`RingGuard::requeue_dead`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Requeued {
    /// Chunks back to FILLED for another attempt.
    pub requeued: usize,
    /// Chunks that used up their attempts (DONE/CRASHED).
    pub failed: usize,
}
