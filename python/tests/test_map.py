"""Pool.map with Python callables run in the worker processes."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import kernels
import shmpool
from conftest import children


@pytest.fixture(scope="module")
def pool():
    with shmpool.Pool(2, start_method="forkserver", max_attempts=3) as p:
        yield p


def w1(x):
    return np.sqrt(x) * 1.5 + 0.25


def test_map_is_exact_on_1d_and_returns_a_new_array(pool):
    x = np.random.default_rng(3).random(1_000_003)
    r = pool.map(kernels.w1, x)
    assert r.dtype == x.dtype and r.shape == x.shape and not np.shares_memory(r, x)
    np.testing.assert_array_equal(r, w1(x))
    s = shmpool.zeros(x.shape)
    s[:] = x
    rs = pool.map(kernels.w1, s)
    assert shmpool.is_shared(rs), "a shared input gives a shared result"
    np.testing.assert_array_equal(rs, w1(x))


def test_small_batches_and_bool_arrays(pool):
    b = np.random.default_rng(5).random(1024)
    np.testing.assert_array_equal(pool.map(kernels.w1, b), w1(b))
    flags = np.arange(10) % 3 == 0
    np.testing.assert_array_equal(pool.map(kernels.negate_bool, flags), ~flags)


def test_map_is_exact_on_2d_and_non_contiguous_inputs(pool):
    a = np.random.default_rng(4).random((700, 900))
    np.testing.assert_array_equal(pool.map(kernels.w1, a), w1(a))
    v = a[::3, 1::2]
    np.testing.assert_array_equal(pool.map(kernels.w1, v), w1(v))


def test_map_writes_into_out_in_place_or_through_a_copy(pool):
    x = shmpool.zeros(500_000)
    x[:] = np.arange(x.size)
    out = shmpool.empty_like(x)
    ptr = out.__array_interface__["data"][0]
    assert pool.map(kernels.w1, x, out=out) is out
    assert out.__array_interface__["data"][0] == ptr
    np.testing.assert_array_equal(out, w1(np.arange(x.size, dtype=float)))
    plain = np.zeros(x.size, np.int64)
    pool.map(kernels.square_int, np.arange(x.size, dtype=np.int32), out=plain)
    np.testing.assert_array_equal(plain, np.arange(x.size, dtype=np.int64) ** 2)


def test_output_dtype_can_differ(pool):
    r = pool.map(kernels.square_int, np.arange(1000, dtype=np.int16), dtype=np.int64)
    assert r.dtype == np.int64
    np.testing.assert_array_equal(r, np.arange(1000, dtype=np.int64) ** 2)


def test_builtin_exceptions_arrive_with_type_message_and_range(pool):
    with pytest.raises(ValueError, match="bad chunk starting with") as e:
        pool.map(kernels.raise_value_error, np.arange(100_000.0))
    start, stop = e.value.range
    assert 0 <= start < stop <= 100_000
    assert "raise ValueError" in e.value.worker_traceback


def test_picklable_exceptions_arrive_as_their_own_class(pool):
    with pytest.raises(kernels.CustomError, match="not a builtin") as e:
        pool.map(kernels.raise_custom, np.arange(10.0))
    assert e.value.args == ("not a builtin",)
    assert e.value.range == (0, 10)
    assert "raise CustomError" in e.value.worker_traceback


def test_exceptions_keep_their_args(pool):
    with pytest.raises(FileNotFoundError) as e:
        pool.map(kernels.raise_file_not_found, np.arange(10.0))
    assert (e.value.errno, e.value.filename) == (2, "/nonexistent")
    assert e.value.args == (2, "No such file or directory")


def test_a_message_longer_than_the_engines_arrives_whole_with_its_type(pool):
    # Beyond the engine's 192-byte failure message: the exception travels through the pool's
    # mailbox (a temporary file), whole.
    with pytest.raises(ValueError) as e:
        pool.map(kernels.raise_long_message, np.arange(10.0))
    assert str(e.value) == "long " * 100
    assert e.value.range == (0, 10)


def test_exceptions_that_do_not_pickle_arrive_as_kernel_error(pool):
    with pytest.raises(shmpool.KernelError, match="Unpicklable: holds a lock") as e:
        pool.map(kernels.raise_unpicklable, np.arange(10.0))
    assert e.value.range == (0, 10)


def test_a_worker_killed_once_is_replaced_and_the_result_is_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("SHMPOOL_TEST_MARKER", str(tmp_path / "killed"))
    # The environment reaches workers started after this point: a fresh pool.
    with shmpool.Pool(2, start_method="spawn") as p:
        x = np.arange(200_000.0)
        np.testing.assert_array_equal(p.map(kernels.kill_once, x), x * 2)
        assert (tmp_path / "killed").exists()
        assert p.worker_deaths >= 1
        assert len(p.pids()) == 2


def test_a_segfault_in_c_code_costs_a_retry_not_the_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SHMPOOL_TEST_MARKER", str(tmp_path / "crashed"))
    with shmpool.Pool(2, start_method="spawn", max_attempts=2) as p:
        x = np.arange(100_000.0)
        np.testing.assert_array_equal(p.map(kernels.segfault_once, x), x + 1)
        assert p.worker_deaths >= 1
        with pytest.raises(shmpool.WorkerCrashed) as e:
            p.map(kernels.always_segfault, np.arange(10.0))
        assert e.value.signal == signal.SIGSEGV and e.value.range == (0, 10)


def test_a_chunk_that_keeps_killing_workers_is_worker_crashed(pool):
    with pytest.raises(shmpool.WorkerCrashed) as e:
        pool.map(kernels.always_kill, np.arange(10.0))
    assert e.value.signal == signal.SIGKILL
    assert e.value.range == (0, 10) and e.value.attempts == 3


def test_a_kernel_that_keeps_its_chunk_view_kills_its_worker(pool):
    with pytest.raises(shmpool.WorkerCrashed) as e:
        pool.map(kernels.keep_view, np.arange(10.0))
    assert e.value.signal == signal.SIGABRT


def test_chunk_timeout_kills_a_hung_callable():
    with shmpool.Pool(1, start_method="forkserver", chunk_timeout=1.0) as p:
        with pytest.raises(shmpool.ChunkTimeout) as e:
            p.map(kernels.hang, np.arange(10.0))
        assert e.value.range == (0, 10)


def test_ctrl_c_during_a_hung_callable_raises_keyboard_interrupt():
    p = shmpool.Pool(2, start_method="forkserver")
    pids = p.pids()
    t = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    t.start()
    with pytest.raises(KeyboardInterrupt):
        p.map(kernels.hang, np.arange(10.0))
    t.join()
    p.join()
    assert not set(pids) & children(os.getpid())


def test_lambdas_and_closures_travel_by_value_with_cloudpickle(pool):
    pytest.importorskip("cloudpickle")
    k = 3.0
    r = pool.map(lambda x, out: np.multiply(x, k, out=out), np.arange(100_000.0))
    np.testing.assert_array_equal(r, np.arange(100_000.0) * 3.0)

    def add(x, out):
        out[:] = x + k

    np.testing.assert_array_equal(pool.map(add, np.arange(10.0)), np.arange(10.0) + 3.0)


def test_empty_input_gives_an_empty_result(pool):
    r = pool.map(kernels.w1, np.zeros((0, 4)))
    assert r.shape == (0, 4)


def test_imap_keeps_order_and_imap_unordered_gives_every_result(pool):
    batches = [np.arange(k * 1000, (k + 1) * 1000, dtype=np.float64) for k in range(7)]
    got = list(pool.imap(kernels.w1, iter(batches), in_flight=2))
    assert len(got) == 7
    for g, b in zip(got, batches):
        np.testing.assert_array_equal(g, w1(b))
    unordered = list(pool.imap_unordered(kernels.w1, batches))
    assert sorted(float(u[0]) for u in unordered) == sorted(float(w1(b)[0]) for b in batches)


def test_imap_consumes_its_input_lazily(pool):
    taken = []

    def gen():
        for k in range(100):
            taken.append(k)
            yield np.full(10, float(k))

    it = pool.imap(kernels.w1, gen(), in_flight=2)
    first = next(it)
    np.testing.assert_array_equal(first, w1(np.zeros(10)))
    assert len(taken) <= 3
    it.close()


def test_submit_returns_a_future(pool):
    futures = [pool.submit(kernels.square_int, np.arange(k, k + 100, dtype=np.int64)) for k in range(4)]
    for k, fut in enumerate(futures):
        np.testing.assert_array_equal(fut.result(timeout=120), np.arange(k, k + 100, dtype=np.int64) ** 2)
    with pytest.raises(ValueError, match="bad chunk"):
        pool.submit(kernels.raise_value_error, np.arange(5.0)).result(timeout=120)


def test_initializer_runs_in_each_worker_before_its_chunks():
    with shmpool.Pool(2, initializer=kernels.set_offset, initargs=(10.0,)) as p:
        x = np.arange(300_000.0)
        np.testing.assert_array_equal(p.map(kernels.add_offset, x), x + 10.0)
    with pytest.raises(TypeError):
        shmpool.Pool(1, initializer=3)  # type: ignore[arg-type]


def test_maxtasksperchild_recycles_workers_and_the_result_stays_exact():
    with shmpool.Pool(1, maxtasksperchild=2, chunk_len=10_000) as p:
        first = p.pids()
        x = np.arange(100_000.0)
        np.testing.assert_array_equal(p.map(kernels.w1, x), w1(x))
        assert p.respawns >= 1 and p.pids() != first
