"""``edge-agent run`` as a child process, the way an installer runs it, for the demo, the
benchmarks and the tests: started with its output in a log file, and waited for until the
broker has confirmed its subscription (from then on the broker keeps events for it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from edge_agent.errors import EdgeAgentError

#: The event the agent logs once the broker confirmed its subscription (SUBACK).
SUBSCRIBED = "broker_connected"


class AgentChild:
    """One agent process on ``config``, its stdout and stderr appended to ``log``."""

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        """Everything the agent logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def spawn(self, own_session: bool = False) -> None:
        """Start it; ``own_session``: in a process group of its own (to kill it whole)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "--config", str(self.config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=own_session,
                env=self.env,
            )

    def logged(self, event: str) -> int:
        """How many log lines have ``event`` so far."""
        return self.log_text().count(f'"event": "{event}"')

    def wait_log(self, event: str, times: int = 1, timeout_s: float = 30.0) -> None:
        """Wait until the log holds ``times`` lines with ``event``.

        Raises:
            EdgeAgentError: the agent exited first, or the deadline passed (the log is named).
        """
        deadline = time.monotonic() + timeout_s
        while self.logged(event) < times:
            if self.process is not None and self.process.poll() is not None:
                raise EdgeAgentError(
                    f"the agent exited with {self.process.returncode}; see {self.log}"
                )
            if time.monotonic() > deadline:
                raise EdgeAgentError(
                    f"timed out after {timeout_s:g} s waiting for {event} in {self.log}"
                )
            time.sleep(0.05)

    def start_subscribed(self, own_session: bool = False, timeout_s: float = 30.0) -> None:
        """Start it and wait for its subscription (each restart adds one more log line).

        Raises:
            EdgeAgentError: it exited, or did not subscribe in time.
        """
        before = self.logged(SUBSCRIBED)
        self.spawn(own_session)
        self.wait_log(SUBSCRIBED, before + 1, timeout_s)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait (SIGKILL past ``timeout_s``); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill_group(self) -> None:
        """SIGKILL its whole process group (it must have been started in its own session)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
