"""Second hostile review of issue 16's promises (review #16b): each test is one break, named in
its docstring; each failed on the code it was written against (see the xfail reasons)."""

from __future__ import annotations

import os
import signal
import sys
import warnings

import numpy as np
import pytest

import review2_kernels as rk
import shmpool
from subproc import run_py

def test_unpicklable_exception_keeps_type_name_and_message():
    """Promise (issue): an exception that cannot be rebuilt arrives as 'shmpool.KernelError with
    the type name, message and traceback text'. An exception whose constructor takes two
    arguments pickles in the worker but does not unpickle here; the KernelError then says only
    'an exception that does not unpickle in this process (TypeError: ...)': the original type
    name and message are gone."""
    with shmpool.Pool(1) as pool:
        with pytest.raises(shmpool.KernelError) as info:
            pool.map(rk.raise_two_arg, np.arange(10.0))
    text = str(info.value) + getattr(info.value, "detail", "")
    assert "TwoArgError" in text, text
    assert "disk failure happened 3 times" in text, text



def test_importable_custom_exception_with_long_message_keeps_its_type():
    """Promise (issue): the callable's exception 'arrives in the parent as an exception of the
    same type and message where it can be rebuilt'. An importable custom exception type with a
    150-character message can be rebuilt, but its pickle exceeds the 192-byte failure message, so
    it arrives as KernelError, not as LongCustomError (the README only warns that a long message
    arrives truncated)."""
    with shmpool.Pool(1) as pool:
        with pytest.raises(rk.LongCustomError):
            pool.map(rk.raise_long_custom, np.arange(10.0))



def test_zero_d_evaluate_returns_a_numpy_scalar():
    """Promise (README): 'a 0-d result is returned as a numpy scalar, as numpy does'.
    evaluate('x + 1', x=np.array(3.0)) returns the 0-d array array(4.) where numpy's
    np.array(3.0) + 1 is the scalar np.float64(4.0) (the one-array path reshapes to ())."""
    ref = np.array(3.0) + 1
    got = shmpool.evaluate("x + 1", x=np.array(3.0))
    assert type(got) is type(ref), f"{got!r} is a {type(got).__name__}, numpy gives {ref!r}"


def test_float32_std_is_at_least_as_accurate_as_numpys():
    """Promise: evaluate's reductions give numpy's result types and values at least as accurate
    as numpy's (the issue asks 'at least as accurate as numpy's pairwise summation' and
    deterministic, not bit-equality). Over 1,000,001 float32 values std(x) was 0.28879276 where
    np.std gives 0.28879273 (3 ulp apart): judged against the float64 std of the same values,
    shmpool's is no farther off than numpy's."""
    x = np.random.default_rng(0).random(1_000_001).astype(np.float32)
    ref = float(np.std(x.astype(np.float64)))
    got = shmpool.evaluate("std(x)", x=x)
    assert np.asarray(got).dtype == np.std(x).dtype
    assert abs(float(got) - ref) <= abs(float(np.std(x)) - ref)


@pytest.mark.parametrize("kind", ["lambda", "closure"])
@pytest.mark.parametrize("cloudpickle", ["installed", "missing"])
def test_lambda_under_fork(kind, cloudpickle):
    """Promise (issue): 'f is any Python callable (a lambda or closure too, under fork ...)'.
    cloudpickle is a dependency of the package (pyproject.toml), so a lambda or closure reaches
    the workers by value; in an environment where it was removed anyway, the error says what
    to install instead of failing in a worker."""
    rc, out = run_py(
        f"""
        import sys
        if "{cloudpickle}" == "missing":
            sys.modules["cloudpickle"] = None   # as in an environment without cloudpickle
        import numpy as np, shmpool
        k = 3.0
        def make():
            def closure(a, b):
                b[:] = a * k
            return closure
        f = (lambda a, b: b.__setitem__(slice(None), a * k)) if "{kind}" == "lambda" else make()
        with shmpool.Pool(2, start_method="fork") as p:
            try:
                print("RESULT", p.map(f, np.arange(4.0)).tolist(), flush=True)
            except TypeError as e:
                print("TYPEERROR", e, flush=True)
        """
    )
    if cloudpickle == "installed":
        assert "RESULT [0.0, 3.0, 6.0, 9.0]" in out, f"rc={rc}: {out}"
    else:
        assert "TYPEERROR" in out and "cloudpickle" in out, f"rc={rc}: {out}"


def test_ctrl_c_in_evaluate_with_a_reduction_is_prompt():
    """Promise (issue, Faults): 'Ctrl-C in the parent raises KeyboardInterrupt promptly'
    (README: 'within ~50 ms'). evaluate of a reduction over 16M float64
    ('sum(sin(x*1) + ... + sin(x*12))') runs ~1 s (quiet machine) to ~20 s (loaded) in the
    calling process and ignores Ctrl-C until it is done: with SIGINT 0.3 s into the call, the
    KeyboardInterrupt comes only when the sum is complete (1.5-4.6 s after SIGINT here). The
    same expression without the sum, over two arrays, stops at the next 4M-element check: 0.47 s
    after SIGINT here, not ~50 ms either, and this test's bound would refuse that too."""
    expr = "sum(" + " + ".join(f"sin(x*{k})" for k in range(1, 13)) + ")"
    rc, out = run_py(
        f"""
        import os, signal, threading, time, numpy as np, shmpool
        signal.signal(signal.SIGINT, signal.default_int_handler)
        x = np.random.rand(16_000_000)
        sent = []
        def interrupt():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)
        threading.Timer(0.3, interrupt).start()
        start = time.monotonic()
        try:
            shmpool.evaluate("{expr}", x=x)
            print("COMPLETED", flush=True)
        except KeyboardInterrupt:
            now = time.monotonic()
            print("KBI after %.3f of %.3f s" % (now - sent[0], now - start), flush=True)
        """,
        timeout=180,
    )
    assert "KBI after" in out, f"rc={rc}: {out}"
    delay, total = (float(v) for v in out.split("KBI after")[1].split()[0:3:2])
    # Interrupted promptly: the delay is a small part of the call. Not interruptible: the call
    # ran to completion (>= 1 s on 2 cores) and the delay is most of it.
    assert delay < 0.5 * total, f"KeyboardInterrupt came {delay} s after Ctrl-C, {total} s into the call"



def test_map_of_a_plain_array_copies_it_once():
    """Promise (issue): 'arrays not yet in shared memory are copied into it once' and map over a
    plain ndarray returns a new array. Mapping a 381 MiB float64 array raises the process's peak
    RSS by ~3x the array (1,146 MiB: the input's staging copy, the output's staging buffer AND a
    third copy of the result out of it), where one copy in and the result need 2x."""
    rc, out = run_py(
        """
        import numpy as np, shmpool, review2_kernels as rk
        def hwm():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
        a = np.ones(50_000_000)
        before = hwm()
        with shmpool.Pool(2) as p:
            r = p.map(rk.copy, a)
        assert (r == 1).all()
        print("GROWTH %.2f" % ((hwm() - before) / a.nbytes), flush=True)
        """,
        timeout=180,
    )
    assert "GROWTH" in out, f"rc={rc}: {out}"
    growth = float(out.split("GROWTH")[1].split()[0])
    assert growth <= 2.2, f"peak RSS grew by {growth}x the array"



def test_exception_class_of_main_arrives_as_itself():
    """Promise (issue): 'an exception raised by the callable arrives in the parent as an exception
    of the same type and message where it can be rebuilt'. A script that defines its kernel and
    its exception class in __main__ (the kernel travels by value with cloudpickle) gets
    KernelError('__main__.MyErr: from main'), though MyErr is right there in the parent: the
    worker pickles the exception by reference to a __main__ it does not have."""
    rc, out = run_py(
        """
        import numpy as np, shmpool
        class MyErr(Exception):
            pass
        def k(a, b):
            raise MyErr("from main")
        with shmpool.Pool(1) as p:
            try:
                p.map(k, np.arange(3.0))
            except MyErr as e:
                print("GOT MyErr", e, flush=True)
            except Exception as e:
                print("GOT", type(e).__name__, e, flush=True)
        """
    )
    assert "GOT MyErr from main" in out, f"rc={rc}: {out}"



def test_imap_with_a_kernel_returning_an_array():
    """Promise (issue): `for r in pool.imap(kernel_returning_array, batches): ...`. A kernel
    that takes a batch and returns an array (rk.doubled(batch) -> batch * 2) fails with
    TypeError 'doubled() takes 1 positional argument but 2 were given': imap calls every kernel
    as f(chunk_in, chunk_out) and ignores what it returns."""
    batches = [np.arange(3.0), np.arange(4.0)]
    with shmpool.Pool(2) as pool:
        got = list(pool.imap(rk.doubled, batches))
    assert [g.tolist() for g in got] == [(b * 2).tolist() for b in batches]



def test_fork_warning_speaks_python():
    """Promise (issue): a Python package with docstrings and a README section for Python users.
    Pool(start_method='fork') in a process that runs a thread prints on stderr 'shmpool: forking
    workers from a multi-threaded process ...; use StartMethod::ForkServer or Spawn': the Rust
    API's names, where a Python user needs start_method='forkserver' or 'spawn' (and a
    warnings.warn they can filter, not a raw stderr line)."""
    rc, out = run_py(
        """
        import threading, time, numpy as np, shmpool, review2_kernels as rk
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
        with shmpool.Pool(1, start_method="fork") as p:
            print("RESULT", p.map(rk.copy, np.arange(3.0)).tolist(), flush=True)
        """
    )
    assert "RESULT [0.0, 1.0, 2.0]" in out, f"rc={rc}: {out}"
    assert "StartMethod::" not in out, out



@pytest.mark.parametrize(
    "expr, x",
    [
        ("x / 0", np.arange(3.0)),
        ("log(x)", np.arange(3.0) - 1),
        ("sqrt(x)", np.arange(3.0) - 1),
        ("x // 0", np.arange(3)),
        ("x + 70000.0", np.arange(3, dtype=np.float16)),
        ("sum(x)", np.array([65504, 65504], dtype=np.float16)),
    ],
)
def test_evaluate_warns_as_numpy(expr, x):
    """Promise: evaluate has 'numpy's semantics' (README: 'numpy's ... NaN rules, errors and
    warnings'). numpy warns 'divide by zero' / 'invalid value' / 'overflow encountered'
    (RuntimeWarning) for x / 0, log of negatives, sqrt of negatives, integer // 0, a float16
    overflow and a float16 sum that overflows; shmpool.evaluate returns the same values silently."""
    with pytest.warns(RuntimeWarning):
        shmpool.evaluate(expr, x=x)



def test_evaluate_honours_errstate_raise():
    """Promise: 'numpy's semantics'. Under np.errstate(all='raise') numpy raises
    FloatingPointError for x / 0; shmpool.evaluate returns [nan, inf, inf], so code that relies on
    errstate to catch bad data gets it silently."""
    x = np.arange(3.0)
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError):
            _ = x / 0
        with pytest.raises(FloatingPointError):
            shmpool.evaluate("x / 0", x=x)



@pytest.mark.parametrize(
    "expr, x, numpy_error",
    [
        ("x + 300", np.arange(3, dtype=np.int8), OverflowError),
        ("-x", np.array([True, False]), TypeError),
    ],
)
def test_evaluate_errors_have_numpys_types(expr, x, numpy_error):
    """Promise: evaluate has 'numpy's semantics ... errors'. numpy raises OverflowError for a
    Python int out of an int8's range (x + 300) and TypeError for negating a bool array; shmpool
    raises ExpressionError (a ValueError) for both, so `except OverflowError` / `except TypeError`
    written for numpy does not catch them."""
    with pytest.raises(numpy_error):
        shmpool.evaluate(expr, x=x)



@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_chunk_timeout_does_not_count_the_workers_warm_up(start_method):
    """Promise (issue): 'chunk_timeout= kills a hung callable'. With chunk_timeout=0.02 a
    callable that copies 1,000 elements (microseconds) raises ChunkTimeout ('chunk on index range
    0..1000 timed out after 20ms') on the pool's first map under forkserver and spawn: the
    worker's first chunk includes importing numpy and unpickling the callable (~60-200 ms), and
    the timeout counts it. (Under fork, which has numpy already, the same map takes 1 ms.)"""
    with shmpool.Pool(2, start_method=start_method, chunk_timeout=0.02) as pool:
        assert pool.map(rk.copy, np.arange(1000.0)).tolist() == list(np.arange(1000.0))



def test_uncaught_kernel_exception_shows_where_it_failed():
    """Promise (issue): the exception arrives 'with the chunk's range' and the traceback text, as
    multiprocessing's does (its uncaught worker exceptions print the worker's traceback as a
    RemoteTraceback cause). An uncaught ValueError from rk.fail_deep prints only the parent's
    frames ending in 'raise _rebuild(e) from None': the worker's frames (review2_kernels.py,
    _inner_helper) are in .worker_traceback, which nothing prints."""
    rc, out = run_py(
        """
        import numpy as np, shmpool, review2_kernels as rk
        with shmpool.Pool(1) as p:
            p.map(rk.fail_deep, np.arange(3.0))
        """
    )
    assert rc == 1 and "ValueError: bad value in chunk" in out, f"rc={rc}: {out}"
    assert "_inner_helper" in out, out



def test_evaluate_into_out_allocates_no_temporary():
    """Promise (issue): evaluate is 'numexpr's call' and 'accept[s] out=' (numexpr writes into
    out directly). Over a plain 381 MiB float64 array with a preallocated out, evaluate('x * 2 +
    1', x=x, out=out) still raises the peak RSS by a whole result (~1.0x the array): it computes
    into np.empty(...) and np.copyto's it into out."""
    rc, out = run_py(
        """
        import numpy as np, shmpool
        def hwm():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
        x = np.ones(50_000_000)
        o = np.ones(50_000_000)
        shmpool.evaluate("x * 2 + 1", x=x[:100_000], out=o[:100_000])   # warm up the pool
        before = hwm()
        shmpool.evaluate("x * 2 + 1", x=x, out=o)
        assert (o == 3).all()
        print("GROWTH %.2f" % ((hwm() - before) / x.nbytes), flush=True)
        """,
        timeout=180,
    )
    assert "GROWTH" in out, f"rc={rc}: {out}"
    growth = float(out.split("GROWTH")[1].split()[0])
    assert growth <= 0.2, f"peak RSS grew by {growth}x the array"


@pytest.mark.parametrize("fn, dtype, n", [("sum", "float64", 7), ("mean", "float64", 7), ("sum", "float32", 100_003), ("mean", "float32", 7)])
def test_float_reductions_are_at_least_as_accurate_as_numpys(fn, dtype, n):
    """Promise: evaluate('sum(x * x)', x=a) 'is np.sum(a * a)' (README), numpy's result types,
    and sums 'at least as accurate as numpy's pairwise summation' (the issue), deterministic.
    shmpool's float sums and means differ from numpy's in the last bit on some arrays (e.g. a
    float64 sum of 7 values: 30.18466071487155 against numpy's 30.184660714871548): the engine
    sums compensated in float64 and rounds once. Over 20 random arrays, each of shmpool's
    results is no farther from the exact value (math.fsum) than numpy's, and has its dtype."""
    import math

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = (rng.random(n) * 10).astype(dtype)
        exact = math.fsum(x.astype(np.float64).tolist()) / (n if fn == "mean" else 1)
        got, ref = shmpool.evaluate(f"{fn}(x)", x=x), getattr(np, fn)(x)
        assert np.asarray(got).dtype == np.asarray(ref).dtype
        assert abs(float(got) - exact) <= abs(float(ref) - exact), (got, ref, exact)



def test_partial_of_a_main_function():
    """Promise (README): 'lambdas and closures need cloudpickle installed' -- with it, functions
    of __main__ travel by value. functools.partial(scale, 3.0) of a function of the script
    pickles by reference (the partial's module is functools, so the __main__ check misses it) and
    fails in the worker: AttributeError "Can't get attribute 'scale' on <module '__main__'>".
    (A callable instance of a __main__ class works.)"""
    pytest.importorskip("cloudpickle")
    rc, out = run_py(
        """
        import functools, numpy as np, shmpool
        def scale(k, a, b):
            b[:] = a * k
        with shmpool.Pool(1) as p:
            print("RESULT", p.map(functools.partial(scale, 3.0), np.arange(3.0)).tolist(), flush=True)
        """
    )
    assert "RESULT [0.0, 3.0, 6.0]" in out, f"rc={rc}: {out}"



def test_zeros_like_keeps_the_layout_as_numpy():
    """Promise (README): 'shmpool.zeros(shape, dtype) follows np.zeros'; zeros_like/empty_like
    'follow their model' (test_shared.py). np.zeros_like of a Fortran-ordered array is
    Fortran-ordered (order='K'), so code that hands it to Fortran/LAPACK-style consumers gets no
    copy; shmpool.zeros_like / empty_like return C order, and shmpool.zeros(..., order='F')
    raises TypeError (unexpected keyword)."""
    f = np.asfortranarray(np.ones((2, 3)))
    assert np.zeros_like(f).flags.f_contiguous
    assert shmpool.zeros_like(f).flags.f_contiguous
    assert shmpool.empty_like(f).flags.f_contiguous
    assert shmpool.zeros((2, 3), order="F").flags.f_contiguous  # type: ignore[call-arg]



@pytest.mark.parametrize("kind", ["transposed", "big_endian"])
def test_map_file_reads_what_np_save_writes(tmp_path, kind):
    """Promise (issue): map_file uses the engine with 'numpy semantics' over .npy files, and the
    rest of the package takes big-endian and non-contiguous arrays (one copy). np.save of a
    transposed array writes fortran_order=True, and of a '>f8' array a big-endian file; map_file
    refuses both with ValueError ('Fortran-order arrays are not supported (save with
    np.ascontiguousarray)', 'big-endian data is not supported'), where np.load reads them."""
    a = np.arange(6.0).reshape(2, 3).T if kind == "transposed" else np.arange(6, dtype=">f8")
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, a)
    with shmpool.Pool(1) as pool:
        pool.map_file(src, dst, "x * 2")
    assert np.array_equal(np.load(dst), a * 2)



def test_system_exit_in_the_callable_keeps_its_message():
    """Promise (issue): else 'shmpool.KernelError with the type name, message and traceback
    text'. SystemExit('kernel gave up with code 4') raised by the callable arrives as
    KernelError('an exception that does not unpickle in this process (not an Exception:
    SystemExit)'): the message is gone (the pickled exception is dropped as not an Exception,
    and the text form was never sent)."""
    with shmpool.Pool(1) as pool:
        with pytest.raises(shmpool.KernelError) as info:
            pool.map(rk.raise_system_exit, np.arange(10.0))
    text = str(info.value) + getattr(info.value, "detail", "")
    assert "kernel gave up with code 4" in text, text
