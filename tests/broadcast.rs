//! Full numpy broadcasting in `shmpool map`: an output bigger than every input ((n, 1) with
//! (1, m), (m,) with (n, 1), 0-d arrays), `i` the flat output index, numpy's promotion across
//! inputs, and numpy's error in words for shapes that do not broadcast. numpy makes the
//! fixtures and checks (see tests/pyenv).

mod common;
mod pyenv;

use common::npy_files::{p, shmpool};
use std::path::Path;

use pyenv::py;

const LOAD: &str = "c = np.load(D + '/c.npy'); r = np.load(D + '/r.npy'); v = np.load(D + '/v.npy'); \
                    z = np.load(D + '/z.npy'); o = np.load(D + '/o.npy')";

#[test]
fn an_output_bigger_than_every_input_is_numpys_broadcast() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(
        dir,
        "rng = np.random.default_rng(2)\n\
         np.save(D + '/c.npy', rng.standard_normal((601, 1)))\n\
         np.save(D + '/r.npy', rng.integers(-99, 99, (1, 703), dtype=np.int32))\n\
         np.save(D + '/v.npy', rng.standard_normal(703).astype(np.float32))\n\
         np.save(D + '/z.npy', np.array(2.5, dtype=np.float32))\n\
         np.save(D + '/o.npy', np.zeros(1))",
    );
    let arg = |n: &str| format!("{n}={}", p(dir, &format!("{n}.npy")));
    let out = p(dir, "o.npy");
    for (inputs, expr, numpy) in [
        (vec!["c", "r"], "c * r + i", "c * r + np.arange(c.size * r.size).reshape(c.shape[0], r.shape[1])"),
        (vec!["v", "c"], "v - c", "v - c"),
        (vec!["c", "v", "z"], "where(c > 0, v, z) * z", "np.where(c > 0, v, z) * z"),
        (vec!["r", "v", "c"], "r + v + c", "r + v + c"),
        (vec!["r", "z"], "r * z", "r * z"),
    ] {
        let named: Vec<String> = inputs.iter().map(|n| arg(n)).collect();
        for j in ["1", "2"] {
            let mut args: Vec<&str> = vec!["map"];
            args.extend(named.iter().map(String::as_str));
            args.extend(["-o", &out, "--expr", expr, "-j", j, "--quiet"]);
            let o = shmpool(&args);
            assert!(o.status.success(), "{expr}: {}", String::from_utf8_lossy(&o.stderr));
            let check =
                format!("{LOAD}; w = {numpy}\nprint(o.dtype == w.dtype, o.shape == w.shape, bool((o == w).all()))");
            assert_eq!(py(dir, &check), "True True True", "{expr} -j {j}");
        }
    }
}

#[test]
fn shapes_that_do_not_broadcast_are_numpys_error_and_write_nothing() {
    require_numpy!();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    py(dir, "np.save(D + '/a.npy', np.zeros((4, 3))); np.save(D + '/b.npy', np.zeros((2, 1, 4)))");
    let out = p(dir, "o.npy");
    let (a, b) = (format!("a={}", p(dir, "a.npy")), format!("b={}", p(dir, "b.npy")));
    let o = shmpool(&["map", &a, &b, "-o", &out, "--expr", "a + b"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = py(
        dir,
        "a = np.load(D + '/a.npy'); b = np.load(D + '/b.npy')\ntry:\n    a + b\nexcept ValueError as e:\n    print(e)",
    );
    assert_eq!(err.trim(), format!("shmpool: error: {want}"));
    assert!(!Path::new(&out).exists());
}
