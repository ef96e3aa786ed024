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


def raise_system_exit(x: np.ndarray, out: np.ndarray) -> None:
    raise SystemExit("kernel asked to exit with code 3")


def copy(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = x


def nested_evaluate(x: np.ndarray, out: np.ndarray) -> None:
    import shmpool

    out[:] = shmpool.evaluate("x * 2", x=np.array(x))


def segfault_once(x: np.ndarray, out: np.ndarray) -> None:
    """Copies; the first call that finds no marker file (path in $R16B_MARK) segfaults instead."""
    import ctypes
    import os

    mark = os.environ["R16B_MARK"]
    if x.size and not os.path.exists(mark):
        open(mark, "w").close()
        ctypes.string_at(0)
    out[:] = x


def exit0_once(x: np.ndarray, out: np.ndarray) -> None:
    """Copies; the first call that finds no marker file calls os._exit(0) instead."""
    import os

    mark = os.environ["R16B_MARK"]
    if x.size and not os.path.exists(mark):
        open(mark, "w").close()
        os._exit(0)
    out[:] = x


def raise_keyboard_interrupt(x: np.ndarray, out: np.ndarray) -> None:
    raise KeyboardInterrupt


def gen_then_raise():
    yield np.arange(3.0)
    raise RuntimeError("producer failed")


def doubled(batch: np.ndarray) -> np.ndarray:
    """A kernel returning an array, as the issue's `pool.imap(kernel_returning_array, batches)`."""
    return batch * 2


def raise_accented(x: np.ndarray, out: np.ndarray) -> None:
    raise ValueError("é" * 200)


def raise_with_separator(x: np.ndarray, out: np.ndarray) -> None:
    raise RuntimeError("first\x02second")


def fail_deep(x: np.ndarray, out: np.ndarray) -> None:
    _inner_helper(x)


def _inner_helper(x: np.ndarray) -> None:
    raise ValueError("bad value in chunk")
