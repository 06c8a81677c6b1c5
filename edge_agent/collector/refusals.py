"""How the collector says no: every answer that is not a 200 is ``{"error": ..., "detail":
...}`` with the headers its status calls for, whichever part of the app refused; a browser
asking for one of the workspace's pages gets the same words as a page of the workspace."""

from __future__ import annotations

import logging
from html import escape

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from edge_agent import logs
from edge_agent.collector import wire
from edge_agent.collector.auth import wants_page
from edge_agent.collector.store.engine import Unavailable
from edge_agent.collector.web.page import page

logger = logging.getLogger("edge_agent.collector")

RETRY_AFTER_S = 5
#: Handled by the app's exception handlers; anything else is a fault, answered as a 500.
HANDLED = (wire.WireError, Unavailable, HTTPException, RequestValidationError)


#: What a refused page is titled, by status.
_PAGE_TITLES = {
    404: "Not found",
    422: "That cannot be shown",
    500: "Something failed",
    503: "Busy, try again",
}


def answer(request: Request, status: int, detail: str) -> Response:
    """A refusal as `error_response`, or as a page when a browser asked for a page (not the
    API under ``/v1/``): a person following a stale link reads why, not JSON."""
    if status == 401 or not _page_asked(request):
        return error_response(status, detail)
    title = _PAGE_TITLES.get(status, "Refused")
    body = (
        f'<h1>{escape(title)}</h1><p class="lede">{escape(detail)}</p>'
        '<p><a href="/overview">Back to the overview</a></p>'
    )
    return HTMLResponse(
        page(getattr(request.app.state, "collector_name", "edge-agent collector"), title, body),
        status_code=status,
        headers=_headers(status),
    )


def _page_asked(request: Request) -> bool:
    return not request.url.path.startswith(("/v1/", "/metrics")) and wants_page(request)


def error_response(status: int, detail: str) -> JSONResponse:
    """The JSON answer for a refusal, with the headers its status calls for."""
    return JSONResponse(
        {"error": wire.error_name(status), "detail": detail},
        status_code=status,
        headers=_headers(status),
    )


def _headers(status: int) -> dict[str, str]:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="edge-agent-collector"'
    elif status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif status == 413:
        # The rest of an oversized body may be unread: this connection cannot carry another.
        headers["Connection"] = "close"
    return headers


def who(request: Request) -> dict[str, object]:
    """What the logs say of a request: its path, and its site once its token is known."""
    return {"path": request.url.path, "site": getattr(request.state, "site", None)}


async def refused(request: Request, exc: wire.WireError) -> Response:
    """A `wire.WireError`: the request broke the protocol."""
    logs.log(
        logger,
        logging.INFO,
        "request_refused",
        "request refused",
        status=exc.status,
        detail=exc.message,
        **who(request),
    )
    return answer(request, exc.status, exc.message)


async def unavailable(request: Request, exc: Unavailable) -> Response:
    """`Unavailable`: the database is busy or unreachable; the site retries."""
    logs.log(logger, logging.WARNING, "database_unavailable", str(exc), **who(request))
    return answer(request, 503, f"{exc}: retry in {RETRY_AFTER_S} s")


async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
    """A `RequestValidationError`: a parameter FastAPI checked is wrong."""
    detail = "; ".join(
        f"{' '.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    )
    return answer(request, 422, detail or "invalid parameters")


async def http_error(request: Request, exc: HTTPException) -> Response:
    """An `HTTPException` of the framework: no such endpoint, a wrong method, no credentials."""
    path = request.url.path
    detail = {
        401: "send Authorization: Bearer <token>",
        404: f"there is no page {path}"
        if _page_asked(request)
        else f"no endpoint {path}: see /docs",
        405: f"{request.method} is not allowed on {request.url.path}: see /docs",
    }.get(exc.status_code, str(exc.detail))
    return answer(request, exc.status_code, detail)
