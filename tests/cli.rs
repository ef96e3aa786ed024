//! The `shmpool` binary: the main job and the exit codes, a hang-up under `nohup`, `-j 1000` on
//! a small input, and a closed stdout pipe. (Its files: tests/cli_outputs.rs; the numpy
//! contract of `--expr`: tests/expressions.rs, tests/npy.rs and tests/numpy_diff.rs.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::npy_files::{f64_npy, shmpool, stderr};

#[test]
fn map_without_input_runs_and_verifies_w1() {
    let out = shmpool(&["map", "--len", "2000000", "--repeat", "2", "-j", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("verified: all 2000000 elements bit-identical"), "{stdout}");
    assert!(stdout.contains("Melem/s"), "{stdout}");
    assert!(stdout.contains("2 workers"), "{stdout}");
}

#[test]
fn usage_errors_exit_with_code_2() {
    assert_eq!(shmpool(&["map", "-j", "0"]).status.code(), Some(2));
    assert_eq!(shmpool(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn info_reports_dev_shm() {
    let out = shmpool(&["info"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/dev/shm:"));
}

#[test]
fn map_without_input_can_write_its_result() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("w1.npy");
    let o = shmpool(&["map", "--len", "10000", "--repeat", "1", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // SAFETY: the file is this test's own; nothing else writes or truncates it.
    let arr = unsafe { shmpool::NpyArray::open(&out) }.unwrap();
    assert_eq!(arr.shape(), &[10000]);
    let ys = arr.as_slice::<f64>().unwrap();
    assert_eq!(ys[7].to_bits(), common::workloads::w1(7.5).to_bits());
}

#[test]
fn bench_quick_prints_every_workload_with_baselines() {
    let o = shmpool(&["bench", "--quick", "--runs", "1", "--json"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in [
        "W1 sqrt",
        "W2 64x sin",
        "sin*cos+exp, expression",
        "single thread",
        "rayon",
        "shmpool --expr",
        "p99_us",
        "startup",
    ] {
        assert!(s.contains(needle), "missing {needle}: {s}");
    }
}

fn gen(dir: &std::path::Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut a = vec!["gen", p.to_str().unwrap()];
    a.extend_from_slice(args);
    let o = shmpool(&a);
    assert!(o.status.success(), "gen {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    p
}

fn read_f64(path: &std::path::Path) -> (Vec<u64>, Vec<f64>) {
    // SAFETY: the file is this test's own; nothing else writes or truncates it.
    let a = unsafe { shmpool::NpyArray::open(path) }.unwrap();
    (a.shape().to_vec(), a.as_slice::<f64>().unwrap().to_vec())
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn an_expression_starting_with_a_minus_is_the_expression() {
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "1000"]);
    let y = d.path().join("y.npy");
    let o = shmpool(&["map", x.to_str().unwrap(), "-o", y.to_str().unwrap(), "--expr", "-x**2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, xs) = read_f64(&x);
    let (_, ys) = read_f64(&y);
    assert!(xs.iter().zip(&ys).all(|(x, y)| *y == -(x * x)), "-x**2 is -(x**2), as in Python");
}

#[test]
fn gen_refuses_overflowing_lengths_and_writes_n_d_shapes() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.npy");
    let o = shmpool(&["gen", big.to_str().unwrap(), "--len", "2305843009213693952"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("overflow"));
    assert!(names(d.path()).is_empty(), "nothing written");
    let s = gen(d.path(), "s.npy", &["--shape", "1000,37"]);
    let (shape, xs) = read_f64(&s);
    assert_eq!(shape, [1000, 37]);
    assert_eq!(xs[1000 * 37 - 1], ((1000 * 37 - 1) % 1000) as f64 + 0.5);
}

#[test]
fn errors_print_their_cause_and_exit_2_for_input_1_while_running() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing.npy");
    let o = shmpool(&["map", missing.to_str().unwrap(), "-o", d.path().join("y.npy").to_str().unwrap(), "--expr", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("missing.npy: No such file or directory (os error 2)"), "{err}");
    // numpy raises for an integer to a negative integer power: a failure while running.
    let x = gen(d.path(), "i.npy", &["--len", "100", "--dtype", "int64"]);
    let o = shmpool(&[
        "map",
        x.to_str().unwrap(),
        "-o",
        d.path().join("y.npy").to_str().unwrap(),
        "--expr",
        "x ** (x - 50)",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("integers to negative integer powers are not allowed"), "{err}");
    assert_eq!(names(d.path()), ["i.npy"], "no output, no temporary file");
}

#[test]
fn progress_prints_plain_lines_when_stderr_is_not_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "300000"]);
    let y = d.path().join("y.npy");
    let o = shmpool(&["map", x.to_str().unwrap(), "-o", y.to_str().unwrap(), "--expr", "x", "--progress", "-j", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let last = err.lines().rfind(|l| l.starts_with("progress:")).unwrap_or_else(|| panic!("no line: {err}"));
    assert!(
        last.contains("100.0%") && last.contains("300000/300000") && last.contains("Melem/s") && last.contains("ETA"),
        "{last}"
    );
    let o = shmpool(&["map", x.to_str().unwrap(), "-o", y.to_str().unwrap(), "--expr", "x"]);
    assert!(o.status.success() && o.stderr.is_empty(), "no progress unless asked when not a terminal");
}

#[test]
fn more_workers_than_work_stays_quiet_and_quick() {
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "100000"]);
    let y = d.path().join("y.npy");
    let o = shmpool(&["map", x.to_str().unwrap(), "-o", y.to_str().unwrap(), "--expr", "x", "-j", "1000"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
    assert!(out.contains("with 2 workers"), "100,000 elements use 2 workers, not 1000: {out}");
    let help = String::from_utf8_lossy(&shmpool(&["map", "--help"]).stdout).to_string();
    assert!(help.contains("never starts more workers than it can use"), "{help}");
}

#[cfg(unix)]
#[test]
fn new_outputs_get_np_save_permissions_and_replaced_ones_keep_theirs() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "1000"]);
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    let map_umask = |umask: &str, out: &std::path::Path, extra: &str| {
        let cmd = format!(
            "umask {umask} && exec {:?} map {:?} -o {:?} --expr x --quiet {extra}",
            env!("CARGO_BIN_EXE_shmpool"),
            x.to_str().unwrap(),
            out.to_str().unwrap()
        );
        let o = Command::new("sh").args(["-c", &cmd]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let fresh = d.path().join("fresh.npy");
    map_umask("027", &fresh, "");
    assert_eq!(mode(&fresh), 0o640, "0666 & ~umask");
    let replaced = d.path().join("replaced.npy");
    std::fs::write(&replaced, b"old").unwrap();
    std::fs::set_permissions(&replaced, std::fs::Permissions::from_mode(0o600)).unwrap();
    map_umask("000", &replaced, "");
    assert_eq!(mode(&replaced), 0o600, "a replaced file keeps its mode");
    // A symlink at the output path is replaced, never followed: its target is untouched.
    let victim = d.path().join("victim.npy");
    std::fs::write(&victim, b"secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = d.path().join("link.npy");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    map_umask("022", &link, "");
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    assert_eq!(mode(&victim), 0o600);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_file());
    assert_eq!(mode(&link), 0o644);
    // --in-place keeps the input's mode.
    std::fs::set_permissions(&x, std::fs::Permissions::from_mode(0o604)).unwrap();
    map_umask("077", &x, "--in-place");
    assert_eq!(mode(&x), 0o604);
    let mut left = names(d.path());
    left.retain(|n| n.starts_with('.'));
    assert!(left.is_empty(), "no temporary files: {left:?}");
}

/// Processes whose command line mentions `needle` (the CLI and its forked workers).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Interrupts a running map with `signal`; `code` is the expected exit code (`None`: killed).
fn interrupted_map_leaves_nothing(signal: nix::sys::signal::Signal, code: Option<i32>) {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "4000000"]);
    let y = d.path().join("y.npy");
    let expr = "sin(x) ** 2 + cos(x) ** 3 + tanh(x) + exp(-x * x) + log1p(x) + arctan(x) + sinh(x / 1000)";
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmpool"))
        .args([
            "map",
            x.to_str().unwrap(),
            "-o",
            y.to_str().unwrap(),
            "--progress",
            "-j",
            "2",
            "--chunk-len",
            "65536",
            "--expr",
            expr,
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let stderr = child.stderr.take().unwrap();
    let status = common::watchdog(std::time::Duration::from_secs(120), move || {
        let mut lines = std::io::BufReader::new(stderr).lines();
        // The first progress line: the map is running, workers hold chunks.
        let first = lines.next().expect("a progress line").unwrap();
        assert!(first.starts_with("progress:"), "{first}");
        nix::sys::signal::kill(pid, signal).unwrap();
        for _ in lines {}
        child.wait().unwrap()
    });
    assert_eq!(status.code(), code, "{signal:?}: exit 128 + signal ({status:?})");
    assert_eq!(names(d.path()), ["x.npy"], "no output and no temporary file");
    let needle = d.path().to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        assert!(std::time::Instant::now() < deadline, "workers outlived the CLI: {:?}", processes_mentioning(&needle));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigint_mid_map_exits_130_and_leaves_nothing() {
    interrupted_map_leaves_nothing(nix::sys::signal::Signal::SIGINT, Some(130));
}

#[test]
fn sigterm_mid_map_exits_143_and_leaves_nothing() {
    interrupted_map_leaves_nothing(nix::sys::signal::Signal::SIGTERM, Some(143));
}

#[test]
fn sighup_mid_map_exits_129_and_leaves_nothing() {
    interrupted_map_leaves_nothing(nix::sys::signal::Signal::SIGHUP, Some(129));
}

#[test]
fn even_sigkill_leaves_no_output_file() {
    // The output has no name until it is complete (O_TMPFILE): the kernel frees it.
    interrupted_map_leaves_nothing(nix::sys::signal::Signal::SIGKILL, None);
}

#[test]
fn a_sigint_landing_just_after_success_exits_0_or_130_never_141() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "200000"]);
    let dir = d.path().to_path_buf();
    let codes = common::watchdog(std::time::Duration::from_secs(300), move || {
        let mut codes = Vec::new();
        for i in 0..20u64 {
            let y = dir.join(format!("y{i}.npy"));
            let mut child = Command::new(env!("CARGO_BIN_EXE_shmpool"))
                .args([
                    "map",
                    x.to_str().unwrap(),
                    "-o",
                    y.to_str().unwrap(),
                    "-j",
                    "2",
                    "--quiet",
                    "--expr",
                    "sqrt(x) * 1.5 + 0.25",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            // The success line is printed after the output is committed: the signal lands while
            // the program tears its pool and its signal handling down, at a different instant
            // each round.
            let line = lines.next().expect("the success line").unwrap();
            assert!(line.starts_with("mapped"), "{line}");
            std::thread::sleep(std::time::Duration::from_micros(i * 150));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            for _ in lines {}
            let status = child.wait().unwrap();
            codes.push((i, status.code(), std::os::unix::process::ExitStatusExt::signal(&status)));
        }
        codes
    });
    for (i, code, signal) in codes {
        assert!(matches!(code, Some(0) | Some(130)), "round {i}: exit code {code:?}, signal {signal:?}");
    }
}

/// Children of `pid` (not zombies).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("Z");
        if state != "Z" && f.next().and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_killed_fork_server_costs_the_map_a_restart_not_its_result() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "4000000"]);
    let expr = "sin(x) ** 2 + cos(x) ** 3 + tanh(x) + exp(-x * x) + log1p(x) + arctan(x) + sinh(x / 1000)";
    let args = |out: &std::path::Path| -> Vec<String> {
        ["map", x.to_str().unwrap(), "-o", out.to_str().unwrap(), "--progress", "-j", "2", "--chunk-len", "65536"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--expr".to_string(), expr.to_string()])
            .collect()
    };
    let reference = d.path().join("reference.npy");
    let out = shmpool(&args(&reference).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let y = d.path().join("y.npy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmpool"))
        .args(args(&y))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (status, killed, rest) = common::watchdog(std::time::Duration::from_secs(120), move || {
        let mut lines = std::io::BufReader::new(stderr).lines().map(|l| l.unwrap());
        // The first progress line: the map runs. The CLI is threaded (its signal thread), so its
        // workers come from the fork server, its one child: kill it as the OOM killer would.
        let first = lines.next().expect("a progress line");
        assert!(first.starts_with("progress:"), "{first}");
        let killed = children_of(pid);
        for &server in &killed {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(server as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
        }
        let rest: Vec<String> = lines.collect();
        (child.wait().unwrap(), killed, rest)
    });
    assert_eq!(killed.len(), 1, "the CLI's one child is its fork server: {killed:?}");
    assert!(status.success(), "{status:?}: {rest:?}");
    let bits = |p: &std::path::Path| {
        let (shape, v) = read_f64(p);
        (shape, v.iter().map(|f| f.to_bits()).collect::<Vec<u64>>())
    };
    assert!(bits(&y) == bits(&reference), "the same result as an undisturbed run");
}

#[test]
fn map_of_a_file_requires_an_expression_and_help_lists_the_functions() {
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "x.npy", &["--len", "1000"]);
    let o = shmpool(&["map", x.to_str().unwrap(), "-o", d.path().join("y.npy").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("needs --expr"), "{err}");
    assert_eq!(names(d.path()), ["x.npy"], "nothing written without an expression");
    let help = String::from_utf8_lossy(&shmpool(&["map", "--help"]).stdout).to_string();
    for f in ["sqrt", "arctan2", "where", "clip", "isfinite", "nextafter", "ones_like"] {
        assert!(help.split_whitespace().any(|w| w == f), "--help lists {f}: {help}");
    }
}

#[test]
fn a_negative_integer_power_at_run_time_is_numpys_message_without_a_source_location() {
    let d = tempfile::tempdir().unwrap();
    let x = gen(d.path(), "i.npy", &["--len", "100", "--dtype", "int32"]);
    let y = d.path().join("y.npy");
    let o = shmpool(&["map", x.to_str().unwrap(), "-o", y.to_str().unwrap(), "--expr", "isfinite(x ** (x - 50))"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("integers to negative integer powers are not allowed"), "{err}");
    assert!(!err.contains(".rs:") && !err.contains("panicked at"), "no source location: {err}");
    assert_eq!(names(d.path()), ["i.npy"], "no output, no temporary file");
}

// ---------------------------------------------------------------------------------------------
// A hang-up under `nohup`, `-j 1000` on a small input, a closed stdout pipe.
// ---------------------------------------------------------------------------------------------

/// `nohup shmpool map ...` (SIGHUP ignored by the parent) survives a hangup, as every program that
/// installs cleanup handlers only for signals not ignored at start-up does (and as numpy under
/// `nohup python` does); shmpool once installed its SIGHUP handler over the inherited SIG_IGN and
/// cancelled the map with exit 129. The same holds for SIGINT, which non-interactive shells set to
/// SIG_IGN for background jobs (`cmd &` in a script).
#[test]
fn nohup_map_survives_a_hangup() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..3_000_000).map(|i| i as f64).collect();
    let x = f64_npy(d.path(), "x.npy", &xs);
    let y = d.path().join("y.npy");
    let script = format!(
        "trap '' HUP; exec {:?} map {:?} -o {:?} --progress -j 2 --chunk-len 65536 --expr \
         'sin(x) ** 2 + cos(x) ** 3 + tanh(x) + exp(-x * x) + log1p(x) + arctan(x)'",
        env!("CARGO_BIN_EXE_shmpool"),
        x,
        y
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let err = child.stderr.take().unwrap();
    let status = common::watchdog(Duration::from_secs(120), move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(err).lines();
        let first = lines.next().expect("a progress line").unwrap();
        assert!(first.starts_with("progress:"), "{first}");
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        for _ in lines {}
        child.wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "SIGHUP was ignored by the caller (nohup): {status:?}");
    assert!(y.exists());
}

/// "`-j 1000` on small inputs is quiet and quick": the worker count is capped by the input's
/// size (one worker per 65,536 elements) for the built-in dataset too, as for a file input; it
/// once started 1000 worker processes for `map -j 1000 --len 1000` (~7 s on 2 cores). Checked
/// by what the run reports, not by its time.
#[test]
fn j_1000_on_the_small_built_in_dataset_starts_no_worker_per_element() {
    let _serial = common::serial();
    let o = common::watchdog(Duration::from_secs(120), || {
        Command::new(env!("CARGO_BIN_EXE_shmpool"))
            .args(["map", "-j", "1000", "--len", "1000", "--repeat", "1"])
            .output()
            .unwrap()
    });
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.contains("1000 worker processes"), "1000 workers for 1000 elements:\n{out}");
}

/// `shmpool map x.npy -o y.npy | head -0` (or `| true`, or a pager quit early): the summary line
/// meets a closed pipe. Documented exit codes are 0, 1, 2 and 128+N: no panic (it once panicked
/// with "failed printing to stdout: Broken pipe", exit 101, after writing the output, and the
/// built-in dataset run panicked with its pool alive).
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[1.0, 2.0]);
    let y = d.path().join("y.npy");
    let mut bad = Vec::new();
    for args in [
        vec![
            "map".to_string(),
            x.to_str().unwrap().into(),
            "-o".into(),
            y.to_str().unwrap().into(),
            "--expr".into(),
            "x".into(),
        ],
        vec!["map".into(), "-j".into(), "2".into(), "--len".into(), "1000".into(), "--repeat".into(), "1".into()],
    ] {
        let o = common::watchdog(Duration::from_secs(60), move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_shmpool"))
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take()); // the reader is gone
            child.wait_with_output().unwrap()
        });
        let err = stderr(&o);
        if err.contains("panicked") || o.status.code() == Some(101) {
            bad.push(format!("{:?}: {}", o.status, err.lines().take(3).collect::<Vec<_>>().join(" | ")));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
