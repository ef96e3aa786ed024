"""W1 (``sqrt(x) * 1.5 + 0.25`` over float64) from Python, every contender in one run.

Medians of ``--repeat`` runs, same process, same data, each result checked against numpy.
Contenders: shmpool.evaluate; shmpool Pool.map with a numpy callable; multiprocessing.Pool.map
over chunks; a hand-written multiprocessing pool over shared_memory.SharedMemory;
concurrent.futures.ProcessPoolExecutor; joblib (loky) and numexpr (2 threads) when installed;
numpy single-threaded. Then pool start-up per start method beside multiprocessing's Pool(2), and
a 1024-element round trip (shmpool submit) beside Pool.apply_async.

The lead runs it on a quiet machine:  python python/bench/w1.py  (50M elements by default);
a smoke run:  python python/bench/w1.py --n 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing as mp
import os
import statistics
import sys
import time
from multiprocessing import shared_memory

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _kernels  # noqa: E402

import shmpool  # noqa: E402

EXPR = "sqrt(x) * 1.5 + 0.25"


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def chunks(n: int, k: int) -> list[tuple[int, int]]:
    step = -(-n // k)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    n, j, rep = args.n, args.workers, args.repeat
    x = (np.arange(n) % 1000) + 0.5
    want = _kernels.w1_return(x)
    results: dict[str, float] = {}

    def check(name: str, got: np.ndarray) -> None:
        if not np.array_equal(got, want):
            raise SystemExit(f"{name}: wrong result")

    def run(name: str, fn) -> None:
        check(name, fn())
        results[name] = median_time(fn, rep)
        print(f"{name:44s} {results[name] * 1e3:9.1f} ms", flush=True)

    run("numpy, 1 thread", lambda: np.sqrt(x) * 1.5 + 0.25)
    try:
        import numexpr

        numexpr.set_num_threads(2)
        run("numexpr, 2 threads", lambda: numexpr.evaluate(EXPR, local_dict={"x": x}))
    except ImportError:
        print("numexpr: not installed, skipped")

    with shmpool.Pool(j) as pool:
        run(f"shmpool.evaluate, plain array ({j})", lambda: pool.evaluate(EXPR, x=x))
        xs = shmpool.zeros(n)
        xs[:] = x
        out = shmpool.empty_like(xs)
        run(f"shmpool evaluate, shared in/out ({j})", lambda: pool.evaluate(EXPR, x=xs, out=out))
        run(f"shmpool Pool.map, numpy callable ({j})", lambda: pool.map(_kernels.w1_chunk, xs, out=out))
        del xs, out

    parts = chunks(n, j * 4)
    with mp.get_context("forkserver").Pool(j) as p:
        run(f"multiprocessing Pool.map over chunks ({j})", lambda: np.concatenate(p.map(_kernels.w1_return, [x[lo:hi] for lo, hi in parts])))

        a = shared_memory.SharedMemory(create=True, size=x.nbytes)
        b = shared_memory.SharedMemory(create=True, size=x.nbytes)
        try:
            np.ndarray((n,), np.float64, buffer=a.buf)[:] = x
            y = np.ndarray((n,), np.float64, buffer=b.buf)

            def hand():
                p.map(_kernels.w1_shm, [(a.name, b.name, n, lo, hi) for lo, hi in parts])
                return y

            run(f"hand-written SharedMemory pool ({j})", hand)
            del y
        finally:
            a.close(), a.unlink(), b.close(), b.unlink()

    with concurrent.futures.ProcessPoolExecutor(j, mp_context=mp.get_context("forkserver")) as ex:
        run(f"ProcessPoolExecutor.map over chunks ({j})", lambda: np.concatenate(list(ex.map(_kernels.w1_return, [x[lo:hi] for lo, hi in parts]))))
    try:
        import joblib

        with joblib.Parallel(n_jobs=j, backend="loky") as par:
            run(f"joblib loky ({j})", lambda: np.concatenate(par(joblib.delayed(_kernels.w1_return)(x[lo:hi]) for lo, hi in parts)))
    except ImportError:
        print("joblib: not installed, skipped")

    print("\nratios (same run, medians):")
    base = results.get(f"shmpool.evaluate, plain array ({j})")
    ne = results.get("numexpr, 2 threads")
    if base and ne:
        print(f"  evaluate vs numexpr(2):               {ne / base:5.2f}x (target >= 1.2)")
    pm = results.get(f"shmpool Pool.map, numpy callable ({j})")
    hw = results.get(f"hand-written SharedMemory pool ({j})")
    mpm = results.get(f"multiprocessing Pool.map over chunks ({j})")
    if pm and hw:
        print(f"  Pool.map vs hand-written SharedMemory: {hw / pm:5.2f}x (target >= 1.5)")
    if pm and mpm:
        print(f"  Pool.map vs multiprocessing Pool.map:  {mpm / pm:5.2f}x (target >= 20)")

    print("\npool start-up (2 workers, median):")
    for m in ("fork", "forkserver", "spawn"):
        t = median_time(lambda: shmpool.Pool(2, start_method=m).terminate(), rep)
        print(f"  shmpool {m:11s} {t * 1e3:8.2f} ms")
    for m in ("fork", "forkserver", "spawn"):
        def mp_start(m=m):
            with mp.get_context(m).Pool(2) as p:
                p.apply(_kernels.noop, (0,))
        print(f"  multiprocessing {m:11s} {median_time(mp_start, rep) * 1e3:8.2f} ms (incl. one apply)")

    print("\n1024 float64 round trip (median of 200):")
    batch = np.random.default_rng(0).random(1024)
    with shmpool.Pool(2) as pool:
        pool.submit(_kernels.w1_chunk, batch).result()
        t = median_time(lambda: pool.submit(_kernels.w1_chunk, batch).result(), 200)
        print(f"  shmpool submit            {t * 1e6:8.1f} us")
        t = median_time(lambda: pool.evaluate(EXPR, x=batch), 200)
        print(f"  shmpool evaluate          {t * 1e6:8.1f} us")
    with mp.get_context("forkserver").Pool(2) as p:
        p.apply(_kernels.w1_return, (batch,))
        t = median_time(lambda: p.apply_async(_kernels.w1_return, (batch,)).get(), 200)
        print(f"  multiprocessing apply_async {t * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
