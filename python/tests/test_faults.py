"""Faults seen from Python: Ctrl-C during a map, a terminated pool, and what is left behind."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import shmpool

from conftest import children, our_segments

# About 2e9 sin() calls over 10M elements: many seconds on two busy cores, so a Ctrl-C sent
# 0.3 s in always lands mid-map.
SLOW = " + ".join(f"sin(x + {k})" for k in range(200))


def interrupt_soon(delay: float = 0.3) -> threading.Thread:
    t = threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT))
    t.start()
    return t


def test_ctrl_c_mid_map_raises_keyboard_interrupt_and_stops_the_workers():
    """The map releases the GIL (the timer thread runs during it), Ctrl-C raises
    KeyboardInterrupt in the caller, the workers are killed and reaped."""
    x = shmpool.zeros(10_000_000)
    pool = shmpool.Pool(2)
    pids = pool.pids()
    t = interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        pool.evaluate(SLOW, x=x)
    t.join()
    for p in pids:
        assert not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split()[2] == "Z"
    with pytest.raises(shmpool.PoolClosed):
        pool.evaluate("x", x=np.ones(3))
    pool.join()
    assert not set(pids) & children(os.getpid())


def test_ctrl_c_during_module_evaluate_drops_the_default_pool():
    t = interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        shmpool.evaluate(SLOW, x=np.zeros(10_000_000))
    t.join()
    # The next call builds a fresh pool.
    np.testing.assert_array_equal(shmpool.evaluate("x + 1", x=np.zeros(3)), np.ones(3))


def test_ctrl_c_during_map_file_leaves_no_output(tmp_path):
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, np.zeros(10_000_000))
    with shmpool.Pool(2) as pool:
        t = interrupt_soon()
        with pytest.raises(KeyboardInterrupt):
            pool.map_file(src, dst, SLOW)
        t.join()
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


def test_an_exception_in_the_progress_callback_stops_the_map(tmp_path):
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, np.zeros(10_000_000))

    def progress(done: int, total: int) -> None:
        raise RuntimeError("stop here")

    with shmpool.Pool(2) as pool:
        with pytest.raises(RuntimeError, match="stop here"):
            pool.map_file(src, dst, SLOW, progress=progress)
    assert not dst.exists()


def test_a_terminated_pool_leaves_no_process_and_no_segment():
    with shmpool.Pool(2) as pool:
        pids = pool.pids()
        a = shmpool.zeros(1000)
        pool.evaluate("x + 1", x=a, out=a.copy())
        del a
    assert not set(pids) & children(os.getpid())
    assert our_segments() == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_a_parent_killed_with_sigkill_leaves_no_process_and_no_segment(tmp_path, method):
    """The parent dies mid-map: its workers (and fork server) exit, and no segment of it stays
    in /dev/shm (names are unlinked at creation)."""
    import subprocess
    import sys
    import time

    code = (
        "import sys, numpy as np, shmpool\n"
        f"p = shmpool.Pool(2, start_method={method!r})\n"
        "a = shmpool.zeros(10_000_000)\n"
        "kids = open(f'/proc/{__import__(\"os\").getpid()}/task/{__import__(\"os\").getpid()}/children').read().split()\n"
        "print(' '.join(map(str, p.pids() + [int(k) for k in kids])), flush=True)\n"
        f"p.evaluate({SLOW!r}, x=a)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        pids = {int(p) for p in line.split()}
        assert pids, "the child printed no pids"
        time.sleep(0.2)  # let the map start: not a synchronisation, any instant works
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 60  # a watchdog, not a timing assertion
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "workers outlived their parent"
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"shmpool_{proc.pid}_")]
