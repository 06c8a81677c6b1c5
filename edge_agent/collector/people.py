"""What central holds of one person, for an admin answering a subject access request:
``GET /v1/people/{subject_hash}`` (docs/crm-forwarding.md).

The person is named by the subject hash their site's receipts and items carry, never by a
user id in the address (addresses end up in logs).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from edge_agent.collector.auth import admin
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.openapi import PersonBody, errors
from edge_agent.collector.store.central import CentralStore

router = APIRouter(route_class=GuardedRoute)

SUBJECT_PATTERN = r"^[0-9a-f]{64}$"


@router.get(
    "/v1/people/{subject_hash}",
    response_model=PersonBody,
    responses=errors(401, 403, 422),
    dependencies=[Depends(admin)],
    summary="A person's identified items per site, the notices received for them, and what "
    "was forwarded to which CRM destination and when",
)
async def person(
    request: Request,
    subject_hash: Annotated[
        str, Path(pattern=SUBJECT_PATTERN, description="the person's subject hash (64 hex)")
    ],
) -> dict[str, object]:
    store: CentralStore = request.app.state.store

    def read() -> dict[str, object]:
        sites: dict[str, list[dict[str, object]]] = {}
        for held in store.held(subject_hash):
            item = asdict(held)
            sites.setdefault(str(item.pop("site")), []).append(item)
        return {
            "subject_hash": subject_hash,
            "sites": [{"site": site, "items": items} for site, items in sorted(sites.items())],
            "notices": [asdict(n) for n in store.notices(subject_hash)],
            "forwarded": [asdict(f) for f in store.forwarded(subject_hash)],
        }

    return await run_in_threadpool(read)
