"""Running code in a fresh interpreter for the tests that need a process of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def run_py(code: str, timeout: float = 60, cwd: Optional[str] = None) -> tuple[Optional[int], str]:
    """Runs ``code`` in a fresh interpreter (this venv, tests dir on sys.path) in its own process
    group; returns (exit code, or None if it outlived ``timeout``, and its output). The whole
    group is killed afterwards, so a hung run leaves nothing behind."""
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: Optional[int] = proc.returncode
    except subprocess.TimeoutExpired:
        rc = None
        out = ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if rc is None:
            out, _ = proc.communicate()
    return rc, out
