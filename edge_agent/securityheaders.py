"""ASGI middleware both servers share: security headers added to every answer that does not
set them itself (a pure ASGI wrapper, so streamed answers stream).

Each server names its own headers (its Content-Security-Policy above all), per path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: ``(name, value)`` pairs, names in lower case as ASGI carries them.
Headers = Sequence[tuple[bytes, bytes]]


class SecurityHeaders:
    """Add ``headers(path)`` to each answer, but never a header the answer already has (a
    route that must cache, or frame, says so itself)."""

    def __init__(self, app: ASGIApp, headers: Callable[[str], Headers]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer through the wrapped app, adding the headers to the start of the answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = self.headers(scope["path"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in wanted if h[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)
