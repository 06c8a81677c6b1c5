"""The agent's HTTP API for staff screens (Starlette under uvicorn).

A screen pairs once with the code ``edge-agent screens add`` printed and then sends its own
token. It gets the visitor in front of its device (by the latest visit seen there) and their
recommendations, with reasons. Nothing in an answer identifies anyone: no id, pseudonym,
e-mail or phone; a first name only when the person granted personalization and gave one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge_agent import logs
from edge_agent.adapters.models import Models
from edge_agent.adapters.recommend import Recommender, at_device, available_items
from edge_agent.adapters.screens import Screen, Screens
from edge_agent.adapters.store import Store
from edge_agent.config import Settings
from edge_agent.errors import EdgeAgentError

logger = logging.getLogger(__name__)
MAX_BODY = 4096
AVAILABLE_REFRESH_MS = 5 * 60 * 1000
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _json(status: int, body: object) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json", headers=_HEADERS)


def _error(status: int, error: str, detail: str) -> Response:
    return _json(status, {"error": error, "detail": detail})


def create_app(settings: Settings, clock: Callable[[], int]) -> Starlette:
    """The API over the agent's store and models (one connection, used under a lock)."""
    store = Store.open(settings.database, settings.store.synchronous)
    lock = threading.Lock()
    screens = Screens(store)
    recommender = Recommender(store, Models(store, settings.models_folder))
    stocked: list[tuple[int, frozenset[str]]] = []

    def locked(work: Callable[[], Any]) -> Any:
        with lock:
            return work()

    async def screen_of(request: Request) -> Screen | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > 256:
            return None
        found: Screen | None = await run_in_threadpool(locked, lambda: screens.by_token(token))
        return found

    async def healthz(_: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def pair(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, "too_large", f"send at most {MAX_BODY} bytes")
        try:
            code = orjson.loads(raw).get("code")
        except (orjson.JSONDecodeError, AttributeError):
            return _error(400, "bad_request", 'send JSON: {"code": "<the pairing code>"}')
        if not isinstance(code, str) or not 0 < len(code) <= 64:
            return _error(400, "bad_request", 'send JSON: {"code": "<the pairing code>"}')
        token = await run_in_threadpool(locked, lambda: screens.pair(code, clock()))
        if token is None:
            return _error(
                403,
                "forbidden",
                "the code is unknown, used or expired: run edge-agent screens add for a new one",
            )
        return _json(200, {"token": token})

    async def screen(request: Request) -> Response:
        found = await screen_of(request)
        if found is None:
            return _error(
                401, "unauthorized", "send Authorization: Bearer <this screen's token>; pair again "
                "if the screen was revoked",
            )  # fmt: skip
        try:
            k = int(request.query_params.get("k", "5"))
        except ValueError:
            k = 0
        if not 1 <= k <= 20 or len(request.url.query) > 64:
            return _error(400, "bad_request", "k must be a number from 1 to 20")

        def answer() -> dict[str, object]:
            now = clock()
            if not stocked or now - stocked[0][0] > AVAILABLE_REFRESH_MS:
                # Read again every few minutes, not on every request: it scans the orders.
                stocked[:] = [(now, available_items(store, now))]
            person, basket, present = at_device(store, found.device, now)
            lists = recommender.recommend(person, basket, k, stocked[0][1])
            first_name = recommender.first_name(person) if person else None
            return {
                "screen": {"id": found.id, "device": found.device, "label": found.label},
                "visitor": {"present": present, "first_name": first_name},
                "basket": list(basket),
                "lists": {
                    name: [{"item": p.item, "reason": p.reason} for p in picks]
                    for name, picks in lists.items()
                },
            }

        try:
            body = await run_in_threadpool(locked, answer)
        except EdgeAgentError as exc:
            logs.log(logger, logging.ERROR, "screen_failed", str(exc), screen=found.id)
            return _error(503, "unavailable", "the agent cannot answer now; it retries by itself")
        return _json(200, body)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not_found", "no such page")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/pair", pair, methods=["POST"]),
            Route("/v1/screen", screen),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
