//! Shared arrays: a `SharedVec` that numpy views through `__array_interface__`.

use super::*;

/// A numeric array in a shared-memory segment (a `SharedVec`), which numpy views through
/// `__array_interface__`: `np.asarray(owner)` is an array over the segment whose `base` keeps the
/// owner (and so the segment) alive. The segment is mapped once and never moves, so the data
/// pointer is stable; workers read and write it in place.
#[pyclass(module = "shmpool._native")]
pub(crate) struct SharedArray {
    pub(crate) store: Store,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
}

impl SharedArray {
    pub(crate) fn ptr_len(&self) -> (usize, usize) {
        macro_rules! pl {
            ($v:expr) => {
                ($v.as_ptr() as usize, std::mem::size_of_val(&$v[..]))
            };
        }
        match &self.store {
            Store::U8(v) => pl!(v),
            Store::I8(v) => pl!(v),
            Store::I16(v) => pl!(v),
            Store::I32(v) => pl!(v),
            Store::I64(v) => pl!(v),
            Store::U16(v) => pl!(v),
            Store::U32(v) => pl!(v),
            Store::U64(v) => pl!(v),
            Store::F16(v) => pl!(v),
            Store::F32(v) => pl!(v),
            Store::F64(v) => pl!(v),
        }
    }

    fn create(shape: Vec<usize>, dtype: Dtype) -> shmpool::Result<SharedArray> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(shmpool::Error::TooLarge { count: u64::MAX, elem_size: dtype.size() as u64 })?;
        let store = with_elem!(dtype, T => SharedVec::<T>::zeroed(n).map(T::wrap))?;
        Ok(SharedArray { store, dtype, shape })
    }
}

#[pymethods]
impl SharedArray {
    /// A zeroed shared array of `shape` and `dtype` (numpy's spelling).
    #[new]
    fn new(py: Python<'_>, shape: Vec<usize>, dtype: &str) -> PyResult<SharedArray> {
        let dtype = dtype_arg(dtype)?;
        py.detach(|| SharedArray::create(shape, dtype)).map_err(|e| to_py(py, e))
    }

    /// numpy's array interface (version 3): shape, type string and the data pointer.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("typestr", self.dtype.descr())?;
        d.set_item("data", (self.ptr_len().0, false))?;
        d.set_item("version", 3)?;
        Ok(d)
    }

    /// Address of the first element.
    #[getter]
    fn ptr(&self) -> usize {
        self.ptr_len().0
    }

    /// Size in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.ptr_len().1
    }

    /// numpy's name of the element type.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.dtype.name()
    }
}
