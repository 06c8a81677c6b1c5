"""Who may call: a site by its token (Bearer, or the Basic user name Segment libraries send);
a person by the collector's admin token, a user's API token (both Bearer) or a session
cookie, with the role each grants (`viewer`, `admin`). Tokens are compared as sha256 digests.

A request that a session cookie authenticates and that may change something (POST, PUT,
PATCH, DELETE) must also carry the session's CSRF token and, when it names one, this
collector's own ``Origin``: another site's page could make the browser send the cookie,
never the token. Bearer requests need neither (a browser never adds a Bearer header).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request, Security
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from starlette.concurrency import run_in_threadpool

from edge_agent.collector import wire
from edge_agent.collector.credentials import Role, csrf_token, digest, may
from edge_agent.collector.store.central import CentralStore, ReplacedToken, Site

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
    description="The collector's admin token (--admin-token-file or EDGE_COLLECTOR_ADMIN_TOKEN), "
    "or a user's API token (`edge-agent-collector users token`).",
)
SESSION_COOKIE = "edge_collector_session"
#: What a session's holder must send, besides the cookie, to change anything.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
#: The name the admin token signs in as: not a valid user name, so no user can be taken for it.
ADMIN_TOKEN_USER = "(admin token)"  # noqa: S105 - a name, not the token
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_FORM_FIELDS = 16

# Module level: FastAPI resolves the annotations of the handlers by name.
SiteBearer = Annotated[HTTPAuthorizationCredentials | None, Security(SITE_BEARER)]
SiteBasic = Annotated[HTTPBasicCredentials | None, Security(SITE_BASIC)]
AdminBearer = Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_BEARER)]


async def site_of(token: str | None, request: Request) -> Site:
    """The site whose token is ``token`` (the request's logs name it from now on).

    Raises:
        wire.WireError: 401, no such token, or one `rotate-token` replaced whose overlap
            has ended (then the detail says so, and when).
        Unavailable: the database is busy or unreachable.
    """
    store: CentralStore = request.app.state.store
    site = None if not token else await run_in_threadpool(store.site_for_token, token)
    if isinstance(site, ReplacedToken):
        raise wire.WireError(
            401,
            f"this site's token was replaced on {_utc(site.replaced_ms)} and stopped working "
            f"on {_utc(site.expired_ms)}: install the new one (from edge-agent-collector "
            "rotate-token) as [sync] token in the agent's config and restart the agent",
        )
    if site is None:
        raise wire.WireError(
            401,
            "unknown or missing site token: send Authorization: Bearer <the token "
            "add-site or rotate-token printed for this site> ([sync] token in the agent's "
            "config)",
        )
    request.state.site = site.site
    return site


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a user (or the admin token), the role it grants, how it was
    authenticated, and the session's CSRF token (None for a Bearer token)."""

    name: str
    role: Role
    via: Literal["admin_token", "api_token", "session"]
    csrf: str | None


class SignInFirst(wire.WireError):
    """A browser asked for a page without being signed in: it is sent to the login page."""

    def __init__(self, location: str) -> None:
        super().__init__(401, "sign in first")
        self.location = location


def own_origin(request: Request) -> str:
    """This collector's origin as a browser names it: ``--public-url``'s, else the request's."""
    public: str | None = request.app.state.public_origin
    return public or f"{request.url.scheme}://{request.url.netloc}"


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a form post (``application/x-www-form-urlencoded``; the body is already
    bounded by the app's body limit), the first value of each; empty for any other body.

    Raises:
        wire.WireError: 422, more fields than any form of the collector has.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    text = (await request.body()).decode("utf-8", errors="replace")
    try:
        parsed = parse_qs(text, max_num_fields=_MAX_FORM_FIELDS)
    except ValueError as exc:
        raise wire.WireError(422, f"a form of at most {_MAX_FORM_FIELDS} fields") from exc
    return {name: values[0] for name, values in parsed.items()}


def check_origin(request: Request) -> None:
    """Refuse a request whose ``Origin`` (when it sends one) is not this collector's.

    Raises:
        wire.WireError: 403, another origin.
    """
    origin = request.headers.get("origin")
    if origin is not None and origin != own_origin(request):
        raise wire.WireError(
            403,
            f"a request from {origin[:100]!r} is refused: only pages of {own_origin(request)} "
            "may send it (set serve --public-url to the address users open)",
        )


async def check_csrf(request: Request, expected: str) -> None:
    """Refuse an unsafe request without ``expected`` in the X-CSRF-Token header or the csrf
    form field, or from another origin.

    Raises:
        wire.WireError: 403, no or a wrong token, or another origin.
    """
    check_origin(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        given = (await form_fields(request)).get(CSRF_FIELD)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise wire.WireError(
            403,
            f"send the session's CSRF token in the {CSRF_HEADER} header (or the {CSRF_FIELD} "
            "form field), as the collector's own pages do",
        )


def wants_page(request: Request) -> bool:
    """Whether a browser asked for a page (it is sent to sign in, or shown a refusal as one)."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


async def _principal(request: Request, bearer: HTTPAuthorizationCredentials | None) -> Principal:
    store: CentralStore = request.app.state.store
    if bearer is not None:
        given = digest(bearer.credentials)
        if hmac.compare_digest(given, request.app.state.admin_digest):
            return Principal(ADMIN_TOKEN_USER, "admin", "admin_token", None)
        holder = await run_in_threadpool(store.token_holder, given)
        if holder is None:
            raise wire.WireError(
                401,
                "unknown token: send Authorization: Bearer <the collector's admin token, or a "
                "user's API token from users token>",
            )
        return Principal(holder.name, holder.role, "api_token", None)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        holder = await run_in_threadpool(store.session_holder, digest(session_id))
        if holder is not None:
            signed_in = Principal(holder.name, holder.role, "session", csrf_token(session_id))
            if request.method not in _SAFE:
                await check_csrf(request, csrf_token(session_id))
            return signed_in
    if wants_page(request):
        asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInFirst(f"/login?next={quote(asked, safe='/')}")
    raise wire.WireError(
        401, "sign in, or send Authorization: Bearer <the admin token or a user's API token>"
    )


async def _holding(
    request: Request, bearer: HTTPAuthorizationCredentials | None, needed: Role
) -> Principal:
    principal = await _principal(request, bearer)
    # Before the role check: a page refused for its role still says who is signed in.
    request.state.user = principal
    if not may(principal.role, needed):
        raise wire.WireError(
            403, f"this needs the {needed} role; {principal.name} is a {principal.role}"
        )
    return principal


async def viewer(request: Request, bearer: AdminBearer) -> Principal:
    """A dependency of the routes a viewer may use (an admin may too): who is calling.

    Raises:
        SignInFirst: a browser asked for a page without a session.
        wire.WireError: 401 not signed in or an unknown token, 403 a missing CSRF token or
            another origin.
    """
    return await _holding(request, bearer, "viewer")


async def admin(request: Request, bearer: AdminBearer) -> Principal:
    """A dependency of the admin's routes: who is calling, an admin.

    Raises:
        SignInFirst: a browser asked for a page without a session.
        wire.WireError: 401 not signed in or an unknown token, 403 not an admin, a missing
            CSRF token or another origin.
    """
    return await _holding(request, bearer, "admin")


#: The caller of a route, for routes that use it (``user: Viewer``).
Viewer = Annotated[Principal, Depends(viewer)]
Admin = Annotated[Principal, Depends(admin)]
