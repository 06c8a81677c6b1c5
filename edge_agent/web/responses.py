"""The JSON answers of the staff screens' API: never cached, and every refusal is
``{"error": ..., "detail": ...}`` saying what to do."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

NO_STORE = {"Cache-Control": "no-store"}
UNAUTHORIZED = (
    "send Authorization: Bearer <this screen's token>; pair the screen again if it was revoked"
)


def json_answer(status: int, body: object, headers: Mapping[str, str] | None = None) -> Response:
    """``body`` as JSON with ``status``, not to be cached (it may change any second)."""
    return Response(
        orjson.dumps(body),
        status,
        media_type="application/json",
        headers={**NO_STORE, **(headers or {})},
    )


def refusal(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A refusal: ``error`` a stable name, ``detail`` what the caller should do."""
    return json_answer(status, {"error": error, "detail": detail}, headers)
