"""What admins read: merged insights (``/v1/insights``), the sites (``/v1/sites``) and the
audit trail (``/v1/audit``): the first two for viewers, the audit for admins (`auth`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edge_agent.collector import summary, wire
from edge_agent.collector.auth import admin, viewer
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.insights import summary_of as insights_of
from edge_agent.collector.openapi import AuditBody, SitesBody, SummaryBody, errors
from edge_agent.collector.sandbox import Sandbox, SandboxCrashed, SandboxTimedOut
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import Unavailable
from edge_agent.core.names import ID_PATTERN

router = APIRouter(route_class=GuardedRoute)
# The routes' summary= documents them: FastAPI would publish a docstring as the operation's
# description in the OpenAPI document.


@router.get(
    "/v1/insights",
    response_model=SummaryBody,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **errors(401, 403, 422),
    },
    dependencies=[Depends(viewer)],
    summary="Insights per venue (or site) and day (or hour), merged across agents",
)
async def insights(
    request: Request,
    venue: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    site: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="group by this site instead")
    ] = None,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="first day (a local day of the site or venue)",
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="last day (a local day of the site or venue)",
        ),
    ] = None,
    by: Literal["day", "hour"] = "day",
    metric: Annotated[
        list[str] | None,
        Query(description="restrict the figures to these: " + ", ".join(summary.METRICS)),
    ] = None,
    k: Annotated[int, Query(ge=1, le=1_000_000)] = 5,
    format: Literal["json", "csv"] = "json",
) -> Response:
    store: CentralStore = request.app.state.store
    sandbox: Sandbox = request.app.state.sandbox
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

    def run(
        rows: Sequence[summary.Row],
        asked: summary.Query,
        zones: dict[str, str],
        rolled: Sequence[summary.RolledDay],
    ) -> dict[str, object]:
        try:
            return sandbox.call(summary.summarise, rows, asked, zones, rolled)
        except SandboxCrashed as exc:
            raise wire.WireError(500, f"a stored insight cell cannot be read ({exc})") from exc
        except SandboxTimedOut as exc:
            raise Unavailable(f"the summary took too long ({exc}): ask for fewer days") from exc

    result, _ = await run_in_threadpool(insights_of, store, query, run)
    if format == "csv":
        text = await run_in_threadpool(summary.to_csv, result)
        return Response(text, media_type="text/csv; charset=utf-8")
    return Response(orjson.dumps(result), media_type="application/json")


@router.get(
    "/v1/sites",
    response_model=SitesBody,
    responses=errors(401, 403),
    dependencies=[Depends(viewer)],
    summary="Registered sites, when each was last heard from, and its latest losses",
)
async def sites(request: Request) -> dict[str, object]:
    store: CentralStore = request.app.state.store
    found = await run_in_threadpool(store.sites)
    return {"sites": [asdict(s) for s in found]}


@router.get(
    "/v1/audit",
    response_model=AuditBody,
    responses=errors(401, 403, 422),
    dependencies=[Depends(admin)],
    summary="The audit trail, newest first: erasures, withdrawals, sites added",
)
async def audit(
    request: Request,
    site: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, object]:
    store: CentralStore = request.app.state.store
    lines = await run_in_threadpool(store.audit, site, limit)
    return {"lines": [asdict(line) for line in lines]}
