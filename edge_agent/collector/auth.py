"""Who may call: a site by its token (Bearer, or the Basic user name Segment libraries send),
an admin by the collector's admin token. Tokens are compared as sha256 digests."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from starlette.concurrency import run_in_threadpool

from edge_agent.collector import wire
from edge_agent.collector.store.central import CentralStore, Site

SITE_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="siteToken",
    description="The site's token, printed once by `edge-agent-collector add-site`.",
)
SITE_BASIC = HTTPBasic(
    auto_error=False,
    scheme_name="siteBasic",
    description="The site's token as the user name, empty password (Segment libraries).",
)
ADMIN_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The collector's admin token (--admin-token-file or EDGE_COLLECTOR_ADMIN_TOKEN).",
)

# Module level: FastAPI resolves the annotations of the handlers by name.
SiteBearer = Annotated[HTTPAuthorizationCredentials | None, Security(SITE_BEARER)]
SiteBasic = Annotated[HTTPBasicCredentials | None, Security(SITE_BASIC)]
AdminBearer = Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_BEARER)]


def sha256(text: str) -> str:
    """The hex sha256 of ``text`` (how tokens are kept and compared)."""
    return hashlib.sha256(text.encode()).hexdigest()


async def site_of(token: str | None, request: Request) -> Site:
    """The site whose token is ``token`` (the request's logs name it from now on).

    Raises:
        wire.WireError: 401, no such token.
        Unavailable: the database is busy or unreachable.
    """
    store: CentralStore = request.app.state.store
    site = None if not token else await run_in_threadpool(store.site_for_token, token)
    if site is None:
        raise wire.WireError(
            401,
            "unknown or missing site token: send Authorization: Bearer <the token "
            "add-site printed for this site> ([sync] token in the agent's config)",
        )
    request.state.site = site.site
    return site


async def admin(request: Request, bearer: AdminBearer) -> None:
    """A dependency of the admin's routes: the request carries the admin token.

    Raises:
        wire.WireError: 401, no admin token or another one.
    """
    given = sha256(bearer.credentials) if bearer is not None else ""
    if not hmac.compare_digest(given, request.app.state.admin_digest):
        raise wire.WireError(401, "send Authorization: Bearer <the collector's admin token>")
