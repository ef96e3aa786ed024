"""``.npy`` files the engine does not map in place, and progress lines for ``map_file``."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from ._arrays import _dtype


def _needs_reading(path: str) -> bool:
    """Whether the ``.npy`` file ``path`` is Fortran-ordered or big-endian, which the engine
    does not map in place (False when its header does not parse: the engine reports that)."""
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as f:
            version = npy.read_magic(f)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            _, fortran, dt = read(f)
    except (OSError, ValueError):
        return False
    return bool(fortran) or (dt.byteorder == ">" and dt.itemsize > 1)


def _map_file_in_memory(
    pool: Any, src: str, dst: str, expr: str, dtype: Any, cb: Optional[Callable[[int, int], object]]
) -> np.dtype:
    """``map_file`` of a Fortran-ordered or big-endian ``.npy`` (as ``np.save`` writes a
    transposed or ``'>f8'`` array): read into memory in C order and native byte order (one
    copy), evaluated, and saved under ``dst`` once complete (``i`` is the C-order flat index,
    as numpy's)."""
    import tempfile

    x = np.load(src, mmap_mode="r")
    x = np.ascontiguousarray(x, dtype=_dtype(x.dtype))
    r = np.asarray(pool.evaluate(expr, x=x))
    if dtype is not None:
        r = r.astype(_dtype(dtype))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)) or ".", suffix=".npy.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, r)
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise
    if cb is not None:
        cb(x.size, x.size)
    return r.dtype


class _ProgressLines:
    """Progress on stderr: percent, elements/s and ETA, at most once a second, and at 100%."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 1.0:
            return
        self.last = now
        secs = max(now - self.start, 1e-9)
        rate = done / secs
        pct = 100.0 if total == 0 else done * 100.0 / total
        eta = (total - done) / rate if rate > 0 else float("nan")
        sys.stderr.write(f"progress: {pct:5.1f}% {done}/{total} elements, {rate / 1e6:.1f} Melem/s, ETA {eta:.0f} s\n")
