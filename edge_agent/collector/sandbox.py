"""Worker processes for the code that reads sketches sent by sites.

The DataSketches readers are C++: a crafted KLL sketch makes ``deserialize`` segfault, which
in the server would take every request down with it. In a worker it only breaks the pool:
the call is tried once more in a fresh pool (the crash may have come from another request's
cell), and a second crash is the caller's. A call past its deadline has its workers killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from edge_agent.errors import CollectorError

P = ParamSpec("P")
T = TypeVar("T")


class SandboxFailed(CollectorError):
    """The call did not return."""


class SandboxCrashed(SandboxFailed):
    """The worker died twice running this call: its input is the likely cause."""


class SandboxTimedOut(SandboxFailed):
    """The call ran past its deadline: the workers are busy, or the input is pathological."""


class Sandbox:
    """A lazily started pool of ``workers`` processes (spawned: the server has threads)."""

    def __init__(self, workers: int = 2, timeout_s: float = 60.0) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor, kill: bool) -> None:
        with self._lock:
            # Another thread may have replaced it already.
            if self._pool is pool:
                self._pool = None
        if kill:
            for process in list(pool._processes.values()):
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` in a worker.

        Raises:
            SandboxCrashed: it crashed the worker twice.
            SandboxTimedOut: it took longer than ``timeout_s``.
        """
        # The first crash may have been another request's input: once more in a fresh pool.
        with contextlib.suppress(BrokenProcessPool):
            return self._attempt(function, *args, **kwargs)
        try:
            return self._attempt(function, *args, **kwargs)
        except BrokenProcessPool as exc:
            raise SandboxCrashed("the sketch reader crashed on this input") from exc

    def _attempt(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        pool = self._current()
        try:
            return pool.submit(function, *args, **kwargs).result(self.timeout_s)
        except BrokenProcessPool:
            self._discard(pool, kill=False)
            raise
        except FutureTimeout as exc:
            self._discard(pool, kill=True)
            raise SandboxTimedOut(f"no answer within {self.timeout_s:g} s") from exc

    def close(self) -> None:
        """Stop the workers."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
