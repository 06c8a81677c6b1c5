"""What sites push (docs/sync-protocol.md): ``/v1/sync`` (insight cells, notices, the loss
ledger) and ``/v1/batch`` (identified data, Segment's batch format).

Request bodies are read raw, counted while streaming and decoded by `wire`, never by
FastAPI: the limits must hold before anything is parsed, and a refused request stores
nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from edge_agent import logs
from edge_agent.collector import summary, wire
from edge_agent.collector.auth import SiteBasic, SiteBearer, site_of
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.openapi import StoredBody, errors, raw_body
from edge_agent.collector.sandbox import Sandbox, SandboxCrashed, SandboxTimedOut
from edge_agent.collector.store.central import CentralStore, Envelope, Received, Site
from edge_agent.collector.store.engine import Unavailable, now_ms
from edge_agent.core.cellcheck import CellLimits

logger = logging.getLogger("edge_agent.collector")
router = APIRouter(route_class=GuardedRoute)
# The routes' summary= documents them: FastAPI would publish a docstring as the operation's
# description in the OpenAPI document.

#: How much of an oversized body is read (and dropped) so the client still gets its 413;
#: past this the connection is closed instead.
DRAIN_BYTES = 16 * 1024 * 1024
#: The routes sites push their bodies to.
PUSH_PATHS = frozenset({"/v1/sync", "/v1/batch"})

# Module level: annotations are strings here, resolved against the module's globals.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="sha256 (64 hex) of the uncompressed body; a retry sends the same key",
        json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$"},
    ),
]
StoreBody = Callable[[Request, Envelope, bytes], Coroutine[Any, Any, Received]]


@router.post(
    "/v1/sync",
    response_model=StoredBody,
    responses=errors(400, 401, 403, 409, 413, 415, 422),
    openapi_extra=raw_body(wire.SYNC_SCHEMA),
    summary="Insight cells, erasure and consent notices, the loss ledger",
)
async def sync(
    request: Request, bearer: SiteBearer, idempotency_key: IdempotencyKey = None
) -> dict[str, object]:
    site = await site_of(bearer.credentials if bearer else None, request)
    return await _receive(request, "sync", site, idempotency_key, _store_sync)


@router.post(
    "/v1/batch",
    response_model=StoredBody,
    responses=errors(400, 401, 403, 409, 413, 415, 422),
    openapi_extra=raw_body(wire.BATCH_SCHEMA),
    summary="Identified data (Segment batch), of people whose crm_sync consent holds",
)
async def batch(
    request: Request,
    bearer: SiteBearer,
    basic: SiteBasic,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    token = bearer.credentials if bearer else basic.username if basic else None
    site = await site_of(token, request)
    return await _receive(request, "batch", site, idempotency_key, _store_batch)


async def _receive(
    request: Request, endpoint: str, site: Site, key_header: str | None, store_body: StoreBody
) -> dict[str, object]:
    wire.check_content_type(request.headers.get("content-type"))
    key = wire.idempotency_key(key_header)
    raw = await _read_body(request)
    data = await run_in_threadpool(wire.decompress, raw, request.headers.get("content-encoding"))
    envelope = Envelope(site, endpoint, key, hashlib.sha256(data).hexdigest())
    received = await store_body(request, envelope, data)
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


async def _store_sync(request: Request, envelope: Envelope, data: bytes) -> Received:
    store: CentralStore = request.app.state.store
    limits: wire.Limits = request.app.state.limits
    clock = wire.Clock(now_ms(), limits.skew_ms)
    body = await run_in_threadpool(wire.parse_sync, data, envelope.site.site, clock)
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
    body = await _checked_cells(request.app.state.sandbox, body, limits.cells)
    return await run_in_threadpool(store.receive_sync, envelope, body)


async def _checked_cells(
    sandbox: Sandbox, body: wire.SyncBody, limits: CellLimits
) -> wire.SyncBody:
    cells = [
        (index, item, item.document)
        for index, item in enumerate(body.items)
        if isinstance(item, wire.Insight) and item.document is not None
    ]
    if not cells:
        return body
    documents = [document for _, _, document in cells]
    try:
        checked = await run_in_threadpool(
            lambda: sandbox.call(summary.check_cells, documents, limits)
        )
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


async def _store_batch(request: Request, envelope: Envelope, data: bytes) -> Received:
    store: CentralStore = request.app.state.store
    limits: wire.Limits = request.app.state.limits
    clock = wire.Clock(now_ms(), limits.skew_ms)
    batch = await run_in_threadpool(wire.parse_batch, data, envelope.site.site, clock)
    return await run_in_threadpool(store.receive_batch, envelope, batch)
