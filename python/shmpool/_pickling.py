"""What crosses to and from the workers: the callable (pickled by reference, or by value with
cloudpickle) and, back, the exception it raised (rebuilt from a worker's failure message)."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import numpy as np

from ._errors import KernelError

def _payload(f: Callable[..., object], in_dt: np.dtype, out_dt: np.dtype, init: bytes = b"", box: Optional[str] = None) -> bytes:
    """What a worker needs to call ``f``: this process's ``sys.path`` (for imports), the dtypes,
    ``f`` pickled by reference (or by value with cloudpickle, when installed and needed), the
    pool's pickled ``(initializer, initargs)`` (empty: none) and the pool's mailbox directory.
    When that does not fit a kernel's parameter block (large initargs, a long ``sys.path``), it
    is written once to a file of the mailbox (named by its hash) and the payload is that path."""
    import hashlib
    import os
    import pickle

    from . import _native

    fb = _pickle_callable(f)
    body = pickle.dumps(([p for p in sys.path if isinstance(p, str)], in_dt.str, out_dt.str, fb, init, box))
    if len(body) <= _native.PAYLOAD_ROOM or box is None:
        return body
    path = os.path.join(box, "payload-" + hashlib.sha256(body).hexdigest())
    if not os.path.exists(path):
        with open(path + ".part", "wb") as fh:
            fh.write(body)
        os.replace(path + ".part", path)
    return pickle.dumps(path)


def _returns_value(f: Callable[..., object]) -> bool:
    """Whether ``f`` takes one positional argument but not two: a kernel ``f(batch) ->
    result`` (as ``multiprocessing``'s imap calls), not ``f(chunk_in, chunk_out)``."""
    import inspect

    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(None, None)
        return False
    except TypeError:
        pass
    try:
        sig.bind(None)
        return True
    except TypeError:
        return False


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
        # A reference into __main__ anywhere (the function, a partial's function, an instance's
        # class, an initializer): the workers' __main__ is not the script's.
        if b"__main__" in fb:
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


class RemoteTraceback(Exception):
    """The worker's traceback text, attached as the ``__cause__`` of an exception rebuilt from a
    worker (as ``multiprocessing`` does), so that an uncaught one shows the worker's frames."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


_MAILBOX = "\x03"


def _from_mailbox(head: str) -> Optional[tuple[str, str, str, Optional[bytes]]]:
    """The (type name, message, traceback, pickle) a worker wrote to the mailbox file named in
    ``head``, which is deleted; None if it cannot be read."""
    from . import _native

    path = head[len(_MAILBOX) :].partition("\n")[0]
    try:
        rec = _native._worker_helpers().take(path)
    except Exception:
        return None
    return rec if isinstance(rec, tuple) and len(rec) == 4 else None


def _builtin(name: str, msg: str) -> Optional[BaseException]:
    """A built-in exception type named ``name`` rebuilt from its message, or None."""
    import builtins

    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(_key(msg) if issubclass(cls, KeyError) else msg)
        except Exception:
            return None
    return None


def _rebuild(e: KernelError) -> BaseException:
    """The exception a callable raised in a worker, rebuilt: the same type and args when it
    pickles (as ``multiprocessing`` sends exceptions back), else a built-in exception type with
    its message, else :class:`KernelError` with the type name and message; each carries
    ``range``, the worker's traceback (``worker_traceback``) and, as ``__cause__``, a
    :class:`RemoteTraceback` showing it."""
    import pickle

    detail = getattr(e, "detail", str(e))
    rng = getattr(e, "range", None)
    err: Optional[BaseException] = None
    head, _, tb = detail.partition(_SEP)
    rec = _from_mailbox(head) if head.startswith(_MAILBOX) else None
    if rec is not None:
        name, msg, tb, blob = rec
        head = f"{name}: {msg}"
        if blob is not None:
            try:
                got = pickle.loads(blob)
                err = got if isinstance(got, Exception) else None
            except Exception:
                err = None
        if err is None:
            err = _builtin(name, msg)
    elif head.startswith(_MAILBOX):
        head = head.partition("\n")[2]
        name, colon, msg = head.partition(": ")
        err = _builtin(name, msg) if colon else None
    elif head.startswith(_PICKLED):
        err, why = _unpickle_exception(head.rstrip("\n"))
        head = f"an exception that does not unpickle in this process ({why})"
    else:  # type and message as text (the message may be truncated, with no frames after it)
        name, colon, msg = head.partition(": ")
        err = _builtin(name, msg) if colon else None
    detail = f"{head}\n{tb}"
    if err is None:
        err = KernelError(f"{head} (in the kernel, on index range {rng})", range=rng, detail=detail)
    try:
        err.range = rng  # type: ignore[attr-defined]
        err.worker_traceback = tb  # type: ignore[attr-defined]
    except AttributeError:
        pass  # an exception type that takes no attributes
    if tb:
        err.__cause__ = RemoteTraceback(tb)
    return err
