"""How the collector says no: every answer that is not a 200 is ``{"error": ..., "detail":
...}`` with the headers its status calls for, whichever part of the app refused."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from edge_agent import logs
from edge_agent.collector import wire
from edge_agent.collector.store.engine import Unavailable

logger = logging.getLogger("edge_agent.collector")

RETRY_AFTER_S = 5
#: Handled by the app's exception handlers; anything else is a fault, answered as a 500.
HANDLED = (wire.WireError, Unavailable, HTTPException, RequestValidationError)


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


def who(request: Request) -> dict[str, object]:
    """What the logs say of a request: its path, and its site once its token is known."""
    return {"path": request.url.path, "site": getattr(request.state, "site", None)}


async def refused(request: Request, exc: wire.WireError) -> JSONResponse:
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
    return error_response(exc.status, exc.message)


async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    """`Unavailable`: the database is busy or unreachable; the site retries."""
    logs.log(logger, logging.WARNING, "database_unavailable", str(exc), **who(request))
    return error_response(503, f"{exc}: retry in {RETRY_AFTER_S} s")


async def bad_parameter(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """A `RequestValidationError`: a parameter FastAPI checked is wrong."""
    detail = "; ".join(
        f"{' '.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    )
    return error_response(422, detail or "invalid parameters")


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """An `HTTPException` of the framework: no such endpoint, a wrong method, no credentials."""
    detail = {
        401: "send Authorization: Bearer <token>",
        404: f"no endpoint {request.url.path}: see /docs",
        405: f"{request.method} is not allowed on {request.url.path}: see /docs",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, detail)
