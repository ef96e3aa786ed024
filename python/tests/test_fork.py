"""Python callables under the ``fork`` start method: workers are forks of this interpreter made
with ``os.fork``'s protocol (GIL, ``PyOS_BeforeFork`` / ``AfterFork_*``), from the calling thread
at start and from the pool's supervisor thread for replacements."""

from __future__ import annotations

import os
import threading

import numpy as np

import kernels
import shmpool


def test_fork_workers_run_python_callables_and_see_the_parents_state(monkeypatch):
    monkeypatch.setattr(kernels, "STATE", 7.0)
    x = np.arange(200_000.0)
    with shmpool.Pool(2, start_method="fork") as p:
        assert p.start_method == "fork"
        np.testing.assert_array_equal(p.map(kernels.add_state, x), x + 7.0)
        np.testing.assert_array_equal(p.map(kernels.w1, x), np.sqrt(x) * 1.5 + 0.25)
    # A fresh interpreter imports `kernels` anew: it does not see the parent's change.
    with shmpool.Pool(1, start_method="forkserver") as p:
        np.testing.assert_array_equal(p.map(kernels.add_state, x[:10]), x[:10])


def test_fork_workers_run_the_interpreters_after_fork_callbacks():
    os.register_at_fork(after_in_child=kernels._at_fork_child)
    before = kernels.AT_FORK_CHILD
    x = np.arange(1000.0)
    with shmpool.Pool(1, start_method="fork") as p:
        np.testing.assert_array_equal(p.map(kernels.add_at_fork_count, x), x + before + 1)
    assert kernels.AT_FORK_CHILD == before  # never in the parent


def test_a_replacement_forked_by_the_supervisor_thread_runs_python(tmp_path, monkeypatch):
    """The killed worker's replacement is forked from the supervisor thread (not a Python
    thread): it takes the GIL for the fork, while this thread waits in `map` with the GIL
    released, and a thread of this process keeps running Python meanwhile."""
    monkeypatch.setenv("SHMPOOL_TEST_MARKER", str(tmp_path / "killed"))
    monkeypatch.setattr(kernels, "STATE", 3.0)
    stop = threading.Event()
    spins = []

    def busy() -> None:
        n = 0
        while not stop.is_set():
            n += 1
        spins.append(n)

    t = threading.Thread(target=busy)
    t.start()
    try:
        with shmpool.Pool(2, start_method="fork") as p:
            x = np.arange(200_000.0)
            np.testing.assert_array_equal(p.map(kernels.kill_once_add_state, x), x + 3.0)
            assert (tmp_path / "killed").exists()
            assert p.worker_deaths >= 1 and p.respawns >= 1
            np.testing.assert_array_equal(p.map(kernels.add_state, x), x + 3.0)
    finally:
        stop.set()
        t.join()
    assert spins and spins[0] > 0


def test_fork_workers_report_exceptions_like_the_others():
    with shmpool.Pool(1, start_method="fork") as p:
        try:
            p.map(kernels.raise_value_error, np.arange(10.0))
        except ValueError as e:
            assert e.range == (0, 10)
        else:
            raise AssertionError("no ValueError")


def test_fork_with_other_threads_warns_in_python_words():
    # A RuntimeWarning (filterable with the warnings module) naming the Python options, not
    # the engine's stderr line naming its Rust API.
    import pytest

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        with pytest.warns(RuntimeWarning, match="start_method='forkserver'"):
            with shmpool.Pool(1, start_method="fork") as p:
                assert p.map(kernels.square_int, np.arange(3)).tolist() == [0, 1, 4]
    finally:
        stop.set()
        t.join()
