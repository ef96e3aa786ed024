//! The words of a pool's ring, read and written from outside as a stray pointer (or another
//! process) would: for the tests that corrupt the ring on purpose, and for those that wait for
//! a slot to reach a state. The layout is src/ring/slot.rs's and src/ring/mod.rs's.

use std::fs::File;
use std::time::Duration;

use shmpool::Pool;

/// Offset of the ring header (after the 4096-byte segment header): lock 0, work 64, done 128,
/// shutdown 192, mail 196, spinner 200, ...
pub const RING_HDR: usize = 4096;

// Slot header layout: state 0, pid 4, attempt 8, status 12, signal 16, message_len 20,
// map_id 24, claimed_at_us 32, generation 40, stamp 48, fill_seq 56.
/// Offset of a slot's state word.
pub const ST: usize = 0;
/// Offset of a slot's generation word.
pub const GENERATION: usize = 40;
/// Slot states (`SlotState`).
pub const FILLED: u32 = 1;
/// A worker runs the slot's chunk.
pub const CLAIMED: u32 = 2;
/// The slot holds a finished chunk.
pub const DONE: u32 = 3;

/// Maps the pool's ring into this process, as a stray pointer in any process would see it.
pub fn map_ring(pool: &Pool) -> memmap2::MmapMut {
    let fd = pool.ring_fd_for_test().try_clone_to_owned().unwrap();
    // SAFETY: test only: the ring is shared memory that the pool's processes change at any
    // time; these tests read it as raw words (never as references to its atomics) and scribble
    // into it on purpose, which the pool must survive.
    unsafe { memmap2::MmapMut::map_mut(&File::from(fd)) }.unwrap()
}

/// The word at `at`.
pub fn word(ring: &memmap2::MmapMut, at: usize) -> u32 {
    u32::from_ne_bytes(ring[at..at + 4].try_into().unwrap())
}

/// Overwrites the word at `at`.
pub fn set_word(ring: &mut memmap2::MmapMut, at: usize, v: u32) {
    ring[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Waits (watchdog: 20 s) until some slot of `pool` is in `state`.
pub fn await_slot_state(pool: &Pool, state: u32) {
    let ring = map_ring(pool);
    let offsets = pool.slot_offsets_for_test();
    super::wait_until(Duration::from_secs(20), &format!("a slot in state {state}"), || {
        offsets.iter().any(|&o| word(&ring, o + ST) == state)
    });
}

/// Waits (watchdog: 20 s) until the states of `pool`'s slots satisfy `cond`.
pub fn await_slots(pool: &Pool, what: &str, cond: impl Fn(&[u32]) -> bool) {
    let ring = map_ring(pool);
    let offsets = pool.slot_offsets_for_test();
    super::wait_until(Duration::from_secs(20), what, || {
        let states: Vec<u32> = offsets.iter().map(|&o| word(&ring, o + ST)).collect();
        cond(&states)
    });
}
