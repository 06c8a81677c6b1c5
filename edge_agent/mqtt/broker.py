"""A local Mosquitto broker process with the configuration ingest needs (demo, tests, bench).

It writes its own plaintext, anonymous configuration, or runs one prepared elsewhere (a
provisioned site's, with TLS, passwords and an ACL).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from edge_agent.core.broker import mosquitto_conf
from edge_agent.core.events import MAX_PAYLOAD_BYTES
from edge_agent.errors import BrokerError
from edge_agent.service import free_port


def mosquitto_binary() -> str:
    """The path of the ``mosquitto`` program.

    Raises:
        BrokerError: Mosquitto is not installed.
    """
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        raise BrokerError(
            "mosquitto is not installed: run `apt-get install mosquitto` (or the README's set-up)"
        )
    return found


class Mosquitto:
    """One Mosquitto process with its config, data and log in ``folder``.

    Without ``config`` it writes its own: plaintext and anonymous, on loopback, refusing
    packets much over ``max_payload_bytes`` (the agent's limit). With one, it runs that file as
    it is; the file must listen on ``port`` and log to ``folder/mosquitto.log``.
    """

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        address: str = "127.0.0.1",
        config: Path | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.folder = folder
        self.max_payload_bytes = max_payload_bytes
        self.address = address
        self.port = port or free_port(address)
        self.prepared = config is not None
        self.config = config or folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        """Write the broker configuration file and return its path."""
        data = self.folder / "mosquitto-data"
        data.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            mosquitto_conf(
                user=getpass.getuser(),
                listener=[f"listener {self.port} {self.address}"],
                access=["allow_anonymous true"],
                data=str(data),
                log=str(self.log),
                max_payload_bytes=self.max_payload_bytes,
            )
        )
        return self.config

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections.

        Raises:
            BrokerError: it is not installed, exits, or does not listen in time.
        """
        if not self.prepared:
            self.write_config()
        stderr = self.folder / "mosquitto.stderr"
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                said = stderr.read_text(errors="replace").strip()
                raise BrokerError(
                    f"mosquitto exited with {self.process.returncode}: {said} {self.log_tail()}"
                )
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"mosquitto did not listen on {self.address}:{self.port} within {timeout_s} s"
        )

    def stop(self, kill: bool = False) -> None:
        """Stop the broker: SIGTERM lets it save its persistence file, SIGKILL does not."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker's log, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
