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
//! ## The map API: four verbs, any kernel, any data
//!
//! | verb | returns |
//! |---|---|
//! | [`Pool::map`]`(&input, kernel)` | `Vec<Out>` |
//! | [`Pool::map_into`]`(&input, &mut output, kernel)` (and `map_into_progress`) | `()` |
//! | [`Pool::submit`]`(&input, kernel)` | a [`Ticket`]: `wait`, `wait_into`, `wait_timeout`, `try_wait` |
//! | [`Pool::imap`] / [`Pool::imap_unordered`]`(batches, kernel)` | an iterator of `Result<Vec<Out>>` |
//! | [`Pool::map_reduce`]`(&input, identity, map, combine)` / [`Pool::reduce`]`(&input, identity, fold, combine)` | the accumulator |
//!
//! `input` / `output` is any [`Input`] / [`Output`]: `[T]`, `[T; N]`, `Vec<T>`, [`SharedVec`]
//! (read and written in place), [`NpyArray`] / [`NpyOutput`] (in place) and, with the
//! `ndarray` feature, every ndarray array or view and `nd::SharedArray`. A tuple of two to four
//! inputs of equal length, `&(&a, &b, &c)`, is one input read together (a *zip map*, for
//! every verb), each member in place where it is shared, for a kernel
//! that takes a tuple: `|(a, b, c): (f64, f32, i32)| -> Out` or
//! `|(a, b, c): (&[f64], &[f32], &[i32]), out: &mut [Out]|`. `kernel` is any
//! [`Kernel`]: an element closure `|x: In| -> Out`, a chunk closure
//! `|x: &[In], y: &mut [Out]|` (or `fn` items of those shapes), either with
//! [`KernelExt::with`]`(params)` and/or [`KernelExt::with_table`]`(&values)`, a row kernel
//! [`KernelExt::by_rows`]`(n, m)`, or a [`KernelSpec`] (`&spec`, or `spec.typed::<In, Out>()?`
//! where the result type must be known). Every combination works.
//!
//! Before (11 entry points, with holes) and after:
//!
//! | before | after |
//! |---|---|
//! | `map(&xs, f)` | `map(&xs, f)` |
//! | `map_with(&xs, p, f)` | `map(&xs, f.with(p))` |
//! | `map_spec(&xs, &spec)` | `map(&xs, spec.typed::<In, Out>()?)` |
//! | `map_into(&shared_in, &mut shared_out, chunk)` | `map_into(&any_in, &mut any_out, any_kernel)` |
//! | `map_into_with(&a, &mut b, p, chunk)` | `map_into(&a, &mut b, chunk.with(p))` |
//! | `map_into_spec(&a, &mut b, &spec)` | `map_into(&a, &mut b, &spec)` |
//! | `map_npy(&npy, &mut out, &spec, None)` | `map_into(&npy, &mut out, &spec)` (or a closure) |
//! | `map_npy(&npy, &mut out, &spec, Some(cb))` | `map_into_progress(&npy, &mut out, &spec, cb)` |
//! | `submit(&xs, elem)` | `submit(&any_in, any_kernel)` |
//! | `submit_spec(&xs, &spec)` | `submit(&xs, spec.typed::<In, Out>()?)` |
//! | `imap(batches, elem)` / `imap_unordered(batches, elem)` | `imap(batches, any_kernel)` / `imap_unordered(..)` |
//! | (none: no run-time sized side input) | `f.with_table(&weights)` → `&[S]` |
//! | (none: rows were split across chunks) | `f.by_rows(in_cols, out_cols)` |
//! | (none: one input per map) | `map_into(&(&a, &b, &c), &mut out, \|(a, b, c): (f64, f32, i32)\| ..)` |
//! | (none: reductions went back to the caller) | `map_reduce(&x, 0.0, \|v: f64\| v * v, \|p: f64, q: f64\| p + q)` |
//! | (none) | `reduce(&x, id, \|acc, chunk: &[T]\| .., combine)`: deterministic for any worker count |
//! | (none: zip inputs were refused at run time by `submit` / `imap`) | `submit(&(&a, &b), \|(a, b): (f64, f32)\| ..)`, `imap(pairs, ..)` |
//! | (none: `map_reduce` took closures only) | `map_reduce(&x, id, f.with(p), combine)`, `map_reduce(&x, id, &spec, combine)` |
//! | `map_npy_range(&npy, &mut out, a..b, &spec, cb)` | `map_into_progress(&npy.range(a..b)?, &mut out.range(a..b)?, &spec.index_offset(a), cb)` |
//! | `map_into_spec_indexed(&xs, &mut ys, &spec, off)` | `map_into(&xs, &mut ys, &spec.index_offset(off))` |
//! | `pool.reduce_npy(&program, files, consts, kind)` | `expr_reduce::reduce_npy(&pool, &program, files, consts, kind)` |
//! | `pool.reduce_npy_axis(&program, files, consts, kind, axis)` | `expr_reduce::reduce_npy_axis(&pool, ..., axis)` |
//! | `Ticket::try_get() -> Option<Result<_>>` | `Ticket::try_wait() -> Result<Option<_>>` |
//! | `WorkerDeath` exported, unobtainable | [`Pool::death_log`] |
//! | matching messages for exit codes | [`Error::kind`] → [`ErrorKind`] |
//!
//! Element and parameter types are `Pod`; derive it without a `bytemuck` dependency:
//!
//! ```
//! # fn main() -> shmpool::Result<()> {
//! use shmpool::prelude::*;
//! #[derive(Clone, Copy, shmpool::Pod, shmpool::Zeroable)]
//! #[bytemuck(crate = "shmpool::bytemuck")]
//! #[repr(C)]
//! struct Affine { a: f32, b: f32 }
//! let pool = Pool::new(2)?;
//! let ys = pool.map(&[1.0f32, 2.0], (|x: f32, p: &Affine| p.a * x + p.b).with(Affine { a: 2.0, b: 1.0 }))?;
//! assert_eq!(ys, [3.0, 5.0]);
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! Each layer uses only the layers before it (one-way; no two modules use each other):
//!
//! 1. `error`, `dtype` (the leaf crate `shmpool-dtype`), `key` (the MAC key), `os` (cached
//!    pid, the monotonic clock, the standard descriptors and raw diagnostics);
//! 2. `shm`: segments;
//! 3. `sync`: the robust mutex and doorbells, inside a segment;
//! 4. `ring`: the slot table;
//! 5. `ipc`: supervisor ↔ worker messages and the records of the start-up and fork-server
//!    sockets;
//! 6. `launch`: fork, exec, the fork server (the plumbing; knows nothing of workers);
//! 7. `process`: [`Process`], `multiprocessing.Process`, the public face of `launch`;
//! 8. `kernel` (how functions reach workers), then `array` (`SharedVec`, `.npy`, the
//!    [`Input`] / [`Output`] sides; it uses `kernel`'s element types);
//! 9. `worker`: the loop a worker runs;
//! 10. `start`: how a worker process is started (fork, fork server, exec) and handed its ring;
//! 11. `pool`: the public API and the supervisor; `diagnostics`; then the CLI (`cli`, in the
//!     binary).
//!
//! Only the items re-exported here, the [`kernel`] module (kernel specs and, with the `expr`
//! feature, the expression compiler) and [`diagnostics`] are public; the engine is private.
//! The expression compiler is the member `shmpool-expr`, which knows nothing of the engine.
//!
//! ## Safety model
//!
//! Nothing outside the pool writes to a segment or a mapped input during a map. A map borrows
//! its input shared and its output exclusively and returns only when no worker can touch them
//! any more, so Rust's borrow rules extend to the worker processes. Kernels are zero-sized
//! (`fn` items and closures that capture nothing; a capturing closure fails `cargo build`, not
//! `cargo check`, see [`Kernel`]) and reach workers as offsets inside the same
//! executable image: workers are forked from it, or exec'd from it and verified to run the very
//! same binary ([`StartMethod`]). The engine (segments, locks, the ring, the worker loop) is
//! private: safe code cannot reach it.
//!
//! ## Start methods and threads
//!
//! A forked child inherits every lock another thread held at the fork. In a multi-threaded
//! program use [`StartMethod::ForkServer`] (the default there) or [`StartMethod::Spawn`] and
//! [`Process::spawn_fn`] instead of [`Process::spawn`]; see [`StartMethod`]. Every method works
//! in every program and from `#[test]` functions with no call in `main`: a copy of the program
//! that shmpool starts with `exec` becomes a worker in an ELF constructor, before `main`
//! ([`init`] remains, optional). Workers set up per-process state, a logger for instance, in
//! [`PoolBuilder::worker_init`].
//!
//! ```compile_fail,E0603
//! use shmpool::ring::Ring; // the slot table is not part of the API
//! ```
//!
//! What remains `unsafe` is an `unsafe fn` with a `# Safety` section: mapping a `.npy` file that
//! another process could truncate or rewrite while it is mapped.
//!
//! ### What the integrity checks protect against, and what they do not
//!
//! Every descriptor the map caller writes carries a keyed MAC (SipHash, key in process-private
//! memory, inherited by forked workers and sent to the others over their private socket,
//! never through shared memory, argv or the environment), every finished slot a keyed
//! completion stamp, and the map
//! caller checks every slot it reads back against its own private record of what it wrote.
//! Together they catch *accidents*: a kernel that writes past its buffer, a stray pointer, a
//! bit flip. Such corruption fails the map with [`Error::CorruptSlot`] after every worker has
//! been killed and reaped, and the pool reports itself broken ([`Error::PoolBroken`]) from then
//! on; it never hangs the map, never returns it early, never makes the caller read out of
//! bounds and never panics the parent.
//!
//! What they do not cover is the *data*: a kernel that writes into another chunk's output
//! (in a shared array or in a neighbouring slot's inline result) corrupts its own map's results,
//! as a thread writing out of bounds would, and the map returns them; only the bookkeeping that
//! decides when a map is over is protected.
//!
//! They are **not** a defence against a *hostile* kernel: a kernel runs inside a worker, and
//! every worker holds the key. A malicious kernel can forge descriptors and stamps, read and
//! write every segment its worker has mapped (the inputs and outputs of maps it takes part in,
//! the ring), make a map return wrong values or return early while another worker still writes
//! the output, and stall a map until `chunk_timeout` (if set) kills it. What bounds it: it
//! cannot touch the caller's private memory (the caller never follows a pointer or range read
//! from shared memory; inline results are copied with ranges it computed itself), it cannot
//! make the caller's process panic or access memory out of bounds, and it dies with the pool.
//! Run untrusted code in a sandbox, not in a kernel.
//!
//! ## Failure model
//!
//! A worker that dies (any signal) is noticed by the supervisor through its pidfd; the chunks it
//! held go back to the queue with `attempt + 1` and a fresh worker replaces it. A chunk that
//! kills `max_attempts` workers fails the map with [`Error::WorkerCrashed`]; a kernel panic
//! gives [`Error::KernelPanicked`] and the worker survives. A worker killed while holding the
//! ring mutex does not block anyone (robust mutex). Workers die with the pool's supervisor
//! thread (`PR_SET_PDEATHSIG`); the fork server's workers die with the server, which exits when
//! the program's end of its socket closes, and is SIGKILLed when the program ends even while it
//! is stopped (`PR_SET_PDEATHSIG`, tied to the program's main thread or to a keeper thread that
//! lives as long as the program). A server that a waiting pool finds stopped for a second, or
//! that does not answer a fork request within 4 s, is killed, reaped and replaced (its workers
//! are replaced too), so that no supervisor waits on it. Segment names are unlinked microseconds after
//! creation, so nothing outlives even a SIGKILLed parent.
//!
//! ## Platforms
//!
//! Linux (pidfds: kernel 5.3 or later; glibc robust mutexes; `StartMethod::Spawn` hands its
//! socket to the child with `posix_spawn`'s `dup2` onto itself, which clears close-on-exec from
//! glibc 2.29 on). Other systems are not supported.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc, missing_docs)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

/// Declares a `#[repr(u32)]` enum stored as an integer in shared memory or on the wire, with
/// `TryFrom<u32>` that refuses every unassigned value (no catch-all arm: an unknown code is an
/// error, never a neighbouring variant).
macro_rules! u32_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        $vis enum $name { $($(#[$vmeta])* $variant = $value,)+ }

        impl TryFrom<u32> for $name {
            type Error = u32;
            fn try_from(v: u32) -> std::result::Result<Self, u32> {
                match v {
                    $($value => Ok($name::$variant),)+
                    other => Err(other),
                }
            }
        }
    };
}

mod array;
/// The arguments of `map` over `.npy` files, shared by `shmpool map` and `shmpool-mpi map`.
#[cfg(feature = "args")]
#[path = "cli/args.rs"]
pub mod cli;
pub mod diagnostics;
/// numpy's element types live in the leaf crate `shmpool-dtype`, shared with the expression
/// compiler (which must not depend on the engine, nor the engine on it without `expr`).
mod dtype {
    pub use shmpool_dtype::{Dtype, UnknownDtype};
}
mod error;
#[cfg(feature = "expr")]
pub mod expr_reduce;
mod ipc;
pub mod kernel;
mod key;
mod launch;
mod os;
mod pool;
mod process;
mod ring;
mod shm;
mod start;
mod sync;
mod worker;

#[cfg(feature = "ndarray")]
pub use array::nd;
pub use array::{Input, NpyArray, NpyOutput, NpyRange, NpyRangeMut, Output, SharedVec};
/// `bytemuck`, whose derives (`shmpool::Pod`, `shmpool::Zeroable`) refer to it by path.
pub use bytemuck;
/// The element traits (and, in the macro namespace, their derives) for `#[repr(C)]` element
/// and parameter types: `#[derive(Clone, Copy, shmpool::Pod, shmpool::Zeroable)]` with
/// `#[bytemuck(crate = "shmpool::bytemuck")]`, so that no direct `bytemuck` dependency is
/// needed.
pub use bytemuck::{Pod, Zeroable};
pub use dtype::{Dtype, UnknownDtype};
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "expr")]
pub use expr_reduce::AxisResult;
pub use kernel::{ChunkFold, Dynamic, ElemMap, Kernel, KernelExt, KernelSpec, Zip};
pub use launch::fork::{set_fork_hooks, ForkHooks};
pub use pool::{Imap, ImapUnordered, Pool, PoolBuilder, Ticket, WaitStrategy, WorkerDeath};
pub use process::Process;
pub use start::{init, StartMethod};

/// Sets how children that shmpool starts by `exec` (`StartMethod::Spawn` workers, the fork
/// server, [`Process::spawn_fn`] children) are started, for programs in which shmpool is not
/// part of the executable (an interpreter loading it as an extension module): `exe` (default:
/// the running executable, `/proc/self/exe`) is run with `args` after its `argv[0]`, and must
/// call [`init`] (which becomes the child and never returns there). The start-up hook leaves
/// such children alone (in an extension module it would run inside the interpreter's
/// `dlopen`, before the module exists); their marker, socket and one-time token are checked
/// by `init()` as the hook checks them. Calling it counts as calling [`init`]: pools in a
/// multi-threaded process then default to the fork server.
///
/// Kernels travel as offsets inside the image that holds shmpool, and the child's executable
/// is checked to be the parent's: a route that loads shmpool from another file (another
/// version of an extension module) must refuse to run, which is the route's job (the Python
/// package compares the module file's identity before loading it).
///
/// # Examples
///
/// ```no_run
/// // In an extension module, at import: exec'd children re-run the interpreter with a command
/// // that loads this module and calls `shmpool::init()` (which never returns in them).
/// shmpool::set_spawn_route(None, ["-I", "-S", "-c", "import ext; ext.worker_main()"]);
/// let pool = shmpool::Pool::builder().start_method(shmpool::StartMethod::ForkServer).build();
/// ```
pub fn set_spawn_route<S: Into<std::ffi::OsString>>(
    exe: Option<std::path::PathBuf>,
    args: impl IntoIterator<Item = S>,
) {
    launch::spawn::set_route(launch::spawn::SpawnRoute { exe, args: args.into_iter().map(Into::into).collect() });
}

/// Stops shmpool from printing its warning (once, on stderr) about workers forked
/// (`StartMethod::Fork`) from a multi-threaded process: for an embedder that warns its users in
/// its own words (the Python package raises a `RuntimeWarning` naming its own options).
pub fn quiet_fork_warning() {
    start::launch::quiet_fork_warning();
}

/// What a program using shmpool usually needs: `use shmpool::prelude::*;`.
pub mod prelude {
    pub use crate::{Dynamic, Error, ErrorKind, Kernel, KernelExt, KernelSpec, Pod, Pool, Result, SharedVec, Zeroable};
}

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

    /// Makes `NpyOutput::create` use its named-temporary fallback (as where `O_TMPFILE` is
    /// unavailable) while `on` is set, process-wide.
    pub fn force_named_npy_temp_files(on: bool) {
        crate::array::force_named_temp_files(on);
    }

    /// Leaves a named segment in `/dev/shm` as a crash between creating and unlinking it would
    /// (`shmpool_<owner_pid>_<random>`, a header naming `owner_pid` and this uid); returns its
    /// file name.
    ///
    /// # Errors
    ///
    /// `Error::Os` when the file cannot be made.
    pub fn leave_stale_segment(owner_pid: u32) -> crate::Result<String> {
        crate::shm::leave_stale_segment(owner_pid)
    }

    /// The pid of this process's fork server, if one runs (it lives as long as the process).
    pub fn fork_server_pid() -> Option<u32> {
        crate::launch::server::pid().map(|p| p.as_raw() as u32)
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
