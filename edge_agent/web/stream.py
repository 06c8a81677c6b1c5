"""``GET /v1/screen/stream``: the screen's visitor and the site's figures pushed as they
change (Server-Sent Events), until the screen is revoked."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from edge_agent import logs
from edge_agent.errors import EdgeAgentError
from edge_agent.store.screens import Screen
from edge_agent.web.access import screen_asking, screen_of
from edge_agent.web.answers import ScreenAnswers
from edge_agent.web.changes import Changes, place
from edge_agent.web.responses import NO_STORE, UNAUTHORIZED

logger = logging.getLogger(__name__)
#: A stream checks its screen is still allowed this often (revocation locks it out by then) ...
RECHECK_S = 1.0
#: ... and, with no news from ingest, answers again this often (a CLI erasure, a visit going
#: stale), and says something at least this often so that a dead connection is noticed.
REFRESH_S = 10.0


def sse(event: str, body: object) -> bytes:
    """One Server-Sent Event named ``event`` with ``body`` as JSON."""
    # orjson never writes a raw newline, so the data fits on the one line SSE wants.
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


async def stream(request: Request) -> Response:
    """The asking screen's push stream (or why it is refused)."""
    asking = await screen_asking(request)
    if isinstance(asking, Response):
        return asking
    found, token, k = asking
    return StreamingResponse(
        _pushes(request, found, k, token),
        media_type="text/event-stream",
        headers={**NO_STORE, "X-Accel-Buffering": "no"},
    )


async def _pushes(request: Request, found: Screen, k: int, token: str) -> AsyncIterator[bytes]:
    answers: ScreenAnswers = request.app.state.answers
    changes: Changes = request.app.state.changes
    sent: dict[str, object] = {}
    where = place(found.kind, found.device)
    answered = float("-inf")
    since = (-1, -1)
    yield b"retry: 1000\n\n"
    while True:
        if await screen_of(request, token) is None:
            yield sse("locked", {"detail": UNAUTHORIZED})
            return
        now = time.monotonic()
        if changes.version(where) != since or now - answered >= REFRESH_S:
            since = changes.version(where)
            answered = now
            quiet = True
            for name, work in (
                ("visitor", lambda: answers.visitor(found, k)),
                ("site", answers.site),
            ):
                try:
                    body = await run_in_threadpool(work)
                except EdgeAgentError as exc:
                    logs.log(logger, logging.ERROR, "screen_failed", str(exc), screen=found.id)
                    sent.pop(name, None)  # sent again once it can be answered
                    yield sse("trouble", {"detail": "the agent cannot answer now; it retries"})
                    quiet = False
                    continue
                if sent.get(name) != body:
                    sent[name] = body
                    quiet = False
                    yield sse(name, body)
            if quiet:
                yield b": still here\n\n"
        await changes.wait(where, since, RECHECK_S)
