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

    /// A builder option or argument is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A chunk killed `attempts` workers in a row.
    #[error("worker crashed on index range {range:?} after {attempts} attempts (last signal {signal})")]
    WorkerCrashed {
        /// The index range of the chunk the workers died on.
        range: Range<usize>,
        /// The signal that killed the last worker (0 if it exited without a signal).
        signal: i32,
        /// How many workers the chunk killed.
        attempts: u32,
    },

    /// A kernel panicked; the worker caught the panic and survived.
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

    /// An expression did not parse; `position` is the 1-based column of the problem.
    #[error("invalid expression at column {position}: {message}\n  {expr}\n  {caret:>position$}", caret = "^")]
    InvalidExpression {
        /// The expression.
        expr: String,
        /// 1-based column (in characters).
        position: usize,
        /// What is wrong.
        message: String,
    },

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

    /// The pool's supervisor stopped or lost its workers and cannot continue.
    #[error("pool failed: {0}")]
    PoolFailed(String),

    // numpy contract (issue 9)
    /// A dtype spelled in a way numpy does not accept, or a type shmpool does not support.
    #[error("unknown dtype '{name}' (numpy's spellings: bool, int8..int64 or i1 i2 i4 i8, uint8..uint64 or u1 u2 u4 u8, float16 float32 float64 or f2 f4 f8, with an optional '<', '=' or '|' prefix)")]
    UnknownDtype {
        /// What was given.
        name: String,
    },

    // numpy contract (issue 9)
    /// An expression program was compiled for one input type and used with another.
    #[error("expression was compiled for {compiled} input, the data is {found}")]
    ExpressionInputType {
        /// The input type the program was compiled for (numpy name).
        compiled: &'static str,
        /// The input type it was used with (numpy name).
        found: &'static str,
    },

    // numpy contract (issue 9)
    /// A size computation (elements times element size, header plus data) overflows.
    #[error("{what}: {len} elements of {elem_size} bytes overflow the address space")]
    SizeOverflow {
        /// What was being sized.
        what: String,
        /// Number of elements requested.
        len: u64,
        /// Bytes per element.
        elem_size: usize,
    },
}

impl Error {
    /// Wraps the current `errno` (or a given OS error) with the name of the failing call.
    pub(crate) fn os(op: &'static str, source: std::io::Error) -> Self {
        Error::Os { op, source }
    }

    /// Wraps `errno` as left by the last failed libc call.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Error::os(op, std::io::Error::last_os_error())
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::os("system call", std::io::Error::from(e))
    }
}
