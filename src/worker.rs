//! The worker loop: validate the ring, claim a chunk, run its kernel under `catch_unwind`,
//! publish, repeat; exit with the parent.
//!
//! A worker is started by the pool's supervisor thread (forked or exec'd, `PR_SET_PDEATHSIG`
//! tied to that thread, which lives exactly as long as the pool) or by the fork server (tied to
//! the server, which kills it when the pool's connection closes); `start` prepares its
//! [`WorkerCtx`] in the latter cases. It maps array segments lazily, asking the
//! supervisor for their descriptors over its socket. It never holds the ring mutex while a
//! kernel runs, never lets a panic cross the process boundary, and never returns: it leaves
//! through `_exit` so that no destructor of the parent's state (copied by `fork`) runs in it.
//!
//! What a worker must never touch: anything another thread of the parent could have held at
//! the fork. It never prints (no std stdio: its locks may be held forever; a kernel panic is
//! reported through the slot, and the panic hook writes one raw line), never flushes, never
//! installs a panic hook, and exits with `_exit`. Right after the fork it drops what it
//! inherited but was not given: every other shmpool mapping (a dropped array must not stay
//! pinned in `/dev/shm` by a worker) and every descriptor but its socket, its ring and stdio.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::ipc::{self, Message};
use crate::kernel::KernelRef;
use crate::launch::fork;
use crate::ring::zip::{zip_inputs, ZipHeader};
use crate::ring::{scratch, ChunkIo, Claim, Descriptor, Ring, Status};
use crate::shm::{Segment, SegmentKind};

/// Where a worker stops itself with SIGSTOP, so a test can SIGKILL it at a precise instant.
/// Only the pool's first workers pause (their replacements run normally), once each. A test
/// hook: it exists only with the `testing` feature (release workers carry no pause branch).
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// After waking, before taking the ring lock.
    BeforeClaim,
    /// Holding the ring lock, after claiming.
    InsideLock,
    /// While the kernel is halfway through its chunk (before it runs).
    MidKernel,
    /// After the kernel wrote its output, before publishing.
    BeforePublish,
}

/// What a worker needs, prepared by the supervisor before the fork.
pub(crate) struct WorkerCtx {
    pub ring: Ring,
    pub sock: OwnedFd,
    pub parent: Pid,
    /// How long the spinning idle worker spins after a chunk (zero: never).
    pub spin: Duration,
    /// Whether that spin yields the core between polls after a few µs.
    pub polite: bool,
    pub recycle_after: Option<u64>,
    /// Test hook: where this worker stops itself once.
    #[cfg(any(test, feature = "testing"))]
    pub pause: Option<PausePoint>,
    /// The CPU to pin this worker to, if the pool pins.
    pub cpu: Option<usize>,
    /// `PoolBuilder::worker_init`: runs once before the worker serves.
    pub init: Option<fn()>,
}

/// Exit code of a worker that found its ring incompatible or its socket broken.
pub(crate) const FATAL_EXIT_CODE: i32 = 3;
/// Exit code of a worker whose `worker_init` function panicked.
pub(crate) const INIT_PANICKED_EXIT_CODE: i32 = 4;
/// How long a worker sleeps between checks when idle (it wakes at once on a doorbell ring).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long a worker waits for the supervisor to answer a segment request.
const MAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs (in the parent, before any fork) the panic hook that reports a kernel panic in a
/// worker with one raw line naming the worker instead of locking std's stderr.
pub(crate) fn install_panic_hook() {
    fork::install_panic_hook();
}

/// The body of a forked worker process; returns its exit code. Prints nothing: a worker that
/// cannot serve exits with [`FATAL_EXIT_CODE`], which the supervisor counts.
pub(crate) fn run(ctx: WorkerCtx) -> i32 {
    fork::die_with_parent(ctx.parent);
    // No `std::panic::set_hook` here: it takes the hook's write lock, which a parent thread
    // may have held at the fork. The parent installed ours before forking.
    let ring_fd = ctx.ring.segment().fd().as_raw_fd();
    fork::drop_inherited(ctx.ring.segment().base_addr(), &[ctx.sock.as_raw_fd(), ring_fd]);
    match ctx.ring.segment().validate(SegmentKind::Ring) {
        Ok(()) => {
            // The panic hook writes the message with one raw line (see `install_panic_hook`).
            if let Some(init) = ctx.init {
                if std::panic::catch_unwind(init).is_err() {
                    return INIT_PANICKED_EXIT_CODE;
                }
            }
            let home = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
            let mut w = Worker {
                pid: std::process::id(),
                ctx,
                segs: HashMap::new(),
                mail_seen: 0,
                chunks: 0,
                busy: false,
                home,
                pinned: false,
            };
            match w.serve() {
                Ok(()) => 0,
                Err(_) => FATAL_EXIT_CODE,
            }
        }
        Err(_) => FATAL_EXIT_CODE,
    }
}

struct Worker {
    pid: u32,
    ctx: WorkerCtx,
    segs: HashMap<u64, Segment>,
    mail_seen: u32,
    chunks: u64,
    /// Whether the last loop iteration ran a chunk.
    busy: bool,
    /// The CPUs the worker may use when not pinned (inherited from the pool's process).
    home: Option<nix::sched::CpuSet>,
    /// Whether the worker is pinned to `ctx.cpu` right now.
    pinned: bool,
}

/// Chunks of at least this many bytes (input plus output) run pinned to the worker's CPU.
const PIN_MIN_BYTES: u64 = 1 << 20;

/// Stops the process (SIGSTOP) if `pending` is `at`, once.
#[cfg(any(test, feature = "testing"))]
fn pause(pending: &mut Option<PausePoint>, at: PausePoint) {
    if *pending == Some(at) {
        *pending = None;
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

impl Worker {
    fn serve(&mut self) -> Result<()> {
        let ring = self.ctx.ring.clone();
        let hdr = ring.header();
        loop {
            if ring.shutdown_requested() {
                return Ok(());
            }
            let mail_now = hdr.mail.load(Ordering::Acquire);
            if mail_now != self.mail_seen {
                self.mail_seen = mail_now;
                self.drain_mail()?;
            }
            let seen = hdr.work.seq();
            #[cfg(any(test, feature = "testing"))]
            pause(&mut self.ctx.pause, PausePoint::BeforeClaim);
            let claim = {
                let mut g = ring.lock()?;
                let c = g.claim(self.pid);
                #[cfg(any(test, feature = "testing"))]
                if c.is_some() {
                    pause(&mut self.ctx.pause, PausePoint::InsideLock);
                }
                c
            };
            match claim {
                Some(c) => {
                    // Where the chunk's caller will wait for us (see `CpuHints`).
                    hdr.cpus.worker.store(crate::sync::raw::cpu_hint(), Ordering::Relaxed);
                    self.run_chunk(&ring, c)?;
                    self.chunks += 1;
                    self.busy = true;
                    if self.ctx.recycle_after.is_some_and(|n| self.chunks >= n) {
                        return Ok(());
                    }
                }
                None => {
                    self.set_pinned(false);
                    // Spin only right after work: a worker woken by its idle timeout sleeps again.
                    let busy = std::mem::take(&mut self.busy);
                    self.idle(&ring, seen, busy);
                }
            }
        }
    }

    /// Waits for work. Only one idle worker at a time spins (the holder of the `spinner`
    /// token); the others sleep at once, so busy-waiting never takes more than one core.
    fn idle(&self, ring: &Ring, seen: u32, after_work: bool) {
        let hdr = ring.header();
        let spinner = after_work
            && !self.ctx.spin.is_zero()
            && hdr.spinner.compare_exchange(0, self.pid, Ordering::SeqCst, Ordering::Relaxed).is_ok();
        if spinner {
            // Spin first, then give the token back before sleeping so another can take it.
            // SeqCst: the map caller bumps `work` without a wake-up while it sees a live
            // spinner (Doorbell::bump); our `wait` re-reads the sequence (SeqCst) after the
            // release below, so a bump the caller made while it saw us is never slept through.
            // The spin beats (`spin_beat`): stopped here, we would hold the token without
            // polling, and callers take it over instead of relying on us.
            let me = crate::sync::raw::cpu_hint();
            hdr.cpus.worker.store(me, Ordering::Relaxed);
            let polite = self.ctx.polite.then(|| crate::ring::CpuHints::polite_after(me, &hdr.cpus.caller));
            let woken = hdr.work.spin_beating(seen, self.ctx.spin, polite, &hdr.spin_beat.0);
            // Only our own token: a caller or the supervisor may have taken it over while we
            // were not running, and another worker may hold it now.
            let _ = hdr.spinner.compare_exchange(self.pid, 0, Ordering::SeqCst, Ordering::Relaxed);
            if !woken {
                hdr.work.wait(seen, Duration::ZERO, IDLE_WAIT);
            }
        } else {
            hdr.work.wait(seen, Duration::ZERO, IDLE_WAIT);
        }
    }

    /// Pins the worker to its CPU for a large chunk, or gives the pin up when it goes idle.
    ///
    /// Streaming through large chunks, two workers that the scheduler happened to stack on one
    /// core stay there for milliseconds, and memory-bound maps vary by a fifth from run to run
    /// (measured with W1; pinned, they do not). A spinning idle worker, on the other hand, must stay free to
    /// move away from the map caller, which spins too for small maps. One `sched_setaffinity`
    /// per transition; small chunks never pin.
    fn set_pinned(&mut self, pin: bool) {
        let (Some(cpu), Some(home)) = (self.ctx.cpu, self.home) else { return };
        if pin == self.pinned {
            return;
        }
        let mut one = nix::sched::CpuSet::new();
        let set = if pin {
            if one.set(cpu).is_err() {
                return;
            }
            one
        } else {
            home
        };
        // Best effort: a worker that cannot be pinned still works.
        if nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok() {
            self.pinned = pin;
        }
    }

    fn run_chunk(&mut self, ring: &Ring, mut claim: Claim) -> Result<()> {
        let d = *claim.desc();
        let slot = claim.slot();
        let bytes = d.len.saturating_mul(u64::from(d.in_size) + u64::from(d.out_size));
        if bytes >= PIN_MIN_BYTES {
            self.set_pinned(true);
        }
        let ensured = self
            .ensure(slot, d.params_seg)
            .and_then(|_| self.ensure(slot, d.in_seg))
            .and_then(|_| self.ensure(slot, d.out_seg))
            .and_then(|_| self.ensure(slot, d.scratch_seg))
            .and_then(|_| self.zip_header(ring, &mut claim, &d));
        let segs = &self.segs;
        let resolve =
            |id| segs.get(&id).ok_or_else(|| Error::CorruptSlot { slot, reason: format!("segment {id} is unknown") });
        let outcome = ensured.and_then(|zip| {
            let io = ring.chunk_io(&mut claim, resolve)?;
            let kernel = KernelRef::from_parts(d.kernel_addr, d.kernel_tag, zip.is_some())
                .ok_or_else(|| Error::CorruptSlot { slot, reason: "kernel tag does not match its address".into() })?;
            let inputs = match &zip {
                None => None,
                Some(h) => {
                    let more = zip_inputs(&io, &d, h, resolve).map_err(|reason| Error::CorruptSlot { slot, reason })?;
                    Some((h.len(), std::iter::once(io.input).chain(more).collect::<Vec<_>>()))
                }
            };
            Ok((io, kernel, inputs, zip))
        });
        let (status, message) = match outcome {
            Err(e @ Error::CorruptSlot { .. }) => (Status::Corrupt, e.to_string()),
            Err(e) => return Err(e),
            Ok((io, kernel, inputs, zip)) => {
                let ChunkIo { params, input, output } = io;
                let mut call = Call {
                    kernel,
                    params,
                    input,
                    zip: inputs,
                    start: d.start,
                    #[cfg(any(test, feature = "testing"))]
                    pause: &mut self.ctx.pause,
                };
                let r = run_kernel(&mut call, &d, output, segs, slot);
                if let Some(h) = &zip {
                    release_zip(segs, &d, h);
                }
                r
            }
        };
        // Streaming through mapped files: give back this chunk's pages (no-op for shm).
        let (inb, outb) =
            (d.len.saturating_mul(d.in_size as u64) as usize, d.len.saturating_mul(d.out_size as u64) as usize);
        if let Some(s) = self.segs.get(&d.in_seg) {
            s.release(d.in_off as usize, inb);
        }
        if let Some(s) = self.segs.get(&d.out_seg) {
            s.release(d.out_off as usize, outb);
        }
        #[cfg(any(test, feature = "testing"))]
        pause(&mut self.ctx.pause, PausePoint::BeforePublish);
        let (published, wake) = {
            let mut g = ring.lock()?;
            (g.publish(&claim, self.pid, status, &message), g.caller_wanted())
        };
        if !published {
            // This worker is alive, so the supervisor never requeued its claim (it requeues only
            // reaped workers' slots): the slot header was overwritten while the kernel ran.
            ring.report_corruption(crate::ring::Corruption::ClaimOverwritten);
        } else if wake {
            ring.header().done.ring();
        }
        Ok(())
    }

    /// The zip header of a several-input chunk ([`Descriptor::ZIP`]), its segments mapped;
    /// `None` for a one-input chunk. A header that does not parse makes the chunk corrupt.
    fn zip_header(&mut self, ring: &Ring, claim: &mut Claim, d: &Descriptor) -> Result<Option<ZipHeader>> {
        if d.flags & Descriptor::ZIP == 0 {
            return Ok(None);
        }
        let slot = claim.slot();
        let corrupt = |reason: String| Error::CorruptSlot { slot, reason };
        let header = {
            let segs = &self.segs;
            let io =
                ring.chunk_io(claim, |id| segs.get(&id).ok_or_else(|| corrupt(format!("segment {id} is unknown"))))?;
            let h = ZipHeader::parse(io.params).map_err(corrupt)?;
            if ZipHeader::digest(&io.params[..h.len()], &crate::kernel::key()) != d.zip_digest {
                return Err(corrupt("the zip header does not match its descriptor".into()));
            }
            h
        };
        for input in &header.inputs {
            self.ensure(slot, input.seg)?;
        }
        Ok(Some(header))
    }

    /// Makes sure segment `id` (0: inline, nothing to do) is mapped, asking the supervisor.
    /// A segment the supervisor does not know makes the chunk corrupt (of `slot`).
    fn ensure(&mut self, slot: u32, id: u64) -> Result<()> {
        if id == 0 || self.segs.contains_key(&id) {
            return Ok(());
        }
        ipc::send_need(self.ctx.sock.as_fd(), id)?;
        loop {
            let m = ipc::recv(self.ctx.sock.as_fd(), MAIL_TIMEOUT)?
                .ok_or_else(|| Error::os("recvmsg", std::io::Error::from(std::io::ErrorKind::TimedOut)))?;
            let answered = matches!(m, Message::Add { id: got, .. } | Message::Missing { id: got } if got == id);
            self.handle(m)?;
            if answered {
                return if self.segs.contains_key(&id) {
                    Ok(())
                } else {
                    Err(Error::CorruptSlot { slot, reason: format!("segment {id} does not exist") })
                };
            }
        }
    }

    fn drain_mail(&mut self) -> Result<()> {
        while let Some(m) = ipc::recv(self.ctx.sock.as_fd(), Duration::ZERO)? {
            self.handle(m)?;
        }
        Ok(())
    }

    fn handle(&mut self, m: Message) -> Result<()> {
        match m {
            Message::Add { id, fd, file } => {
                let seg = match file {
                    Some(a) => Segment::map_file(std::fs::File::from(fd), a.offset, a.len, a.writable)?,
                    None => Segment::from_fd(fd, SegmentKind::Array)?,
                };
                self.segs.insert(id, seg);
            }
            Message::Forget { id } => {
                self.segs.remove(&id);
            }
            Message::Need { .. } | Message::Missing { .. } => {}
        }
        Ok(())
    }
}

/// Runs the kernel of a claimed chunk. With [`Descriptor::VIA_SCRATCH`] (a kernel that may read
/// the caller's own output array) it first copies the caller's range into the chunk's scratch
/// area and marks it backed up, runs the kernel in place, then marks the chunk complete: a
/// retry after the complete mark has nothing to do, one after the backup mark restores the
/// caller's range from the backup first, one before it finds the range untouched. So a killed
/// attempt never makes the kernel apply twice.
fn run_kernel(
    call: &mut Call<'_>,
    d: &Descriptor,
    output: &mut [u8],
    segs: &HashMap<u64, Segment>,
    slot: u32,
) -> (Status, String) {
    if d.flags & Descriptor::VIA_SCRATCH == 0 {
        if d.flags & Descriptor::ZERO_OUTPUT != 0 {
            // A recycled buffer (inline payload, staging) and a kernel that may leave
            // elements unwritten: it must see zeros, never an earlier map's results or
            // a killed attempt's partial output. Only this chunk's bytes, here rather
            // than in the caller (see `MapRun::new`).
            output.fill(0);
        }
        return call.invoke(output);
    }
    let area = segs
        .get(&d.scratch_seg)
        .ok_or_else(|| format!("segment {} is unknown", d.scratch_seg))
        .and_then(|seg| scratch::area(seg, d, slot, output.len()));
    let (mark, data) = match area {
        Ok(a) => a,
        Err(reason) => return (Status::Corrupt, Error::CorruptSlot { slot, reason }.to_string()),
    };
    // Unique to this chunk of this map (the MAC covers map, slot and range), odd so never 0,
    // and distinct from each other: a recycled staging buffer's old marks never match.
    let backed_up = (d.mac | 1) & !2;
    let complete = d.mac | 3;
    match mark.load(Ordering::Acquire) {
        // A dead attempt ran the kernel to its end: the caller's range holds the result.
        m if m == complete => return (Status::Ok, String::new()),
        // A dead attempt may have written part of the caller's range: restore it.
        m if m == backed_up => output.copy_from_slice(data),
        _ => {
            data.copy_from_slice(output);
            // PUBLISH: the backup is whole; a retry reads it with Acquire.
            mark.store(backed_up, Ordering::Release);
        }
    }
    let r = call.invoke(output);
    if r.0 == Status::Ok {
        // PUBLISH: the caller's range holds the result; a retry reads the mark with Acquire.
        mark.store(complete, Ordering::Release);
    } else {
        // A panic fails the map: leave the caller's range as it was.
        output.copy_from_slice(data);
    }
    r
}

/// What a claimed chunk's kernel reads: its parameter block and input, or (a several-input
/// chunk) its inputs, after a parameter block whose first `skip` bytes are the zip header.
struct Call<'a> {
    kernel: KernelRef,
    params: &'a [u8],
    input: &'a [u8],
    /// `(skip, inputs)` of a several-input chunk.
    zip: Option<(usize, Vec<&'a [u8]>)>,
    start: u64,
    #[cfg(any(test, feature = "testing"))]
    pause: &'a mut Option<PausePoint>,
}

impl Call<'_> {
    /// Calls the kernel into `output` under `catch_unwind` (stopping first at
    /// [`PausePoint::MidKernel`] in tests).
    fn invoke(&mut self, output: &mut [u8]) -> (Status, String) {
        #[cfg(any(test, feature = "testing"))]
        if *self.pause == Some(PausePoint::MidKernel) {
            // Write half the output, then stop: the kill lands mid-chunk.
            let half = output.len() / 2;
            output[..half].fill(0xAB);
            pause(self.pause, PausePoint::MidKernel);
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &self.zip {
            None => self.kernel.invoke(self.params, self.input, output, self.start),
            Some((skip, inputs)) => self.kernel.invoke_zip(&self.params[*skip..], inputs, output, self.start),
        }));
        match r {
            Ok(()) => (Status::Ok, String::new()),
            // An expression kernel's run-time error travels as its code (`kernel::Failure`),
            // never as a panic message the caller would have to match.
            Err(p) => match p.downcast_ref::<crate::kernel::Failure>() {
                Some(f) => (Status::Failed, f.0.to_string()),
                None => (Status::Panicked, panic_message(&p)),
            },
        }
    }
}

/// Gives back the pages of a several-input chunk's extra inputs (streaming through mapped
/// files, as for the descriptor's own input; a no-op for shared memory).
fn release_zip(segs: &HashMap<u64, Segment>, d: &Descriptor, header: &ZipHeader) {
    for input in &header.inputs {
        if let (Ok((off, len)), Some(s)) = (crate::ring::zip::byte_range(d, input), segs.get(&input.seg)) {
            s.release(off, len);
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
