"""``GET /v1/screen/stream``: the screen's visitor and the site's figures (a gate screen's
figures, for a gate screen) pushed as they change (Server-Sent Events), until the screen is
revoked."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

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
#: A gate screen is answered at most this often: a surge stores scans many times a second, and
#: one answer recomputes the hour under way.
GATE_PACE_S = 0.5


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


Work = Callable[[tuple[int, int]], object]


def _works(
    answers: ScreenAnswers, found: Screen, k: int
) -> tuple[Sequence[tuple[str, Work]], float]:
    """What the screen is pushed (each answer computed from the version of its place's news),
    how often it is answered again without news, and how long at least between answers."""
    if found.kind == "gate":
        # Peers' news comes with no ingest to tell: as often as they share.
        refresh = min(REFRESH_S, answers.venue_settings.share_every_s)
        return [("gate", answers.gates)], refresh
    return [
        ("visitor", lambda _version: answers.visitor(found, k)),
        ("site", lambda _version: answers.site()),
    ], REFRESH_S


async def _pushes(request: Request, found: Screen, k: int, token: str) -> AsyncIterator[bytes]:
    answers: ScreenAnswers = request.app.state.answers
    changes: Changes = request.app.state.changes
    sent: dict[str, object] = {}
    where = place(found.kind, found.device)
    works, refresh_s = _works(answers, found, k)
    answered = float("-inf")
    since = (-1, -1)
    yield b"retry: 1000\n\n"
    while True:
        if await screen_of(request, token) is None:
            yield sse("locked", {"detail": UNAUTHORIZED})
            return
        now = time.monotonic()
        if changes.version(where) != since or now - answered >= refresh_s:
            since = changes.version(where)
            answered = now
            quiet = True
            for name, work in works:
                try:
                    body = await run_in_threadpool(work, since)
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
            if found.kind == "gate":
                await asyncio.sleep(GATE_PACE_S)
        await changes.wait(where, since, RECHECK_S)
