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
    name: str | None = None
    timezone: str | None = None
    currency: str | None = None


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


class MeBody(BaseModel):
    """Who is calling: a user, or ``(admin token)``, and the role the call is made with."""

    name: str
    role: str


class CheckedInBody(BaseModel):
    """A check-in kept: central's clock when it arrived (its Date header says it too), and
    the products whose names the next check-in should carry (`products`): ones central
    shows among a day's top products with no name from the site yet."""

    received_ms: int
    products_wanted: list[str]


class CheckInSeen(BaseModel):
    """When central last received the site's check-in, and how long ago."""

    received_ms: int
    age_s: int


class FleetSiteBody(BaseModel):
    """A site's verdict, its reasons and its latest check-in (docs/fleet-health.md)."""

    site: str
    venue: str
    name: str | None
    health: str
    reasons: list[str]
    last_seen_ms: int | None
    check_in: CheckInSeen | None
    report: dict[str, Any] | None


class FleetBody(BaseModel):
    """Every site's verdict, and how many sites have each."""

    now_ms: int
    silent_after_s: float
    counts: dict[str, int]
    sites: list[FleetSiteBody]


class HealthBody(BaseModel):
    """The collector answers and its database too."""

    status: str
    engine: str


class HeldItemBody(BaseModel):
    """An identified item central holds: the Segment item as the site sent it."""

    message_id: str
    type: str
    event: str | None
    timestamp_ms: int
    received_ms: int
    item: dict[str, Any]


class HeldSiteBody(BaseModel):
    """The items one site sent of the person."""

    site: str
    items: list[HeldItemBody]


class NoticeSeenBody(BaseModel):
    """An erasure or consent withdrawal received, and the identified rows it removed."""

    site: str
    kind: str
    item_id: str
    purpose: str | None
    requested_ms: int
    identified_removed: int
    received_ms: int


class ForwardedBody(BaseModel):
    """An item or notice queued for a CRM destination, and what became of it."""

    destination: str
    site: str
    kind: str
    message_id: str
    queued_ms: int
    attempts: int
    delivered_ms: int | None
    dead_ms: int | None
    last_error: str | None


class PersonBody(BaseModel):
    """What central holds of one person (by subject hash), and where it went."""

    subject_hash: str
    sites: list[HeldSiteBody]
    notices: list[NoticeSeenBody]
    forwarded: list[ForwardedBody]


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
