"""Kernels for test_review2.py: importable by name, so workers (fresh interpreters) find them."""

from __future__ import annotations

import numpy as np


class TwoArgError(Exception):
    """An exception whose constructor needs two arguments: it pickles, but does not unpickle."""

    def __init__(self, a: str, b: int) -> None:
        super().__init__(f"{a} happened {b} times")


class LongCustomError(Exception):
    """An importable exception type with an ordinary, 150-character message."""


def raise_two_arg(x: np.ndarray, out: np.ndarray) -> None:
    raise TwoArgError("disk failure", 3)


def raise_long_custom(x: np.ndarray, out: np.ndarray) -> None:
    raise LongCustomError("sensor 17 out of range: " + "v" * 126)


def copy(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = x


def doubled(batch: np.ndarray) -> np.ndarray:
    """A kernel returning an array, as the issue's `pool.imap(kernel_returning_array, batches)`."""
    return batch * 2


def fail_deep(x: np.ndarray, out: np.ndarray) -> None:
    _inner_helper(x)


def _inner_helper(x: np.ndarray) -> None:
    raise ValueError("bad value in chunk")


def raise_system_exit(x: np.ndarray, out: np.ndarray) -> None:
    code = 2 + 2
    raise SystemExit(f"kernel gave up with code {code}")
