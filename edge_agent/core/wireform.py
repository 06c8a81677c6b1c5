"""The form of every item a site sends to central, as both sides check it.

The agent checks each item before it leaves (`item_problem`) and the collector checks it on
receipt with the same schemas, so what the agent sends is never refused for its form, and an
item that is refused anyway (an older agent, a tighter central) is refused alone. The request
bodies around the items are the collector's (`edge_agent.collector.wire`); the protocol is
docs/sync-protocol.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import jsonschema_rs

from edge_agent.core.aggregate import HOUR_MS
from edge_agent.core.catalogue import MAX_NAME
from edge_agent.core.consent import PURPOSES
from edge_agent.core.events import nul_in
from edge_agent.core.names import MAX_SITE_NAME, SITE_NAME_PATTERN

PROTOCOL = 1
#: Year 9999: keeps every time in a signed 64-bit column on both engines.
MAX_MS = 253_402_300_799_999
ERASURE = "erasure"
CONSENT_WITHDRAWN = "consent_withdrawn"
INSIGHT = "insight"
#: A Segment identify/track item of ``POST /v1/batch``.
IDENTIFIED = "identified"
#: The largest per-site revision of an hour cell (a signed 64-bit column).
MAX_REVISION = 2**62

# PostgreSQL text cannot hold NUL: refused before it travels rather than failing in a database.
_NO_NUL = "^[^\\x00]*$"
_MS: dict[str, object] = {"type": "integer", "minimum": 0, "maximum": MAX_MS}
_TEXT: dict[str, object] = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": _NO_NUL}
#: A site or venue id as it travels.
ID: dict[str, object] = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _NO_NUL}
_HEX64: dict[str, object] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

_INSIGHT: dict[str, object] = {
    "type": "object",
    "required": ["kind", "id", "k", "cell"],
    "properties": {
        "kind": {"const": INSIGHT},
        "id": _TEXT,
        "k": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "computed_ms": _MS,
        "revision": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_REVISION,
            "description": "grows with every recomputation of any hour at the site: the "
            "higher revision of an hour replaces the lower, whatever the clocks said",
        },
        "cell": {
            "type": "object",
            "description": "edge_agent.core.aggregate.to_document(cell) of one hour, or a "
            "suppressed marker {start_ms, hours, suppressed: true, reason}",
            "required": ["start_ms", "hours"],
            "properties": {
                "start_ms": {**_MS, "multipleOf": HOUR_MS},
                "hours": {"const": 1},
                "suppressed": {"type": "boolean"},
                "reason": {"type": "string", "maxLength": 500},
            },
        },
    },
}
_ERASURE: dict[str, object] = {
    "type": "object",
    "required": ["kind", "id", "subject_hash", "timestamp_ms"],
    "properties": {
        "kind": {"const": ERASURE},
        "id": _TEXT,
        "subject_hash": _HEX64,
        "timestamp_ms": _MS,
    },
}
_WITHDRAWN: dict[str, object] = {
    "type": "object",
    "required": ["kind", "id", "subject_hash", "purpose", "timestamp_ms"],
    "properties": {
        "kind": {"const": CONSENT_WITHDRAWN},
        "id": _TEXT,
        "subject_hash": _HEX64,
        "purpose": {"enum": list(PURPOSES)},
        "timestamp_ms": _MS,
    },
}
#: The items of ``POST /v1/sync`` by kind.
SYNC_ITEMS: dict[str, dict[str, object]] = {
    INSIGHT: _INSIGHT,
    ERASURE: _ERASURE,
    CONSENT_WITHDRAWN: _WITHDRAWN,
}
#: One item of ``POST /v1/batch``.
SEGMENT_ITEM: dict[str, object] = {
    "type": "object",
    "required": ["type", "messageId", "timestamp", "userId", "context"],
    "properties": {
        "type": {"enum": ["identify", "track"]},
        "messageId": _TEXT,
        "timestamp": {"type": "string", "maxLength": 64, "description": "ISO 8601 with a zone"},
        "userId": _TEXT,
        "anonymousId": {"not": {}, "description": "refused: identified data only"},
        "event": _TEXT,
        "properties": {"type": "object"},
        "traits": {"type": "object"},
        "context": {
            "type": "object",
            "required": ["edge"],
            "properties": {
                "edge": {
                    "type": "object",
                    "required": ["site", "subject_hash"],
                    "properties": {"site": ID, "subject_hash": _HEX64},
                }
            },
        },
    },
    "if": {"properties": {"type": {"const": "track"}}},
    "then": {"required": ["event"]},
}
_VALIDATORS = {
    **{kind: jsonschema_rs.validator_for(schema) for kind, schema in SYNC_ITEMS.items()},
    IDENTIFIED: jsonschema_rs.validator_for(SEGMENT_ITEM),
}


def where(path: Sequence[str | int], prefix: str = "") -> str:
    """A JSON path as a message names it: ``items[3].cell.start_ms``."""
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "body"


def schema_problem(validator: jsonschema_rs.Validator, document: object, prefix: str) -> str | None:
    """The first way ``document`` breaks ``validator``'s schema, with its path, or None."""
    for error in validator.iter_errors(document):
        # The message quotes the offending value, which may be a whole array.
        message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
        return f"{where(error.instance_path, prefix)}: {message}"
    return None


def item_problem(kind: str, item: object, prefix: str = "item") -> str | None:
    """Why central refuses ``item`` (of ``kind``: a `SYNC_ITEMS` kind or `IDENTIFIED`) for
    its form, or None. The figures inside a cell are `edge_agent.core.cellcheck`'s."""
    if nul_in(item):
        return f"{prefix}: a string holds NUL (\\u0000), which cannot be stored"
    return schema_problem(_VALIDATORS[kind], item, prefix)


# --- check-ins -----------------------------------------------------------------------------

#: The most a check-in body may weigh, as JSON: a dozen figures, a few model names and the
#: product names central asked for.
MAX_CHECKIN_BYTES = 64 * 1024
#: How many serving models a check-in may name.
MAX_CHECKIN_MODELS = 32
#: How many product names central asks for in one answer, and a check-in may carry.
MAX_CHECKIN_PRODUCTS = 50
#: The broker connection states a check-in may report (``agent_state`` ``broker``).
BROKER_STATES = ("connected", "disconnected", "stalled", "unknown")
_COUNT: dict[str, object] = {"type": "integer", "minimum": 0, "maximum": MAX_MS}
_MS_OR_NULL: dict[str, object] = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_MS}
_SHORT: dict[str, object] = {"type": "string", "maxLength": 64, "pattern": _NO_NUL}
#: ``POST /v1/checkin``: what a site says of itself every ``[sync] check_in_s``. Every field
#: but ``products`` is required and no other is taken, so a misspelt or extra field is
#: refused by name.
_CHECKIN_PROPERTIES: dict[str, object] = {
    "protocol": {"const": PROTOCOL},
    "site": ID,
    "sent_ms": _MS,
    "version": {**_SHORT, "minLength": 1},
    "uptime_s": _COUNT,
    "name": {
        "type": "string",
        "maxLength": MAX_SITE_NAME,
        "pattern": SITE_NAME_PATTERN,
        "description": "[site] name, empty when not set; no control characters",
    },
    "timezone": {**_SHORT, "minLength": 1, "description": "[site] timezone (IANA)"},
    "currency": {"type": "string", "pattern": "^([A-Z]{3})?$"},
    "broker": {"enum": list(BROKER_STATES)},
    "broker_since_ms": _MS_OR_NULL,
    "outbox_items": _COUNT,
    "outbox_oldest_ms": _MS_OR_NULL,
    "dead_letters_last_hour": _COUNT,
    "duplicates_last_hour": _COUNT,
    "disk_free_bytes": _COUNT,
    "disk_free_share": {"type": "number", "minimum": 0, "maximum": 1},
    "models": {
        "type": "object",
        "description": "the serving version of each model, by name",
        "maxProperties": MAX_CHECKIN_MODELS,
        "propertyNames": {"maxLength": 64, "pattern": _NO_NUL},
        "additionalProperties": {**_SHORT, "minLength": 1},
    },
    "last_sync_ms": _MS_OR_NULL,
    "clock_offset_s": {
        "type": ["number", "null"],
        "minimum": -1e9,
        "maximum": 1e9,
        "description": "central's clock minus the site's, seconds, from the last answer",
    },
    "products": {
        "type": "object",
        "description": "the catalogue's name of each product central's last answer asked for "
        "(products_wanted), by id; empty where the catalogue has none",
        "maxProperties": MAX_CHECKIN_PRODUCTS,
        "propertyNames": ID,
        "additionalProperties": {"type": "string", "maxLength": MAX_NAME, "pattern": _NO_NUL},
    },
}
_CHECKIN_OPTIONAL = frozenset({"products"})
CHECKIN_SCHEMA: dict[str, object] = {
    "type": "object",
    "additionalProperties": False,
    "required": [name for name in _CHECKIN_PROPERTIES if name not in _CHECKIN_OPTIONAL],
    "properties": _CHECKIN_PROPERTIES,
}
_CHECKIN = jsonschema_rs.validator_for(CHECKIN_SCHEMA)
_CHECKIN_FIELDS = tuple(_CHECKIN_PROPERTIES)


def checkin_problem(document: object) -> str | None:
    """Why central refuses a check-in body for its form, or None. The agent asks before it
    sends, the collector on receipt."""
    if isinstance(document, dict):
        unknown = sorted(set(document) - set(_CHECKIN_FIELDS))
        if unknown:
            return (
                f"body: unknown field {', '.join(map(repr, unknown))}: a check-in holds only "
                f"{', '.join(_CHECKIN_FIELDS)}"
            )
    if nul_in(document):
        return "body: a string holds NUL (\\u0000), which cannot be stored"
    return schema_problem(_CHECKIN, document, "")
