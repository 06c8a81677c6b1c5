"""What the collector's OpenAPI document says beyond the routes: the answers' shapes, the
refusals each route may give, and the raw request bodies that FastAPI never parses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    """Every refusal: a stable name and what to do about it."""

    error: str
    detail: str


class StoredBody(BaseModel):
    """A request stored: how many items were new, and whether it replayed an earlier answer."""

    stored: int
    duplicate: bool


class SummaryRow(BaseModel):
    """One group (venue, or site) and period (day or hour), and its figures unless
    suppressed: ``orders``, ``visits``, ``dwell_s``... (see the ``metric`` parameter)."""

    model_config = ConfigDict(extra="allow")

    venue: str
    site: str | None
    period: str
    start_ms: int
    sites: int
    suppressed: bool
    reason: str | None
    suppressed_hours: int
    suppressed_cells: int


class SummaryBody(BaseModel):
    """Merged insights of the asked days."""

    by: str
    k: int
    start_day: str
    end_day: str
    venue: str | None
    site: str | None
    metrics: list[str] | None
    rows: list[SummaryRow]


class SiteBody(BaseModel):
    """A registered site."""

    site: str
    venue: str
    created_ms: int
    last_seen_ms: int | None
    losses: dict[str, dict[str, int]] | None
    losses_sent_ms: int | None


class SitesBody(BaseModel):
    """Every registered site."""

    sites: list[SiteBody]


class AuditLineBody(BaseModel):
    """One audit line (erasures, withdrawals, sites added)."""

    id: int
    ts_ms: int
    site: str | None
    action: str
    detail: dict[str, Any]


class AuditBody(BaseModel):
    """The newest audit lines first."""

    lines: list[AuditLineBody]


class HealthBody(BaseModel):
    """The collector answers and its database too."""

    status: str
    engine: str


_DESCRIPTIONS = {
    400: "Malformed: not gzip, not JSON, or a malformed header",
    401: "Unknown or missing token",
    403: "The body names another site than the token's",
    404: "No such release",
    409: "Idempotency-Key used before with another body",
    413: "Over 4 MiB as sent or 32 MiB decompressed",
    415: "Not Content-Type application/json, or an encoding other than gzip",
    422: "Valid JSON that breaks the schema (the detail names the field), or a bad parameter",
    500: "A fault of the collector (logged)",
    503: "The database is busy or unreachable: retry after Retry-After seconds",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented refusals of a route: ``statuses``, and the 500 and 503 of any route."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        for status in (*statuses, 500, 503)
    }


def raw_body(schema: Mapping[str, object]) -> dict[str, Any]:
    """The documented request body of a route that reads its body raw (JSON Schema
    ``schema``)."""
    return {
        "requestBody": {
            "required": True,
            "description": "JSON, gzip-compressed with Content-Encoding: gzip (or plain)",
            "content": {"application/json": {"schema": schema}},
        }
    }
