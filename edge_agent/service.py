"""What a long-running service needs from the machine it runs on, for the agent and the
collector alike: systemd's notify socket and watchdog, journald, and a free port.

sd_notify: one datagram per message to the AF_UNIX socket systemd names in ``$NOTIFY_SOCKET``:
``KEY=value`` lines, e.g. ``READY=1``. A name starting with ``@`` is in the abstract namespace
(a leading NUL byte on the wire). ``$WATCHDOG_USEC`` is how long systemd waits for a
``WATCHDOG=1`` before it kills and restarts the service. Outside systemd (no socket) every call
does nothing, so callers never need to ask.

These variables are systemd's, not an installer's settings, which is why they are read here
and not in `edge_agent.config` (the agent's settings, which the collector does not share).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge_agent import logs

logger = logging.getLogger(__name__)

#: ``systemctl status`` shows the latest STATUS line; sending it more often is only noise.
STATUS_EVERY_S = 3.0


def _address(name: str) -> str | bytes:
    # Linux abstract socket names have no file: systemd writes them with "@" for the NUL.
    return b"\0" + name[1:].encode() if name.startswith("@") else name


class Notifier:
    """Sends sd_notify messages, and paces the repeated ones (watchdog pings, status)."""

    def __init__(
        self,
        notify_socket: str = "",
        watchdog_usec: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        notify_socket: ``$NOTIFY_SOCKET`` (empty: not run by systemd; nothing is sent).
        watchdog_usec: ``$WATCHDOG_USEC`` (0: no watchdog; no pings are sent).
        clock: monotonic seconds, for pacing.
        """
        self.address = _address(notify_socket) if notify_socket else None
        # systemd's own advice (sd_watchdog_enabled(3)): ping at half the timeout.
        self.ping_every_s = watchdog_usec / 2_000_000 if watchdog_usec > 0 else None
        self.clock = clock
        self._socket: socket.socket | None = None
        self._last_ping: float | None = None
        self._last_status: tuple[float, str] | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; returns whether it was sent.

        A service manager that cannot be told is logged once and otherwise ignored: the
        agent's work matters more than its reports (and systemd restarts a service whose
        watchdog pings stop arriving anyway).
        """
        if self.address is None:
            return False
        try:
            if self._socket is None:
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                self._socket = socket.socket(socket.AF_UNIX, kind)
            # Never wait: a manager that stops reading (its queue holds 10 datagrams) must not
            # stall the loop whose health the pings report. A dropped ping is sent again on the
            # next turn, since only a sent one resets the pace.
            self._socket.sendto("\n".join(assignments).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logs.log(
                    logger, logging.WARNING, "systemd_notify_failed",
                    "cannot notify the service manager", error=str(exc),
                )  # fmt: skip
            return False
        return True

    def ready(self, status: str) -> None:
        """Tell systemd the service is up (``READY=1``), with a first status line."""
        self.send("READY=1", f"STATUS={status}")
        self._last_status = (self.clock(), status)

    def alive(self) -> None:
        """A watchdog ping (``WATCHDOG=1``), at most every half of ``WATCHDOG_USEC``.

        Call it only from the loop whose health it vouches for, and only where that loop has
        made progress or is idle: a ping from anywhere else would keep a wedged service alive.
        """
        if self.ping_every_s is None:
            return
        now = self.clock()
        if self._last_ping is not None and now - self._last_ping < self.ping_every_s:
            return
        if self.send("WATCHDOG=1"):
            self._last_ping = now

    def status(self, text: str) -> None:
        """A ``STATUS=`` line for ``systemctl status``, when it changed, at most every
        `STATUS_EVERY_S` seconds."""
        now = self.clock()
        last = self._last_status
        if last is not None and (last[1] == text or now - last[0] < STATUS_EVERY_S):
            return
        if self.send(f"STATUS={text}"):
            self._last_status = (now, text)

    def stopping(self) -> None:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        """Close the socket (later calls open it again)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def under_journald(environ: Mapping[str, str] | None = None) -> bool:
    """Whether stdout goes to journald (systemd sets JOURNAL_STREAM), to prefix priorities."""
    return bool((os.environ if environ is None else environ).get("JOURNAL_STREAM"))


@dataclass(frozen=True)
class ServiceManager:
    """What systemd tells a service it starts: where to send sd_notify messages and how often
    it expects a watchdog ping. Empty and 0 when not run by systemd."""

    notify_socket: str = ""
    watchdog_usec: int = 0


def service_manager(environ: Mapping[str, str] | None = None) -> ServiceManager:
    """``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``, as systemd sets them for a unit.

    A watchdog meant for another process (``$WATCHDOG_PID`` names a different pid, e.g. a
    wrapper that started this one) is ignored, as sd_watchdog_enabled(3) does. A value that is
    not a number is ignored too: it is systemd's to set, not an installer's.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    ours = not pid or pid == str(os.getpid())
    return ServiceManager(
        notify_socket=env.get("NOTIFY_SOCKET", ""),
        watchdog_usec=int(usec) if usec.isdigit() and ours else 0,
    )


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port
