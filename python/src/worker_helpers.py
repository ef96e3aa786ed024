"""shmpool's side channel between the workers and the parent (module ``_shmpool_worker``).

Compiled from the extension (``_native._worker_helpers()``) in the parent and in every worker,
where no ``shmpool`` package is imported, and registered in ``sys.modules`` so that ``Returning``
pickles by reference. A pool's mailbox is a private temporary directory: a worker writes there
what does not fit the engine's 192-byte failure message (the exception, its full traceback) and
what a kernel returns; the parent reads each file once and deletes it.
"""

import itertools
import os
import pickle

_count = itertools.count()


def _write(path, obj):
    """Pickles ``obj`` to ``path``, which appears only complete."""
    with open(path + ".part", "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".part", path)


def take(path):
    """Unpickles the file ``path`` and deletes it."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    finally:
        os.unlink(path)


def report(e, box, tb=None):
    """Writes the exception ``e`` to a new file of the mailbox ``box`` and returns its path: the
    qualified type name, ``str(e)``, the formatted traceback and ``e`` pickled (by value with
    cloudpickle when it does not pickle by reference: a class of the script's ``__main__``),
    or None when it pickles neither way. ``tb``: the traceback, if not ``e.__traceback__``."""
    import traceback

    ty = type(e)
    mod = getattr(ty, "__module__", None)
    name = ty.__qualname__ if mod in (None, "builtins") else f"{mod}.{ty.__qualname__}"
    try:
        msg = str(e)
    except Exception:
        msg = "<str() of the exception failed>"
    tb = "".join(traceback.format_exception(ty, e, tb if tb is not None else e.__traceback__))
    try:
        blob = pickle.dumps(e)
    except Exception:
        try:
            import cloudpickle

            blob = cloudpickle.dumps(e)
        except Exception:
            blob = None
    path = os.path.join(box, f"exc-{os.getpid()}-{next(_count)}")
    _write(path, (name, msg, tb, blob))
    return path


def load_payload(path):
    """A Python kernel's payload that did not fit its parameter block, from the file ``path``."""
    with open(path, "rb") as f:
        return f.read()


class Returning:
    """A kernel ``f(batch) -> result`` run as a chunk kernel (over a one-element dummy array):
    calls ``f`` on the batch saved at ``src`` (``.npy``) and pickles its result to ``dst``."""

    def __init__(self, f, src, dst):
        self.f = f
        self.src = src
        self.dst = dst

    def __call__(self, chunk_in, chunk_out):
        import numpy as np

        batch = np.load(self.src)
        _write(self.dst, self.f(batch))
