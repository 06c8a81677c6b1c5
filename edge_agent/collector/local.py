"""A collector run as a child process on this machine: for the demo site and the benchmarks."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from edge_agent.collector.credentials import Role
from edge_agent.errors import CollectorError
from edge_agent.service import free_port

_START_TIMEOUT_S = 30.0


class LocalCollector:
    """``edge-agent-collector serve`` on a free loopback port, with its log in ``folder`` and
    its admin token in ``folder/admin.token`` (0600, new each run); ``workers`` processes
    serve it (``serve --workers``), ``serve_args`` are more of serve's options."""

    def __init__(
        self,
        folder: Path,
        db: str | None = None,
        *,
        workers: int = 1,
        serve_args: Sequence[str] = (),
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.db = db or str(folder / "central.db")
        self.workers = workers
        self.serve_args = tuple(serve_args)
        self.log = folder / "collector.log"
        self.admin_token = secrets.token_urlsafe(24)
        self.admin_token_file = folder / "admin.token"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "edge_agent.collector.cli", *args, "--db", self.db]

    def add_site(self, site: str, venue: str | None = None) -> str:
        """Register ``site`` and return its token.

        Raises:
            CollectorError: the collector's command refused.
        """
        return self._run("add-site", site, *(["--venue", venue] if venue else []))

    def add_user(self, name: str, role: Role) -> str:
        """Add the user ``name`` with ``role`` (or, if they exist, give them a new password);
        return the password made for them.

        Raises:
            CollectorError: the collector's command refused.
        """
        listed = self._run("users", "list")
        known = {line.split("\t", 1)[0] for line in listed.splitlines()}
        if name in known:
            return self._run("users", "password", name)
        return self._run("users", "add", name, "--role", role)

    def _run(self, *args: str) -> str:
        done = subprocess.run(self._command(*args), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise CollectorError(f"{' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start serving and wait until ``/healthz`` answers, at most ``timeout_s``.

        Raises:
            CollectorError: it exited or did not answer in time (its log is named).
        """
        # Made 0600 before the token is in it: the HTTP API's key is never readable by others.
        self.admin_token_file.touch(mode=0o600)
        self.admin_token_file.chmod(0o600)
        self.admin_token_file.write_text(self.admin_token + "\n")
        serve = self._command(
            "serve", "--port", str(self.port), "--log-level", "WARNING",
            "--workers", str(self.workers), *self.serve_args,
        )  # fmt: skip
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [*serve, "--admin-token-file", str(self.admin_token_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise CollectorError(f"the collector exited early; see {self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise CollectorError(f"the collector did not answer in {timeout_s:g} s; see {self.log}")

    @property
    def pid(self) -> int | None:
        """The serving process (with several workers, their supervisor), when started."""
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        """Stop serving (SIGTERM, then SIGKILL after 20 s)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
