//! Reductions: numpy's result types and values (its repr, compared with numpy itself when it
//! is installed), its errors and warnings on empty inputs, float sums at least as accurate as
//! numpy's pairwise summation against an exact sum (`math.fsum`), and results independent of
//! how the values are split.

use std::path::{Path, PathBuf};
use std::process::Command;

use shmpool_expr::{reduce_bytes, Dtype, Error, Reducer, Reduction, Value};

fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let found = std::env::var_os("SHMPOOL_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("target/pyenv/bin/python")])
        .find(|p| Command::new(p).args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        eprintln!("\n*** SKIPPED: numpy not found (set SHMPOOL_PYTHON or create target/pyenv); not compared ***\n");
    }
    found
}

fn py(python: &Path, dir: &Path, code: &str) -> String {
    let script = format!(
        "import numpy as np, math, warnings\nwarnings.simplefilter('ignore')\nD = {:?}\n{code}",
        dir.to_str().unwrap()
    );
    let o = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}\n{code}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn split_finds_a_whole_expression_reduction_only() {
    assert_eq!(Reduction::split("sum(x * x)"), Some((Reduction::Sum, "x * x")));
    assert_eq!(Reduction::split(" mean( (x + 1) * (x - 1) ) "), Some((Reduction::Mean, " (x + 1) * (x - 1) ")));
    assert_eq!(Reduction::split("max(x, 0)"), None, "two arguments: not a whole-array reduction");
    // Inside an elementwise expression a reduction is refused, min and max with a pointer to
    // the elementwise functions (numpy reads max(x, 0) as an axis).
    let m = shmpool_expr::Program::compile("max(x, 0)").unwrap_err().to_string();
    assert!(m.contains("'max' is a reduction") && m.contains("use maximum(a, b)"), "{m}");
    let m = shmpool_expr::Program::compile("x - mean(x)").unwrap_err().to_string();
    assert!(m.contains("'mean' is a reduction") && m.contains("shmpool reduce"), "{m}");
    assert_eq!(Reduction::split("sum(x) + 1"), None);
    assert_eq!(Reduction::split("sqrt(x)"), None);
    assert_eq!(Reduction::split("sum(x) * sum(x)"), None);
}

#[test]
fn empty_inputs_are_numpys_errors_and_warnings() {
    let e = reduce_bytes(Reduction::Min, Dtype::F64, &[]).unwrap_err();
    assert_eq!(e.to_string(), "zero-size array to reduction operation minimum which has no identity");
    assert!(matches!(reduce_bytes(Reduction::ArgMax, Dtype::I32, &[]), Err(Error::EmptyReduction { .. })));
    let (v, w) = reduce_bytes(Reduction::Mean, Dtype::I32, &[]).unwrap();
    assert!(matches!(v, Value::Float(f, Dtype::F64) if f.is_nan()));
    assert_eq!(w, Some("Mean of empty slice"));
    assert_eq!(reduce_bytes(Reduction::Sum, Dtype::I8, &[]).unwrap().0, Value::Int(0, Dtype::I64));
    assert_eq!(reduce_bytes(Reduction::Prod, Dtype::F64, &[]).unwrap().0, Value::Float(1.0, Dtype::F64));
}

#[test]
fn the_result_does_not_depend_on_how_the_values_are_split() {
    let xs: Vec<f64> =
        (0..100_003).map(|k| ((k * 7919) % 1000) as f64 * 1e-3 + if k % 3 == 0 { 1e12 } else { -1e12 }).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&xs);
    // Reduces `xs` cut into `parts` ranges, each in its own reducer, merged in order.
    let split = |start: &Reducer, parts: usize| -> Reducer {
        let step = xs.len().div_ceil(parts);
        let mut acc: Option<Reducer> = None;
        for (k, c) in xs.chunks(step).enumerate() {
            let mut p = start.clone();
            p.update(bytemuck::cast_slice(c), (k * step) as u64).unwrap();
            // Partials travel between processes as bytes.
            let p = Reducer::from_bytes(&p.to_bytes()).expect("round trip");
            match acc.as_mut() {
                None => acc = Some(p),
                Some(a) => a.merge(&p),
            }
        }
        acc.unwrap()
    };
    let kinds = [Reduction::Sum, Reduction::Mean, Reduction::Std, Reduction::Var, Reduction::ArgMax, Reduction::Min];
    for kind in kinds {
        let whole = reduce_bytes(kind, Dtype::F64, bytes).unwrap().0;
        for parts in [1usize, 2, 3, 7, 64] {
            let mut r = split(&Reducer::new(kind, Dtype::F64), parts);
            if r.two_passes() {
                r.second_pass();
                r = split(&r, parts);
            }
            let got = r.finish().unwrap().0;
            assert_eq!(got, whole, "{kind:?} in {parts} parts");
        }
    }
}

/// Bytes of `n` deterministic values of `dtype` (small integers, some negative, some zero).
fn data(dtype: Dtype, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..n {
        let v = ((k * 37 + 11) % 19) as i64 - 6;
        match dtype {
            Dtype::Bool => out.push(u8::from(v > 0)),
            Dtype::I8 => out.extend_from_slice(&(v as i8).to_le_bytes()),
            Dtype::U8 => out.push(v.unsigned_abs() as u8),
            Dtype::I16 => out.extend_from_slice(&(v as i16 * 300).to_le_bytes()),
            Dtype::U16 => out.extend_from_slice(&(v.unsigned_abs() as u16 * 300).to_le_bytes()),
            Dtype::I32 => out.extend_from_slice(&(v as i32 * 100_000).to_le_bytes()),
            Dtype::U32 => out.extend_from_slice(&(v.unsigned_abs() as u32 * 100_000).to_le_bytes()),
            Dtype::I64 => out.extend_from_slice(&(v << 40).to_le_bytes()),
            Dtype::U64 => out.extend_from_slice(&(v.unsigned_abs() << 40).to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f64(v as f64 / 4.0).to_le_bytes()),
            Dtype::F32 => out.extend_from_slice(&(v as f32 / 4.0).to_le_bytes()),
            Dtype::F64 => out.extend_from_slice(&(v as f64 / 4.0).to_le_bytes()),
        }
    }
    out
}

#[test]
fn result_types_and_values_are_numpys_repr() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let kinds: Vec<&str> = Reduction::names().collect();
    let mut script = String::new();
    let mut ours = Vec::new();
    for (k, d) in Dtype::ALL.into_iter().enumerate() {
        let bytes = data(d, 37);
        let path = dir.path().join(format!("{k}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        script.push_str(&format!("x = np.fromfile(D + '/{k}.bin', dtype='{}')\n", d.descr()));
        for name in &kinds {
            let kind: Reduction = name.parse().unwrap();
            let (v, _) = reduce_bytes(kind, d, &bytes).unwrap();
            // numpy's var/std/mean of float16 and float32 accumulate in their own type; ours in
            // float64 (more accurate): compare those at the dtype's precision via their values.
            ours.push(format!("{d} {name}: {}", v.repr()));
            script.push_str(&format!("print('{d} {name}:', repr(np.{name}(x)))\n"));
        }
    }
    let numpy = py(&python, dir.path(), &script);
    let mut bad = Vec::new();
    for (o, n) in ours.iter().zip(numpy.lines()) {
        // numpy's std and var accumulate pairwise (in float32 for float32): the same dtype,
        // the value within a few units in the last place (ours is compensated in float64).
        let close = |o: &str, n: &str| {
            let value = |s: &str| -> Option<(String, f64)> {
                let (head, rest) = s.split_once('(')?;
                Some((head.to_string(), rest.trim_end_matches(')').parse().ok()?))
            };
            match (value(o), value(n)) {
                (Some((ho, vo)), Some((hn, vn))) => {
                    let tol = if ho.contains("float64") { 1e-14 } else { 1e-6 };
                    ho == hn && (vo - vn).abs() <= tol * vn.abs()
                }
                _ => false,
            }
        };
        if o != n && !((o.contains(" std:") || o.contains(" var:")) && close(o, n)) {
            bad.push(format!("ours {o}\n  numpy {n}"));
        }
    }
    assert!(bad.is_empty(), "{} differences:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn float_sums_are_at_least_as_accurate_as_numpys_pairwise_sums() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let code = [
        "rng = np.random.default_rng(7)",
        "sets = {",
        "  'normal': rng.standard_normal(1_000_003),",
        "  'mixed': rng.standard_normal(1_000_003) * 10.0 ** rng.integers(-12, 12, 1_000_003),",
        "  'cancel': np.concatenate([rng.random(500_000) * 1e10, -rng.random(500_000) * 1e10, rng.random(3)]),",
        "  'sorted': np.sort(rng.standard_normal(1_000_003) * 1e8),",
        "}",
        "rng.shuffle(sets['cancel'])",
        "for k, v in sets.items():",
        "    v.tofile(D + '/' + k + '.bin')",
        "    v.astype(np.float32).tofile(D + '/' + k + '32.bin')",
        "    e = math.fsum(v); e32 = math.fsum(v.astype(np.float32).astype(np.float64))",
        "    print(k, repr(e), repr(float(np.sum(v))), repr(e32), repr(float(np.sum(v.astype(np.float32)))))",
    ]
    .join("\n");
    let out = py(&python, dir.path(), &code);
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, exact, numpy, exact32, numpy32) = (
            f[0],
            f[1].parse::<f64>().unwrap(),
            f[2].parse::<f64>().unwrap(),
            f[3].parse::<f64>().unwrap(),
            f[4].parse::<f64>().unwrap(),
        );
        let bytes = std::fs::read(dir.path().join(format!("{name}.bin"))).unwrap();
        let Value::Float(ours, _) = reduce_bytes(Reduction::Sum, Dtype::F64, &bytes).unwrap().0 else { panic!() };
        assert!(
            (ours - exact).abs() <= (numpy - exact).abs(),
            "{name}: ours {ours:e}, numpy {numpy:e}, exact {exact:e}"
        );
        let bytes = std::fs::read(dir.path().join(format!("{name}32.bin"))).unwrap();
        let Value::Float(ours, _) = reduce_bytes(Reduction::Sum, Dtype::F32, &bytes).unwrap().0 else { panic!() };
        assert!(
            (ours - exact32).abs() <= (numpy32 - exact32).abs(),
            "{name} float32: ours {ours:e}, numpy {numpy32:e}, exact {exact32:e}"
        );
    }
}

#[test]
fn variances_are_at_least_as_accurate_as_numpys() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // statistics.pvariance is exact (fractions), rounded once.
    let code = [
        "import statistics",
        "rng = np.random.default_rng(8)",
        "sets = {",
        "  'normal': rng.standard_normal(200_003),",
        "  'offset': 1e9 + rng.standard_normal(200_003),",
        "  'mixed': rng.standard_normal(200_003) * 10.0 ** rng.integers(-8, 8, 200_003),",
        "  'tiny': rng.standard_normal(20_001) * 1e-300,",
        "}",
        "for k, v in sets.items():",
        "    v.tofile(D + '/' + k + '.bin')",
        "    print(k, repr(float(statistics.pvariance(v.tolist()))), repr(float(np.var(v))))",
    ]
    .join("\n");
    let out = py(&python, dir.path(), &code);
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, exact, numpy) = (f[0], f[1].parse::<f64>().unwrap(), f[2].parse::<f64>().unwrap());
        let bytes = std::fs::read(dir.path().join(format!("{name}.bin"))).unwrap();
        let Value::Float(ours, _) = reduce_bytes(Reduction::Var, Dtype::F64, &bytes).unwrap().0 else { panic!() };
        assert!(
            (ours - exact).abs() <= (numpy - exact).abs(),
            "{name}: ours {ours:e}, numpy {numpy:e}, exact {exact:e}"
        );
    }
}

#[test]
fn reductions_are_taken_out_of_an_expression_in_order() {
    use shmpool_expr::parse::extract_reductions;
    let (rest, found) = extract_reductions("x - mean(x) + sum(a * (b + 1)) / 2").unwrap();
    assert_eq!(rest, "x - __r0 + __r1 / 2");
    let pairs: Vec<(Reduction, &str, Option<i64>)> =
        found.iter().map(|c| (c.reduction, c.inner.as_str(), c.axis)).collect();
    assert_eq!(pairs, [(Reduction::Mean, "x", None), (Reduction::Sum, "a * (b + 1)", None)]);
    let (rest, found) = extract_reductions("x - mean(x, axis=0) + argmax(x * 2, axis = -1)").unwrap();
    assert_eq!(rest, "x - __r0 + __r1");
    let pairs: Vec<(Reduction, &str, Option<i64>)> =
        found.iter().map(|c| (c.reduction, c.inner.as_str(), c.axis)).collect();
    assert_eq!(pairs, [(Reduction::Mean, "x", Some(0)), (Reduction::ArgMax, "x * 2", Some(-1))]);
    // numpy's positional axis, except for max/min (elementwise in numexpr: refused).
    for (src, axis) in [("sum(x, 1)", 1), ("mean(x, -1)", -1), ("argmax(x, 0)", 0)] {
        assert_eq!(extract_reductions(src).unwrap().1[0].axis, Some(axis), "{src}");
    }
    for bad in
        ["max(x, 1)", "min(x, -1)", "sum(x, axis=1.5)", "sum(x, axes=1)", "sum(x, axis=1, axis=2)", "sum(x, 1, 2)"]
    {
        let e = extract_reductions(bad).unwrap_err().to_string();
        assert!(e.contains("axis=INT"), "{bad}: {e}");
    }
    assert!(shmpool_expr::Program::check_syntax("x = 1").unwrap_err().to_string().contains("comparison is '=='"));
    assert_eq!(extract_reductions("sqrt(x) + maximum(x, 1)").unwrap().1, []);
    let e = extract_reductions("x - max(x, 0)").unwrap_err().to_string();
    assert!(e.contains("use maximum(a, b)"), "{e}");
    let e = extract_reductions("sum(x - mean(x))").unwrap_err().to_string();
    assert!(e.contains("inside a reduction"), "{e}");
}

#[test]
fn size_of_an_input_becomes_a_python_int() {
    use shmpool_expr::parse::substitute_sizes;
    let s = substitute_sizes("sqrt(sum(x * x)) / size(x) + size(a)", &[("x", 300), ("a", 7)]).unwrap();
    assert_eq!(s, "sqrt(sum(x * x)) / 300 + 7");
    assert!(substitute_sizes("size(x * 2)", &[("x", 3)]).unwrap_err().to_string().contains("size() takes the name"));
    assert!(substitute_sizes("size(y)", &[("x", 3)]).is_err());
    // A weak Python int: float32 stays float32.
    let p = shmpool_expr::Program::compile_for("x / 300", Dtype::F32).unwrap();
    assert_eq!(p.output_dtype(), Dtype::F32);
}
