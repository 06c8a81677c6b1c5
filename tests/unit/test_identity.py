"""Pseudonyms, and what an identified event keeps once stored."""

from __future__ import annotations

import json

import pytest

from edge_agent.core.events import Event, MessageId
from edge_agent.core.identity import (
    REDACTED,
    SiteKey,
    pseudonym,
    pseudonymise,
    redact,
    subject_hash,
)
from edge_agent.core.topics import DeviceId

KEY = SiteKey(bytes(range(32)))


def identify(user_id: str | None) -> Event:
    body = {"type": "identify", "messageId": "m", "userId": user_id, "traits": {"email": "a@b.c"}}
    return Event(
        MessageId("m"), "identify", None, 1, DeviceId("d"), "visit", user_id, json.dumps(body)
    )


def test_pseudonyms_are_stable_per_key_and_hide_the_id() -> None:
    person = pseudonym(KEY, "member-1")
    assert person == pseudonym(KEY, "member-1")
    assert person != pseudonym(KEY, "member-2")
    assert person != pseudonym(SiteKey(bytes(32)), "member-1")
    assert len(person) == 64
    assert "member" not in person
    assert subject_hash(person) != person


def test_the_key_never_shows() -> None:
    assert repr(KEY) == "SiteKey(**********)"
    with pytest.raises(ValueError, match="32 bytes"):
        SiteKey(b"short")


def test_stored_body_has_the_pseudonym_and_no_traits() -> None:
    stored, identity = pseudonymise(identify("member-1"), KEY)
    assert identity is not None
    assert identity.user_id == "member-1"
    assert identity.traits == {"email": "a@b.c"}
    body = json.loads(stored.body)
    assert body["userId"] == pseudonym(KEY, "member-1")
    assert "traits" not in body
    assert "member-1" not in stored.body
    assert "member-1" not in repr(identity)


def test_anonymous_events_keep_no_personal_data_and_name_no_one() -> None:
    stored, identity = pseudonymise(identify(None), KEY)
    assert identity is None
    assert json.loads(stored.body) == {"type": "identify", "messageId": "m", "userId": None}


PERSONAL = "mei@example.org"


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"traits": {"email": PERSONAL}}, id="traits"),
        pytest.param({"context": {"traits": {"phone": PERSONAL}}}, id="context-traits"),
        pytest.param({"properties": {"email": PERSONAL, "sku": "s1"}}, id="properties-email"),
        pytest.param({"properties": {"Phone-Number": PERSONAL}}, id="properties-phone-any-case"),
        pytest.param({"properties": {"buyer": {"address": PERSONAL}}}, id="nested-address"),
        pytest.param({"properties": {"list": [{"first_name": PERSONAL}]}}, id="in-a-list"),
        pytest.param({"context": {"ip": PERSONAL, "device": {"id": "d"}}}, id="context-ip"),
    ],
)
@pytest.mark.parametrize("user_id", [None, "member-1"])
def test_personal_data_leaves_the_stored_body_wherever_it_was_put(
    document: dict[str, object], user_id: str | None
) -> None:
    body = {"type": "track", "messageId": "m", "userId": user_id, **document}
    event = Event(
        MessageId("m"), "track", "Door Counted", 1, DeviceId("d"), "v", user_id, json.dumps(body)
    )
    stored, identity = pseudonymise(event, KEY)
    assert PERSONAL not in stored.body
    # Only traits travel on (to the vault, under crm_sync); other personal keys are dropped.
    held = {} if identity is None else identity.traits
    assert (PERSONAL in held.values()) == (identity is not None and "traits" in str(document))


def test_redacted_dead_letters_replay_to_the_same_pseudonym_without_the_raw_id() -> None:
    raw = json.dumps(
        {"type": "identify", "userId": "member-1", "traits": {"email": "a@b.c"}, "x": 1}
    ).encode()
    kept = redact(raw, KEY)
    assert b"member-1" not in kept
    assert b"a@b.c" not in kept
    assert json.loads(kept)["userId"] == REDACTED + pseudonym(KEY, "member-1")
    assert redact(kept, KEY, replaying=True) == kept
    replayed = identify(json.loads(kept)["userId"])
    stored, identity = pseudonymise(replayed, KEY)
    assert json.loads(stored.body)["userId"] == pseudonym(KEY, "member-1")
    assert identity is not None
    assert identity.pseudonym == pseudonym(KEY, "member-1")
    assert identity.user_id is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1, 2]", id="numbers"),
        pytest.param(b'{"anonymousId": "v"}', id="anonymous"),
    ],
)
def test_what_names_no_one_is_kept_as_it_came(raw: bytes) -> None:
    assert redact(raw, KEY) == raw


def test_arrays_are_redacted_element_by_element() -> None:
    raw = json.dumps([{"userId": "member-1"}, {"anonymousId": "v"}]).encode()
    kept = json.loads(redact(raw, KEY))
    assert kept == [{"userId": REDACTED + pseudonym(KEY, "member-1")}, {"anonymousId": "v"}]


@pytest.mark.parametrize(
    ("document", "secret"),
    [
        pytest.param(
            {"type": "identify", "traits": {"email": "a@b.c"}}, b"a@b.c", id="traits-without-user"
        ),
        pytest.param({"type": "track", "userId": 987654321012}, b"987654321012", id="numeric-user"),
        pytest.param({"type": "track", "userId": ["member-1"]}, b"member-1", id="list-user"),
    ],
)
def test_personal_data_of_the_wrong_type_is_redacted_too(
    document: dict[str, object], secret: bytes
) -> None:
    assert secret not in redact(json.dumps(document).encode(), KEY)


def test_a_device_cannot_pass_an_id_off_as_one_of_the_agents_pseudonyms() -> None:
    marked = REDACTED + pseudonym(KEY, "member-1")
    payload = json.dumps({"type": "identify", "userId": marked}).encode()
    # From a device, the marked form is hashed like any other id: it is the device's text.
    kept = json.loads(redact(payload, KEY))
    assert kept["userId"] == REDACTED + pseudonym(KEY, marked)
    # Replaying the agent's own dead letter, the mark is trusted and not hashed again.
    assert json.loads(redact(payload, KEY, replaying=True))["userId"] == marked
