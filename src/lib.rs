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
//! `error` → `shm` (segments) → `sync` (robust mutex, doorbells) → `ring` (slot table) →
//! `array` (`SharedVec`) / `kernel` (how functions reach workers) → `worker` (the loop) →
//! `pool` (the public API and supervisor); `process` is `multiprocessing.Process`.
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

pub mod array;
pub mod dtype;
pub mod error;
pub mod kernel;
pub mod pool;
pub mod process;
pub mod ring;
pub mod shm;
pub mod sync;
mod worker;
pub mod workloads;

pub use array::{NpyArray, NpyOutput, SharedVec};
pub use dtype::Dtype;
pub use error::{Error, Result};
pub use kernel::KernelSpec;
pub use pool::{Pool, PoolBuilder};
pub use process::Process;
