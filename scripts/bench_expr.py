#!/usr/bin/env python3
"""Several inputs, reductions and broadcasting: `shmpool map` / `shmpool reduce` against numpy
and numexpr, IN THE SAME RUN, on the same files (issue #18's measurement; not run by CI).

Workloads (N float64 elements, default 100,000,000; M = isqrt(N), default 10,000):

  a * b + c        three (N,) inputs, one (N,) output file
  x * 2 + 1        the same over one input (the one-input ratio, measured in the same run)
  sum(x * x)       one (N,) input, one number
  mean(x), std(x)  one (N,) input, one number each
  m + v            broadcasting: (M, M) + (M,), one (M, M) output file

Tools, each run as a fresh process under `/usr/bin/time -v` (wall time). Peak RSS comes from one
more, untimed run of each command that samples `VmHWM` (the kernel's high-water mark of the
resident set) of the command and every process under it every 2 ms (`tree_peak`): the largest
of them, so for shmpool the largest of the CLI, its fork server and its workers (the workers'
own peaks never reach the CLI's rusage, which `time -v` reports). Pages of the mapped input
files count there, as they do for numpy and numexpr:

  shmpool  shmpool map a=a.npy b=b.npy c=c.npy -o y.npy --expr 'a * b + c' -j JOBS
           shmpool reduce x.npy --expr 'sum(x * x)' -j JOBS          (likewise mean, std, m + v)
  numpy    np.load(..., mmap_mode='r'), the numpy expression, np.save / print
  numexpr  the same loads, ne.set_num_threads(JOBS), ne.evaluate(...), np.save / print
           (numexpr has no mean/std: sum(x) / n and sqrt(sum((x - mean) ** 2) / n))
  floor    a * b + c only: examples/floor_map.rs, the least any program can do for that job
           (JOBS threads over the mapped inputs and a fresh mapped output, nothing else); what
           no tool can beat here, so that a goal against numexpr can be checked against it

Runs are interleaved (shmpool, numpy, numexpr, shmpool, ...) so that drifting load hits all
three alike; the table reports medians of RUNS runs and ratios against numexpr within this run.
The page cache is warm (the inputs are written, then read once, before timing). Results are
checked: map outputs must equal numpy's exactly, reductions agree to 1e-9 relative.

Usage (environment variables or options):

  N=100000000 RUNS=3 JOBS=2 target/pyenv/bin/python scripts/bench_expr.py
  N=200000 RUNS=1 target/pyenv/bin/python scripts/bench_expr.py     # a smoke test, seconds

  --n N  --runs RUNS  --jobs JOBS  --dir DIR (default: a temporary directory under target/)
  --shmpool PATH (default target/release/shmpool, built with `cargo build --release` if missing)
  --floor PATH (default target/release/examples/floor_map, built likewise if missing)
  --python PATH (default: this interpreter; it needs numpy and numexpr)

Disk: 5 files of N float64 (4 GB at the default N) plus one output at a time.
"""

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd, env):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, stdout)."""
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    if not wall:
        sys.exit(f"no /usr/bin/time -v report for {' '.join(cmd)}:\n{p.stderr[-2000:]}")
    h, m, s = wall.groups()
    secs = int(h or 0) * 3600 + int(m) * 60 + float(s)
    return secs, p.stdout.strip()


def descendants(pid):
    """Live processes under pid (children, theirs, ...), from /proc."""
    parent = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if rest[0] != "Z":
                parent[int(e)] = int(rest[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def vm_hwm(pid):
    """A process's peak resident set so far (bytes), or 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_peak(cmd, env):
    """Runs cmd once more, untimed, and returns the largest peak resident set (bytes) of it and of
    every process under it, sampled every 2 ms (`VmHWM` only grows, so a sample is at most 2 ms
    short of a process's peak)."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while p.poll() is None:
        peak = max([peak] + [vm_hwm(q) for q in [p.pid, *descendants(p.pid)]])
        time.sleep(0.002)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return peak


def generate(py, d, n, side):
    """Writes the inputs with numpy (seeded), then reads them once (a warm page cache)."""
    code = f"""
import numpy as np
rng = np.random.default_rng(18)
n, m, d = {n}, {side}, {d!r}
for name in 'abc':
    np.save(f'{{d}}/{{name}}.npy', rng.standard_normal(n))
np.save(f'{{d}}/x.npy', rng.uniform(-1e3, 1e3, n))
np.save(f'{{d}}/m.npy', rng.standard_normal((m, m)))
np.save(f'{{d}}/v.npy', rng.standard_normal(m))
"""
    subprocess.run([py, "-c", code], check=True)
    for name in "abcxmv":
        with open(os.path.join(d, f"{name}.npy"), "rb") as f:
            while f.read(1 << 24):
                pass


def cases(a, d, jobs):
    """{workload: {tool: (command, output file or None)}}."""
    f = lambda name: os.path.join(d, f"{name}.npy")  # noqa: E731
    y = f("y")
    sp = [a.shmpool]
    j = ["-j", str(jobs)]
    load = lambda *names: "import numpy as np; " + "; ".join(  # noqa: E731
        f"{n} = np.load({f(n)!r}, mmap_mode='r')" for n in names)
    ne = f"import numexpr as ne; ne.set_num_threads({jobs})"
    py = lambda code: [a.python, "-c", code]  # noqa: E731
    return {
        "a * b + c": {
            "shmpool": (sp + ["map", f"a={f('a')}", f"b={f('b')}", f"c={f('c')}", "-o", y, "--expr", "a * b + c",
                              *j, "--quiet"], y),
            "numpy": (py(f"{load('a', 'b', 'c')}; np.save({y!r}, a * b + c)"), y),
            "numexpr": (py(f"{load('a', 'b', 'c')}; {ne}; np.save({y!r}, ne.evaluate('a * b + c'))"), y),
            "floor": ([a.floor, str(jobs), y, f("a"), f("b"), f("c")], y),
        },
        "x * 2 + 1": {
            "shmpool": (sp + ["map", f("x"), "-o", y, "--expr", "x * 2 + 1", *j, "--quiet"], y),
            "numpy": (py(f"{load('x')}; np.save({y!r}, x * 2 + 1)"), y),
            "numexpr": (py(f"{load('x')}; {ne}; np.save({y!r}, ne.evaluate('x * 2 + 1'))"), y),
        },
        "sum(x * x)": {
            "shmpool": (sp + ["reduce", f("x"), "--expr", "sum(x * x)", *j], None),
            "numpy": (py(f"{load('x')}; print(repr(np.sum(x * x)))"), None),
            "numexpr": (py(f"{load('x')}; {ne}; print(repr(ne.evaluate('sum(x * x)')[()]))"), None),
        },
        "mean(x)": {
            "shmpool": (sp + ["reduce", f("x"), "--expr", "mean(x)", *j], None),
            "numpy": (py(f"{load('x')}; print(repr(np.mean(x)))"), None),
            "numexpr": (py(f"{load('x')}; {ne}; print(repr(ne.evaluate('sum(x)')[()] / x.size))"), None),
        },
        "std(x)": {
            "shmpool": (sp + ["reduce", f("x"), "--expr", "std(x)", *j], None),
            "numpy": (py(f"{load('x')}; print(repr(np.std(x)))"), None),
            "numexpr": (py(f"{load('x')}; {ne}; mu = ne.evaluate('sum(x)')[()] / x.size; "
                           f"print(repr(float(np.sqrt(ne.evaluate('sum((x - mu) ** 2)')[()] / x.size))))"), None),
        },
        "m + v (broadcast)": {
            "shmpool": (sp + ["map", f"m={f('m')}", f"v={f('v')}", "-o", y, "--expr", "m + v", *j, "--quiet"], y),
            "numpy": (py(f"{load('m', 'v')}; np.save({y!r}, m + v)"), y),
            "numexpr": (py(f"{load('m', 'v')}; {ne}; np.save({y!r}, ne.evaluate('m + v'))"), y),
        },
    }


def reporting_note():
    """A line about this VM's free page reporting when it is on at once (min_free_ms = 0), else ''.

    A Firecracker guest with virtio_balloon free page reporting gives memory freed more than
    about 2 s ago back to its host; the next program to take fresh memory pays a host fault per
    page. numexpr and numpy take 1-4 GB of fresh memory per run, so their times then swing by 4x
    from run to run, and so do the ratios. Raising min_free_ms keeps freed memory for that long
    (stable, warm figures: the regime least favourable to shmpool); the script never changes it.
    """
    knob = "/sys/module/page_reporting/parameters/min_free_ms"
    try:
        with open(knob) as f:
            if f.read().strip() != "0":
                return ""
    except OSError:
        return ""
    return (f"note: free page reporting is on with {knob} = 0: numexpr's and numpy's times swing with "
            f"host faults on fresh memory. For warm, stable figures: echo 30000 > {knob} (and 0 after).\n")


def number(s):
    """The value a tool printed: numpy's repr (`np.float64(1.5)`) or a plain float."""
    m = re.search(r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)", s.split("(")[-1] if "(" in s else s)
    if not m:
        sys.exit(f"no number in {s!r}")
    return float(m.group(0))


def check(a, tool, workload, out, printed, reference, d):
    """Compares a tool's result with numpy's (kept from the first run)."""
    if out is None:
        v = number(printed)
        if workload not in reference:
            reference[workload] = v
        ref = reference[workload]
        ok = v == ref or abs(v - ref) <= 1e-9 * max(abs(ref), 1e-300)
    else:
        keep = os.path.join(d, f"ref_{len(reference)}.npy")
        if workload not in reference:
            os.replace(out, keep)
            reference[workload] = keep
            return True
        code = (f"import numpy as np, sys; a = np.load({out!r}, mmap_mode='r'); "
                f"b = np.load({reference[workload]!r}, mmap_mode='r'); "
                f"sys.exit(0 if a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b) else 1)")
        ok = subprocess.run([a.python, "-c", code]).returncode == 0
        os.unlink(out)
    if not ok:
        print(f"warning: {tool} disagrees with numpy on {workload}", file=sys.stderr)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=int(os.environ.get("N", 100_000_000)))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", 3)))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", 2)))
    ap.add_argument("--dir", default=os.environ.get("DIR"))
    ap.add_argument("--shmpool", default=os.environ.get("SHMPOOL", "target/release/shmpool"))
    ap.add_argument("--python", default=os.environ.get("PYTHON", sys.executable))
    ap.add_argument("--floor", default=os.environ.get("FLOOR", "target/release/examples/floor_map"))
    a = ap.parse_args()
    if not os.path.exists(a.shmpool):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "shmpool"], check=True)
    if not os.path.exists(a.floor):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "floor_map"], check=True)
    side = max(1, math.isqrt(a.n))
    env = dict(os.environ, OMP_NUM_THREADS=str(a.jobs), NUMEXPR_MAX_THREADS=str(a.jobs),
               OPENBLAS_NUM_THREADS=str(a.jobs))
    base = a.dir or "target"
    os.makedirs(base, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_expr_", dir=base) as d:
        generate(a.python, d, a.n, side)
        table = cases(a, d, a.jobs)
        # numpy first in every workload: its result is the reference.
        order = ["numpy", "numexpr", "shmpool", "floor"]
        times = {(w, t): [] for w in table for t in table[w]}
        rss = {(w, t): 0 for w in table for t in table[w]}
        agree = {(w, t): True for w in table for t in table[w]}
        reference = {}
        for _ in range(a.runs):
            for w, tools in table.items():
                for t in (t for t in order if t in tools):
                    cmd, out = tools[t]
                    secs, printed = timed(cmd, env)
                    times[w, t].append(secs)
                    agree[w, t] &= check(a, t, w, out, printed, reference, d)
        # Memory: one more run of each command, untimed, sampling its whole process tree.
        for w, tools in table.items():
            for t in (t for t in order if t in tools):
                cmd, out = tools[t]
                rss[w, t] = tree_peak(cmd, env)
                if out is not None and os.path.exists(out):
                    os.unlink(out)
    print(reporting_note(), end="")
    print(f"N = {a.n:,} float64 (broadcast: ({side}, {side}) + ({side},)), {a.jobs} jobs / threads, "
          f"median of {a.runs} interleaved runs, warm page cache\n")
    print("| workload | tool | median s | speed vs numexpr | peak RSS | RSS vs numexpr | agrees with numpy |")
    print("|---|---|---:|---:|---:|---:|---|")
    for w in table:
        ref_t = statistics.median(times[w, "numexpr"])
        for t in (t for t in ["shmpool", "floor", "numexpr", "numpy"] if t in table[w]):
            m = statistics.median(times[w, t])
            speed = ref_t / m if m > 0 else float("inf")
            print(f"| {w} | {t} | {m:.3f} | {speed:.2f}x | {rss[w, t] / 2**20:.1f} MiB | "
                  f"{rss[w, t] / max(rss[w, 'numexpr'], 1):.3f} | {'yes' if agree[w, t] else 'NO'} |")
    w = "a * b + c"
    sp, fl, ne = (statistics.median(times[w, t]) for t in ("shmpool", "floor", "numexpr"))
    print(f"\n{w}: shmpool takes {sp / fl:.2f}x the floor's time. The floor reaches {ne / fl:.2f}x numexpr: "
          f"{ne / fl:.2f}x is the most any tool can reach on this machine in this run "
          f"(3x would need {ne / 3:.3f} s).")
    for w in ("a * b + c", "x * 2 + 1"):
        ratios = ", ".join(f"{n / s:.2f}x" for n, s in zip(times[w, "numexpr"], times[w, "shmpool"]))
        print(f"{w}, numexpr's time / shmpool's, run by run: {ratios}")


if __name__ == "__main__":
    main()
