"""Who may link a visit: no device can take another visitor's visit, so no one's erasure or
export reaches a visit that is not theirs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import schemas
from edge_agent.app import ingest
from edge_agent.core.events import Limits
from edge_agent.core.identity import SiteKey, pseudonym
from edge_agent.core.topics import SiteId
from edge_agent.store.database import Store
from tests.helpers import SITE, encode, migrated_store, topic

SCHEMAS = schemas.load()
LIMITS = Limits(site=SiteId(SITE))
KEY = SiteKey(b"k" * 32)
NOW_MS = 1_800_000_000_000
SCANNER = "loyalty-1"  # listed in link_devices
DEVICES = ("door-1", "zone-1", SCANNER, "kiosk-9")
PEOPLE = ("victim", "attacker", "third")
VISITS = ("visit-a", "visit-b", "visit-c")


def _event(n: int, device: str, visit: str, person: str | None, kind: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "messageId": f"m{n}",
        "timestamp": "2027-01-15T08:00:00.000Z",
        "anonymousId": visit,
        "context": {"device": {"id": device}},
        "type": "track",
        "event": "Zone Entered",
        "properties": {"zone": "dairy"},
    }
    if person is None:
        return event
    event["userId"] = person
    if kind == "erase":
        return {**event, "event": "Erasure Requested", "properties": {}}
    grant = {"analytics": True, "personalization": True}
    return {**event, "event": "Consent Updated", "properties": {"purposes": grant, "source": "app"}}


def _commit(store: Store, items: list[tuple[str, dict[str, Any]]]) -> None:
    received, rejected = ingest.classify(
        [(topic(device), encode(e), NOW_MS) for device, e in items], LIMITS, SCHEMAS, 65536, KEY
    )
    assert rejected == []
    store.commit(received, rejected, "v1", NOW_MS)


def _open(folder: str) -> Store:
    migrated = migrated_store(Path(folder) / "site.db")
    path = migrated.path
    migrated.close()
    return Store.open(path, link_devices=frozenset({SCANNER}))


def _visit_events(store: Store, visit: str) -> int:
    return int(
        store.db.execute("SELECT count(*) FROM events WHERE anonymous_id = ?", [visit]).fetchone()[
            0
        ]
    )


def _linked(store: Store, visit: str) -> str | None:
    row = store.db.execute(
        "SELECT pseudonym FROM visit_links WHERE anonymous_id = ?", [visit]
    ).fetchone()
    return None if row is None else str(row[0])


@pytest.mark.parametrize(
    ("linker", "first_seen_by", "linked"),
    [
        pytest.param(SCANNER, "door-1", True, id="a-listed-scanner-links-what-the-door-saw"),
        pytest.param("kiosk-9", "door-1", False, id="an-unlisted-device-may-not"),
        pytest.param("kiosk-9", "kiosk-9", True, id="a-device-links-the-visit-it-alone-saw"),
        pytest.param("kiosk-9", None, True, id="a-device-links-a-visit-it-opens"),
    ],
)
def test_who_may_link_a_visit(linker: str, first_seen_by: str | None, linked: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = _open(folder)
        if first_seen_by is not None:
            _commit(store, [(first_seen_by, _event(0, first_seen_by, "visit-a", None, ""))])
        _commit(store, [(linker, _event(1, linker, "visit-a", "victim", "consent"))])
        assert (_linked(store, "visit-a") == pseudonym(KEY, "victim")) is linked
        assert _visit_events(store, "visit-a") == (2 if first_seen_by else 1)  # all stored
        store.close()


def test_a_hijacking_device_gets_nothing_of_the_visit_and_cannot_erase_it() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = _open(folder)
        _commit(
            store,
            [
                ("door-1", _event(0, "door-1", "visit-a", None, "")),
                (SCANNER, _event(1, SCANNER, "visit-a", "victim", "consent")),
                ("zone-1", _event(2, "zone-1", "visit-a", None, "")),
            ],
        )
        # Even a listed device does not move a linked visit to another person.
        for n, device in enumerate(("kiosk-9", SCANNER), start=3):
            _commit(store, [(device, _event(n, device, "visit-a", "attacker", "consent"))])
        assert _linked(store, "visit-a") == pseudonym(KEY, "victim")
        export = store.person(pseudonym(KEY, "attacker"))
        assert {e["message_id"] for e in export["events"]} == {"m3", "m4"}
        _commit(store, [("kiosk-9", _event(9, "kiosk-9", "visit-x", "attacker", "erase"))])
        assert _visit_events(store, "visit-a") == 3  # the attacker's own two events went
        store.close()


@dataclass(frozen=True)
class Step:
    device: str
    visit: str
    person: str | None
    kind: str


steps = st.builds(
    Step,
    device=st.sampled_from(DEVICES),
    visit=st.sampled_from(VISITS),
    person=st.one_of(st.none(), st.sampled_from(PEOPLE)),
    kind=st.sampled_from(["consent", "consent", "consent", "erase"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, max_size=30), st.lists(st.integers(1, 6), max_size=6))
def test_an_erasure_removes_only_what_the_person_may_have(
    stream: list[Step], cuts: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = _open(folder)
        stored: dict[str, list[tuple[str, str | None]]] = {v: [] for v in VISITS}  # the model
        owner: dict[str, str] = {}  # who each visit is linked to
        batches: list[list[tuple[str, dict[str, Any]]]] = [[]]
        sizes = iter(cuts)
        size = next(sizes, 100)
        for n, step in enumerate(stream):
            batches[-1].append(
                (step.device, _event(n, step.device, step.visit, step.person, step.kind))
            )
            if len(batches[-1]) >= size:
                batches.append([])
                size = next(sizes, 100)
            if step.person is not None and step.kind == "erase":
                # Not stored: the person's events go, and the anonymous ones of their visits.
                mine = {v for v, p in owner.items() if p == step.person}
                for visit, events in stored.items():
                    stored[visit] = [
                        (d, p)
                        for d, p in events
                        if p != step.person and not (p is None and visit in mine)
                    ]
                for visit in mine:
                    del owner[visit]
                continue
            seen = {d for d, _ in stored[step.visit]}
            may_link = step.device == SCANNER or seen <= {step.device}
            if step.person is not None and step.visit not in owner and may_link:
                owner[step.visit] = step.person
            stored[step.visit].append((step.device, step.person))
        for batch in batches:
            if batch:
                _commit(store, batch)
        for visit in VISITS:
            expected = owner.get(visit)
            assert _linked(store, visit) == (expected and pseudonym(KEY, expected)), visit
            assert _visit_events(store, visit) == len(stored[visit]), visit
        store.close()
