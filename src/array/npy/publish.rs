//! How an output file comes into existence: written as an unnamed file in its directory
//! (`O_TMPFILE`), so that nothing of it is on disk under any name until it is complete, then
//! linked into place (`linkat` through `/proc/self/fd`, or link-then-rename when replacing an
//! existing file). Where the filesystem or kernel lacks `O_TMPFILE`, a hidden named temporary
//! file (`.NAME.XXXXXX.tmp`) is used and removed on drop; only a SIGKILL can leave that one.
//!
//! Permissions follow `np.save`: a new file gets `0666 & ~umask`; a replaced regular file keeps
//! its mode. The mode is set with `fchmod` on our own descriptor, never by path, so a symlink
//! swapped in by someone else cannot redirect it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::file_err;
use crate::error::Result;

/// Test hook: makes [`Temp::create`] take the named fallback, as on a filesystem without
/// `O_TMPFILE`, so the fallback's publication can be tested anywhere.
#[cfg(feature = "testing")]
pub(crate) static FORCE_NAMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn named_forced() -> bool {
    #[cfg(feature = "testing")]
    return FORCE_NAMED.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "testing"))]
    false
}

/// A file being written before it has its final name. Neither variant's name (if any) leaves
/// this module through safe code: a public name would let safe code truncate the file under live
/// mappings (only the `unsafe` [`super::NpyOutput::create_shared`] hands one out).
pub(super) enum Temp {
    /// `O_TMPFILE`: no name at all until [`Temp::publish`].
    Unnamed { file: File, dir: PathBuf },
    /// The fallback: a hidden name in the same directory, removed on drop.
    Named(tempfile::NamedTempFile),
}

impl Temp {
    /// An unnamed file in `dir` when possible (and `named` is false), else a hidden temporary
    /// `.NAME.XXXXXX.tmp` (which other processes can open by its name).
    pub(super) fn create(dir: &Path, name: &str, named: bool) -> Result<Temp> {
        let proc_fd = Path::new("/proc/self/fd").is_dir();
        if proc_fd && !named && !named_forced() {
            let unnamed = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                .mode(0o600)
                .open(dir);
            match unnamed {
                Ok(file) => return Ok(Temp::Unnamed { file, dir: dir.to_path_buf() }),
                // No O_TMPFILE on this filesystem or kernel: fall back to a named file.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => {
                }
                Err(e) => return Err(file_err("create a file in", dir, e)),
            }
        }
        // tempfile's errors append "at path <a random name>" to the OS error, and hide its
        // code: report a directory that cannot take a new file as the O_TMPFILE path does.
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK)
            .map_err(|e| file_err("create a file in", dir, e.into()))?;
        // `.NAME.XXXXXX.tmp` is 12 bytes longer than NAME: shorten NAME so that any name the
        // output itself may have (NAME_MAX, 255 bytes) gives a temporary name that fits too.
        const ROOM: usize = 255 - ".".len() - ".XXXXXX.tmp".len();
        let mut cut = name.len().min(ROOM);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let named = tempfile::Builder::new()
            .prefix(&format!(".{}.", &name[..cut]))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| file_err("create a file in", dir, e))?;
        Ok(Temp::Named(named))
    }

    /// The hidden name of the named fallback (`None` for an unnamed file).
    pub(super) fn name(&self) -> Option<&Path> {
        match self {
            Temp::Unnamed { .. } => None,
            Temp::Named(t) => Some(t.path()),
        }
    }

    pub(super) fn file(&self) -> &File {
        match self {
            Temp::Unnamed { file, .. } => file,
            Temp::Named(t) => t.as_file(),
        }
    }

    /// Gives the finished file its mode and its final name, replacing any file there
    /// atomically.
    pub(super) fn publish(self, path: &Path) -> Result<()> {
        let mode = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => m.permissions().mode() & 0o7777,
            _ => 0o666 & !umask(),
        };
        let fchmod = |f: &File| {
            nix::sys::stat::fchmod(f, nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t))
                .map_err(|e| file_err("set the mode of", path, e.into()))
        };
        fchmod(self.file())?;
        match self {
            Temp::Named(t) => {
                // Named "link" as the unnamed file's failure is: one message for a file that
                // could not be given its name, whichever way this process publishes.
                t.persist(path).map_err(|e| file_err("link", path, e.error))?;
            }
            Temp::Unnamed { file, dir } => {
                let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
                match link(&fd_path, path) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // Replacing: link under a fresh hidden name, then rename over the old file.
                        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        let aside = loop {
                            let salt = getrandom::u64().map_err(|e| file_err("draw a name in", &dir, e.into()))?;
                            let candidate = dir.join(format!(".{name}.{salt:016x}.tmp"));
                            match link(&fd_path, &candidate) {
                                Ok(()) => break candidate,
                                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                                Err(e) => return Err(file_err("link", &candidate, e)),
                            }
                        };
                        if let Err(e) = std::fs::rename(&aside, path) {
                            let _ = std::fs::remove_file(&aside);
                            return Err(file_err("rename into", path, e));
                        }
                    }
                    Err(e) => return Err(file_err("link", path, e)),
                }
            }
        }
        Ok(())
    }
}

fn link(from: &Path, to: &Path) -> std::io::Result<()> {
    nix::unistd::linkat(nix::fcntl::AT_FDCWD, from, nix::fcntl::AT_FDCWD, to, nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW)
        .map_err(std::io::Error::from)
}

/// The process's umask, read without changing it (Linux 4.7+ reports it in
/// `/proc/self/status`; setting and restoring it would race with other threads).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line.split_whitespace().nth(1)?, 8).ok()
        })
        .unwrap_or(0o022)
}
