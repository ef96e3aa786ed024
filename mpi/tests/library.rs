//! The library from inside an MPI application: `map_npy` over a communicator the application
//! made (here, world split in two), and `scatter_map_gather` of an array in rank 0's memory.
//! The tests run their own binary under mpirun for the rank bodies, the scenarios below
//! (tests/common/scenario.rs).

mod common;

scenarios!(rank_body_map_npy_on_split_communicators, rank_body_scatter_map_gather);

use common::{mpirun_cmd, save, save_f64, scenario, shmpool_map, text, Dir};
use mpi::topology::Color;
use mpi::traits::*;
use shmpool::kernel::expr::Program;
use shmpool::{Dtype, KernelSpec, Pool};
use shmpool_mpi::{map_npy, scatter_map_gather, MapJob};

/// Runs the scenario `body` on `np` ranks with `dir` in the environment. mpirun exits 0 only
/// when every rank did, and a rank exits 0 only when its body returned (101 when it panicked,
/// 2 for a name this binary does not list).
fn on_ranks(d: &Dir, np: usize, body: &str) {
    let exe = std::env::current_exe().unwrap();
    let args = scenario::args(body);
    let mut c = mpirun_cmd(d, np, &exe, &[&args[0], &args[1]]);
    c.env("SHMPOOL_MPI_TEST_DIR", d.tmp.path());
    let o = c.output().unwrap();
    assert!(o.status.success(), "every rank ran the body to its end: {}", text(&o));
}

fn test_dir() -> std::path::PathBuf {
    std::env::var_os("SHMPOOL_MPI_TEST_DIR").expect("run under on_ranks").into()
}

#[test]
fn map_npy_over_a_split_communicator_matches_shmpool_map() {
    let d = Dir::new();
    save_f64(&d.path("a.npy"), 300_007);
    save(&d.path("b.npy"), Dtype::I32, &[11, 13], |k| k as i32 * 3 - 50);
    on_ranks(&d, 3, "rank_body_map_npy_on_split_communicators");
    shmpool_map(&[&d.s("a.npy"), "-o", &d.s("ref_a.npy"), "--expr", "x / 3 + i"]);
    shmpool_map(&[&d.s("b.npy"), "-o", &d.s("ref_b.npy"), "--expr", "x * i"]);
    assert!(std::fs::read(d.path("a_out.npy")).unwrap() == std::fs::read(d.path("ref_a.npy")).unwrap());
    assert!(std::fs::read(d.path("b_out.npy")).unwrap() == std::fs::read(d.path("ref_b.npy")).unwrap());
}

/// Ranks 0 and 2 map a.npy together; rank 1 maps b.npy alone, at the same time.
fn rank_body_map_npy_on_split_communicators() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    let color = world.rank() % 2;
    let comm = world.split_by_color(Color::with_value(color)).unwrap();
    let dir = test_dir();
    let (input, output, expr) =
        if color == 0 { ("a.npy", "a_out.npy", "x / 3 + i") } else { ("b.npy", "b_out.npy", "x * i") };
    let mut job = MapJob::new(dir.join(input), dir.join(output), expr);
    job.workers = Some(1);
    let mut last = None;
    let mut progress = |p: shmpool_mpi::Progress| last = Some(p);
    let m = map_npy(&comm, &job, Some(&mut progress)).unwrap();
    assert_eq!(m.ranks, if color == 0 { 2 } else { 1 });
    if comm.rank() == 0 {
        assert_eq!(last.map(|p| p.done), Some(m.len), "rank 0 saw the final count of all its ranks");
    }
    // A bad job on the same communicator: every rank of it fails, nothing is written.
    let bad = MapJob::new(dir.join("missing.npy"), dir.join("never.npy"), "x");
    let e = map_npy(&comm, &bad, None).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(e.reported_elsewhere(), comm.rank() != 0, "{e}");
    assert!(!dir.join("never.npy").exists());
    world.barrier();
}

#[test]
fn scatter_map_gather_returns_the_whole_map_on_rank_0() {
    let d = Dir::new();
    on_ranks(&d, 3, "rank_body_scatter_map_gather");
}

fn rank_body_scatter_map_gather() {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled).unwrap();
    shmpool_mpi::abort_on_panic();
    let world = universe.world();
    let pool = Pool::new(1).unwrap();
    let program = Program::compile("x * 2 + i").unwrap();
    let spec = KernelSpec::expr::<f64, f64>(&program).unwrap();
    for n in [100_003usize, 2, 0] {
        let xs: Vec<f64> = (0..n).map(|k| (k % 977) as f64 + 0.5).collect();
        let input = (world.rank() == 0).then_some(&xs[..]);
        let got: Option<Vec<f64>> = scatter_map_gather(&world, &pool, input, &spec).unwrap();
        if world.rank() == 0 {
            let mut want = vec![0f64; n];
            program.eval_slice(&xs, &mut want, 0).unwrap();
            let got = got.expect("rank 0 gets the result");
            assert!(got.len() == n && got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "n = {n}");
        } else {
            assert!(got.is_none());
        }
    }
    // Integer kernels of other sizes: i32 in, i64 out.
    let spec = KernelSpec::expr::<i32, i64>(&Program::compile_for("x - i", Dtype::I32).unwrap()).unwrap();
    let xs: Vec<i32> = (0..1001).collect();
    let got: Option<Vec<i64>> =
        scatter_map_gather(&world, &pool, (world.rank() == 0).then_some(&xs[..]), &spec).unwrap();
    if let Some(got) = got {
        assert_eq!(got, vec![0i64; 1001]);
    }
}
