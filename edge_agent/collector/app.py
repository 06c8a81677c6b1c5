"""The collector's HTTP API: what sites send (docs/sync-protocol.md) and what admins read.

Request bodies are read raw, counted while streaming and decoded by `wire`, never by
FastAPI: the limits must hold before anything is parsed. Every answer that is not a 200 is
``{"error": ..., "detail": ...}``; nothing a client sends makes the server fail, and a
refused request stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request, Response, Security
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from edge_agent import __version__, logs
from edge_agent.collector import summary, wire
from edge_agent.collector.sandbox import Sandbox, SandboxCrashed, SandboxTimedOut
from edge_agent.collector.store import CentralStore, Envelope, Received, Site, Unavailable
from edge_agent.errors import CollectorError

logger = logging.getLogger("edge_agent.collector")

#: How much of an oversized body is read (and dropped) so the client still gets its 413;
#: past this the connection is closed instead.
DRAIN_BYTES = 16 * 1024 * 1024
RETRY_AFTER_S = 5
MIN_ADMIN_TOKEN = 16

_site_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="siteToken",
    description="The site's token, printed once by `edge-agent-collector add-site`.",
)
_site_basic = HTTPBasic(
    auto_error=False,
    scheme_name="siteBasic",
    description="The site's token as the user name, empty password (Segment libraries).",
)
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The collector's admin token (--admin-token-file or EDGE_COLLECTOR_ADMIN_TOKEN).",
)

# Module level: annotations are strings here, resolved against the module's globals.
_key_header = Header(
    alias="Idempotency-Key",
    description="sha256 (64 hex) of the uncompressed body; a retry sends the same key",
    json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$"},
)


class ErrorBody(BaseModel):
    """Every refusal: a stable name and what to do about it."""

    error: str
    detail: str


class StoredBody(BaseModel):
    """A request stored: how many items were new, and whether it replayed an earlier answer."""

    stored: int
    duplicate: bool


class SummaryRow(BaseModel):
    """One group (venue, or site) and period (day or hour), and its figures unless
    suppressed: ``orders``, ``visits``, ``dwell_s``... (see the ``metric`` parameter)."""

    model_config = ConfigDict(extra="allow")

    venue: str
    site: str | None
    period: str
    start_ms: int
    sites: int
    suppressed: bool
    reason: str | None
    suppressed_hours: int
    suppressed_cells: int


class SummaryBody(BaseModel):
    """Merged insights of the asked days."""

    by: str
    k: int
    start_day: str
    end_day: str
    venue: str | None
    site: str | None
    metrics: list[str] | None
    rows: list[SummaryRow]


class SiteBody(BaseModel):
    """A registered site."""

    site: str
    venue: str
    created_ms: int
    last_seen_ms: int | None
    losses: dict[str, dict[str, int]] | None
    losses_sent_ms: int | None


class SitesBody(BaseModel):
    """Every registered site."""

    sites: list[SiteBody]


class AuditLineBody(BaseModel):
    """One audit line (erasures, withdrawals, sites added)."""

    id: int
    ts_ms: int
    site: str | None
    action: str
    detail: dict[str, Any]


class AuditBody(BaseModel):
    """The newest audit lines first."""

    lines: list[AuditLineBody]


class HealthBody(BaseModel):
    """The collector answers and its database too."""

    status: str
    engine: str


_DESCRIPTIONS = {
    400: "Malformed: not gzip, not JSON, or a malformed header",
    401: "Unknown or missing token",
    403: "The body names another site than the token's",
    404: "No such release",
    409: "Idempotency-Key used before with another body",
    413: "Over 4 MiB as sent or 32 MiB decompressed",
    415: "Not Content-Type application/json, or an encoding other than gzip",
    422: "Valid JSON that breaks the schema (the detail names the field), or a bad parameter",
    500: "A fault of the collector (logged)",
    503: "The database is busy or unreachable: retry after Retry-After seconds",
}


# Module level: FastAPI resolves the annotations of the handlers by name.
ReleaseName = Annotated[str, FastAPIPath(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
ReleaseVersion = Annotated[str, FastAPIPath(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        for status in (*statuses, 500, 503)
    }


def _body(schema: Mapping[str, object]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": "JSON, gzip-compressed with Content-Encoding: gzip (or plain)",
            "content": {"application/json": {"schema": schema}},
        }
    }


def error_response(status: int, detail: str) -> JSONResponse:
    """The JSON answer for a refusal, with the headers its status calls for."""
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="edge-agent-collector"'
    elif status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif status == 413:
        # The rest of an oversized body may be unread: this connection cannot carry another.
        headers["Connection"] = "close"
    return JSONResponse(
        {"error": wire.error_name(status), "detail": detail}, status_code=status, headers=headers
    )


# Handled by the app's exception handlers; anything else is a fault, answered as a 500.
_HANDLED = (wire.WireError, Unavailable, HTTPException, RequestValidationError)


class _GuardedRoute(APIRoute):
    """A route that refuses query parameters it does not declare (a misspelt ``venu=`` would
    otherwise summarise every venue), and whose unexpected exceptions become a logged JSON
    500, not a dropped request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped."""
        handler = super().get_route_handler()
        known = sorted(field.alias for field in self.dependant.query_params)

        async def guarded(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - set(known))
            if unknown:
                raise wire.WireError(
                    422,
                    f"unknown query parameter {', '.join(map(repr, unknown))}; "
                    f"known: {', '.join(known) or 'none'}",
                )
            try:
                return await handler(request)
            except Exception as exc:
                if isinstance(exc, _HANDLED):
                    raise
                logger.exception(
                    "request failed", extra={"event": "request_failed", "fields": _who(request)}
                )
                return error_response(500, "the collector failed on this request; it is logged")

        return guarded


def _who(request: Request) -> dict[str, object]:
    return {"path": request.url.path, "site": getattr(request.state, "site", None)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _read_body(request: Request) -> bytes:
    declared = wire.declared_length(request.headers.get("content-length"))
    if declared is not None and declared > DRAIN_BYTES:
        raise wire.too_large(declared)
    chunks: list[bytes] = []
    size = 0
    # Counted while streaming: a chunked body has no Content-Length to check.
    async for chunk in request.stream():
        size += len(chunk)
        if size <= wire.MAX_COMPRESSED_BYTES:
            chunks.append(chunk)
        elif size > DRAIN_BYTES:
            break
    if size > wire.MAX_COMPRESSED_BYTES:
        raise wire.too_large(size)
    return b"".join(chunks)


def create_app(store: CentralStore, admin_token: str) -> FastAPI:
    """The collector's FastAPI app over ``store``; reads need ``admin_token`` (Bearer).

    Raises:
        CollectorError: the admin token is shorter than 16 characters.
    """
    if len(admin_token) < MIN_ADMIN_TOKEN:
        raise CollectorError(
            f"the admin token must be at least {MIN_ADMIN_TOKEN} characters "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    admin_digest = _sha256(admin_token)
    sandbox = Sandbox(workers=min(4, os.cpu_count() or 1))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        sandbox.close()

    app = FastAPI(
        title="edge-agent collector",
        version=__version__,
        description="Central side of docs/sync-protocol.md: sites push insights, notices and "
        "identified data; admins read merged insights, sites and the audit trail.",
        lifespan=lifespan,
    )
    app.router.route_class = _GuardedRoute
    app.state.sandbox = sandbox

    @app.exception_handler(wire.WireError)
    async def _refused(request: Request, exc: wire.WireError) -> JSONResponse:
        logs.log(
            logger,
            logging.INFO,
            "request_refused",
            "request refused",
            status=exc.status,
            detail=exc.message,
            **_who(request),
        )
        return error_response(exc.status, exc.message)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        logs.log(logger, logging.WARNING, "database_unavailable", str(exc), **_who(request))
        return error_response(503, f"{exc}: retry in {RETRY_AFTER_S} s")

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{' '.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
            for error in exc.errors()
        )
        return error_response(422, detail or "invalid parameters")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = {
            401: "send Authorization: Bearer <token>",
            404: f"no endpoint {request.url.path}: see /docs",
            405: f"{request.method} is not allowed on {request.url.path}: see /docs",
        }.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, detail)

    async def site_of(token: str | None, request: Request) -> Site:
        site = None if not token else await run_in_threadpool(store.site_for_token, token)
        if site is None:
            raise wire.WireError(
                401,
                "unknown or missing site token: send Authorization: Bearer <the token "
                "add-site printed for this site> ([sync] token in the agent's config)",
            )
        request.state.site = site.site
        return site

    async def admin(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_admin_bearer)],
    ) -> None:
        given = _sha256(bearer.credentials) if bearer is not None else ""
        if not hmac.compare_digest(given, admin_digest):
            raise wire.WireError(401, "send Authorization: Bearer <the collector's admin token>")

    async def receive(
        request: Request,
        endpoint: str,
        site: Site,
        key_header: str | None,
        store_body: Callable[[Envelope, bytes], Coroutine[Any, Any, Received]],
    ) -> dict[str, object]:
        wire.check_content_type(request.headers.get("content-type"))
        key = wire.idempotency_key(key_header)
        raw = await _read_body(request)
        data = await run_in_threadpool(
            wire.decompress, raw, request.headers.get("content-encoding")
        )
        envelope = Envelope(site, endpoint, key, hashlib.sha256(data).hexdigest())
        received = await store_body(envelope, data)
        logs.log(
            logger,
            logging.INFO,
            "request_stored",
            "request stored",
            endpoint=endpoint,
            site=site.site,
            stored=received.stored,
            duplicate=received.duplicate,
        )
        return received.as_json()

    async def store_sync(envelope: Envelope, data: bytes) -> Received:
        body = await run_in_threadpool(wire.parse_sync, data, envelope.site.site)
        if body.venue != envelope.site.venue:
            logs.log(
                logger,
                logging.WARNING,
                "venue_mismatch",
                "the site sends another venue than it was added with; its cells are stored "
                "under the venue it was added with",
                site=envelope.site.site,
                sent=body.venue,
                registered=envelope.site.venue,
            )
        body = await checked_cells(body)
        return await run_in_threadpool(store.receive_sync, envelope, body)

    async def checked_cells(body: wire.SyncBody) -> wire.SyncBody:
        cells = [
            (index, item, item.document)
            for index, item in enumerate(body.items)
            if isinstance(item, wire.Insight) and item.document is not None
        ]
        if not cells:
            return body
        documents = [document for _, _, document in cells]
        try:
            checked = await run_in_threadpool(lambda: sandbox.call(summary.check_cells, documents))
        except SandboxCrashed as exc:
            raise wire.WireError(
                422, f"items: an insight cell's sketches cannot be read ({exc})"
            ) from exc
        except SandboxTimedOut as exc:
            # Most likely load, not the body: the site should retry, not give the batch up.
            raise Unavailable(f"the cell checker is busy ({exc})") from exc
        items = list(body.items)
        for (index, item, _), result in zip(cells, checked, strict=True):
            if isinstance(result, str):
                raise wire.WireError(422, f"items[{index}].cell: {result}")
            # Stored as the library wrote it back, not as the site sent it.
            items[index] = replace(item, document=result)
        return replace(body, items=tuple(items))

    async def store_batch(envelope: Envelope, data: bytes) -> Received:
        batch = await run_in_threadpool(wire.parse_batch, data, envelope.site.site)
        return await run_in_threadpool(store.receive_batch, envelope, batch)

    @app.post(
        "/v1/sync",
        response_model=StoredBody,
        responses=_errors(400, 401, 403, 409, 413, 415, 422),
        openapi_extra=_body(wire.SYNC_SCHEMA),
        summary="Insight cells, erasure and consent notices, the loss ledger",
    )
    async def sync(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_site_bearer)],
        idempotency_key: Annotated[str | None, _key_header] = None,
    ) -> dict[str, object]:
        site = await site_of(bearer.credentials if bearer else None, request)
        return await receive(request, "sync", site, idempotency_key, store_sync)

    @app.post(
        "/v1/batch",
        response_model=StoredBody,
        responses=_errors(400, 401, 403, 409, 413, 415, 422),
        openapi_extra=_body(wire.BATCH_SCHEMA),
        summary="Identified data (Segment batch), of people whose crm_sync consent holds",
    )
    async def batch(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_site_bearer)],
        basic: Annotated[HTTPBasicCredentials | None, Security(_site_basic)],
        idempotency_key: Annotated[str | None, _key_header] = None,
    ) -> dict[str, object]:
        token = bearer.credentials if bearer else basic.username if basic else None
        site = await site_of(token, request)
        return await receive(request, "batch", site, idempotency_key, store_batch)

    @app.get(
        "/v1/insights",
        response_model=SummaryBody,
        responses={
            200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
            **_errors(401, 422),
        },
        dependencies=[Depends(admin)],
        summary="Insights per venue (or site) and day (or hour), merged across agents",
    )
    async def insights(
        venue: Annotated[str | None, Query(max_length=64)] = None,
        site: Annotated[
            str | None, Query(max_length=64, description="group by this site instead")
        ] = None,
        start: Annotated[
            str | None,
            Query(alias="from", pattern=r"^\d{4}-\d{2}-\d{2}$", description="first day (UTC)"),
        ] = None,
        end: Annotated[
            str | None,
            Query(alias="to", pattern=r"^\d{4}-\d{2}-\d{2}$", description="last day (UTC)"),
        ] = None,
        by: Literal["day", "hour"] = "day",
        metric: Annotated[
            list[str] | None,
            Query(description="restrict the figures to these: " + ", ".join(summary.METRICS)),
        ] = None,
        k: Annotated[int, Query(ge=1, le=1_000_000)] = 5,
        format: Literal["json", "csv"] = "json",
    ) -> Response:
        query = summary.make_query(
            start=start,
            end=end,
            by=by,
            k=k,
            venue=venue,
            site=site,
            metrics=metric or (),
            today=datetime.now(UTC).date(),
        )
        cells = await run_in_threadpool(
            store.insight_cells, query.start_ms, query.end_ms, query.venue, query.site
        )
        rows: Sequence[summary.Row] = [(c.site, c.venue, c.start_ms, c.cell) for c in cells]
        try:
            result = await run_in_threadpool(lambda: sandbox.call(summary.summarise, rows, query))
        except SandboxCrashed as exc:
            raise wire.WireError(500, f"a stored insight cell cannot be read ({exc})") from exc
        except SandboxTimedOut as exc:
            raise Unavailable(f"the summary took too long ({exc}): ask for fewer days") from exc
        if format == "csv":
            text = await run_in_threadpool(summary.to_csv, result)
            return Response(text, media_type="text/csv; charset=utf-8")
        return Response(orjson.dumps(result), media_type="application/json")

    @app.get(
        "/v1/sites",
        response_model=SitesBody,
        responses=_errors(401),
        dependencies=[Depends(admin)],
        summary="Registered sites, when each was last heard from, and its latest losses",
    )
    async def sites() -> dict[str, object]:
        found = await run_in_threadpool(store.sites)
        return {"sites": [asdict(s) for s in found]}

    @app.get(
        "/v1/audit",
        response_model=AuditBody,
        responses=_errors(401, 422),
        dependencies=[Depends(admin)],
        summary="The audit trail, newest first: erasures, withdrawals, sites added",
    )
    async def audit(
        site: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, object]:
        lines = await run_in_threadpool(store.audit, site, limit)
        return {"lines": [asdict(line) for line in lines]}

    @app.get(
        "/v1/models/{name}/latest",
        responses={
            200: {"content": {"application/json": {}}, "description": "The signed manifest"},
            **_errors(401, 404, 422),
        },
        summary="The newest release of a model: its signed manifest (sites verify it)",
    )
    async def latest_release(
        name: ReleaseName,
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_site_bearer)],
    ) -> Response:
        await site_of(bearer.credentials if bearer else None, request)
        found = await run_in_threadpool(store.latest_release, name)
        if found is None:
            raise wire.WireError(404, f"no release of {name} has been published")
        return Response(found[1], media_type="application/json")

    @app.get(
        "/v1/models/{name}/{version}/model.onnx",
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "The ONNX file"},
            **_errors(401, 404, 422),
        },
        summary="The ONNX file of a published release",
    )
    async def release_model(
        name: ReleaseName,
        version: ReleaseVersion,
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_site_bearer)],
    ) -> Response:
        await site_of(bearer.credentials if bearer else None, request)
        model = await run_in_threadpool(store.release_model, name, version)
        if model is None:
            raise wire.WireError(404, f"{name} {version} has not been published")
        return Response(model, media_type="application/octet-stream")

    @app.get("/healthz", response_model=HealthBody, responses=_errors(), summary="Liveness")
    async def healthz() -> dict[str, object]:
        await run_in_threadpool(store.ping)
        return {"status": "ok", "engine": store.engine}

    return app
