//! The ring under stray writes: another process (or a stray pointer here) scribbles into the
//! ring's slot headers, its header's counters and doorbells, or its mutex, while maps and
//! tickets run. No map may return `Ok` with a wrong answer or while a worker still writes the
//! caller's output, none may hang, every error comes after the workers are dead, and a
//! corrupted slot is reported, never lost for good.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ring_words::{map_ring, set_word, word, CLAIMED, FILLED, GENERATION, RING_HDR, ST};
use common::workloads::{pattern, w1, w1_chunk};
use shmpool::{Error, Pool, SharedVec};

/// The ring header's `spinner` word (src/ring/mod.rs).
const SPINNER: usize = RING_HDR + 200;

fn marker_path() -> std::path::PathBuf {
    // Not the pid: workers evaluate this too.
    std::path::PathBuf::from("/tmp/shmpool_ring_test_marker_claimed")
}

/// Created by [`slow_if_marked`] once it has started writing.
fn started_path() -> std::path::PathBuf {
    std::path::PathBuf::from("/tmp/shmpool_ring_test_marker_started")
}

/// Slow (writes its output element by element for ~3 s: the stimulus, a worker still
/// writing) while the marker file exists; says when it has started.
fn slow_if_marked(xs: &[f64], ys: &mut [f64]) {
    if marker_path().exists() {
        for (k, (y, x)) in ys.iter_mut().zip(xs).enumerate() {
            // SAFETY: `y` is a valid, exclusive reference into this chunk's output.
            unsafe { std::ptr::write_volatile(y, w1(*x)) };
            if k == 0 {
                std::fs::write(started_path(), b"").unwrap();
            }
            std::thread::sleep(Duration::from_micros(3_000));
        }
    } else {
        w1_chunk(xs, ys);
    }
}

/// A stray write turns a CLAIMED slot back into FILLED (state word 2 -> 1) while its worker
/// runs: a second worker runs the chunk too and publishes. The map must not return `Ok` while
/// the first worker still writes the caller's output.
#[test]
fn claimed_slot_rewritten_as_filled_never_lets_the_map_return_while_a_worker_writes() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        std::fs::write(marker_path(), b"").unwrap();
        let _ = std::fs::remove_file(started_path());
        let pool =
            Pool::builder().workers(2).chunk_len(1000).wait_strategy(shmpool::WaitStrategy::Sleep).build().unwrap();
        let pids = pool.pids();
        let xs = SharedVec::from_slice(&(0..1000).map(pattern).collect::<Vec<_>>()).unwrap();
        let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
        let mut ring = map_ring(&pool);
        let offsets = pool.slot_offsets_for_test();
        let (r, wrote_after) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let r = pool.map_into(&xs, &mut ys, slow_if_marked);
                let returned = Instant::now();
                eprintln!("map returned {r:?}");
                // The caller owns `ys` again: it overwrites it, then looks whether anyone else
                // still writes it. The observation window (not a synchronisation): a stale
                // worker writes an element every 3 ms, so 2.5 s without a write proves none.
                ys.fill(0.0);
                std::thread::sleep(Duration::from_millis(2500));
                let wrote_after = ys.iter().any(|&y| y != 0.0);
                (r, wrote_after, returned)
            });
            // Find the CLAIMED slot, then make it FILLED again behind its worker's back.
            let deadline = Instant::now() + Duration::from_secs(5);
            let slot = loop {
                if let Some(&o) = offsets.iter().find(|&&o| word(&ring, o + ST) == CLAIMED) {
                    break o;
                }
                assert!(
                    Instant::now() < deadline,
                    "no chunk was claimed: states {:?}",
                    offsets.iter().map(|&o| word(&ring, o)).collect::<Vec<_>>()
                );
                std::thread::sleep(Duration::from_millis(1));
            };
            common::wait_until(Duration::from_secs(10), "the marked kernel starts writing", || started_path().exists());
            std::fs::remove_file(marker_path()).unwrap();
            set_word(&mut ring, slot + ST, FILLED);
            let (r, wrote_after, returned) = h.join().unwrap();
            let _ = returned;
            (r, wrote_after)
        });
        let _ = std::fs::remove_file(marker_path());
        let _ = std::fs::remove_file(started_path());
        let still = common::alive(&pids);
        match r {
            Ok(()) => assert!(
                !wrote_after,
                "map returned Ok, then a worker kept writing the caller's output (workers alive: {still:?})"
            ),
            Err(e) => assert!(matches!(e, Error::CorruptSlot { .. }), "{e:?}"),
        }
    });
    common::assert_nothing_leaked();
}

/// Several threads' maps see the same corruption (a worker's refused publish wakes them all).
/// Every one of them must return only after the workers are dead — not only the first.
#[test]
fn every_map_failing_on_a_corruption_returns_after_the_workers_are_dead() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let mut early = Vec::new();
        for round in 0..6 {
            let pool =
                Pool::builder().workers(2).chunk_len(50).wait_strategy(shmpool::WaitStrategy::Sleep).build().unwrap();
            let pids = pool.pids();
            let mut ring = map_ring(&pool);
            let offsets = pool.slot_offsets_for_test();
            let stop = AtomicBool::new(false);
            let results: Vec<(bool, Vec<u32>)> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..3)
                    .map(|_| {
                        let (pool, pids) = (&pool, &pids);
                        s.spawn(move || {
                            let xs = SharedVec::from_slice(&(0..2000).map(pattern).collect::<Vec<_>>()).unwrap();
                            let mut ys = SharedVec::<f64>::zeroed(xs.len()).unwrap();
                            let r = pool.map_into(&xs, &mut ys, |x: &[f64], y: &mut [f64]| {
                                // Slow chunks (the stimulus): the corruption meets claimed ones.
                                std::thread::sleep(Duration::from_millis(30));
                                w1_chunk(x, y)
                            });
                            // Right at return: which workers are still alive?
                            let still = common::alive(pids);
                            (matches!(r, Err(Error::CorruptSlot { .. })), still)
                        })
                    })
                    .collect();
                let claimed = || offsets.iter().any(|&o| word(&ring, o + ST) == CLAIMED);
                common::wait_until(Duration::from_secs(10), "a chunk is claimed", claimed);
                // Bump the generation of every CLAIMED slot: their workers' publishes are refused.
                for &o in &offsets {
                    if word(&ring, o + ST) == CLAIMED {
                        let g = word(&ring, o + GENERATION);
                        set_word(&mut ring, o + GENERATION, g.wrapping_add(7));
                    }
                }
                stop.store(true, Ordering::Relaxed);
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (corrupt, still) in &results {
                if *corrupt && !still.is_empty() {
                    early.push((round, still.clone()));
                }
            }
        }
        assert!(early.is_empty(), "CorruptSlot returned while workers were alive: {early:?}");
    });
    common::assert_nothing_leaked();
}

/// Writes its output, then stays in the kernel for 1.5 s (the stimulus: map B is still running
/// while the stale worker of map A writes).
fn double_then_linger(xs: &[f64], ys: &mut [f64]) {
    for (y, x) in ys.iter_mut().zip(xs) {
        *y = x * 2.0;
    }
    std::thread::sleep(Duration::from_millis(1500));
}

/// The CLAIMED -> FILLED stray write again, with plain-slice maps (staged through the pool's
/// reused staging buffers): map A returns Ok while its first worker still runs; map B then gets
/// A's staging buffers, and the stale worker of A writes into B's output. B returns `Ok` with
/// values its kernel never computed.
#[test]
fn a_stale_worker_of_a_finished_map_never_writes_into_the_next_maps_ok_result() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        std::fs::write(marker_path(), b"").unwrap();
        let _ = std::fs::remove_file(started_path());
        let pool = Pool::builder()
            .workers(2)
            .chunk_len(1000)
            .payload_bytes(1024) // 1000 f64 do not travel inline: staging buffers
            .wait_strategy(shmpool::WaitStrategy::Sleep)
            .build()
            .unwrap();
        let mut ring = map_ring(&pool);
        let offsets = pool.slot_offsets_for_test();
        let xa: Vec<f64> = (0..1000).map(pattern).collect();
        let xb: Vec<f64> = (0..1000).map(|i| pattern(i + 7)).collect();
        let (ra, rb) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let ra = pool.map(&xa, slow_if_marked);
                let rb = pool.map(&xb, double_then_linger);
                (ra, rb)
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            let slot = loop {
                if let Some(&o) = offsets.iter().find(|&&o| word(&ring, o + ST) == CLAIMED) {
                    break o;
                }
                assert!(Instant::now() < deadline, "no chunk was claimed");
                std::thread::sleep(Duration::from_millis(1));
            };
            common::wait_until(Duration::from_secs(10), "the marked kernel starts writing", || started_path().exists());
            std::fs::remove_file(marker_path()).unwrap();
            set_word(&mut ring, slot + ST, FILLED);
            h.join().unwrap()
        });
        let _ = std::fs::remove_file(marker_path());
        let _ = std::fs::remove_file(started_path());
        if let (Ok(_), Ok(yb)) = (&ra, &rb) {
            let wrong: Vec<usize> = (0..1000).filter(|&i| yb[i] != xb[i] * 2.0).collect();
            assert!(
                wrong.is_empty(),
                "map B returned Ok with {} elements its kernel never wrote (first {:?}: {} instead of {})",
                wrong.len(),
                wrong.first(),
                yb[wrong[0]],
                xb[wrong[0]] * 2.0
            );
        }
        eprintln!("A: {:?}, B: {:?}", ra.as_ref().map(|_| ()), rb.as_ref().map(|_| ()));
    });
    common::assert_nothing_leaked();
}

/// A stray write turns an idle FREE slot into FILLED (state 0 -> 1). A worker finds its (zeroed)
/// descriptor corrupt; the corruption must be reported, and the slot must not be lost for good (it
/// once was parked as DONE/CORRUPT for map 0, which nobody owns, so on a one-slot ring every later
/// map failed with `RingFull` forever).
#[test]
fn a_free_slot_scribbled_to_filled_is_reported_not_a_permanent_ring_full() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).slots(1).build().unwrap();
        assert_eq!(pool.map(&[1.0f64], w1).unwrap(), [w1(1.0)]);
        let mut ring = map_ring(&pool);
        let slot = pool.slot_offsets_for_test()[0];
        set_word(&mut ring, slot + ST, FILLED);
        // A worker wakes (idle timeout) and claims it.
        let taken = || word(&ring, slot + ST) != FILLED;
        common::wait_until(Duration::from_secs(20), "a worker takes the scribbled slot", taken);
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            outcomes.push(pool.map(&[2.0f64], w1));
            // Spread over half a second (not a synchronisation): a repair the supervisor makes
            // on its own tick has time to land; only five `RingFull` in a row fail the test.
            std::thread::sleep(Duration::from_millis(100));
        }
        let ring_full = outcomes.iter().filter(|r| matches!(r, Err(Error::RingFull { .. }))).count();
        assert!(ring_full < 5, "every map after one scribbled state word: {:?}", outcomes.last().unwrap());
    });
    common::assert_nothing_leaked();
}

/// A stray write puts a bogus pid in the `spinner` word. Small maps must still wake a worker, or
/// report an error (single-chunk maps once only bumped the work doorbell without waking anyone, and
/// no worker could take the token back: every small map waited for a worker's 1 s idle timeout,
/// silently). The bound is relative (20 times the maps before the write, plus 1 s), so only that
/// second per map shows.
#[test]
fn a_scribbled_spinner_word_does_not_silently_slow_every_small_map_to_a_second() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).build().unwrap();
        let mut ring = map_ring(&pool);
        let t0 = Instant::now();
        for i in 0..10 {
            std::thread::sleep(Duration::from_millis(5)); // the stimulus: the workers go to sleep
            assert_eq!(pool.map(&[i as f64], w1).unwrap(), [w1(i as f64)]);
        }
        let before = t0.elapsed();
        set_word(&mut ring, SPINNER, 1);
        let t0 = Instant::now();
        let mut outcome = Ok(());
        for i in 0..10 {
            std::thread::sleep(Duration::from_millis(5)); // as above
            match pool.map(&[i as f64], w1) {
                Ok(v) => assert_eq!(v, [w1(i as f64)]),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let after = t0.elapsed();
        assert!(
            outcome.is_err() || after < before * 20 + Duration::from_secs(1),
            "10 small maps: {before:?} before, {after:?} after one scribbled word (no error reported)"
        );
    });
    common::assert_nothing_leaked();
}

/// A stray write makes the ring mutex look held by a thread that does not exist (its owner
/// word, without the owner-died bit). Maps must end with an error, after the workers are dead,
/// in bounded time; dropping the pool must not hang.
#[test]
fn a_scribbled_mutex_owner_word_ends_maps_with_an_error_in_bounded_time() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(110), || {
        let pool = Pool::builder().workers(2).chunk_len(100).build().unwrap();
        let pids = pool.pids();
        let mut ring = map_ring(&pool);
        let xs: Vec<f64> = (0..5_000).map(pattern).collect();
        let t0 = Instant::now();
        let (r, still) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let r = pool.map(&xs, |x: f64| {
                    std::thread::sleep(Duration::from_micros(200)); // slow chunks: the stimulus
                    w1(x)
                });
                (r, common::alive(&pids))
            });
            let offsets = pool.slot_offsets_for_test();
            let claimed = || offsets.iter().any(|&o| word(&ring, o + ST) == CLAIMED);
            common::wait_until(Duration::from_secs(10), "the map is under way", claimed);
            // glibc's pthread_mutex_t starts with the owner's TID word.
            set_word(&mut ring, RING_HDR, 0x3fff_fff0);
            h.join().unwrap()
        });
        let took = t0.elapsed();
        match r {
            Ok(ys) => assert!(xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits())),
            Err(e) => assert!(still.is_empty(), "{e:?} returned while {still:?} alive"),
        }
        eprintln!("map ended after {took:?}");
        let t0 = Instant::now();
        drop(pool);
        eprintln!("drop took {:?}", t0.elapsed());
    });
    common::assert_nothing_leaked();
}

/// W1, slowed down on some elements (the stimulus: chunks long enough to meet a corruption).
fn slow_w1(x: f64) -> f64 {
    if x.to_bits() % 64 == 0 {
        std::thread::sleep(Duration::from_micros(100));
    }
    w1(x)
}

/// Descriptors of FILLED slots are corrupted while four threads submit and map. No call may
/// return `Ok` with a wrong answer, hang, or panic the parent.
#[test]
fn corruption_under_tickets_from_four_threads_never_gives_a_wrong_ok() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let first: u64 = std::env::var("SHMPOOL_CORRUPTION_FIRST_ROUND").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        for round in first..5 {
            // No chunk_len: multi-chunk inline tickets once deadlocked on their own with one (see
            // `a_single_inline_ticket_with_more_chunks_than_slots_does_not_hang_submit` in
            // tests/callers.rs); this test looks for corruption only.
            let pool = Pool::builder().workers(2).slots(6).payload_bytes(8192).build().unwrap();
            let pids = pool.pids();
            let bad: Vec<String> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4usize)
                    .map(|t| {
                        let (pool, pids) = (&pool, &pids);
                        s.spawn(move || {
                            let mut bad = Vec::new();
                            for i in 0..200 {
                                let len = [2usize, 700, 3_000][(i + t) % 3];
                                let xs: Vec<f64> = (0..len).map(|k| pattern(k * 7 + i + t)).collect();
                                let r = if t % 2 == 0 {
                                    pool.map(&xs, slow_w1)
                                } else {
                                    pool.submit(&xs, slow_w1).and_then(|tk| tk.wait())
                                };
                                match r {
                                    Ok(ys) => {
                                        if !xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()) {
                                            bad.push(format!("thread {t}: Ok with a wrong answer, len {len}"));
                                        }
                                    }
                                    Err(Error::CorruptSlot { .. }) => {
                                        let still = common::alive(pids);
                                        let published_at_return = pool.pids();
                                        if !still.is_empty() {
                                            let states: Vec<_> = still.iter().map(|&p| common::proc_state(p)).collect();
                                            // A diagnostic only: are they gone a moment later?
                                            std::thread::sleep(Duration::from_millis(200));
                                            bad.push(format!(
                                                "thread {t}: CorruptSlot while {still:?} alive (states {states:?}, pool.pids() at return {published_at_return:?}; 200 ms later alive: {:?})",
                                                common::alive(pids)
                                            ));
                                        }
                                        break;
                                    }
                                    Err(Error::PoolBroken { .. }) => {
                                        bad.push(format!("thread {t}: PoolBroken (ok, alive n/a)"));
                                        break;
                                    }
                                    Err(e) => {
                                        bad.push(format!("thread {t}: {e:?}"));
                                        break;
                                    }
                                }
                            }
                            bad
                        })
                    })
                    .collect();
                // The stimulus: each round corrupts at a later moment of the maps.
                std::thread::sleep(Duration::from_millis(30 + 40 * round));
                let mut n = 0;
                let deadline = Instant::now() + Duration::from_secs(2);
                while n == 0 && Instant::now() < deadline {
                    n = pool.corrupt_filled_slots_for_test();
                }
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            // CorruptSlot returned while workers are alive is `every_map_failing_on_a_corruption_...`;
            // this test looks for wrong answers, other errors and hangs.
            eprintln!("round {round}: {bad:?}");
            assert!(bad.iter().all(|b| b.contains("alive")), "round {round}: {bad:?}");
        }
    });
    common::assert_nothing_leaked();
}

/// Random values keep landing on the ring header's counters and doorbells (done_pending,
/// done_wanted, claimed_now, next_fill_seq, mail, both doorbells' seq and sleepers) while three
/// threads map. Every `Ok` must be exact, nothing may hang, and once the scribbling stops maps
/// must work again (or the pool must say it is broken).
#[test]
fn scribbled_ring_header_counters_never_give_a_wrong_ok_or_a_hang() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).slots(4).build().unwrap();
        let mut ring = map_ring(&pool);
        let fields = [64usize, 68, 128, 132, 196, 224, 228, 232, 240, 244];
        let stop = AtomicBool::new(false);
        let bad: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3usize)
                .map(|t| {
                    let (pool, stop) = (&pool, &stop);
                    s.spawn(move || {
                        let mut bad = Vec::new();
                        let (mut i, mut errs) = (0, 0);
                        while !stop.load(Ordering::Relaxed) {
                            i += 1;
                            let len = [1usize, 50, 3_000, 40_000][(i + t) % 4];
                            let xs: Vec<f64> = (0..len).map(|k| pattern(k + i)).collect();
                            let r =
                                if t == 1 { pool.submit(&xs, w1).and_then(|tk| tk.wait()) } else { pool.map(&xs, w1) };
                            match r {
                                Ok(ys) => {
                                    if !xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()) {
                                        bad.push(format!("thread {t}: wrong Ok, len {len}"));
                                    }
                                }
                                Err(Error::CorruptSlot { .. } | Error::PoolBroken { .. } | Error::RingFull { .. }) => {
                                    errs += 1
                                }
                                Err(e) => bad.push(format!("thread {t}: {e:?}")),
                            }
                        }
                        eprintln!("thread {t}: {i} calls, {errs} refused");
                        bad
                    })
                })
                .collect();
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(3) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let f = fields[(rng % fields.len() as u64) as usize];
                let v = match (rng >> 32) % 4 {
                    0 => 0,
                    1 => u32::MAX,
                    2 => (rng >> 40) as u32 % 8,
                    _ => (rng >> 8) as u32,
                };
                set_word(&mut ring, RING_HDR + f, v);
                std::thread::sleep(Duration::from_millis(2)); // the scribbling's pace: the stimulus
            }
            stop.store(true, Ordering::Relaxed);
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert!(bad.is_empty(), "{bad:?}");
        let t0 = Instant::now();
        let after = pool.map(&(0..10_000).map(pattern).collect::<Vec<_>>(), w1);
        assert!(matches!(after, Ok(_) | Err(Error::PoolBroken { .. })), "{after:?}");
        // A watchdog, not a measurement: the map must not hang.
        assert!(t0.elapsed() < Duration::from_secs(20), "a map after the scribbling hung for {:?}", t0.elapsed());
    });
    common::assert_nothing_leaked();
}
