"""Who asks and for how much: a request's bearer token, the screen it belongs to, and the
number of picks (``k``) it asks for."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge_agent.store.screens import Screen
from edge_agent.web.readers import Readers
from edge_agent.web.responses import UNAUTHORIZED, refusal

MAX_QUERY = 64
MAX_TOKEN = 256


def bearer_token(request: Request) -> str | None:
    """The request's ``Authorization: Bearer`` token, if it has one of a sane length."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and 0 < len(token) <= MAX_TOKEN else None


async def screen_of(request: Request, token: str | None) -> Screen | None:
    """The paired, unrevoked screen whose token is ``token``.

    Raises:
        StorageError: the database cannot be read.
    """
    if token is None:
        return None
    readers: Readers = request.app.state.readers
    return await run_in_threadpool(lambda: readers.get().screens.by_token(token))


def asked_k(request: Request) -> int | None:
    """The ``k`` of the query (5 if absent), or None if the query is too long or ``k`` is not
    a number from 1 to 20."""
    if len(request.url.query) > MAX_QUERY:
        return None
    try:
        k = int(request.query_params.get("k", "5"))
    except ValueError:
        return None
    return k if 1 <= k <= 20 else None


async def screen_asking(request: Request) -> tuple[Screen, str, int] | Response:
    """The screen asking, its token and the ``k`` it asks for, or the refusal to answer
    (401 for no such screen, 400 for a bad ``k``).

    Raises:
        StorageError: the database cannot be read.
    """
    token = bearer_token(request)
    found = await screen_of(request, token)
    if found is None or token is None:
        return refusal(401, "unauthorized", UNAUTHORIZED)
    k = asked_k(request)
    if k is None:
        return refusal(400, "bad_request", "k must be a number from 1 to 20")
    return found, token, k
