"""Signing in and out: the login page and form (``/login``), ``/logout``, who is signed in
(``/v1/me``); once signed in, ``/`` is the workspace's overview (`web.dashboard`).

A session is a random id in an HttpOnly, SameSite=Strict cookie; central keeps only its
sha256 (`store.accounts`). The login form is guarded by a token in a cookie of its own that
the form posts back (a page of another origin can send neither), and by the Origin check.
Failed logins make the client address, and the user name tried, wait a while
(`core.throttle`): a guesser slows itself down, and at worst delays a real user for minutes.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from html import escape
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from edge_agent import logs
from edge_agent.collector import wire
from edge_agent.collector.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SignInFirst,
    Viewer,
    check_origin,
    form_fields,
)
from edge_agent.collector.credentials import (
    MAX_PASSWORD,
    digest,
    hash_password,
    local_path,
    verify_password,
)
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.openapi import MeBody, errors
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.web.page import page
from edge_agent.core.names import valid_id
from edge_agent.core.throttle import Throttle

logger = logging.getLogger("edge_agent.collector")

router = APIRouter(route_class=GuardedRoute)
STATIC = Path(__file__).parent / "static"
#: The login form's own token (double-submit): set with the form, posted back with it.
LOGIN_COOKIE = "edge_collector_login"
WRONG = "wrong user name or password"
#: Checked against when the user name is unknown, so an unknown name takes as long to refuse
#: as a wrong password (the time would tell which names exist).
_NOBODY = hash_password(secrets.token_urlsafe(16), secrets.token_bytes(16))
#: Password checks run at once at most: each takes 16 MB and a core for about 50 ms, and a
#: burst of logins must not take the server's memory.
_HASHING_AT_ONCE = 2


def install(app: FastAPI, name: str, public_url: str | None) -> None:
    """Give ``app`` its login, sessions, pages and static files; ``name`` titles the pages,
    ``public_url`` (the address users open, if the collector sits behind a proxy) gives the
    origin forms must come from and makes the cookies Secure when it is https."""
    app.state.collector_name = name
    app.state.public_origin = _origin(public_url) if public_url else None
    # Per address: a guesser waits a minute after 5 failures, 15 after 20. Per user name,
    # looser: guessers spread over many addresses delay a real user, never lock them out.
    app.state.login_throttles = (
        Throttle(per_minute=5, lock_after=20, lock_s=900.0),
        Throttle(per_minute=10, lock_after=50, lock_s=900.0),
    )
    app.state.password_checks = anyio.CapacityLimiter(_HASHING_AT_ONCE)
    app.exception_handler(SignInFirst)(_sign_in_first)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _origin(url: str) -> str:
    """The origin of ``url`` as a browser sends it in ``Origin``: no default port, no path."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address, bracketed again
    default = {"http": 80, "https": 443}.get(scheme)
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{scheme}://{host}{port}"


async def _sign_in_first(_request: Request, exc: SignInFirst) -> Response:
    return RedirectResponse(exc.location, status_code=303)


def _secure(request: Request) -> bool:
    public: str | None = request.app.state.public_origin
    return request.url.scheme == "https" or (public or "").startswith("https://")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(
    request: Request, status: int, *, error: str | None = None, user: str = "", target: str = "/"
) -> HTMLResponse:
    """The login form, with a fresh form token in its cookie and its hidden field."""
    token = secrets.token_urlsafe(32)
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    main = f"""<section class="card login">
<h1>Sign in</h1>
{alert}
<form method="post" action="/login">
<input type="hidden" name="{CSRF_FIELD}" value="{token}">
<input type="hidden" name="next" value="{escape(target)}">
<label for="user">User name</label>
<input id="user" name="user" value="{escape(user)}" autocomplete="username" maxlength="64"
 required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 maxlength="{MAX_PASSWORD}" required>
<button type="submit">Sign in</button>
</form>
</section>"""
    answer = HTMLResponse(page(request.app.state.collector_name, "Sign in", main), status)
    answer.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/login",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return answer


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form(
    request: Request, target: Annotated[str, Query(alias="next", max_length=2048)] = "/"
) -> HTMLResponse:
    return _login_page(request, 200, target=local_path(target))


@router.post("/login", response_class=HTMLResponse, include_in_schema=False)
async def login(request: Request) -> Response:
    fields = await form_fields(request)
    target = local_path(fields.get("next"))
    typed = fields.get("user", "")
    # Shown back in the form and counted by the throttle; looked up only if it is a name.
    user = typed[:64]
    client = _client(request)
    try:
        check_origin(request)
    except wire.WireError as exc:
        return _login_page(request, 403, error=exc.message, target=target)
    posted = fields.get(CSRF_FIELD, "")
    kept = request.cookies.get(LOGIN_COOKIE, "")
    if not posted or not hmac.compare_digest(posted.encode(), kept.encode()):
        return _login_page(
            request, 403, error="this sign-in form has expired: please sign in again", user=user
        )
    by_client, by_user = request.app.state.login_throttles
    now_s = time.monotonic()
    wait = max(by_client.wait_s(client, now_s) or 0.0, by_user.wait_s(user, now_s) or 0.0)
    if wait > 0:
        seconds = math.ceil(wait)
        logs.log(logger, logging.WARNING, "login_throttled", "login throttled", client=client)
        answer = _login_page(
            request,
            429,
            error=f"too many failed sign-ins: try again in {seconds} s",
            user=user,
            target=target,
        )
        answer.headers["Retry-After"] = str(seconds)
        return answer
    store: CentralStore = request.app.state.store
    password = fields.get("password", "")
    found = await run_in_threadpool(store.login_of, user) if valid_id(typed) else None
    matches = len(password) <= MAX_PASSWORD and await anyio.to_thread.run_sync(
        verify_password,
        password,
        found.password if found else _NOBODY,
        limiter=request.app.state.password_checks,
    )
    if found is None or not matches:
        by_client.failed(client, now_s)
        by_user.failed(user, now_s)
        named = user if valid_id(typed) else "(not a user name)"
        await run_in_threadpool(store.login_failed, named, client)
        logs.log(logger, logging.INFO, "login_failed", "login refused", user=named, client=client)
        return _login_page(request, 401, error=WRONG, user=user, target=target)
    session_id = secrets.token_urlsafe(32)
    await run_in_threadpool(store.open_session, found.name, digest(session_id), client)
    logs.log(logger, logging.INFO, "login", "signed in", user=found.name, client=client)
    signed_in = RedirectResponse(target, status_code=303)
    signed_in.set_cookie(
        SESSION_COOKIE,
        session_id,
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    signed_in.delete_cookie(
        LOGIN_COOKIE, path="/login", secure=_secure(request), httponly=True, samesite="strict"
    )
    return signed_in


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, user: Viewer) -> Response:
    if user.via == "session":
        store: CentralStore = request.app.state.store
        session_id = request.cookies.get(SESSION_COOKIE, "")
        await run_in_threadpool(store.end_session, digest(session_id), _client(request))
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict"
    )
    return answer


@router.get(
    "/v1/me",
    response_model=MeBody,
    responses=errors(401),
    summary="Who is calling: the signed-in user (or a token's), and their role",
)
async def me(user: Viewer) -> dict[str, object]:
    return {"name": user.name, "role": user.role}
