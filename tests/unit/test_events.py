"""The inbound checks, as pure functions: every malformed, oversized and hostile case."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from edge_agent import schemas
from edge_agent.core.events import Inbound, Limits, Parsed, Reason, nesting_depth, parse_payload
from edge_agent.core.topics import SiteId
from tests.helpers import SITE, encode, one_of_each, topic, track

SCHEMAS = schemas.load()
LIMITS = Limits(site=SiteId(SITE))
NOW_MS = 1_800_000_000_000


def at_now(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "timestamp": "2027-01-15T08:00:00.000Z"}


def parse(
    payload: bytes, device: str = "till-1", limits: Limits = LIMITS, site: str = SITE
) -> Parsed:
    return parse_payload(Inbound(topic(device, site), payload, NOW_MS), limits, SCHEMAS)


def reasons(parsed: Parsed) -> list[Reason]:
    return [r.reason for r in parsed.rejections]


def door(**extra: Any) -> dict[str, Any]:
    return {**at_now(track("Door Counted", {"direction": "in", "count": 1}, "till-1")), **extra}


def test_every_event_kind_is_accepted() -> None:
    for event in one_of_each():
        parsed = parse(encode(at_now(event)))
        assert reasons(parsed) == [], event
        (stored,) = parsed.events
        assert stored.message_id == event["messageId"]
        assert stored.name == event.get("event")
        assert stored.timestamp_ms == NOW_MS
        assert stored.device_id == "till-1"
        assert json.loads(stored.body) == at_now(event)


def test_schema_versions_and_names_are_published() -> None:
    assert schemas.versions() == ["v1"]
    assert "Order Completed" in schemas.event_names()
    assert len(schemas.event_names()) == 12


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b"", Reason.NOT_JSON, id="empty"),
        pytest.param(b"{", Reason.NOT_JSON, id="truncated"),
        pytest.param(b"\xc3\x28", Reason.NOT_UTF8, id="bad-utf8"),
        pytest.param(b'{"a": "\xed\xa0\x80"}', Reason.NOT_UTF8, id="utf8-surrogate"),
        pytest.param(b"\xef\xbb\xbf{}", Reason.NOT_JSON, id="bom"),
        pytest.param(b'{"a": NaN}', Reason.INVALID_NUMBER, id="nan"),
        pytest.param(b'{"a": -Infinity}', Reason.INVALID_NUMBER, id="minus-infinity"),
        pytest.param(b'{"a": 1e999}', Reason.INVALID_NUMBER, id="float-overflow"),
        pytest.param(b'{"a": "NaN"} x', Reason.NOT_JSON, id="nan-in-string-then-junk"),
        pytest.param(b"[" * 17 + b"]" * 17, Reason.TOO_DEEP, id="deep-17"),
        pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, Reason.TOO_DEEP, id="deep-objects"),
        pytest.param(b"[]", Reason.EMPTY_BATCH, id="empty-array"),
        pytest.param(b"null", Reason.INVALID_SHAPE, id="null"),
        pytest.param(b'"event"', Reason.INVALID_SHAPE, id="string"),
        pytest.param(b"[1]", Reason.INVALID_SHAPE, id="array-of-a-number"),
        pytest.param(b"{}", Reason.UNKNOWN_TYPE, id="empty-object"),
        pytest.param(encode({**door(), "type": "page"}), Reason.UNKNOWN_TYPE, id="page"),
        pytest.param(encode({**door(), "type": ["track"]}), Reason.UNKNOWN_TYPE, id="type-list"),
        pytest.param(
            encode({k: v for k, v in door().items() if k != "messageId"}),
            Reason.INVALID_SHAPE,
            id="no-message-id",
        ),
        pytest.param(encode(door(messageId="x" * 129)), Reason.INVALID_SHAPE, id="long-message-id"),
        pytest.param(
            encode({k: v for k, v in door().items() if k != "timestamp"}),
            Reason.INVALID_SHAPE,
            id="no-timestamp",
        ),
        pytest.param(
            encode(door(timestamp="2027-01-15")), Reason.INVALID_TIMESTAMP, id="date-only"
        ),
        pytest.param(
            encode(door(timestamp="2027-01-15T08:00:00")),
            Reason.INVALID_TIMESTAMP,
            id="no-timezone",
        ),
        pytest.param(
            encode(door(timestamp="2027-02-30T08:00:00Z")),
            Reason.INVALID_TIMESTAMP,
            id="no-such-day",
        ),
        pytest.param(
            encode(door(timestamp="1970-01-01T00:00:00Z")), Reason.TIMESTAMP_TOO_OLD, id="1970"
        ),
        pytest.param(
            encode(door(timestamp="2999-01-01T00:00:00Z")), Reason.TIMESTAMP_IN_FUTURE, id="2999"
        ),
        pytest.param(
            encode(door(timestamp="2027-01-15T08:05:01Z")),
            Reason.TIMESTAMP_IN_FUTURE,
            id="just-too-far-ahead",
        ),
        pytest.param(
            encode(door(event="Coupon Redeemed")), Reason.UNKNOWN_EVENT, id="unknown-event"
        ),
        pytest.param(encode(door(event="door counted")), Reason.UNKNOWN_EVENT, id="wrong-case"),
        pytest.param(
            encode({k: v for k, v in door().items() if k != "event"}),
            Reason.INVALID_SHAPE,
            id="track-without-event",
        ),
        pytest.param(
            encode(door(properties={"direction": "in", "count": "2"})),
            Reason.INVALID_PROPERTIES,
            id="count-as-string",
        ),
        pytest.param(
            encode(door(properties={"direction": "in", "count": 10**30})),
            Reason.INVALID_NUMBER,
            id="huge-count",
        ),
        pytest.param(
            encode(door(properties={"direction": "in", "count": 20000})),
            Reason.INVALID_PROPERTIES,
            id="count-over-maximum",
        ),
        pytest.param(b'{"a": -9223372036854775809}', Reason.INVALID_NUMBER, id="below-int64"),
        pytest.param(
            encode(door(properties={"direction": "in", "count": 1.5})),
            Reason.INVALID_PROPERTIES,
            id="fractional-count",
        ),
        pytest.param(
            encode(door(properties={"direction": "in"})),
            Reason.INVALID_PROPERTIES,
            id="missing-count",
        ),
        pytest.param(encode(door(properties=[])), Reason.INVALID_SHAPE, id="properties-array"),
        pytest.param(
            encode(door(context={"device": {"id": 5}})), Reason.INVALID_SHAPE, id="device-id-number"
        ),
        pytest.param(
            encode(door(context={"device": {"id": "till-2"}})),
            Reason.DEVICE_MISMATCH,
            id="device-mismatch",
        ),
        pytest.param(
            encode(
                {
                    **door(),
                    "event": "Consent Updated",
                    "properties": {"purposes": {"analytics": "yes"}, "source": "app"},
                    "userId": "u",
                }
            ),
            Reason.INVALID_PROPERTIES,
            id="consent-not-boolean",
        ),
        pytest.param(
            encode(
                {
                    **door(),
                    "event": "Consent Updated",
                    "properties": {"purposes": {"ads": True}, "source": "app"},
                    "userId": "u",
                }
            ),
            Reason.INVALID_PROPERTIES,
            id="consent-unknown-purpose",
        ),
        pytest.param(
            encode(
                {
                    **door(),
                    "event": "Consent Updated",
                    "properties": {"purposes": {"analytics": True}, "source": "app"},
                }
            ),
            Reason.INVALID_PROPERTIES,
            id="consent-without-user",
        ),
        pytest.param(
            encode({**door(), "event": "Erasure Requested", "properties": {}}),
            Reason.INVALID_PROPERTIES,
            id="erasure-without-user",
        ),
        pytest.param(
            encode(
                {
                    **door(),
                    "event": "Zone Entered",
                    "properties": {"zone": "dairy"},
                    "anonymousId": None,
                }
            ),
            Reason.INVALID_SHAPE,
            id="zone-null-track-id",
        ),
        pytest.param(
            encode(
                {
                    "type": "identify",
                    "messageId": "m",
                    "timestamp": "2027-01-15T08:00:00Z",
                    "anonymousId": "a",
                }
            ),
            Reason.INVALID_SHAPE,
            id="identify-without-user",
        ),
        pytest.param(
            encode(
                {
                    **door(),
                    "properties": {"direction": "in", "count": 1, "x": ""},
                    "event": "Order Completed",
                }
            ),
            Reason.INVALID_PROPERTIES,
            id="order-missing-everything",
        ),
        pytest.param(
            encode({**door(), "properties": {"direction": "in", "count": 1, "x": "\u0000"}}),
            Reason.NUL_IN_TEXT,
            id="nul-in-a-property",
        ),
        pytest.param(
            encode({**door(), "properties": {"direction": "in", "count": 1, "a\u0000": 1}}),
            Reason.NUL_IN_TEXT,
            id="nul-in-a-key",
        ),
    ],
)
def test_bad_payloads_are_rejected_with_their_reason(payload: bytes, reason: Reason) -> None:
    parsed = parse(payload)
    assert parsed.events == ()
    assert reasons(parsed) == [reason]
    assert parsed.rejections[0].detail
    assert len(parsed.rejections[0].detail) <= 300


def test_order_with_wrong_products_is_rejected() -> None:
    (order,) = [e for e in one_of_each() if e.get("event") == "Order Completed"]
    order = at_now(order)
    for bad in ({"quantity": "2"}, {"price": -1}, {"product_id": ""}, {"quantity": 0}):
        broken = json.loads(json.dumps(order))
        broken["properties"]["products"][0].update(bad)
        assert reasons(parse(encode(broken))) == [Reason.INVALID_PROPERTIES], bad
    broken = json.loads(json.dumps(order))
    broken["properties"]["currency"] = "dollars"
    assert reasons(parse(encode(broken))) == [Reason.INVALID_PROPERTIES]


def test_topic_checks_come_first() -> None:
    assert reasons(parse(encode(door()), site="other")) == [Reason.WRONG_SITE]
    for bad in ("sites/x/events", "sites/test-site/devices//events", "a/b/c/d/e", ""):
        parsed = parse_payload(Inbound(bad, encode(door()), NOW_MS), LIMITS, SCHEMAS)
        assert reasons(parsed) == [Reason.BAD_TOPIC], bad


def test_size_limits_are_configurable() -> None:
    small = Limits(site=SiteId(SITE), max_payload_bytes=300, max_batch_events=2, max_depth=4)
    assert reasons(parse(b" " * 301, limits=small)) == [Reason.PAYLOAD_TOO_LARGE]
    assert reasons(
        parse(
            encode([door(), door(), door()]), limits=Limits(site=SiteId(SITE), max_batch_events=2)
        )
    ) == [Reason.BATCH_TOO_LARGE]
    assert reasons(parse(b"[[[[[]]]]]", limits=small)) == [Reason.TOO_DEEP]


def test_a_payload_just_under_the_limits_is_accepted() -> None:
    event = door(properties={"direction": "in", "count": 1, "door": "x" * 64})
    payload = encode(event)
    limits = Limits(site=SiteId(SITE), max_payload_bytes=len(payload))
    assert reasons(parse(payload, limits=limits)) == []


def test_array_elements_are_judged_one_by_one() -> None:
    good = [door(), door()]
    bad = door(properties={"direction": "up", "count": 1})
    nul = door(properties={"direction": "in", "count": 1, "zone": "a\u0000b"})
    parsed = parse(encode([good[0], bad, 7, nul, good[1]]))
    assert [e.message_id for e in parsed.events] == [good[0]["messageId"], good[1]["messageId"]]
    assert reasons(parsed) == [Reason.INVALID_PROPERTIES, Reason.INVALID_SHAPE, Reason.NUL_IN_TEXT]
    assert json.loads(parsed.rejections[0].raw) == bad


def test_the_whole_payload_is_kept_for_a_single_rejected_event() -> None:
    payload = b'{"type": "track",   "event": "Nope"}'
    (rejection,) = parse(payload).rejections
    assert rejection.raw == payload


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[[[[["}', 1),
        (b'{"a": "\\"[[[["}', 1),
        (b"1", 0),
    ],
)
def test_nesting_depth_ignores_brackets_in_strings(text: bytes, depth: int) -> None:
    assert nesting_depth(text) == depth


def test_long_digit_runs_that_fit_or_sit_in_strings_are_fine() -> None:
    event = door(
        properties={"direction": "in", "count": 1, "door": "1" * 40}, traits={"n": 2**63 - 1}
    )
    assert reasons(parse(encode(event))) == []


def test_deep_but_valid_json_inside_strings_is_fine() -> None:
    event = door(properties={"direction": "in", "count": 1, "door": "[" * 50})
    assert reasons(parse(encode(event))) == []


def test_details_never_quote_a_user_id_or_traits() -> None:
    for field, value in (("userId", 987654321012), ("traits", "mei@example.org")):
        event = {**door(), "type": "identify", field: value}
        event.pop("event")
        (rejection,) = parse(encode(event)).rejections
        assert str(value) not in rejection.detail
        assert rejection.detail.startswith(field)


#: 64 KiB payloads built to make a backtracking check on bytes take quadratic time: an
#: unterminated string of escaped quotes, inside nesting, after brackets, after long digits.
_QUOTES = b'\\"' * 32_000
HOSTILE = [
    pytest.param(b"[" * 20 + b'"' + _QUOTES, Reason.TOO_DEEP, id="deep-then-unterminated"),
    pytest.param(b'{"a":[' * 8 + b'"' + _QUOTES, Reason.NOT_JSON, id="nested-unterminated"),
    pytest.param(b'[["' + b'\\"[' * 21_000, Reason.NOT_JSON, id="brackets-in-unterminated"),
    pytest.param(
        b"[" + b"9" * 40 + b', "' + _QUOTES, Reason.NOT_JSON, id="digits-then-unterminated"
    ),
    pytest.param(b'{"a": "x\\', Reason.NOT_JSON, id="ends-in-a-backslash"),
]


@pytest.mark.parametrize(("payload", "reason"), HOSTILE)
def test_hostile_bytes_get_their_reason(payload: bytes, reason: Reason) -> None:
    assert reasons(parse(payload)) == [reason]


def test_checks_on_payload_bytes_are_linear_in_the_payload() -> None:
    """All the hostile payloads together within a deadline a quadratic check misses by far
    (it took tens of seconds for each one): ingest must never stall on one device's bytes."""
    done = threading.Event()

    def judge() -> None:
        for case in HOSTILE:
            parse(case.values[0])  # type: ignore[arg-type]
        done.set()

    threading.Thread(target=judge, daemon=True).start()
    assert done.wait(10), "judging five hostile payloads took over 10 s"


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param("member\x00-7", id="nul"),
        pytest.param("member\n7", id="newline"),
        pytest.param("member\r7", id="carriage-return"),
        pytest.param("member\x1b[2J7", id="escape"),
        pytest.param("member\u00857", id="c1-next-line"),
        pytest.param("member\u20287", id="line-separator"),
        pytest.param("m" * 129, id="too-long"),
    ],
)
@pytest.mark.parametrize("field", ["userId", "anonymousId"])
def test_ids_that_could_not_be_named_again_are_refused(field: str, user_id: str) -> None:
    event = at_now(track("Product Viewed", {"product_id": "p1"}, "till-1", **{field: user_id}))
    refused = Reason.NUL_IN_TEXT if "\x00" in user_id else Reason.INVALID_SHAPE
    assert reasons(parse(encode(event))) == [refused]


def test_an_integral_float_where_an_integer_belongs_is_stored_as_the_integer() -> None:
    event = at_now(track("Feedback Submitted", {"nps": 9.0, "ces": 2.0, "price": 2.5}))
    (stored,) = parse(encode(event)).events
    assert json.loads(stored.body)["properties"] == {"nps": 9, "ces": 2, "price": 2.5}
    assert '"nps":9,' in stored.body


def test_a_repeated_key_is_stored_once_as_the_copy_the_schemas_judged() -> None:
    # A reader of the stored text (SQLite's json_extract takes the first copy) must not see
    # a value that was never validated.
    valid = encode(at_now(track("Product Added", {"product_id": "p1", "quantity": 2})))
    payload = valid.replace(b'"product_id"', b'"quantity": "lots", "product_id"', 1)
    (stored,) = parse(payload).events
    assert stored.body.count('"quantity"') == 1
    assert json.loads(stored.body)["properties"]["quantity"] == 2
