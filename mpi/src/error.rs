//! The errors of a map over ranks, their exit codes, and how they print.

use crate::{EXIT_FAILURE, EXIT_USAGE};

/// What went wrong, on this rank or another.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments, found by rank 0 before anything was written.
    #[error("{0}")]
    Usage(String),
    /// The engine failed on this rank (bad input, a kernel panic, a crashed worker, I/O).
    #[error(transparent)]
    Engine(#[from] shmpool::Error),
    /// Another rank failed and reported it; this rank did nothing wrong.
    #[error("another rank failed (status {status})")]
    OtherRank {
        /// The status word the ranks agreed on (an exit code).
        status: i32,
    },
    /// The input changed (was truncated or replaced) while the ranks mapped it: the engine's
    /// error (workers that could not read their chunks) is the consequence.
    #[error("the input {path} changed during the map (it is now {now}, it was {was} bytes)")]
    InputChanged {
        /// The input.
        path: String,
        /// Its size now ("gone" when it is).
        now: String,
        /// Its size when the map started, in bytes.
        was: u64,
        /// What the engine met.
        #[source]
        source: shmpool::Error,
    },
    /// A slice is too large for one MPI message (counts are C ints).
    #[error("too large for MPI: {bytes} bytes in one rank's slice, at most {max}")]
    TooLarge {
        /// Bytes of the largest slice.
        bytes: u64,
        /// The largest count MPI takes.
        max: u64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The process exit code for this error, as `shmpool map` uses them: 2 for usage and bad
    /// input, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::OtherRank { status } => *status,
            Error::TooLarge { .. } => EXIT_USAGE,
            Error::InputChanged { .. } => EXIT_FAILURE,
            // Decided by kind, never by message, as `shmpool map` decides.
            Error::Engine(e) => match e.kind() {
                shmpool::ErrorKind::InvalidInput | shmpool::ErrorKind::File => EXIT_USAGE,
                _ => EXIT_FAILURE,
            },
        }
    }

    /// Whether another rank already printed this failure (this rank should stay quiet).
    pub fn reported_elsewhere(&self) -> bool {
        matches!(self, Error::OtherRank { .. })
    }
}

pub use shmpool::cli::chain;
