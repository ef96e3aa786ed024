//! Ranks that wait for each other leave their cores to the others (issue 17's performance
//! item): a rank that calls `map_npy` before another rank is ready waits sleeping, not in a
//! busy-polling `MPI_Comm_dup`. The test runs its own binary under mpirun for the rank body,
//! a scenario (tests/common/scenario.rs).

mod common;

scenarios!(rank_body_one_rank_late);

use std::path::Path;
use std::time::{Duration, Instant};

use common::{save_f64, scenario, text, Dir};
use shmpool_mpi::{map_npy, MapJob};

fn test_dir() -> std::path::PathBuf {
    std::env::var_os("SHMPOOL_MPI_TEST_DIR").expect("run by the test below").into()
}

/// CPU time (user + system, clock ticks) of a process and all its threads.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_rank_that_calls_map_npy_before_the_others_waits_sleeping() {
    // Not oversubscribed (Open MPI's own waits yield when they are, and would pass too): a core
    // per rank.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: needs two cores");
        return;
    }
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1000);
    let exe = std::env::current_exe().unwrap();
    let args = scenario::args("rank_body_one_rank_late");
    let child = common::mpirun_cmd_exact(&d, &[], false, 2, &exe, &[&args[0], &args[1]])
        .env("SHMPOOL_MPI_TEST_DIR", d.tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let early = d.path("early");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !early.exists() {
        assert!(Instant::now() < deadline, "rank 0 never reached map_npy");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rank0: u32 = std::fs::read_to_string(&early).unwrap().trim().parse().unwrap();
    // Rank 0 is in map_npy (or about to be: either way it has nothing to compute) while rank 1
    // holds back. A busy-polling wait would use most of the window (less under heavy load: a
    // loaded machine can only make this test pass, never fail); a sleeping one next to nothing.
    let window = Duration::from_secs(2);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
    let (t0, c0) = (Instant::now(), cpu_ticks(rank0));
    std::thread::sleep(window);
    let (wall, used) = (t0.elapsed().as_secs_f64(), (cpu_ticks(rank0) - c0) as f64 / hz);
    std::fs::write(d.path("go"), b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(used < wall * 0.1, "rank 0 used {used:.2} s of CPU in {wall:.2} s of waiting\n{}", text(&o));
    assert!(d.path("out.npy").exists(), "the map ran once both ranks were there");
}

/// Rank 0 calls `map_npy` at once; rank 1 only when the test says go.
fn rank_body_one_rank_late() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    let dir = test_dir();
    let rank = mpi::traits::Communicator::rank(&world);
    if rank == 0 {
        std::fs::write(dir.join(".early"), std::process::id().to_string()).unwrap();
        std::fs::rename(dir.join(".early"), dir.join("early")).unwrap();
    } else {
        // A test fixture holding this rank back, not synchronisation: nothing depends on how
        // long it takes, only on rank 0 waiting meanwhile.
        while !Path::new(&dir.join("go")).exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut job = MapJob::new(dir.join("x.npy"), dir.join("out.npy"), "x + 1");
    job.workers = Some(1);
    map_npy(&world, &job, None).unwrap();
}
