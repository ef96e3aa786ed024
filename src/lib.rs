//! # shmpool
//!
//! A shared-memory parallel map engine: Python's `multiprocessing.Pool` for numeric arrays,
//! rebuilt so that it is as fast as threads and safer than threads. A pool of worker
//! **processes** attaches to a shared-memory **ring** of slots guarded by a robust
//! cross-process mutex and maps a function over `f32`/`f64`/integer arrays (any
//! [`bytemuck::Pod`] type) without copying them through pipes or pickles.
//!
//! ## Quick start
//!
//! ```
//! # fn main() -> shmpool::Result<()> {
//! use shmpool::{Pool, SharedVec};
//!
//! let pool = Pool::new(2)?;
//!
//! // Element kernel over a plain slice: order kept, one copy in, one copy out.
//! let doubled = pool.map(&[1, 2, 3, 4, 5], |x: i32| x * 2)?;
//! assert_eq!(doubled, [2, 4, 6, 8, 10]);
//!
//! // Chunk kernel between shared arrays: zero copies.
//! let xs = SharedVec::from_slice(&(0..1000).map(|i| i as f64).collect::<Vec<_>>())?;
//! let mut ys = pool.alloc::<f64>(xs.len())?;
//! pool.map_into(&xs, &mut ys, |x: &[f64], y: &mut [f64]| {
//!     for (y, x) in y.iter_mut().zip(x) { *y = x.sqrt() * 1.5 + 0.25; }
//! })?;
//! assert_eq!(ys[4], 3.25);
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! `error`, `dtype` → `shm` (segments) → `sync` (robust mutex, doorbells) → `ring` (slot
//! table) → `ipc` (supervisor ↔ worker messages) → `array` (`SharedVec`, `.npy`) / `kernel`
//! (how functions reach workers) → `worker` (the loop) → `pool` (the public API and
//! supervisor); `process` is `multiprocessing.Process`. Only the items re-exported here, the
//! [`kernel`] module (kernel specs and the expression compiler) and [`diagnostics`] are public;
//! the engine is private.
//!
//! ## Safety model
//!
//! Nothing outside the pool writes to a segment or a mapped input during a map. A map borrows
//! its input shared and its output exclusively and returns only when no worker can touch them
//! any more, so Rust's borrow rules extend to the worker processes. Descriptors in shared
//! memory carry a keyed integrity tag and are bounds-checked before use, so a corrupted slot is
//! an error, never a wild access. Kernels are zero-sized (`fn` items and closures that capture
//! nothing) and reach workers as addresses in the same executable image (workers are forked).
//!
//! ## Failure model
//!
//! A worker that dies (any signal) is noticed by the supervisor through its pidfd; the chunks it
//! held go back to the queue with `attempt + 1` and a fresh worker replaces it. A chunk that
//! kills `max_attempts` workers fails the map with [`Error::WorkerCrashed`]; a kernel panic
//! gives [`Error::KernelPanicked`] and the worker survives. A worker killed while holding the
//! ring mutex does not block anyone (robust mutex). Workers die with the pool's supervisor
//! thread (`PR_SET_PDEATHSIG`), and segment names are unlinked microseconds after creation, so
//! nothing outlives even a SIGKILLed parent.
//!
//! ## Platforms
//!
//! Linux (pidfds: kernel 5.3 or later; glibc robust mutexes). Other systems are not supported.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc, missing_docs)]

mod array;
pub mod diagnostics;
mod dtype;
mod error;
mod ipc;
pub mod kernel;
mod pool;
mod process;
mod ring;
mod shm;
mod sync;
mod worker;

pub use array::{NpyArray, NpyOutput, SharedVec};
pub use dtype::Dtype;
pub use error::{Error, Result};
pub use kernel::KernelSpec;
pub use pool::{Pool, PoolBuilder, WorkerDeath};
pub use process::Process;

/// Hooks for shmpool's own tests (pause points); compiled only with the `testing` feature,
/// which the test suite enables. Not part of the API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::worker::PausePoint;

    /// The monotonic clock the supervisor stamps deaths with (µs).
    pub fn now_us() -> u64 {
        crate::sync::now_us()
    }

    /// A ring on its own, for the slot round-trip bench.
    pub struct RingProbe(crate::ring::Ring);

    impl RingProbe {
        /// A ring of `slots` slots with `payload` inline bytes each.
        ///
        /// # Errors
        ///
        /// As `Pool::build` for the ring.
        pub fn new(slots: u32, payload: usize) -> crate::Result<RingProbe> {
            crate::ring::Ring::create(slots, payload).map(RingProbe)
        }

        /// One fill → claim → publish → take round trip, each step under the robust mutex as
        /// the map caller and a worker do it.
        ///
        /// # Panics
        ///
        /// When a step fails (the bench's ring is private to it, so none can).
        pub fn round_trip(&self) {
            use crate::ring::{Descriptor, Status};
            let d = Descriptor { map_id: 1, len: 1, in_size: 8, out_size: 8, out_off: 1024, ..Descriptor::default() };
            let mut l = self.0.lock().expect("lock");
            let (slot, sealed) = l.fill(&d, |_| {}).expect("a free slot");
            let claim = l.claim(1).expect("a filled slot");
            drop(l);
            let mut l = self.0.lock().expect("lock");
            l.publish(&claim, 1, Status::Ok, "");
            drop(l);
            self.0.lock().expect("lock").take(slot, &sealed, |_| {}).expect("a finished slot");
        }
    }
}
