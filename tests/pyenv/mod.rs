//! numpy for the interop tests, found, never installed: `$SHMPOOL_PYTHON`, else the virtualenv
//! `.ci/run` creates at `target/pyenv` (`python3 -m venv target/pyenv && target/pyenv/bin/pip
//! install numpy`). Without numpy the tests that need it print a loud SKIPPED line and pass.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A Python interpreter that imports numpy, if there is one.
pub fn python() -> Option<&'static Path> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let candidates: Vec<PathBuf> = std::env::var_os("SHMPOOL_PYTHON")
            .map(PathBuf::from)
            .into_iter()
            .chain([target.join("pyenv/bin/python")])
            .collect();
        let found = candidates
            .into_iter()
            .find(|p| Command::new(p).args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success()));
        if found.is_none() {
            eprintln!(
                "\n*** SKIPPED: numpy not found (set SHMPOOL_PYTHON or run .ci/run, which creates target/pyenv); \
                 the numpy interop tests did not run ***\n"
            );
        }
        found
    })
    .as_deref()
}

/// Returns early from the test (after the loud SKIPPED line) when numpy is not available.
#[macro_export]
macro_rules! require_numpy {
    () => {
        if pyenv::python().is_none() {
            eprintln!("*** SKIPPED {}: numpy not available ***", module_path!());
            return;
        }
    };
}

/// Runs a Python snippet with numpy imported as np; `D` is the test directory.
pub fn py(dir: &Path, code: &str) -> String {
    let python = python().expect("require_numpy!() checked");
    let script = format!("import numpy as np, sys\nD = {:?}\n{code}\n", dir.display().to_string());
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), code);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
