//! numpy for the interop tests, found, never installed: `$SHMPOOL_PYTHON`, else the virtualenv
//! `.ci/run` creates at `target/pyenv` (`python3 -m venv target/pyenv && target/pyenv/bin/pip
//! install numpy`). Without numpy every test that needs it fails in CI (`CI` set, as `.ci/run`
//! runs: CI installs numpy, so a missing one is a broken set-up, not a reason to pass); in a
//! local run those tests return early and the test binary says SKIPPED once, loudly, on stderr,
//! with the command that installs it.
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
            let install = "python3 -m venv target/pyenv && target/pyenv/bin/pip install numpy";
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty() || v == "false"),
                "numpy not found, and CI must run the numpy tests: install it with `{install}` \
                 (or set SHMPOOL_PYTHON to a Python that has it)"
            );
            // Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
            let loud = format!(
                "\n*** SKIPPED: numpy not found: the numpy tests of this binary did not run. Install it with\n\
                 ***   {install}\n\
                 *** (or set SHMPOOL_PYTHON to a Python that has numpy) ***\n\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), loud.as_bytes());
        }
        found
    })
    .as_deref()
}

/// Returns early from the test when numpy is not available (the binary has said SKIPPED once);
/// fails the test in CI.
#[macro_export]
macro_rules! require_numpy {
    () => {
        if pyenv::python().is_none() {
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
