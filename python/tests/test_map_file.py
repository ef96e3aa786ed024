"""Pool.map_file: .npy in, .npy out, as the command line."""

from __future__ import annotations

import os

import numpy as np
import pytest

import shmpool


def test_map_file_writes_numpys_result(tmp_path):
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    x = np.arange(200_000, dtype=np.float32).reshape(400, 500)
    np.save(src, x)
    seen = []
    with shmpool.Pool(2) as pool:
        dt = pool.map_file(src, dst, "sqrt(x) + i", progress=lambda d, n: seen.append((d, n)))
    got = np.load(dst)
    want = np.sqrt(x) + np.arange(x.size).reshape(x.shape)
    assert dt == want.dtype and got.dtype == want.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, want)
    assert seen and seen[-1] == (x.size, x.size)


def test_map_file_casts_to_dtype_and_prints_progress(tmp_path, capfd):
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, np.arange(1000, dtype=np.int64))
    with shmpool.Pool(1) as pool:
        assert pool.map_file(str(src), str(dst), "x / 3", dtype="float32", progress=True) == np.float32
    np.testing.assert_array_equal(np.load(dst), (np.arange(1000) / 3).astype(np.float32))
    assert "progress: 100.0%" in capfd.readouterr().err


def test_map_file_errors_leave_no_output(tmp_path):
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, np.arange(10.0))
    with shmpool.Pool(1) as pool:
        with pytest.raises(FileNotFoundError):
            pool.map_file(tmp_path / "missing.npy", dst, "x")
        with pytest.raises(shmpool.ExpressionError):
            pool.map_file(src, dst, "x +")
        with pytest.raises(ValueError, match="is the input"):
            pool.map_file(src, src, "x")
    assert not dst.exists()
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]
