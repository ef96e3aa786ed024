"""Start methods from Python: fork, forkserver and spawn all run the engine's workers; the default
is safe in a process that runs threads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import shmpool


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_each_start_method_maps_exactly(method):
    x = np.arange(300_000, dtype=np.float64)
    with shmpool.Pool(2, start_method=method) as pool:
        assert pool.start_method == method
        np.testing.assert_array_equal(pool.evaluate("x * 2 + i", x=x), x * 2 + np.arange(x.size))
        pids = pool.pids()
        assert len(pids) == 2 and os.getpid() not in pids


def test_unknown_start_method_is_a_value_error():
    with pytest.raises(ValueError, match="start method"):
        shmpool.Pool(1, start_method="thread")


def test_a_pool_built_while_another_thread_holds_a_lock_and_logs():
    """A thread holds a lock and logs in a loop while the pool starts and maps: the workers
    never inherit that thread's locks (the default in a threaded process is not a plain fork)."""
    held = threading.Lock()
    stop = threading.Event()
    started = threading.Event()
    log = logging.getLogger("shmpool-test-busy")
    log.addHandler(logging.StreamHandler(open(os.devnull, "w")))
    log.setLevel(logging.INFO)

    def busy():
        with held:
            started.set()
            while not stop.is_set():
                log.info("busy %d", 1)

    t = threading.Thread(target=busy)
    t.start()
    try:
        started.wait()
        with shmpool.Pool(2) as pool:
            assert pool.start_method == "forkserver"
            x = np.arange(500_000.0)
            np.testing.assert_array_equal(pool.evaluate("sqrt(x)", x=x), np.sqrt(x))
    finally:
        stop.set()
        t.join()


def test_spawned_children_refuse_another_build_of_the_module(tmp_path):
    """The spawn route checks that the module file is still the one the parent loaded: a
    rebuilt module makes the start fail with an error, never run mismatched code."""
    code = (
        "import os, numpy as np, shmpool, shmpool._native as n\n"
        "p = os.path.abspath(n.__file__)\n"
        "st = os.stat(p)\n"
        "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))\n"
        "try:\n"
        "    shmpool.Pool(1, start_method='spawn')\n"
        "except shmpool.ShmpoolError as e:\n"
        "    print('refused:', e)\n"
        "finally:\n"
        "    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "refused:" in r.stdout, r.stdout + r.stderr
    assert "code 85" in r.stdout
