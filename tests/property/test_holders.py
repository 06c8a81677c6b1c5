"""Tickets and badges name their holders: over random streams of gate and badge scans,
anonymous and identified, accepted and rejected, with ids also where no scan puts them, no
raw ticket or badge id is kept anywhere (tables, dead letters, the database file's bytes),
none leaves in an identified item, and an erasure by userId or by ticket reaches every scan
of that holder and nothing else. Through the real ingest path (validation,
pseudonymisation, SQLite on disk)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import schemas
from edge_agent.app import ingest
from edge_agent.core.events import Limits
from edge_agent.core.identity import Identity, SiteKey, UserId, holder, pseudonym
from edge_agent.core.topics import SiteId
from edge_agent.store.database import Store
from tests.helpers import SITE, encode, migrated_store, topic

KEY = SiteKey(bytes(range(32)))
SCHEMAS = schemas.load()
LIMITS = Limits(site=SiteId(SITE))
NOW_MS = 1_800_000_000_000
STAMP = datetime.fromtimestamp(NOW_MS / 1000, UTC).isoformat(timespec="milliseconds")
PEOPLE = 3


@dataclass(frozen=True)
class Scan:
    badge: bool  # a Badge Scanned, else a Ticket Scanned
    ticket: int  # which ticket or badge (few, so the same one is scanned again)
    person: int | None  # the userId the scanner linked, if any
    broken: bool  # rejected (a result no schema knows): kept as a dead letter
    nested: bool  # the id also sits nested in properties and in context


scans = st.builds(
    Scan,
    badge=st.booleans(),
    ticket=st.integers(0, 5),
    person=st.one_of(st.none(), st.integers(0, PEOPLE - 1)),
    broken=st.booleans(),
    nested=st.booleans(),
)


def _raw(scan: Scan) -> str:
    return f"{'BDG' if scan.badge else 'TKT'}-{scan.ticket}-Q7Z"


def _event(scan: Scan, index: int) -> dict[str, Any]:
    raw = _raw(scan)
    key = "badge_id" if scan.badge else "ticket_id"
    properties: dict[str, Any] = {key: raw}
    if scan.badge:
        properties.update(place_kind="booth", place="b-12")
    else:
        properties.update(gate="north", result="bogus" if scan.broken else "accepted")
    if scan.broken and scan.badge:
        properties["place_kind"] = "stage"
    if scan.nested:
        properties["scanner"] = {"last": [{key: raw}]}
    event: dict[str, Any] = {
        "type": "track",
        "event": "Badge Scanned" if scan.badge else "Ticket Scanned",
        "messageId": f"s{index}",
        "timestamp": STAMP,
        "anonymousId": f"visit-{index}",
        "properties": properties,
        "context": {"device": {"id": "gate-1"}, **({key: raw} if scan.nested else {})},
    }
    if scan.person is not None:
        event["userId"] = f"member-{scan.person}"
    return event


def _consent(person: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Consent Updated",
        "messageId": f"c{person}",
        "timestamp": STAMP,
        "userId": f"member-{person}",
        "properties": {
            "purposes": {"analytics": True, "personalization": True, "crm_sync": True},
            "source": "kiosk",
        },
        "context": {"device": {"id": "gate-1"}},
    }


def _held(scan: Scan) -> str:
    return holder(KEY, "badge" if scan.badge else "ticket", _raw(scan))


def _stored(store: Store) -> set[str]:
    return {str(r[0]) for r in store.db.execute("SELECT message_id FROM events WHERE event <> ?",
                                                ("Consent Updated",))}  # fmt: skip


def _everything(store: Store) -> str:
    db = store.db.conn
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return " ".join(
        str(v.decode(errors="replace") if isinstance(v, bytes) else v)
        for table in tables
        for row in db.execute(f"SELECT * FROM {table}")  # noqa: S608 (sqlite_master)
        for v in row
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(scans, min_size=1, max_size=20),
    st.integers(0, PEOPLE - 1),
    st.integers(0, 5),
    st.booleans(),
)
def test_holders_are_kept_only_as_pseudonyms_and_erased_with_every_scan(
    batch: list[Scan], erased: int, ticket: int, badge: bool
) -> None:
    payloads = [(topic("gate-1"), encode(_consent(p)), NOW_MS) for p in range(PEOPLE)]
    payloads += [(topic("gate-1"), encode(_event(s, i)), NOW_MS) for i, s in enumerate(batch)]
    with tempfile.TemporaryDirectory() as folder:
        store = migrated_store(Path(folder) / "site.db")
        received, rejected = ingest.classify(payloads, LIMITS, SCHEMAS, 65536, KEY)
        store.commit(received, rejected, "v1", NOW_MS)
        text = _everything(store)
        items = [
            orjson.loads(body)
            for (body,) in store.db.execute("SELECT payload FROM outbox WHERE kind = 'identified'")
        ]
        kept = {f"s{i}" for i, s in enumerate(batch) if not s.broken}
        assert _stored(store) == kept
        # The holders the stored scans name, as erasure finds them.
        holders = dict(store.db.execute("SELECT message_id, holder FROM events"))

        # Erasing a person: their scans, and every anonymous scan of a ticket one of their
        # scans names; another person's identified scan of it stays theirs.
        person = pseudonym(KEY, f"member-{erased}")
        store.erase(Identity(person, UserId(f"member-{erased}"), {}), "r1", NOW_MS)
        theirs = {_held(s) for s in batch if s.person == erased and not s.broken}
        gone = {
            f"s{i}"
            for i, s in enumerate(batch)
            if not s.broken and (s.person == erased or (s.person is None and _held(s) in theirs))
        }
        after_person = _stored(store)
        assert after_person == kept - gone

        # Erasing a holder by the ticket: every scan of it left, identified or not.
        named = holder(
            KEY, "badge" if badge else "ticket", f"{'BDG' if badge else 'TKT'}-{ticket}-Q7Z"
        )
        store.erase(Identity(named, None, {}), "r2", NOW_MS)
        of_ticket = {m for m in after_person if holders[m] == named}
        assert _stored(store) == after_person - of_ticket
        store.close()
        raw = b"".join(p.read_bytes() for p in Path(folder).iterdir())
    for scan in batch:
        assert _raw(scan) not in text, scan
        assert _raw(scan).encode() not in raw, scan
        assert _held(scan) not in " ".join(orjson.dumps(item).decode() for item in items)
    for item in items:
        assert not {"ticket_id", "badge_id"} & set(item.get("properties", {}))
