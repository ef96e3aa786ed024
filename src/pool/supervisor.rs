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

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
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

/// Starts worker `index` (the first workers of a pool get the pause hook); the handshake of a
/// spawned worker is completed by [`finish`].
fn launch(shared: &Shared, launcher: &mut Launcher, index: usize, first: bool) -> Result<Pending> {
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
        pause: if first { shared.cfg.pause } else { None },
        cpu: shared.cpus.get(index),
    };
    launcher.launch(ctx, parent_end)
}

/// Completes a launched worker's start-up and starts watching it.
fn finish(launcher: &mut Launcher, index: usize, p: Pending) -> Result<Kid> {
    let how = p.how;
    let (pid, sock, pidfd) = launcher.finish(p)?;
    Ok(Kid { index, pid, how, pidfd, sock, known: HashSet::new() })
}

fn spawn(shared: &Shared, launcher: &mut Launcher, index: usize, first: bool) -> Result<Kid> {
    let p = launch(shared, launcher, index, first)?;
    finish(launcher, index, p)
}

pub(crate) fn run(shared: Arc<Shared>, mut launcher: Launcher, ready: mpsc::Sender<Result<()>>) {
    let mut kids = Vec::with_capacity(shared.cfg.workers);
    // Launch every worker first, then wait for their handshakes: exec'd workers start in
    // parallel, and requests to the fork server overlap.
    let mut pending = Vec::with_capacity(shared.cfg.workers);
    let mut failed = None;
    for index in 0..shared.cfg.workers {
        match launch(&shared, &mut launcher, index, true) {
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
    Supervisor { shared, launcher, kids, start_failures: 0, stop_deadline: None, timed_out: HashSet::new() }.serve();
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
        let n = poll(&mut fds, PollTimeout::try_from(tick).unwrap_or(PollTimeout::MAX)).unwrap_or(0);
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
        if code == Some(worker::FATAL_EXIT_CODE) {
            self.start_failures += 1;
        } else {
            self.start_failures = 0;
        }
        if self.shared.state.load(Ordering::SeqCst) < STATE_STOPPING {
            if self.start_failures >= MAX_START_FAILURES {
                self.shared.fail(Error::WorkersFailedToStart { failures: self.start_failures });
            } else {
                match spawn(&self.shared, &mut self.launcher, kid.index, false) {
                    Ok(k) => {
                        self.shared.stats.respawns.fetch_add(1, Ordering::Relaxed);
                        self.kids.push(k);
                    }
                    Err(e) => {
                        self.start_failures += 1;
                        if self.kids.is_empty() {
                            self.shared.fail(e);
                        }
                    }
                }
            }
        }
        publish_pids(&self.shared, &self.kids);
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
        let Some(limit) = self.shared.cfg.chunk_timeout else { return };
        let Ok(g) = self.shared.ring.lock() else { return };
        let overdue = g.overdue(now_us(), u64::try_from(limit.as_micros()).unwrap_or(u64::MAX));
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
