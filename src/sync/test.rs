#![cfg(test)]

use std::time::Duration;

use super::*;
use crate::shm::{Segment, SegmentKind};

fn mutex_in(seg: &Segment) -> &ShmMutex {
    let p = seg.data_ptr(0, std::mem::size_of::<ShmMutex>()).unwrap();
    // SAFETY: fresh segment, exclusive, page-aligned storage of the right size.
    unsafe { ShmMutex::init(p.as_ptr().cast()).unwrap() };
    // SAFETY: initialised just above; ShmMutex is only used through pthread calls.
    unsafe { &*p.as_ptr().cast::<ShmMutex>() }
}

#[test]
fn lock_reports_clean_then_times_out_while_held() {
    let seg = Segment::create(SegmentKind::Array, 4096, 1, 0).unwrap();
    let m = mutex_in(&seg);
    let g = m.lock_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(g.owner_died(), None);
    assert_eq!(m.owner(), std::process::id());
    let other =
        std::thread::scope(|s| s.spawn(|| m.lock_timeout(Duration::from_millis(20)).map(|_| ())).join().unwrap());
    assert!(matches!(other, Err(crate::Error::LockTimeout(_))));
    drop(g);
    assert_eq!(m.owner(), 0);
}

#[test]
fn holder_killed_inside_lock_gives_owner_died_and_repair_continues() {
    // A ring-kind segment: the forked child must inherit the mapping (arrays are MADV_DONTFORK).
    let seg = Segment::create(SegmentKind::Ring, 4096, 1, 0).unwrap();
    let m = mutex_in(&seg);
    let child = crate::launch::fork::fork_worker(move || {
        let g = m.lock_timeout(Duration::from_secs(5)).unwrap();
        std::mem::forget(g);
        // Die holding the lock.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).ok();
        0
    })
    .unwrap();
    nix::sys::wait::waitpid(child, None).unwrap();
    let mut g = m.lock_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(g.owner_died(), Some(child.as_raw() as u32));
    g.mark_repaired();
    drop(g);
    let g = m.lock_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(g.owner_died(), None);
}

#[test]
fn doorbell_wait_returns_on_ring_and_on_timeout() {
    let seg = Segment::create(SegmentKind::Array, 4096, 1, 0).unwrap();
    let p = seg.data_ptr(0, 64).unwrap();
    // SAFETY: zeroed fresh segment memory is a valid Doorbell (two zero atomics).
    let bell = unsafe { &*p.as_ptr().cast::<Doorbell>() };
    let seen = bell.seq();
    assert!(!bell.wait(seen, Duration::ZERO, Duration::from_millis(5)));
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            bell.ring();
        });
        assert!(bell.wait(seen, Duration::from_micros(10), Duration::from_secs(10)));
    });
}
