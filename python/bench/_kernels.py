"""Kernels of the W1 benchmark, importable by name (workers of every pool kind import them)."""

from __future__ import annotations

import numpy as np
from multiprocessing import shared_memory


def w1_chunk(x: np.ndarray, out: np.ndarray) -> None:
    """shmpool.Pool.map kernel: W1 on a chunk, written in place."""
    np.sqrt(x, out=out)
    out *= 1.5
    out += 0.25


def w1_return(x: np.ndarray) -> np.ndarray:
    """multiprocessing / executor / joblib kernel: W1 on a pickled chunk, pickled back."""
    return np.sqrt(x) * 1.5 + 0.25


def w1_shm(args: tuple[str, str, int, int, int]) -> None:
    """Hand-written SharedMemory pool kernel: attach both blocks by name, map [lo, hi) in place."""
    in_name, out_name, n, lo, hi = args
    a = shared_memory.SharedMemory(name=in_name)
    b = shared_memory.SharedMemory(name=out_name)
    try:
        x = np.ndarray((n,), np.float64, buffer=a.buf)
        y = np.ndarray((n,), np.float64, buffer=b.buf)
        w1_chunk(x[lo:hi], y[lo:hi])
        del x, y
    finally:
        a.close()
        b.close()


def noop(x: np.ndarray) -> np.ndarray:
    return x
