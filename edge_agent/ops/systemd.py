"""sd_notify for a service run by systemd: readiness, watchdog pings, status, stopping.

The protocol is one datagram per message to the AF_UNIX socket systemd names in
``$NOTIFY_SOCKET``: ``KEY=value`` lines, e.g. ``READY=1``. A name starting with ``@`` is in the
abstract namespace (a leading NUL byte on the wire). ``$WATCHDOG_USEC`` is how long systemd
waits for a ``WATCHDOG=1`` before it kills and restarts the service. Both variables are read by
`edge_agent.config.service_manager`; this module is given their values.

Outside systemd (no socket) every call does nothing, so callers never need to ask.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

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
