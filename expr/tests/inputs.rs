//! Several named inputs: names, numpy's promotion across inputs, numpy broadcasting (checked
//! against numpy itself when it is installed), `i` the flat index of the output.

use std::path::{Path, PathBuf};
use std::process::Command;

use shmpool_expr::{broadcast_shapes, Dtype, Error, Program};

#[test]
fn names_must_be_identifiers_given_once_and_used() {
    let e = |inputs: &[(&str, Dtype)], src: &str| Program::compile_inputs(src, inputs).unwrap_err();
    assert!(matches!(e(&[("i", Dtype::F64)], "i"), Error::InvalidInputName { .. }));
    assert!(matches!(e(&[("sqrt", Dtype::F64)], "x"), Error::InvalidInputName { .. }));
    assert!(matches!(e(&[("pi", Dtype::F64)], "x"), Error::InvalidInputName { .. }));
    assert!(matches!(e(&[("2a", Dtype::F64)], "x"), Error::InvalidInputName { .. }));
    assert!(matches!(e(&[("a", Dtype::F64), ("a", Dtype::F64)], "a"), Error::InputNotUsed { .. }));
    let unused = e(&[("a", Dtype::F64), ("b", Dtype::F64)], "a * 2");
    assert_eq!(unused.to_string(), "input 'b' is not used by the expression");
    let missing = e(&[("a", Dtype::F64)], "a * c").to_string();
    assert!(missing.contains("unknown variable 'c' (inputs: a; i is the flat index)"), "{missing}");
    assert!(matches!(e(&[], "1"), Error::InputCount { .. }));
    assert_eq!(Program::variables("a * sqrt(b) + c - i * pi + a").unwrap(), ["a", "b", "c"]);
}

#[test]
fn promotion_across_inputs_is_numpys() {
    let out = |a: Dtype, b: Dtype| Program::compile_inputs("a + b", &[("a", a), ("b", b)]).unwrap().output_dtype();
    assert_eq!(out(Dtype::I32, Dtype::F32), Dtype::F64);
    assert_eq!(out(Dtype::U64, Dtype::I64), Dtype::F64);
    assert_eq!(out(Dtype::U8, Dtype::I8), Dtype::I16);
    assert_eq!(out(Dtype::F16, Dtype::I16), Dtype::F32);
    assert_eq!(out(Dtype::Bool, Dtype::U16), Dtype::U16);
}

#[test]
fn equal_length_chunks_and_the_flat_index() {
    let p =
        Program::compile_inputs("a * b + c + i", &[("a", Dtype::F64), ("b", Dtype::I32), ("c", Dtype::F32)]).unwrap();
    let a = [1.0f64, 2.0, 3.0];
    let b = [10i32, 20, 30];
    let c = [0.5f32, 0.25, 0.125];
    let mut y = [0f64; 3];
    p.eval_inputs(
        &[bytemuck::cast_slice(&a), bytemuck::cast_slice(&b), bytemuck::cast_slice(&c)],
        bytemuck::cast_slice_mut(&mut y),
        100,
    )
    .unwrap();
    assert_eq!(y, [110.5, 141.25, 192.125]);
    let short = [1i32, 2];
    let r = p.eval_inputs(
        &[bytemuck::cast_slice(&a), bytemuck::cast_slice(&short), bytemuck::cast_slice(&c)],
        bytemuck::cast_slice_mut(&mut y),
        0,
    );
    assert!(matches!(r, Err(Error::LengthMismatch { .. })));
    let r = p.eval_inputs(&[bytemuck::cast_slice(&a)], bytemuck::cast_slice_mut(&mut y), 0);
    assert_eq!(r, Err(Error::InputCount { expected: 3, given: 1 }));
}

#[test]
fn broadcast_shapes_and_numpys_error() {
    assert_eq!(broadcast_shapes(&[&[1000, 300], &[300]]).unwrap(), [1000, 300]);
    assert_eq!(broadcast_shapes(&[&[5, 1], &[1, 7]]).unwrap(), [5, 7]);
    assert_eq!(broadcast_shapes(&[&[], &[3]]).unwrap(), [3]);
    assert_eq!(broadcast_shapes(&[&[0, 1], &[1, 4]]).unwrap(), [0, 4]);
    let e = broadcast_shapes(&[&[1000, 300], &[299]]).unwrap_err();
    assert_eq!(e.to_string(), "operands could not be broadcast together with shapes (1000,300) (299,)");
}

#[test]
fn broadcast_evaluation_of_a_column_and_a_row() {
    let p = Program::compile_inputs("a * 10 + b + 0 * i", &[("a", Dtype::I64), ("b", Dtype::I64)]).unwrap();
    let a = [1i64, 2, 3]; // (3, 1)
    let b = [100i64, 200]; // (1, 2)
    let mut y = [0i64; 6];
    p.eval_broadcast(
        &[(bytemuck::cast_slice(&a), &[3, 1]), (bytemuck::cast_slice(&b), &[1, 2])],
        bytemuck::cast_slice_mut(&mut y),
        0..6,
    )
    .unwrap();
    assert_eq!(y, [110, 210, 120, 220, 130, 230]);
    // A sub-range of the output's flat indices.
    let mut part = [0i64; 3];
    p.eval_broadcast(
        &[(bytemuck::cast_slice(&a), &[3, 1]), (bytemuck::cast_slice(&b), &[1, 2])],
        bytemuck::cast_slice_mut(&mut part),
        2..5,
    )
    .unwrap();
    assert_eq!(part, [120, 220, 130]);
}

/// A Python with numpy: `$SHMPOOL_PYTHON`, else the workspace's `target/pyenv`.
fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates: Vec<PathBuf> = std::env::var_os("SHMPOOL_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("target/pyenv/bin/python")])
        .collect();
    let found = candidates
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        eprintln!("\n*** SKIPPED: numpy not found (set SHMPOOL_PYTHON or create target/pyenv); not compared ***\n");
    }
    found
}

/// Deterministic element bytes of `dtype` for `n` elements (small values, some negative).
fn data(dtype: Dtype, n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(n * dtype.size());
    for _ in 0..n {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v = ((s >> 33) % 200) as i64 - 100;
        match dtype {
            Dtype::Bool => out.push(u8::from(v > 0)),
            Dtype::I8 => out.extend_from_slice(&(v as i8).to_le_bytes()),
            Dtype::U8 => out.extend_from_slice(&(v.unsigned_abs() as u8).to_le_bytes()),
            Dtype::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
            Dtype::U16 => out.extend_from_slice(&(v.unsigned_abs() as u16).to_le_bytes()),
            Dtype::I32 => out.extend_from_slice(&(v as i32 * 1000).to_le_bytes()),
            Dtype::U32 => out.extend_from_slice(&(v.unsigned_abs() as u32 * 1000).to_le_bytes()),
            Dtype::I64 => out.extend_from_slice(&(v * 100_000).to_le_bytes()),
            Dtype::U64 => out.extend_from_slice(&(v.unsigned_abs() * 100_000).to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f64(v as f64 / 8.0).to_le_bytes()),
            Dtype::F32 => out.extend_from_slice(&(v as f32 / 8.0).to_le_bytes()),
            Dtype::F64 => out.extend_from_slice(&(v as f64 / 8.0).to_le_bytes()),
        }
    }
    out
}

#[test]
fn several_inputs_with_broadcasting_match_numpy_bit_for_bit() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, Dtype, &'a [u64])]);
    let cases: &[Case] = &[
        ("a * b + c", &[("a", Dtype::F64, &[1000]), ("b", Dtype::F64, &[1000]), ("c", Dtype::F64, &[1000])]),
        ("a * b + c", &[("a", Dtype::F32, &[40, 30]), ("b", Dtype::F32, &[30]), ("c", Dtype::F32, &[])]),
        ("a + b", &[("a", Dtype::I32, &[50, 1]), ("b", Dtype::F32, &[1, 60])]),
        ("a - b", &[("a", Dtype::U64, &[7, 9]), ("b", Dtype::I64, &[9])]),
        ("where(a > 0, b, a * 2) + i", &[("a", Dtype::I16, &[3, 1, 5]), ("b", Dtype::U8, &[4, 1])]),
        ("a // b + a % b", &[("a", Dtype::I64, &[2, 3, 4]), ("b", Dtype::I8, &[3, 1])]),
        ("(a < b) | c", &[("a", Dtype::F16, &[6, 5]), ("b", Dtype::I8, &[5]), ("c", Dtype::Bool, &[6, 1])]),
        ("maximum(a, b) * 3 - minimum(a, 1)", &[("a", Dtype::F64, &[2, 1, 3]), ("b", Dtype::F64, &[1, 4, 3])]),
    ];
    for (n_case, (src, inputs)) in cases.iter().enumerate() {
        let named: Vec<(&str, Dtype)> = inputs.iter().map(|&(n, d, _)| (n, d)).collect();
        let p = Program::compile_inputs(src, &named).unwrap_or_else(|e| panic!("{src}: {e}"));
        let shapes: Vec<&[u64]> = inputs.iter().map(|&(_, _, s)| s).collect();
        let out_shape = broadcast_shapes(&shapes).unwrap();
        let total: u64 = out_shape.iter().product();
        let bufs: Vec<Vec<u8>> = inputs
            .iter()
            .enumerate()
            .map(|(k, &(_, d, s))| data(d, s.iter().product::<u64>() as usize, (n_case * 10 + k) as u64))
            .collect();
        let ops: Vec<(&[u8], &[u64])> = bufs.iter().zip(&shapes).map(|(b, s)| (&b[..], *s)).collect();
        let osz = p.output_dtype().size();
        let mut ours = vec![0u8; total as usize * osz];
        // Two pieces, split off the middle: ranges compose.
        let mid = total / 2 + 1;
        let (lo, hi) = ours.split_at_mut(mid.min(total) as usize * osz);
        p.eval_broadcast(&ops, lo, 0..mid.min(total)).unwrap();
        p.eval_broadcast(&ops, hi, mid.min(total)..total).unwrap();
        let mut script = String::from("import numpy as np, sys\nfrom numpy import where, maximum, minimum\n");
        for (k, &(name, d, s)) in inputs.iter().enumerate() {
            let path = dir.path().join(format!("{n_case}_{k}.bin"));
            std::fs::write(&path, &bufs[k]).unwrap();
            let shape: Vec<String> = s.iter().map(u64::to_string).collect();
            script.push_str(&format!(
                "{name} = np.fromfile({:?}, dtype='{}').reshape(({}{}))\n",
                path.to_str().unwrap(),
                d.descr(),
                shape.join(","),
                if s.len() == 1 { "," } else { "" }
            ));
        }
        script.push_str(&format!(
            "shape = np.broadcast_shapes({})\ni = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)\n",
            inputs.iter().map(|&(n, _, _)| format!("{n}.shape")).collect::<Vec<_>>().join(", ")
        ));
        let out = dir.path().join(format!("{n_case}_out.bin"));
        script.push_str(&format!(
            "r = np.asarray({src})\nr.tofile({:?})\nprint(r.dtype.str, r.shape)\n",
            out.to_str().unwrap()
        ));
        let o = Command::new(&py).args(["-c", &script]).output().unwrap();
        assert!(o.status.success(), "{src}: {}", String::from_utf8_lossy(&o.stderr));
        let said = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(said.starts_with(p.output_dtype().descr()), "{src}: numpy's dtype {said}, ours {}", p.output_dtype());
        let want = std::fs::read(&out).unwrap();
        assert_eq!(ours, want, "{src}: values differ from numpy ({said})");
    }
}
