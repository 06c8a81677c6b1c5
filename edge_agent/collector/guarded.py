"""The collector's route class: it refuses query parameters a route does not declare, and
turns a route's unexpected exception into a logged JSON 500 instead of a dropped request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from edge_agent.collector import wire
from edge_agent.collector.refusals import HANDLED, answer, who

logger = logging.getLogger("edge_agent.collector")


class GuardedRoute(APIRoute):
    """A route that refuses query parameters it does not declare (a misspelt ``venu=`` would
    otherwise summarise every venue), and whose unexpected exceptions become a logged JSON
    500, not a dropped request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped."""
        handler = super().get_route_handler()
        known = sorted(field.alias for field in self.dependant.query_params)

        async def guarded(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - set(known))
            if unknown:
                raise wire.WireError(
                    422,
                    f"unknown query parameter {', '.join(map(repr, unknown))}; "
                    f"known: {', '.join(known) or 'none'}",
                )
            try:
                return await handler(request)
            except Exception as exc:
                if isinstance(exc, HANDLED):
                    raise
                logger.exception(
                    "request failed", extra={"event": "request_failed", "fields": who(request)}
                )
                return answer(request, 500, "the collector failed on this request; it is logged")

        return guarded
