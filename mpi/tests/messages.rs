//! Review of issue 17's failure promises: one clear message from rank 0 for bad input, and
//! the messages of `shmpool map` for the same failures.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{act_mid_map, mpirun, mpirun_cmd, save_f64, text, Dir, BIN};

/// The message after `prefix` (`shmpool: error:` or `shmpool-mpi: error:`), up to mpirun's
/// banner.
fn message(stderr: &[u8], prefix: &str) -> String {
    let s = String::from_utf8_lossy(stderr);
    let at = s.find(prefix).map(|k| k + prefix.len()).unwrap_or(0);
    s[at..].lines().take_while(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("\n").trim().to_string()
}

fn shmpool(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::shmpool_bin()).args(args).output().unwrap()
}

// Promise (issue 17, Failure): "bad input (missing file, bad header, bad expression) gives one
// clear message (from rank 0) and a non-zero exit on every rank, before any rank writes".
// Broken for a bad option that rank 0 does not check: `--chunk-len 0` is found by every rank
// when it builds its pool (step 2, after rank 0 created the temporary output), so every rank
// prints it. Reproduce: `mpirun -np 3 shmpool-mpi map x.npy -o o.npy --chunk-len 0`.
// Observed: exit 2 with three messages ("rank 1: invalid chunk_len 0...", "rank 2: ...",
// "invalid chunk_len 0: must be at least 1"). Expected: one, as `shmpool map` prints.
#[test]
fn chunk_len_0_is_one_message_from_rank_0_as_shmpool_map_gives_it() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1000);
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    let theirs = shmpool(&["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "--chunk-len", "0"]);
    assert_eq!(theirs.status.code(), Some(2), "{}", text(&theirs));
    let o = mpirun(&d, 3, &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "--chunk-len", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).matches("shmpool-mpi: error:").count(),
        1,
        "one message, from rank 0: {}",
        text(&o)
    );
    assert_eq!(message(&o.stderr, "shmpool-mpi: error:"), message(&theirs.stderr, "shmpool: error:"));
    assert_eq!(d.debris(&["x.npy"]), Vec::<String>::new(), "nothing is written");
}

// Promise (issue 17, Behaviour): the same messages as `shmpool map`. Broken for an output
// path that names a directory that is not there (`-o out.npy/`): both fail after the map with
// exit 1, but with different messages. Reproduce: `mpirun -np 2 shmpool-mpi map x.npy -o
// out.npy/`. Observed: "cannot rename into out.npy/: Not a directory (os error 20)".
// Expected (`shmpool map`): "cannot link out.npy/: No such file or directory (os error 2)".
#[test]
fn an_output_path_with_a_trailing_slash_fails_with_shmpool_maps_message() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1000);
    let (x, out) = (d.s("x.npy"), format!("{}/", d.s("out.npy")));
    let theirs = shmpool(&["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "--quiet"]);
    let o = mpirun(&d, 2, &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "--quiet"]);
    assert_eq!(o.status.code(), theirs.status.code(), "{}\nshmpool map: {}", text(&o), text(&theirs));
    assert_eq!(message(&o.stderr, "shmpool-mpi: error:"), message(&theirs.stderr, "shmpool: error:"));
    assert_eq!(d.debris(&["x.npy"]), Vec::<String>::new(), "no debris");
}

/// A slow expression, so that every rank is still mapping when the input is truncated.
const SLOW: &str =
    "sqrt(sqrt(x) + 1) * sqrt(x + 2) + sqrt(x + 3) * sqrt(x + 4) + sqrt(x + 5) * sqrt(x + 6) + sqrt(x + 7)";

// Promise (issue 17, Behaviour): the same messages as `shmpool map`. `shmpool map` says what
// happened when the input is truncated during the map ("the input X changed during the map
// (it is now N bytes, it was M bytes): worker crashed ..."); `shmpool-mpi` only reports, from
// each rank, "worker crashed on index range ... (the last one exited: it could not map or run
// the chunk)", which sends the user looking for a bug in the workers. Reproduce: start
// `mpirun -np 2 shmpool-mpi map x.npy -o o.npy -j 1 --progress` on a large input and
// `truncate -s 4096 x.npy` once the first progress line is out. The truncation happens after
// the first progress line of rank 0, which comes after every rank opened the input (the
// collective that ends the set-up); the slow expression keeps every rank mapping.
#[test]
fn an_input_truncated_during_the_map_is_named_as_shmpool_map_names_it() {
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 3_000_000);
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    let args = ["map", &x, "-o", &out, "-j", "1", "--chunk-len", "65536", "--progress", "--expr", SLOW];
    let child = mpirun_cmd(&d, 2, Path::new(BIN), &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let (code, err) =
        act_mid_map(child, || std::fs::OpenOptions::new().write(true).open(&x).unwrap().set_len(4096).unwrap());
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("changed during the map"), "name the truncated input, as shmpool map does: {err}");
    assert_eq!(d.debris(&["x.npy"]), Vec::<String>::new(), "no debris");
}
