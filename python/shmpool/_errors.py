"""The exceptions shmpool raises (the native module builds them by name)."""

from __future__ import annotations

__all__ = [
    "ShmpoolError",
    "WorkerCrashed",
    "KernelError",
    "ChunkTimeout",
    "ExpressionError",
    "ExpressionOverflowError",
    "ExpressionTypeError",
    "SharedMemoryFull",
    "PoolClosed",
]


class ShmpoolError(Exception):
    """Base class of shmpool's errors; keyword arguments become attributes."""

    def __init__(self, message: str, **attrs: object) -> None:
        super().__init__(message)
        for k, v in attrs.items():
            setattr(self, k, v)


class WorkerCrashed(ShmpoolError):
    """A chunk killed ``attempts`` workers in a row.

    ``range`` is the chunk's ``(start, stop)`` flat index range, ``signal`` the signal that
    killed the last worker (0: it exited).
    """

    range: tuple[int, int]
    signal: int
    attempts: int


class KernelError(ShmpoolError):
    """A kernel failed on the chunk ``range`` (``(start, stop)``); ``detail`` is its message."""

    range: tuple[int, int]
    detail: str


class ChunkTimeout(ShmpoolError, TimeoutError):
    """A chunk ran longer than the pool's ``chunk_timeout``; its worker was killed and replaced."""

    range: tuple[int, int]
    limit: float


class ExpressionError(ShmpoolError, ValueError):
    """An expression did not parse or does not type: ``position`` is the 1-based column."""

    position: int
    detail: str


class ExpressionOverflowError(ExpressionError, OverflowError):
    """A Python integer in the expression is out of the array type's range (``x + 300`` over
    int8): numpy's ``OverflowError``."""


class ExpressionTypeError(ExpressionError, TypeError):
    """An operator or function the operands' types do not support (``-x`` over bool): numpy's
    ``TypeError``."""


class SharedMemoryFull(ShmpoolError, MemoryError):
    """``/dev/shm`` cannot hold the segment; nothing was created."""


class PoolClosed(ShmpoolError, ValueError):
    """The pool was closed or terminated (``multiprocessing`` raises ``ValueError`` here too)."""
