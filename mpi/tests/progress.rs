//! Review of issue 17's progress promise, on a terminal (a pseudo-terminal from `script`).

mod common;

use std::process::{Command, Stdio};

use common::{save_f64, Dir, BIN, JOB_LIMIT};

/// Runs `cmd` (a shell command line) on a pseudo-terminal; returns what the terminal showed.
fn on_a_terminal(d: &Dir, cmd: &str) -> Option<String> {
    let o = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_backing_directory", d.path("mpi"))
        .env("OMPI_MCA_pml", "ob1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stdout));
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

// Promise (issue 17, Behaviour and Progress): the same arguments and messages as `shmpool
// map`, progress aggregated on rank 0, plain lines when not a terminal (and so, as the binary's
// own `--progress` help says, "a terminal gets the bar"). Broken: under mpirun a rank's
// stderr is always a pipe to mpirun, never the user's terminal, so rank 0 never shows the bar:
// `shmpool map x.npy -o o.npy` on a terminal shows indicatif's bar ending at "100%";
// `mpirun -np 2 shmpool-mpi map x.npy -o o.npy` on the same terminal shows no progress at all
// (and with `--progress`, plain lines). Needs `script` (util-linux) for the terminal.
#[test]
fn on_a_terminal_progress_is_shown_by_default_as_shmpool_map_shows_it() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1_000_000);
    let (x, a, b) = (d.s("x.npy"), d.s("a.npy"), d.s("b.npy"));
    let theirs = format!("{} map {x} -o {a} -j 1 --expr x+1", common::shmpool_bin().display());
    let Some(theirs) = on_a_terminal(&d, &theirs) else {
        eprintln!("SKIPPED: needs `script` for a terminal");
        return;
    };
    assert!(theirs.contains("100%"), "shmpool map shows its bar on a terminal: {theirs}");
    let ours = format!("timeout -s KILL {JOB_LIMIT} mpirun --oversubscribe -np 2 {BIN} map {x} -o {b} -j 1 --expr x+1");
    let ours = on_a_terminal(&d, &ours).unwrap();
    assert!(ours.contains("mapped 1000000 elements"), "{ours}");
    assert!(ours.contains("100%"), "shmpool-mpi shows progress on the same terminal: {ours}");
}
