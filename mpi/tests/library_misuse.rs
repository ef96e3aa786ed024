//! Review of issue 17's library promises (`map_npy`, `scatter_map_gather`, `abort_on_panic`)
//! as a hostile MPI application would use them. Each test names the promise it breaks.
//! The rank bodies are scenarios (tests/common/scenario.rs) that the drivers run under
//! mpirun.

mod common;

scenarios!(
    rank_body_kernel_panic_with_pool_built_before_the_hook,
    rank_body_ranks_disagree_about_the_expression,
    rank_body_map_npy_on_an_inter_communicator,
    rank_body_scatter_map_gather_out_of_shared_memory,
);

use std::process::{Command, Stdio};

use common::{save_f64, scenario, text, Dir};
use mpi::traits::*;
use shmpool::{KernelSpec, Pool};
use shmpool_mpi::{map_npy, scatter_map_gather, MapJob};

/// How long a rank body may take before `timeout` kills the job: a hang fails the test (in
/// this much time, not the 120 s of `common::JOB_LIMIT`).
const LIMIT: &str = "40";

/// Runs the scenario `body` on `np` ranks (under `timeout`, as `common::mpirun_cmd`);
/// returns mpirun's output. mpirun exits 0 only when every rank did, and a rank exits 0 only
/// when its body returned (101 when it panicked, 2 for a name this binary does not list).
fn on_ranks(d: &Dir, np: usize, body: &str) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    Command::new("timeout")
        .args(["-s", "KILL", LIMIT, "mpirun", "--oversubscribe", "-np", &np.to_string()])
        .arg(exe)
        .args(scenario::args(body))
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_backing_directory", d.path("mpi"))
        .env("OMPI_MCA_pml", "ob1")
        .env("SHMPOOL_MPI_TEST_DIR", d.tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn test_dir() -> std::path::PathBuf {
    std::env::var_os("SHMPOOL_MPI_TEST_DIR").expect("run under on_ranks").into()
}

/// Panics on the element 150.0, which only rank 1's slice holds (n = 200 over 2 ranks).
fn panics_on_150(xs: &[f64], ys: &mut [f64]) {
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        assert!(*x != 150.0, "review: kernel panics on 150");
        *y = *x * 2.0;
    }
}

// Promise (issue 17, Failure; crate docs of `abort_on_panic`): a panicking kernel in one rank
// fails every rank with an error and publishes nothing (the CLI test
// `a_kernel_that_panics_in_one_rank_fails_every_rank_and_publishes_nothing`), and
// `abort_on_panic` only turns panics *of the rank* into `MPI_Abort`. Broken: when the rank
// built a shmpool pool (or started any shmpool process) before calling `abort_on_panic`, the
// hook it installs wraps shmpool's fork-child hook and is inherited by every worker forked
// later; a kernel panic in a worker then runs `remove_temporary` and `MPI_Abort` inside the
// forked worker (a child of an MPI process, which must not call MPI). Observed: the job hangs
// (killed by `timeout` after 40 s, "shmpool worker N panicked" and nothing after) instead of
// rank 1 returning `Error::Engine` and rank 0 `Error::OtherRank`. Any application that used a
// pool (even once) before `abort_on_panic` is exposed, and nothing documents the order.
#[test]
fn a_kernel_panic_in_a_worker_is_an_error_even_when_the_pool_predates_abort_on_panic() {
    let d = Dir::new();
    let o = on_ranks(&d, 2, "rank_body_kernel_panic_with_pool_built_before_the_hook");
    assert!(o.status.success(), "a kernel panic must be an error on every rank, not an abort: {}", text(&o));
}

fn rank_body_kernel_panic_with_pool_built_before_the_hook() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    let world = universe.world();
    // The application used a pool for its own steps before it learnt about the hook...
    drop(Pool::new(1).unwrap());
    shmpool_mpi::abort_on_panic();
    // ... and builds the one it maps with afterwards.
    let pool = Pool::new(1).unwrap();
    let spec = KernelSpec::chunk::<f64, f64, _>(panics_on_150);
    let xs: Vec<f64> = (0..200).map(f64::from).collect();
    let input = (world.rank() == 0).then_some(&xs[..]);
    let r = scatter_map_gather::<_, f64, f64>(&world, &pool, input, &spec);
    let e = r.expect_err("rank 1's kernel panicked: every rank fails");
    assert_eq!(e.reported_elsewhere(), world.rank() == 0, "{e}");
    world.barrier();
}

// Promise (`map_npy` docs and issue 17, Behaviour): the output is byte-identical to `shmpool
// map`'s, and a job that cannot be done fails on every rank before any rank writes (typed
// errors, no silent wrong result). `MapJob`'s docs say "Every rank must pass the same job",
// but nothing checks it: rank 0 broadcasts only its verdict and the temporary's name, so
// ranks that disagree about the expression (a per-rank config file, an off-by-one in an
// application's argument handling) each write their slice with their own expression and the
// job publishes a silently mixed file. Observed: `map_npy` returns `Ok` on both ranks and
// the output holds `x + 1` in rank 0's half and `x * 100` in rank 1's.
#[test]
fn ranks_that_disagree_about_the_expression_get_an_error_not_a_mixed_output() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1000);
    let o = on_ranks(&d, 2, "rank_body_ranks_disagree_about_the_expression");
    assert!(o.status.success(), "{}", text(&o));
    assert!(!d.path("out.npy").exists(), "a mixed output was published");
}

fn rank_body_ranks_disagree_about_the_expression() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    let dir = test_dir();
    let expr = if world.rank() == 0 { "x + 1" } else { "x * 100" };
    let mut job = MapJob::new(dir.join("x.npy"), dir.join("out.npy"), expr);
    job.workers = Some(1);
    let r = map_npy(&world, &job, None);
    assert!(r.is_err(), "rank {}: ranks passed different expressions, yet map_npy returned {r:?}", world.rank());
    world.barrier();
}

// Promise (issue 17, Library and Failure): `map_npy` maps a file "over the ranks of a given
// communicator" and a job ends, never hangs. `map_npy` takes any `C: Communicator`, and
// rsmpi's `InterCommunicator` is one: nothing refuses it, and its collectives mean something
// else on an inter-communicator (a broadcast's root is in the *other* group, an all-reduce
// returns the other group's values). Here each of 2 ranks is rank 0 of its own group of an
// inter-communicator. Observed (debug build): `map_npy`'s first step, rsmpi's `duplicate`,
// panics ("assertion failed: !comm_is_inter(raw)", a `debug_assert!` in rsmpi), the panic
// hook aborts the job and mpirun exits 101: a panic on a caller's argument, in a safe
// function. In a release build the assertion is compiled out and both ranks, each rank 0 of
// its group, go on as the root of a broadcast whose root is in the other group (not run
// here). Expected: a typed error on every rank (`MPI_Comm_test_inter` says what it is), as
// for any other argument the call cannot use.
#[test]
fn map_npy_on_an_inter_communicator_is_refused_not_a_hang() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1000);
    let o = on_ranks(&d, 2, "rank_body_map_npy_on_an_inter_communicator");
    assert!(o.status.success(), "an error on every rank, not a hang: {}", text(&o));
    assert_eq!(d.debris(&["x.npy"]), Vec::<String>::new(), "no debris");
}

fn rank_body_map_npy_on_an_inter_communicator() {
    use mpi::raw::AsRaw;
    use mpi::topology::{Color, InterCommunicator};
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    let me = world.rank();
    let local = world.split_by_color(Color::with_value(me)).unwrap();
    let mut raw = std::mem::MaybeUninit::<mpi::ffi::MPI_Comm>::uninit();
    // SAFETY: `local` and `world` are live communicators; rank `1 - me` of `world` is the
    // leader of the other group (both groups have one rank), and `raw` is valid storage that
    // MPI_Intercomm_create fills.
    let rc = unsafe { mpi::ffi::MPI_Intercomm_create(local.as_raw(), 0, world.as_raw(), 1 - me, 17, raw.as_mut_ptr()) };
    assert_eq!(rc, 0, "MPI_Intercomm_create");
    // SAFETY: MPI_Intercomm_create succeeded and wrote a live inter-communicator handle.
    let inter = unsafe { InterCommunicator::try_from_raw(raw.assume_init()) }.expect("an inter-communicator");
    let dir = test_dir();
    let mut job = MapJob::new(dir.join("x.npy"), dir.join("out.npy"), "x + 1");
    job.workers = Some(1);
    let r = map_npy(&inter, &job, None);
    assert!(r.is_err(), "rank {me}: map_npy on an inter-communicator returned {r:?}");
    world.barrier();
}

/// Runs the scenario `body` on 2 ranks, rank 1 in a mount namespace of its own whose
/// `/dev/shm` holds only 4 MiB (`unshare -m`, as root); `None` when that cannot be set up.
fn on_ranks_with_a_small_dev_shm_on_rank_1(d: &Dir, body: &str) -> Option<std::process::Output> {
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=4m tmpfs /dev/shm"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    let test_args = scenario::args(body);
    let o = Command::new("timeout")
        .args(["-s", "KILL", LIMIT, "mpirun", "--oversubscribe", "-np", "1"])
        .arg(&exe)
        .args(&test_args)
        .args([":", "-np", "1", "unshare", "-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=4m tmpfs /dev/shm && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args(&test_args)
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_backing_directory", d.path("mpi"))
        .env("OMPI_MCA_pml", "ob1")
        .env("SHMPOOL_MPI_TEST_DIR", d.tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Some(o)
}

// Promise (`scatter_map_gather` docs; issue 17, Failure): "[`Error::Engine`] when this rank's
// map fails; [`Error::OtherRank`] when another rank's does. No rank gathers anything unless
// every rank succeeded", and never a hang. Broken: the shared arrays a rank scatters into and
// maps into (`SharedVec::zeroed`, twice) are allocated with `?` outside the status
// agreement, so a rank that cannot allocate them (a full or small `/dev/shm`, a memory
// limit) returns its error at once, while the other ranks wait for it in the scatter (or in
// the agreement) forever. Reproduce: 2 ranks, rank 1 with a 4 MiB `/dev/shm`, 2,000,000
// float64 (rank 1's slice needs 8 MB). Observed: rank 1 returns `Error::Engine` ("No space
// left on device"), rank 0 never returns: the job hangs until `timeout` kills it (40 s).
// Expected: rank 1 `Error::Engine`, rank 0 `Error::OtherRank`, both return.
#[test]
fn scatter_map_gather_with_a_rank_out_of_shared_memory_fails_every_rank_not_a_hang() {
    let d = Dir::new();
    let Some(o) = on_ranks_with_a_small_dev_shm_on_rank_1(&d, "rank_body_scatter_map_gather_out_of_shared_memory")
    else {
        eprintln!("SKIPPED: needs `unshare -m` and tmpfs mounts (root)");
        return;
    };
    assert!(o.status.success(), "every rank returns an error, no hang: {}", text(&o));
}

fn rank_body_scatter_map_gather_out_of_shared_memory() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    let pool = Pool::new(1).unwrap();
    let program = shmpool::kernel::expr::Program::compile("x * 2").unwrap();
    let spec = KernelSpec::expr::<f64, f64>(&program).unwrap();
    let n = 2_000_000usize;
    let xs: Vec<f64> = if world.rank() == 0 { (0..n).map(|k| k as f64).collect() } else { Vec::new() };
    let input = (world.rank() == 0).then_some(&xs[..]);
    let r = scatter_map_gather::<_, f64, f64>(&world, &pool, input, &spec);
    let e = r.expect_err("rank 1 cannot allocate its slice: every rank fails");
    eprintln!("rank {}: {e}", world.rank());
    assert_eq!(e.reported_elsewhere(), world.rank() == 0, "{e}");
    world.barrier();
}
