"""The request bodies a site sends (docs/sync-protocol.md, docs/fleet-health.md): limits,
decoding, checks.

Pure: bytes in, dataclasses out, or a `WireError` carrying the HTTP status and a message
an installer can act on. The JSON Schemas here are also what the OpenAPI document shows.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import jsonschema_rs
import orjson

from edge_agent.core.cellcheck import CellLimits
from edge_agent.core.events import nul_in
from edge_agent.core.fleet import CheckIn, from_document
from edge_agent.core.localtime import is_zone
from edge_agent.core.wireform import (
    ERASURE,
    ID,
    INSIGHT,
    MAX_CHECKIN_BYTES,
    MAX_MS,
    PROTOCOL,
    SEGMENT_ITEM,
    SYNC_ITEMS,
    checkin_problem,
    item_problem,
    schema_problem,
)
from edge_agent.errors import CollectorError

MAX_COMPRESSED_BYTES = 4 * 1024 * 1024
MAX_DECOMPRESSED_BYTES = 32 * 1024 * 1024
#: The one purpose whose withdrawal removes what central holds (identified data).
CRM_SYNC = "crm_sync"
_MS: dict[str, object] = {"type": "integer", "minimum": 0, "maximum": MAX_MS}

_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "idempotency_conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class WireError(CollectorError):
    """A request refused: ``status`` is the HTTP status, the message says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_name(status: int) -> str:
    """A stable snake_case name of an HTTP status the collector answers with (``error``)."""
    return _REASONS.get(status, "error")


# --- schemas -------------------------------------------------------------------------------

_LOSSES: dict[str, object] = {
    "type": "object",
    "description": "cumulative counts since install: outbox class -> reason -> count",
    "maxProperties": 50,
    "additionalProperties": {
        "type": "object",
        "maxProperties": 50,
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": MAX_MS},
    },
}


def _sync_schema(items: dict[str, object]) -> dict[str, object]:
    return {
        "type": "object",
        "required": ["protocol", "site", "venue", "sent_ms", "items"],
        "properties": {
            "protocol": {"const": PROTOCOL},
            "site": ID,
            "venue": ID,
            "sent_ms": _MS,
            "items": {"type": "array", "maxItems": 10_000, "items": items},
            "losses": _LOSSES,
        },
    }


#: ``POST /v1/sync``, as the OpenAPI document shows it.
SYNC_SCHEMA = _sync_schema({"oneOf": list(SYNC_ITEMS.values())})
# Checked in two steps so a message names the field inside the item, not only "oneOf failed".
_SYNC_ENVELOPE = _sync_schema(
    {"type": "object", "required": ["kind"], "properties": {"kind": {"enum": list(SYNC_ITEMS)}}}
)

#: ``POST /v1/batch``, as the OpenAPI document shows it.
BATCH_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {"type": "array", "minItems": 1, "maxItems": 10_000, "items": SEGMENT_ITEM},
        "sentAt": {"type": "string", "maxLength": 64},
    },
}

_VALIDATORS = {
    "sync": jsonschema_rs.validator_for(_SYNC_ENVELOPE),
    "batch": jsonschema_rs.validator_for(BATCH_SCHEMA),
}


# --- bodies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Insight:
    """One hour cell of the site; ``document`` is None when the site suppressed it.
    ``revision`` orders versions of the same hour; from sites that send none, ``computed_ms``
    does (None: the body's ``sent_ms``)."""

    id: str
    k: int
    start_ms: int
    computed_ms: int | None
    revision: int | None
    reason: str | None
    document: Mapping[str, object] | None


@dataclass(frozen=True, slots=True)
class Notice:
    """An erasure or a consent withdrawal of one subject (named by its hash only)."""

    kind: str
    id: str
    subject_hash: str
    purpose: str | None
    timestamp_ms: int

    @property
    def removes_identified(self) -> bool:
        """Whether central must delete the subject's identified rows."""
        return self.kind == ERASURE or self.purpose == CRM_SYNC


@dataclass(frozen=True, slots=True)
class SyncBody:
    """A ``POST /v1/sync`` body."""

    site: str
    venue: str
    sent_ms: int
    items: tuple[Insight | Notice, ...]
    losses: dict[str, dict[str, int]] | None


@dataclass(frozen=True, slots=True)
class Identified:
    """One Segment identify/track item of a person whose ``crm_sync`` consent holds."""

    message_id: str
    subject_hash: str
    user_id: str
    type: str
    event: str | None
    timestamp_ms: int
    body: str


@dataclass(frozen=True, slots=True)
class Batch:
    """A ``POST /v1/batch`` body."""

    items: tuple[Identified, ...]


def check_content_type(content_type: str | None) -> None:
    """Refuse (415) a body that is not declared as JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise WireError(
            415,
            f"Content-Type is {content_type or 'missing'!r}: send Content-Type: "
            "application/json (gzip the body and say Content-Encoding: gzip)",
        )


def declared_length(content_length: str | None) -> int | None:
    """The body's declared length (None: not declared); 400 when not a number."""
    if content_length is None:
        return None
    if not re.fullmatch("[0-9]+", content_length.strip()):
        raise WireError(400, f"Content-Length {content_length!r} is not a number of bytes")
    return int(content_length)


def too_large(size: int) -> WireError:
    """The 413 for a body of ``size`` bytes as sent."""
    return WireError(
        413,
        f"the body is {size} bytes; the limit is {MAX_COMPRESSED_BYTES} bytes as sent: "
        "send fewer items per request ([sync] batch_max_bytes)",
    )


def idempotency_key(header: str | None) -> str | None:
    """The ``Idempotency-Key`` (64 hex, lower-cased), None when absent; 400 when malformed."""
    if header is None:
        return None
    key = header.strip().lower()
    if not re.fullmatch("[0-9a-f]{64}", key):
        raise WireError(
            400, "Idempotency-Key must be 64 hex digits: the sha256 of the uncompressed body"
        )
    return key


def decompress(raw: bytes, content_encoding: str | None) -> bytes:
    """The body as JSON bytes: gunzipped when sent with ``Content-Encoding: gzip``.

    Decompression stops past ``MAX_DECOMPRESSED_BYTES``, so a gzip bomb costs that much
    memory at most.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding != "gzip":
        raise WireError(415, f"Content-Encoding {content_encoding!r}: only gzip is accepted")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, MAX_DECOMPRESSED_BYTES + 1)
    except zlib.error as exc:
        raise WireError(400, f"the body is not valid gzip ({exc})") from exc
    if len(data) > MAX_DECOMPRESSED_BYTES:
        raise WireError(
            413,
            f"the body is over {MAX_DECOMPRESSED_BYTES} bytes once decompressed: "
            "send fewer items per request",
        )
    if not inflater.eof:
        raise WireError(400, "the gzip body is truncated: it ends before the gzip stream does")
    if inflater.unused_data:
        raise WireError(400, "the gzip body has bytes after its gzip stream: send one stream")
    return data


def _load(data: bytes) -> object:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        hint = " (it looks gzipped: add Content-Encoding: gzip)" if data[:2] == b"\x1f\x8b" else ""
        raise WireError(400, f"the body is not valid UTF-8 JSON: {exc}{hint}") from exc
    # JSON can carry NUL only escaped; PostgreSQL can store it in no text or JSON column.
    if b"\\u0000" in data and nul_in(document):
        raise WireError(422, "a string in the body holds NUL (\\u0000), which cannot be stored")
    return document


def _validate(kind: str, document: object, prefix: str = "") -> None:
    problem = (
        schema_problem(_VALIDATORS[kind], document, prefix)
        if kind in _VALIDATORS
        else item_problem(kind, document, prefix)
    )
    if problem is not None:
        raise WireError(422, problem)


def _site_matches(named: str, site: str, where: str) -> None:
    if named != site:
        raise WireError(
            403,
            f"{where} names site {named!r} but the token is site {site!r}: "
            "use the token add-site printed for this site",
        )


#: How far ahead of central's clock a site's times may be by default (``--max-clock-skew-s``).
MAX_SKEW_MS = 15 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """What central takes from a site beyond the protocol's form (``serve`` options)."""

    cells: CellLimits = field(default_factory=CellLimits)
    skew_ms: int = MAX_SKEW_MS


@dataclass(frozen=True, slots=True)
class Clock:
    """Central's clock when a body arrived, and how far ahead of it a site's times may be."""

    now_ms: int
    skew_ms: int = MAX_SKEW_MS

    def check(self, ms: int, where: str) -> int:
        """``ms``, or a 422 when it is further ahead of central's clock than the skew."""
        ahead = ms - self.now_ms
        if ahead > self.skew_ms:
            raise WireError(
                422,
                f"{where}: {ms} is {ahead // 1000} s ahead of central's clock (at most "
                f"{self.skew_ms // 1000} s are taken): set the site's clock right (NTP); "
                "the agent recomputes the hours it has",
            )
        return ms

    def clamp(self, ms: int) -> int:
        """``ms``, or central's now when it is ahead: for times that only order things."""
        return min(ms, self.now_ms)


def parse_sync(data: bytes, site: str, clock: Clock) -> SyncBody:
    """A ``POST /v1/sync`` body sent by ``site`` (the token's site).

    Insight times ahead of ``clock`` are refused; a notice's time is taken as at most
    central's now, so a site's fast clock never holds an erasure back.
    """
    document = _load(data)
    _validate("sync", document)
    body = cast("dict[str, Any]", document)
    items: list[Insight | Notice] = []
    for index, item in enumerate(body["items"]):
        _validate(item["kind"], item, f"items[{index}]")
        items.append(_sync_item(item, clock, f"items[{index}]"))
    _site_matches(body["site"], site, "the body")
    losses = body.get("losses")
    return SyncBody(
        body["site"],
        body["venue"],
        clock.clamp(int(body["sent_ms"])),
        tuple(items),
        None
        if losses is None
        else {c: {r: int(n) for r, n in by.items()} for c, by in losses.items()},
    )


# JSON Schema counts 5.0 as an integer: int() so the database always gets one.
def _sync_item(item: dict[str, Any], clock: Clock, where: str) -> Insight | Notice:
    if item["kind"] != INSIGHT:
        return Notice(
            item["kind"],
            item["id"],
            item["subject_hash"],
            item.get("purpose"),
            clock.clamp(int(item["timestamp_ms"])),
        )
    cell = item["cell"]
    suppressed = cell.get("suppressed", False)
    computed_ms = item.get("computed_ms")
    revision = item.get("revision")
    return Insight(
        item["id"],
        int(item["k"]),
        clock.check(int(cell["start_ms"]), f"{where}.cell.start_ms"),
        None if computed_ms is None else clock.check(int(computed_ms), f"{where}.computed_ms"),
        None if revision is None else int(revision),
        cell.get("reason", "suppressed by the site") if suppressed else None,
        None if suppressed else cell,
    )


def parse_batch(data: bytes, site: str, clock: Clock) -> Batch:
    """A ``POST /v1/batch`` body sent by ``site`` (the token's site); items timed ahead of
    ``clock`` are refused."""
    document = _load(data)
    if isinstance(document, dict) and isinstance(document.get("batch"), list):
        for index, item in enumerate(document["batch"]):
            if isinstance(item, dict) and "anonymousId" in item:
                raise WireError(
                    422,
                    f"batch[{index}].anonymousId: this collector takes identified data only "
                    "(userId of people with crm_sync consent); leave anonymousId out",
                )
    _validate("batch", document)
    items = []
    for index, item in enumerate(cast("dict[str, Any]", document)["batch"]):
        edge = item["context"]["edge"]
        _site_matches(edge["site"], site, f"batch[{index}].context.edge.site")
        items.append(
            Identified(
                item["messageId"],
                edge["subject_hash"],
                item["userId"],
                item["type"],
                item.get("event"),
                clock.check(
                    _timestamp_ms(item["timestamp"], f"batch[{index}].timestamp"),
                    f"batch[{index}].timestamp",
                ),
                orjson.dumps(item).decode(),
            )
        )
    return Batch(tuple(items))


def _timestamp_ms(text: str, where: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise WireError(422, f"{where}: {text!r} is not an ISO 8601 time") from exc
    if when.tzinfo is None:
        raise WireError(422, f"{where}: {text!r} has no timezone (add Z or +hh:mm)")
    ms = int(when.timestamp() * 1000)
    if not 0 <= ms <= MAX_MS:
        raise WireError(422, f"{where}: {text!r} is before 1970")
    return ms


def parse_checkin(data: bytes, site: str, clock: Clock) -> CheckIn:
    """A ``POST /v1/checkin`` body sent by ``site`` (the token's site); a ``sent_ms`` ahead
    of ``clock`` is refused, as a sync body's times are."""
    if len(data) > MAX_CHECKIN_BYTES:
        raise WireError(
            413, f"the check-in is {len(data)} bytes; at most {MAX_CHECKIN_BYTES} are taken"
        )
    document = _load(data)
    problem = checkin_problem(document)
    if problem is not None:
        raise WireError(422, problem)
    report = from_document(cast("dict[str, Any]", document))
    # Central makes the site's days in this zone: one it cannot read would hold them up.
    if not is_zone(report.timezone):
        raise WireError(
            422, f"timezone: {report.timezone!r} is not a time zone (e.g. Europe/Helsinki, UTC)"
        )
    _site_matches(report.site, site, "the body")
    clock.check(report.sent_ms, "sent_ms")
    return report
