"""Second adversarial review of issue #18 (review #18b) through the Python package's
``evaluate``: each test is one break, named in its docstring; each fails on main at 04383f3
(strict xfail: the suite stays green while the break is there, and a fix makes it XPASS, so
remove the marker with the fix). Expected values are numpy 2.4's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import shmpool


def test_an_array_read_only_through_size_evaluates() -> None:
    """``size(name)`` "may appear anywhere in the expression" (README), and the CLI's ``map
    a=.. b=.. --expr 'b + size(a)'`` works; ``evaluate("size(a) * 1.5", a=np.arange(3))``
    raises ExpressionError "the program reads 1 inputs, 0 were given" (numpy: 4.5) and
    ``evaluate("b + size(a)", a=..., b=...)`` raises "input 'a' is not used by the
    expression" (numpy: ``b + 3``)."""
    a = np.arange(3)
    b = np.arange(2.0)
    assert shmpool.evaluate("size(a) * 1.5", a=a) == 4.5
    np.testing.assert_array_equal(shmpool.evaluate("b + size(a)", a=a, b=b), b + np.size(a))


def test_an_overflow_beside_an_input_infinity_is_numpys_floating_point_error() -> None:
    """numpy's ``np.exp(np.array([np.inf, 1000.0]))`` warns "overflow encountered in exp" and
    raises FloatingPointError under ``np.errstate(over='raise')``: exp(1000) overflows
    whatever the other element is. ``evaluate`` checks the result only (``_check_fp``: an
    infinity where no input had one), so with an inf already in the input it neither warns nor
    raises, and the overflow passes silently."""
    x = np.array([np.inf, 1000.0])
    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            np.exp(x)
        with pytest.raises(FloatingPointError):
            shmpool.evaluate("exp(x)", x=x)


def test_float16_std_whose_sum_overflows_is_inf_as_numpy() -> None:
    """numpy's ``_var`` sums float16 in float16 for the mean: 100 x 1000.0 overflow it, and
    ``np.std`` is ``np.float16(inf)`` (overflow warning); ``evaluate("std(a)")`` returns
    ``np.float16(0.0)`` (the same break as tests/review_18b.rs
    ``float16_and_float32_std_whose_sum_overflows_are_inf_as_numpy``, here through Python)."""
    a = np.full(100, 1000, np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.std(a)
        got = shmpool.evaluate("std(a)", a=a)
    assert repr(got) == repr(want)


def test_a_reduction_of_a_deviation_from_the_mean_evaluates() -> None:
    """``shmpool reduce x.npy --expr 'sum((x - mean(x)) ** 2)'`` works (README: one level of
    reduction inside a reduction's argument), and ``evaluate``'s docstring lets reductions
    "appear anywhere in expr"; ``evaluate("sum((x - mean(x)) ** 2)", x=a)`` raises
    ExpressionError "a reduction inside a reduction is not supported". numpy:
    ``np.sum((a - np.mean(a)) ** 2)`` = 82.5 for ``np.arange(10.0)``."""
    a = np.arange(10.0)
    got = shmpool.evaluate("sum((x - mean(x)) ** 2)", x=a)
    assert got == np.sum((a - np.mean(a)) ** 2)


def test_an_overflow_is_an_overflow_whatever_the_expression_spells() -> None:
    """``_check_fp`` calls any new infinity "divide by zero" when the expression's text contains
    ``/`` or ``log``: ``evaluate("x * 1e300 / 3", x=[1e10])`` and ``evaluate("exp(catalog)",
    catalog=[1000.0])`` overflow (numpy: "overflow encountered in multiply" / "in exp") but
    warn "divide by zero encountered in evaluate"; under ``np.errstate(over="raise",
    divide="ignore")`` numpy raises FloatingPointError and shmpool returns ``[inf]`` silently."""
    cases = [("x * 1e300 / 3", {"x": np.array([1e10])}), ("exp(catalog)", {"catalog": np.array([1000.0])})]
    with np.errstate(over="raise", divide="ignore"):
        with pytest.raises(FloatingPointError):
            np.array([1e10]) * 1e300 / 3
        for expr, arrays in cases:
            with pytest.raises(FloatingPointError):
                shmpool.evaluate(expr, **arrays)
