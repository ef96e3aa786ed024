//! `.npy` files for the tests of `shmpool map`: fixtures written by hand (no numpy needed), the
//! CLI run on them under a watchdog, and its outputs read back raw.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A `.npy` file (format 1.0, header padded to 64 bytes as `np.save` does).
pub fn npy(dir: &Path, name: &str, descr: &str, shape: &str, data: &[u8]) -> PathBuf {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = (10 + dict.len() + 1).next_multiple_of(64);
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, out).unwrap();
    p
}

/// A float64 `.npy` file of `xs`.
pub fn f64_npy(dir: &Path, name: &str, xs: &[f64]) -> PathBuf {
    npy(dir, name, "<f8", &format!("({},)", xs.len()), bytemuck::cast_slice(xs))
}

/// The float64 values of raw little-endian bytes.
pub fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Runs `shmpool map IN -o OUT --quiet --expr EXPR`; returns the output (stdout, stderr).
pub fn map_expr(input: &Path, output: &Path, expr: &str) -> std::process::Output {
    let args: Vec<String> = ["map", input.to_str().unwrap(), "-o", output.to_str().unwrap(), "--quiet", "--expr", expr]
        .iter()
        .map(|s| s.to_string())
        .collect();
    super::watchdog(Duration::from_secs(60), move || {
        Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).output().unwrap()
    })
}

/// The dtype and the raw data bytes of a `.npy` file the CLI wrote.
pub fn read_out(path: &Path) -> (shmpool::Dtype, Vec<u8>) {
    // SAFETY: the file is this test's own; nothing else writes or truncates it.
    let a = unsafe { shmpool::NpyArray::open(path) }.unwrap();
    let raw = std::fs::read(path).unwrap();
    let (pre, hlen) = match raw[6] {
        1 => (10, u16::from_le_bytes([raw[8], raw[9]]) as usize),
        _ => (12, u32::from_le_bytes(raw[8..12].try_into().unwrap()) as usize),
    };
    let data = raw[pre + hlen..].to_vec();
    assert_eq!(data.len(), a.len() * a.dtype().size(), "data size");
    (a.dtype(), data)
}

/// The child's stderr, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the `shmpool` binary with `args` under a 300 s watchdog.
pub fn shmpool(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    super::watchdog(Duration::from_secs(300), move || {
        Command::new(env!("CARGO_BIN_EXE_shmpool")).args(&args).output().unwrap()
    })
}

/// `dir/name` as a string, for command lines.
pub fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}
