"""The parser never raises and never loses a payload, whatever arrives."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import schemas
from edge_agent.core.events import Inbound, Limits, Parsed, Reason, parse_payload
from edge_agent.core.topics import SiteId
from tests.helpers import SITE, topic
from tests.strategies import broken_events, json_values, valid_events

SCHEMAS = schemas.load()
LIMITS = Limits(site=SiteId(SITE))
NOW_MS = 1_800_000_000_000
STAMP = "2027-01-15T08:00:00.000Z"


def parse(payload: bytes) -> Parsed:
    return parse_payload(Inbound(topic("till-1"), payload, NOW_MS), LIMITS, SCHEMAS)


def accounted_for(payload: bytes, parsed: Parsed) -> None:
    """Every payload yields something: one outcome per array element, or one rejection."""
    outcomes = len(parsed.events) + len(parsed.rejections)
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, list) and parsed.events:
        assert outcomes == len(document)
    else:
        assert outcomes >= 1
    for rejection in parsed.rejections:
        assert isinstance(rejection.reason, Reason)
        assert rejection.detail
        # A whole-payload rejection keeps the payload as it came; an element keeps its JSON.
        assert rejection.raw == payload or json.loads(rejection.raw) in document


@settings(max_examples=1500)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(payload: bytes) -> None:
    accounted_for(payload, parse(payload))


@settings(max_examples=1500)
@given(json_values)
def test_arbitrary_json(value: object) -> None:
    payload = json.dumps(value).encode()
    accounted_for(payload, parse(payload))


@settings(max_examples=1500)
@given(broken_events(STAMP))
def test_events_with_a_broken_field(event: dict[str, object]) -> None:
    payload = json.dumps(event).encode()
    parsed = parse(payload)
    accounted_for(payload, parsed)
    for stored in parsed.events:
        assert json.loads(stored.body) == event


@settings(max_examples=500)
@given(st.lists(valid_events(STAMP), min_size=1, max_size=20))
def test_valid_events_are_all_accepted_alone_or_in_arrays(events: list[dict[str, object]]) -> None:
    parsed = parse(json.dumps(events).encode())
    assert parsed.rejections == ()
    assert [e.message_id for e in parsed.events] == [e["messageId"] for e in events]
    assert [json.loads(e.body) for e in parsed.events] == events
