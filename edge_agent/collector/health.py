"""``/healthz``: the collector answers, and so does its database."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.openapi import HealthBody, errors
from edge_agent.collector.store.central import CentralStore

router = APIRouter(route_class=GuardedRoute)
# The routes' summary= documents them: FastAPI would publish a docstring as the operation's
# description in the OpenAPI document.


@router.get("/healthz", response_model=HealthBody, responses=errors(), summary="Liveness")
async def healthz(request: Request) -> dict[str, object]:
    store: CentralStore = request.app.state.store
    await run_in_threadpool(store.ping)
    return {"status": "ok", "engine": store.engine}
