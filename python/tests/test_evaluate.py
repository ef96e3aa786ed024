"""shmpool.evaluate / Pool.evaluate: numpy's values and dtypes, out=, shapes, errors."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import shmpool

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"]


def sample(dtype: str, n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, n).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), n, endpoint=True).astype(dt)
    return (rng.standard_normal(n) * 10).astype(dt)


def numpy_eval(expr: str, x: np.ndarray) -> np.ndarray:
    env = {"sqrt": np.sqrt, "abs": np.abs, "where": np.where, "x": x, "i": np.arange(x.size, dtype=np.int64).reshape(x.shape)}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return np.asarray(eval(expr, env))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.fixture(scope="module")
def pool():
    with shmpool.Pool(2) as p:
        yield p


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("expr", ["x * 3", "x > 2", "abs(x) + i", "where(x > 1, x, 0)", "x == x"])
def test_every_input_dtype_gives_numpys_values_and_dtype(pool, dtype, expr):
    if dtype == "bool" and expr == "x * 3":
        expr = "x & True"
    x = sample(dtype)
    got = pool.evaluate(expr, x=x)
    assert same(got, numpy_eval(expr, x)), (expr, dtype, got.dtype, numpy_eval(expr, x).dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "uint16", "int64"])
def test_float_functions_follow_numpys_result_type(pool, dtype):
    x = np.abs(sample(dtype))
    got = pool.evaluate("sqrt(x)", x=x)
    with np.errstate(invalid="ignore"):  # abs(-128) is -128 in int8: sqrt gives nan, as numpy
        want = np.sqrt(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_large_input_matches_numpy_exactly():
    x = np.random.default_rng(1).random(2_000_003)
    got = shmpool.evaluate("sqrt(x) * 1.5 + 0.25", x=x)
    assert same(got, np.sqrt(x) * 1.5 + 0.25)


def test_any_array_name_and_shape_is_kept(pool):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    got = pool.evaluate("value * 2 + i", value=a)
    assert got.shape == (2, 3, 4)
    assert same(got, a * 2 + np.arange(24).reshape(2, 3, 4))


def test_non_contiguous_and_big_endian_inputs(pool):
    a = np.arange(40.0).reshape(5, 8)[:, ::3]
    assert same(pool.evaluate("x - 1", x=a), a - 1)
    b = np.arange(10, dtype=">i4")
    assert same(pool.evaluate("x + 1", x=b), np.arange(10, dtype=np.int32) + 1)


def test_zero_dim_and_empty_inputs(pool):
    assert same(pool.evaluate("x * 2", x=np.float64(3.0)), np.asarray(6.0))
    assert same(pool.evaluate("x * 2", x=np.zeros((0, 3), np.float32)), np.zeros((0, 3), np.float32))


def test_out_receives_the_result_with_same_kind_casting(pool):
    x = np.linspace(0, 10, 10001)
    out = np.empty(x.shape, np.float32)
    r = pool.evaluate("sqrt(x)", x=x, out=out)
    assert r is out
    np.testing.assert_array_equal(out, np.sqrt(x).astype(np.float32))
    with pytest.raises(TypeError, match="same_kind"):
        pool.evaluate("sqrt(x)", x=x, out=np.empty(x.shape, np.int64))
    with pytest.raises(ValueError, match="shape"):
        pool.evaluate("sqrt(x)", x=x, out=np.empty(3))


def test_out_may_be_the_input_or_a_strided_view(pool):
    x = np.arange(100.0)
    pool.evaluate("x * 2", x=x, out=x)
    assert same(x, np.arange(100.0) * 2)
    big = np.zeros(200)
    pool.evaluate("x + 1", x=np.arange(100.0), out=big[::2])
    assert same(big[::2], np.arange(100.0) + 1) and not big[1::2].any()


def test_bool_output_into_bool_out(pool):
    x = np.arange(10)
    out = np.zeros(10, bool)
    pool.evaluate("x % 2 == 0", x=x, out=out)
    assert same(out, x % 2 == 0)


def test_expression_errors_point_at_the_users_text(pool):
    with pytest.raises(shmpool.ExpressionError) as e:
        pool.evaluate("sqrt(data) + foo", data=np.ones(3))
    assert e.value.position == 14
    assert "sqrt(data) + foo" in str(e.value)
    with pytest.raises(shmpool.ExpressionError):
        pool.evaluate("x +", x=np.ones(3))
    with pytest.raises(ValueError):  # ExpressionError is a ValueError too
        pool.evaluate("x + 300", x=np.ones(3, np.uint8))


def test_argument_errors_are_typed(pool):
    with pytest.raises(TypeError, match="at least one array"):
        pool.evaluate("1 + 2")
    with pytest.raises(TypeError, match="does not support"):
        pool.evaluate("x + 1", x=np.ones(3, complex))
    with pytest.raises(TypeError, match="flat index"):
        pool.evaluate("i + 1", i=np.ones(3))


def test_a_closed_pool_refuses_work():
    p = shmpool.Pool(1)
    p.close()
    with pytest.raises(shmpool.PoolClosed):
        p.evaluate("x + 1", x=np.ones(3))
    with pytest.raises(shmpool.PoolClosed):
        p.evaluate("a + b", a=np.ones(3), b=np.ones(3))
    p.join()


def test_several_named_arrays_give_numpys_values_and_dtype(pool):
    rng = np.random.default_rng(3)
    a = rng.standard_normal(100_000)
    b = rng.integers(-50, 50, 100_000).astype(np.int32)
    c = rng.standard_normal(100_000).astype(np.float32)
    got = pool.evaluate("a * b + c", a=a, b=b, c=c)
    assert same(got, a * b + c)
    got = shmpool.evaluate("where(a > 0, b, c) + i", a=a, b=b, c=c)
    assert same(got, np.where(a > 0, b, c) + np.arange(a.size))


@pytest.mark.parametrize("da,db", [("int8", "uint8"), ("int32", "float32"), ("uint64", "int64"), ("bool", "float16")])
def test_several_named_arrays_promote_as_numpy(pool, da, db):
    a, b = sample(da, 500), sample(db, 500)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        want = a * b - b
    assert same(pool.evaluate("a * b - b", a=a, b=b), want)


def test_several_named_arrays_broadcast_and_fill_out(pool):
    m = np.arange(12.0).reshape(3, 4)
    row = np.arange(4, dtype=np.int64)
    col = np.array([[1.0], [2.0], [3.0]])
    assert same(pool.evaluate("m * row + col", m=m, row=row, col=col), m * row + col)
    out = np.zeros((3, 4), np.float32)
    assert pool.evaluate("m + row", m=m, row=row, out=out) is out
    assert same(out, (m + row).astype(np.float32))
    with pytest.raises(TypeError, match="same_kind"):
        pool.evaluate("m + row", m=m, row=row, out=np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="broadcast"):
        pool.evaluate("a + b", a=np.ones(3), b=np.ones(4))


def test_several_named_arrays_report_expression_errors(pool):
    with pytest.raises(shmpool.ExpressionError) as e:
        pool.evaluate("a + q", a=np.ones(3), b=np.ones(3))
    assert e.value.position == 5
    with pytest.raises(shmpool.ExpressionError, match="not used"):
        pool.evaluate("a + 1", a=np.ones(3), b=np.ones(3))
    with pytest.raises(shmpool.ExpressionError, match="reserved"):
        pool.evaluate("a + i", a=np.ones(3), i=np.ones(3))


def numpy_without_simd(code: str) -> np.ndarray:
    """What numpy computes when its CPU dispatch is off (every dispatch target this machine has
    disabled: the baseline loops, which call libm), run in a fresh interpreter that prints
    ``repr(result.tolist())``."""
    import ast
    import subprocess
    import sys

    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__  # type: ignore[no-redef]

    targets = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=" ".join(targets))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    return np.array(ast.literal_eval(out.stdout), np.float32)


@pytest.mark.parametrize("fn", ["sin", "cos", "exp", "log", "tanh", "log10", "arctan", "sinh", "expm1"])
def test_float32_transcendentals_equal_numpys_libm_loops(pool, fn):
    """numpy's float32 transcendentals depend on the CPU (its AVX2 / AVX-512 kernels differ from
    libm and from each other by 1 ulp); without SIMD dispatch numpy calls libm, as the engine
    does: the values are then identical, in the workers and in this process."""
    code = (
        "import numpy as np\n"
        "x = np.linspace(0.5, 10, 2001).astype(np.float32)\n"
        f"print(repr(np.{fn}(x).tolist()))\n"
    )
    ref = numpy_without_simd(code)
    x = np.linspace(0.5, 10, 2001).astype(np.float32)
    got = pool.evaluate(f"{fn}(x)", x=x)
    assert got.dtype == np.float32
    assert int((got != ref).sum()) == 0, f"{fn}: {int((got != ref).sum())} of {x.size} differ"
    big = np.tile(x, 40)  # over 65,536 elements: evaluated on threads of this process
    assert np.array_equal(pool.evaluate(f"{fn}(x)", x=big), np.tile(ref, 40))
