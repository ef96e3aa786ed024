"""The pool's mailbox (a private temporary directory; see ``worker_helpers.py`` in the
extension's sources): kernels that return a value, and the directory's removal."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np

from . import _native


def _call_returning(pool: Any, f: Callable[[np.ndarray], object], batch: Any) -> Any:
    """``f(batch)`` in a worker, its result back through the mailbox (pickled)."""
    import uuid

    helpers = _native._worker_helpers()
    box = pool._mailbox()
    token = uuid.uuid4().hex
    src, dst = os.path.join(box, f"batch-{token}.npy"), os.path.join(box, f"result-{token}")
    np.save(src, np.asarray(batch))
    try:
        pool.map(helpers.Returning(f, src, dst), np.zeros(1, np.uint8))
        return helpers.take(dst)
    finally:
        for path in (src, dst):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _remove_box(box: list[Optional[str]]) -> None:
    """Removes a pool's mailbox directory, if it made one."""
    import shutil

    path, box[0] = box[0], None
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
