//! The output's temporary file while a map runs: who knows its name, and who removes it when
//! a rank is stopped by a signal, panics, or (rank 0) dies without publishing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// The temporary output this process knows of, removed by [`remove_temporary`] when the
/// process is stopped by a signal or panics (each rank knows the name, so a SIGKILLed rank 0
/// still leaves no debris: mpirun stops the others, which remove it).
static TEMPORARY: Mutex<Temporary> = Mutex::new(Temporary::None);

/// What [`remove_temporary`] removes.
enum Temporary {
    None,
    /// Rank 0 is creating the temporary for this output: its name is not known yet, but the
    /// file is open in this process (found through `/proc/self/fd`).
    Creating(PathBuf),
    /// The temporary's name.
    Named(PathBuf),
}

pub(crate) fn set_temporary(p: Option<PathBuf>) {
    let mut g = TEMPORARY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = WATCHER.get() {
        tell_watcher(w, p.as_deref());
    }
    *g = p.map_or(Temporary::None, Temporary::Named);
}

/// Rank 0's watcher: a shell in a process group of its own that reads temporary names, one a
/// line (an empty line: none), and removes the last one when its input ends, that is when
/// this process has ended however it ended. A process killed with SIGKILL runs no handler:
/// when mpirun itself is SIGKILLed (a batch system's hard limit, `timeout -s KILL`), every
/// rank dies so, and only the watcher is left to remove the temporary. `None` when it could
/// not be started (then a SIGKILL of every rank leaves the temporary, as before).
static WATCHER: std::sync::OnceLock<Option<Mutex<std::os::unix::net::UnixStream>>> = std::sync::OnceLock::new();

const WATCHER_SCRIPT: &str = "p=; while IFS= read -r l; do p=$l; done; if [ -n \"$p\" ]; then rm -f -- \"$p\"; fi";

pub(crate) fn start_watcher() {
    WATCHER.get_or_init(|| {
        use std::os::unix::process::CommandExt;
        // A socket, not a pipe: a write after the watcher died fails (MSG_NOSIGNAL) instead of
        // raising SIGPIPE.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().ok()?;
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", WATCHER_SCRIPT])
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Out of the rank's process group: signals mpirun sends to the group miss it.
            .process_group(0)
            .spawn()
            .ok()?;
        drop(child); // never waited for: it outlives this process by design
        Some(Mutex::new(ours))
    });
}

fn tell_watcher(w: &Option<Mutex<std::os::unix::net::UnixStream>>, p: Option<&Path>) {
    use std::io::Write;
    let Some(w) = w else { return };
    // Absolute: the watcher keeps the working directory it was started in.
    let p = p.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let mut line = p.map_or(Vec::new(), |p| p.as_os_str().as_encoded_bytes().to_vec());
    if line.contains(&b'\n') {
        line.clear(); // a name the line protocol cannot carry: the watcher forgets instead
    }
    line.push(b'\n');
    if let Ok(mut s) = w.lock() {
        let _ = s.write_all(&line);
    }
}

pub(crate) fn set_creating(output: &Path) {
    *TEMPORARY.lock().unwrap_or_else(|e| e.into_inner()) = Temporary::Creating(output.to_path_buf());
}

/// The hidden temporaries of `output` (`.NAME.XXXXXX.tmp` in its directory) that this
/// process has open: the one it is creating.
fn open_temporaries_of(output: &Path) -> Vec<PathBuf> {
    let Some(name) = output.file_name().map(|n| n.as_encoded_bytes().to_vec()) else { return Vec::new() };
    let dir = output.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(dir) = dir.canonicalize() else { return Vec::new() };
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.parent() == Some(dir.as_path()))
        .filter(|p| {
            // The engine shortens NAME for a long output name: a prefix of it.
            let f = p.file_name().map_or(&[][..], |f| f.as_encoded_bytes());
            let Some(body) = f.strip_prefix(b".").and_then(|b| b.strip_suffix(b".tmp")) else { return false };
            body.len() > 7 && body[body.len() - 7] == b'.' && name.starts_with(&body[..body.len() - 7])
        })
        .collect()
}

/// Removes the temporary output of a map in progress, if any (for signal handlers and panic
/// hooks; a published output has been renamed and is left alone).
pub fn remove_temporary() {
    // try_lock: a panic hook or signal thread must never block on the main thread (which
    // holds the lock for a moment only, to set the name); a poisoned lock still holds it.
    for _ in 0..100 {
        let g = match TEMPORARY.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut g) = g {
            match std::mem::replace(&mut *g, Temporary::None) {
                Temporary::None => {}
                Temporary::Named(p) => {
                    let _ = std::fs::remove_file(p);
                }
                Temporary::Creating(output) => {
                    for p in open_temporaries_of(&output) {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Installs a panic hook that prints the panic as usual, removes the temporary output of a
/// map in progress, and calls `MPI_Abort` on `MPI_COMM_WORLD`: mpirun then stops every rank
/// within seconds. Without it a panicking rank would unwind into `MPI_Finalize` (or exit)
/// while the others wait for it in a collective: the job would hang.
///
/// The hook acts only in the process that installed it: a worker process forked from this
/// one later (by any shmpool pool) inherits the hook, and there a panic is the pool's to
/// report (a child of an MPI process must not call MPI), so the hook only runs the previous
/// one.
pub fn abort_on_panic() {
    let previous = std::panic::take_hook();
    let installer = std::process::id();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if std::process::id() != installer {
            return;
        }
        remove_temporary();
        if mpi::is_initialized() && !mpi::is_finalized() {
            SimpleCommunicator::world().abort(101);
        }
    }));
}
