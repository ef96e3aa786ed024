//! The `shmpool` command line. Uses the library's public API only.
//!
//! Exit codes: 0 success, 2 usage or bad input, 1 failure while running, 128 + N when stopped
//! by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129). Errors are printed with their whole
//! `source()` chain.
#![deny(unsafe_code)]

mod bench;
mod gen;
mod input;
mod map;
mod reduce;
mod reduced;

use clap::{Parser, Subcommand};

/// Exit code for usage errors and bad input.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for failures while running.
pub const EXIT_FAILURE: i32 = 1;

/// shmpool: a shared-memory parallel map engine (multiprocessing.Pool for numeric arrays).
#[derive(Debug, Parser)]
#[command(name = "shmpool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Map an expression over a memory-mapped .npy file in parallel (zero-copy), or, with no
    /// INPUT, W1 over the built-in 50M-element f64 dataset, verified element by element.
    #[command(after_help = map::functions_help())]
    Map(map::MapArgs),
    /// Reduce an expression over memory-mapped .npy files, in parallel: `shmpool reduce x.npy
    /// --expr 'sum(x * x)'` prints numpy's repr of np.sum(x * x); `sum(x, axis=1)` an array.
    Reduce(reduce::ReduceArgs),
    /// Write a synthetic .npy dataset.
    Gen(gen::GenArgs),
    /// Run W1, W2, W3 with shmpool, a single thread and in-process threads; print medians.
    Bench(bench::BenchArgs),
    /// Report /dev/shm capacity and shmpool segments left by dead processes.
    Info {
        /// Remove the stale segments.
        #[arg(long)]
        clean: bool,
    },
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    /// Bad input or usage (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure { code: EXIT_USAGE, message: message.into() }
    }

    /// A failure while running (exit 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure { code: EXIT_FAILURE, message: message.into() }
    }

    /// Stopped by a signal: exit 128 + the signal number, as a shell reports it.
    pub fn signalled(signal: i32) -> Self {
        Failure { code: 128 + signal, message: String::new() }
    }
}

impl From<shmpool::Error> for Failure {
    fn from(e: shmpool::Error) -> Self {
        // Decided by kind, never by message: the user's call or files are at fault (2), or
        // running failed (1).
        let code = match e.kind() {
            shmpool::ErrorKind::InvalidInput | shmpool::ErrorKind::File => EXIT_USAGE,
            _ => EXIT_FAILURE,
        };
        Failure { code, message: chain(&e) }
    }
}

impl From<shmpool::kernel::expr::Error> for Failure {
    fn from(e: shmpool::kernel::expr::Error) -> Self {
        shmpool::Error::from(e).into()
    }
}

impl From<shmpool::cli::InputsError> for Failure {
    fn from(e: shmpool::cli::InputsError) -> Self {
        match e {
            shmpool::cli::InputsError::Name(e) => e.into(),
            other => Failure::usage(other.to_string()),
        }
    }
}

impl From<shmpool::UnknownDtype> for Failure {
    fn from(e: shmpool::UnknownDtype) -> Self {
        shmpool::Error::from(e).into()
    }
}

pub use shmpool::cli::chain;

/// Restores the default SIGPIPE action (Rust's runtime ignores it): `shmpool map … | head`
/// then ends quietly when the reader goes, like any Unix tool, instead of panicking in a
/// `println!` (the output file, if any, is already complete by then). Workers never write to
/// pipes; their sockets use `MSG_NOSIGNAL`.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default has no preconditions; this runs on
    // the main thread before any other thread of the binary exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    restore_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { 0 };
        }
    };
    let result = match cli.command {
        Command::Map(args) => map::run(args),
        Command::Reduce(args) => reduce::run(args),
        Command::Gen(args) => gen::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Info { clean } => info(clean),
    };
    match result {
        Ok(()) => 0,
        Err(f) if f.message.is_empty() => f.code,
        Err(f) => {
            eprintln!("shmpool: error: {}", f.message);
            f.code
        }
    }
}

fn info(clean: bool) -> Result<(), Failure> {
    let (size, free) = shmpool::diagnostics::shm_capacity().map(|c| (c.total, c.free))?;
    println!("/dev/shm: {} total, {} free", human(size), human(free));
    let all = shmpool::diagnostics::segments();
    let stale = shmpool::diagnostics::stale_segments();
    println!("shmpool segments: {} ({} of dead owners)", all.len(), stale.len());
    for s in &stale {
        println!("  stale {} (owner pid {}, {})", s.name, s.owner_pid, human(s.size));
    }
    if clean {
        let removed = shmpool::diagnostics::sweep_stale();
        println!("removed {} stale segments", removed.len());
    }
    Ok(())
}

/// Bytes in binary units.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
