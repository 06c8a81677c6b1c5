"""Several collector processes behind one port (``serve --workers N``): a supervisor binds the
port once, starts N worker processes that serve it, and replaces any that dies.

The listening socket is the supervisor's, handed to each worker when it is spawned. The kernel
queues new connections on it for as long as the supervisor lives, and whichever worker is free
accepts them: a worker killed mid-request loses only the connections it had open, and the
port keeps answering while one worker is left (or, with none, keeps the connections waiting
until the replacement listens).

Why not uvicorn's own supervisor (``uvicorn.Config(workers=N)``, `uvicorn.supervisors`):

- the background jobs (rolling up, forwarding, pruning) must run in exactly one process: the
  rollup reads a day's cells, computes, and writes the day, and two processes doing it at once
  can write an older version over a newer one. Here slot 0 runs them, and slot 0's
  replacement takes them over; uvicorn's workers are all alike;
- systemd's watchdog vouches for the loop that serves requests. Each worker's event loop
  stamps its heartbeat at every tick; one that stops (a handler blocking the loop) is killed
  and replaced after `STALL_S`, and the supervisor, the unit's main process, tells systemd
  READY=1 once every worker listens and pings WATCHDOG=1 itself. uvicorn's health check asks
  a thread of the worker, which answers while its loop is stuck;
- a worker builds its app from plain options it is given, nothing of the supervisor's.

Each worker is spawned (not forked: a fork of a process with threads may inherit a held lock)
and opens its own database pool. A worker whose supervisor is gone (killed with SIGKILL)
notices within a second and shuts down gracefully, as on SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, Protocol

from edge_agent import logs
from edge_agent.errors import CollectorError, EdgeAgentError

log = logging.getLogger("edge_agent.collector")

#: ``serve --workers``'s bounds. More workers than cores rarely helps (each is a Python
#: process and its own sandbox), but a few more may hide a database's latency.
MAX_WORKERS = 32
#: Seconds a listening worker's event loop may go without a tick before it is killed and
#: replaced (systemd's ``WatchdogSec`` when it sets one: the same promise, per worker).
STALL_S = 30.0
#: Connections the kernel queues on the port while every worker is busy (uvicorn's default).
BACKLOG = 2048
#: Seconds before a slot whose worker keeps failing to start is tried again: doubled at
#: each failure in a row, from the first to the last (a database that is down for a while
#: is then asked every half minute, not in a tight loop).
RETRY_FIRST_S = 0.5
RETRY_LAST_S = 30.0
#: How a worker says it could not start (the message is on its standard error).
EXIT_FAILED = 3
#: The heartbeat's values besides a tick's time.
_STARTING = 0.0
_STOPPING = -1.0
_TICK_S = 0.25


class Reporter(Protocol):
    """What a server tells its manager: systemd's `edge_agent.service.Notifier` for one
    process, a `Heartbeat` for a worker."""

    def ready(self, status: str) -> None:
        """It listens."""

    def alive(self) -> None:
        """Its event loop ticked."""

    def stopping(self) -> None:
        """It is shutting down."""

    def status(self, text: str) -> None:
        """A line on how it is doing."""


class Heartbeat:
    """A worker's reports to its supervisor: one number in memory they share, 0 while it
    starts, then the monotonic time (one clock for every process of the machine) of its
    event loop's latest tick, -1 once it is stopping. Nothing ever waits on it."""

    def __init__(self, value: Any) -> None:
        # A multiprocessing RawValue("d"): no lock, as only the worker writes it.
        self._value = value

    def ready(self, status: str) -> None:
        """The worker listens."""
        self._value.value = time.monotonic()

    def alive(self) -> None:
        """The worker's event loop ticked."""
        self._value.value = time.monotonic()

    def stopping(self) -> None:
        """The worker is draining: no more ticks, and that is not a stall."""
        self._value.value = _STOPPING

    def status(self, text: str) -> None:
        """Nothing: the supervisor writes the status line of them all."""

    def read(self) -> float:
        """The latest report (the supervisor's side)."""
        return float(self._value.value)


@dataclass(frozen=True)
class Slot:
    """What a worker is given: its place (slot 0 runs the background jobs), the listening
    socket it serves and its heartbeat."""

    index: int
    socket: socket.socket
    heartbeat: Heartbeat

    @property
    def background(self) -> bool:
        """Whether this worker runs the background jobs."""
        return self.index == 0


#: Serves a slot until told to stop; runs in the worker. Must pickle (a module-level
#: function, or a functools.partial of one with plain arguments): workers are spawned.
Serve = Callable[[Slot], None]


def listen(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A socket bound to ``host:port`` and listening, for workers to share.

    Raises:
        CollectorError: the address cannot be bound (in use, not this machine's, a
            privileged port).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a restart need not wait for the last connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise CollectorError(
            f"the collector cannot listen on {host}:{port}: {exc.strerror}; free the port, "
            "or give serve another --host or --port"
        ) from exc
    return sock


def _work(serve: Serve, slot: Slot, supervisor: int) -> None:
    """A worker process's body."""
    threading.Thread(
        target=_watch_supervisor, args=(supervisor,), name="supervisor gone", daemon=True
    ).start()
    try:
        serve(slot)
    except EdgeAgentError as exc:
        print(f"edge-agent-collector: worker {slot.index}: {exc}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        # Ctrl-C reaches the whole process group; the supervisor stops the rest in order.
        sys.exit(130)


def _watch_supervisor(supervisor: int) -> None:
    # A worker outliving its supervisor would hold the port with nobody to replace it or to
    # stop it: once adopted by another parent, it drains and stops as on SIGTERM.
    while os.getppid() == supervisor:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Worker:
    slot: Slot
    process: BaseProcess
    listened: bool = False


@dataclass
class _Place:
    """A slot's history: failures to start in a row, and when to start it again."""

    failures: int = 0
    due: float | None = None
    worker: _Worker | None = None


class Supervisor:
    """Runs ``count`` workers serving ``sock`` with ``serve`` until SIGTERM or SIGINT, and
    reports to ``manager`` (systemd) for them all."""

    def __init__(
        self,
        serve: Serve,
        count: int,
        sock: socket.socket,
        manager: Reporter,
        *,
        address: str,
        stall_s: float = STALL_S,
    ) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise CollectorError(f"--workers {count}: give 1-{MAX_WORKERS} processes")
        self._serve = serve
        self._socket = sock
        self._manager = manager
        self._address = address
        self._stall_s = stall_s
        self._places = [_Place() for _ in range(count)]
        self._context = multiprocessing.get_context("spawn")
        self._signals: list[int] = []
        self._ready = False

    def run(self) -> None:
        """Start the workers, keep them running, and stop them on SIGTERM or SIGINT (a
        second one kills those still draining).

        Raises:
            CollectorError: a worker of the first start exited before it listened.
        """
        handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(len(self._places)):
                self._start(index)
            while not self._signals:
                self._watch()
        finally:
            self._stop_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self._signals.append(sig)
        if len(self._signals) > 1:
            # A second signal while the workers drain: do not wait for them.
            for place in self._places:
                if place.worker is not None and place.worker.process.is_alive():
                    place.worker.process.kill()

    def _start(self, index: int) -> None:
        heartbeat = Heartbeat(self._context.RawValue("d", _STARTING))
        slot = Slot(index, self._socket, heartbeat)
        process = self._context.Process(
            target=_work,
            args=(self._serve, slot, os.getpid()),
            name=f"collector-worker-{index}",
        )
        process.start()
        place = self._places[index]
        place.worker, place.due = _Worker(slot, process), None
        logs.log(
            log, logging.INFO, "collector_worker_started", f"worker {index} started",
            slot=index, pid=process.pid, background=slot.background,
        )  # fmt: skip

    def _watch(self) -> None:
        """One turn: reap and replace the dead, notice the stalled, report to systemd."""
        live = [p.worker.process for p in self._places if p.worker is not None]
        multiprocessing.connection.wait([p.sentinel for p in live], timeout=_TICK_S)
        now = time.monotonic()
        for index, place in enumerate(self._places):
            worker = place.worker
            if worker is not None:
                self._look_at(index, place, worker, now)
            elif place.due is not None and now >= place.due and not self._signals:
                self._start(index)
        listening = sum(p.worker is not None and p.worker.listened for p in self._places)
        if not self._ready and listening == len(self._places):
            self._ready = True
            self._manager.ready(f"{listening} workers listening on {self._address}")
            logs.log(
                log, logging.INFO, "collector_workers_ready",
                f"{listening} workers listening on {self._address}", workers=listening,
            )  # fmt: skip
        self._manager.alive()
        if self._ready:
            self._manager.status(
                f"{listening} of {len(self._places)} workers listening on {self._address}"
            )

    def _look_at(self, index: int, place: _Place, worker: _Worker, now: float) -> None:
        beat = worker.slot.heartbeat.read()
        if beat > 0 and not worker.listened:
            worker.listened = True
            place.failures = 0
        if not worker.process.is_alive():
            worker.process.join()
            self._gone(index, place, worker, now)
            return
        if beat > 0 and now - beat > self._stall_s:
            logs.log(
                log, logging.ERROR, "collector_worker_stalled",
                f"worker {index}'s event loop has not ticked for {now - beat:.0f} s: killed, "
                "to be replaced (a request handler blocks the loop; see the log above)",
                slot=index, pid=worker.process.pid,
            )  # fmt: skip
            worker.process.kill()

    def _gone(self, index: int, place: _Place, worker: _Worker, now: float) -> None:
        place.worker = None
        code = worker.process.exitcode
        if not self._ready and not worker.listened:
            raise CollectorError(
                f"worker {index} stopped before it listened (exit code {code}); see the log above"
            )
        if not worker.listened:
            place.failures += 1
        delay = (
            0.0
            if place.failures == 0
            else min(RETRY_LAST_S, RETRY_FIRST_S * 2 ** (place.failures - 1))
        )
        place.due = now + delay
        logs.log(
            log, logging.WARNING, "collector_worker_exited",
            f"worker {index} exited (exit code {code}); a new one starts in {delay:g} s",
            slot=index, pid=worker.process.pid, exit_code=code, retry_in_s=delay,
        )  # fmt: skip

    def _stop_all(self) -> None:
        """Stop every worker, each draining its requests, and wait for them."""
        live = [p.worker.process for p in self._places if p.worker is not None]
        if self._ready:
            self._manager.stopping()
        # New connections now wait for nobody: closed here, the port closes once the last
        # worker closes its copy, and what is queued then is refused, not left hanging.
        self._socket.close()
        for process in live:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in live:
            process.join()
        for place in self._places:
            place.worker = None
        logs.log(
            log, logging.INFO, "collector_workers_stopped", "every worker stopped",
            workers=len(live),
        )  # fmt: skip
