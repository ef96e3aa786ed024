//! Memory-mapped `.npy` files: [`NpyArray`] (read in place, like `np.load(mmap_mode='r')`) and
//! [`NpyOutput`] (written in place, renamed into its final name only when complete).

use std::sync::Arc;

use bytemuck::Pod;
use npyz::WriterBuilder;

use crate::dtype::Dtype;
use crate::error::Result;
use crate::shm::{Segment, SegmentKind};

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

fn bad(path: &std::path::Path, reason: impl Into<String>) -> crate::Error {
    crate::Error::BadNpy { path: path.display().to_string(), reason: reason.into() }
}

fn file_err(op: &'static str, path: &std::path::Path, source: std::io::Error) -> crate::Error {
    crate::Error::File { op, path: path.display().to_string(), source }
}

/// A `.npy` file mapped read-only: its elements are read in place by the workers, never
/// copied or loaded. Little-endian, C-order (or 1-D) arrays of the types in [`Dtype`].
///
/// Like `np.load(path, mmap_mode='r')`. Nothing may modify the file while it is mapped.
pub struct NpyArray {
    seg: Arc<Segment>,
    dtype: Dtype,
    shape: Vec<u64>,
    len: usize,
}

impl NpyArray {
    /// Opens and maps `path`, checking its header against the file's size.
    ///
    /// # Errors
    ///
    /// [`crate::Error::File`] when it cannot be opened; [`crate::Error::BadNpy`] naming the
    /// problem for anything that is not a supported `.npy` array (bad magic, truncated header,
    /// unsupported or big-endian dtype, Fortran order, data shorter than the header says).
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<NpyArray> {
        use std::io::Seek;
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| file_err("open", path, e))?;
        let size = file.metadata().map_err(|e| file_err("stat", path, e))?.len();
        let header =
            npyz::NpyHeader::from_reader(&mut file).map_err(|e| bad(path, format!("not a valid .npy file ({e})")))?;
        let data_off = file.stream_position().map_err(|e| file_err("read", path, e))? as usize;
        let dtype = match header.dtype() {
            npyz::DType::Plain(ts) => {
                let descr = ts.to_string();
                Dtype::from_descr(&descr).ok_or_else(|| {
                    let why = if descr.starts_with('>') {
                        "big-endian data is not supported"
                    } else {
                        "supported: int8..int64, uint8..uint64, float32, float64"
                    };
                    bad(path, format!("unsupported dtype '{descr}' ({why})"))
                })?
            }
            npyz::DType::Record(_) => return Err(bad(path, "unsupported dtype: structured (record) arrays")),
            npyz::DType::Array(..) => return Err(bad(path, "unsupported dtype: sub-array")),
        };
        let shape = header.shape().to_vec();
        if header.order() == npyz::Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
            return Err(bad(path, "Fortran-order arrays are not supported (save with np.ascontiguousarray)"));
        }
        let len =
            shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad(path, "shape overflows"))? as usize;
        let bytes = len.checked_mul(dtype.size()).ok_or_else(|| bad(path, "shape overflows"))?;
        if (data_off + bytes) as u64 > size {
            return Err(bad(path, format!(
                "data shorter than the header says: {len} {dtype} elements need {bytes} bytes after a {data_off}-byte header, the file has {}",
                size.saturating_sub(data_off as u64)
            )));
        }
        if data_off % dtype.size() != 0 {
            return Err(bad(path, format!("data offset {data_off} is not aligned to {} bytes", dtype.size())));
        }
        let seg = if size == 0 || bytes == 0 {
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
        // and the type-level contract says nothing modifies the file while it is mapped.
        let bytes = unsafe { self.seg.data(0, self.len * self.dtype.size()) }?;
        Ok(bytemuck::cast_slice(bytes))
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }
}

/// A `.npy` file being written: created as a temporary file beside its final path, its size
/// reserved up front, written in place by the workers, and renamed into place only by
/// [`NpyOutput::commit`]. Dropped without a commit, it is removed: nothing half-written ever
/// appears under the final name.
pub struct NpyOutput {
    seg: Arc<Segment>,
    tmp: Option<tempfile::NamedTempFile>,
    path: std::path::PathBuf,
    dtype: Dtype,
    len: usize,
}

impl NpyOutput {
    /// Creates the temporary file for `path` with a header for `dtype` and `shape` and
    /// reserves its full size.
    ///
    /// # Errors
    ///
    /// [`crate::Error::File`] when the directory is missing or not writable, or the disk is full.
    pub fn create(path: impl AsRef<std::path::Path>, dtype: Dtype, shape: &[u64]) -> Result<NpyOutput> {
        use std::io::{Seek, Write};
        let path = path.as_ref().to_path_buf();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        if path.is_dir() {
            return Err(file_err("write to", &path, std::io::Error::other("it is a directory")));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| file_err("create a file in", &dir, e))?;
        let len = shape.iter().product::<u64>() as usize;
        let descr: npyz::TypeStr = dtype.descr().parse().expect("valid numpy type string");
        npyz::WriteOptions::new_header_only()
            .dtype(npyz::DType::Plain(descr))
            .shape(shape)
            .writer(tmp.as_file_mut())
            .write_header_only()
            .map_err(|e| file_err("write", &dir, e))?;
        let data_off = tmp.as_file_mut().stream_position().map_err(|e| file_err("write", tmp.path(), e))? as usize;
        tmp.as_file_mut().flush().map_err(|e| file_err("write", tmp.path(), e))?;
        let bytes = len * dtype.size();
        let total = (data_off + bytes) as u64;
        tmp.as_file().set_len(total).map_err(|e| file_err("size", tmp.path(), e))?;
        if bytes > 0 {
            nix::fcntl::posix_fallocate(tmp.as_file(), 0, total as i64)
                .map_err(|e| file_err("reserve space for", &path, e.into()))?;
        }
        let file = tmp.as_file().try_clone().map_err(|e| file_err("open", tmp.path(), e))?;
        let seg = if bytes == 0 {
            Arc::new(Segment::create(SegmentKind::Array, 0, dtype.size() as u32, 0)?)
        } else {
            Arc::new(Segment::map_file(file, data_off, bytes, true)?)
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

    /// The final path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The temporary path the data is written to until the commit.
    pub fn temp_path(&self) -> Option<&std::path::Path> {
        self.tmp.as_ref().map(|t| t.path())
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

    /// Renames the finished file into its final place (atomically, same directory).
    ///
    /// # Errors
    ///
    /// [`crate::Error::File`] when the rename fails; the temporary file is then removed.
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("commit runs once");
        // Temporary files are created 0600; a finished dataset gets the usual 0644.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
        tmp.persist(&self.path).map_err(|e| file_err("rename into", &self.path, e.error))?;
        Ok(())
    }
}
