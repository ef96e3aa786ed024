//! The supervisor thread: forks workers, reaps them, repairs the ring after a death, respawns,
//! serves workers' requests for segment descriptors, tells them to unmap dropped segments, and
//! kills chunks that run past the timeout.
//!
//! It is the only thread that forks workers, and it lives exactly as long as the pool, so a
//! worker's `PR_SET_PDEATHSIG` (which fires when the *forking thread* exits) means "when the
//! pool or its process is gone". Deaths are noticed through pidfds in the same `poll` as the
//! sockets, so detection takes one wake-up, not a polling period.
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
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{Shared, STATE_STOPPING, STATE_TERMINATED};
use crate::error::{Error, Result};
use crate::process;
use crate::ring::now_us;
use crate::shm::mail;
use crate::worker::{self, PausePoint, WorkerCtx};

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
    pidfd: OwnedFd,
    sock: OwnedFd,
    known: HashSet<u64>,
}

/// Facts about one death, kept for tests and diagnostics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Death {
    pub pid: u32,
    pub signal: i32,
    pub detected_at_us: u64,
}

fn spawn(shared: &Shared, index: usize, pause: Option<PausePoint>) -> Result<Kid> {
    let (parent_end, child_end) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Error::os("socketpair", e.into()))?;
    let ctx = WorkerCtx {
        ring: shared.ring.clone(),
        sock: child_end,
        parent: nix::unistd::getpid(),
        spin: shared.cfg.spin,
        recycle_after: shared.cfg.recycle_after,
        pause,
        cpu: shared.cpus.get(index).copied(),
    };
    let pid = process::fork_child(move || worker::run(ctx))?;
    let pidfd = match process::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e);
        }
    };
    Ok(Kid { index, pid, pidfd, sock: parent_end, known: HashSet::new() })
}

pub(crate) fn run(shared: Arc<Shared>, ready: mpsc::Sender<Result<()>>) {
    let mut kids = Vec::with_capacity(shared.cfg.workers);
    for index in 0..shared.cfg.workers {
        match spawn(&shared, index, shared.cfg.pause) {
            Ok(k) => kids.push(k),
            Err(e) => {
                kill_all(&mut kids);
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    publish_pids(&shared, &kids);
    let _ = ready.send(Ok(()));
    drop(ready);
    Supervisor { shared, kids, start_failures: 0, stop_deadline: None, timed_out: HashSet::new() }.serve();
}

fn kill_all(kids: &mut Vec<Kid>) {
    for k in kids.iter() {
        let _ = kill(k.pid, Signal::SIGKILL);
    }
    for k in kids.drain(..) {
        let _ = waitpid(k.pid, None);
    }
}

fn publish_pids(shared: &Shared, kids: &[Kid]) {
    let mut p = shared.pids.lock().unwrap_or_else(|e| e.into_inner());
    *p = kids.iter().map(|k| k.pid.as_raw() as u32).collect();
}

struct Supervisor {
    shared: Arc<Shared>,
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
                kill_all(&mut self.kids);
            } else if state == STATE_STOPPING {
                let deadline = *self.stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                self.shared.ring.request_shutdown();
                if Instant::now() >= deadline {
                    kill_all(&mut self.kids);
                }
            }
            if state >= STATE_STOPPING && self.kids.is_empty() {
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
                self.prune_segments();
                last_prune = Instant::now();
            }
        }
        publish_pids(&self.shared, &self.kids);
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
        let status = loop {
            match waitpid(kid.pid, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        };
        let (signal, code) = match status {
            Ok(WaitStatus::Signaled(_, sig, _)) => (sig as i32, None),
            Ok(WaitStatus::Exited(_, code)) => (0, Some(code)),
            _ => (0, None),
        };
        let pid = kid.pid.as_raw() as u32;
        // Count the death before the ring shows its consequences to the map caller.
        if code != Some(0) {
            self.shared.stats.deaths.fetch_add(1, Ordering::Relaxed);
            let mut log = self.shared.deaths.lock().unwrap_or_else(|e| e.into_inner());
            log.push(Death { pid, signal, detected_at_us: detected });
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
            Err(e) => self.shared.fail(format!("ring lock failed after worker {pid} died: {e}")),
        }
        hdr.work.ring();
        hdr.done.ring();
        if code == Some(worker::FATAL_EXIT_CODE) {
            self.start_failures += 1;
        } else {
            self.start_failures = 0;
        }
        if self.shared.state.load(Ordering::SeqCst) < STATE_STOPPING {
            if self.start_failures >= MAX_START_FAILURES {
                self.shared.fail(format!("{} workers in a row exited at start", self.start_failures));
            } else {
                match spawn(&self.shared, kid.index, None) {
                    Ok(k) => {
                        self.shared.stats.respawns.fetch_add(1, Ordering::Relaxed);
                        self.kids.push(k);
                    }
                    Err(e) => {
                        self.start_failures += 1;
                        if self.kids.is_empty() {
                            self.shared.fail(format!("cannot replace worker {pid}: {e}"));
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
        while let Ok(Some(m)) = mail::recv(kid.sock.as_fd(), Duration::ZERO) {
            if m.op != mail::NEED {
                continue;
            }
            let seg = {
                let reg = self.shared.registry.lock().unwrap_or_else(|e| e.into_inner());
                reg.get(&m.id).and_then(|w| w.upgrade())
            };
            let sent = match &seg {
                Some(s) => mail::send(kid.sock.as_fd(), mail::ADD, m.id, Some(s.fd()), s.file_area()),
                None => mail::send(kid.sock.as_fd(), mail::MISSING, m.id, None, None),
            };
            if sent.is_ok() && seg.is_some() {
                kid.known.insert(m.id);
            }
        }
    }

    /// Tells workers to unmap segments whose last handle in the pool's process is gone.
    fn prune_segments(&mut self) {
        let gone: Vec<u64> = {
            let mut reg = self.shared.registry.lock().unwrap_or_else(|e| e.into_inner());
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
                    sent |= mail::send(kid.sock.as_fd(), mail::FORGET, *id, None, None).is_ok();
                }
            }
        }
        if sent {
            let hdr = self.shared.ring.header();
            hdr.mail.fetch_add(1, Ordering::Release);
            hdr.work.ring();
        }
    }

    /// Kills the workers whose chunk overran the timeout. Their slots are marked TIMED_OUT in
    /// `on_death`, after the kill has been reaped: a worker that is still dying could otherwise
    /// write into a buffer the map caller already got back.
    fn check_timeouts(&mut self) {
        let Some(limit) = self.shared.cfg.chunk_timeout else { return };
        let Ok(g) = self.shared.ring.lock() else { return };
        let overdue = g.overdue(now_us(), limit.as_micros() as u64);
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
