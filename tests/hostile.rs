//! Hostile QA: attacks on shmpool's promises that go beyond trust.rs / callers.rs / crash.rs.
//! A test here that FAILS (or trips its watchdog) is a broken promise; see the report in the
//! branch's commit messages for which is which.

mod common;

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::workloads::{pattern, w1, w1_chunk};
use shmpool::testing::PausePoint;
use shmpool::{Error, Pool, Process, SharedVec};

/// Maps the pool's ring into this process, as a stray pointer in any process would see it.
fn map_ring(pool: &Pool) -> memmap2::MmapMut {
    let fd = pool.ring_fd_for_test().try_clone_to_owned().unwrap();
    // SAFETY: test only: we deliberately scribble into memory the pool shares.
    unsafe { memmap2::MmapMut::map_mut(&File::from(fd)) }.unwrap()
}

fn word(ring: &memmap2::MmapMut, at: usize) -> u32 {
    u32::from_ne_bytes(ring[at..at + 4].try_into().unwrap())
}

fn set_word(ring: &mut memmap2::MmapMut, at: usize, v: u32) {
    ring[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

// Slot header layout (src/ring/slot.rs): state 0, pid 4, attempt 8, status 12, signal 16,
// message_len 20, map_id 24, claimed_at_us 32, generation 40, stamp 48, fill_seq 56.
const ST: usize = 0;
const GENERATION: usize = 40;
const FILLED: u32 = 1;
const CLAIMED: u32 = 2;

fn alive(pids: &[u32]) -> Vec<u32> {
    pids.iter().copied().filter(|&p| common::pid_alive(p)).collect()
}

fn panics_on_negative(x: f64) -> f64 {
    assert!(x >= 0.0, "negative input");
    x + 1.0
}

// ---------------------------------------------------------------------------------------------
// Promise 1 / 7: a Ticket polled again after it produced its outcome.
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

// ---------------------------------------------------------------------------------------------
// Promise 4: a pool (and its tickets) belong to the process that created them.
// ---------------------------------------------------------------------------------------------

/// A forked child uses the pool it inherited while the parent's ticket waits in the ring. The
/// child can no longer reach the parent's ticket at all (`Process::spawn` takes a `'static`
/// closure, and a ticket borrows its pool); through a shared `Arc<Pool>` it must get
/// `WrongProcess`, and must not take the parent's result out of the ring.
#[test]
fn pool_used_in_a_forked_child_does_not_steal_the_parents_result() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = std::sync::Arc::new(Pool::new(2).unwrap());
        let t = pool.submit(&[1.0f64, 4.0], w1).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // DONE, waiting in its slot
        let inherited = std::sync::Arc::clone(&pool);
        let child = Process::spawn(move || {
            let code = match inherited.map(&[2.0f64], w1) {
                Err(Error::WrongProcess { .. }) => 0,
                Ok(_) => 10, // the child ran maps on the parent's shared ring
                Err(_) => 12,
            };
            unsafe { libc::_exit(code) }
        })
        .unwrap();
        let code = child.join().unwrap().code();
        let parent = t.wait();
        assert_eq!(
            code,
            Some(0),
            "child was allowed to use the parent's pool (exit code {code:?}); parent then got {parent:?}"
        );
        assert_eq!(parent.unwrap(), [w1(1.0), w1(4.0)], "the parent lost its result to the child");
        assert_eq!(pool.map(&[1.0f64], w1).unwrap(), [w1(1.0)], "the parent's pool is broken");
    });
    common::assert_nothing_leaked();
}

/// A child of a raw `fork` drops its copy of a parent's pending ticket (as any child that
/// unwinds or returns does). That must do nothing to the parent's slot.
#[test]
fn ticket_dropped_in_a_raw_forked_child_leaves_the_parents_slot_alone() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        // The worker stops itself before its first claim: the ticket's slot stays FILLED.
        let pool = Pool::builder().workers(1).pause_point(PausePoint::BeforeClaim).build().unwrap();
        let wpid = pool.pids()[0];
        let deadline = Instant::now() + Duration::from_secs(5);
        while common::proc_state(wpid) != Some('T') {
            assert!(Instant::now() < deadline, "worker never paused");
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = pool.submit(&[1.0f64, 4.0], w1).unwrap();
        // SAFETY: fork in a test; the child only drops the ticket and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let t = unsafe { std::ptr::read(&t) };
            drop(t);
            unsafe { libc::_exit(0) };
        }
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        unsafe { libc::kill(wpid as i32, libc::SIGCONT) };
        let r = t.wait();
        assert_eq!(r.unwrap(), [w1(1.0), w1(4.0)], "the child's drop withdrew the parent's chunk");
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 7: RingFull only when every slot is held by finished tickets nobody waits for; no hang.
// ---------------------------------------------------------------------------------------------

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
                            std::thread::sleep(Duration::from_millis(50)); // finished, unclaimed
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
                    assert!(took < Duration::from_secs(5), "round {round}: submit blocked for {took:?}");
                }
            });
        }
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 3: a stray write must never let a map return Ok while a worker still writes.
// ---------------------------------------------------------------------------------------------

fn marker_path() -> std::path::PathBuf {
    // Not the pid: workers evaluate this too.
    std::path::PathBuf::from("/tmp/shmpool_hostile_marker_claimed")
}

/// Slow (writes its output element by element for ~3 s) while the marker file exists.
fn slow_if_marked(xs: &[f64], ys: &mut [f64]) {
    if marker_path().exists() {
        for (y, x) in ys.iter_mut().zip(xs) {
            unsafe { std::ptr::write_volatile(y, w1(*x)) };
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
                // still writes it.
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
            std::thread::sleep(Duration::from_millis(100));
            std::fs::remove_file(marker_path()).unwrap();
            set_word(&mut ring, slot + ST, FILLED);
            let (r, wrote_after, returned) = h.join().unwrap();
            let _ = returned;
            (r, wrote_after)
        });
        let _ = std::fs::remove_file(marker_path());
        let still = alive(&pids);
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
                                std::thread::sleep(Duration::from_millis(30));
                                w1_chunk(x, y)
                            });
                            // Right at return: which workers are still alive?
                            let still = alive(pids);
                            (matches!(r, Err(Error::CorruptSlot { .. })), still)
                        })
                    })
                    .collect();
                std::thread::sleep(Duration::from_millis(150));
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

// ---------------------------------------------------------------------------------------------
// Promise 6: safe code reaching UB.
// ---------------------------------------------------------------------------------------------

/// Was: `NpyArray::open` was a safe fn and `NpyOutput::temp_path` named the file being
/// written, so safe code got `&[f64]` and `&mut [f64]` over the same bytes. Now the output has
/// no name until it is committed (`O_TMPFILE`), and mapping a file is an `unsafe fn` whose
/// contract excludes concurrent writers (a safe call does not compile: see the `compile_fail`
/// doctest on `NpyArray`).
#[test]
fn safe_code_aliases_a_shared_slice_with_a_mutable_one_through_npy_files() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    // `NpyOutput` has no accessor for the file's name (compile_fail doctest on it).
    let _out = shmpool::NpyOutput::create(d.path().join("o.npy"), shmpool::Dtype::F64, &[4]).unwrap();
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

/// Was: safe code truncated a file behind a live `NpyArray` and read the safe slice (SIGBUS).
/// Mapping now takes `unsafe { NpyArray::open(..) }`, whose `# Safety` contract is that
/// nothing truncates or writes the file while it is mapped; what is left here is the part
/// safe code can still do: a committed output is a complete, ordinary file.
#[test]
fn safe_code_gets_a_sigbus_from_a_truncated_npy_file() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("a.npy");
    let mut out = shmpool::NpyOutput::create(&path, shmpool::Dtype::F64, &[100_000]).unwrap();
    out.as_mut_slice::<f64>().unwrap().fill(1.0);
    out.commit().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 + 800_000);
}

/// An absurdly long chunk timeout must not wrap around into an immediate one.
#[test]
fn a_huge_chunk_timeout_does_not_wrap_into_a_tiny_one() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let pool = Pool::builder().workers(1).chunk_timeout(Duration::from_secs(1 << 60)).build().unwrap();
        let r = pool.map(&[1.0f64, 2.0], |x: f64| {
            std::thread::sleep(Duration::from_millis(200));
            x
        });
        assert!(r.is_ok(), "a 36-billion-year timeout killed a 200 ms chunk: {r:?}");
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 3 (soft): a stray write into the ring header.
// ---------------------------------------------------------------------------------------------

/// Ring header layout (src/ring/mod.rs, after the 4096-byte segment header): lock 0, work 64,
/// done 128, shutdown 192, mail 196, spinner 200, ...
const RING_HDR: usize = 4096;
const SPINNER: usize = RING_HDR + 200;

/// A stray write puts a bogus pid in the `spinner` word. Single-chunk maps then only `bump` the
/// work doorbell without waking anyone, and no worker can ever take the token back: every
/// small map waits for a worker's 1 s idle timeout, silently and forever.
#[test]
fn a_scribbled_spinner_word_does_not_silently_slow_every_small_map_to_a_second() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).build().unwrap();
        let mut ring = map_ring(&pool);
        let t0 = Instant::now();
        for i in 0..10 {
            std::thread::sleep(Duration::from_millis(5)); // let the workers go to sleep
            assert_eq!(pool.map(&[i as f64], w1).unwrap(), [w1(i as f64)]);
        }
        let before = t0.elapsed();
        set_word(&mut ring, SPINNER, 1);
        let t0 = Instant::now();
        let mut outcome = Ok(());
        for i in 0..10 {
            std::thread::sleep(Duration::from_millis(5));
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

// ---------------------------------------------------------------------------------------------
// Promise 2 / 7: kills under several callers, tiny rings, recycling.
// ---------------------------------------------------------------------------------------------

fn chaos_round(builder: shmpool::PoolBuilder, secs: u64) {
    chaos_round_with(builder, secs, true);
}

fn chaos_round_with(builder: shmpool::PoolBuilder, secs: u64, kill: bool) -> u64 {
    let rings_full = std::sync::atomic::AtomicU64::new(0);
    let pool = builder.build().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let pool = &pool;
        let stop = &stop;
        let rings_full = &rings_full;
        let mut hs = Vec::new();
        for t in 0..4usize {
            hs.push(s.spawn(move || {
                let mut n = 0u64;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let len = [1usize, 7, 300, 5_000, 70_000][(i + t) % 5];
                    let xs: Vec<f64> = (0..len).map(|k| pattern(k + i)).collect();
                    let ys = match t % 3 {
                        0 => pool.map(&xs, w1),
                        1 => pool.submit(&xs, w1).and_then(|tk| tk.wait()),
                        _ => pool.submit(&xs, w1).and_then(|mut tk| loop {
                            match tk.wait_timeout(Duration::from_millis(3)) {
                                Ok(Some(v)) => break Ok(v),
                                Ok(None) => continue,
                                Err(e) => break Err(e),
                            }
                        }),
                    };
                    match ys {
                        Ok(ys) => {
                            assert!(
                                xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()),
                                "thread {t}: wrong answer for len {len}"
                            );
                            n += 1;
                        }
                        // RingFull here is the race of `false_ring_full_...` below: tolerated so
                        // that this test looks for wrong answers and hangs only.
                        Err(Error::RingFull { .. }) => {
                            rings_full.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::WorkerCrashed { .. }) => {}
                        Err(e) => panic!("thread {t}: unexpected {e:?}"),
                    }
                }
                n
            }));
        }
        // The killer: SIGKILL or SIGSTOP+SIGKILL or SIGSEGV a random worker every few ms.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let pids = pool.pids();
            if !kill {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if let Some(&p) = pids.get((rng % pids.len().max(1) as u64) as usize) {
                let sig = [libc::SIGKILL, libc::SIGSEGV, libc::SIGSTOP][(rng >> 20) as usize % 3];
                unsafe { libc::kill(p as i32, sig) };
                if sig == libc::SIGSTOP {
                    std::thread::sleep(Duration::from_millis(3));
                    unsafe { libc::kill(p as i32, libc::SIGKILL) };
                }
            }
            std::thread::sleep(Duration::from_millis(5 + rng % 20));
        }
        stop.store(true, Ordering::Relaxed);
        let done: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        eprintln!(
            "maps per thread: {done:?}, deaths {}, RingFull {}",
            pool.worker_deaths(),
            rings_full.load(Ordering::Relaxed)
        );
    });
    rings_full.load(Ordering::Relaxed)
}

#[test]
fn kills_under_four_callers_on_a_one_slot_ring() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        chaos_round(Pool::builder().workers(2).slots(1).max_attempts(50).payload_bytes(4096), 6);
    });
    common::assert_nothing_leaked();
}

#[test]
fn kills_under_four_callers_on_a_two_slot_ring_with_recycling_and_timeouts() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        chaos_round(
            Pool::builder()
                .workers(2)
                .slots(2)
                .max_attempts(50)
                .max_chunks_per_worker(1)
                .chunk_timeout(Duration::from_secs(5))
                .payload_bytes(1024),
            6,
        );
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
            std::thread::sleep(Duration::from_secs(3));
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
            chaos_round_with(Pool::builder().workers(2).slots(4).max_attempts(50), 4, true);
        });
        let n = chaos_round_with(Pool::builder().workers(2).slots(1).payload_bytes(4096), 4, false);
        load.join().unwrap();
        assert_eq!(n, 0, "{n} false RingFull errors (no worker killed, every ticket waited for at once)");
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 1: cancellation and shutdown with many callers and outstanding tickets.
// ---------------------------------------------------------------------------------------------

/// Four threads map and submit; one of them keeps a batch of unwaited tickets; another thread
/// terminates the pool. Every call ends (no hang), every `Ok` is exact, every error comes after
/// the workers are dead, and tickets waited after the terminate end too.
#[test]
fn terminate_while_four_threads_map_and_hold_tickets() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        for round in 0..4 {
            let pool = Pool::builder().workers(2).slots(4).chunk_len(500).build().unwrap();
            let pids = pool.pids();
            let bad: Vec<String> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4usize)
                    .map(|t| {
                        let (pool, pids) = (&pool, &pids);
                        s.spawn(move || {
                            let mut bad = Vec::new();
                            let mut held = Vec::new();
                            for i in 0.. {
                                let len = [3usize, 900, 20_000][(i + t) % 3];
                                let xs: Vec<f64> = (0..len).map(|k| pattern(k + i)).collect();
                                let r = match t {
                                    0 => pool.map(&xs, |x: f64| {
                                        std::thread::sleep(Duration::from_micros(50));
                                        w1(x)
                                    }),
                                    1 => pool.submit(&xs, w1).and_then(|tk| tk.wait()),
                                    2 => match pool.submit(&xs[..3], w1) {
                                        Ok(tk) => {
                                            held.push((xs[..3].to_vec(), tk));
                                            if held.len() > 1 {
                                                let (xs, tk) = held.remove(0);
                                                tk.wait().map(|v| {
                                                    assert_eq!(v, xs.iter().map(|x| w1(*x)).collect::<Vec<_>>());
                                                    v
                                                })
                                            } else {
                                                continue;
                                            }
                                        }
                                        Err(e) => Err(e),
                                    },
                                    _ => {
                                        let xs2 = SharedVec::from_slice(&xs).unwrap();
                                        let mut ys = SharedVec::<f64>::zeroed(len).unwrap();
                                        pool.map_into(&xs2, &mut ys, w1_chunk).map(|()| ys.to_vec())
                                    }
                                };
                                match r {
                                    Ok(ys) if t != 2 => {
                                        if !xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()) {
                                            bad.push(format!("thread {t}: wrong answer"));
                                        }
                                    }
                                    Ok(_) => {}
                                    // Refused at the door after terminate(): that map never
                                    // started, so no worker can touch its buffers.
                                    Err(Error::PoolClosed) => break,
                                    Err(e) => {
                                        let still = alive(pids);
                                        if !still.is_empty() {
                                            bad.push(format!("thread {t}: {e:?} returned while {still:?} alive"));
                                        }
                                        break;
                                    }
                                }
                            }
                            // Tickets held across the terminate: they must end, too.
                            for (_, tk) in held {
                                match tk.wait() {
                                    Ok(_) | Err(Error::Cancelled | Error::PoolClosed) => {}
                                    Err(e) => bad.push(format!("held ticket: {e:?}")),
                                }
                            }
                            bad
                        })
                    })
                    .collect();
                std::thread::sleep(Duration::from_millis(100 + 70 * round));
                pool.terminate();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            assert!(bad.is_empty(), "round {round}: {bad:?}");
            assert!(alive(&pids).is_empty());
        }
    });
    common::assert_nothing_leaked();
}

/// `close()` + `join()` while finished tickets are outstanding and never waited; then waiting
/// them gives their results; a ticket whose chunks were still FILLED at `join` is run first.
#[test]
fn join_with_outstanding_unwaited_tickets_then_wait_them() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).slots(8).build().unwrap();
        let slowk = |x: f64| {
            std::thread::sleep(Duration::from_millis(20));
            w1(x)
        };
        let tickets: Vec<_> = (0..6).map(|i| (i, pool.submit(&[i as f64, 1.0], slowk).unwrap())).collect();
        let big_xs: Vec<f64> = (0..100_000).map(pattern).collect();
        let big = pool.submit(&big_xs, w1).unwrap();
        pool.close();
        pool.join().unwrap();
        assert!(pool.pids().is_empty());
        for (i, t) in tickets {
            assert_eq!(t.wait().unwrap(), [w1(i as f64), w1(1.0)]);
        }
        let ys = big.wait().unwrap();
        assert!(big_xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()));
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 1 / 2: dropping streams at awkward moments, then reusing the pool.
// ---------------------------------------------------------------------------------------------

fn slow_elem(x: f64) -> f64 {
    std::thread::sleep(Duration::from_millis(15));
    w1(x)
}

/// Drop an `imap` and an `imap_unordered` while their chunks are CLAIMED and after a worker
/// running one was SIGKILLed, on a two-slot ring; the pool must then still give exact answers
/// from several threads.
#[test]
fn dropping_streams_with_claimed_chunks_after_a_kill_leaves_a_tiny_ring_usable() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(90), || {
        let pool = Pool::builder().workers(2).slots(2).build().unwrap();
        for round in 0..6 {
            let batches = (0..50).map(|b| vec![b as f64; 3]);
            if round % 2 == 0 {
                let mut it = pool.imap(batches, slow_elem);
                let _ = it.next();
            } else {
                let mut it = pool.imap_unordered(batches, slow_elem);
                let _ = it.next();
            }
            // Dropped above with chunks in flight; kill a worker that may be running one.
            let pids = pool.pids();
            unsafe { libc::kill(pids[round % pids.len()] as i32, libc::SIGKILL) };
            std::thread::scope(|s| {
                for t in 0..3 {
                    let pool = &pool;
                    s.spawn(move || {
                        for i in 0..20 {
                            let xs: Vec<f64> = (0..1 + (i * 37 + t) % 500).map(pattern).collect();
                            let ys = pool.map(&xs, w1).unwrap();
                            assert!(xs.iter().zip(&ys).all(|(x, y)| w1(*x).to_bits() == y.to_bits()));
                        }
                    });
                }
            });
        }
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 5: parent threads holding locks while workers are forked.
// ---------------------------------------------------------------------------------------------

fn panics_on_odd(x: i64) -> i64 {
    assert!(x % 2 == 0, "odd {x}");
    x
}

/// Threads hammer `std::env::set_var`, hold stderr's lock, and panic (the panic hook and its
/// output lock), while workers are recycled after every chunk and kernels panic.
#[test]
fn env_writers_stderr_holders_and_panicking_threads_do_not_deadlock_respawned_workers() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut noise = Vec::new();
        {
            let stop = stop.clone();
            noise.push(std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    unsafe { std::env::set_var("SHMPOOL_HOSTILE_NOISE", i.to_string()) };
                }
            }));
        }
        {
            let stop = stop.clone();
            noise.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let l = std::io::stderr().lock();
                    std::thread::sleep(Duration::from_millis(2));
                    drop(l);
                }
            }));
        }
        {
            let stop = stop.clone();
            noise.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::panic::catch_unwind(|| panic!("noise"));
                }
            }));
        }
        let pool = Pool::builder().workers(2).chunk_len(10).max_chunks_per_worker(1).build().unwrap();
        for round in 0..30 {
            let xs: Vec<i64> = (0..200).map(|i| i * 2).collect();
            assert_eq!(pool.map(&xs, panics_on_odd).unwrap(), xs, "round {round}");
            let r = pool.map(&[1i64, 2, 3], panics_on_odd);
            assert!(matches!(r, Err(Error::KernelPanicked { .. })), "round {round}: {r:?}");
        }
        stop.store(true, Ordering::Relaxed);
        for h in noise {
            h.join().unwrap();
        }
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 8: nothing outlives the pool, after panics in user code.
// ---------------------------------------------------------------------------------------------

/// Threads panic while holding tickets (inline and staged, finished and running); the pool is
/// then dropped: no process and no segment may remain.
#[test]
fn threads_panicking_while_holding_tickets_leak_nothing() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).build().unwrap();
        std::thread::scope(|s| {
            for t in 0..4usize {
                let pool = &pool;
                let h = s.spawn(move || {
                    let xs: Vec<f64> = (0..[3, 200_000][t % 2]).map(pattern).collect();
                    // Inline batches run a slow kernel; staged ones a fast one (a dropped ticket's
                    // running chunks are detached, not cancelled).
                    let _tk = if xs.len() < 10 { pool.submit(&xs, slow_elem) } else { pool.submit(&xs, w1) }.unwrap();
                    if t >= 2 {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    panic!("thread {t} gives up");
                });
                let _ = h.join();
            }
        });
        assert_eq!(pool.map(&[2.0f64], w1).unwrap(), [w1(2.0)]);
    });
    common::assert_nothing_leaked();
}

// ---------------------------------------------------------------------------------------------
// Promise 6: sizes.
// ---------------------------------------------------------------------------------------------

/// A shape whose element count overflows must be an error, not a panic (debug) or a tiny file
/// whose header claims 2^61 elements (release).
#[test]
fn npy_output_with_an_overflowing_shape_is_an_error() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let r = std::panic::catch_unwind(|| {
        shmpool::NpyOutput::create(d.path().join("huge.npy"), shmpool::Dtype::F64, &[1 << 61, 1]).map(|o| o.len())
    });
    match r {
        Err(_) => panic!("NpyOutput::create panicked on an overflowing shape"),
        Ok(Ok(len)) => panic!("NpyOutput::create accepted a shape of 2^61 f64 (len {len})"),
        Ok(Err(_)) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Promise 3: the mutex bytes, and corruption under tickets from several threads.
// ---------------------------------------------------------------------------------------------

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
                    std::thread::sleep(Duration::from_micros(200));
                    w1(x)
                });
                (r, alive(&pids))
            });
            std::thread::sleep(Duration::from_millis(50));
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

/// Descriptors of FILLED slots are corrupted while four threads submit and map. No call may
/// return `Ok` with a wrong answer, hang, or panic the parent.
#[test]
fn corruption_under_tickets_from_four_threads_never_gives_a_wrong_ok() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(120), || {
        let first: u64 = std::env::var("HOSTILE_ROUND").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        for round in first..5 {
            // No chunk_len: with one, multi-chunk inline tickets deadlock on their own (see
            // `a_single_inline_ticket_with_more_chunks_than_slots_does_not_hang_submit`).
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
                                        let still = alive(pids);
                                        let published_at_return = pool.pids();
                                        if !still.is_empty() {
                                            let states: Vec<_> = still.iter().map(|&p| common::proc_state(p)).collect();
                                            std::thread::sleep(Duration::from_millis(200));
                                            bad.push(format!(
                                                "thread {t}: CorruptSlot while {still:?} alive (states {states:?}, pool.pids() at return {published_at_return:?}; 200 ms later alive: {:?})",
                                                alive(pids)
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

fn slow_w1(x: f64) -> f64 {
    if x.to_bits() % 64 == 0 {
        std::thread::sleep(Duration::from_micros(100));
    }
    w1(x)
}

// ---------------------------------------------------------------------------------------------
// Promise 7: a single small ticket cut into more chunks than its share of the ring.
// ---------------------------------------------------------------------------------------------

/// One thread, one ticket: a 700-element batch travels inline, but `chunk_len(200)` cuts it into
/// four chunks. `submit` fills all chunks before it returns, holds finished inline chunks in
/// their slots (`Output::Hold`), and may hold at most `slots / active` of them: on a two-slot
/// ring it waits forever for itself.
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

// ---------------------------------------------------------------------------------------------
// Odds and ends of the safe API.
// ---------------------------------------------------------------------------------------------

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

/// A `Process` child that builds its own pool and panics: its workers (our grandchildren) must
/// not outlive it.
#[test]
fn a_child_process_that_builds_a_pool_and_panics_leaves_no_workers() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let path = std::env::temp_dir().join(format!("shmpool_hostile_pids_{}", std::process::id()));
        let p2 = path.clone();
        let child = Process::spawn(move || {
            let pool = Pool::new(2).unwrap();
            assert_eq!(pool.map(&[1.0f64], w1).unwrap(), [w1(1.0)]);
            let pids: Vec<String> = pool.pids().iter().map(|p| p.to_string()).collect();
            std::fs::write(&p2, pids.join(",")).unwrap();
            panic!("child gives up with a live pool");
        })
        .unwrap();
        assert_eq!(child.join().unwrap().code(), Some(101));
        let pids: Vec<u32> = std::fs::read_to_string(&path).unwrap().split(',').map(|s| s.parse().unwrap()).collect();
        let _ = std::fs::remove_file(&path);
        common::assert_pids_gone(&pids);
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
                std::thread::sleep(Duration::from_millis(2));
            }
            stop.store(true, Ordering::Relaxed);
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert!(bad.is_empty(), "{bad:?}");
        let t0 = Instant::now();
        let after = pool.map(&(0..10_000).map(pattern).collect::<Vec<_>>(), w1);
        assert!(matches!(after, Ok(_) | Err(Error::PoolBroken { .. })), "{after:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "a map after the scribbling took {:?}", t0.elapsed());
    });
    common::assert_nothing_leaked();
}

/// `terminate` "kills the workers at once and waits for them": also when two threads call it
/// (or `close` + `join`) at the same time. Each call must return only once the workers are dead.
#[test]
fn concurrent_terminate_and_join_calls_each_return_after_the_workers_are_dead() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let mut early = Vec::new();
        for round in 0..10 {
            let pool = Pool::builder().workers(2).build().unwrap();
            let pids = pool.pids();
            let barrier = Barrier::new(3);
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..3)
                    .map(|t| {
                        let (pool, pids, barrier) = (&pool, &pids, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            if round % 2 == 0 || t == 0 {
                                pool.terminate();
                            } else {
                                pool.close();
                                pool.join().unwrap();
                            }
                            alive(pids)
                        })
                    })
                    .collect();
                for h in hs {
                    let still = h.join().unwrap();
                    if !still.is_empty() {
                        early.push((round, still));
                    }
                }
            });
        }
        assert!(early.is_empty(), "terminate/join returned while workers were alive: {early:?}");
    });
    common::assert_nothing_leaked();
}

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
fn a_stale_worker_of_a_finished_map_writes_into_the_next_maps_ok_result() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        std::fs::write(marker_path(), b"").unwrap();
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
            std::thread::sleep(Duration::from_millis(100));
            std::fs::remove_file(marker_path()).unwrap();
            set_word(&mut ring, slot + ST, FILLED);
            h.join().unwrap()
        });
        let _ = std::fs::remove_file(marker_path());
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

/// A stray write turns an idle FREE slot into FILLED (state 0 -> 1). A worker finds its
/// (zeroed) descriptor corrupt and parks it as DONE/CORRUPT for map 0, which nobody owns: the
/// slot is lost for good. On a one-slot ring every later map fails with `RingFull` ("held by
/// finished tickets nobody waits for") forever, instead of the corruption being reported.
#[test]
fn a_free_slot_scribbled_to_filled_is_reported_not_a_permanent_ring_full() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        let pool = Pool::builder().workers(2).slots(1).build().unwrap();
        assert_eq!(pool.map(&[1.0f64], w1).unwrap(), [w1(1.0)]);
        let mut ring = map_ring(&pool);
        let slot = pool.slot_offsets_for_test()[0];
        set_word(&mut ring, slot + ST, FILLED);
        std::thread::sleep(Duration::from_millis(1500)); // a worker wakes (idle timeout) and claims it
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            outcomes.push(pool.map(&[2.0f64], w1));
            std::thread::sleep(Duration::from_millis(100));
        }
        let ring_full = outcomes.iter().filter(|r| matches!(r, Err(Error::RingFull { .. }))).count();
        assert!(ring_full < 5, "every map after one scribbled state word: {:?}", outcomes.last().unwrap());
    });
    common::assert_nothing_leaked();
}
