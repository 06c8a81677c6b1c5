"""Payload -> events + rejections: every inbound check, as a pure function.

A payload is one Segment-shaped event or a JSON array of them. Each check that fails
yields a `Rejection` with a stable reason code instead of raising, so the caller can
store it as a dead letter and acknowledge the message: nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, NewType

import orjson

from edge_agent.core.plausibility import Plausibility, implausible_event, implausible_message
from edge_agent.core.topics import DeviceId, SiteId, parse_topic
from edge_agent.errors import TopicError

MessageId = NewType("MessageId", str)

#: Why one event was rejected: the reason code and a readable detail.
Problem = tuple["Reason", str]

#: A compiled JSON Schema: returns on success, raises ValueError with a readable path.
Validator = Callable[[object], object]

_MAX_DETAIL = 300
_NON_FINITE = re.compile(rb"(?:NaN|Infinity)")
_LONG_DIGITS = re.compile(rb"\d{19}")
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_INT64 = range(-(2**63), 2**63)
# A JSON string, or one a hostile payload leaves unterminated (to the end of the payload). The
# possessive quantifiers and the end-of-text alternative keep this linear in the payload:
# without them, an unterminated string of escaped quotes is scanned again from every quote
# (64 KiB took tens of seconds, stalling ingest for every device).
_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class Reason(StrEnum):
    """Why a payload or event was rejected; stored with every dead letter."""

    BAD_TOPIC = "bad_topic"
    WRONG_SITE = "wrong_site"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    INVALID_NUMBER = "invalid_number"
    TOO_DEEP = "too_deep"
    EMPTY_BATCH = "empty_batch"
    BATCH_TOO_LARGE = "batch_too_large"
    INVALID_SHAPE = "invalid_shape"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_PROPERTIES = "invalid_properties"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    DEVICE_MISMATCH = "device_mismatch"
    RESERVED_ID = "reserved_id"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    IMPLAUSIBLE = "implausible"
    NUL_IN_TEXT = "nul_in_text"
    INTERNAL_ERROR = "internal_error"


#: The largest payload taken by default (``[ingest] max_payload_bytes``).
MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds an inbound payload must respect (from the ``[ingest]`` settings)."""

    site: SiteId
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_batch_events: int = 500
    max_depth: int = 16
    max_future_skew_ms: int = 5 * 60 * 1000
    max_past_age_ms: int = 7 * 24 * 3600 * 1000
    plausibility: Plausibility = field(default_factory=Plausibility)


@dataclass(frozen=True, slots=True)
class Schemas:
    """The compiled event schemas of one version: the envelope and one per event name."""

    version: str
    envelope: Validator
    events: Mapping[str, Validator]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message as it arrived: topic, raw payload, and when the agent received it.

    A payload over the agent's limit is not carried whole from the receiver: ``payload`` is
    then its first bytes, and ``whole_size`` and ``whole_sha256`` describe what arrived.
    """

    topic: str
    payload: bytes
    received_ms: int
    whole_size: int | None = None
    whole_sha256: str | None = None

    @property
    def size(self) -> int:
        """The size of the payload that arrived."""
        return len(self.payload) if self.whole_size is None else self.whole_size


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event, ready to store. ``body`` is the event as JSON text."""

    message_id: MessageId
    type: Literal["track", "identify"]
    name: str | None
    timestamp_ms: int
    device_id: DeviceId
    anonymous_id: str | None
    user_id: str | None
    body: str
    #: The pseudonym of the ticket's or badge's holder it names (`identity.holder`), set at
    #: ingest; None when it names none.
    holder: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected payload (or one element of an array): reason code, readable detail, raw bytes."""

    reason: Reason
    detail: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one inbound message yields: the events to store and the rejections to dead-letter."""

    events: tuple[Event, ...]
    rejections: tuple[Rejection, ...]


def nul_in(document: object) -> bool:
    """Whether any string of a decoded JSON value, key or value, holds NUL: no database
    central uses can store one (`edge_agent.core.wireform` refuses it as well)."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def nesting_depth(payload: bytes) -> int:
    """Deepest ``{``/``[`` nesting of a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', payload)):
        if match.group() in (b"{", b"["):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _why_not_json(payload: bytes, exc: orjson.JSONDecodeError) -> Problem:
    """Classify a payload orjson refused (only on this slow path is the text looked at twice)."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Reason.NOT_UTF8, f"payload is not UTF-8: {bad.reason} at byte {bad.start}"
    if "surrogate" in str(exc):
        return Reason.NOT_UTF8, f"payload is not UTF-8: {exc}"
    if "infinity" in str(exc) or _NON_FINITE.search(_STRINGS.sub(b'""', payload)):
        return Reason.INVALID_NUMBER, f"NaN, Infinity or an out-of-range number: {exc}"
    return Reason.NOT_JSON, f"payload is not JSON: {exc}"


def _out_of_range_integer(payload: bytes) -> str | None:
    """The first integer literal (outside strings) that does not fit in 64 bits, if any."""
    for match in _NUMBER.finditer(_STRINGS.sub(b'""', payload)):
        token = match.group()
        if token.lstrip(b"-").isdigit() and int(token) not in _INT64:
            return token.decode()
    return None


def _reject(reason: Reason, detail: str, raw: bytes) -> Parsed:
    return Parsed((), (Rejection(reason, detail[:_MAX_DETAIL], raw),))


def parse_payload(message: Inbound, limits: Limits, schemas: Schemas) -> Parsed:
    """Check one inbound MQTT message and split it into valid events and rejections.

    Never raises on bad input: every failure is a `Rejection`. An array is checked as a
    whole (size) and then element by element, so one bad event does not cost its neighbours.
    """
    payload = message.payload
    try:
        where = parse_topic(message.topic)
    except TopicError as exc:
        return _reject(Reason.BAD_TOPIC, str(exc), payload)
    if where.site != limits.site:
        return _reject(
            Reason.WRONG_SITE,
            f"published under site {where.site[:64]!r}, this agent is site {limits.site!r}",
            payload,
        )
    if message.size > limits.max_payload_bytes:
        return _reject(
            Reason.PAYLOAD_TOO_LARGE,
            f"payload is {message.size} bytes, the limit is {limits.max_payload_bytes}",
            payload,
        )
    # Counting brackets is C-speed; the exact, string-aware walk runs only when it could matter.
    if payload.count(b"{") + payload.count(b"[") > limits.max_depth:
        depth = nesting_depth(payload)
        if depth > limits.max_depth:
            return _reject(
                Reason.TOO_DEEP,
                f"JSON nests {depth} levels, the limit is {limits.max_depth}",
                payload,
            )
    try:
        # orjson rejects invalid UTF-8 (lone surrogates too), NaN and Infinity, and numbers
        # that overflow a double, which is what the store and later JSON readers can take.
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _reject(*_why_not_json(payload, exc), payload)
    # orjson turns an integer beyond 64 bits into a float, silently changing the value.
    if _LONG_DIGITS.search(payload) and (huge := _out_of_range_integer(payload)):
        return _reject(
            Reason.INVALID_NUMBER, f"integer {huge[:24]!r}... does not fit in 64 bits", payload
        )

    # NUL can only come escaped; no database central uses can store it, and a zone named with
    # one would make every sync of its hour refused.
    nul = b"\\u0000" in payload
    if isinstance(document, list):
        if not document:
            return _reject(Reason.EMPTY_BATCH, "payload is an empty array", payload)
        if len(document) > limits.max_batch_events:
            return _reject(
                Reason.BATCH_TOO_LARGE,
                f"array holds {len(document)} events, the limit is {limits.max_batch_events}",
                payload,
            )
        events: list[Event] = []
        figures: list[tuple[str | None, object]] = []
        rejections: list[Rejection] = []
        for item in document:
            outcome = (
                _NUL_PROBLEM
                if nul and nul_in(item)
                else check_event(item, where.device, message.received_ms, limits, schemas)
            )
            if isinstance(outcome, Event):
                events.append(outcome)
                figures.append((outcome.name, item.get("properties")))
            else:
                rejections.append(Rejection(outcome[0], outcome[1], orjson.dumps(item)))
        why = implausible_message(figures, limits.plausibility)
        if why is not None:
            # Each event may be believable and the message not: none of it is taken.
            return _reject(Reason.IMPLAUSIBLE, why, payload)
        return Parsed(tuple(events), tuple(rejections))
    if nul and nul_in(document):
        return _reject(*_NUL_PROBLEM, payload)
    outcome = check_event(document, where.device, message.received_ms, limits, schemas)
    if isinstance(outcome, Event):
        return Parsed((outcome,), ())
    return _reject(*outcome, payload)


_NUL_PROBLEM: Problem = (
    Reason.NUL_IN_TEXT,
    "a string holds NUL (\\u0000), which no insight or sync can carry: fix the device",
)


def _check_clock(stamp: str, now_ms: int, limits: Limits) -> int | Problem:
    """The timestamp in epoch milliseconds, or why it cannot be accepted."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return (Reason.INVALID_TIMESTAMP, f"timestamp {stamp[:40]!r} is not ISO 8601")
    if moment.tzinfo is None:
        return (
            Reason.INVALID_TIMESTAMP,
            f"timestamp {stamp[:40]!r} has no timezone (use e.g. 2026-11-26T10:00:00Z)",
        )
    timestamp_ms = int(moment.timestamp() * 1000)
    if timestamp_ms > now_ms + limits.max_future_skew_ms:
        return (
            Reason.TIMESTAMP_IN_FUTURE,
            f"timestamp {stamp[:40]!r} is more than {limits.max_future_skew_ms // 1000} s ahead "
            "of the agent's clock: check the device clock",
        )
    if timestamp_ms < now_ms - limits.max_past_age_ms:
        return (
            Reason.TIMESTAMP_TOO_OLD,
            f"timestamp {stamp[:40]!r} is more than {limits.max_past_age_ms // 1000} s old",
        )
    return timestamp_ms


#: The largest integral float that is stored as an integer: beyond 2**53 a double no longer
#: holds every integer, so such a value stays the float it was sent as.
_EXACT = 2**53


def normalised(value: object) -> object:
    """A decoded JSON value in the form the agent stores: every integral float as an integer
    (a kiosk's ``"nps": 9.0`` is the answer 9, which a schema's ``integer`` accepts and the
    insights count as one). Decoding already kept one copy of a repeated key, the last one,
    which is the copy the schemas judged: storing this form, nothing downstream reads another.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    if isinstance(value, dict):
        return {key: normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalised(item) for item in value]
    return value


def check_event(
    document: object,
    device: DeviceId,
    now_ms: int,
    limits: Limits,
    schemas: Schemas,
) -> Event | Problem:
    """Check one decoded event against the schemas, the clock and its topic.

    Args:
        document: the decoded JSON value that should be one event; a valid one is stored in
            its `normalised` form.
        device: the device id from the topic it was published on.
        now_ms: the time it was received, in epoch milliseconds (skew is judged against it,
            so a dead letter replayed later is judged as when it arrived).
        limits: the configured bounds.
        schemas: the compiled schemas to validate with.

    Returns:
        The event, or the reason and detail of its rejection.
    """
    if not isinstance(document, dict):
        return (Reason.INVALID_SHAPE, "an event must be a JSON object")
    kind = document.get("type")
    if kind not in ("track", "identify"):
        return (Reason.UNKNOWN_TYPE, f"type must be 'track' or 'identify', got {str(kind)[:40]!r}")
    # The clock comes before the schema so that a device with a bad clock is told about its
    # clock rather than about a format. The schema then still checks RFC 3339.
    stamp = document.get("timestamp")
    timestamp_ms = _check_clock(stamp, now_ms, limits) if isinstance(stamp, str) else 0
    if isinstance(timestamp_ms, tuple):
        return timestamp_ms
    try:
        schemas.envelope(document)
    except ValueError as exc:
        return (Reason.INVALID_SHAPE, str(exc)[:_MAX_DETAIL])
    name: str | None = document.get("event")
    if kind == "track":
        validator = schemas.events.get(name or "")
        if validator is None:
            return (
                Reason.UNKNOWN_EVENT,
                f"event {str(name)[:64]!r} is not in schema {schemas.version}",
            )
        try:
            validator(document)
        except ValueError as exc:
            return (Reason.INVALID_PROPERTIES, str(exc)[:_MAX_DETAIL])
        why = implausible_event(name, document.get("properties"), limits.plausibility)
        if why is not None:
            return (Reason.IMPLAUSIBLE, why[:_MAX_DETAIL])
    context = document.get("context")
    claimed = context.get("device", {}).get("id") if isinstance(context, dict) else None
    if claimed is not None and claimed != device:
        return (
            Reason.DEVICE_MISMATCH,
            f"context.device.id {claimed[:64]!r} differs from the topic's device {device!r}",
        )
    return Event(
        message_id=MessageId(document["messageId"]),
        type=kind,
        name=name,
        timestamp_ms=timestamp_ms,
        device_id=device,
        anonymous_id=document.get("anonymousId"),
        user_id=document.get("userId"),
        body=orjson.dumps(normalised(document)).decode("utf-8"),
    )
