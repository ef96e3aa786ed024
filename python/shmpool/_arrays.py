"""Arrays in shared memory (``zeros`` & co.) and the dtypes shmpool maps."""

from __future__ import annotations

import operator
from typing import Any, Optional, Union

import numpy as np

from . import _native

_SUPPORTED = tuple(
    np.dtype(n)
    for n in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    )
)

def _dtype(dtype: Any) -> np.dtype:
    """The supported, native-order numpy dtype ``dtype`` names."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">" and dt.itemsize > 1:
        dt = dt.newbyteorder("=")
    if dt not in _SUPPORTED:
        raise TypeError(
            f"shmpool does not support dtype {dt}: use bool, int8..int64, uint8..uint64, "
            "float16, float32 or float64"
        )
    return dt


# --------------------------------------------------------------------------------------------
# shared arrays


def zeros(shape: Union[int, tuple[int, ...]], dtype: Any = float, order: str = "C") -> np.ndarray:
    """A zeroed numpy array in shared memory: maps read and write it in place, without copies.

    The array's memory is a POSIX shared-memory segment whose name was unlinked at creation (it
    disappears with the last reference, even if the process is killed). Its data pointer never
    changes; views and slices of it are ordinary numpy views. As with any numpy array handed to
    code that releases the GIL, no other thread may write it while a map reads it, nor touch it
    while a map writes it.
    """
    asked = np.dtype(dtype)
    dt = _dtype(asked)
    # numpy's rule: dimensions are integers (operator.index), never floats truncated.
    shp = (operator.index(shape),) if np.ndim(shape) == 0 else tuple(operator.index(d) for d in shape)  # type: ignore[arg-type]
    if any(d < 0 for d in shp):
        raise ValueError(f"negative dimensions are not allowed: {shp}")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    if order == "F":
        # Fortran order: the transpose of the C-ordered array of the reversed shape (maps read
        # it through one copy, as any non-C-contiguous array).
        return zeros(shp[::-1], dtype).T
    owner = _native.SharedArray(list(shp), dt.name)
    a = np.asarray(owner)
    # A non-native byte order ('>i4') views the same zeroed bytes; maps convert it (a copy).
    return a if asked == dt else a.view(asked)


def zeros_like(a: Any, dtype: Any = None, order: str = "K") -> np.ndarray:
    """A zeroed shared array with the shape (and, unless given, the dtype) of ``a``; ``order``
    as numpy's (``"K"``, ``"A"``: Fortran order when ``a`` is Fortran- and not C-contiguous)."""
    a = np.asarray(a)
    if order in ("K", "A"):
        order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
    return zeros(a.shape, a.dtype if dtype is None else dtype, order=order)


def empty_like(a: Any, dtype: Any = None, order: str = "K") -> np.ndarray:
    """A shared array with the shape, dtype and layout of ``a``. Its elements are zero (fresh
    shared pages are zeroed by the kernel; there is no cheaper uninitialised variant)."""
    return zeros_like(a, dtype, order)


def _owner(a: np.ndarray) -> Optional[Any]:
    """The ``SharedArray`` behind ``a`` when ``a`` covers all of it, C-contiguous, with its dtype."""
    b = a.base
    while isinstance(b, np.ndarray):
        b = b.base
    if not isinstance(b, _native.SharedArray):
        return None
    if not a.flags.c_contiguous or a.dtype != np.dtype(b.dtype):
        return None
    if a.__array_interface__["data"][0] != b.ptr or a.nbytes != b.nbytes:
        return None
    return b


def is_shared(a: Any) -> bool:
    """Whether ``a`` is a whole shared array (made by :func:`zeros` & co.), which maps use in
    place without copying."""
    return isinstance(a, np.ndarray) and _owner(a) is not None
