//! `shmpool-mpi`: `mpirun -np N shmpool-mpi map INPUT.npy -o OUTPUT.npy --expr '...' -j J`, the
//! map of `shmpool map` with every rank mapping its slice of the file with a local pool.
//!
//! Exit codes as `shmpool map`: 0 success, 2 usage or bad input, 1 failure while running,
//! 128 + N when stopped by signal N. Every rank exits with the same code; one rank prints the
//! message: rank 0 when it met the failure, else the lowest rank that did (ranks may be given
//! different command lines: MPMD). mpirun's own exit code is
//! mpirun's: signalled itself, Open MPI's exits 1 whatever its ranks exit.
#![deny(unsafe_code)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use mpi::topology::SimpleCommunicator;
use shmpool::cli::MapArgs;
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
    #[command(after_help = shmpool::cli::functions_help())]
    Map(MapArgs),
}

/// The inputs, as `shmpool map` reads them ([`shmpool::cli::parse_inputs`]: its code and its
/// messages). One bare path: the job's `input`; otherwise its named `inputs`.
fn parse_inputs(raw: &[String]) -> Result<(PathBuf, Vec<(String, PathBuf)>), String> {
    let named = shmpool::cli::parse_inputs(raw).map_err(|e| match e {
        shmpool::cli::InputsError::Name(e) => shmpool_mpi::chain(&shmpool::Error::from(e)),
        other => other.to_string(),
    })?;
    match named.as_slice() {
        [] => Err("map needs an INPUT .npy file (shmpool-mpi has no built-in dataset)".into()),
        [(None, p)] => Ok((p.clone(), Vec::new())),
        _ => Ok((PathBuf::new(), named.into_iter().map(|(n, p)| (n.unwrap_or_else(|| "x".into()), p)).collect())),
    }
}

/// Asks Open MPI to yield the core in its blocking calls (`MPI_Init`'s exchange, collectives,
/// `MPI_Finalize`) instead of polling it (`mpi_yield_when_idle`), unless the user chose: a rank
/// shares its node's cores with its own workers and the other ranks' (Open MPI yields by itself
/// only when it knows the node is oversubscribed, and it counts ranks, not workers). Read at
/// `MPI_Init`, so set before it, while this process has no other thread.
fn yield_when_idle() {
    const YIELD: &str = "OMPI_MCA_mpi_yield_when_idle";
    if std::env::var_os(YIELD).is_none() {
        std::env::set_var(YIELD, "1");
    }
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
    // Checked before any handler is installed: a signal ignored at start (`nohup`) is left so.
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2].into_iter().filter(|&s| !ignored(s)).collect();
    let mut signals =
        signal_hook::iterator::Signals::new(wanted).map_err(|e| format!("cannot install signal handlers: {e}"))?;
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

/// Whether `sig` is ignored in this process (inherited from whoever started it), as
/// `shmpool map` asks.
#[allow(unsafe_code)]
fn ignored(sig: i32) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`, valid writable storage.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction succeeded, so it filled `old` (zeroed storage is a valid sigaction too).
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running destructors or atexit handlers, which
    // is the intent here (another thread may be inside MPI or a map); it has no preconditions.
    unsafe { libc::_exit(code) }
}

/// What a rank's command line asks for, before anything runs.
enum Parsed {
    /// A map to run.
    Map(Box<Ready>),
    /// `--help` or `--version`: clap's text, exit 0.
    Shown(clap::Error),
    /// Refused by clap (exit 2).
    Invalid(clap::Error),
    /// Refused by `shmpool map`'s checks (exit 2).
    Refused(String),
}

/// A map's arguments, checked as `shmpool map` checks them before it opens any file.
struct Ready {
    args: MapArgs,
    input: PathBuf,
    inputs: Vec<(String, PathBuf)>,
    output: PathBuf,
    expr: String,
}

impl Parsed {
    /// 0: a map; 1: help or version; 2: refused. The order of the agreement: the largest wins.
    fn outcome(&self) -> i32 {
        match self {
            Parsed::Map(_) => 0,
            Parsed::Shown(_) => 1,
            Parsed::Invalid(_) | Parsed::Refused(_) => 2,
        }
    }

    /// Prints what this command line says (help, version, or why it is refused).
    fn report(&self, rank: i32) {
        let prefix = if rank == 0 { String::new() } else { format!("rank {rank}: ") };
        match self {
            Parsed::Map(_) => {}
            Parsed::Shown(e) | Parsed::Invalid(e) => {
                if rank != 0 {
                    eprint!("shmpool-mpi: {prefix}");
                }
                let _ = e.print();
            }
            Parsed::Refused(m) => eprintln!("shmpool-mpi: error: {prefix}{m}"),
        }
    }
}

/// Parses the command line and makes `shmpool map`'s checks before any file is opened, in its
/// order and with its messages.
fn parse_command_line() -> Parsed {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => return Parsed::Invalid(e),
        Err(e) => return Parsed::Shown(e),
    };
    let Command::Map(args) = cli.command;
    match check(args) {
        Ok(r) => Parsed::Map(Box::new(r)),
        Err(m) => Parsed::Refused(m),
    }
}

fn check(args: MapArgs) -> Result<Ready, String> {
    if args.jobs == Some(0) {
        return Err("-j must be at least 1".into());
    }
    let (input, inputs) = parse_inputs(&args.inputs)?;
    let output = args.output.clone().ok_or("map INPUT needs -o OUTPUT.npy")?;
    let expr = args
        .expr
        .clone()
        .ok_or("map INPUT needs --expr EXPRESSION (e.g. --expr 'sqrt(x) * 1.5 + 0.25'; see --help)")?;
    // The output that is a named input other than the one --in-place names, as `shmpool map`
    // refuses it (the job itself only knows whether replacing is allowed). With one input,
    // `shmpool map` ignores the name.
    if let (Some(n), Some((k, _))) =
        (args.in_place.as_deref(), inputs.iter().find(|(_, p)| shmpool::cli::same_file(p, &output)))
    {
        if k != n {
            return Err(format!("output {} is the input {k}: pass --in-place={k} to replace it", output.display()));
        }
    }
    shmpool::cli::check_not_reserved(inputs.iter().map(|(n, _)| n.as_str())).map_err(|e| e.to_string())?;
    Ok(Ready { args, input, inputs, output, expr })
}

/// The ranks mpirun started (1 when not under mpirun).
fn launched_ranks() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"].iter().find_map(|v| std::env::var(v).ok()?.parse().ok()).unwrap_or(1)
}

/// Every rank's command line, agreed on (ranks may be given different ones: MPMD). A map runs
/// only when every rank was given one; otherwise every rank returns the same exit code and one
/// rank says why: the lowest refused rank (rank 0 when it is one), else rank 0 (every rank
/// asked for help or the version: exit 0; only some did: exit 2).
fn agree_on_command_lines(world: &SimpleCommunicator, parsed: Parsed) -> Result<Box<Ready>, i32> {
    use mpi::collective::SystemOperation;
    use mpi::traits::{Communicator, CommunicatorCollectives};
    let (rank, outcome) = (world.rank(), parsed.outcome());
    let first = |o: i32| -if outcome == o { rank } else { i32::MAX };
    shmpool_mpi::wait_for_all(world, || {});
    let mut all = [0i32; 4];
    world.all_reduce_into(&[outcome, -outcome, first(1), first(2)][..], &mut all[..], SystemOperation::max());
    let (most, least, first_shown, first_refused) = (all[0], -all[1], -all[2], -all[3]);
    match parsed {
        Parsed::Map(r) if most == 0 => Ok(r),
        _ if most == 2 => {
            if rank == first_refused {
                parsed.report(rank);
            }
            Err(EXIT_USAGE)
        }
        _ if least == 1 => {
            if rank == 0 {
                parsed.report(rank);
            }
            Err(0)
        }
        _ => {
            if rank == 0 {
                eprintln!(
                    "shmpool-mpi: error: rank {first_shown} was given --help or --version and other ranks a map: \
                     every rank must be given the same job"
                );
            }
            Err(EXIT_USAGE)
        }
    }
}

fn main() {
    // mpirun binds each rank to one core and forked workers inherit it: widen it first, before
    // `init` (which may start the fork server the workers are forked from).
    shmpool_mpi::widen_cpu_affinity();
    shmpool::init();
    restore_sigpipe();
    let parsed = parse_command_line();
    // Alone, a command line that maps nothing ends here. Under mpirun with other ranks, every
    // rank enters MPI first: one that ended before `MPI_Init` (exit 0) would leave the others
    // waiting in it, and one that failed would fail in silence unless it is rank 0.
    if launched_ranks() <= 1 && !matches!(parsed, Parsed::Map(_)) {
        parsed.report(0);
        std::process::exit(if parsed.outcome() == 2 { EXIT_USAGE } else { 0 });
    }
    yield_when_idle();
    if let Err(e) = stop_on_signals() {
        eprintln!("shmpool-mpi: error: {e}");
        std::process::exit(EXIT_FAILURE);
    }
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        eprintln!("shmpool-mpi: error: MPI was already initialised");
        std::process::exit(EXIT_FAILURE);
    };
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    let code = match agree_on_command_lines(&world, parsed) {
        Ok(ready) => run(&world, *ready),
        Err(code) => code,
    };
    drop(universe); // MPI_Finalize
    std::process::exit(code);
}

fn run(world: &SimpleCommunicator, Ready { args, input, inputs, output, expr }: Ready) -> i32 {
    use mpi::traits::Communicator;
    let rank = world.rank();
    let job = MapJob {
        input,
        output: output.clone(),
        expr,
        dtype: args.dtype.clone(),
        workers: args.jobs,
        chunk_len: args.chunk_len,
        in_place: args.in_place.is_some(),
        inputs,
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
    let result = shmpool_mpi::map_npy(world, &job, if show { Some(&mut cb) } else { None });
    let secs = t.elapsed().as_secs_f64();
    if let Some(pr) = printer.as_mut() {
        pr.finish();
    }
    match result {
        Ok(m) => {
            // Every rank returned Ok (the map's last step agrees on it): the workers per
            // working rank, not rank 0's own (none when its slice is empty).
            let workers = most_workers(world, m.workers);
            if rank == 0 {
                summary(&m, secs, workers, &output);
            }
            0
        }
        Err(e) => report_failure(world, &e),
    }
}

/// One message and one exit code for a failed map (every rank returned an error: the map's
/// last step agrees on it): the lowest rank that met the failure itself says what it is, and
/// every rank exits with that rank's code.
fn report_failure(world: &SimpleCommunicator, e: &shmpool_mpi::Error) -> i32 {
    use mpi::collective::SystemOperation;
    use mpi::traits::{Communicator, CommunicatorCollectives};
    let rank = world.rank();
    // The lowest such rank with its code, as the largest key: (2^31 - rank) · 256 + code.
    let key = |rank: i32, code: i32| ((i64::from(i32::MAX) + 1 - i64::from(rank)) << 8) | i64::from(code & 0xff);
    let mine = if e.reported_elsewhere() { 0 } else { key(rank, e.exit_code()) };
    shmpool_mpi::wait_for_all(world, || {});
    let mut first = 0i64;
    world.all_reduce_into(&mine, &mut first, SystemOperation::max());
    if first == 0 {
        return e.exit_code(); // every rank's error says another reported it
    }
    if first == mine {
        let prefix = if rank == 0 { String::new() } else { format!("rank {rank}: ") };
        eprintln!("shmpool-mpi: error: {prefix}{}", shmpool_mpi::chain(e));
    }
    (first & 0xff) as i32
}

/// The largest worker count of all ranks.
fn most_workers(world: &SimpleCommunicator, mine: usize) -> usize {
    use mpi::collective::SystemOperation;
    use mpi::traits::CommunicatorCollectives;
    shmpool_mpi::wait_for_all(world, || {});
    let mut most = 0u64;
    world.all_reduce_into(&(mine as u64), &mut most, SystemOperation::max());
    most as usize
}

/// `shmpool map`'s summary line, with the ranks.
fn summary(m: &shmpool_mpi::Mapped, secs: f64, workers: usize, output: &std::path::Path) {
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
        workers,
        output.display()
    );
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
        // Nothing done yet (rank 0's slice may be empty, the others not reported yet): no rate,
        // no estimate to print.
        let due = p.done > 0 && self.last_line.is_none_or(|t| now - t >= Self::LINE_INTERVAL);
        if end || (!self.ended && due) {
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
        let eta = if done < total && rate > 0.0 { (total - done) as f64 / rate } else { 0.0 };
        eprintln!("progress: {pct:5.1}% {done}/{total} elements, {:.1} Melem/s, ETA {eta:.0} s", rate / 1e6);
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's definition only when it parses (and only in debug builds): a
    /// clash between the shared `MapArgs` and this binary's own would end every run.
    #[test]
    fn the_command_line_definition_is_valid() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn inputs_are_read_as_shmpool_map_reads_them() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_inputs(&s(&["d/x.npy"])), Ok((PathBuf::from("d/x.npy"), vec![])));
        // A prefix that cannot name an input is part of the path.
        assert_eq!(parse_inputs(&s(&["a-b=c.npy"])), Ok((PathBuf::from("a-b=c.npy"), vec![])));
        assert_eq!(
            parse_inputs(&s(&["a=a.npy", "b.npy"])),
            Ok((PathBuf::new(), vec![("a".into(), PathBuf::from("a.npy")), ("x".into(), PathBuf::from("b.npy"))]))
        );
        assert!(parse_inputs(&s(&["a.npy", "b.npy"])).is_err());
        assert!(parse_inputs(&[]).is_err());
    }
}
