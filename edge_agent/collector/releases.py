"""Model releases for sites: the newest signed manifest of a model, and a release's ONNX file
(sites verify both against the manifest's signature)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as FastAPIPath
from starlette.concurrency import run_in_threadpool

from edge_agent.collector import wire
from edge_agent.collector.auth import SiteBearer, site_of
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.openapi import errors
from edge_agent.collector.store.central import CentralStore

router = APIRouter(route_class=GuardedRoute)
# The routes' summary= documents them: FastAPI would publish a docstring as the operation's
# description in the OpenAPI document.

# Module level: FastAPI resolves the annotations of the handlers by name.
ReleaseName = Annotated[str, FastAPIPath(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
ReleaseVersion = Annotated[str, FastAPIPath(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]


@router.get(
    "/v1/models/{name}/latest",
    responses={
        200: {"content": {"application/json": {}}, "description": "The signed manifest"},
        **errors(401, 404, 422),
    },
    summary="The newest release of a model: its signed manifest (sites verify it)",
)
async def latest_release(name: ReleaseName, request: Request, bearer: SiteBearer) -> Response:
    await site_of(bearer.credentials if bearer else None, request)
    store: CentralStore = request.app.state.store
    found = await run_in_threadpool(store.latest_release, name)
    if found is None:
        raise wire.WireError(404, f"no release of {name} has been published")
    return Response(found[1], media_type="application/json")


@router.get(
    "/v1/models/{name}/{version}/model.onnx",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The ONNX file"},
        **errors(401, 404, 422),
    },
    summary="The ONNX file of a published release",
)
async def release_model(
    name: ReleaseName, version: ReleaseVersion, request: Request, bearer: SiteBearer
) -> Response:
    await site_of(bearer.credentials if bearer else None, request)
    store: CentralStore = request.app.state.store
    model = await run_in_threadpool(store.release_model, name, version)
    if model is None:
        raise wire.WireError(404, f"{name} {version} has not been published")
    return Response(model, media_type="application/octet-stream")
