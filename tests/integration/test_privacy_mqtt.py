"""The consent rules end to end: events through a real Mosquitto into the agent's SQLite file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.core.identity import Pseudonym, pseudonym, subject_hash
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.ops import keyfile
from tests.conftest import AgentProcess
from tests.helpers import (
    Publisher,
    dead_letter_reasons,
    encode,
    iso_now,
    query,
    stored_ids,
    topic,
    track,
    wait_for,
)

pytestmark = pytest.mark.integration

MakeAgent = Callable[..., AgentProcess]
DEVICE = "loyalty-1"
ALL_PURPOSES = {"analytics": True, "personalization": True, "crm_sync": True}


def _member() -> str:
    return "member-" + uuid.uuid4().hex


def _person(agent: AgentProcess, user_id: str) -> str:
    """The pseudonym the running agent gives ``user_id`` (its site key exists once started)."""
    return pseudonym(keyfile.load_or_create(agent.folder / "data" / "site.key"), user_id)


def _consent(user_id: str, purposes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return track(
        "Consent Updated",
        {"purposes": purposes, "source": "loyalty-app"},
        DEVICE,
        userId=user_id,
        **extra,
    )


def _identify(user_id: str, visit: str, traits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "identify",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "anonymousId": visit,
        "userId": user_id,
        "traits": traits,
        "context": {"device": {"id": DEVICE}},
    }
    event.update(extra)
    return event


def _order(visit: str, **extra: Any) -> dict[str, Any]:
    product = {"product_id": "4710199010372", "sku": "4710199010372", "price": 15.0, "quantity": 2}
    return track(
        "Order Completed",
        {
            "order_id": "o-" + uuid.uuid4().hex[:8],
            "total": 30.0,
            "currency": "TWD",
            "products": [product],
        },
        DEVICE,
        anonymousId=visit,
        **extra,
    )


def _wait_stored(agent: AgentProcess, message_id: str) -> None:
    wait_for(lambda: message_id in stored_ids(agent.db), 30, f"{message_id} stored")


def _send(publisher: Publisher, agent: AgentProcess, *events: dict[str, Any]) -> None:
    """Publish events one by one, each stored before the next is sent (their order matters)."""
    for event in events:
        publisher.publish_all([(topic(DEVICE), encode(event))])
        _wait_stored(agent, str(event["messageId"]))


def _tables(db: Path) -> list[str]:
    return [row[0] for row in query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")]


def _rows_holding(db: Path, needle: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row, table by table, one of whose values contains ``needle`` (text or bytes)."""
    raw = needle.encode()
    found: dict[str, list[tuple[Any, ...]]] = {}
    for table in _tables(db):
        for row in query(db, f'SELECT * FROM "{table}"'):  # noqa: S608 (names from sqlite_master)
            for value in row:
                text = value if isinstance(value, bytes) else str(value).encode()
                if raw in text:
                    found.setdefault(table, []).append(row)
                    break
    return found


def _outbox(db: Path, kind: str, subject: str | None = None) -> list[tuple[Any, ...]]:
    if subject is None:
        return query(db, "SELECT message_id, payload FROM outbox WHERE kind = ?", (kind,))
    return query(
        db,
        "SELECT message_id, payload FROM outbox WHERE kind = ? AND subject = ?",
        (kind, subject),
    )


class Visit:
    """A loyalty member's visit: consent for all purposes, check-in, a zone, a purchase."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.user_id = _member()
        self.email = f"mei.{uuid.uuid4().hex[:10]}@example.com"
        self.anonymous_id = "visit-" + uuid.uuid4().hex[:12]
        stamp = {"timestamp": iso_now(offset_s)}
        self.consent = _consent(self.user_id, ALL_PURPOSES, anonymousId=self.anonymous_id, **stamp)
        self.identify = _identify(
            self.user_id,
            self.anonymous_id,
            {"first_name": "Mei", "email": self.email},
            **stamp,
        )
        self.zone = track(
            "Zone Entered", {"zone": "dairy"}, DEVICE, anonymousId=self.anonymous_id, **stamp
        )
        self.order = _order(self.anonymous_id, **stamp)

    def send(self, publisher: Publisher, agent: AgentProcess) -> str:
        """Send the visit and return the member's pseudonym."""
        _send(publisher, agent, self.consent, self.identify, self.zone, self.order)
        return _person(agent, self.user_id)

    @property
    def identified_ids(self) -> set[str]:
        """The events of the visit that go to central (consent changes do not)."""
        return {self.identify["messageId"], self.zone["messageId"], self.order["messageId"]}


def test_a_loyalty_visit_fills_vault_profile_and_outbox_and_nothing_else(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    visit = Visit()
    person = visit.send(publisher, agent)

    vault = query(agent.db, "SELECT pseudonym, user_id, traits FROM identity_vault")
    assert [(p, u) for p, u, _ in vault] == [(person, visit.user_id)]
    assert json.loads(vault[0][2])["email"] == visit.email
    assert query(agent.db, "SELECT pseudonym, anonymous_id FROM visit_links") == [
        (person, visit.anonymous_id)
    ]
    assert query(agent.db, "SELECT pseudonym, first_name FROM profiles") == [(person, "Mei")]
    assert query(agent.db, "SELECT pseudonym, message_id FROM profile_purchases") == [
        (person, visit.order["messageId"])
    ]
    items = _outbox(agent.db, "identified", person)
    assert {m for m, _ in items} == visit.identified_ids
    assert len(_outbox(agent.db, "identified")) == len(items)
    for _, payload in items:
        document = json.loads(payload)
        assert document["userId"] == person
        assert "anonymousId" not in document
        assert visit.anonymous_id not in payload
        assert "traits" not in document
    # The raw id and the email live in the vault and nowhere else.
    for secret in (visit.user_id, visit.email):
        assert set(_rows_holding(agent.db, secret)) == {"identity_vault"}, secret
    assert dead_letter_reasons(agent.db) == {}
    publisher.close()


def test_withdrawing_crm_sync_over_mqtt_empties_the_vault_and_a_late_old_grant_changes_nothing(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    visit = Visit(offset_s=-120)
    person = visit.send(publisher, agent)
    assert query(agent.db, "SELECT count(*) FROM identity_vault") == [(1,)]
    assert len(_outbox(agent.db, "identified", person)) == 3

    withdrawal = _consent(
        visit.user_id, {"crm_sync": False}, anonymousId=visit.anonymous_id, timestamp=iso_now(-10)
    )
    _send(publisher, agent, withdrawal)
    assert query(agent.db, "SELECT count(*) FROM identity_vault") == [(0,)]
    assert _outbox(agent.db, "identified", person) == []
    notices = [json.loads(p) for _, p in _outbox(agent.db, "consent_withdrawn", person)]
    assert [(n["subject_hash"], n["purpose"]) for n in notices] == [
        (subject_hash(Pseudonym(person)), "crm_sync")
    ]
    # The other purposes still hold: the visit stays linked, the profile stays.
    assert query(agent.db, "SELECT pseudonym FROM profiles") == [(person,)]
    assert query(agent.db, "SELECT pseudonym FROM visit_links") == [(person,)]
    assert _rows_holding(agent.db, visit.user_id) == {}

    # A grant given before the withdrawal arrives late: event time decides, so it is history.
    late = _consent(
        visit.user_id, {"crm_sync": True}, anonymousId=visit.anonymous_id, timestamp=iso_now(-60)
    )
    _send(publisher, agent, late)
    assert query(agent.db, "SELECT count(*) FROM identity_vault") == [(0,)]
    assert _outbox(agent.db, "identified", person) == []
    assert query(
        agent.db,
        "SELECT granted FROM consent WHERE pseudonym = ? AND purpose = 'crm_sync'",
        (person,),
    ) == [(0,)]
    assert query(
        agent.db,
        "SELECT granted FROM consent_ledger WHERE message_id = ?",
        (late["messageId"],),
    ) == [(1,)]
    assert _rows_holding(agent.db, visit.user_id) == {}
    publisher.close()


def test_erasure_over_mqtt_leaves_no_trace_in_tables_or_files_and_runs_once(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    visit = Visit()
    person = visit.send(publisher, agent)
    # A rejected event of the person: its dead letter names them (by pseudonym) too.
    bad = _consent(visit.user_id, {"analytics": "yes"})
    publisher.publish_all([(topic(DEVICE), encode(bad))])
    wait_for(lambda: dead_letter_reasons(agent.db) == {"invalid_properties": 1}, 30, "the letter")
    assert _rows_holding(agent.db, person)

    erasure = track("Erasure Requested", {"source": "kiosk"}, DEVICE, userId=visit.user_id)
    publisher.publish_all([(topic(DEVICE), encode(erasure))])
    wait_for(
        lambda: query(agent.db, "SELECT count(*) FROM erasure_receipts") == [(1,)], 30, "receipt"
    )
    for secret in (person, visit.user_id, visit.email):
        assert _rows_holding(agent.db, secret) == {}, secret
    [(request, removed_text, subject_hash)] = query(
        agent.db, "SELECT request, removed, subject_hash FROM erasure_receipts"
    )
    removed = json.loads(removed_text)
    assert request == erasure["messageId"]
    assert removed["events"] == 4  # consent, identify, zone, order
    assert removed["identity_vault"] == 1
    assert removed["outbox"] > 0
    assert removed["dead_letters"] == 1
    notices = [json.loads(p) for _, p in _outbox(agent.db, "erasure")]
    assert [n["subject_hash"] for n in notices] == [subject_hash]
    assert person not in json.dumps(notices)
    assert stored_ids(agent.db) == []

    # The broker redelivers the same request: it was carried out already.
    sentinel = track("Door Counted", {"direction": "in", "count": 1}, DEVICE)
    publisher.publish_all([(topic(DEVICE), encode(erasure)), (topic(DEVICE), encode(sentinel))])
    wait_for(lambda: stored_ids(agent.db) == [sentinel["messageId"]], 30, "the sentinel")
    assert query(agent.db, "SELECT count(*) FROM erasure_receipts") == [(1,)]
    assert len(_outbox(agent.db, "erasure")) == 1
    publisher.close()

    assert agent.stop() == 0
    for path in (agent.db, agent.db.with_name(agent.db.name + "-wal")):
        if path.exists():
            content = path.read_bytes()
            for secret in (person, visit.user_id, visit.email):
                assert secret.encode() not in content, (path.name, secret)


def test_bad_consent_events_are_dead_letters_without_the_raw_user_id(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    user_id = _member()
    no_user = _consent(user_id, {"analytics": True})
    del no_user["userId"]
    identify_no_user = _identify(user_id, "visit-abc", {})
    del identify_no_user["userId"]
    bad = {
        "unknown purpose": _consent(user_id, {"analytics": True, "marketing": True}),
        "non-boolean": _consent(user_id, {"crm_sync": "yes"}),
        "missing userId": no_user,
        "identify without userId": identify_no_user,
    }
    good = [
        track("Door Counted", {"direction": "in", "count": 1}, DEVICE),
        _consent(user_id, {"analytics": True}),
        track("Zone Entered", {"zone": "dairy"}, DEVICE),
        track("Door Counted", {"direction": "out", "count": 1}, DEVICE),
    ]
    interleaved = [e for pair in zip(bad.values(), good, strict=True) for e in pair]
    publisher.publish_all([(topic(DEVICE), encode(e)) for e in interleaved])
    wait_for(
        lambda: {str(e["messageId"]) for e in good} <= set(stored_ids(agent.db)), 30, "good events"
    )
    wait_for(lambda: sum(dead_letter_reasons(agent.db).values()) == 4, 30, "4 dead letters")

    assert sorted(stored_ids(agent.db)) == sorted(str(e["messageId"]) for e in good)
    assert dead_letter_reasons(agent.db) == {"invalid_properties": 3, "invalid_shape": 1}
    person = _person(agent, user_id)
    letters = query(agent.db, "SELECT reason, raw, detail FROM dead_letters ORDER BY id")
    by_message = {json.loads(raw)["messageId"]: (reason, raw) for reason, raw, _ in letters}
    for what, event in bad.items():
        reason, raw = by_message[event["messageId"]]
        expected = "invalid_shape" if event["type"] == "identify" else "invalid_properties"
        assert reason == expected, what
        kept = json.loads(raw)
        if "userId" in event:
            assert kept["userId"] == f"pseudonym:{person}", what
    for row in query(agent.db, "SELECT * FROM dead_letters"):
        for value in row:
            text = value if isinstance(value, bytes) else str(value).encode()
            assert user_id.encode() not in text
    # The one valid consent grants analytics only: the raw id is kept nowhere.
    assert _rows_holding(agent.db, user_id) == {}
    assert query(
        agent.db, "SELECT purpose, granted FROM consent WHERE pseudonym = ?", (person,)
    ) == [("analytics", 1)]
    publisher.close()


def test_an_identified_visit_without_consent_stays_anonymous(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    user_id = _member()
    email = f"mei.{uuid.uuid4().hex[:10]}@example.com"
    visit = "visit-" + uuid.uuid4().hex[:12]
    events = [
        _identify(user_id, visit, {"first_name": "Mei", "email": email}),
        track("Zone Entered", {"zone": "dairy"}, DEVICE, anonymousId=visit),
        _order(visit),
    ]
    _send(publisher, agent, *events)
    person = _person(agent, user_id)

    assert query(agent.db, "SELECT pseudonym FROM events WHERE type = 'identify'") == [(person,)]
    for table in ("visit_links", "profiles", "profile_purchases", "identity_vault", "consent"):
        assert query(agent.db, f"SELECT count(*) FROM {table}")  # noqa: S608 == [(0,)], table
    assert _outbox(agent.db, "identified") == []
    assert _rows_holding(agent.db, user_id) == {}
    assert _rows_holding(agent.db, email) == {}
    assert _rows_holding(agent.db, "Mei") == {}
    publisher.close()


def _identify_without_user(email: str) -> dict[str, Any]:
    event = _identify("unused", "visit-" + uuid.uuid4().hex[:12], {"email": email})
    del event["userId"]
    return event


def _consent_with_number_id(number: int) -> dict[str, Any]:
    return _consent("unused", {"analytics": True}) | {"userId": number}


@pytest.mark.parametrize(
    ("make", "secret"),
    [
        (_identify_without_user, "mei.dead-letter@example.com"),
        (_consent_with_number_id, 987654321012),
    ],
    ids=["traits-without-userId", "numeric-userId"],
)
def test_dead_letters_keep_no_traits_nor_raw_ids_of_any_type(
    broker: Mosquitto,
    agent_factory: MakeAgent,
    make: Callable[[Any], dict[str, Any]],
    secret: object,
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    publisher.publish_all([(topic(DEVICE), encode(make(secret)))])
    wait_for(lambda: dead_letter_reasons(agent.db) == {"invalid_shape": 1}, 30, "the letter")
    publisher.close()
    assert _rows_holding(agent.db, str(secret)) == {}
