"""The staff screen's page and the gate screen's, their pairing, and their JSON answers
(`GET /v1/screen` for the visitor in front of it, `GET /v1/site` for the site's figures
today, `GET /v1/venue` for the venue's, from every agent of it, `GET /v1/gates` for a gate
screen's)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from edge_agent import logs
from edge_agent.core.throttle import Throttle
from edge_agent.errors import EdgeAgentError
from edge_agent.store.database import Store
from edge_agent.store.screens import Screen, Screens
from edge_agent.web.access import screen_asking
from edge_agent.web.answers import ScreenAnswers
from edge_agent.web.changes import GATES, Changes
from edge_agent.web.responses import NO_STORE, json_answer, refusal

logger = logging.getLogger(__name__)
MAX_BODY = 4096
MAX_CODE = 64
STATIC = Path(__file__).parent / "static"


async def page(_: Request) -> Response:
    """The screen's page (everything else it loads is under ``/static``)."""
    return FileResponse(STATIC / "screen.html", headers=NO_STORE)


async def gate_page(_: Request) -> Response:
    """The gate screen's page."""
    return FileResponse(STATIC / "gate.html", headers=NO_STORE)


async def pair(request: Request) -> Response:
    """Trade a one-time pairing code for the screen's own token; a client that fails too
    often waits (429) before it may try again."""
    throttle: Throttle = request.app.state.pairing
    client = request.client.host if request.client else ""
    wait = throttle.wait_s(client, time.monotonic())
    if wait is not None:
        return refusal(
            429,
            "too_many_attempts",
            f"too many wrong pairing codes from this address: try again in {math.ceil(wait)} s",
            {"Retry-After": str(math.ceil(wait))},
        )
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return refusal(413, "too_large", f"send at most {MAX_BODY} bytes")
    try:
        code = orjson.loads(raw).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        code = None
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE:
        return refusal(400, "bad_request", 'send JSON: {"code": "<the pairing code>"}')
    writer: Store = request.app.state.writer
    write_lock: threading.Lock = request.app.state.write_lock
    clock: Callable[[], int] = request.app.state.clock

    def paired() -> str | None:
        with write_lock:
            return Screens(writer).pair(code, clock())

    token = await run_in_threadpool(paired)
    if token is None:
        throttle.failed(client, time.monotonic())
        return refusal(
            403,
            "forbidden",
            "the code is unknown, used or expired: run edge-agent screens add for a new one",
        )
    return json_answer(200, {"token": token})


async def _answer(
    request: Request, work: Callable[[Screen, int], object], missing: str | None = None
) -> Response:
    asking = await screen_asking(request)
    if isinstance(asking, Response):
        return asking
    if missing is not None:
        return refusal(404, "not_found", missing)
    found, _, k = asking
    try:
        body = await run_in_threadpool(work, found, k)
    except EdgeAgentError as exc:
        logs.log(logger, logging.ERROR, "screen_failed", str(exc), screen=found.id)
        return refusal(503, "unavailable", "the agent cannot answer now; it retries by itself")
    return json_answer(200, body)


async def screen(request: Request) -> Response:
    """The visitor in front of the asking screen, and their lists."""
    answers: ScreenAnswers = request.app.state.answers
    return await _answer(request, answers.visitor)


async def site(request: Request) -> Response:
    """The site's figures today."""
    answers: ScreenAnswers = request.app.state.answers
    return await _answer(request, lambda _screen, _k: answers.site())


async def venue(request: Request) -> Response:
    """The venue's figures today, with the agents they come from; 404 on an agent that does
    not share with its venue."""
    answers: ScreenAnswers = request.app.state.answers
    shared = answers.venue_settings.share
    missing = None if shared else "this agent shares no venue figures: see docs/venues.md"
    return await _answer(request, lambda _screen, _k: answers.venue(), missing)


async def gates(request: Request) -> Response:
    """A gate screen's figures: the venue's gates, attendance, halls and warnings."""
    answers: ScreenAnswers = request.app.state.answers
    changes: Changes = request.app.state.changes
    version = changes.version(GATES)
    return await _answer(request, lambda _screen, _k: answers.gates(version))
