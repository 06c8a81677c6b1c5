"""The collector's background work (rolling days up, forwarding to the CRM): one thread per
job, running its passes until the serve process stops.

A pass says whether more work is waiting; the loop then goes on at once, else it waits its
period. A pass that fails is logged with its trace and tried again next period: the thread is
the only one doing its job, so were it to end, the job would stop with nothing said.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edge_agent.collector.store.engine import Unavailable

log = logging.getLogger(__name__)


class Worker:
    """A thread that runs ``one_pass`` (True: more is waiting) every ``every_s`` seconds."""

    def __init__(self, name: str, one_pass: Callable[[], bool], every_s: float) -> None:
        self.name = name
        self._pass = one_pass
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop and wait for its current pass."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self._pass()
            except Unavailable as exc:
                log.warning("%s waits for the database: %s", self.name, exc)
                busy = False
            except Exception:
                log.exception("%s failed; trying again in %g s", self.name, self._every_s)
                busy = False
            if not busy:
                self._stop.wait(self._every_s)
