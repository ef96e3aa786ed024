"""Shared arrays: numpy arrays in shared memory, used in place by the workers."""

from __future__ import annotations

import numpy as np
import pytest

import shmpool


def test_zeros_is_a_zeroed_numpy_array_of_the_shape_and_dtype():
    a = shmpool.zeros((3, 5), np.int16)
    assert isinstance(a, np.ndarray) and a.shape == (3, 5) and a.dtype == np.int16
    assert not a.any() and a.flags.writeable and a.flags.c_contiguous
    assert shmpool.is_shared(a) and not shmpool.is_shared(np.zeros(3))
    b = shmpool.zeros(7)
    assert b.shape == (7,) and b.dtype == np.float64


def test_empty_like_and_zeros_like_follow_their_model():
    a = np.ones((4, 2), np.float32)
    e = shmpool.empty_like(a)
    assert e.shape == a.shape and e.dtype == a.dtype and shmpool.is_shared(e)
    z = shmpool.zeros_like(a, dtype=np.uint8)
    assert z.dtype == np.uint8 and not z.any()


def test_evaluate_reads_and_writes_shared_arrays_in_place():
    with shmpool.Pool(2) as pool:
        x = shmpool.zeros(300_000)
        x[:] = np.arange(x.size)
        out = shmpool.empty_like(x)
        ptr = out.__array_interface__["data"][0]
        r = pool.evaluate("x * 0.5", x=x, out=out)
        assert r is out and out.__array_interface__["data"][0] == ptr
        assert np.shares_memory(r, out)
        np.testing.assert_array_equal(out, np.arange(x.size) * 0.5)
        # Without out=, a shared input gives a shared result.
        y = pool.evaluate("x + 1", x=x)
        assert shmpool.is_shared(y) and not np.shares_memory(y, x)
        np.testing.assert_array_equal(y, np.arange(x.size) + 1.0)


def test_the_segment_lives_as_long_as_any_view():
    a = shmpool.zeros(1000)
    v = a[10:20]
    del a
    v[:] = 3.0
    assert v.sum() == 30.0


def test_unsupported_dtypes_and_shapes_are_refused():
    with pytest.raises(TypeError):
        shmpool.zeros(3, complex)
    with pytest.raises(ValueError):
        shmpool.zeros((-1, 2))


def test_a_view_of_a_shared_array_is_copied_not_misread():
    with shmpool.Pool(1) as pool:
        x = shmpool.zeros(10)
        x[:] = np.arange(10)
        np.testing.assert_array_equal(pool.evaluate("x * 2", x=x[2:5]), np.arange(2, 5) * 2.0)
        np.testing.assert_array_equal(pool.evaluate("x * 2", x=x.view(np.int64)), x.view(np.int64) * 2)
