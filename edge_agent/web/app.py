"""The agent's staff screens: a page and its JSON API (Starlette under uvicorn).

A screen is opened once at the address ``edge-agent screens add`` printed, whose one-time code
the page trades for the screen's own token (kept in the browser, stored here only hashed). With
that token it gets the visitor in front of its device and their lists (`GET /v1/screen`), the
site's figures today (`GET /v1/site`), and both pushed as they change (`GET /v1/screen/stream`,
Server-Sent Events). Answers identify nobody; see `edge_agent.app.screens`.

Everything the page loads comes from this server (the site may have no internet), under a
Content-Security-Policy that allows nothing else and no inline script.

For the installer and the site's monitoring: ``/healthz`` (the process answers), ``/readyz``
(broker, database, disk and models, each with a reason) and ``/metrics`` (Prometheus; on
loopback, or with ``[http] metrics_token``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_agent import logs
from edge_agent.app import screens as answers
from edge_agent.config import Settings
from edge_agent.core.health import (
    HEARTBEAT_STALE_MS,
    Check,
    Verdict,
    broker_check,
    database_check,
    disk_check,
    models_check,
    verdict,
)
from edge_agent.errors import EdgeAgentError, StorageError
from edge_agent.ops.disk import free_bytes
from edge_agent.ops.metrics import Metrics
from edge_agent.serving.models import Models, Sessions
from edge_agent.serving.recommend import Recommender, Stocked
from edge_agent.store.database import Store
from edge_agent.store.screens import Screen, Screens
from edge_agent.web.changes import Changes, place

logger = logging.getLogger(__name__)
MAX_BODY = 4096
MAX_QUERY = 64
STATIC = Path(__file__).parent / "static"
#: A stream checks its screen is still allowed this often (revocation locks it out by then) ...
RECHECK_S = 1.0
#: ... and, with no news from ingest, answers again this often (a CLI erasure, a visit going
#: stale), and says something at least this often so that a dead connection is noticed.
REFRESH_S = 10.0
#: Readiness is worked out at most this often, however often it is asked.
READY_EVERY_S = 1.0
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_NO_STORE = {"Cache-Control": "no-store"}
_UNAUTHORIZED = (
    "send Authorization: Bearer <this screen's token>; pair the screen again if it was revoked"
)
_METRICS_UNAUTHORIZED = "send Authorization: Bearer <[http] metrics_token of the agent's config>"
_METRICS_FORBIDDEN = (
    "the agent listens beyond loopback ([http] host) and [http] metrics_token is empty: set a "
    "token so that only your monitoring reads the metrics"
)
T = TypeVar("T")


def _json(status: int, body: object) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json", headers=_NO_STORE)


def _error(status: int, error: str, detail: str) -> Response:
    return _json(status, {"error": error, "detail": detail})


def _sse(event: str, body: object) -> bytes:
    # orjson never writes a raw newline, so the data fits on the one line SSE wants.
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class Hardened:
    """ASGI middleware: every answer carries the security headers (a pure ASGI wrapper, so
    streamed answers stream)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


@dataclass(frozen=True)
class _Reader:
    """One thread's read-only view of the store (SQLite connections stay in their thread)."""

    store: Store
    screens: Screens
    recommender: Recommender
    models: Models


class _Cached:
    """A value computed at most every ``every_s`` by whichever thread asks first."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.lock = threading.Lock()
        self.value: Any = None
        self.at = float("-inf")

    def get(self, compute: Callable[[], T]) -> T:
        with self.lock:
            if time.monotonic() - self.at >= self.every_s:
                self.value = compute()
                self.at = time.monotonic()
            value: T = self.value
            return value


def _k(request: Request) -> int | None:
    if len(request.url.query) > MAX_QUERY:
        return None
    try:
        k = int(request.query_params.get("k", "5"))
    except ValueError:
        return None
    return k if 1 <= k <= 20 else None


def create_app(
    settings: Settings, clock: Callable[[], int], changes: Changes, metrics: Metrics
) -> ASGIApp:
    """The page and API over the agent's store and models, with its health and metrics.

    Requests read through one read-only connection per worker thread and share the loaded
    models; only pairing writes, through one connection under a lock.
    """
    writer = Store.open(settings.database, settings.store.synchronous)
    write_lock = threading.Lock()
    sessions = Sessions()
    local = threading.local()
    stocked = Stocked()
    # The site's figures are computed at most this often, whatever the number of screens.
    site = _Cached(settings.http.site_refresh_s)
    ready = _Cached(READY_EVERY_S)

    def reader() -> _Reader:
        found: _Reader | None = getattr(local, "reader", None)
        if found is None:
            store = Store.open(settings.database, readonly=True)
            models = Models(store, settings.models_folder, sessions)
            found = local.reader = _Reader(
                store, Screens(store), Recommender(store, models), models
            )
        return found

    def token_of(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and 0 < len(token) <= 256 else None

    async def screen_of(token: str | None) -> Screen | None:
        if token is None:
            return None
        return await run_in_threadpool(lambda: reader().screens.by_token(token))

    def stocked_now() -> dict[str, str]:
        return stocked.get(reader().store, clock())

    def visitor_now(screen: Screen, k: int) -> dict[str, object]:
        return answers.visitor(reader().recommender, screen, k, stocked_now(), clock())

    def site_now() -> dict[str, object]:
        return site.get(
            lambda: answers.site_today(reader().store, settings.insights.k, stocked_now(), clock())
        )

    def readiness_now() -> Verdict:
        s = settings
        try:
            state = reader().store.state()
        except StorageError as exc:
            unreadable = Check("database", False, "unreadable", str(exc))
            return verdict([unreadable, disk_now(), models_now()])
        return verdict(
            [
                broker_check(state.get("broker"), f"{s.mqtt.host}:{s.mqtt.port}"),
                database_check(state.get("heartbeat"), clock(), HEARTBEAT_STALE_MS),
                disk_now(),
                models_now(),
            ]
        )

    def disk_now() -> Check:
        folder = settings.database.parent
        try:
            return disk_check(free_bytes(folder), settings.store.min_free_mb, str(folder))
        except StorageError as exc:
            return Check("disk", False, "unreadable", str(exc))

    def models_now() -> Check:
        models = reader().models
        try:
            serving = [e.name for e in models.entries() if e.status == "serving"]
        except StorageError as exc:
            return Check("models", False, "unreadable", str(exc))
        failures: dict[str, str] = {}
        for name in serving:
            try:
                # Loaded once and shared with the screens' answers: later checks are cheap.
                models.serving(name)
            except StorageError as exc:
                failures[name] = str(exc)
        return models_check(failures, len(serving))

    async def healthz(_: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def readyz(_: Request) -> Response:
        found = await run_in_threadpool(lambda: ready.get(readiness_now))
        return _json(200 if found.ready else 503, found.as_dict())

    async def metrics_page(request: Request) -> Response:
        expected = settings.http.metrics_token
        if expected:
            given = token_of(request)
            if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
                return _error(401, "unauthorized", _METRICS_UNAUTHORIZED)
        elif not settings.http.loopback_only():
            return _error(403, "forbidden", _METRICS_FORBIDDEN)
        body = await run_in_threadpool(metrics.render)
        return Response(body, 200, media_type=CONTENT_TYPE_LATEST, headers=_NO_STORE)

    async def page(_: Request) -> Response:
        return FileResponse(STATIC / "screen.html", headers=_NO_STORE)

    async def pair(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, "too_large", f"send at most {MAX_BODY} bytes")
        try:
            code = orjson.loads(raw).get("code")
        except (orjson.JSONDecodeError, AttributeError):
            code = None
        if not isinstance(code, str) or not 0 < len(code) <= 64:
            return _error(400, "bad_request", 'send JSON: {"code": "<the pairing code>"}')

        def paired() -> str | None:
            with write_lock:
                return Screens(writer).pair(code, clock())

        token = await run_in_threadpool(paired)
        if token is None:
            return _error(
                403,
                "forbidden",
                "the code is unknown, used or expired: run edge-agent screens add for a new one",
            )
        return _json(200, {"token": token})

    async def answer(request: Request, work: Callable[[Screen, int], object]) -> Response:
        found = await screen_of(token_of(request))
        if found is None:
            return _error(401, "unauthorized", _UNAUTHORIZED)
        k = _k(request)
        if k is None:
            return _error(400, "bad_request", "k must be a number from 1 to 20")
        try:
            body = await run_in_threadpool(work, found, k)
        except EdgeAgentError as exc:
            logs.log(logger, logging.ERROR, "screen_failed", str(exc), screen=found.id)
            return _error(503, "unavailable", "the agent cannot answer now; it retries by itself")
        return _json(200, body)

    async def screen(request: Request) -> Response:
        return await answer(request, visitor_now)

    async def site_figures(request: Request) -> Response:
        return await answer(request, lambda _screen, _k: site_now())

    async def stream(request: Request) -> Response:
        token = token_of(request)
        found = await screen_of(token)
        if found is None:
            return _error(401, "unauthorized", _UNAUTHORIZED)
        k = _k(request)
        if k is None:
            return _error(400, "bad_request", "k must be a number from 1 to 20")
        return StreamingResponse(
            _pushes(found, k, token or ""),
            media_type="text/event-stream",
            headers={**_NO_STORE, "X-Accel-Buffering": "no"},
        )

    async def _pushes(found: Screen, k: int, token: str) -> AsyncIterator[bytes]:
        sent: dict[str, object] = {}
        where = place(found.kind, found.device)
        answered = float("-inf")
        since = (-1, -1)
        yield b"retry: 1000\n\n"
        while True:
            if await screen_of(token) is None:
                yield _sse("locked", {"detail": _UNAUTHORIZED})
                return
            now = time.monotonic()
            if changes.version(where) != since or now - answered >= REFRESH_S:
                since = changes.version(where)
                answered = now
                quiet = True
                for name, work in (("visitor", lambda: visitor_now(found, k)), ("site", site_now)):
                    try:
                        body = await run_in_threadpool(work)
                    except EdgeAgentError as exc:
                        logs.log(logger, logging.ERROR, "screen_failed", str(exc), screen=found.id)
                        sent.pop(name, None)  # sent again once it can be answered
                        yield _sse("trouble", {"detail": "the agent cannot answer now; it retries"})
                        quiet = False
                        continue
                    if sent.get(name) != body:
                        sent[name] = body
                        quiet = False
                        yield _sse(name, body)
                if quiet:
                    yield b": still here\n\n"
            await changes.wait(where, since, RECHECK_S)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not_found", "no such page")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        changes.attach(asyncio.get_running_loop())
        yield
        writer.close()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_page),
            Route("/v1/pair", pair, methods=["POST"]),
            Route("/v1/screen", screen),
            Route("/v1/screen/stream", stream),
            Route("/v1/site", site_figures),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    return Hardened(app)
