//! Review of issue 17's output promises: every output `shmpool map` writes, `shmpool-mpi`
//! writes too, byte-identical, under a temporary name in the output's directory.

mod common;

use common::{mpirun, save, shmpool_map, text, Dir};
use shmpool::Dtype;

// Promise (issue 17, Behaviour): "Same arguments [...] and messages as `shmpool map`" and an
// output "byte-identical to what `shmpool map` writes". Broken: rank 0 creates the temporary
// as `.NAME.XXXXXX.tmp` (12 bytes longer than NAME), so an output name of 244..255 bytes,
// which `shmpool map` writes without complaint (O_TMPFILE, then one link), is refused.
// Reproduce: `mpirun -np 2 shmpool-mpi map x.npy -o $(printf 'a%.0s' {1..246}).npy`.
// Observed: exit 2, "cannot create a file in .: File name too long (os error 36) at path
// \".../.aaa...npy.LPhdHU.tmp\"" (tempfile's wording, not shmpool's). Expected: the output.
#[test]
fn an_output_name_of_250_bytes_that_shmpool_map_writes_is_written_too() {
    let d = Dir::new();
    save(&d.path("x.npy"), Dtype::F64, &[1000], |k| k as f64 * 0.5);
    std::fs::create_dir(d.path("r")).unwrap();
    std::fs::create_dir(d.path("m")).unwrap();
    let name = format!("{}.npy", "a".repeat(246));
    assert_eq!(name.len(), 250, "below NAME_MAX (255)");
    let (reference, out) = (d.path("r").join(&name), d.path("m").join(&name));
    shmpool_map(&[&d.s("x.npy"), "-o", reference.to_str().unwrap(), "--expr", "sqrt(x) * 1.5 + 0.25"]);
    let o = mpirun(
        &d,
        2,
        &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &d.s("x.npy"), "-o", out.to_str().unwrap(), "-j", "1"],
    );
    assert!(o.status.success(), "shmpool map writes this output name: {}", text(&o));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(), "byte-identical");
}
