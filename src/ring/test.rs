#![cfg(test)]

use super::*;

fn desc(map_id: u64, start: u64, len: u64) -> Descriptor {
    Descriptor { map_id, start, len, in_off: 0, out_off: 4096, in_size: 8, out_size: 8, ..Descriptor::default() }
}

#[test]
fn slot_goes_free_filled_claimed_done_free() {
    let ring = Ring::create(4, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let slot = g.fill(&desc(7, 0, 10), |p| p[0] = 1).unwrap();
    assert_eq!(g.census(), [3, 1, 0, 0]);
    let c = g.claim(42).unwrap();
    assert_eq!((c.slot, c.attempt, c.desc.start, c.desc.len), (slot, 0, 0, 10));
    assert!(g.claim(43).is_none(), "nothing else is FILLED");
    assert!(g.publish(&c, 42, Status::Ok, ""));
    let mut seen = 0;
    assert_eq!(g.collect(8, |_| seen += 1), 0, "other maps' slots are not collected");
    assert_eq!(g.collect(7, |d| assert_eq!(d.status, Status::Ok)), 1);
    assert_eq!(g.census(), [4, 0, 0, 0]);
}

#[test]
fn stale_publish_after_requeue_is_rejected() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    let c = g.claim(100).unwrap();
    assert_eq!(g.requeue_dead(100, 9, 3), (1, 0));
    let again = g.claim(200).unwrap();
    assert_eq!(again.attempt, 1);
    assert!(!g.publish(&c, 100, Status::Ok, ""), "the presumed-dead claimer is refused");
    assert!(g.publish(&again, 200, Status::Ok, ""));
}

#[test]
fn chunk_that_kills_max_attempts_workers_is_done_crashed() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    g.fill(&desc(1, 5, 10), |_| {}).unwrap();
    for pid in 1..=3u32 {
        g.claim(pid).unwrap();
        g.requeue_dead(pid, 9, 3);
    }
    let mut got = None;
    g.collect(1, |d| got = Some((d.status, d.signal, d.attempt)));
    assert_eq!(got, Some((Status::Crashed, 9, 3)));
}

#[test]
fn corrupted_descriptor_fails_its_integrity_check() {
    let ring = Ring::create(2, 8192).unwrap();
    let mut g = ring.lock().unwrap();
    let slot = g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    g.corrupt_descriptor_for_test(slot, |d| d.len = 1 << 40);
    assert!(g.claim(1).is_none());
    let mut got = None;
    g.collect(1, |d| got = Some((d.status, d.message)));
    let (status, msg) = got.unwrap();
    assert_eq!(status, Status::Corrupt);
    assert!(msg.contains("integrity"), "{msg}");
}

#[test]
fn sealed_but_out_of_bounds_descriptors_are_rejected_by_chunk_io() {
    let ring = Ring::create(2, 8192).unwrap();
    let no_segments =
        |id: u64| -> Result<&Segment> { Err(Error::CorruptSlot { slot: 0, reason: format!("unknown segment {id}") }) };
    type Change = Box<dyn Fn(&mut Descriptor)>;
    let cases: Vec<(&str, Change)> = vec![
        ("length overflow", Box::new(|d| d.len = u64::MAX / 2)),
        ("input past payload", Box::new(|d| d.in_off = 8150)),
        ("output past payload", Box::new(|d| d.out_off = 8192)),
        ("output overlaps input", Box::new(|d| d.out_off = 40)),
        ("params past payload", Box::new(|d| d.params_len = 1 << 20)),
        ("zero element size", Box::new(|d| d.in_size = 0)),
        ("unknown segment", Box::new(|d| d.in_seg = 99)),
    ];
    for (name, change) in cases {
        let mut g = ring.lock().unwrap();
        let slot = g.fill(&desc(1, 0, 10), |_| {}).unwrap();
        g.rewrite_descriptor_for_test(slot, |d| change(d));
        let c = g.claim(1).unwrap();
        drop(g);
        assert!(matches!(ring.chunk_io(&c, no_segments), Err(Error::CorruptSlot { .. })), "{name}");
        ring.lock().unwrap().cancel(1);
        let mut g = ring.lock().unwrap();
        g.publish(&c, 1, Status::Corrupt, "");
        g.collect(1, |_| {});
    }
    let mut g = ring.lock().unwrap();
    g.fill(&desc(1, 0, 10), |_| {}).unwrap();
    let c = g.claim(1).unwrap();
    drop(g);
    let io = ring.chunk_io(&c, no_segments).unwrap();
    assert_eq!((io.input.len(), io.output.len()), (80, 80));
}

#[test]
fn wrong_layout_is_refused_on_attach() {
    let ring = Ring::create(2, 8192).unwrap();
    let fd = ring.segment().fd().try_clone_to_owned().unwrap();
    let again = Segment::from_fd(fd, SegmentKind::Ring).unwrap();
    Ring::attach(Arc::new(again), RandomState::new()).unwrap();
    let arr = Segment::create(SegmentKind::Array, 100, 8, 0).unwrap();
    assert!(matches!(Ring::attach(Arc::new(arr), RandomState::new()), Err(Error::IncompatibleSegment { .. })));
}
