"""Shared fixtures: every test must leave no child process and no shared-memory segment of
this process behind (other engineers' tests may own others at the same time: only ours count)."""

from __future__ import annotations

import os
import signal

import pytest

# The Ctrl-C tests send SIGINT to this process. A shell that starts pytest as a background job
# (a non-interactive `cmd &`, some CI runners) leaves SIGINT ignored, and Python then installs no
# handler: those tests would hang. Put Python's own handler back, as an interactive run has it.
signal.signal(signal.SIGINT, signal.default_int_handler)


def children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return kids


def our_segments() -> list[str]:
    prefix = f"shmpool_{os.getpid()}_"
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


@pytest.fixture(autouse=True, scope="module")
def no_leaks():
    """After each test module: the module-wide pool is dropped, then no child and no segment of ours."""
    yield
    import shmpool

    shmpool._drop_default()
    assert our_segments() == []
    left = children(os.getpid())
    # Workers are reaped by terminate(); a fork server (if one was started) lives as long as the
    # process, by design, and is not a leak.
    server = _fork_server_pids(left)
    assert left - server == set(), f"child processes left behind: {sorted(left - server)}"


def _fork_server_pids(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except FileNotFoundError:
            continue
        if b"_fork_server" in cmd or b"_worker_main" in cmd:
            out.add(p)
    return out
