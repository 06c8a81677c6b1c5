"""The agent's staff screens: a page and its JSON API (Starlette under uvicorn).

A screen is opened once at the address ``edge-agent screens add`` printed, whose one-time code
the page trades for the screen's own token (kept in the browser, stored here only hashed). With
that token it gets the visitor in front of its device and their lists (`GET /v1/screen`), the
site's figures today (`GET /v1/site`), and both pushed as they change (`GET /v1/screen/stream`,
Server-Sent Events); at a venue whose agents share, the venue's figures today from all of
them (`GET /v1/venue`). A gate screen (``screens add --gate``, its page at ``/gate``) gets
the venue's gates, attendance, halls and warnings (`GET /v1/gates`), pushed on the same stream
whenever a ticket scan is stored. Answers identify nobody; see `edge_agent.app.screens`.

Everything the page loads comes from this server (the site may have no internet), under a
Content-Security-Policy that allows nothing else and no inline script (`web.headers`).

For the installer and the site's monitoring: ``/healthz`` (the process answers), ``/readyz``
(broker, database, disk and models, each with a reason) and ``/metrics`` (Prometheus, with
``[http] metrics_token``, or on loopback with ``metrics_open``). Every request must name
the agent by an address or a known name (`web.hosts`), and arrive whole in time from a client
holding few connections (`edge_agent.slowclients`).

This module only assembles the app: the endpoints live in their own modules and read what
they share from ``app.state`` (set up here).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from edge_agent.bodylimit import BodyLimit
from edge_agent.config import Settings
from edge_agent.core.throttle import Throttle
from edge_agent.ops.metrics import Metrics
from edge_agent.store.database import Store
from edge_agent.web import health, screens
from edge_agent.web.answers import ScreenAnswers
from edge_agent.web.cached import Cached
from edge_agent.web.changes import Changes
from edge_agent.web.headers import Hardened
from edge_agent.web.hosts import KnownHosts
from edge_agent.web.metrics import metrics_page
from edge_agent.web.readers import Readers
from edge_agent.web.responses import refusal
from edge_agent.web.stream import stream


async def _not_found(_request: Request, _exc: Exception) -> Response:
    return refusal(404, "not_found", "no such page")


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    changes: Changes = app.state.changes
    changes.attach(asyncio.get_running_loop())
    yield
    writer: Store = app.state.writer
    writer.close()


def create_app(
    settings: Settings, clock: Callable[[], int], changes: Changes, metrics: Metrics
) -> ASGIApp:
    """The page and API over the agent's store and models, with its health and metrics.

    Requests read through one read-only connection per worker thread and share the loaded
    models; only pairing writes, through one connection under a lock.

    Raises:
        StorageError: the database cannot be opened.
    """
    app = Starlette(
        routes=[
            Route("/", screens.page),
            Route("/gate", screens.gate_page),
            Route("/healthz", health.healthz),
            Route("/readyz", health.readyz),
            Route("/metrics", metrics_page),
            Route("/v1/pair", screens.pair, methods=["POST"]),
            Route("/v1/screen", screens.screen),
            Route("/v1/screen/stream", stream),
            Route("/v1/site", screens.site),
            Route("/v1/venue", screens.venue),
            Route("/v1/gates", screens.gates),
            Mount("/static", StaticFiles(directory=screens.STATIC), name="static"),
        ],
        exception_handlers={404: _not_found, 405: _not_found},
        lifespan=_lifespan,
    )
    readers = Readers(settings.database, settings.models_folder)
    app.state.settings = settings
    app.state.clock = clock
    app.state.changes = changes
    app.state.metrics = metrics
    app.state.readers = readers
    app.state.answers = ScreenAnswers(
        readers,
        clock,
        settings.insights.k,
        settings.http.site_refresh_s,
        settings.site,
        settings.venue,
    )
    app.state.ready = Cached(health.READY_EVERY_S)
    app.state.writer = Store.open(settings.database, settings.store.synchronous)
    app.state.write_lock = threading.Lock()
    app.state.pairing = Throttle()
    # The screens send small JSON (a pairing code): no request needs more than that.
    limited = BodyLimit(app, lambda _path: screens.MAX_BODY)
    return Hardened(KnownHosts(limited, settings.http.hosts()))
