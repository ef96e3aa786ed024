//! The raw process-shared primitives: a robust pthread mutex with its owner pid beside it, and a
//! process-shared futex word.
//!
//! Why not `raw_sync`: its 0.1.5 mutex is created without `PTHREAD_MUTEX_ROBUST`, so a worker
//! SIGKILLed inside the critical section would leave every other process blocked forever; its
//! timed waits overflow the nanosecond field and fail at once with EINVAL (upstream issue #39);
//! and its `Event` loses wake-ups after a waiter is killed. In shmpool any process that takes a
//! lock or waits may be killed at any instant, so no part of `raw_sync` is sound for us. The
//! robust mutex below is glibc's: the kernel walks a dying thread's robust list and hands the
//! next locker `EOWNERDEAD`, which we surface as [`LockState::OwnerDied`].

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

/// `lock_timeout` retries a busy lock this many times before sleeping on it: half with
/// [`SPINS_PER_ROUND`] pause instructions between tries, half yielding the core.
const SPIN_ROUNDS: u32 = 64;
/// Pause instructions between two tries of a busy lock.
const SPINS_PER_ROUND: u32 = 32;

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// The previous holder unlocked normally.
    Clean,
    /// The previous holder (pid given) died holding the lock: the protected data may be
    /// half-updated and must be repaired before [`RawRobustMutex::mark_consistent`].
    OwnerDied(u32),
}

/// A robust, process-shared pthread mutex plus the pid of its holder.
///
/// Lives in shared memory; `#[repr(C)]`, 64 bytes.
#[repr(C, align(64))]
pub struct RawRobustMutex {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    /// Pid of the holder, 0 when free. Written by the holder right after locking and before
    /// unlocking (Relaxed: the mutex orders it); read by anyone for diagnostics and by the
    /// repairer after `EOWNERDEAD`.
    owner: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RawRobustMutex>() == 64);

// SAFETY: the pthread mutex is designed to be shared between threads and processes; all
// access goes through pthread calls.
unsafe impl Sync for RawRobustMutex {}

impl RawRobustMutex {
    /// Initialises a robust process-shared mutex in place.
    ///
    /// # Safety
    ///
    /// `this` must point to writable memory of the right size and alignment that no other
    /// thread or process uses until this returns; it must not hold a live mutex.
    pub unsafe fn init(this: *mut RawRobustMutex) -> Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is local storage for pthread to initialise.
        check("pthread_mutexattr_init", unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        // SAFETY: attr was initialised just above.
        let rc = unsafe { libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED) };
        check("pthread_mutexattr_setpshared", rc)?;
        // SAFETY: attr is initialised.
        let rc = unsafe { libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST) };
        check("pthread_mutexattr_setrobust", rc)?;
        // SAFETY: the caller gives exclusive access to `this`; `addr_of_mut!` makes no reference.
        let m = unsafe { std::ptr::addr_of_mut!((*this).mutex) }.cast::<libc::pthread_mutex_t>();
        // SAFETY: m points to storage for a mutex (caller's contract), attr is initialised.
        let rc = unsafe { libc::pthread_mutex_init(m, attr.as_ptr()) };
        // SAFETY: attr is initialised and no longer needed.
        unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
        check("pthread_mutex_init", rc)?;
        // SAFETY: exclusive access as above.
        unsafe { std::ptr::addr_of_mut!((*this).owner).write(AtomicU32::new(0)) };
        Ok(())
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`] when the lock was not free in time; [`Error::Os`] when the mutex
    /// is unrecoverable (a repairer died without marking it consistent) or broken.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockState> {
        // Fast path: no clock read when the lock is free. The lock is only ever held for a few
        // slot-state changes (well under a µs), so a busy lock is retried for a few µs before
        // sleeping: a futex sleep and wake-up costs tens of µs, which would otherwise be the
        // latency tail of every contended hand-off between the map caller and a worker.
        let mut rc = libc::EBUSY;
        for round in 0..SPIN_ROUNDS {
            // SAFETY: the mutex was initialised by `init` before the segment was published.
            rc = unsafe { libc::pthread_mutex_trylock(self.mutex.get()) };
            if rc != libc::EBUSY {
                break;
            }
            if round >= SPIN_ROUNDS / 2 {
                // The holder may be descheduled: offer it the core.
                std::thread::yield_now();
            } else {
                for _ in 0..SPINS_PER_ROUND {
                    std::hint::spin_loop();
                }
            }
        }
        let rc = if rc == libc::EBUSY {
            let deadline = monotonic_deadline(timeout);
            // SAFETY: as above; deadline is a valid normalised CLOCK_MONOTONIC timespec.
            unsafe { pthread_mutex_clocklock(self.mutex.get(), libc::CLOCK_MONOTONIC, &deadline) }
        } else {
            rc
        };
        match rc {
            0 => {
                self.owner.store(super::pid(), Ordering::Relaxed);
                Ok(LockState::Clean)
            }
            libc::EOWNERDEAD => {
                let dead = self.owner.swap(super::pid(), Ordering::Relaxed);
                Ok(LockState::OwnerDied(dead))
            }
            libc::ETIMEDOUT => Err(Error::LockTimeout(timeout)),
            e => Err(Error::os("pthread_mutex_lock", std::io::Error::from_raw_os_error(e))),
        }
    }

    /// Declares the protected data repaired after [`LockState::OwnerDied`].
    ///
    /// # Safety
    ///
    /// The calling thread must hold the lock, acquired with `OwnerDied`.
    pub unsafe fn mark_consistent(&self) {
        // SAFETY: caller holds the lock in the inconsistent state.
        unsafe { libc::pthread_mutex_consistent(self.mutex.get()) };
    }

    /// Unlocks.
    ///
    /// # Safety
    ///
    /// The calling thread must hold the lock.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when pthread refuses (`EPERM`: the caller did not hold it); the lock's state
    /// is then unchanged.
    pub unsafe fn unlock(&self) -> Result<()> {
        let was = self.owner.swap(0, Ordering::Relaxed);
        // SAFETY: the caller holds the lock.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
        if rc != 0 {
            self.owner.store(was, Ordering::Relaxed);
        }
        check("pthread_mutex_unlock", rc)
    }

    /// Pid of the current holder, 0 when free (a hint: it may change at once).
    #[cfg(test)]
    pub fn owner(&self) -> u32 {
        self.owner.load(Ordering::Relaxed)
    }
}

fn check(op: &'static str, rc: libc::c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::os(op, std::io::Error::from_raw_os_error(rc)))
    }
}

extern "C" {
    /// glibc 2.30+: `pthread_mutex_timedlock` with a chosen clock (not bound by the `libc` crate).
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// An absolute CLOCK_MONOTONIC deadline `timeout` from now, normalised (tv_nsec < 1e9): the
/// overflow that breaks `raw_sync`'s timed waits cannot happen here, and a wall-clock jump
/// (NTP, `date -s`) neither shortens nor stretches the wait.
fn monotonic_deadline(timeout: Duration) -> libc::timespec {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now = Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.clamp(0, 999_999_999) as u32);
    let at = now.saturating_add(timeout);
    libc::timespec {
        tv_sec: at.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: at.subsec_nanos() as libc::c_long,
    }
}

/// Sleeps while `*word == expected`, at most `timeout`. Returns on a wake-up, a timeout, or at
/// once if the value already differs; a signal handled meanwhile (EINTR) sends it back to sleep
/// for what is left of `timeout`. Process-shared (no `FUTEX_PRIVATE_FLAG`).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let deadline = std::time::Instant::now().checked_add(timeout);
    let mut left = timeout;
    loop {
        let ts = libc::timespec {
            tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: word is a valid, aligned u32 for the whole call; the timespec is relative and
        // normalised; FUTEX_WAIT reads the word and touches no other memory.
        let rc = unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const libc::timespec)
        };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
        match deadline {
            Some(d) => left = d.saturating_duration_since(std::time::Instant::now()),
            None => left = timeout,
        }
        if left.is_zero() {
            return;
        }
    }
}

/// Wakes up to `n` processes sleeping on `word`.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: word is a valid aligned u32; FUTEX_WAKE dereferences nothing else.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}

/// The CPU this thread runs on right now, plus one (0 if unknown): a hint, stale as soon as
/// the scheduler moves us. `sched_getcpu` reads it from the vDSO or the rseq area.
pub(crate) fn cpu_hint() -> u32 {
    // SAFETY: `sched_getcpu` takes no argument and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).map_or(0, |c| c.saturating_add(1))
}
