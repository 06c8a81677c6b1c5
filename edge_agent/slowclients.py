"""Slow and greedy clients, bounded in the HTTP protocol both servers run (uvicorn's h11).

uvicorn bounds neither how long a client may take to send a request nor how many
connections one client may hold: 140 connections trickling header bytes kept every slot of
``limit_concurrency`` busy, and paired screens got 503 for as long as they stayed open. Here
each request (its head and its body) must arrive within a deadline counted from the moment
the connection opened or the previous answer was sent, or the connection is closed; and a
client (by address) past its share of connections is answered 429 and closed before
anything it sends is read.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge_agent import logs

logger = logging.getLogger(__name__)

_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"content-length: 47\r\n\r\ntoo many connections from this address at once\n"
)


def _client_of(protocol: object) -> str | None:
    client = getattr(protocol, "client", None)
    return str(client[0]) if client else None


def guarded_http(per_client: int, request_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, with each request due within ``request_s`` seconds and at
    most ``per_client`` connections per client address (0: no bound, e.g. behind a proxy
    whose address every request has). Passed to ``uvicorn.Config(http=...)``."""

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else None
            if per_client and address is not None:
                # The set holds every open connection of this server: at most
                # limit_concurrency, so counting is cheap.
                held = sum(_client_of(c) == address for c in self.connections)
                if held > per_client:
                    transport.write(_TOO_MANY)
                    transport.close()
                    logs.log(
                        logger,
                        logging.WARNING,
                        "http_too_many_connections",
                        "a client holds more connections than it may; the new one was closed",
                        client=address,
                        limit=per_client,
                    )
                    return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(request_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                logs.log(
                    logger,
                    logging.INFO,
                    "http_request_too_slow",
                    f"a request did not arrive whole within {request_s:g} s; its connection "
                    "was closed",
                    client=self.client[0] if self.client else None,
                )
                self.transport.close()

        def _received_whole(self) -> None:
            # Their side is DONE once the head and the whole body were read; an answer
            # being streamed (Server-Sent Events) is no longer the client's to hurry.
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                self._disarm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._received_whole()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()
                # A pipelined request may already have been read whole.
                self._received_whole()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Guarded
