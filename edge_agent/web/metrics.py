"""``/metrics`` for Prometheus: with ``[http] metrics_token``, or without a token only when
``metrics_open`` says so and the server listens on loopback."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge_agent.config import Settings
from edge_agent.ops.metrics import Metrics
from edge_agent.web.access import bearer_token
from edge_agent.web.responses import NO_STORE, refusal

_UNAUTHORIZED = "send Authorization: Bearer <[http] metrics_token of the agent's config>"
_FORBIDDEN = (
    "[http] metrics_token is empty: set a token so that only your monitoring reads the "
    "metrics (or, with the agent on loopback only, metrics_open = true)"
)


async def metrics_page(request: Request) -> Response:
    """The agent's metrics in Prometheus' text format."""
    settings: Settings = request.app.state.settings
    expected = settings.http.metrics_token
    if expected:
        given = bearer_token(request)
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return refusal(401, "unauthorized", _UNAUTHORIZED)
    elif not (settings.http.metrics_open and settings.http.loopback_only()):
        return refusal(403, "forbidden", _FORBIDDEN)
    metrics: Metrics = request.app.state.metrics
    body = await run_in_threadpool(metrics.render)
    return Response(body, 200, media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)
