//! Cross-process synchronisation that lives inside a segment: a robust mutex with RAII guards
//! and a futex doorbell.
//!
//! The death of a lock holder is an outcome, not a hang: [`ShmMutex::lock_timeout`] returns a
//! guard that says whether the previous holder died inside, and the caller repairs what the
//! lock protects before calling [`ShmMutexGuard::mark_repaired`]. A guard whose owner died and
//! that is dropped without repair leaves the mutex unrecoverable, which makes every later
//! locker fail loudly instead of reading a half-updated table. This module never decides what
//! "repair" means; the ring does.

mod doorbell;
pub(crate) mod raw;

pub(crate) use doorbell::{Doorbell, POLITE_AFTER};

use std::marker::PhantomData;

use std::time::Duration;

use crate::error::Result;
pub use raw::LockState;
use raw::RawRobustMutex;

pub(crate) use crate::os::{now_us, pid};

/// A robust process-shared mutex placed in shared memory (64 bytes, `#[repr(C)]`).
///
/// It guards no data of its own: the ring's slot table, which lives beside it in the same
/// segment, is what it protects. (A `ShmMutex<T>` holding `T` inline would force the slot table,
/// whose length is chosen at run time, into a fixed-size type.)
#[repr(C)]
pub struct ShmMutex {
    raw: RawRobustMutex,
}

impl ShmMutex {
    /// Initialises the mutex in place.
    ///
    /// # Safety
    ///
    /// As [`RawRobustMutex::init`]: exclusive access to writable, aligned storage.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Os`] when pthread refuses the attributes.
    pub unsafe fn init(this: *mut ShmMutex) -> Result<()> {
        // SAFETY: ShmMutex is repr(C) with the raw mutex as its only field, at offset 0; the
        // caller's exclusivity contract is forwarded.
        unsafe { RawRobustMutex::init(this.cast::<RawRobustMutex>()) }
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::LockTimeout`], or [`crate::Error::Os`] when the mutex is unrecoverable.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ShmMutexGuard<'_>> {
        let state = self.raw.lock_timeout(timeout)?;
        Ok(ShmMutexGuard { mutex: self, state, repaired: false, _not_send: PhantomData })
    }

    /// Pid of the current holder, 0 when free (a hint).
    #[cfg(test)]
    pub fn owner(&self) -> u32 {
        self.raw.owner()
    }
}

/// Proof that the calling thread holds a [`ShmMutex`]. Unlocks on drop; never panics.
///
/// `!Send`: a pthread mutex must be unlocked by the thread that locked it, so the guard cannot
/// move to another thread (checked at compile time below).
pub(crate) struct ShmMutexGuard<'a> {
    mutex: &'a ShmMutex,
    state: LockState,
    repaired: bool,
    /// Makes the guard `!Send` and `!Sync`.
    _not_send: PhantomData<*const ()>,
}

/// Compile-time proof that the guard is not `Send` (the `static_assertions` trick: if it were,
/// `some_item` would be ambiguous between the two impls and this would not compile).
const _: fn() = || {
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}
    let _ = <ShmMutexGuard<'static> as AmbiguousIfSend<_>>::some_item;
};

impl ShmMutexGuard<'_> {
    /// The pid of a previous holder that died holding the lock, if that is how we got it.
    pub fn owner_died(&self) -> Option<u32> {
        match self.state {
            LockState::OwnerDied(pid) => Some(pid),
            LockState::Clean => None,
        }
    }

    /// Declares the protected data repaired after an owner death.
    pub fn mark_repaired(&mut self) {
        if let LockState::OwnerDied(_) = self.state {
            if !self.repaired {
                // SAFETY: this guard holds the lock, acquired in the OwnerDied state.
                unsafe { self.mutex.raw.mark_consistent() };
                self.repaired = true;
            }
        }
    }
}

impl Drop for ShmMutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while its thread holds the lock, and it is `!Send`, so
        // this is the thread that locked it.
        // Never panic in drop. An unlock the OS refuses means the mutex word was overwritten
        // (a scribbling kernel): the next locker then times out or fails, and the map caller
        // treats that as a broken ring.
        let _ = unsafe { self.mutex.raw.unlock() };
    }
}

#[cfg(test)]
mod test;
