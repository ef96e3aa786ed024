//! `shmpool-mpi`: `mpirun -np N shmpool-mpi map INPUT.npy -o OUTPUT.npy --expr '...' -j J`, the
//! map of `shmpool map` with every rank mapping its slice of the file with a local pool.
//!
//! Exit codes as `shmpool map`: 0 success, 2 usage or bad input, 1 failure while running,
//! 128 + N when stopped by signal N. Every rank exits with the same code; the message comes
//! from rank 0 (or from the rank that failed, when only one did). mpirun's own exit code is
//! mpirun's: signalled itself, Open MPI's exits 1 whatever its ranks exit.
#![deny(unsafe_code)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use shmpool_mpi::{MapJob, Progress, EXIT_FAILURE, EXIT_USAGE};

/// shmpool over MPI: every rank maps its slice of a .npy file with a local pool of worker
/// processes; rank 0 publishes one output, byte-identical to `shmpool map`'s.
#[derive(Debug, Parser)]
#[command(name = "shmpool-mpi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Map an expression over a memory-mapped .npy file with every rank (zero-copy).
    Map(MapArgs),
}

/// The arguments of `shmpool map INPUT`, with the same names, meanings and defaults.
#[derive(Debug, clap::Args)]
struct MapArgs {
    /// Input .npy file (memory-mapped, read in place), on a filesystem every rank sees.
    input: PathBuf,
    /// Output .npy file: written under a hidden temporary name in its directory and renamed
    /// to its name by rank 0 only when every rank succeeded, with `np.save`'s permissions.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Expression over `x` (element) and `i` (global flat index, int64) with numpy's
    /// semantics: types and promotion (NEP 50), integer arithmetic, comparisons giving bool. A
    /// value starting with '-' is an expression (`--expr '-x**2'`). Required.
    #[arg(long, allow_hyphen_values = true)]
    expr: Option<String>,
    /// Output dtype as numpy spells it (float64, f8, <i8, uint8, u1, bool...). Default: numpy's
    /// result type for the expression; otherwise the result is cast as numpy's astype.
    #[arg(long)]
    dtype: Option<String>,
    /// Worker processes per rank (default: this machine's cores divided among its ranks). A
    /// rank never starts more workers than it can use: one per 65,536 elements of its slice.
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// Elements per chunk (default: adaptive).
    #[arg(long)]
    chunk_len: Option<usize>,
    /// Report progress across all ranks on rank 0 even when stderr is not a terminal: plain
    /// lines with percent, elements/s and ETA about once a second; a terminal gets the bar.
    #[arg(long, conflicts_with = "quiet")]
    progress: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Allow the output to replace the input (written aside, renamed over it on success; the
    /// input's mode is kept). The one input is `x`: `--in-place` and `--in-place=x` are the same.
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "x")]
    in_place: Option<String>,
}

/// This process's rank as mpirun announces it before `MPI_Init` (0 when not under mpirun).
fn launcher_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Restores the default SIGPIPE action, as `shmpool` does (see its `restore_sigpipe`).
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default has no preconditions; this runs on
    // the main thread before any other thread of the binary exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 (mpirun stops the ranks of a failed job with SIGTERM) remove the
/// temporary output, if this rank knows of one, and end the process at once with 128 + the
/// signal: the workers die with it (`PR_SET_PDEATHSIG`), shared memory names are unlinked
/// from creation. A signal the program was started with ignored stays ignored.
fn stop_on_signals() -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    // SIGUSR1 and SIGUSR2: the warning signals batch systems send before a time limit, which
    // mpirun forwards to the ranks; their default action would end a rank without cleaning up.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("shmpool-mpi-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                shmpool_mpi::remove_temporary();
                // _exit: nothing of this process (MPI's state, the pool) may run on.
                exit_now(128 + sig);
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running destructors or atexit handlers, which
    // is the intent here (another thread may be inside MPI or a map); it has no preconditions.
    unsafe { libc::_exit(code) }
}

fn main() {
    // mpirun binds each rank to one core and forked workers inherit it: widen it first, before
    // `init` (which may start the fork server the workers are forked from).
    shmpool_mpi::widen_cpu_affinity();
    shmpool::init();
    restore_sigpipe();
    let rank0 = launcher_rank() == 0;
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Every rank parses the same arguments: rank 0 alone says what is wrong.
            if rank0 {
                let _ = e.print();
            }
            std::process::exit(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let Command::Map(args) = cli.command;
    // `shmpool map`'s checks before any file is opened, in its order and with its messages.
    let usage = |message: &str| -> ! {
        if rank0 {
            eprintln!("shmpool-mpi: error: {message}");
        }
        std::process::exit(EXIT_USAGE);
    };
    if args.jobs == Some(0) {
        usage("-j must be at least 1");
    }
    let Some(output) = args.output.clone() else { usage("map INPUT needs -o OUTPUT.npy") };
    let Some(expr) = args.expr.clone() else {
        usage("map INPUT needs --expr EXPRESSION (e.g. --expr 'sqrt(x) * 1.5 + 0.25'; see --help)")
    };
    if args.in_place.as_deref().is_some_and(|n| n != "x") {
        usage("shmpool-mpi maps one input, x: --in-place takes no other name");
    }
    if let Err(e) = stop_on_signals() {
        eprintln!("shmpool-mpi: error: {e}");
        std::process::exit(EXIT_FAILURE);
    }
    let code = run(args, output, expr);
    std::process::exit(code);
}

fn run(args: MapArgs, output: PathBuf, expr: String) -> i32 {
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        eprintln!("shmpool-mpi: error: MPI was already initialised");
        return EXIT_FAILURE;
    };
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    use mpi::traits::Communicator;
    let rank = world.rank();
    let job = MapJob {
        input: args.input.clone(),
        output: output.clone(),
        expr,
        dtype: args.dtype.clone(),
        workers: args.jobs,
        chunk_len: args.chunk_len,
        in_place: args.in_place.is_some(),
    };
    let terminal = stderr_reaches_a_terminal();
    let show = rank == 0 && !args.quiet && (args.progress || terminal);
    let mut printer = show.then(|| Printer::new(terminal));
    let mut cb = |p: Progress| {
        if let Some(pr) = printer.as_mut() {
            pr.update(p);
        }
    };
    let t = Instant::now();
    let result = shmpool_mpi::map_npy(&world, &job, if show { Some(&mut cb) } else { None });
    let secs = t.elapsed().as_secs_f64();
    if let Some(pr) = printer.as_mut() {
        pr.finish();
    }
    let code = match result {
        Ok(m) => {
            if rank == 0 {
                let shape: Vec<String> = m.shape.iter().map(|d| d.to_string()).collect();
                println!(
                    "mapped {} elements ({} {} -> {}) in {:.1} ms: {:.1} Melem/s with {} ranks x {} workers; wrote {}",
                    m.len,
                    shape.join("x"),
                    m.in_dtype,
                    m.out_dtype,
                    secs * 1e3,
                    m.len as f64 / secs.max(1e-9) / 1e6,
                    m.ranks,
                    m.workers,
                    output.display()
                );
            }
            0
        }
        Err(e) => {
            if !e.reported_elsewhere() {
                let prefix = if rank == 0 { String::new() } else { format!("rank {rank}: ") };
                eprintln!("shmpool-mpi: error: {prefix}{}", shmpool_mpi::chain(&e));
            }
            e.exit_code()
        }
    };
    drop(universe); // MPI_Finalize
    code
}

/// Whether what this rank writes to stderr ends up on a terminal: its own stderr is one, or
/// (under mpirun, which gives a rank's stderr a pipe and copies it to its own stderr) the
/// parent's is: on mpirun's host rank 0's parent is mpirun. Elsewhere (a remote rank, whose
/// parent is Open MPI's daemon) it does not know, and says no.
fn stderr_reaches_a_terminal() -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    if std::io::stderr().is_terminal() {
        return true;
    }
    if std::env::var_os("OMPI_COMM_WORLD_RANK").is_none() {
        return false;
    }
    let parent = nix::unistd::getppid();
    // O_NOCTTY: looking at the terminal never makes it this process's controlling terminal.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/{parent}/fd/2"))
        .is_ok_and(|f| f.is_terminal())
}

/// A terminal reached through a pipe (mpirun copies rank 0's stderr to its terminal): the
/// escape sequences indicatif needs, written to stderr, which is not a terminal itself.
#[derive(Debug)]
struct RelayedTerminal {
    width: u16,
}

impl RelayedTerminal {
    fn put(&self, s: &str) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().lock().write_all(s.as_bytes())
    }
}

impl indicatif::TermLike for RelayedTerminal {
    fn width(&self) -> u16 {
        self.width
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}A"))
        }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}B"))
        }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}C"))
        }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}D"))
        }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().flush()
    }
}

/// Progress on rank 0's stderr, as `shmpool map` shows it: indicatif's bar on a terminal;
/// elsewhere plain lines with percent, elements/s and ETA at most once a second, and a last
/// line at 100%.
struct Printer {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    last_line: Option<Instant>,
    last: Progress,
    ended: bool,
}

impl Printer {
    const LINE_INTERVAL: Duration = Duration::from_secs(1);

    fn new(terminal: bool) -> Printer {
        let bar = terminal.then(|| {
            let b = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new(0)
            } else {
                let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(80);
                let target = indicatif::ProgressDrawTarget::term_like(Box::new(RelayedTerminal { width }));
                indicatif::ProgressBar::with_draw_target(Some(0), target)
            };
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {percent:>3}% {human_pos}/{human_len} {per_sec} ETA {eta}",
                )
                .expect("valid template"),
            );
            b
        });
        Printer { bar, start: Instant::now(), last_line: None, last: Progress { done: 0, total: 0 }, ended: false }
    }

    fn update(&mut self, p: Progress) {
        self.last = p;
        if let Some(b) = &self.bar {
            b.set_length(p.total as u64);
            b.set_position(p.done as u64);
            return;
        }
        let now = Instant::now();
        let end = p.done == p.total && !self.ended;
        if end || (!self.ended && self.last_line.is_none_or(|t| now - t >= Self::LINE_INTERVAL)) {
            self.ended |= end;
            self.last_line = Some(now);
            self.line();
        }
    }

    fn line(&self) {
        let Progress { done, total } = self.last;
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        let eta = if rate > 0.0 { (total - done.min(total)) as f64 / rate } else { f64::NAN };
        eprintln!("progress: {pct:5.1}% {done}/{total} elements, {:.1} Melem/s, ETA {eta:.0} s", rate / 1e6);
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
