//! A rank that dies mid-map (SIGKILL), a rank that panics, a kernel that panics in one rank:
//! the job ends within seconds, nothing is published, no temporary file, no shared-memory
//! segment and no process of the job remains. Needs the `testing` feature (the hooks that hold
//! or panic a rank mid-map): `cargo test --features testing`.
#![cfg(feature = "testing")]

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{descendants, finish, mpirun_cmd, nothing_left, save_f64, Dir, BIN};

/// The bound the issue sets on how long a job may take to end after a rank dies.
const END_WITHIN: Duration = Duration::from_secs(10);

/// Elements of the input: enough 64K-element chunks that every rank is mid-map at its first.
const N: u64 = 3_000_000;

fn start(d: &Dir, np: usize, env: &[(&str, String)]) -> Child {
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    let mut c = mpirun_cmd(
        d,
        np,
        Path::new(BIN),
        &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "-j", "1", "--chunk-len", "65536"],
    );
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Holds every rank of a 3-rank job mid-map, SIGKILLs rank `victim`, checks the aftermath.
fn killed_mid_map(victim: usize) {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), N);
    let hold = d.path("hold");
    std::fs::create_dir(&hold).unwrap();
    let child = start(&d, 3, &[("SHMPOOL_MPI_TEST_HOLD", hold.display().to_string())]);
    // Wait (a hung job is killed by `timeout`) until every rank is held mid-map.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(0..3).all(|r| hold.join(format!("rank{r}")).exists()) {
        assert!(Instant::now() < deadline, "the ranks never reached the middle of their map");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = descendants(child.id());
    let pids: Vec<Vec<u32>> = (0..3)
        .map(|r| {
            let s = std::fs::read_to_string(hold.join(format!("rank{r}"))).unwrap();
            s.split_whitespace().map(|p| p.parse().unwrap()).collect()
        })
        .collect();
    for p in pids.iter().flatten() {
        assert!(seen.contains(p), "rank or worker {p} is a process of the job");
    }
    let temp: Vec<String> = d.debris(&["x.npy", "hold"]);
    assert_eq!(temp.len(), 1, "the temporary output exists while the ranks map: {temp:?}");
    assert!(temp[0].starts_with(".out.npy."), "{temp:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[victim][0] as i32), nix::sys::signal::SIGKILL).unwrap();
    let (code, err, took, seen) = finish(child, Instant::now(), seen);
    assert_ne!(code, Some(0), "{err}");
    assert!(took < END_WITHIN, "the job took {took:?} to end after rank {victim} was killed\n{err}");
    nothing_left(&d, &seen);
}

#[test]
fn a_rank_sigkilled_mid_map_ends_the_job_and_leaves_nothing() {
    killed_mid_map(1);
}

#[test]
fn rank_0_sigkilled_mid_map_ends_the_job_and_the_others_remove_its_temporary() {
    killed_mid_map(0);
}

#[test]
fn a_rank_that_panics_aborts_the_job_while_the_others_map_and_leaves_nothing() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), N);
    let t = Instant::now();
    let child = start(&d, 3, &[("SHMPOOL_MPI_TEST_PANIC_RANK", "1".into())]);
    let (code, err, took, seen) = finish(child, t, Vec::new());
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("rank 1 panics after its map"), "the panic is printed: {err}");
    // mpirun exits with the code the panic hook gave MPI_Abort (101, as a Rust panic). Its own
    // "MPI_ABORT was invoked" banner is not checked: Open MPI sometimes loses it.
    assert_eq!(code, Some(101), "the panic hook aborted the job: {err}");
    // From start to end, not from the panic: a generous bound on start-up plus the abort.
    assert!(took < Duration::from_secs(60), "{took:?}\n{err}");
    assert!(seen.len() >= 3, "the job's processes were seen: {seen:?}");
    nothing_left(&d, &seen);
}

#[test]
fn a_kernel_that_panics_in_one_rank_fails_every_rank_and_publishes_nothing() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), N);
    let child = start(&d, 3, &[("SHMPOOL_MPI_TEST_PANIC_KERNEL_RANK", "2".into())]);
    let (code, err, _, seen) = finish(child, Instant::now(), Vec::new());
    assert_eq!(code, Some(1), "every rank exits 1: {err}");
    assert_eq!(err.matches("shmpool-mpi: error:").count(), 1, "one message: {err}");
    assert!(err.contains("rank 2: kernel panicked on index range"), "{err}");
    nothing_left(&d, &seen);
}

/// `Cpus_allowed_list` of a process.
fn cpus_allowed(pid: u32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string()
}

#[test]
fn a_rank_that_mpirun_binds_to_one_core_widens_its_cpus_before_its_workers_start() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), N);
    let hold = d.path("hold");
    std::fs::create_dir(&hold).unwrap();
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    // One rank: mpirun binds it to one core (explicitly here, whatever the default).
    let mut c = mpirun_cmd(
        &d,
        1,
        Path::new(BIN),
        &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "-j", "2", "--chunk-len", "65536"],
    );
    c.env("SHMPOOL_MPI_TEST_HOLD", &hold).env("OMPI_MCA_hwloc_base_binding_policy", "core");
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !hold.join("rank0").exists() {
        assert!(Instant::now() < deadline, "the rank never reached the middle of its map");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = descendants(child.id());
    let rank: u32 =
        std::fs::read_to_string(hold.join("rank0")).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let mine = cpus_allowed(std::process::id());
    let theirs = cpus_allowed(rank);
    // SIGTERM (a lone rank 0 killed with SIGKILL would leave its temporary: nobody is left
    // to remove it): the rank removes its temporary output and exits 128 + 15.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rank as i32), nix::sys::signal::SIGTERM).unwrap();
    let (code, err, _, seen) = finish(child, Instant::now(), seen);
    assert_ne!(code, Some(0), "{err}");
    assert_eq!(theirs, mine, "the rank may use every CPU this test may use\n{err}");
    nothing_left(&d, &seen);
}

/// CPU time (user + system, clock ticks) of a process and all its threads.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After ')': state(0) ppid(1) pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    // utime(11) stime(12).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_rank_waiting_for_a_slower_one_sleeps_instead_of_spinning_a_core() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), N);
    let hold = d.path("hold");
    std::fs::create_dir(&hold).unwrap();
    // Not oversubscribed (Open MPI's own waits yield when they are, and would pass too): a core
    // per rank.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: needs two cores");
        return;
    }
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    let args = ["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "-j", "1", "--chunk-len", "65536"];
    let child = common::mpirun_cmd_exact(&d, &[], false, 2, Path::new(BIN), &args)
        .env("SHMPOOL_MPI_TEST_HOLD", &hold)
        .env("SHMPOOL_MPI_TEST_HOLD_RANK", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Rank 1 is held mid-map; rank 0 finishes and waits for it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(hold.join("rank1").exists() && hold.join("waiting0").exists()) {
        assert!(Instant::now() < deadline, "rank 0 never reached its wait");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = descendants(child.id());
    let rank0: u32 = std::fs::read_to_string(hold.join("waiting0")).unwrap().trim().parse().unwrap();
    let rank1: u32 =
        std::fs::read_to_string(hold.join("rank1")).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // Measure rank 0's CPU use over a window of wall time while it waits. A busy-polling wait
    // would use most of the window (less under heavy load: a loaded machine can only make
    // this test pass, never fail); a sleeping one uses next to nothing.
    let window = Duration::from_secs(2);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
    let (t0, c0) = (Instant::now(), cpu_ticks(rank0));
    std::thread::sleep(window);
    let (wall, used) = (t0.elapsed().as_secs_f64(), (cpu_ticks(rank0) - c0) as f64 / hz);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rank1 as i32), nix::sys::signal::SIGKILL).unwrap();
    let (code, err, _, seen) = finish(child, Instant::now(), seen);
    assert_ne!(code, Some(0), "{err}");
    assert!(used < wall * 0.1, "rank 0 used {used:.2} s of CPU in {wall:.2} s of waiting\n{err}");
    nothing_left(&d, &seen);
}

#[test]
fn ctrl_c_on_mpirun_stops_every_rank_and_leaves_nothing() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), N);
    let hold = d.path("hold");
    std::fs::create_dir(&hold).unwrap();
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    let args = ["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "-j", "1", "--chunk-len", "65536"];
    // mpirun itself, not under `timeout` (which would take the SIGINT): the test's watchdog is
    // the deadline below.
    let mut c = std::process::Command::new("mpirun");
    c.args(["--oversubscribe", "-np", "2"])
        .arg(BIN)
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_backing_directory", d.path("mpi"))
        .env("OMPI_MCA_pml", "ob1")
        .env("SHMPOOL_MPI_TEST_HOLD", &hold)
        .stdin(Stdio::null());
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(0..2).all(|r| hold.join(format!("rank{r}")).exists()) {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the ranks never reached the middle of their map");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = descendants(child.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("mpirun did not end after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, err, _, seen) = finish(child, t, seen);
    assert_ne!(code, Some(0), "{err}");
    nothing_left(&d, &seen);
}
