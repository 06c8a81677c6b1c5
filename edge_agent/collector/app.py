"""The collector's HTTP API: what sites send (docs/sync-protocol.md) and what admins read.

Nothing a client sends makes the server fail, and a refused request stores nothing. This
module only assembles the app: the routes live in `intake` (what sites push), `admin` (what
admins read), `releases` (models for sites) and `health`; refusals are answered by
`refusals`, and `guarded` wraps every route. They read the store, the sandbox and the admin
token's digest from ``app.state``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from edge_agent import __version__
from edge_agent.bodylimit import BodyLimit
from edge_agent.collector import (
    admin,
    fleet,
    forwarder,
    health,
    hygiene,
    intake,
    people,
    refusals,
    releases,
    rollup,
    wire,
    workspace,
)
from edge_agent.collector.credentials import digest
from edge_agent.collector.sandbox import Sandbox
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import Unavailable
from edge_agent.collector.web import dashboard, explorer, headers, login
from edge_agent.errors import CollectorError
from edge_agent.securityheaders import SecurityHeaders

MIN_ADMIN_TOKEN = 16


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    sandbox: Sandbox = app.state.sandbox
    if not app.state.background:
        yield
        sandbox.close()
        return
    rollups = rollup.worker(app.state.store, sandbox)
    rollups.start()
    forwarding, client = forwarder.worker(app.state.store)
    forwarding.start()
    pruning = hygiene.worker(app.state.store, app.state.retention, app.state.pruned_rows)
    pruning.start()
    yield
    pruning.stop()
    forwarding.stop()
    client.close()
    rollups.stop()
    sandbox.close()


def check_admin_token(admin_token: str) -> None:
    """Refuse an admin token too short to be a secret.

    Raises:
        CollectorError: the admin token is shorter than 16 characters.
    """
    if len(admin_token) < MIN_ADMIN_TOKEN:
        raise CollectorError(
            f"the admin token must be at least {MIN_ADMIN_TOKEN} characters "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def create_app(
    store: CentralStore,
    admin_token: str,
    limits: wire.Limits | None = None,
    *,
    name: str = "edge-agent collector",
    public_url: str | None = None,
    background: bool = True,
    processes: int = 1,
    shared_metrics: Path | None = None,
) -> FastAPI:
    """The collector's FastAPI app over ``store``; reads need ``admin_token`` (Bearer), a
    user's API token or a session; what sites push is held to ``limits``. ``name`` titles
    its pages; ``public_url`` is the address users open (`web.login.install`).

    ``background``: the app runs the background jobs (rolling up, forwarding, pruning)
    while it serves; of several processes serving one database, exactly one does
    (`edge_agent.collector.workers`). ``processes``: how many serve it, to share the
    machine's cores between their sandboxes. ``shared_metrics``: the folder where the
    processes' counters add up (`hygiene.install`).

    Raises:
        CollectorError: the admin token is shorter than 16 characters.
    """
    check_admin_token(admin_token)
    app = FastAPI(
        title="edge-agent collector",
        version=__version__,
        description="Central side of docs/sync-protocol.md: sites push insights, notices and "
        "identified data, and check in; the central team reads the workspace (overview, "
        "comparison, trends, exports), the fleet's health, merged insights and the audit trail.",
        lifespan=_lifespan,
        # Served by web.explorer from files of the collector's own: FastAPI's pages load
        # Swagger UI and ReDoc from a CDN, blank on a network with no way out.
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.admin_digest = digest(admin_token)
    app.state.limits = limits or wire.Limits()
    app.state.background = background
    # The sketch readers are CPU-bound: more of them than cores, over all the processes
    # serving, only costs memory (each is a Python process with DataSketches loaded).
    app.state.sandbox = Sandbox(workers=max(1, min(4, os.cpu_count() or 1) // max(1, processes)))
    app.exception_handler(wire.WireError)(refusals.refused)
    app.exception_handler(Unavailable)(refusals.unavailable)
    app.exception_handler(RequestValidationError)(refusals.bad_parameter)
    app.exception_handler(HTTPException)(refusals.http_error)
    for routes in (
        intake.router,
        admin.router,
        people.router,
        workspace.router,
        dashboard.router,
        releases.router,
        health.router,
    ):
        app.include_router(routes)
    fleet.install(app)
    hygiene.install(app, shared=shared_metrics)
    explorer.install(app)
    login.install(app, name, public_url)
    app.add_middleware(BodyLimit, limit=_body_limit)
    app.add_middleware(SecurityHeaders, headers=headers.headers)
    return app


#: What a request other than a site's push may send.
MAX_OTHER_BODY = 64 * 1024


def _body_limit(path: str) -> int:
    # A push is read and judged by the intake (413 over wire.MAX_COMPRESSED_BYTES, read up to
    # DRAIN_BYTES so the site is told): this bound, a chunk beyond, only backs it up. Nothing
    # else takes more than a small JSON body.
    if path in intake.PUSH_PATHS:
        return intake.DRAIN_BYTES + MAX_OTHER_BODY * 16
    return MAX_OTHER_BODY
