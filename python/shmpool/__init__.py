"""shmpool: ``multiprocessing.Pool`` for numpy arrays.

Worker processes attach to a shared-memory ring and map over arrays in place: nothing is
pickled, nothing goes through pipes, and a worker that crashes costs a retry, not your program.

>>> import numpy as np, shmpool
>>> x = np.arange(4.0)
>>> shmpool.evaluate("sqrt(x) * 1.5 + 0.25", x=x)
array([0.25      , 1.75      , 2.37132034, 2.84807621])

``evaluate`` and ``Pool.map_file`` run the Rust expression engine (numpy's semantics: types,
promotion, comparisons) with the GIL released. Arrays made by :func:`zeros` / :func:`empty_like`
live in shared memory and reach the workers without any copy; other arrays are copied into
shared memory once per call.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
import concurrent.futures
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from . import _native
from ._arrays import _SUPPORTED, _dtype, _owner, empty_like, is_shared, zeros, zeros_like
from ._expr import _IN_PROCESS_FROM, _check_fp, _evaluate_inputs, _flat, _rename, _reraise
from ._pickling import _payload, _pickle_callable, _rebuild, _returns_value
from ._submit import Submitter
from ._mailbox import _call_returning, _remove_box
from ._files import _ProgressLines, _map_file_in_memory, _needs_reading
from ._errors import (
    ChunkTimeout,
    ExpressionError,
    ExpressionOverflowError,
    ExpressionTypeError,
    KernelError,
    PoolClosed,
    SharedMemoryFull,
    ShmpoolError,
    WorkerCrashed,
)

PathLike = Union[str, "os.PathLike[str]"]

# Bytes of a plain input from which `Pool.map` returns its result in shared memory.
_SHARED_RESULT_FROM = 1 << 20

__all__ = [
    "Pool",
    "evaluate",
    "zeros",
    "zeros_like",
    "empty_like",
    "is_shared",
    "ShmpoolError",
    "WorkerCrashed",
    "KernelError",
    "ChunkTimeout",
    "ExpressionError",
    "ExpressionOverflowError",
    "ExpressionTypeError",
    "SharedMemoryFull",
    "PoolClosed",
]


def _route_spawned_children() -> None:
    """Children that shmpool starts by ``exec`` (spawn workers, the fork server) run this
    interpreter in isolated mode (``-I -S``: no site, no user environment, no numpy) with a
    command that loads exactly this extension file, after checking that it is still the file
    this process loaded (else it exits with code 85 and the pool reports that the child did not
    start), and hands over to the engine."""
    path = os.path.abspath(_native.__file__)
    st = os.stat(path)
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    cmd = (
        "import os\n"
        f"p = {path!r}\n"
        "s = os.stat(p)\n"
        f"if (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) != {ident!r}: os._exit(85)\n"
        "import importlib.machinery as m, importlib.util as u\n"
        "l = m.ExtensionFileLoader('shmpool._native', p)\n"
        "n = u.module_from_spec(u.spec_from_loader('shmpool._native', l))\n"
        "l.exec_module(n)\n"
        f"n._worker_main({os.path.dirname(os.path.dirname(np.__file__))!r})\n"
    )
    _native._set_spawn_route(["-I", "-S", "-c", cmd])


_route_spawned_children()

# Python's fork protocol (GIL, PyOS_BeforeFork / AfterFork_*) around every fork the engine
# makes here, so that `fork` workers run Python callables; removed at exit, after every other
# atexit handler of the package (they run last-in, first-out).
_native._install_fork_hooks()
# The engine's own warning about `fork` with threads names its Rust API: Pool warns instead.
_native._quiet_fork_warning()
atexit.register(_native._remove_fork_hooks)

class Pool:
    """A pool of worker processes mapping over numpy arrays in shared memory.

    ``Pool(processes)`` as ``multiprocessing.Pool``; ``start_method`` is ``"forkserver"``
    (the default: workers forked by a fresh, single-threaded interpreter, safe in a process that
    runs threads), ``"spawn"`` (a fresh interpreter per worker) or ``"fork"`` (workers forked
    from this process, as ``os.fork`` forks: the fastest start; replacement workers are forked
    from the pool's supervisor thread, so a callable that takes a lock another thread held at
    that instant may hang, as under ``multiprocessing``'s ``fork``);
    ``chunk_timeout`` (seconds) kills and replaces a worker whose chunk runs longer;
    ``max_attempts`` bounds how many workers one chunk may kill; ``maxtasksperchild`` recycles
    workers after that many chunks; ``initializer(*initargs)`` runs in each worker before its
    first ``map`` chunk. Use it as a context manager (``__exit__`` terminates it, as
    ``multiprocessing`` does) or call ``close()`` + ``join()``.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        *,
        start_method: Optional[str] = None,
        chunk_len: Optional[int] = None,
        chunk_timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        maxtasksperchild: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        # Run by each worker before the first chunk of a `map` it serves (workers are started
        # by the engine before any callable is known, so it runs lazily, once per process).
        self._init = b"" if initializer is None else _pickle_callable((initializer, tuple(initargs)))
        self._pid = os.getpid()
        if start_method == "fork" and threading.active_count() > 1:
            import warnings

            warnings.warn(
                "shmpool: forking workers from a process that runs other threads: a callable that "
                "takes a lock another thread held (logging, stdout) may hang in the workers; "
                "use start_method='forkserver' (the default) or 'spawn'",
                RuntimeWarning,
                stacklevel=2,
            )
        self._p = _native.Pool(
            processes,
            # The fork server is exec'd from this interpreter (a fresh, single-threaded one
            # loading only the extension), so it is safe whatever threads this process runs, and
            # its workers can run Python callables; `fork` must be asked for.
            start_method=start_method or "forkserver",
            chunk_len=chunk_len,
            chunk_timeout=chunk_timeout,
            max_attempts=max_attempts,
            maxtasksperchild=maxtasksperchild,
        )
        self._state = "running"
        self._submitter = Submitter(max(2, int(self._p.processes)))
        # The pool's mailbox (a private temporary directory, made on first use): what the
        # workers send back beyond the engine's messages (exceptions in full, returned values)
        # and payloads too large for a kernel's parameter block.
        self._box: list[Optional[str]] = [None]
        self._box_lock = threading.Lock()
        # At exit (or when the pool is collected): terminate the workers, which ends every map
        # still waiting (a pending submit of a hung callable), stop the submit threads and
        # remove the mailbox.
        self._finalizer = weakref.finalize(self, _finalize, self._p, self._submitter, self._pid, self._box)

    def _mailbox(self) -> str:
        with self._box_lock:
            if self._box[0] is None:
                import tempfile

                self._box[0] = tempfile.mkdtemp(prefix="shmpool-py-")
            return self._box[0]

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def close(self) -> None:
        """Accept no more work; the workers exit at :meth:`join`."""
        self._p.close()
        if self._state == "running":
            self._state = "closed"

    def join(self) -> None:
        """Wait for the workers to exit, after :meth:`close` or :meth:`terminate`."""
        if self._state == "running":
            raise ValueError("Pool is still running")
        self._submitter.shutdown(wait=True, cancel=False)
        self._p.join()
        _remove_box(self._box)

    def terminate(self) -> None:
        """Kill the workers at once and wait for them."""
        self._p.terminate()
        self._state = "terminated"
        self._submitter.shutdown(wait=True, cancel=True)
        _remove_box(self._box)

    @property
    def processes(self) -> int:
        """Number of worker processes."""
        return int(self._p.processes)

    @property
    def start_method(self) -> str:
        """How the workers were started: ``"fork"``, ``"forkserver"`` or ``"spawn"``."""
        return str(self._p.start_method)

    def pids(self) -> list[int]:
        """The pids of the live workers."""
        return list(self._p.pids())

    @property
    def worker_deaths(self) -> int:
        """Workers that died (crashed or were killed on a timeout) since the pool started."""
        return int(self._p.worker_deaths)

    @property
    def respawns(self) -> int:
        """Workers started to replace dead or recycled ones."""
        return int(self._p.respawns)

    def _check(self) -> None:
        if os.getpid() != self._pid:
            raise ShmpoolError(
                f"the pool belongs to process {self._pid} and cannot be used from process {os.getpid()}"
            )

    # -- expressions -------------------------------------------------------------------------

    def evaluate(self, expr: str, out: Optional[np.ndarray] = None, **arrays: Any) -> Any:
        """Evaluates ``expr`` over named arrays with numpy's semantics: over one, in the workers.

        ``pool.evaluate("sqrt(a) * 2", a=arr)`` computes what numpy computes for
        ``np.sqrt(arr) * 2``: same result dtype (NEP 50 promotion), same values. ``i`` is the
        flat index (int64). ``out`` receives the result (numpy's ``same_kind`` casting rule);
        otherwise a new array of the input's shape is returned, in shared memory when the input
        is. An input made by :func:`zeros` (shared memory) is read in place by the workers; the
        GIL is released while they run, and Ctrl-C terminates the pool and raises
        ``KeyboardInterrupt``. Any other array is evaluated where it is, on up to ``processes``
        threads of this process (the engine is shmpool's own code, with nothing to isolate; no
        copy into shared memory), with the GIL released and Ctrl-C checked every 4M elements (from 65,536 elements on; smaller batches go to the workers).

        Over several arrays (``pool.evaluate("a * b + c", a=x, b=y, c=z)``), types promote
        across the arrays and shapes broadcast as numpy's; ``i`` is the flat index of the
        result. These run in this process (on up to ``processes`` threads, GIL released, not
        interruptible by Ctrl-C), not in the workers, and return an ordinary array. Each
        argument is taken as an array (``np.asarray``): a Python number given as ``c=2.0`` is a
        float64 array, not numpy's weakly typed scalar; write constants into ``expr`` instead.

        Reductions over whole arrays (``sum prod mean min max std var count_nonzero any all
        argmin argmax nansum nanmean nanmin nanmax``; no ``axis=``) may appear anywhere in
        ``expr``, with ``size(name)`` for an array's element count: ``evaluate("sum(x * x)",
        x=a)`` is ``np.sum(a * a)`` and returns a numpy scalar as numpy does; ``evaluate("x -
        mean(x)", x=a)`` is ``a - np.mean(a)`` (the reductions first, then the rest). numpy's
        result types, NaN rules, errors (``min`` of nothing: ``ValueError``) and warnings
        (``mean`` of nothing: ``RuntimeWarning``; floating-point errors as ``np.errstate``
        says: checked on the result, see ``_check_fp``). Float sums are compensated in float64 and
        joined in a fixed order: the result does not depend on the number of threads. These run
        in this process as above.
        """
        r = self._evaluate_any(expr, out, arrays)
        _check_fp(expr, r, arrays, self.processes)
        return r

    def _evaluate_any(self, expr: str, out: Optional[np.ndarray], arrays: dict[str, Any]) -> Any:
        self._check()
        if not arrays:
            raise TypeError("evaluate takes at least one array as name=array (none given)")
        if len(arrays) > 1 or _native.has_reductions(expr):
            if self._state != "running":
                raise PoolClosed("Pool not running: it was closed or terminated")
            return _evaluate_inputs(expr, arrays, out, self.processes)
        ((name, x),) = arrays.items()
        if name == "i":
            raise TypeError("the name 'i' is the flat index (int64): give the array another name")
        plain_out = out is None or (isinstance(out, np.ndarray) and _owner(out) is None)
        xa = np.asarray(x)
        if xa.size >= _IN_PROCESS_FROM and _owner(xa) is None and plain_out:
            # Plain memory: the expression engine runs on threads of this process, reading the
            # array where it is (no copy into shared memory, no user code to isolate). Small
            # batches go to the workers, whose round trip (inline in a slot, ~20 us) beats
            # compiling and starting threads here.
            if self._state != "running":
                raise PoolClosed("Pool not running: it was closed or terminated")
            return _evaluate_inputs(expr, arrays, out, self.processes)
        engine_expr, spans = _rename(expr, name)
        x = np.asarray(x)
        dt = _dtype(x.dtype)
        if x.dtype != dt:
            x = x.astype(dt)
        try:
            res = np.dtype(_native.result_dtype(engine_expr, dt.name))
            r = self._evaluate(engine_expr, x, dt, res, out)
            # A 0-d result is a numpy scalar, as numpy returns.
            return r[()] if out is None and r.ndim == 0 else r
        except KeyboardInterrupt:
            self._state = "terminated"  # Ctrl-C terminated the pool's workers
            raise
        except ExpressionError as e:
            if spans:
                raise _reraise(e, expr, spans) from None
            raise

    def _evaluate(self, expr: str, x: np.ndarray, dt: np.dtype, res: np.dtype, out: Optional[np.ndarray]) -> np.ndarray:
        owner = _owner(x)
        xin: Any = owner if owner is not None else _flat(x)
        if out is None:
            if owner is not None:
                result = zeros(x.shape, res)
                self._p.evaluate(expr, xin, dt.name, _owner(result), res.name)
                return result
            r = self._p.evaluate(expr, xin, dt.name, None, res.name)
            if res == np.bool_:
                r = r.view(np.bool_)
            return r.reshape(x.shape)
        if not isinstance(out, np.ndarray):
            raise TypeError("out must be a numpy array")
        if out.shape != x.shape:
            raise ValueError(f"out has shape {out.shape}, the result has shape {x.shape}")
        if not np.can_cast(res, out.dtype, casting="same_kind"):
            raise TypeError(
                f"Cannot cast ufunc output from dtype('{res}') to dtype('{out.dtype}') with casting rule 'same_kind'"
            )
        if not out.flags.writeable:
            raise ValueError("output array is read-only")
        odt = out.dtype
        direct = odt in _SUPPORTED and out.flags.c_contiguous and not np.shares_memory(out, x)
        if not direct:
            np.copyto(out, self._evaluate(expr, x, dt, res, None), casting="same_kind")
            return out
        oowner = _owner(out)
        oin: Any = oowner if oowner is not None else _flat(out)
        self._p.evaluate(expr, xin, dt.name, oin, odt.name)
        return out

    # -- Python callables --------------------------------------------------------------------

    def map(
        self,
        f: Callable[[np.ndarray, np.ndarray], object],
        a: Any,
        out: Optional[np.ndarray] = None,
        *,
        dtype: Any = None,
    ) -> np.ndarray:
        """Calls ``f(chunk_in, chunk_out)`` in the worker processes over consecutive chunks of
        ``a``, where ``chunk_in`` is a read-only 1-D numpy view of a chunk of ``a`` (flat, in C
        order) and ``chunk_out`` the writable view of the same elements of the output; ``f``
        writes its results into ``chunk_out``. Returns ``out``, or a new array of ``a``'s shape
        and ``dtype`` (default: ``a``'s) with what ``f`` wrote, in shared memory when ``a`` is.

        Nothing is pickled but ``f`` itself (by reference: an importable function, as
        ``multiprocessing`` under spawn; a lambda or closure too if ``cloudpickle`` is
        installed). Inputs and outputs made by :func:`zeros` & co. are used in place; other
        arrays go through the pool's reusable shared staging buffers (one copy in, one copy
        out; small batches travel inside the ring's slots). Under ``forkserver`` and ``spawn`` the
        workers are fresh interpreters; under ``fork`` they are forks of this one (``os.fork``'s
        protocol: the GIL, ``os.register_at_fork`` callbacks) and see its state.

        A worker killed inside ``f`` is replaced and its chunk redone (after ``max_attempts``
        deaths: :class:`WorkerCrashed`); an exception raised by ``f`` is raised here as itself
        (pickled in the worker: same type and args) when it pickles, else rebuilt from its
        message when its type is built in, else as :class:`KernelError`, with the chunk's
        ``range`` and the innermost frames of its traceback (``worker_traceback``); ``chunk_timeout`` kills a hung ``f``. ``f`` must not keep a reference
        to its chunk views after returning: a worker where one survives exits (a crash).
        """
        self._check()
        a = np.asarray(a)
        dt = _dtype(a.dtype)
        if a.dtype != dt:
            a = a.astype(dt)
        odt = _dtype(dtype if dtype is not None else (out.dtype if out is not None else dt))
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("out must be a numpy array")
            if out.shape != a.shape:
                raise ValueError(f"out has shape {out.shape}, the input has shape {a.shape}")
            if not out.flags.writeable:
                raise ValueError("output array is read-only")
            direct = out.dtype == odt and out.flags.c_contiguous and not np.shares_memory(out, a)
            if not direct:
                np.copyto(out, self.map(f, a, dtype=odt), casting="unsafe")
                return out
        owner = _owner(a)
        if out is None and (owner is not None or a.nbytes >= _SHARED_RESULT_FROM):
            # A shared input gives a shared result. So does a large plain one: the workers write
            # the result in place, with no staging buffer to copy it out of (one copy of the
            # input in shared memory, then the result: twice the array at the peak, not three
            # times).
            return self.map(f, a, out=zeros(a.shape, odt))
        if a.size == 0:
            return out if out is not None else np.zeros(a.shape, odt)
        payload = _payload(f, dt, odt, self._init, self._mailbox())
        xin: Any = owner if owner is not None else _flat(a)
        oin: Any = None
        if out is not None:
            oo = _owner(out)
            oin = oo if oo is not None else _flat(out)
        try:
            r = self._p.map_py(payload, xin, dt.name, oin, odt.name)
        except KeyboardInterrupt:
            self._state = "terminated"
            raise
        except KernelError as e:
            err = _rebuild(e)
            raise err from err.__cause__
        if out is not None:
            return out
        if odt == np.bool_:
            r = r.view(np.bool_)
        return r.reshape(a.shape)

    def submit(
        self, f: Callable[[np.ndarray, np.ndarray], object], a: Any, out: Optional[np.ndarray] = None, *, dtype: Any = None
    ) -> "concurrent.futures.Future[np.ndarray]":
        """``apply_async``: starts ``map(f, a, out, dtype=dtype)`` and returns a
        ``concurrent.futures.Future`` of its result at once. Several submitted maps share the
        workers (the engine serves maps from many threads at once). The maps wait on daemon
        threads: the interpreter's exit does not wait for them (the pool's finalizer terminates
        the workers). Ctrl-C while waiting in ``result()`` terminates the pool, as during
        :meth:`map`."""
        self._check()
        if self._state != "running":
            raise PoolClosed("Pool not running: it was closed or terminated")
        return self._submitter.submit(self._interrupted, self.map, f, a, out, dtype=dtype)

    def _interrupted(self) -> None:
        """Ctrl-C while waiting on a submitted map: stop the workers, as during ``map``."""
        self._p.terminate()
        self._state = "terminated"
        self._submitter.shutdown(wait=False, cancel=True)

    def _batches(self, f: Callable[..., object], batches: Any, dtype: Any, in_flight: Optional[int], ordered: bool) -> Any:
        import collections
        import concurrent.futures

        limit = max(1, in_flight if in_flight is not None else self.processes)
        returning = _returns_value(f)
        pending: "collections.deque[concurrent.futures.Future[np.ndarray]]" = collections.deque()
        it = iter(batches)
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        b = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    if returning:
                        if self._state != "running":
                            raise PoolClosed("Pool not running: it was closed or terminated")
                        pending.append(self._submitter.submit(self._interrupted, _call_returning, self, f, b))
                    else:
                        pending.append(self.submit(f, b, dtype=dtype))
                if not pending:
                    return
                if ordered:
                    yield pending.popleft().result()
                else:
                    done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    first = next(iter(done))
                    pending.remove(first)
                    yield first.result()
        except KeyboardInterrupt:
            self.terminate()
            raise
        finally:
            # Leaving early (break, close, an exception): batches not started are cancelled;
            # those in flight are left to finish on their own (their results are dropped), as
            # `multiprocessing`'s imap does, rather than waited for here.
            for p in pending:
                p.cancel()

    def imap(
        self, f: Callable[[np.ndarray, np.ndarray], object], batches: Any, *, dtype: Any = None, in_flight: Optional[int] = None
    ) -> "Iterator[np.ndarray]":
        """``map(f, batch)`` for each array of the iterable ``batches``, results in order, with
        at most ``in_flight`` batches (default: the number of workers) submitted ahead: the
        iterable is consumed lazily and memory stays bounded. Leaving the loop early (``break``,
        an exception, closing the generator) cancels the batches not started and returns at once;
        those in flight finish in the workers and their results are dropped.

        A kernel that takes one argument, ``f(batch) -> result`` (as ``multiprocessing``'s
        ``imap`` calls it), is called once per batch in a worker instead; the batch goes to it
        and its result (any picklable value) comes back through a temporary file, pickled."""
        return self._batches(f, batches, dtype, in_flight, True)

    def imap_unordered(
        self, f: Callable[[np.ndarray, np.ndarray], object], batches: Any, *, dtype: Any = None, in_flight: Optional[int] = None
    ) -> "Iterator[np.ndarray]":
        """As :meth:`imap`, results in the order they finish."""
        return self._batches(f, batches, dtype, in_flight, False)

    # -- files -------------------------------------------------------------------------------

    def map_file(
        self,
        input: PathLike,
        output: PathLike,
        expr: str,
        *,
        dtype: Any = None,
        progress: Union[bool, Callable[[int, int], object]] = False,
    ) -> np.dtype:
        """Maps ``expr`` (over ``x``, the input's elements, and ``i``, the flat index) from the
        ``.npy`` file ``input`` into a new ``.npy`` file ``output``, as ``shmpool map`` does.

        The input is memory-mapped read-only and the workers read it in place: nothing may
        truncate or rewrite it during the call (as with ``np.load(mmap_mode='r')``). The output
        gets numpy's result dtype, or ``dtype`` (cast as ``astype``), the input's shape, and
        appears under its name only when complete. ``progress=True`` prints progress lines on
        stderr; a callable is called as ``progress(done, total)``. Returns the output dtype.
        A Fortran-ordered or big-endian input (``np.save`` of a transposed or ``'>f8'`` array)
        is read into memory instead (one copy, in C order and native byte order).
        """
        self._check()
        src, dst = os.fspath(input), os.fspath(output)
        if os.path.realpath(src) == os.path.realpath(dst):
            raise ValueError(f"output {dst} is the input: write to another file")
        cb: Optional[Callable[[int, int], object]]
        if progress is True:
            cb = _ProgressLines()
        elif progress is False or progress is None:
            cb = None
        else:
            cb = progress
        odt = None if dtype is None else _dtype(dtype).name
        if _needs_reading(src):
            return _map_file_in_memory(self, src, dst, expr, dtype, cb)
        try:
            _, name = self._p.map_file(src, dst, expr, odt, cb)
        except KeyboardInterrupt:
            self._state = "terminated"
            raise
        return np.dtype(name)


def _finalize(native: Any, submitter: Submitter, pid: int, box: list[Optional[str]]) -> None:
    """A pool's end at exit or collection (its weakref finalizer): terminate its workers (in the
    process that made it), stop its submit threads and remove its mailbox."""
    if os.getpid() == pid:
        native.terminate()
        submitter.shutdown(wait=True, cancel=True)
        _remove_box(box)


# --------------------------------------------------------------------------------------------
# the module-level pool

_default: Optional[Pool] = None
_default_lock = threading.Lock()


def _default_pool() -> Pool:
    global _default
    with _default_lock:
        p = _default
        if p is None or p._pid != os.getpid() or p._state != "running":
            p = _default = Pool()
        return p


def _drop_default() -> None:
    global _default
    with _default_lock:
        p, _default = _default, None
    if p is not None and p._pid == os.getpid():
        p.terminate()


atexit.register(_drop_default)


def evaluate(expr: str, out: Optional[np.ndarray] = None, **arrays: Any) -> Any:
    """Evaluates ``expr`` over named arrays with numpy's semantics on all cores (numexpr's
    call; broadcasting across several arrays, reductions such as ``sum(x * x)`` giving a numpy
    scalar): see :meth:`Pool.evaluate`. Uses a module-wide pool with one worker per
    core, started on first use and terminated at exit (or after a Ctrl-C)."""
    pool = _default_pool()
    try:
        return pool.evaluate(expr, out=out, **arrays)
    except KeyboardInterrupt:
        _drop_default()
        raise
