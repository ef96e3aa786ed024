"""Kernels for the map tests: importable by name, so workers (fresh interpreters) find them."""

from __future__ import annotations

import os
import signal
import time

import numpy as np


def w1(x: np.ndarray, out: np.ndarray) -> None:
    np.multiply(np.sqrt(x), 1.5, out=out)
    out += 0.25


def square_int(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = x.astype(np.int64) * x


def raise_value_error(x: np.ndarray, out: np.ndarray) -> None:
    if x.size and x[0] >= 0:
        raise ValueError(f"bad chunk starting with {x[0]}")


class CustomError(Exception):
    pass


def raise_custom(x: np.ndarray, out: np.ndarray) -> None:
    raise CustomError("not a builtin")


class Unpicklable(Exception):
    """An exception that does not pickle (it holds a lock)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        import threading

        self.lock = threading.Lock()


def raise_unpicklable(x: np.ndarray, out: np.ndarray) -> None:
    raise Unpicklable("holds a lock")


def kill_once(x: np.ndarray, out: np.ndarray) -> None:
    """Kills its worker the first time it runs (marker file in SHMPOOL_TEST_MARKER), then works."""
    marker = os.environ["SHMPOOL_TEST_MARKER"]
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        out[:] = x * 2
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def always_kill(x: np.ndarray, out: np.ndarray) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hang(x: np.ndarray, out: np.ndarray) -> None:
    time.sleep(3600)


kept: list[np.ndarray] = []


def keep_view(x: np.ndarray, out: np.ndarray) -> None:
    kept.append(x)


def segfault_once(x: np.ndarray, out: np.ndarray) -> None:
    """A crash in C code (a NULL read through ctypes) the first time, then works."""
    import ctypes

    marker = os.environ["SHMPOOL_TEST_MARKER"]
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        out[:] = x + 1
        return
    os.close(fd)
    ctypes.string_at(0)


def always_segfault(x: np.ndarray, out: np.ndarray) -> None:
    import ctypes

    ctypes.string_at(0)


OFFSET = 0.0


def set_offset(k: float) -> None:
    global OFFSET
    OFFSET = k


def add_offset(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = x + OFFSET


def negate_bool(x: np.ndarray, out: np.ndarray) -> None:
    np.logical_not(x, out=out)


STATE = 0.0
"""Set by the test in the parent after import: a fork worker sees it, a fresh interpreter not."""

AT_FORK_CHILD = 0
"""Counts `os.register_at_fork(after_in_child=...)` calls in this process (see `test_fork`)."""


def _at_fork_child() -> None:
    global AT_FORK_CHILD
    AT_FORK_CHILD += 1


def add_state(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = x + STATE


def add_at_fork_count(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = x + AT_FORK_CHILD


def kill_once_add_state(x: np.ndarray, out: np.ndarray) -> None:
    """`kill_once`, then `add_state` (the replacement was forked with the parent's state)."""
    marker = os.environ["SHMPOOL_TEST_MARKER"]
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        out[:] = x + STATE
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def raise_file_not_found(x: np.ndarray, out: np.ndarray) -> None:
    raise FileNotFoundError(2, "No such file or directory", "/nonexistent")


def raise_long_message(x: np.ndarray, out: np.ndarray) -> None:
    raise ValueError("long " * 100)
