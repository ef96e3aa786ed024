//! The supervisor thread: starts workers (by the pool's start method), reaps them, repairs the
//! ring after a death, respawns, serves workers' requests for segment descriptors, tells them to
//! unmap dropped segments, and kills chunks that run past the timeout.
//!
//! It is the only thread that forks or spawns workers, and it lives exactly as long as the
//! pool, so a worker's `PR_SET_PDEATHSIG` (which fires when the *forking thread* exits) means
//! "when the pool or its process is gone". Workers of the fork server die with the server,
//! which kills them when their pool's connection or the program's control socket closes.
//! Deaths are noticed through pidfds in the same `poll` as the sockets, so detection takes one
//! wake-up, not a polling period.
#![deny(unsafe_code)]

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::{lock, Shared, WaitStrategy, STATE_STOPPING, STATE_TERMINATED};
use crate::error::{Error, Result};
use crate::ipc::{self, Message};
use crate::start::{How, Launcher, Pending};
use crate::sync::now_us;
use crate::worker::{self, WorkerCtx};

/// How long a graceful shutdown waits for workers before killing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Longest sleep of the supervisor between checks (timeouts, dropped segments).
const TICK: Duration = Duration::from_millis(50);
/// Worker start failures in a row after which the pool gives up.
const MAX_START_FAILURES: u32 = 5;
/// First wait before a missing worker is started again (a replacement that failed: EMFILE,
/// EAGAIN, ENOMEM...); it doubles after each failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(10);
/// Longest wait between two attempts to start a missing worker.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a pool may have no worker at all, while it keeps trying to start some, before it
/// fails its maps (a shortage that outlasts this is not transient).
const NO_WORKER_LIMIT: Duration = Duration::from_secs(5);

struct Kid {
    /// Position in the pool (0..workers); a replacement takes its predecessor's.
    index: usize,
    pid: Pid,
    how: How,
    pidfd: OwnedFd,
    sock: OwnedFd,
    known: HashSet<u64>,
}

/// Facts about one abnormal worker death (diagnostics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerDeath {
    /// The dead worker's pid.
    pub pid: u32,
    /// The signal that killed it (0: it exited with a non-zero code).
    pub signal: i32,
    /// CLOCK_MONOTONIC microseconds when the supervisor noticed the death.
    pub detected_at_us: u64,
}

/// How long the supervisor waits for the exit status of a worker the fork server reaps.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts worker `index`; the handshake of a spawned worker is completed by [`finish`].
fn launch(shared: &Shared, launcher: &mut Launcher, index: usize) -> Result<Pending> {
    let (parent_end, child_end) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Error::os("socketpair", e.into()))?;
    let ctx = WorkerCtx {
        ring: shared.ring.clone(),
        sock: child_end,
        parent: nix::unistd::getpid(),
        // How long the one spinning idle worker spins after a chunk: none under `Sleep`; under
        // `Spin`, ten times the adaptive budget, without yielding.
        spin: match shared.cfg.wait {
            WaitStrategy::Sleep => Duration::ZERO,
            WaitStrategy::Adaptive => shared.cfg.spin,
            WaitStrategy::Spin => shared.cfg.spin.saturating_mul(10),
        },
        polite: shared.cfg.wait != WaitStrategy::Spin,
        recycle_after: shared.cfg.recycle_after,
        // Set by the launcher for the pool's first workers (`start::launch::TestHooks`).
        #[cfg(any(test, feature = "testing"))]
        pause: None,
        cpu: shared.cpus.get(index),
        init: shared.cfg.worker_init,
    };
    launcher.launch(ctx, parent_end)
}

/// Completes a launched worker's start-up and starts watching it.
fn finish(launcher: &mut Launcher, index: usize, p: Pending) -> Result<Kid> {
    let how = p.how;
    let (pid, sock, pidfd) = launcher.finish(p)?;
    Ok(Kid { index, pid, how, pidfd, sock, known: HashSet::new() })
}

fn spawn(shared: &Shared, launcher: &mut Launcher, index: usize) -> Result<Kid> {
    let p = launch(shared, launcher, index)?;
    finish(launcher, index, p)
}

pub(crate) fn run(shared: Arc<Shared>, mut launcher: Launcher, ready: mpsc::Sender<Result<()>>) {
    let mut kids = Vec::with_capacity(shared.cfg.workers);
    // Launch every worker first, then wait for their handshakes: exec'd workers start in
    // parallel, and requests to the fork server overlap.
    let mut pending = Vec::with_capacity(shared.cfg.workers);
    let mut failed = None;
    for index in 0..shared.cfg.workers {
        match launch(&shared, &mut launcher, index) {
            Ok(p) => pending.push((index, p)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let mut advanced = Vec::with_capacity(pending.len());
    for (index, mut p) in pending {
        match launcher.advance(&mut p) {
            Ok(()) => advanced.push((index, p)),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    for (index, p) in advanced {
        match finish(&mut launcher, index, p) {
            Ok(k) => kids.push(k),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        kill_all(&mut launcher, &mut kids);
        shared.reaped.store(true, Ordering::Release);
        let _ = ready.send(Err(e));
        return;
    }
    publish_pids(&shared, &kids);
    let _ = ready.send(Ok(()));
    drop(ready);
    Supervisor {
        shared,
        launcher,
        kids,
        start_failures: 0,
        stop_deadline: None,
        timed_out: HashSet::new(),
        missing: Vec::new(),
        retry_at: Instant::now(),
        retry_delay: RETRY_FIRST,
        no_worker_since: None,
        last_start_error: None,
        clock: StopClock::default(),
    }
    .serve();
}

fn kill_all(launcher: &mut Launcher, kids: &mut Vec<Kid>) {
    for k in kids.iter() {
        let _ = kill(k.pid, Signal::SIGKILL);
    }
    for k in kids.drain(..) {
        let _ = launcher.reap(k.pid, k.how, STATUS_TIMEOUT);
    }
}

fn publish_pids(shared: &Shared, kids: &[Kid]) {
    *lock(&shared.pids) = kids.iter().map(|k| k.pid.as_raw() as u32).collect();
}

struct Supervisor {
    shared: Arc<Shared>,
    launcher: Launcher,
    kids: Vec<Kid>,
    start_failures: u32,
    stop_deadline: Option<Instant>,
    /// Workers killed for overrunning the chunk timeout, not yet reaped.
    timed_out: HashSet<u32>,
    /// Positions of workers that died and could not be replaced yet (a transient shortage of
    /// descriptors, processes or memory): retried with backoff until they run again.
    missing: Vec<usize>,
    /// When the next attempt to start the missing workers is due.
    retry_at: Instant,
    /// The wait after the next failed attempt (doubles up to [`RETRY_MAX`]).
    retry_delay: Duration,
    /// Since when the pool has had no worker at all (while some are missing).
    no_worker_since: Option<Instant>,
    /// Why the last attempt to start a missing worker failed.
    last_start_error: Option<String>,
    /// The intervals in which the program was stopped, for the chunk timeout.
    clock: StopClock,
}

/// How much longer than its timeout a wait of the supervisor may last before the difference
/// counts as the program having been stopped (Ctrl-Z, SIGSTOP) rather than as a slow wake-up
/// (less for a chunk timeout under 1 s: a quarter of it).
const STOP_SLACK: Duration = Duration::from_millis(250);
/// How many stops [`StopClock`] remembers (older ones no longer matter to any running chunk
/// in practice: a chunk that lived through that many stops is charged for the older ones).
const STOPS_KEPT: usize = 64;

/// The time the chunk timeout counts: wall time (CLOCK_MONOTONIC) minus the intervals in which
/// the program, and so the supervisor thread, was stopped.
///
/// A SIGSTOP or Ctrl-Z does not stop the clocks, and a worker's CPU time cannot tell a kernel
/// that hangs in a blocking call (which must time out) from one that was stopped. What does
/// tell is the supervisor itself: it wakes at least every tick, so a wait of a tick that
/// lasted far longer means that the whole program was not running; that excess is left out.
/// `Spawn` and `ForkServer` workers run in a session of their own and go on through a Ctrl-Z
/// of the program; their time while it was stopped is not counted either. Time in which only a
/// worker was stopped counts (the program was waiting for it, as for a hung one). A supervisor
/// late for another reason (a machine so loaded that it did not run for [`STOP_SLACK`]) has
/// the excess left out too: the timeout then fires later, never earlier. A stop that lands
/// while the supervisor is busy elsewhere (replacing a worker) is counted as running time.
#[derive(Debug, Default)]
struct StopClock {
    /// (start, end) in CLOCK_MONOTONIC µs, oldest first.
    stops: std::collections::VecDeque<(u64, u64)>,
}

impl StopClock {
    /// Records a wait that began at `before` and ended at `after` (µs) and should have lasted
    /// at most `longest` (its timeout plus the slack allowed for a late wake-up).
    fn waited(&mut self, before: u64, after: u64, longest: Duration) {
        let expected = before.saturating_add(u64::try_from(longest.as_micros()).unwrap_or(u64::MAX));
        if after > expected {
            if self.stops.len() == STOPS_KEPT {
                self.stops.pop_front();
            }
            self.stops.push_back((expected, after));
        }
    }

    /// The time counted as running between `since` and `now` (µs).
    fn running_since(&self, since: u64, now: u64) -> u64 {
        let stopped: u64 = self.stops.iter().map(|&(start, end)| end.min(now).saturating_sub(start.max(since))).sum();
        now.saturating_sub(since).saturating_sub(stopped)
    }
}

impl Supervisor {
    fn serve(mut self) {
        let mut last_prune = Instant::now();
        loop {
            let state = self.shared.state.load(Ordering::SeqCst);
            if state == STATE_TERMINATED {
                kill_all(&mut self.launcher, &mut self.kids);
            } else if state == STATE_STOPPING {
                let deadline = *self.stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                self.shared.ring.request_shutdown();
                if Instant::now() >= deadline {
                    kill_all(&mut self.launcher, &mut self.kids);
                }
            }
            if state >= STATE_STOPPING && self.kids.is_empty() {
                break;
            }
            if self.shared.failure().is_some() {
                // The pool is broken (corruption, a lock that no longer works, workers that
                // cannot start): no worker may keep running; `serve` ends by killing them.
                break;
            }
            let (dead, mail_from) = self.wait_events();
            for i in dead.into_iter().rev() {
                let kid = self.kids.swap_remove(i);
                self.on_death(kid);
            }
            for pid in mail_from {
                self.serve_mail(pid);
            }
            self.check_timeouts();
            self.replace_missing();
            if last_prune.elapsed() >= TICK {
                // Idle spares go first, so that this very prune has the workers unmap them.
                self.shared.staging.trim_idle(Instant::now());
                self.prune_segments();
                self.reclaim_spinner();
                last_prune = Instant::now();
            }
        }
        kill_all(&mut self.launcher, &mut self.kids);
        publish_pids(&self.shared, &self.kids);
        // PUBLISH: every worker is dead and reaped; map callers waiting on a cancelled or
        // failed pool may now return (they observe this with Acquire).
        self.shared.reaped.store(true, Ordering::Release);
        self.shared.ring.header().done.ring();
    }

    /// Sleeps until a worker dies, a worker writes, the pool pokes us, or a tick passes.
    /// Returns the indices of dead kids and the pids of kids with mail.
    fn wait_events(&mut self) -> (Vec<usize>, Vec<Pid>) {
        let mut fds = Vec::with_capacity(1 + 2 * self.kids.len());
        fds.push(PollFd::new(self.shared.poke_rx.as_fd(), PollFlags::POLLIN));
        for k in &self.kids {
            fds.push(PollFd::new(k.pidfd.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(k.sock.as_fd(), PollFlags::POLLIN));
        }
        let tick = match self.shared.cfg.chunk_timeout {
            Some(t) => TICK.min(t / 4).max(Duration::from_millis(1)),
            None => TICK,
        };
        let before = now_us();
        let n = super::poll_set::poll_all(&mut fds, PollTimeout::try_from(tick).unwrap_or(PollTimeout::MAX));
        // A wait longer than asked by more than a quarter of the timeout (at most STOP_SLACK)
        // was a stop: so even a stop of hours charges a chunk less than half its timeout.
        let slack = match self.shared.cfg.chunk_timeout {
            Some(t) => STOP_SLACK.min(t / 4),
            None => STOP_SLACK,
        };
        self.clock.waited(before, now_us(), tick + slack);
        let mut dead = Vec::new();
        let mut mail_from = Vec::new();
        if n > 0 {
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[0]) {
                let mut buf = [0u8; 64];
                while nix::unistd::read(self.shared.poke_rx.as_fd(), &mut buf).is_ok_and(|n| n > 0) {}
            }
            for (i, k) in self.kids.iter().enumerate() {
                if ready(&fds[1 + 2 * i]) {
                    dead.push(i);
                } else if ready(&fds[2 + 2 * i]) {
                    mail_from.push(k.pid);
                }
            }
        }
        (dead, mail_from)
    }

    fn on_death(&mut self, kid: Kid) {
        let detected = now_us();
        let status = self.launcher.reap(kid.pid, kid.how, STATUS_TIMEOUT);
        let (signal, code) = match status {
            Some(WaitStatus::Signaled(_, sig, _)) => (sig as i32, None),
            Some(WaitStatus::Exited(_, code)) => (0, Some(code)),
            _ => (0, None),
        };
        let pid = kid.pid.as_raw() as u32;
        // Count the death before the ring shows its consequences to the map caller.
        if code != Some(0) {
            self.shared.stats.deaths.fetch_add(1, Ordering::Relaxed);
            lock(&self.shared.deaths).push(WorkerDeath { pid, signal, detected_at_us: detected });
        }
        let ring = &self.shared.ring;
        let hdr = ring.header();
        let _ = hdr.spinner.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        match ring.lock() {
            Ok(mut g) => {
                if self.timed_out.remove(&pid) {
                    g.time_out_pid(pid);
                }
                g.requeue_dead(pid, signal as u32, self.shared.cfg.max_attempts);
            }
            Err(e) => self.shared.fail(e),
        }
        hdr.work.ring();
        hdr.done.ring();
        if code == Some(0)
            && self.shared.ring.shutdown_requested()
            && self.shared.state.load(Ordering::SeqCst) < STATE_STOPPING
        {
            // Nobody asked the workers to stop: the shutdown word was overwritten.
            self.shared.fail(Error::PoolBroken { reason: "the ring's shutdown word was overwritten".into() });
        }
        // Every replacement would run the same `worker_init` again: stop instead.
        let init_panicked = code == Some(worker::INIT_PANICKED_EXIT_CODE);
        if init_panicked {
            self.shared.fail(Error::WorkerInitPanicked { pid });
        }
        if code == Some(worker::FATAL_EXIT_CODE) {
            self.start_failures += 1;
        } else {
            self.start_failures = 0;
        }
        if !init_panicked && self.shared.state.load(Ordering::SeqCst) < STATE_STOPPING {
            if self.start_failures >= MAX_START_FAILURES {
                self.shared.fail(Error::WorkersFailedToStart { failures: self.start_failures });
            } else {
                self.missing.push(kid.index);
                // A death is a reason to try at once, whatever the backoff says.
                self.retry_at = Instant::now();
                self.replace_missing();
            }
        }
        publish_pids(&self.shared, &self.kids);
    }

    /// Starts the workers that are missing, when the backoff allows. A start that fails
    /// (EMFILE, EAGAIN, ENOMEM, a fork server that cannot be restarted yet...) leaves the
    /// worker missing and doubles the wait before the next attempt, so a transient shortage
    /// costs capacity for a while, never for the pool's life. A pool that has had no worker at
    /// all for [`NO_WORKER_LIMIT`] fails its maps; so does one with no worker whose start failed
    /// in a way no retry can change (another binary, no `init()`).
    fn replace_missing(&mut self) {
        if self.missing.is_empty() || self.shared.state.load(Ordering::SeqCst) >= STATE_STOPPING {
            self.no_worker_since = None;
            return;
        }
        let now = Instant::now();
        if now >= self.retry_at {
            while let Some(index) = self.missing.pop() {
                match spawn(&self.shared, &mut self.launcher, index) {
                    Ok(k) => {
                        self.shared.stats.respawns.fetch_add(1, Ordering::Relaxed);
                        self.kids.push(k);
                        self.retry_delay = RETRY_FIRST;
                    }
                    Err(e) => {
                        self.missing.push(index);
                        if self.kids.is_empty()
                            && matches!(e, Error::BinaryMismatch { .. } | Error::InitNotCalled { .. })
                        {
                            self.shared.fail(e);
                            return;
                        }
                        self.retry_at = now + self.retry_delay;
                        self.retry_delay = self.retry_delay.saturating_mul(2).min(RETRY_MAX);
                        self.last_start_error = Some(chain(&e));
                        break;
                    }
                }
            }
            publish_pids(&self.shared, &self.kids);
        }
        if !self.kids.is_empty() || self.missing.is_empty() {
            self.no_worker_since = None;
            return;
        }
        let since = *self.no_worker_since.get_or_insert(now);
        if now.duration_since(since) >= NO_WORKER_LIMIT {
            let why = self.last_start_error.take().unwrap_or_else(|| "no reason given".into());
            self.shared.fail(Error::PoolBroken {
                reason: format!("no worker could be started for {} s (last attempt: {why})", NO_WORKER_LIMIT.as_secs()),
            });
        }
    }

    fn serve_mail(&mut self, pid: Pid) {
        let Some(kid) = self.kids.iter_mut().find(|k| k.pid == pid) else {
            return;
        };
        while let Ok(Some(m)) = ipc::recv(kid.sock.as_fd(), Duration::ZERO) {
            let Message::Need { id } = m else { continue };
            let seg = lock(&self.shared.registry).get(&id).and_then(|w| w.upgrade());
            let sent = match &seg {
                Some(s) => ipc::send_add(kid.sock.as_fd(), id, s.fd(), s.file_area()),
                None => ipc::send_missing(kid.sock.as_fd(), id),
            };
            if sent.is_ok() && seg.is_some() {
                kid.known.insert(id);
            }
        }
    }

    /// Tells workers to unmap segments whose last handle in the pool's process is gone.
    fn prune_segments(&mut self) {
        let gone: Vec<u64> = {
            let mut reg = lock(&self.shared.registry);
            let gone: Vec<u64> = reg.iter().filter(|(_, w)| w.strong_count() == 0).map(|(id, _)| *id).collect();
            for id in &gone {
                reg.remove(id);
            }
            gone
        };
        if gone.is_empty() {
            return;
        }
        let mut sent = false;
        for kid in &mut self.kids {
            for id in &gone {
                if kid.known.remove(id) {
                    sent |= ipc::send_forget(kid.sock.as_fd(), *id).is_ok();
                }
            }
        }
        if sent {
            let hdr = self.shared.ring.header();
            hdr.mail.fetch_add(1, Ordering::Release);
            hdr.work.ring();
        }
    }

    /// Frees the spinner token if it names no worker (a stray write): otherwise no idle worker
    /// could ever spin again. Takes it over from a holder that has not polled for a tick (a
    /// stopped worker), and wakes the sleepers: a chunk bumped for it (a ticket nobody waits
    /// for yet) must not wait for a sleeper's timeout.
    fn reclaim_spinner(&self) {
        let ring = &self.shared.ring;
        let spinner = &ring.header().spinner;
        let s = spinner.load(Ordering::SeqCst);
        if s != 0 && !self.kids.iter().any(|k| k.pid.as_raw() as u32 == s) {
            let _ = spinner.compare_exchange(s, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
        let stale = u64::try_from(TICK.as_micros()).unwrap_or(u64::MAX);
        if ring.take_over_stale_spinner(now_us(), stale).is_some() {
            ring.header().work.ring();
        }
    }

    /// Kills the workers whose chunk overran the timeout. Their slots are marked TIMED_OUT in
    /// `on_death`, after the kill has been reaped: a worker that is still dying could otherwise
    /// write into a buffer the map caller already got back.
    fn check_timeouts(&mut self) {
        // Chunk time is counted by `StopClock`: a stop of the whole program is not running time.
        let Some(limit) = self.shared.cfg.chunk_timeout else { return };
        let Ok(g) = self.shared.ring.lock() else { return };
        let now = now_us();
        let overdue = g.overdue(u64::try_from(limit.as_micros()).unwrap_or(u64::MAX), |claimed| {
            self.clock.running_since(claimed, now)
        });
        drop(g);
        for (_, pid) in overdue {
            // Only ever signal our own children, whatever a slot header says.
            if let Some(kid) = self.kids.iter().find(|k| k.pid.as_raw() as u32 == pid) {
                if self.timed_out.insert(pid) {
                    let _ = kill(kid.pid, Signal::SIGKILL);
                }
            }
        }
    }
}

/// An error and its sources on one line ("socketpair failed: Too many open files (os error 24)").
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_of_the_program_is_left_out_of_chunk_time_and_slow_wake_ups_are_not() {
        let tick = Duration::from_millis(50) + STOP_SLACK;
        let mut c = StopClock::default();
        // Waits that end on time, or a little late: all running time.
        c.waited(0, 50_000, tick);
        c.waited(50_000, 250_000, tick);
        assert_eq!(c.running_since(0, 250_000), 250_000);
        // A 10 s wait for a 50 ms tick: the program was stopped for all but 300 ms of it.
        c.waited(250_000, 10_250_000, tick);
        assert_eq!(c.running_since(0, 10_250_000), 550_000);
        // A chunk claimed after the stop is charged nothing for it; one claimed during the stop
        // is charged only what came after the stop.
        assert_eq!(c.running_since(10_250_000, 10_300_000), 50_000);
        assert_eq!(c.running_since(5_000_000, 10_300_000), 50_000);
        // Only so many stops are remembered.
        for i in 0..(STOPS_KEPT as u64 + 10) {
            let at = 20_000_000 + i * 2_000_000;
            c.waited(at, at + 1_000_000, tick);
        }
        assert_eq!(c.stops.len(), STOPS_KEPT);
    }
}
