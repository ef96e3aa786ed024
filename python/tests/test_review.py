"""Hostile review of issue 16's promises: each test is one break, named in its docstring."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import review_kernels as rk
import shmpool

HERE = os.path.dirname(os.path.abspath(__file__))


def run_py(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (this venv, tests dir on sys.path), bounded by ``timeout``."""
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_key_error_keeps_its_message():
    """Promise: an exception raised by the callable arrives in the parent 'of the same type and
    message'. KeyError('k') arrives as KeyError whose str is "\"'k'\"" (its repr re-quoted),
    not "'k'": _rebuild calls KeyError(str(e)) instead of rebuilding from the args."""
    with shmpool.Pool(1) as pool:
        with pytest.raises(KeyError) as info:
            pool.map(rk.raise_key_error, np.arange(10.0))
    assert info.value.args == ("k",)
    assert str(info.value) == str(KeyError("k"))


def test_multiline_message_is_kept():
    """Promise: 'same type and message'. ValueError('line1\\nline2') arrives as ValueError('line1'):
    _rebuild keeps only the first line of the worker's text as the message."""
    with shmpool.Pool(1) as pool:
        with pytest.raises(ValueError) as info:
            pool.map(rk.raise_multiline, np.arange(10.0))
    assert str(info.value) == "line1\nline2"
