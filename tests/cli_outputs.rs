//! The files of `shmpool map` and `shmpool gen`: an output that names a device or a FIFO is
//! written into, never replaced; an input truncated under a running map gives an error that
//! says so; `gen` writes only shapes numpy can load; and (a known gap) what replacing an
//! existing output keeps.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::Duration;

use common::npy_files::{f64_npy, map_expr as map, stderr};

/// `-o` naming a device or a FIFO: as `np.save` does, the output is written into it (`-o /dev/null`
/// discards the result, `-o fifo` feeds a reader), and the node is never replaced by a regular file
/// (shmpool once linked a file aside and renamed it over the node: as root, `-o /dev/null` would
/// have replaced the system's /dev/null). Checked on a private `mknod` copy of /dev/null and on a
/// FIFO.
#[test]
fn output_to_a_device_or_fifo_writes_into_it_and_never_replaces_the_node() {
    use std::os::unix::fs::FileTypeExt;
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..1000).map(f64::from).collect();
    let x = f64_npy(d.path(), "x.npy", &xs);
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A reader, so that a writer would not block.
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let _ = map(&x, &fifo, "x");
    let fifo_kept = std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo();
    drop(reader);
    let null = d.path().join("null");
    let dev = nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    );
    let mut kept_dev = true;
    if dev.is_ok() {
        let _ = map(&x, &null, "x");
        kept_dev = std::fs::symlink_metadata(&null).unwrap().file_type().is_char_device();
    }
    assert!(
        fifo_kept && kept_dev,
        "node replaced by a regular file: fifo kept {fifo_kept}, /dev/null copy kept {kept_dev}"
    );
}

/// An input truncated under a running map gives a clear error (exit 1) that names the input or says
/// it changed, and never "signal 0" (the CLI once said "worker crashed on index range A..B after 3
/// attempts (last signal 0)" or "pool is broken ...: 5 workers in a row exited at start", while the
/// workers had exited with code 3 after failing to map the shrunken file). A map that finished
/// before the truncation is allowed.
#[test]
fn an_input_truncated_mid_map_gives_an_error_that_names_the_input() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..4_000_000).map(|i| i as f64).collect();
    let x = f64_npy(d.path(), "input-under-test.npy", &xs);
    let y = d.path().join("y.npy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmpool"))
        .args(["map", x.to_str().unwrap(), "-o", y.to_str().unwrap(), "--progress", "-j", "2", "--chunk-len", "65536"])
        .args(["--expr", "sin(x) ** 2 + cos(x) ** 3 + tanh(x) + exp(-x * x) + log1p(x) + arctan(x)"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let x2 = x.clone();
    let (status, text) = common::watchdog(Duration::from_secs(120), move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(err).lines();
        let first = lines.next().expect("a progress line").unwrap();
        assert!(first.starts_with("progress:"), "{first}");
        std::fs::OpenOptions::new().write(true).open(&x2).unwrap().set_len(1000).unwrap();
        let rest: Vec<String> = lines.map_while(Result::ok).filter(|l| !l.starts_with("progress:")).collect();
        (child.wait().unwrap(), rest.join("\n"))
    });
    assert!(!y.exists());
    if status.success() {
        return; // finished before the truncation: a correct result is allowed
    }
    assert_eq!(status.code(), Some(1), "{status:?}: {text}");
    assert!(
        text.contains("input-under-test.npy") || text.contains("truncated") || text.contains("changed"),
        "the error does not say the input changed: {text}"
    );
    assert!(!text.contains("signal 0"), "a worker that exited is reported as killed by 'signal 0': {text}");
}

/// `gen` refuses a shape numpy cannot load: a zero-sized shape with a dimension above numpy's limit
/// (intp max, 2**63 - 1) was once written (`gen --shape 0,18446744073709551615` exited 0 and
/// `np.load` refused the file: "Maximum allowed dimension exceeded").
#[test]
fn gen_refuses_dimensions_numpy_cannot_load() {
    let _serial = common::serial();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("z.npy");
    let o = common::watchdog(Duration::from_secs(30), {
        let out = out.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_shmpool"))
                .args(["gen", out.to_str().unwrap(), "--shape", "0,18446744073709551615"])
                .output()
                .unwrap()
        }
    });
    assert!(!o.status.success(), "wrote {} (numpy cannot load a dimension > 2**63-1)", out.display());
}

/// Output "permissions like np.save": `np.save` over an existing file writes into it, so the
/// file keeps its owner and group (and every hard link sees the new data). shmpool links a
/// new file over it: run as root (sudo) over a user's file, the result belongs to root:root
/// (the user can no longer write it), and a second hard link keeps the old contents.
/// (Needs root to create a file owned by another user; skipped otherwise.)
#[test]
#[ignore = "known gap, a design choice (README: Known gaps): outputs are published atomically under a new inode, so owner and other hard links are not kept"]
fn a_replaced_output_keeps_its_owner_and_hard_links_like_np_save() {
    use std::os::unix::fs::MetadataExt;
    let _serial = common::serial();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let x = f64_npy(d.path(), "x.npy", &[1.0, 2.0]);
    let out = d.path().join("users.npy");
    std::fs::write(&out, b"old").unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let link = d.path().join("link.npy");
    std::fs::hard_link(&out, &link).unwrap();
    let o = map(&x, &out, "x * 2");
    assert!(o.status.success(), "{}", stderr(&o));
    let m = std::fs::metadata(&out).unwrap();
    let link_data = std::fs::read(&link).unwrap();
    assert!(
        (m.uid(), m.gid()) == (65534, 65534) && link_data != b"old",
        "owner {}:{} (was 65534:65534); hard link still holds the old data: {}",
        m.uid(),
        m.gid(),
        link_data == b"old"
    );
}
