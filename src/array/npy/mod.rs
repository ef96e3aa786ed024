//! Memory-mapped `.npy` files: [`NpyArray`] (read in place, like `np.load(mmap_mode='r')`) and
//! [`NpyOutput`] (written in place, renamed into its final name only when complete).

use std::sync::Arc;

use bytemuck::Pod;

use crate::dtype::Dtype;
use crate::error::Result;
use crate::shm::{Segment, SegmentKind};

mod header;
mod publish;
mod range;

pub use range::{NpyRange, NpyRangeMut};

/// Refuses a view of `dtype` elements as `T` when their sizes differ.
fn check_elem<T: Pod>(dtype: Dtype) -> Result<()> {
    if std::mem::size_of::<T>() != dtype.size() {
        return Err(crate::Error::TypeMismatch {
            kernel: format!("{}-byte elements ({})", std::mem::size_of::<T>(), std::any::type_name::<T>()),
            data: dtype.to_string(),
        });
    }
    Ok(())
}

/// Test hook behind `testing::force_named_npy_temp_files`.
#[cfg(feature = "testing")]
pub(crate) fn force_named_temp_files(on: bool) {
    publish::FORCE_NAMED.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn bad(path: &std::path::Path, reason: impl Into<String>) -> crate::Error {
    crate::Error::BadNpy { path: path.display().to_string(), reason: reason.into() }
}

fn file_err(op: &'static str, path: &std::path::Path, source: std::io::Error) -> crate::Error {
    crate::Error::File { op, path: path.display().to_string(), source }
}

/// A `.npy` file mapped read-only: its elements are read in place by the workers, never
/// copied or loaded. Little-endian, C-order (or 1-D) arrays of the types in [`Dtype`].
///
/// Like `np.load(path, mmap_mode='r')`.
///
/// # Safety
///
/// The array is a view of a file other processes can change: every method that reads the
/// elements assumes that nobody truncates or writes the file while it is mapped. A truncated
/// file makes reads fault (SIGBUS); a modified one changes data the caller and the workers
/// hold as immutable (`&[T]`), which is undefined behaviour. [`NpyArray::open`] is `unsafe` for
/// that reason, as `memmap2::Mmap::map` is; calling it from safe code does not compile:
///
/// ```compile_fail,E0133
/// let a = shmpool::NpyArray::open("x.npy"); // error: call to unsafe function
/// ```
pub struct NpyArray {
    seg: Arc<Segment>,
    dtype: Dtype,
    shape: Vec<u64>,
    len: usize,
}

impl NpyArray {
    /// Opens and maps `path`, checking its header against the file's size before anything
    /// else reads it (numpy's 10,000-byte header cap, a linear parse).
    ///
    /// # Safety
    ///
    /// Nothing may truncate or modify the file while the returned array (or a map using it)
    /// exists; see the type's `# Safety` section.
    ///
    /// # Errors
    ///
    /// [`crate::Error::File`] when it cannot be opened; [`crate::Error::BadNpy`] naming the
    /// problem for anything that is not a supported `.npy` array (bad magic, `.npz` archive,
    /// truncated or oversized header, unsupported or big-endian dtype, Fortran order, data
    /// shorter than the header says).
    pub unsafe fn open(path: impl AsRef<std::path::Path>) -> Result<NpyArray> {
        use std::io::Read;
        let path = path.as_ref();
        // A mapped file must never take a standard descriptor number a program closed.
        crate::os::stdio::guard_stdio();
        let file = std::fs::File::open(path).map_err(|e| file_err("open", path, e))?;
        let meta = file.metadata().map_err(|e| file_err("stat", path, e))?;
        if meta.is_dir() {
            return Err(file_err("open", path, std::io::Error::other("it is a directory")));
        }
        let size = meta.len();
        let mut head = Vec::with_capacity(12 + header::MAX_HEADER);
        (&file).take((12 + header::MAX_HEADER) as u64).read_to_end(&mut head).map_err(|e| file_err("read", path, e))?;
        let h = header::parse(&head, size).map_err(|reason| bad(path, reason))?;
        let (dtype, shape, data_off) = (h.dtype, h.shape, h.data_off);
        if h.fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
            return Err(bad(path, "Fortran-order arrays are not supported (save with np.ascontiguousarray)"));
        }
        let len = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad(path, "shape overflows"))?;
        let bytes = len.checked_mul(dtype.size()).ok_or_else(|| bad(path, "shape overflows"))?;
        if (data_off as u64).saturating_add(bytes as u64) > size {
            return Err(bad(path, format!(
                "data shorter than the header says: {len} {dtype} elements need {bytes} bytes after a {data_off}-byte header, the file has {}",
                size.saturating_sub(data_off as u64)
            )));
        }
        if data_off % dtype.size() != 0 {
            return Err(bad(path, format!("data offset {data_off} is not aligned to {} bytes", dtype.size())));
        }
        let seg = if bytes == 0 {
            // Nothing to map: an empty array.
            Arc::new(Segment::create(SegmentKind::Array, 0, dtype.size() as u32, 0)?)
        } else {
            Arc::new(Segment::map_file(file, data_off, bytes, false)?)
        };
        Ok(NpyArray { seg, dtype, shape, len })
    }

    /// Element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Shape, as in the header.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements, when `T` has the array's element size.
    ///
    /// # Errors
    ///
    /// [`crate::Error::TypeMismatch`] when the sizes differ.
    pub fn as_slice<T: Pod>(&self) -> Result<&[T]> {
        check_elem::<T>(self.dtype)?;
        // SAFETY: the mapping is read-only for every process (workers map it read-only too),
        // and the caller of `open` promised that nothing modifies the file while it is mapped.
        let bytes = unsafe { self.seg.data(0, self.len * self.dtype.size()) }?;
        Ok(bytemuck::cast_slice(bytes))
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The elements' bytes (for maps that copy their input, such as `Pool::submit`).
    pub(crate) fn bytes(&self) -> Result<&[u8]> {
        // SAFETY: as in `as_slice`: the mapping is read-only for every process, and the
        // caller of `open` promised that nothing modifies the file while it is mapped.
        unsafe { self.seg.data(0, self.len * self.dtype.size()) }
    }
}

/// A `.npy` file being written: created without a name in its final directory (or as a
/// hidden temporary file where the filesystem cannot do that), its size reserved up front,
/// written in place by the workers, and linked under its final name only by
/// [`NpyOutput::commit`], with `np.save`'s permissions. Dropped without a commit, nothing of it
/// stays on disk: nothing half-written ever appears under the final name.
///
/// The file being written has no public name: safe code that could open it by name could
/// truncate it under the `&[T]` views the workers and this process hold. Where the filesystem
/// cannot create an unnamed file, the hidden temporary's name stays private to shmpool; no
/// accessor reveals it:
///
/// ```compile_fail,E0599
/// # fn main() -> shmpool::Result<()> {
/// let out = shmpool::NpyOutput::create("/tmp/o.npy", shmpool::Dtype::F64, &[4])?;
/// let _ = out.temp_path(); // error: no such method
/// # Ok(()) }
/// ```
pub struct NpyOutput {
    seg: Arc<Segment>,
    tmp: Option<publish::Temp>,
    path: std::path::PathBuf,
    dtype: Dtype,
    len: usize,
}

impl NpyOutput {
    /// Creates the file for `path` with a header for `dtype` and `shape` (any number of
    /// dimensions, C order) and reserves its full size.
    ///
    /// # Errors
    ///
    /// [`crate::Error::TooLarge`] when the shape's byte size does not fit a file;
    /// [`crate::Error::File`] when the directory is missing or not writable, or the disk is full.
    pub fn create(path: impl AsRef<std::path::Path>, dtype: Dtype, shape: &[u64]) -> Result<NpyOutput> {
        Self::create_as(path.as_ref(), dtype, shape, false)
    }

    /// Like [`NpyOutput::create`], but the file being written has a name from the start, a
    /// hidden `.NAME.XXXXXX.tmp` in the output's directory, returned beside the output, so that
    /// other processes (MPI ranks, on other machines too when the directory is on a shared
    /// filesystem) can open it with [`NpyOutput::open_part`] and each write their own range
    /// ([`NpyOutput::range`] with [`crate::Pool::map_into`]). Only this output publishes the file
    /// ([`NpyOutput::commit`], after the others have finished); dropped without a commit it
    /// removes the file. Only a SIGKILL can leave the temporary behind.
    ///
    /// # Safety
    ///
    /// The returned name names the file this output maps. Through it, safe `std::fs` calls could
    /// truncate or rewrite the file under slices of the elements ([`NpyOutput::as_slice`]),
    /// which is undefined behaviour (or SIGBUS). The caller must use the name only to open parts
    /// ([`NpyOutput::open_part`], under its own contract) and to remove the temporary after a
    /// crash, and keep it from any code that could truncate or rewrite the file while this
    /// output is alive.
    ///
    /// # Errors
    ///
    /// As [`NpyOutput::create`].
    pub unsafe fn create_shared(
        path: impl AsRef<std::path::Path>,
        dtype: Dtype,
        shape: &[u64],
    ) -> Result<(NpyOutput, std::path::PathBuf)> {
        let out = Self::create_as(path.as_ref(), dtype, shape, true)?;
        let name = out.tmp.as_ref().and_then(publish::Temp::name).map(std::path::Path::to_path_buf);
        match name {
            Some(name) => Ok((out, name)),
            // An empty array maps nothing; its temporary is named all the same (`named`).
            None => Err(crate::Error::os(
                "create a named temporary output",
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            )),
        }
    }

    /// Opens, for writing, the temporary file `temp` of an output another process created with
    /// [`NpyOutput::create_shared`], after checking that its header says `dtype` and `shape`
    /// and that it has their full size. The result is a *part*: it never publishes nor removes
    /// the file; its [`NpyOutput::commit`] only flushes this process's writes to the file.
    ///
    /// # Safety
    ///
    /// The file is mapped shared and writable while other processes write it. The caller must
    /// make sure that nothing truncates the file while it is mapped (reads and writes would
    /// fault with SIGBUS), and that while this process holds a slice of the elements
    /// ([`NpyOutput::as_slice`], [`NpyOutput::as_mut_slice`]) no other process writes them
    /// (writes through maps of disjoint ranges, [`NpyOutput::range`], are the
    /// intended use; a slice taken while others write is a data race, undefined behaviour).
    ///
    /// # Errors
    ///
    /// [`crate::Error::File`] when it cannot be opened; [`crate::Error::BadNpy`] when its
    /// header is not the one for `dtype` and `shape`, or the file is shorter than they need.
    pub unsafe fn open_part(temp: impl AsRef<std::path::Path>, dtype: Dtype, shape: &[u64]) -> Result<NpyOutput> {
        use std::io::Read;
        let path = temp.as_ref().to_path_buf();
        let head = header::write(dtype, shape);
        let len = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(crate::Error::TooLarge { count: u64::MAX, elem_size: dtype.size() as u64 })?;
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or(crate::Error::TooLarge { count: len as u64, elem_size: dtype.size() as u64 })?;
        let file =
            std::fs::OpenOptions::new().read(true).write(true).open(&path).map_err(|e| file_err("open", &path, e))?;
        let size = file.metadata().map_err(|e| file_err("stat", &path, e))?.len();
        let mut found = Vec::with_capacity(head.len());
        (&file).take(head.len() as u64).read_to_end(&mut found).map_err(|e| file_err("read", &path, e))?;
        if found != head {
            return Err(bad(&path, format!("not the header of a {dtype} array of shape {shape:?}")));
        }
        if size < (head.len() + bytes) as u64 {
            return Err(bad(
                &path,
                format!("{size} bytes, a {dtype} array of shape {shape:?} needs {}", head.len() + bytes),
            ));
        }
        let seg = if bytes == 0 {
            Arc::new(Segment::create(SegmentKind::Array, 0, dtype.size() as u32, 0)?)
        } else {
            Arc::new(Segment::map_file(file, head.len(), bytes, true)?)
        };
        Ok(NpyOutput { seg, tmp: None, path, dtype, len })
    }

    fn create_as(path: &std::path::Path, dtype: Dtype, shape: &[u64], named: bool) -> Result<NpyOutput> {
        use std::os::unix::fs::FileExt;
        let path = path.to_path_buf();
        // The file being written must never take a standard descriptor number a program closed.
        crate::os::stdio::guard_stdio();
        let overflow = |count: u64| crate::Error::TooLarge { count, elem_size: dtype.size() as u64 };
        // numpy's dimensions are `intp`: one beyond i64::MAX cannot be loaded, even in an
        // empty array.
        if let Some(&d) = shape.iter().find(|&&d| d > i64::MAX as u64) {
            return Err(overflow(d));
        }
        let len = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| overflow(u64::MAX))?;
        let head = header::write(dtype, shape);
        let total = len
            .checked_mul(dtype.size() as u64)
            .and_then(|b| b.checked_add(head.len() as u64))
            .filter(|&t| t <= i64::MAX as u64 && usize::try_from(t).is_ok())
            .ok_or_else(|| overflow(len))?;
        let (len, bytes) = (len as usize, len as usize * dtype.size());
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        if path.is_dir() {
            return Err(file_err("write to", &path, std::io::Error::other("it is a directory")));
        }
        // A device, FIFO or socket is never replaced by a regular file (think `-o /dev/null`
        // as root); a symlink is replaced, never followed (see `publish`).
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            let t = m.file_type();
            if !t.is_file() && !t.is_symlink() {
                return Err(file_err(
                    "write to",
                    &path,
                    std::io::Error::other("it is not a regular file (a device, FIFO or socket)"),
                ));
            }
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = publish::Temp::create(&dir, &name, named)?;
        let f = tmp.file();
        f.write_all_at(&head, 0).map_err(|e| file_err("write", &path, e))?;
        f.set_len(total).map_err(|e| file_err("size", &path, e))?;
        if bytes > 0 {
            // A handled signal interrupts a large reservation (EINTR): the part reserved stays,
            // asking again finishes it.
            loop {
                match nix::fcntl::posix_fallocate(f, 0, total as i64) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r.map_err(|e| file_err("reserve space for", &path, e.into()))?,
                }
            }
        }
        let seg = if bytes == 0 {
            Arc::new(Segment::create(SegmentKind::Array, 0, dtype.size() as u32, 0)?)
        } else {
            let file = f.try_clone().map_err(|e| file_err("open", &path, e))?;
            Arc::new(Segment::map_file(file, head.len(), bytes, true)?)
        };
        Ok(NpyOutput { seg, tmp: Some(tmp), path, dtype, len })
    }

    /// Element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The final path (for a part, [`NpyOutput::open_part`], the temporary file's path).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The elements written so far, when `T` has the array's element size.
    ///
    /// # Errors
    ///
    /// [`crate::Error::TypeMismatch`] when the sizes differ.
    pub fn as_slice<T: Pod>(&mut self) -> Result<&[T]> {
        check_elem::<T>(self.dtype)?;
        // SAFETY: `&mut self` is held, so no map is writing the file (maps borrow the output
        // mutably and return only when no worker can touch it).
        let bytes = unsafe { self.seg.data(0, self.len * self.dtype.size()) }?;
        Ok(bytemuck::cast_slice(bytes))
    }

    /// The elements, mutably, to fill the file from this process (as `shmpool gen` does).
    ///
    /// # Errors
    ///
    /// [`crate::Error::TypeMismatch`] when the sizes differ.
    pub fn as_mut_slice<T: Pod>(&mut self) -> Result<&mut [T]> {
        check_elem::<T>(self.dtype)?;
        // SAFETY: `&mut self` is held, so no map is using the file and no other reference
        // into it exists in this process.
        let bytes = unsafe { self.seg.data_mut(0, self.len * self.dtype.size()) }?;
        Ok(bytemuck::cast_slice_mut(bytes))
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Links the finished file under its final name (atomically replacing any file there,
    /// whose mode it keeps; a new file gets `0666 & ~umask`, as with `np.save`). For a part
    /// ([`NpyOutput::open_part`]) it only writes this process's changes back to the file
    /// (`msync`): the creator publishes.
    ///
    /// # Errors
    ///
    /// [`crate::Error::File`] when the link or rename fails; nothing is left on disk then.
    /// For a part, [`crate::Error::Os`] when the write-back fails.
    pub fn commit(mut self) -> Result<()> {
        match self.tmp.take() {
            Some(tmp) => tmp.publish(&self.path),
            None => self.seg.flush(),
        }
    }
}
