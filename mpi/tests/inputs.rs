//! Named inputs (`a=a.npy b=b.npy`, issue 18's form of `shmpool map`) over ranks: the same
//! arguments, broadcasting and output as `shmpool map`, and the expressions shmpool-mpi does
//! not map (reductions) refused with one message before anything is written.

mod common;

use common::{mpirun, save, shmpool_map, text, Dir};
use shmpool::Dtype;

/// `shmpool map INPUTS -o ref.npy EXTRA` and `shmpool-mpi map` with the same arguments on
/// each of `ranks`: byte-identical outputs, nothing else left.
fn same_as_shmpool_map(d: &Dir, inputs: &[String], extra: &[&str], ranks: &[usize]) {
    let reference = d.s("ref.npy");
    let mut args: Vec<String> = inputs.to_vec();
    args.extend(["-o".to_string(), reference.clone()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    shmpool_map(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let want = std::fs::read(&reference).unwrap();
    for &np in ranks {
        let out = d.s(&format!("out{np}.npy"));
        let mut args = vec!["map".to_string()];
        args.extend(inputs.iter().cloned());
        args.extend(["-o".to_string(), out.clone(), "-j".into(), "2".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = mpirun(d, np, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "-np {np} {extra:?}: {}", text(&o));
        assert!(std::fs::read(&out).unwrap() == want, "-np {np} {extra:?}: output differs from shmpool map's");
        std::fs::remove_file(&out).unwrap();
    }
    std::fs::remove_file(&reference).unwrap();
}

#[test]
fn named_inputs_broadcast_byte_identical_to_shmpool_map_on_1_2_and_3_ranks() {
    let d = Dir::new();
    save(&d.path("a.npy"), Dtype::F64, &[301, 97], |k| ((k * 7919) % 10_007) as f64 * 0.25 - 7.0);
    save(&d.path("b.npy"), Dtype::I32, &[97], |k| k as i32 * 3 - 50);
    save(&d.path("c.npy"), Dtype::F32, &[301, 1], |k| k as f32 * 0.5);
    let inputs = [format!("a={}", d.s("a.npy")), format!("b={}", d.s("b.npy")), format!("c={}", d.s("c.npy"))];
    same_as_shmpool_map(&d, &inputs, &["--expr", "a * b + c - i"], &[1, 2, 3]);
    // The input of the output's shape need not come first.
    let reordered = [inputs[1].clone(), inputs[0].clone()];
    same_as_shmpool_map(&d, &reordered, &["--expr", "a / (b + 0.5)", "--dtype", "float32"], &[3]);
    assert_eq!(d.debris(&["a.npy", "b.npy", "c.npy"]), Vec::<String>::new(), "debris left");
}

#[test]
fn a_bare_path_beside_named_inputs_is_x_as_in_shmpool_map() {
    let d = Dir::new();
    save(&d.path("x.npy"), Dtype::I64, &[1000], |k| k as i64 - 500);
    save(&d.path("y.npy"), Dtype::I64, &[1], |_| 7i64);
    let inputs = [d.s("x.npy"), format!("y={}", d.s("y.npy"))];
    same_as_shmpool_map(&d, &inputs, &["--expr", "x * y + i"], &[2]);
}

/// The job is refused on `np` ranks with exit 2 and one message containing `needle`; nothing
/// is written.
fn refused(d: &Dir, np: usize, args: &[&str], needle: &str, keep: &[&str]) {
    let o = mpirun(d, np, args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("shmpool-mpi: error:").count(), 1, "one message, from rank 0: {}", text(&o));
    assert!(err.contains(needle), "{needle:?} in {}", text(&o));
    assert_eq!(d.debris(keep), Vec::<String>::new(), "nothing written");
}

#[test]
fn a_reduction_in_the_expression_is_refused_with_one_message_before_anything_is_written() {
    let d = Dir::new();
    save(&d.path("x.npy"), Dtype::F64, &[100], |k| k as f64);
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    for expr in ["x - mean(x)", "x / size(x)"] {
        refused(&d, 2, &["map", &x, "-o", &out, "--expr", expr], "reductions (sum, mean, ...) and size()", &["x.npy"]);
    }
}

#[test]
fn named_inputs_that_do_not_match_the_expression_are_refused_as_shmpool_map_refuses_them() {
    let d = Dir::new();
    save(&d.path("a.npy"), Dtype::F64, &[10], |k| k as f64);
    save(&d.path("b.npy"), Dtype::F64, &[10], |k| k as f64);
    let (a, b, out) = (format!("a={}", d.s("a.npy")), format!("b={}", d.s("b.npy")), d.s("out.npy"));
    let keep = ["a.npy", "b.npy"];
    refused(&d, 2, &["map", &a, &b, "-o", &out, "--expr", "a * 2"], "input 'b' is not used by the expression", &keep);
    refused(
        &d,
        2,
        &["map", &a, "-o", &out, "--expr", "a * c"],
        "the expression uses 'c', which is not an input",
        &keep,
    );
    let (pa, pb) = (d.s("a.npy"), d.s("b.npy"));
    refused(&d, 2, &["map", &pa, &pb, "-o", &out, "--expr", "x"], "several inputs need names", &keep);
}

#[test]
fn in_place_replaces_the_named_input_and_only_the_one_it_names() {
    let d = Dir::new();
    let fill = |name: &str| save(&d.path(name), Dtype::F64, &[50, 4], |k| k as f64 * 0.5);
    fill("a.npy");
    fill("ref.npy");
    save(&d.path("b.npy"), Dtype::F64, &[4], |k| k as f64 + 1.0);
    let b = format!("b={}", d.s("b.npy"));
    let reference = format!("a={}", d.s("ref.npy"));
    shmpool_map(&[&reference, &b, "-o", &d.s("ref.npy"), "--in-place=a", "--expr", "a * b + i"]);
    let a = format!("a={}", d.s("a.npy"));
    let wrong = mpirun(&d, 2, &["map", &a, &b, "-o", &d.s("a.npy"), "--in-place=b", "--expr", "a * b + i"]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("pass --in-place=a"), "{}", text(&wrong));
    let o = mpirun(&d, 2, &["map", &a, &b, "-o", &d.s("a.npy"), "--in-place=a", "--expr", "a * b + i"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(d.path("a.npy")).unwrap() == std::fs::read(d.path("ref.npy")).unwrap());
    assert_eq!(d.debris(&["a.npy", "b.npy", "ref.npy"]), Vec::<String>::new(), "debris left");
}
