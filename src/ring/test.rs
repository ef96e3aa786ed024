#![cfg(test)]

use proptest::prelude::*;

use super::*;

fn desc(map_id: u64, start: u64, len: u64) -> Descriptor {
    Descriptor { map_id, start, len, in_off: 0, out_off: 4096, in_size: 8, out_size: 8, ..Descriptor::default() }
}

#[test]
fn slot_goes_free_filled_claimed_done_free() {
    let ring = Ring::create(4, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let (slot, sealed) = g.fill(&desc(7, 0, 10), |p| p[0] = 1).unwrap();
    let c = g.census(7);
    assert_eq!((c.free, c.filled, c.claimed, c.done), (3, 1, 0, 0));
    let c = g.claim(42).unwrap();
    assert_eq!((c.slot(), c.attempt(), c.desc().start, c.desc().len), (slot, 0, 0, 10));
    assert!(g.claim(43).is_none(), "nothing else is FILLED");
    assert_eq!(g.observe(slot), Observed::Running(42));
    assert!(g.publish(&c, 42, Status::Ok, ""));
    assert_eq!(g.observe(slot), Observed::Done);
    let t = g.take(slot, &sealed, |_| {}).unwrap();
    assert_eq!(t.status, Status::Ok);
    assert_eq!(g.census(7).free, 4);
    // SAFETY: test only, under the lock; the slot is FREE.
    let cleared = unsafe { ring.desc_ptr(slot).read_unaligned() };
    assert_eq!(cleared, Descriptor::default(), "a freed slot keeps no descriptor to replay");
}

#[test]
fn workers_claim_the_oldest_filled_slot_first() {
    let ring = Ring::create(4, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let (a, _) = g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    let (b, _) = g.fill(&desc(2, 0, 10), |_| {}).unwrap();
    let (c, _) = g.fill(&desc(3, 0, 10), |_| {}).unwrap();
    // Free the first slot and refill it: it is now the newest, and must be claimed last.
    let _ = g.withdraw(a);
    let (a2, _) = g.fill(&desc(4, 0, 10), |_| {}).unwrap();
    assert_eq!(a2, a);
    let order: Vec<u32> = (0..3).map(|pid| g.claim(pid).unwrap().slot()).collect();
    assert_eq!(order, [b, c, a]);
    assert_eq!(ring.header().claimed_now.load(Ordering::Relaxed), 3);
}

#[test]
fn stale_publish_after_requeue_is_rejected() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    let c = g.claim(100).unwrap();
    assert_eq!(g.requeue_dead(100, 9, 3), Requeued { requeued: 1, failed: 0 });
    let again = g.claim(200).unwrap();
    assert_eq!(again.attempt(), 1);
    assert!(!g.publish(&c, 100, Status::Ok, ""), "the presumed-dead claimer is refused");
    assert!(g.publish(&again, 200, Status::Ok, ""));
}

#[test]
fn chunk_that_kills_max_attempts_workers_is_done_crashed() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let (slot, sealed) = g.fill(&desc(1, 5, 10), |_| {}).unwrap();
    for pid in 1..=3u32 {
        g.claim(pid).unwrap();
        g.requeue_dead(pid, 9, 3);
    }
    let t = g.take(slot, &sealed, |_| {}).unwrap();
    assert_eq!((t.status, t.signal, t.attempt), (Status::Crashed, 9, 3));
}

#[test]
fn corrupted_descriptor_fails_its_integrity_check() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let (slot, sealed) = g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    g.corrupt_descriptor_for_test(slot, |d| d.len = 1 << 40);
    assert!(g.claim(1).is_none());
    assert_eq!(g.observe(slot), Observed::Done);
    let e = g.take(slot, &sealed, |_| {}).unwrap_err();
    assert!(e.contains("another descriptor"), "{e}");
}

#[test]
fn a_done_state_written_without_a_stamp_is_refused() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let (slot, sealed) = g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    let _running = g.claim(1).unwrap();
    // A stray write turns the CLAIMED slot DONE while its worker still runs.
    ring.slot_header(slot).state.store(SlotState::Done as u32, Ordering::Relaxed);
    let e = g.take(slot, &sealed, |_| panic!("no result may be copied")).unwrap_err();
    assert!(e.contains("stamp"), "{e}");
    // A stray write frees it: the caller sees a state it never leaves its slots in.
    ring.slot_header(slot).state.store(SlotState::Free as u32, Ordering::Relaxed);
    assert_eq!(g.observe(slot), Observed::Corrupt(0));
    ring.slot_header(slot).state.store(77, Ordering::Relaxed);
    assert_eq!(g.observe(slot), Observed::Corrupt(77));
}

#[test]
fn a_slot_made_filled_again_behind_its_claimer_is_refused() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let (slot, sealed) = g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    let _first = g.claim(1).unwrap();
    // A stray write puts the CLAIMED slot back to FILLED: a second worker takes it too.
    ring.slot_header(slot).state.store(SlotState::Filled as u32, Ordering::Relaxed);
    let second = g.claim(2).unwrap();
    assert!(g.publish(&second, 2, Status::Ok, ""));
    let e = g.take(slot, &sealed, |_| panic!("no result may be copied")).unwrap_err();
    assert!(e.contains("claimed 2 times"), "{e}");
}

#[test]
fn old_slots_rewritten_as_done_are_foreign() {
    let ring = Ring::create(4, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let (slot, _) = g.fill(&desc(5, 0, 10), |_| {}).unwrap();
    let h = ring.slot_header(3);
    h.map_id.store(5, Ordering::Relaxed);
    h.state.store(SlotState::Done as u32, Ordering::Relaxed);
    assert_eq!(g.foreign_done(5, |s| s == slot), Some(3));
    assert_eq!(g.foreign_done(6, |s| s == slot), None);
}

#[test]
fn sealed_but_out_of_bounds_descriptors_are_rejected_by_chunk_io() {
    let ring = Ring::create(2, 8192).unwrap();
    fn no_segments<'a>(id: u64) -> Result<&'a Segment> {
        Err(Error::CorruptSlot { slot: 0, reason: format!("unknown segment {id}") })
    }
    type Change = Box<dyn Fn(&mut Descriptor)>;
    let cases: Vec<(&str, Change)> = vec![
        ("length overflow", Box::new(|d| d.len = u64::MAX / 2)),
        ("input past payload", Box::new(|d| d.in_off = 8150)),
        ("output past payload", Box::new(|d| d.out_off = 8192)),
        ("output overlaps input", Box::new(|d| d.out_off = 40)),
        ("params past payload", Box::new(|d| d.params_len = 1 << 20)),
        ("zero element size", Box::new(|d| d.in_size = 0)),
        ("unknown segment", Box::new(|d| d.in_seg = 99)),
        ("unknown parameter segment", Box::new(|d| d.params_seg = 98)),
    ];
    for (name, change) in cases {
        let mut g = ring.lock().unwrap();
        let (slot, _) = g.fill(&desc(1, 0, 10), |_| {}).unwrap();
        g.rewrite_descriptor_for_test(slot, |d| change(d));
        let mut c = g.claim(1).unwrap();
        drop(g);
        assert!(matches!(ring.chunk_io(&mut c, no_segments), Err(Error::CorruptSlot { .. })), "{name}");
        let mut g = ring.lock().unwrap();
        g.publish(&c, 1, Status::Corrupt, "");
        // SAFETY: test only; reseal to what the slot holds so that `take` frees it.
        let desc = unsafe { ring.desc_ptr(slot).read_unaligned() };
        let generation = ring.slot_header(slot).generation.load(Ordering::Relaxed) - 1;
        g.take(slot, &Sealed { desc, generation }, |_| {}).unwrap();
    }
    let mut g = ring.lock().unwrap();
    g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    let mut c = g.claim(1).unwrap();
    drop(g);
    let io = ring.chunk_io(&mut c, no_segments).unwrap();
    assert_eq!((io.input.len(), io.output.len()), (80, 80));
}

#[test]
fn wrong_layout_is_refused_on_attach() {
    let ring = Ring::create(2, 8192).unwrap();
    let fd = ring.segment().fd().try_clone_to_owned().unwrap();
    let again = Segment::from_fd(fd, SegmentKind::Ring).unwrap();
    Ring::attach(Arc::new(again), crate::key::Key::random()).unwrap();
    let arr = Segment::create(SegmentKind::Array, 100, 8, 0).unwrap();
    assert!(matches!(Ring::attach(Arc::new(arr), crate::key::Key::random()), Err(Error::IncompatibleSegment { .. })));
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Fill {
        map: u64,
        len: u64,
    },
    Claim {
        pid: u32,
    },
    Publish {
        pid: u32,
        status: u32,
    },
    Die {
        pid: u32,
    },
    Take {
        slot: u32,
    },
    Withdraw {
        slot: u32,
    },
    /// Random bytes at a random offset of a slot's header or descriptor.
    Scribble {
        slot: u32,
        offset: usize,
        bytes: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..4, 1u64..50).prop_map(|(map, len)| Op::Fill { map, len }),
        4 => (1u32..4).prop_map(|pid| Op::Claim { pid }),
        4 => (1u32..4, 0u32..3).prop_map(|(pid, status)| Op::Publish { pid, status }),
        1 => (1u32..4).prop_map(|pid| Op::Die { pid }),
        4 => (0u32..4).prop_map(|slot| Op::Take { slot }),
        1 => (0u32..4).prop_map(|slot| Op::Withdraw { slot }),
        1 => (0u32..4, 0usize..(64 + 128), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(slot, offset, bytes)| Op::Scribble { slot, offset, bytes }),
    ]
}

/// The plain in-memory model: what each slot holds, as the map caller and workers see it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Free,
    Filled {
        attempt: u32,
    },
    Claimed {
        pid: u32,
        attempt: u32,
    },
    Done {
        status: Status,
        attempt: u32,
    },
    /// A scribbled slot whose claimer died: requeued or crashed, whatever the scribble allowed.
    Unknown,
}

const MAX_ATTEMPTS: u32 = 2;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 64 }))]

    /// Drives fill / claim / publish / worker death / take / withdraw against the model. While
    /// nothing is scribbled every answer must equal the model's; once a slot was scribbled, the
    /// caller-side checks must refuse it or give back exactly what the caller sealed, never
    /// panic, and never hand out a result for a slot the model says is still running.
    #[test]
    fn ring_matches_its_model_and_refuses_scribbles(ops in prop::collection::vec(op(), 1..80)) {
        let ring = Ring::create(4, 8192).unwrap();
        let mut model = [Model::Free; 4];
        let mut sealed: [Option<Sealed>; 4] = [None; 4];
        let mut claims: Vec<(u32, Claim)> = Vec::new();
        let mut scribbled = [false; 4];
        for op in ops {
            let mut g = ring.lock().unwrap();
            match op {
                Op::Fill { map, len } => {
                    let got = g.fill(&desc(map, 0, len), |_| {});
                    let want = model.iter().position(|m| *m == Model::Free);
                    if scribbled.iter().all(|s| !s) {
                        prop_assert_eq!(got.map(|(s, _)| s as usize), want);
                    }
                    if let Some((s, d)) = got {
                        model[s as usize] = Model::Filled { attempt: 0 };
                        sealed[s as usize] = Some(d);
                        scribbled[s as usize] = false;
                    }
                }
                Op::Claim { pid } => {
                    if let Some(c) = g.claim(pid) {
                        let s = c.slot() as usize;
                        if !scribbled[s] {
                            let Model::Filled { attempt } = model[s] else {
                                return Err(TestCaseError::fail(format!("claimed slot {s} in model state {:?}", model[s])));
                            };
                            prop_assert_eq!(c.attempt(), attempt);
                        }
                        model[s] = Model::Claimed { pid, attempt: c.attempt() };
                        claims.push((pid, c));
                    }
                }
                Op::Publish { pid, status } => {
                    if let Some(i) = claims.iter().position(|(p, _)| *p == pid) {
                        let (_, c) = claims.remove(i);
                        let status = Status::try_from(status).unwrap();
                        let ok = g.publish(&c, pid, status, "m");
                        let s = c.slot() as usize;
                        let current = matches!(model[s], Model::Claimed { pid: p, .. } if p == pid);
                        if !scribbled[s] {
                            prop_assert_eq!(ok, current);
                        }
                        if ok {
                            model[s] = Model::Done { status, attempt: c.attempt() };
                        }
                    }
                }
                Op::Die { pid } => {
                    claims.retain(|(p, _)| *p != pid);
                    g.requeue_dead(pid, 9, MAX_ATTEMPTS);
                    for (s, m) in model.iter_mut().enumerate() {
                        if let Model::Claimed { pid: p, attempt } = *m {
                            if p == pid {
                                *m = if scribbled[s] {
                                    Model::Unknown
                                } else if attempt + 1 >= MAX_ATTEMPTS {
                                    Model::Done { status: Status::Crashed, attempt: attempt + 1 }
                                } else {
                                    Model::Filled { attempt: attempt + 1 }
                                };
                            }
                        }
                    }
                }
                Op::Take { slot } => {
                    let s = slot as usize;
                    let Some(d) = sealed[s] else { continue };
                    if g.observe(slot) != Observed::Done {
                        continue;
                    }
                    match g.take(slot, &d, |_| {}) {
                        Ok(t) => {
                            if scribbled[s] {
                                // Only a scribble that left state, stamp and descriptor intact
                                // can pass: the model must agree the chunk is finished.
                                prop_assert!(
                                    matches!(model[s], Model::Done { .. } | Model::Unknown),
                                    "took a result of a chunk in {:?}", model[s]
                                );
                            } else {
                                let Model::Done { status, attempt } = model[s] else {
                                    return Err(TestCaseError::fail("took an unfinished slot"));
                                };
                                prop_assert_eq!((t.status, t.attempt), (status, attempt));
                            }
                            model[s] = Model::Free;
                            sealed[s] = None;
                        }
                        Err(_) => prop_assert!(scribbled[s], "refused an untouched slot"),
                    }
                }
                Op::Withdraw { slot } => {
                    let s = slot as usize;
                    if sealed[s].is_some() && g.withdraw(slot) {
                        if !scribbled[s] {
                            prop_assert!(matches!(model[s], Model::Filled { .. }), "withdrew a slot in {:?}", model[s]);
                        }
                        claims.retain(|(_, c)| c.slot() != slot);
                        model[s] = Model::Free;
                        sealed[s] = None;
                    }
                }
                Op::Scribble { slot, offset, bytes } => {
                    let base = ring.slot_offset(slot);
                    let n = bytes.len().min(64 + 128 - offset);
                    let p = ring.seg.data_ptr(base + offset, n).unwrap();
                    // SAFETY: test only: in bounds (header + descriptor of the slot), under the
                    // lock, nothing else uses the ring.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), n) };
                    scribbled[slot as usize] = true;
                }
            }
        }
    }
}

#[test]
fn a_spinner_yields_at_once_only_for_a_process_last_seen_on_its_own_cpu() {
    use std::sync::atomic::AtomicU32;
    let me = crate::sync::raw::cpu_hint();
    assert!(me > 0, "sched_getcpu failed");
    let same = AtomicU32::new(me);
    let other = AtomicU32::new(me + 1);
    let unknown = AtomicU32::new(0);
    assert_eq!(CpuHints::polite_after(me, &same), Duration::ZERO);
    assert_eq!(CpuHints::polite_after(me, &other), crate::sync::POLITE_AFTER);
    assert_eq!(CpuHints::polite_after(me, &unknown), crate::sync::POLITE_AFTER);
    // A waiter that does not know its own CPU never assumes it shares it.
    assert_eq!(CpuHints::polite_after(0, &unknown), crate::sync::POLITE_AFTER);
}
