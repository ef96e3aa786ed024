//! Pool start-up and shutdown: workers exist while the pool does, use no CPU while idle, and
//! are gone (with every segment) after drop, close/join or terminate, also with many callers
//! and outstanding tickets and after panics in user code; a pool and its tickets belong to
//! the process that made them.

mod common;

use std::sync::Barrier;
use std::time::Duration;

use common::workloads::{pattern, w1, w1_chunk};
use shmpool::testing::PausePoint;
use shmpool::{Error, Pool, Process, SharedVec};

#[test]
fn idle_pool_uses_almost_no_cpu() {
    let pool = Pool::new(2).unwrap();
    // Some work first, so the workers have been through their spin phase.
    pool.map(&[1.0f64; 1000], |x: f64| x * 2.0).unwrap();
    let pids = pool.pids();
    common::await_asleep(&pids);
    assert_eq!(pids.len(), 2);
    let before: Vec<u64> = pids.iter().map(|&p| common::cpu_ticks(p).unwrap()).collect();
    let t = std::time::Instant::now();
    // The observation window (not a synchronisation): CPU used by idle workers over 2 s.
    std::thread::sleep(Duration::from_secs(2));
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    assert!(hz > 0.0);
    for (p, b) in pids.iter().zip(before) {
        let used = (common::cpu_ticks(*p).unwrap() - b) as f64 / hz;
        let share = used / secs;
        assert!(share < 0.02, "worker {p} used {:.1}% of a core while idle", share * 100.0);
    }
}

#[test]
fn dropping_the_pool_ends_workers_and_leaves_no_segment() {
    let pool = Pool::new(3).unwrap();
    let pids = pool.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| common::pid_alive(p)));
    assert!(common::our_segments().is_empty(), "segment names are unlinked right after creation");
    drop(pool);
    common::assert_pids_gone(&pids);
    assert!(common::our_segments().is_empty());
}

#[test]
fn close_then_join_and_terminate_end_workers() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    pool.close();
    pool.join().unwrap();
    common::assert_pids_gone(&pids);

    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    pool.terminate();
    common::assert_pids_gone(&pids);
    assert!(matches!(pool.map(&[1u8], |x: u8| x), Err(shmpool::Error::PoolClosed)));
}

#[test]
fn many_pools_in_a_row_leak_nothing() {
    let mut all = Vec::new();
    for i in 0..20 {
        let pool = Pool::new(1 + i % 3).unwrap();
        all.extend(pool.pids());
        assert_eq!(pool.map(&[i as u32], |x: u32| x + 1).unwrap(), [i as u32 + 1]);
    }
    common::assert_pids_gone(&all);
    assert!(common::our_segments().is_empty());
}

#[test]
fn a_pool_survives_the_thread_that_created_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits; workers are forked by the pool's
    // own supervisor thread, so a short-lived creating thread does not take them down.
    let pool = std::thread::spawn(|| Pool::new(2).unwrap()).join().unwrap();
    // The window in which a parent-death signal would have killed them (not a synchronisation:
    // what is checked is that nothing happens).
    std::thread::sleep(Duration::from_millis(100));
    let pids = pool.pids();
    assert!(pids.iter().all(|&p| common::pid_alive(p)), "workers died with their creating thread");
    assert_eq!(pool.map(&[1i16, 2], |x: i16| -x).unwrap(), [-1, -2]);
}

// ---------------------------------------------------------------------------------------------
// A pool and its tickets belong to the process that made them; terminate, close and join with
// many callers and outstanding tickets; nothing outlives the pool, after panics in user code too.
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
        common::ring_words::await_slot_state(&pool, common::ring_words::DONE); // waiting in its slot
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
        common::wait_until(Duration::from_secs(20), "the worker pauses", || common::proc_state(wpid) == Some('T'));
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
                                        // Slow maps: the terminate meets them running.
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
                                        let still = common::alive(pids);
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
                // The stimulus: each round terminates at a later moment of the calls.
                std::thread::sleep(Duration::from_millis(100 + 70 * round));
                pool.terminate();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            assert!(bad.is_empty(), "round {round}: {bad:?}");
            assert!(common::alive(&pids).is_empty());
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
            // Slow: some chunks are still FILLED or CLAIMED at `join` (the stimulus).
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
                            common::alive(pids)
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

/// W1 taking 15 ms per element (the stimulus: chunks still running when the test acts).
fn slow_elem(x: f64) -> f64 {
    std::thread::sleep(Duration::from_millis(15));
    w1(x)
}

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
                        // These panic later, with their tickets finished (the stimulus).
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

/// A `Process` child that builds its own pool and panics: its workers (our grandchildren) must
/// not outlive it. The child is exec'd (`Process::spawn_fn`): a forked child of this threaded
/// test binary could inherit a std lock another test thread held and hang in its panic hook
/// (README, Known gaps), which this test is not about.
#[test]
fn a_child_process_that_builds_a_pool_and_panics_leaves_no_workers() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(30), || {
        let parent = std::process::id();
        let child = Process::spawn_fn(child_builds_a_pool_and_panics, parent).unwrap();
        assert_eq!(child.join().unwrap().code(), Some(101));
        let path = pids_file(parent);
        let pids: Vec<u32> = std::fs::read_to_string(&path).unwrap().split(',').map(|s| s.parse().unwrap()).collect();
        let _ = std::fs::remove_file(&path);
        common::assert_pids_gone(&pids);
    });
    common::assert_nothing_leaked();
}

fn pids_file(parent: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shmpool_lifecycle_pids_{parent}"))
}

/// The child of `a_child_process_that_builds_a_pool_and_panics_leaves_no_workers`.
fn child_builds_a_pool_and_panics(parent: u32) {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(&[1.0f64], w1).unwrap(), [w1(1.0)]);
    let pids: Vec<String> = pool.pids().iter().map(|p| p.to_string()).collect();
    std::fs::write(pids_file(parent), pids.join(",")).unwrap();
    panic!("child gives up with a live pool");
}
