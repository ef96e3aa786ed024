"""Expressions over named arrays: several arrays (and reductions) evaluated in this process, and
the renaming of one array to the engine's ``x``, with error columns mapped back."""

from __future__ import annotations

import io
import tokenize
from typing import Any, Optional

import numpy as np

from . import _native
from ._arrays import _dtype
from ._errors import ExpressionError

# Elements from which `Pool.evaluate` over plain memory runs on threads of this process.
_IN_PROCESS_FROM = 1 << 16


def _evaluate_inputs(expr: str, arrays: dict[str, Any], out: Optional[np.ndarray], threads: int) -> np.ndarray:
    """``expr`` over several named arrays, in this process (see :meth:`Pool.evaluate`)."""
    flat = []
    named = []
    for name, a in arrays.items():
        a = np.asarray(a)
        dt = _dtype(a.dtype)
        if a.dtype != dt:
            a = a.astype(dt)
        named.append((name, dt.name, list(a.shape)))
        flat.append(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    res_name, shape = _native.inputs_result(expr, named)
    res = np.dtype(res_name)
    shape = tuple(shape)
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError("out must be a numpy array")
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, the result has shape {shape}")
        if not np.can_cast(res, out.dtype, casting="same_kind"):
            raise TypeError(
                f"Cannot cast ufunc output from dtype('{res}') to dtype('{out.dtype}') with casting rule 'same_kind'"
            )
        if not out.flags.writeable:
            raise ValueError("output array is read-only")
    if out is not None and _writes_directly(out, res, arrays.values()):
        # Straight into `out`: no temporary result.
        _native.evaluate_inputs(expr, named, flat, out.reshape(-1).view(np.uint8), max(1, threads))
        return out
    result = np.empty(shape, res)
    _native.evaluate_inputs(expr, named, flat, result.reshape(-1).view(np.uint8), max(1, threads))
    if out is None:
        # A 0-d result (a reduction, 0-d inputs) is a numpy scalar, as numpy returns.
        return result[()] if result.ndim == 0 else result
    np.copyto(out, result, casting="same_kind")
    return out


def _writes_directly(out: np.ndarray, res: np.dtype, inputs: Any) -> bool:
    """Whether the engine can write the result into ``out`` itself: of the result's dtype,
    C-contiguous, native byte order, and clear of every input's memory."""
    if out.dtype != res or not out.flags.c_contiguous or not out.dtype.isnative:
        return False
    return not any(isinstance(a, np.ndarray) and np.may_share_memory(out, a) for a in inputs)


def _rename(expr: str, name: str) -> tuple[str, list[tuple[int, int]]]:
    """``expr`` with the array's name replaced by ``x`` (the engine's name for it), and the
    replaced spans (new column, characters removed) to map error columns back."""
    if name == "x":
        return expr, []
    if name == "i":
        raise TypeError("the name 'i' is the flat index (int64): give the array another name")
    if not name.isidentifier():
        raise TypeError(f"{name!r} is not a valid variable name")
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return expr, []  # the engine reports the syntax error
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    last = 0
    shift = 0
    for k, t in enumerate(toks):
        if t.type != tokenize.NAME or t.start[0] != 1:
            continue
        called = k + 1 < len(toks) and toks[k + 1].string == "("
        if t.string == "x" and not called:
            raise ExpressionError(
                f"invalid expression at column {t.start[1] + 1}: unknown variable 'x' (the array is {name})",
                position=t.start[1] + 1,
                detail=f"unknown variable 'x' (the array is {name})",
            )
        if t.string == name and not called:
            out.append(expr[last : t.start[1]])
            out.append("x")
            spans.append((t.start[1] - shift, len(name) - 1))
            shift += len(name) - 1
            last = t.end[1]
    out.append(expr[last:])
    return "".join(out), spans


def _reraise(e: ExpressionError, expr: str, spans: list[tuple[int, int]]) -> ExpressionError:
    pos = getattr(e, "position", 1)
    orig = pos + sum(removed for col, removed in spans if col + 1 < pos)
    detail = getattr(e, "detail", str(e))
    caret = " " * (orig - 1) + "^"
    return type(e)(
        f"invalid expression at column {orig}: {detail}\n  {expr}\n  {caret}", position=orig, detail=detail
    )


def _flat(a: np.ndarray) -> np.ndarray:
    """``a`` as the flat, contiguous array of its storage type that the native module reads."""
    f = np.ascontiguousarray(a).reshape(-1)
    return f.view(np.uint8) if f.dtype == np.bool_ else f


# Elements checked at a time for non-finite values (bounds the check's temporary).
_CHECK_BLOCK = 1 << 20


def _any_of(test: Any, a: np.ndarray) -> bool:
    """Whether ``test`` (``np.isnan``...) holds for an element of ``a``, block by block."""
    flat = a.reshape(-1)
    return any(bool(test(flat[k : k + _CHECK_BLOCK]).any()) for k in range(0, flat.size, _CHECK_BLOCK))


def _new_values(test: Any, r: np.ndarray, ins: list[np.ndarray]) -> bool:
    """Whether ``test`` (``np.isinf``...) holds for an element of ``r`` where it holds for no
    input at the same position (``exp`` of ``[inf, 1000.0]`` overflows at 1000.0), inputs
    broadcast to ``r``'s shape; an input that does not broadcast to it (a reduction's) counts
    for every position if ``test`` holds for one of its elements. Block by block."""
    views = []
    for a in ins:
        try:
            views.append(np.broadcast_to(a, r.shape))
        except ValueError:
            if _any_of(test, a):
                return False
    flat = r.reshape(-1)
    for k in range(0, flat.size, _CHECK_BLOCK):
        new = test(flat[k : k + _CHECK_BLOCK])
        for v in views:
            new &= ~test(v.flat[k : k + _CHECK_BLOCK])
        if new.any():
            return True
    return False


def _signal(kind: str, message: str) -> None:
    """numpy's handling of a floating-point error of ``kind`` (``np.errstate``, ``np.seterr``)."""
    import warnings

    mode = np.geterr()[kind]
    if mode == "ignore":
        return
    if mode == "raise":
        raise FloatingPointError(message)
    if mode == "call" and np.geterrcall() is not None:
        handler = np.geterrcall()
        if callable(handler):
            handler(message, {"divide": 1, "over": 2, "under": 4, "invalid": 8}[kind])
        else:
            handler.write(message)
        return
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _argument_values(expr: str, arg: Any, arrays: dict[str, Any], threads: int) -> Any:
    """The values of ``arg``, a subexpression (AST node) of ``expr``, evaluated here over the
    arrays it names; None when that cannot be done (it names no array, or ``i``, its source is
    not found, or evaluating it fails)."""
    import ast

    used = {n.id for n in ast.walk(arg) if isinstance(n, ast.Name)}
    sub = {k: v for k, v in arrays.items() if k in used}
    seg = ast.get_source_segment(expr.strip(), arg)
    if not sub or "i" in used or seg is None:
        return None
    try:
        return np.asarray(_evaluate_inputs(seg, sub, None, threads))
    except Exception:
        return None


def _zero_divisor(expr: str, arrays: dict[str, Any], threads: int) -> bool:
    """Whether an integer ``//`` or ``%`` of ``expr`` divides by zero somewhere: its divisors
    (constants, or subexpressions of the arrays, evaluated here) checked for zeros."""
    import ast

    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.FloorDiv, ast.Mod))):
            continue
        rhs = node.right
        if isinstance(rhs, ast.Constant):
            if rhs.value == 0:
                return True
            continue
        d = _argument_values(expr, rhs, arrays, threads)
        if d is not None and d.dtype.kind in "iub" and _any_of(lambda b: b == 0, d):
            return True
    return False


# The functions whose argument at a pole (0; -1 for log1p) is numpy's 'divide by zero'.
_POLES = {"log": 0.0, "log2": 0.0, "log10": 0.0, "log1p": -1.0}


def _divides_by_zero(expr: str, arrays: dict[str, Any], threads: int) -> bool:
    """Whether a new infinity of ``expr``'s float result may be numpy's 'divide by zero': a
    true division whose divisor, or a log whose argument, is at its pole somewhere (constants,
    or subexpressions of the arrays evaluated here); otherwise it is an overflow. A name that
    merely contains ``log`` and a division by a non-zero constant are not."""
    import ast

    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return "/" in expr or "log" in expr
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            arg, pole = node.right, 0.0
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _POLES and node.args:
            arg, pole = node.args[0], _POLES[node.func.id]
        else:
            continue
        if isinstance(arg, ast.Constant):
            if arg.value == pole:
                return True
            continue
        d = _argument_values(expr, arg, arrays, threads)
        if d is None or _any_of(lambda b: b == pole, d):
            return True
    return False


def _check_fp(expr: str, result: Any, arrays: dict[str, Any], threads: int) -> None:
    """numpy's floating-point errors for an evaluation, checked on its result (the engine does
    not report them): a NaN in a float result where no float input had one (at that position:
    ``_new_values``) is numpy's 'invalid value'; an infinity where none had one, its 'divide by zero' (a divisor or a
    log's argument is at its pole somewhere: ``_divides_by_zero``) or 'overflow'; an integer
    ``//`` or ``%`` by zero, 'divide by zero'. Each warns (RuntimeWarning), raises FloatingPointError or is ignored as
    ``np.errstate`` says. One pass over a float result (two when it holds NaN or inf)."""
    err = np.geterr()
    if err["divide"] == err["over"] == err["invalid"] == "ignore":
        return
    r = np.asarray(result)
    if r.dtype.kind in "iu" and ("//" in expr or "%" in expr):
        if _zero_divisor(expr, arrays, threads):
            _signal("divide", "divide by zero encountered in floor_divide")
        return
    if r.dtype.kind != "f" or not _any_of(lambda b: ~np.isfinite(b), r):
        return
    ins = [a for a in (np.asarray(v) for v in arrays.values()) if a.dtype.kind == "f"]
    if _any_of(np.isnan, r) and _new_values(np.isnan, r, ins):
        _signal("invalid", "invalid value encountered in evaluate")
    if _any_of(np.isinf, r) and _new_values(np.isinf, r, ins):
        if _divides_by_zero(expr, arrays, threads):
            _signal("divide", "divide by zero encountered in evaluate")
        else:
            _signal("over", "overflow encountered in evaluate")
