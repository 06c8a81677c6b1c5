"""A sync httpx client into an ASGI app in this process: no server and no socket, the app's
lifespan run around the client as uvicorn runs it, the app in an event loop of its own
thread (so tests stay sync and the app's thread pool works as under uvicorn).

httpx's own `ASGITransport` is async only, and starlette's TestClient wants another httpx;
this joins the two: sync requests, carried into the loop by an anyio portal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.types import ASGIApp, Message


@contextlib.asynccontextmanager
async def _lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Start ``app`` up, and shut it down after the block, by the ASGI lifespan protocol."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def run() -> None:
        await app(scope, inbox.get, outbox.put)

    running = asyncio.create_task(run())
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await running


class _Bridge(httpx.BaseTransport):
    """Each sync request handed to `httpx.ASGITransport` in the portal's event loop."""

    def __init__(
        self, app: ASGIApp, portal: BlockingPortal, client: tuple[str, int] = ("127.0.0.1", 123)
    ) -> None:
        self.app = app
        self.asgi = httpx.ASGITransport(app=app, client=client)
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """The app's answer to ``request``, its body read whole."""
        body = request.read()

        async def call() -> httpx.Response:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            answer = await self.asgi.handle_async_request(inner)
            # Raw, as a socket would carry it: the client decodes it once.
            raw = b"".join([chunk async for chunk in answer.aiter_raw()])
            return httpx.Response(answer.status_code, headers=answer.headers, content=raw)

        return self.portal.call(call)


@contextlib.contextmanager
def in_process(app: ASGIApp) -> Iterator[httpx.Client]:
    """A client of ``app`` at ``http://testserver``, the app started for the block."""
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(_lifespan(app)),
        httpx.Client(transport=_Bridge(app, portal), base_url="http://testserver") as client,
    ):
        yield client


def another_client(client: httpx.Client, address: str) -> httpx.Client:
    """A client of the same app as ``client`` (an `in_process` one), as if from ``address``."""
    bridge = client._transport
    assert isinstance(bridge, _Bridge)
    return httpx.Client(
        transport=_Bridge(bridge.app, bridge.portal, (address, 50000)),
        base_url="http://testserver",
    )
