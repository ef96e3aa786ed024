//! Many callers and streaming: maps and tickets from many threads at once, pipelined `imap` and
//! `imap_unordered`, tickets' timeouts and early drops, fairness, wait strategies, and the
//! fault-tolerance promise with several threads mapping while workers are killed. Tickets
//! polled again after their outcome never report `Ok` with zeros, a ticket cut into more
//! chunks than slots does not hang its own `submit`, and `RingFull` comes only when every slot
//! is held by finished tickets nobody waits for.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::workloads::{pattern, w1, w1_chunk};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmpool::{Error, Pool, SharedVec, WaitStrategy};

fn batch(b: usize, n: usize) -> Vec<f64> {
    (0..n).map(|i| pattern(b * 7919 + i)).collect()
}

fn exact(xs: &[f64], ys: &[f64]) -> bool {
    xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits())
}

#[test]
fn imap_yields_every_batch_in_input_order() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::new(2).unwrap();
        // Mixed sizes: inline single-slot batches and staged ones.
        let sizes: Vec<usize> = (0..120).map(|b| [1, 1024, 3000, 70_000][b % 4]).collect();
        let out: Vec<Vec<f64>> =
            pool.imap(sizes.iter().enumerate().map(|(b, &n)| batch(b, n)), w1).collect::<Result<_, _>>().unwrap();
        assert_eq!(out.len(), sizes.len());
        for (b, ys) in out.iter().enumerate() {
            assert!(exact(&batch(b, sizes[b]), ys), "batch {b}");
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn imap_unordered_yields_every_batch_exactly_once() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::new(2).unwrap();
        let tagged = (0..100).map(|b| vec![b as f64; 1 + b % 50]);
        let mut seen: Vec<usize> = pool
            .imap_unordered(tagged, |x: f64| x * 2.0)
            .map(|r| {
                let v = r.unwrap();
                assert!(v.iter().all(|&y| y == v[0]));
                (v[0] / 2.0) as usize
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    });
    common::assert_nothing_leaked();
}

#[test]
fn imap_pulls_an_endless_iterator_lazily_in_bounded_memory() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).imap_in_flight(3).build().unwrap();
        let pulled = Arc::new(AtomicUsize::new(0));
        let p2 = pulled.clone();
        let endless = std::iter::repeat_with(move || {
            let b = p2.fetch_add(1, Ordering::SeqCst);
            batch(b, 1024)
        });
        for (b, r) in pool.imap(endless, w1).take(500).enumerate() {
            assert!(exact(&batch(b, 1024), &r.unwrap()), "batch {b}");
            // Never more than the in-flight bound ahead of what was consumed.
            assert!(pulled.load(Ordering::SeqCst) <= b + 1 + 3, "pulled {} at {b}", pulled.load(Ordering::SeqCst));
        }
        let mut unordered = pool.imap_unordered(std::iter::repeat_with(|| vec![1.0f64; 64]), w1);
        for _ in 0..500 {
            assert_eq!(unordered.next().unwrap().unwrap()[0], w1(1.0));
        }
    });
    common::assert_nothing_leaked();
}

fn panics_on_negative(x: f64) -> f64 {
    assert!(x >= 0.0, "negative input {x}");
    x + 1.0
}

#[test]
fn an_error_surfaces_at_its_batch_and_the_stream_goes_on() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::new(2).unwrap();
        let batches = (0..10).map(|b| if b == 3 { vec![1.0, -1.0] } else { vec![b as f64; 3] });
        let out: Vec<_> = pool.imap(batches, panics_on_negative).collect();
        for (b, r) in out.iter().enumerate() {
            match (b, r) {
                (3, Err(Error::KernelPanicked { message, .. })) => assert!(message.contains("negative"), "{message}"),
                (3, other) => panic!("batch 3: {other:?}"),
                (_, Ok(v)) => assert_eq!(v, &vec![b as f64 + 1.0; 3]),
                (_, Err(e)) => panic!("batch {b}: {e}"),
            }
        }
        let batches = (0..10).map(|b| if b == 5 { vec![-2.0] } else { vec![0.0] });
        let errors = pool.imap_unordered(batches, panics_on_negative).filter(|r| r.is_err()).count();
        assert_eq!(errors, 1);
    });
    common::assert_nothing_leaked();
}

/// Triples `x` in 20 ms (the stimulus: batches that are still running).
fn slow(x: f64) -> f64 {
    std::thread::sleep(Duration::from_millis(20));
    x * 3.0
}

#[test]
fn dropping_streams_and_tickets_early_leaves_the_pool_usable() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).slots(8).build().unwrap();
        for _ in 0..5 {
            let mut it = pool.imap((0..1000).map(|b| vec![b as f64; 4]), slow);
            assert_eq!(it.next().unwrap().unwrap(), vec![0.0; 4]);
            drop(it); // batches in flight are withdrawn or discarded
        }
        for _ in 0..20 {
            // A running inline ticket and a running staged one, dropped at once.
            drop(pool.submit(&[1.0f64; 8], slow).unwrap());
            drop(pool.submit(&vec![2.0f64; 100_000], |x: f64| x + 1.0).unwrap());
        }
        // Every slot comes back: many more maps than slots all succeed.
        for i in 0..200 {
            let xs = batch(i, 100);
            assert!(exact(&xs, &pool.map(&xs, w1).unwrap()), "map {i}");
        }
        let t = pool.submit(&[4.0f64], slow).unwrap();
        assert_eq!(t.wait().unwrap(), [12.0]);
    });
    common::assert_nothing_leaked();
}

#[test]
fn tickets_time_out_and_poll_without_losing_their_result() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::new(2).unwrap();
        let mut t = pool.submit(&[1.0f64, 2.0], slow).unwrap();
        assert!(t.try_wait().transpose().is_none(), "a 40 ms batch is not done at once");
        assert!(t.wait_timeout(Duration::from_millis(1)).unwrap().is_none());
        let mut got = None;
        while got.is_none() {
            got = t.wait_timeout(Duration::from_millis(5)).unwrap();
        }
        assert_eq!(got.unwrap(), [3.0, 6.0]);
        // Staged (large) tickets too.
        let xs = batch(1, 200_000);
        let mut big = pool.submit(&xs, w1).unwrap();
        let ys = loop {
            if let Some(r) = big.try_wait().transpose() {
                break r.unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(exact(&xs, &ys));
        let mut out = vec![0.0; 3];
        let e = pool.submit(&[1.0f64, 2.0], w1).unwrap().wait_into(&mut out).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { input: 2, output: 3 }));
    });
    common::assert_nothing_leaked();
}

#[test]
fn eight_threads_submitting_at_once_get_exact_results() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::new(2).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let pool = &pool;
                s.spawn(move || {
                    let mut out = vec![0.0; 1024];
                    for i in 0..300 {
                        let xs = batch(t * 1000 + i, 1024);
                        pool.submit(&xs, w1).unwrap().wait_into(&mut out).unwrap();
                        assert!(exact(&xs, &out), "thread {t} batch {i}");
                        if i % 50 == 0 {
                            // Blocking maps mixed in, small and large.
                            let big = batch(i, 200_000);
                            assert!(exact(&big, &pool.map(&big, w1).unwrap()));
                        }
                    }
                });
            }
        });
    });
    common::assert_nothing_leaked();
}

/// W1 on a chunk in 30 ms or more (the stimulus: a map that holds the workers).
fn slow_chunk(xs: &[f64], ys: &mut [f64]) {
    std::thread::sleep(Duration::from_millis(30));
    w1_chunk(xs, ys);
}

#[test]
fn a_small_batch_is_not_starved_by_a_huge_map() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).chunk_len(10_000).build().unwrap();
        let xs = SharedVec::from_slice(&batch(0, 2_000_000)).unwrap(); // 200 chunks of 30 ms
        let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
        let huge_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                pool.map_into(&xs, &mut ys, slow_chunk).unwrap();
                huge_done.store(true, Ordering::SeqCst);
            });
            let full = |st: &[u32]| st.iter().all(|&s| s != 0);
            common::ring_words::await_slots(&pool, "the huge map fills the ring", full);
            for i in 0..5 {
                let small = batch(i, 100);
                assert!(exact(&small, &pool.submit(&small, w1).unwrap().wait().unwrap()));
                assert!(!huge_done.load(Ordering::SeqCst), "small batch {i} waited for the whole huge map");
            }
        });
    });
    common::assert_nothing_leaked();
}

#[test]
fn submit_refuses_when_only_unwaited_tickets_hold_the_ring() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(1).slots(4).build().unwrap();
        let tickets: Vec<_> = (0..4).map(|i| pool.submit(&[i as f64], w1).unwrap()).collect();
        // Let them finish: every slot now holds a result nobody has asked for.
        let done = |st: &[u32]| st.iter().all(|&s| s == common::ring_words::DONE);
        common::ring_words::await_slots(&pool, "every ticket finishes", done);
        assert!(matches!(pool.submit(&[9.0f64], w1), Err(Error::RingFull { slots: 4 })));
        assert!(matches!(pool.map(&[9.0f64], w1), Err(Error::RingFull { slots: 4 })));
        let mut tickets = tickets.into_iter();
        assert_eq!(tickets.next().unwrap().wait().unwrap(), [w1(0.0)]);
        assert_eq!(pool.map(&[9.0f64], w1).unwrap(), [w1(9.0)]);
        for (i, t) in tickets.enumerate() {
            assert_eq!(t.wait().unwrap(), [w1(i as f64 + 1.0)]);
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn an_idle_pool_burns_no_cpu_under_any_wait_strategy() {
    let _serial = common::serial();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for w in [WaitStrategy::Spin, WaitStrategy::Adaptive, WaitStrategy::Sleep] {
        let pool = Pool::builder().workers(2).wait_strategy(w).build().unwrap();
        for _ in 0..100 {
            pool.submit(&[1.0f64; 1024], w1).unwrap().wait().unwrap();
        }
        let pids = pool.pids();
        common::await_asleep(&pids); // past any post-work spin
        let before: Vec<u64> = pids.iter().map(|&p| common::cpu_ticks(p).unwrap()).collect();
        let t = Instant::now();
        // The observation window (not a synchronisation): CPU used by idle workers over 1 s.
        std::thread::sleep(Duration::from_secs(1));
        let secs = t.elapsed().as_secs_f64();
        for (p, b) in pids.iter().zip(before) {
            let share = (common::cpu_ticks(*p).unwrap() - b) as f64 / hz / secs;
            assert!(share < 0.03, "{w:?}: idle worker {p} used {:.1}% of a core", share * 100.0);
        }
    }
    common::assert_nothing_leaked();
}

#[test]
fn every_wait_strategy_gives_exact_results() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        for w in [WaitStrategy::Spin, WaitStrategy::Adaptive, WaitStrategy::Sleep] {
            let pool = Pool::builder().workers(2).wait_strategy(w).build().unwrap();
            let mut out = vec![0.0; 1024];
            for i in 0..200 {
                let xs = batch(i, 1024);
                pool.submit(&xs, w1).unwrap().wait_into(&mut out).unwrap();
                assert!(exact(&xs, &out), "{w:?}");
            }
            let big = batch(3, 500_000);
            assert!(exact(&big, &pool.map(&big, w1).unwrap()), "{w:?}");
        }
    });
    common::assert_nothing_leaked();
}

#[test]
fn maps_from_four_threads_survive_workers_killed_under_them() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let pool = Pool::builder().workers(2).chunk_len(20_000).max_attempts(10).build().unwrap();
        let stop = AtomicBool::new(false);
        let kills = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(15)); // the killer's pace: the stimulus
                    let pids = pool.pids();
                    if let Some(&p) = pids.get((n % 2) as usize) {
                        if kill(Pid::from_raw(p as i32), Signal::SIGKILL).is_ok() {
                            kills.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    n += 1;
                }
            });
            let callers: Vec<_> = (0..4)
                .map(|t| {
                    let pool = &pool;
                    s.spawn(move || {
                        for i in 0..15 {
                            let xs = SharedVec::from_slice(&batch(t * 100 + i, 300_000)).unwrap();
                            let mut ys = pool.alloc::<f64>(xs.len()).unwrap();
                            pool.map_into(&xs, &mut ys, w1_chunk).unwrap();
                            assert!(exact(&xs, &ys), "thread {t} map {i}");
                            let small = batch(i, 512);
                            assert!(exact(&small, &pool.submit(&small, w1).unwrap().wait().unwrap()));
                        }
                    })
                })
                .collect();
            for c in callers {
                c.join().unwrap();
            }
            stop.store(true, Ordering::SeqCst);
        });
        assert!(kills.load(Ordering::SeqCst) > 5, "only {} kills landed", kills.load(Ordering::SeqCst));
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Tickets: polled again after their outcome, waited forever, cut into more chunks than slots;
// and `RingFull` only when every slot is held by finished tickets nobody waits for.
// ---------------------------------------------------------------------------------------------

/// `wait_timeout` said the batch failed (kernel panic); asking the same ticket again must not
/// turn that into `Ok` with zeros.
#[test]
fn ticket_polled_again_after_an_error_does_not_report_ok_zeros() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let pool = Pool::new(2).unwrap();
        let mut t = pool.submit(&[-1.0f64, 2.0], panics_on_negative).unwrap();
        let first = loop {
            match t.wait_timeout(Duration::from_millis(50)) {
                Ok(None) => continue,
                other => break other,
            }
        };
        assert!(matches!(first, Err(Error::KernelPanicked { .. })), "{first:?}");
        let second = t.wait_timeout(Duration::from_millis(50));
        assert!(!matches!(second, Ok(Some(_))), "a failed batch is now reported as Ok: {second:?}");
    });
    common::assert_nothing_leaked();
}

/// `try_wait` returned the results once; a second `try_wait` / `wait` must not return zeros as
/// if they were the results (inline and staged tickets).
#[test]
fn ticket_polled_again_after_success_does_not_return_zeros() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let pool = Pool::new(2).unwrap();
        for n in [2usize, 200_000] {
            let xs: Vec<f64> = (0..n).map(pattern).collect();
            let mut t = pool.submit(&xs, w1).unwrap();
            let got = loop {
                if let Some(r) = t.try_wait().transpose() {
                    break r.unwrap();
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            assert_eq!(got[1], w1(xs[1]));
            let again = t.try_wait().transpose();
            if let Some(Ok(v)) = &again {
                assert_eq!(v[1], w1(xs[1]), "n={n}: second try_wait returned Ok with wrong data (zeros)");
            }
            // A spent ticket says so: never Ok with zeros.
            match t.wait() {
                Err(Error::TicketSpent) => {}
                other => panic!("n={n}: wait after try_wait gave {other:?}"),
            }
        }
    });
    common::assert_nothing_leaked();
}

/// "Wait at most forever" must not panic the caller.
#[test]
fn wait_timeout_with_duration_max_does_not_panic() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let pool = Pool::new(1).unwrap();
        let mut t = pool.submit(&[1.0f64], w1).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.wait_timeout(Duration::MAX).map(|v| v.map(|v| v[0]))
        }));
        assert!(r.is_ok(), "Ticket::wait_timeout(Duration::MAX) panicked");
    });
    common::assert_nothing_leaked();
}

/// One thread, one ticket: a 700-element batch travels inline, but `chunk_len(200)` cuts it into
/// four chunks on a two-slot ring. `submit` must not wait for itself (it once filled all chunks
/// before returning while holding finished inline chunks in their slots, at most `slots / active`
/// of them, and waited forever).
#[test]
fn a_single_inline_ticket_with_more_chunks_than_slots_does_not_hang_submit() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let pool = Pool::builder().workers(2).slots(2).chunk_len(200).build().unwrap();
        let xs: Vec<f64> = (0..700).map(pattern).collect();
        let ys = pool.submit(&xs, w1).and_then(|t| t.wait()).unwrap();
        assert!(xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()));
    });
    common::assert_nothing_leaked();
}

/// The same with the default ring (16 slots) and a small `chunk_len`.
#[test]
fn a_single_inline_ticket_with_small_chunks_on_the_default_ring_does_not_hang_submit() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let pool = Pool::builder().workers(2).chunk_len(10).build().unwrap();
        let xs: Vec<f64> = (0..700).map(pattern).collect();
        let ys = pool.submit(&xs, w1).and_then(|t| t.wait()).unwrap();
        assert!(xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()));
    });
    common::assert_nothing_leaked();
}

/// Two threads each hold a finished ticket (together they fill the ring) and each submit one
/// more. Each submit must end (RingFull or Ok); neither may wait forever for the other.
#[test]
fn two_threads_holding_finished_tickets_and_submitting_do_not_livelock() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(1).slots(2).build().unwrap();
        for round in 0..20 {
            eprintln!("livelock round {round}");
            let barrier = Barrier::new(2);
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..2)
                    .map(|i| {
                        let (pool, barrier) = (&pool, &barrier);
                        s.spawn(move || {
                            let held = pool.submit(&[i as f64], w1).unwrap();
                            // Finished, unclaimed: no chunk is waiting or running any more.
                            let finished = |st: &[u32]| st.iter().all(|&s| s != 1 && s != 2);
                            common::ring_words::await_slots(pool, "the held tickets finish", finished);
                            barrier.wait();
                            let started = Instant::now();
                            let r = pool.submit(&[9.0f64], w1).map(|t| t.wait());
                            let took = started.elapsed();
                            drop(held);
                            (r.is_ok(), took)
                        })
                    })
                    .collect();
                for h in hs {
                    let (_, took) = h.join().unwrap();
                    // A watchdog, not a measurement: a livelocked submit never ends.
                    assert!(took < Duration::from_secs(20), "round {round}: submit blocked for {took:?}");
                }
            });
        }
    });
    common::assert_nothing_leaked();
}

/// Three threads on a one-slot ring for 3 s: thread 0 runs blocking maps, the others submit and
/// then wait with `wait_ticket`. Nobody ever holds a finished ticket without waiting for it, so
/// `RingFull` must never appear.
fn no_ring_full_with(wait_ticket: fn(shmpool::Ticket<'_, f64>) -> shmpool::Result<Vec<f64>>) {
    common::watchdog(Duration::from_secs(60), move || {
        let pool = Pool::builder().workers(2).slots(1).build().unwrap();
        let stop = AtomicBool::new(false);
        let fulls: Vec<(usize, u32, u32)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3usize)
                .map(|t| {
                    let (pool, stop) = (&pool, &stop);
                    s.spawn(move || {
                        let (mut ok, mut full) = (0, 0);
                        let mut i = 0;
                        while !stop.load(Ordering::Relaxed) {
                            i += 1;
                            let r = if t == 0 {
                                pool.map(&[i as f64], w1)
                            } else {
                                pool.submit(&[i as f64], w1).and_then(wait_ticket)
                            };
                            match r {
                                Ok(v) => {
                                    assert_eq!(v, [w1(i as f64)]);
                                    ok += 1
                                }
                                Err(Error::RingFull { .. }) => full += 1,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        (t, ok, full)
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs(3)); // how long the mix runs: the stimulus
            stop.store(true, Ordering::Relaxed);
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(fulls.iter().all(|f| f.2 == 0), "(thread, ok, RingFull) = {fulls:?}");
    });
    common::assert_nothing_leaked();
}

/// Every caller waits for its own ticket at once (`submit(..)?.wait()`) or runs a blocking map.
#[test]
fn no_ring_full_when_every_ticket_is_waited_for_at_once() {
    let _serial = common::serial();
    no_ring_full_with(|tk| tk.wait());
}

/// As above, but the ticket owners poll with `wait_timeout` (the documented way to wait while
/// doing something else): they are waiting for their tickets, so `RingFull` must not appear.
#[test]
fn no_ring_full_when_a_ticket_is_being_polled_with_wait_timeout() {
    let _serial = common::serial();
    no_ring_full_with(|mut tk| loop {
        match tk.wait_timeout(Duration::from_micros(200)) {
            Ok(Some(v)) => break Ok(v),
            Ok(None) => continue,
            Err(e) => break Err(e),
        }
    });
}

/// The chaos mix without any kill: maps, submit+wait and submit+wait_timeout pollers on a
/// one-slot ring. Nobody holds a finished ticket without waiting: `RingFull` must not appear.
#[test]
fn no_ring_full_in_the_chaos_mix_without_kills() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        // A second, busy pool (with kills) on the same two cores stands for the other programs
        // of a loaded machine: a caller preempted between `submit` returning and `wait`
        // starting, or between two `wait_timeout` polls, makes the other callers fail.
        let load = std::thread::spawn(|| {
            common::chaos::chaos_round_with(Pool::builder().workers(2).slots(4).max_attempts(50), 4, true);
        });
        let n = common::chaos::chaos_round_with(Pool::builder().workers(2).slots(1).payload_bytes(4096), 4, false);
        load.join().unwrap();
        assert_eq!(n, 0, "{n} false RingFull errors (no worker killed, every ticket waited for at once)");
    });
    common::assert_nothing_leaked();
}
