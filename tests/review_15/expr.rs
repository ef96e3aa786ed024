//! The expression compiler (`shmpool::kernel::expr`) under hostile input: program bytes and
//! random expressions.

use shmpool::Dtype;

#[test]
fn hostile_program_register_count_is_refused_or_cheap() {
    use shmpool::kernel::expr::Program;
    // This test's name as the harness knows it (`expr::...`), for the child's filter.
    let name = format!(
        "{}::hostile_program_register_count_is_refused_or_cheap",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    if std::env::var_os("REVIEW15_CHILD").is_none() {
        // Re-run this test alone in a child capped at 2 GiB of address space, so that the
        // allocation fails fast instead of taking the machine's memory.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", "ulimit -v 2000000; exec \"$0\" --exact --include-ignored --test-threads 1 \"$1\""])
            .arg(&exe)
            .arg(&name)
            .env("REVIEW15_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("running 1 test"), "the child did not run this test:\n{stdout}");
        assert!(out.status.success(), "the child evaluating a hostile program died: {:?}", out.status);
        return;
    }
    let mut b = Program::compile("x * 2 + 1").unwrap().to_bytes();
    // The header's fourth u32 is the register count: make it huge (the result register stays valid).
    b[12..16].copy_from_slice(&0x00ff_0000u32.to_ne_bytes());
    let Ok(prog) = Program::from_bytes(&b) else { return };
    let mut ys = vec![0f64; 4];
    let _ = prog.eval_slice::<f64, f64>(&[1.0, 2.0, 3.0, 4.0], &mut ys, 0);
}

/// Random token soups and mutated expressions: compiling and evaluating them returns `Ok` or a
/// typed error, never panics ("no panic on user input anywhere in the library").
#[test]
fn expression_fuzz_never_panics() {
    use rand::{Rng, SeedableRng};
    use shmpool::kernel::expr::Program;
    const TOKENS: &[&str] = &[
        "x",
        "y",
        "1",
        "0",
        "-1",
        "2.5",
        "1e308",
        "-9223372036854775808",
        "18446744073709551616",
        "nan",
        "inf",
        "True",
        "+",
        "-",
        "*",
        "/",
        "//",
        "%",
        "**",
        "<<",
        ">>",
        "&",
        "|",
        "^",
        "~",
        "<",
        "==",
        "!=",
        "(",
        ")",
        ",",
        "where",
        "sqrt",
        "arctan2",
        "abs",
        "sum",
        "mean",
        "min",
        "max",
        "astype",
        "int8",
        "uint64",
        "float16",
        "bool",
        "complex",
        "[",
        "]",
        ".",
        "'",
        "\"",
        "\u{e9}",
        " ",
    ];
    let dtypes = [Dtype::I8, Dtype::U64, Dtype::I64, Dtype::F16, Dtype::F64, Dtype::Bool];
    const LEAVES: &[&str] =
        &["x", "y", "1", "0", "-1", "2.5", "1e308", "-9223372036854775808", "nan", "inf", "True", "255", "-3"];
    const BIN: &[&str] = &["+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^", "<", "==", "!="];
    fn tree(rng: &mut rand::rngs::StdRng, depth: u32) -> String {
        if depth == 0 || rng.gen_bool(0.3) {
            return LEAVES[rng.gen_range(0..LEAVES.len())].to_string();
        }
        match rng.gen_range(0..4) {
            0 => format!("~({})", tree(rng, depth - 1)),
            1 => format!("where({}, {}, {})", tree(rng, depth - 1), tree(rng, depth - 1), tree(rng, depth - 1)),
            2 => format!("arctan2({}, {})", tree(rng, depth - 1), tree(rng, depth - 1)),
            _ => format!("({}) {} ({})", tree(rng, depth - 1), BIN[rng.gen_range(0..BIN.len())], tree(rng, depth - 1)),
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut compiled = 0;
    for i in 0..20_000 {
        let n = rng.gen_range(1..12);
        let src: String = if i % 2 == 0 {
            (0..n).map(|_| TOKENS[rng.gen_range(0..TOKENS.len())]).collect::<Vec<_>>().join(" ")
        } else {
            tree(&mut rng, 4)
        };
        let d = dtypes[rng.gen_range(0..dtypes.len())];
        let r = std::panic::catch_unwind(|| {
            let _ = Program::check_syntax(&src);
            let Ok(vars) = Program::variables(&src) else { return 0 };
            let named: Vec<(&str, Dtype)> =
                vars.iter().map(|v| (v.as_str(), if v == "x" { d } else { Dtype::I64 })).collect();
            let Ok(p) = Program::compile_inputs(&src, &named) else { return 0 };
            let ys: Vec<i64> = vec![0, -1, i64::MIN, i64::MAX, 63, 64, -64, 2];
            let xs: Vec<u8> = (0..8 * d.size()).map(|i| (i * 77 % 256) as u8).collect();
            let bufs: Vec<&[u8]> =
                named.iter().map(|(n, _)| if *n == "x" { &xs[..] } else { bytemuck::cast_slice(&ys) }).collect();
            let mut out = vec![0u8; 8 * p.output_dtype().size()];
            let _ = p.eval_inputs(&bufs, &mut out, u64::MAX - 4);
            let shaped: Vec<(&[u8], &[u64])> = bufs.iter().map(|b| (*b, &[8u64][..])).collect();
            let _ = p.eval_broadcast(&shaped, &mut out, 0..8);
            let hostile: Vec<(&[u8], &[u64])> = bufs.iter().map(|b| (*b, &[u64::MAX, 0][..])).collect();
            let _ = p.eval_broadcast(&hostile, &mut out, 0..8);
            let _ = p.eval_broadcast(&shaped, &mut out, 5..u64::MAX);
            1
        });
        compiled += *r.as_ref().unwrap_or(&0);
        assert!(r.is_ok(), "panicked on {src:?} ({d})");
    }
    assert!(compiled > 1000, "the fuzz reached the evaluator only {compiled} times");
}
