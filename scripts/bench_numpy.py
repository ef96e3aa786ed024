#!/usr/bin/env python3
"""File-to-file `shmpool map` against numpy and numexpr (not run by CI).

Times `out = sqrt(x) * 1.5 + 0.25` from one float64 .npy file to another, the way each tool
is used from the command line or a script:

  shmpool  shmpool map IN.npy -o OUT.npy --expr 'sqrt(x) * 1.5 + 0.25' -j THREADS
  numpy    x = np.load(IN, mmap_mode='r'); np.save(OUT, np.sqrt(x) * 1.5 + 0.25)
  numexpr  x = np.load(IN, mmap_mode='r'); ne.set_num_threads(THREADS);
           np.save(OUT, ne.evaluate('sqrt(x) * 1.5 + 0.25'))

Each run is a fresh process; runs are interleaved (shmpool, numpy, numexpr, shmpool, ...) so
that drifting machine load hits all three alike; the table gives the median wall time and the
peak RSS of the largest process of one more, untimed run of each command, sampled by
bench_expr.py's `tree_peak` (for shmpool: the CLI, its fork server and its workers, whose
peaks wait4 on the CLI never sees; pages of the mapped files count there, as they do for
numpy). The page cache is warm (the input is read once before timing).

Usage: scripts/bench_numpy.py [--n 100000000] [--runs 5] [--threads 2] [--dir DIR]
                              [--shmpool target/release/shmpool] [--python target/pyenv/bin/python]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_expr import tree_peak

EXPR = "sqrt(x) * 1.5 + 0.25"


def run(cmd, env=None):
    """Runs cmd; returns its wall seconds."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _, status, _ = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where the files go (default: a temporary directory)")
    ap.add_argument("--shmpool", default="target/release/shmpool")
    ap.add_argument("--python", default=sys.executable, help="a Python with numpy and numexpr")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        inp, out = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
        subprocess.run([a.shmpool, "gen", inp, "--len", str(a.n), "--dtype", "float64"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(inp, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        load = f"import numpy as np; x = np.load({inp!r}, mmap_mode='r')"
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), NUMEXPR_MAX_THREADS=str(a.threads))
        cases = {
            "shmpool map": [a.shmpool, "map", inp, "-o", out, "--expr", EXPR, "-j", str(a.threads), "--quiet"],
            "numpy": [a.python, "-c", f"{load}; np.save({out!r}, np.sqrt(x) * 1.5 + 0.25)"],
            f"numexpr ({a.threads} threads)": [
                a.python, "-c",
                f"{load}; import numexpr as ne; ne.set_num_threads({a.threads}); "
                f"np.save({out!r}, ne.evaluate({EXPR!r}))",
            ],
        }
        times = {k: [] for k in cases}
        for _ in range(a.runs):
            for name, cmd in cases.items():
                times[name].append(run(cmd, env))
                os.unlink(out)
        rss = {}
        for name, cmd in cases.items():
            rss[name] = tree_peak(cmd, env)
            os.unlink(out)

    base = statistics.median(times["shmpool map"])
    print(f"{a.n:,} float64, `{EXPR}`, file to file, median of {a.runs} interleaved runs\n")
    print("| tool | median s | vs shmpool | peak RSS |")
    print("|---|---:|---:|---:|")
    for name in cases:
        m = statistics.median(times[name])
        print(f"| {name} | {m:.2f} | {m / base:.1f}x | {rss[name] / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
