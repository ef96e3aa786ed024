//! One error type for the whole crate.
//!
//! Every variant names a situation and carries the facts a caller needs to act on it (ranges,
//! sizes, signals). OS errors travel in `#[source]`; string errors from dependencies become
//! typed variants at the module boundary. This module must never depend on anything else in
//! the crate.
#![deny(unsafe_code)]

use std::ops::Range;
use std::time::Duration;

/// The result type of every fallible shmpool operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in shmpool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/shm` has less free space than a segment needs; nothing was created.
    #[error("shared memory is full: needed {needed} bytes, {available} bytes available in /dev/shm")]
    ShmFull {
        /// Bytes the segment needs.
        needed: u64,
        /// Bytes free in `/dev/shm` when the request was refused.
        available: u64,
    },

    /// A segment's header does not match what this build of shmpool expects.
    #[error("incompatible segment: found {found}, expected {expected}")]
    IncompatibleSegment {
        /// What the header holds.
        found: String,
        /// What this build expects.
        expected: String,
    },

    /// A system call failed.
    #[error("{op} failed")]
    Os {
        /// The operation that failed (`shm_open`, `fork`, `posix_fallocate`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Input and output lengths of `map_into` differ.
    #[error("length mismatch: input has {input} elements, output has {output}")]
    LengthMismatch {
        /// Elements in the input.
        input: usize,
        /// Elements in the output.
        output: usize,
    },

    /// The inputs of a zip map or reduction (a tuple of inputs) differ in length.
    #[error("zip input lengths differ: input 0 has {first} elements, input {input} has {len}")]
    InputLengths {
        /// Elements in the first input.
        first: usize,
        /// The position of the first input whose length differs.
        input: usize,
        /// Its elements.
        len: usize,
    },

    /// A builder option or argument is out of range.
    #[error("invalid {option} {value}: must be {allowed}")]
    InvalidOption {
        /// The option (`workers`, `chunk_len`, ...).
        option: &'static str,
        /// The value given.
        value: u64,
        /// What is allowed.
        allowed: &'static str,
    },

    /// A kernel's element types are not the ones of the arrays or files it is applied to.
    #[error("type mismatch: kernel maps {kernel}, the data is {data}")]
    TypeMismatch {
        /// The kernel's input and output types (`f64 -> f64`).
        kernel: String,
        /// The arrays' or files' element types.
        data: String,
    },

    /// A size computation overflowed: the request cannot be represented in memory.
    #[error("too large: {count} elements of {elem_size} bytes overflow the address space")]
    TooLarge {
        /// Elements requested.
        count: u64,
        /// Bytes per element.
        elem_size: u64,
    },

    /// A byte range lies outside the memory it names.
    #[error("byte range {offset}+{len} is outside a data area of {size} bytes")]
    OutOfBounds {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the data area.
        size: u64,
    },

    /// A write was attempted through a read-only mapping (a memory-mapped input file).
    #[error("write to a read-only mapping")]
    ReadOnly,

    /// `join` was called on a pool that is still open.
    #[error("join() needs close() or terminate() first")]
    JoinWhileOpen,

    /// A pool (or an array registered with it) was used from a process other than the one that
    /// created it, e.g. a forked child.
    #[error("the pool belongs to process {owner} and cannot be used from process {current}")]
    WrongProcess {
        /// Pid of the creating process.
        owner: u32,
        /// Pid of the caller.
        current: u32,
    },

    /// A kernel or function pointer lies outside the executable image that holds shmpool (the
    /// program, or the shared library shmpool is linked into): a function of a `dlopen`ed
    /// library, or code made at run time. Kernels reach workers as offsets inside that image,
    /// so such a function cannot be one; it was refused before any worker could jump to it.
    #[error(
        "kernel at {addr:#x} is not code of the executable image that holds shmpool ({image}) but of {object}: \
         kernels reach workers as offsets inside that image, so a function from a dlopen'ed library cannot be a kernel"
    )]
    ForeignKernel {
        /// The function's address in this process.
        addr: u64,
        /// The loaded object it belongs to.
        object: String,
        /// The image kernels must come from.
        image: String,
    },

    /// The map was cancelled: the pool was terminated from another thread while it ran. Every
    /// worker was killed and reaped before this was returned.
    #[error("map cancelled: the pool was terminated")]
    Cancelled,

    /// The pool found its shared state corrupted or lost its workers; it killed them and accepts
    /// no more work. Build a new pool.
    #[error("pool is broken and accepts no more work: {reason}")]
    PoolBroken {
        /// What broke it.
        reason: String,
    },

    /// The output file of a map is the input file: the kernel's input and output would alias.
    #[error("the output is the input file ({path}): write to another file")]
    Aliased {
        /// The file.
        path: String,
    },

    /// A message between the supervisor and a worker was not understood.
    #[error("protocol error: unexpected {what} {value}")]
    Protocol {
        /// What was unexpected.
        what: &'static str,
        /// Its value.
        value: u64,
    },

    /// A chunk killed `attempts` workers in a row.
    #[error("worker crashed on index range {range:?} after {attempts} attempts ({})", last_death(*signal))]
    WorkerCrashed {
        /// The index range of the chunk the workers died on.
        range: Range<usize>,
        /// The signal that killed the last worker (0 if it exited without a signal).
        signal: i32,
        /// How many workers the chunk killed.
        attempts: u32,
    },

    /// A kernel panicked; the worker caught the panic and survived. Whatever a user's kernel
    /// panics with (even an expression error's words) stays this variant.
    #[error("kernel panicked on index range {range:?}: {message}")]
    KernelPanicked {
        /// The panic message (truncated to fit in a slot).
        message: String,
        /// The index range of the chunk.
        range: Range<usize>,
    },

    /// A chunk ran longer than the pool's chunk timeout; its worker was killed and replaced.
    #[error("chunk on index range {range:?} timed out after {limit:?}")]
    ChunkTimedOut {
        /// The index range of the chunk.
        range: Range<usize>,
        /// The configured limit.
        limit: Duration,
    },

    /// A slot descriptor failed its bounds or integrity check.
    #[error("corrupt slot {slot}: {reason}")]
    CorruptSlot {
        /// The slot index.
        slot: u32,
        /// What check failed.
        reason: String,
    },

    /// A cross-process lock could not be taken within its time limit.
    #[error("lock not acquired within {0:?}")]
    LockTimeout(Duration),

    /// The pool was closed or terminated; it accepts no more work.
    #[error("pool is closed")]
    PoolClosed,

    /// An expression did not compile, or its evaluation failed (feature `expr`): an expression
    /// kernel's run-time error (numpy's `ValueError` for a negative integer power) comes back
    /// as this from every verb, carried out of the worker as a code, never read from a message.
    #[cfg(feature = "expr")]
    #[error(transparent)]
    Expr(#[from] shmpool_expr::Error),

    /// A `.npy` file cannot be used; `reason` says why.
    #[error("{path}: {reason}")]
    BadNpy {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file could not be opened, created, sized or renamed.
    #[error("cannot {op} {path}")]
    File {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Every ring slot holds a finished ticket that nobody waits for, so no new chunk can be
    /// queued: wait for (or drop) some tickets first.
    #[error("the ring is full: all {slots} slots hold finished tickets nobody waits for")]
    RingFull {
        /// Slots in the ring.
        slots: u32,
    },

    /// A ticket's results were already handed out (by `try_wait` or `wait_timeout`).
    #[error("the ticket's results were already taken")]
    TicketSpent,

    /// Workers kept exiting right after they started; the pool gave up.
    #[error("pool failed: {failures} workers in a row exited at start")]
    WorkersFailedToStart {
        /// Failures in a row.
        failures: u32,
    },

    /// A worker started by `exec` (`StartMethod::Spawn`, or the fork server) runs another
    /// executable than the pool's process: kernels cannot be translated into it.
    #[error("spawned worker runs another binary: expected {expected}, found {found}")]
    BinaryMismatch {
        /// The pool's executable (device, inode, size, mtime).
        expected: String,
        /// The executable the worker runs.
        found: String,
    },

    /// A process started by `exec` (`StartMethod::Spawn`, the fork server, `Process::spawn_fn`)
    /// reached the program's `main` instead of becoming what it was started for, which
    /// shmpool's start-up hook does before `main` in every executable that links shmpool: the
    /// executable runs no such hook (a host that loads shmpool otherwise), and its `main` does
    /// not call `shmpool::init()`.
    #[error("{what}: the started copy of the program reached main; call shmpool::init() at the top of main")]
    InitNotCalled {
        /// What needed it.
        what: &'static str,
    },

    /// A pool's `worker_init` function panicked in a worker; the pool stopped (every
    /// replacement would run it again).
    #[error("worker_init panicked in worker {pid} (the worker wrote the panic message to stderr); the pool stopped")]
    WorkerInitPanicked {
        /// The worker's pid.
        pid: u32,
    },

    /// A process started by `exec` did not complete its start-up handshake.
    #[error("spawned {what} {pid} did not start: {reason}")]
    StartFailed {
        /// What was started (worker, fork server, process).
        what: &'static str,
        /// Its pid.
        pid: u32,
        /// What happened (its exit status, a timeout).
        reason: String,
    },

    /// A row kernel's input is not a whole number of rows.
    #[error("ragged rows: {len} elements do not make rows of {row} elements")]
    RaggedRows {
        /// Elements in the data.
        len: usize,
        /// Elements per row.
        row: usize,
    },

    // numpy contract (issue 9)
    /// A dtype spelled in a way numpy does not accept, or a type shmpool does not support.
    #[error("unknown dtype '{name}' (numpy's spellings: bool, int8..int64 or i1 i2 i4 i8, uint8..uint64 or u1 u2 u4 u8, float16 float32 float64 or f2 f4 f8, with an optional '<', '=' or '|' prefix)")]
    UnknownDtype {
        /// What was given.
        name: String,
    },
}

/// How the last worker died, in words: a signal number, or an exit (signal 0).
fn last_death(signal: i32) -> String {
    if signal == 0 {
        "the last one exited: it could not map or run the chunk".to_string()
    } else {
        format!("last signal {signal}")
    }
}

impl From<shmpool_dtype::UnknownDtype> for Error {
    fn from(e: shmpool_dtype::UnknownDtype) -> Error {
        Error::UnknownDtype { name: e.name }
    }
}

/// What kind of failure an [`Error`] is: what a caller (or the CLI, for its exit code) decides
/// on, stable while variants are added.
///
/// # Examples
///
/// ```
/// # fn main() -> shmpool::Result<()> {
/// use shmpool::{ErrorKind, Pool, SharedVec};
/// let pool = Pool::new(1)?;
/// let xs = SharedVec::from_slice(&[1.0f64, 2.0])?;
/// let mut ys = SharedVec::<f64>::zeroed(3)?;
/// let e = pool.map_into(&xs, &mut ys, |x: f64| x).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::InvalidInput);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call cannot work with these arguments or this data (lengths, element types,
    /// options, expressions, a `.npy` header, an output aliasing the input, join before
    /// close, a spent ticket): fix the call.
    InvalidInput,
    /// A file named by the caller could not be opened, created, sized, written or renamed.
    File,
    /// A resource ran out: shared memory, the ring's slots, a lock's time limit.
    Exhausted,
    /// The kernel failed on a chunk (panicked, killed its workers, timed out). The pool stays
    /// usable.
    Kernel,
    /// The pool does not take work: closed, terminated during the call, broken, or used from
    /// another process.
    PoolUnavailable,
    /// A process could not be started as a worker (`init` not called, another binary, a
    /// failed handshake, workers that keep dying at start).
    Startup,
    /// Shared state failed an integrity check; the pool is broken from then on.
    Corruption,
    /// A system call failed.
    Os,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use Error as E;
        match self {
            E::LengthMismatch { .. }
            | E::InputLengths { .. }
            | E::InvalidOption { .. }
            | E::TypeMismatch { .. }
            | E::TooLarge { .. }
            | E::ReadOnly
            | E::JoinWhileOpen
            | E::Aliased { .. }
            | E::BadNpy { .. }
            | E::TicketSpent
            | E::RaggedRows { .. }
            | E::ForeignKernel { .. }
            | E::UnknownDtype { .. } => ErrorKind::InvalidInput,
            E::File { .. } => ErrorKind::File,
            E::ShmFull { .. } | E::RingFull { .. } | E::LockTimeout(_) => ErrorKind::Exhausted,
            E::WorkerCrashed { .. } | E::KernelPanicked { .. } | E::ChunkTimedOut { .. } => ErrorKind::Kernel,
            E::WrongProcess { .. } | E::Cancelled | E::PoolBroken { .. } | E::PoolClosed => ErrorKind::PoolUnavailable,
            E::WorkersFailedToStart { .. }
            | E::BinaryMismatch { .. }
            | E::InitNotCalled { .. }
            | E::StartFailed { .. }
            | E::WorkerInitPanicked { .. }
            | E::Protocol { .. } => ErrorKind::Startup,
            E::IncompatibleSegment { .. } | E::OutOfBounds { .. } | E::CorruptSlot { .. } => ErrorKind::Corruption,
            E::Os { .. } => ErrorKind::Os,
            // numpy's run-time error comes from the data as the kernel meets it; every other
            // expression error is the expression or its inputs.
            #[cfg(feature = "expr")]
            E::Expr(shmpool_expr::Error::NegativeIntegerPower) => ErrorKind::Kernel,
            #[cfg(feature = "expr")]
            E::Expr(_) => ErrorKind::InvalidInput,
        }
    }

    /// Why the pool is broken, without the "pool is broken" prefix that [`Error::PoolBroken`]
    /// adds (so that wrapping a stored failure never doubles it).
    pub(crate) fn broken_reason(&self) -> String {
        match self {
            Error::PoolBroken { reason } => reason.clone(),
            e => e.to_string(),
        }
    }

    /// Wraps the current `errno` (or a given OS error) with the name of the failing call.
    pub(crate) fn os(op: &'static str, source: std::io::Error) -> Self {
        Error::Os { op, source }
    }

    /// Wraps `errno` as left by the last failed libc call.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Error::os(op, std::io::Error::last_os_error())
    }
}
