"""Kernels for test_review.py: importable by name, so workers (fresh interpreters) find them."""

from __future__ import annotations

import numpy as np


def raise_key_error(x: np.ndarray, out: np.ndarray) -> None:
    raise KeyError("k")


def raise_multiline(x: np.ndarray, out: np.ndarray) -> None:
    raise ValueError("line1\nline2")


def copy(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = x


def hang(x: np.ndarray, out: np.ndarray) -> None:
    import time

    time.sleep(3600)


def raise_file_not_found(x: np.ndarray, out: np.ndarray) -> None:
    raise FileNotFoundError(2, "No such file or directory", "/nonexistent")


def hang_if_big(x: np.ndarray, out: np.ndarray) -> None:
    """Copies a batch of up to 5 elements; never returns on a larger one."""
    import time

    if x.size > 5:
        time.sleep(3600)
    out[:] = x
