"""``Pool.submit``'s threads: each submitted map waits for the engine on a daemon thread.

Daemon threads, as ``multiprocessing.Pool``'s own handler threads: the interpreter's exit does
not wait for them (a ``ThreadPoolExecutor`` thread is joined at exit, so a pending submit of a
hung callable froze the exit). The pool's finalizer terminates the workers at exit instead,
which makes every map still waiting return. A future's ``result()`` interrupted by Ctrl-C
terminates the pool, as Ctrl-C during ``map`` does.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable, Optional


class SubmitFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` whose ``result()`` / ``exception()``, interrupted by
    Ctrl-C, calls ``on_interrupt`` (terminating the pool: its workers stop) before raising
    ``KeyboardInterrupt``."""

    def __init__(self, on_interrupt: Callable[[], object]) -> None:
        super().__init__()
        self._on_interrupt = on_interrupt

    def result(self, timeout: Optional[float] = None) -> Any:
        try:
            return super().result(timeout)
        except KeyboardInterrupt:
            self._on_interrupt()
            raise

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        try:
            return super().exception(timeout)
        except KeyboardInterrupt:
            self._on_interrupt()
            raise


# What a submit thread takes from the queue: the future and the call, or None (exit).
_Item = Optional[tuple[SubmitFuture, Callable[..., Any], tuple[Any, ...], dict[str, Any]]]


class Submitter:
    """Up to ``threads`` daemon threads (started on demand) running submitted calls in order."""

    def __init__(self, threads: int) -> None:
        self._max = max(1, threads)
        self._queue: "queue.SimpleQueue[_Item]" = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, on_interrupt: Callable[[], object], fn: Callable[..., Any], *args: Any, **kw: Any) -> SubmitFuture:
        """Queues ``fn(*args, **kw)``; its future."""
        fut = SubmitFuture(on_interrupt)
        with self._lock:
            if self._stopped:
                raise RuntimeError("cannot submit after the pool was terminated or joined")
            self._queue.put((fut, fn, args, kw))
            if self._idle > 0:
                self._idle -= 1  # a waiting thread takes it
            elif len(self._threads) < self._max:
                t = threading.Thread(target=self._run, name=f"shmpool-submit-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        return fut

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args, kw = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kw))
                except BaseException as e:  # the caller's to see, through the future
                    fut.set_exception(e)
                del fut, fn, args, kw, item
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool, cancel: bool) -> None:
        """Stops the threads once the queue is done (``cancel``: cancels what has not started);
        ``wait``: joins them (the maps they run must be ending: the pool was closed or
        terminated)."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
            if cancel:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in threads:
                self._queue.put(None)
        if wait:
            me = threading.current_thread()
            for t in threads:
                if t is not me:
                    t.join()
