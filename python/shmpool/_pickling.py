"""What crosses to and from the workers: the callable (pickled by reference, or by value with
cloudpickle) and, back, the exception it raised (rebuilt from a worker's failure message)."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import numpy as np

from ._errors import KernelError

def _payload(f: Callable[..., object], in_dt: np.dtype, out_dt: np.dtype, init: bytes = b"") -> bytes:
    """What a worker needs to call ``f``: this process's ``sys.path`` (for imports), the dtypes,
    ``f`` pickled by reference (or by value with cloudpickle, when installed and needed) and the
    pool's pickled ``(initializer, initargs)`` (empty: none)."""
    import pickle

    fb = _pickle_callable(f)
    return pickle.dumps(([p for p in sys.path if isinstance(p, str)], in_dt.str, out_dt.str, fb, init))


def _pickle_callable(f: Any) -> bytes:
    """``f`` (a callable, or a tuple holding callables) pickled by reference, or by value with
    cloudpickle where ``pickle`` cannot (lambdas, closures, functions of ``__main__``)."""
    import pickle

    try:
        fb = pickle.dumps(f)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        try:
            import cloudpickle  # type: ignore[import-not-found]
        except ImportError:
            raise TypeError(
                f"cannot send {f!r} to the workers: it is not importable by name ({e}); "
                "define it at the top level of a module, or install cloudpickle"
            ) from None
        fb = cloudpickle.dumps(f)
    else:
        mod = getattr(f[0] if isinstance(f, tuple) and f else f, "__module__", None)
        if mod == "__main__":
            try:
                import cloudpickle  # type: ignore[import-not-found]

                fb = cloudpickle.dumps(f)
            except ImportError:
                raise TypeError(
                    f"cannot send {f!r} to the workers: functions of __main__ are not importable "
                    "there; define it in a module, or install cloudpickle"
                ) from None
    return fb


# A worker's failure message (python/src/failure.rs): an optional first line, _PICKLED and the
# base85 pickle of the exception; else "Type: message"; then _SEP and the innermost frames.
_PICKLED = "\x01"
_SEP = "\x02"


def _unpickle_exception(line: str) -> tuple[Optional[BaseException], str]:
    """The exception a worker pickled into ``line`` (after its marker), or None and why it does
    not unpickle here (its class is not importable in this process...)."""
    import base64
    import pickle

    try:
        err = pickle.loads(base64.b85decode(line[len(_PICKLED) :]))
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    if not isinstance(err, Exception):
        return None, f"not an Exception: {type(err).__name__}"
    return err, ""


def _key(text: str) -> object:
    """The key of a ``KeyError`` from its ``str`` (the key's repr), when it is a literal."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _rebuild(e: KernelError) -> BaseException:
    """The exception a callable raised in a worker, rebuilt: the same type and args when it
    pickles (as ``multiprocessing`` sends exceptions back), else a built-in exception type with
    its message, else :class:`KernelError`; each carries ``range`` and the worker's traceback
    (``worker_traceback``, truncated: the engine carries 192 bytes of failure message)."""
    import builtins

    detail = getattr(e, "detail", str(e))
    rng = getattr(e, "range", None)
    err: Optional[BaseException] = None
    head, _, tb = detail.partition(_SEP)
    if head.startswith(_PICKLED):
        err, why = _unpickle_exception(head.rstrip("\n"))
        head = f"an exception that does not unpickle in this process ({why})"
    else:  # type and message as text (the message may be truncated, with no frames after it)
        name, colon, msg = head.partition(": ")
        cls = getattr(builtins, name, None) if colon else None
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                err = cls(_key(msg) if issubclass(cls, KeyError) else msg)
            except Exception:
                err = None
    detail = f"{head}\n{tb}"
    if err is None:
        err = KernelError(f"{head} (in the kernel, on index range {rng})", range=rng, detail=detail)
    try:
        err.range = rng  # type: ignore[attr-defined]
        err.worker_traceback = tb  # type: ignore[attr-defined]
    except AttributeError:
        pass  # an exception type that takes no attributes
    return err
