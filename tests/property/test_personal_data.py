"""No personal datum is kept anywhere but the vault, wherever a payload puts it: over random
events, anonymous and identified, accepted and rejected, with e-mail and phone values in the
top-level traits, ``context.traits``, personal keys of ``properties`` (nested too) and
``context``, through the real ingest path (validation, pseudonymisation, SQLite on disk)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import schemas
from edge_agent.app import ingest
from edge_agent.core.events import Limits
from edge_agent.core.identity import SiteKey
from edge_agent.core.topics import SiteId
from tests.helpers import SITE, encode, migrated_store, topic

KEY = SiteKey(bytes(range(32)))
SCHEMAS = schemas.load()
LIMITS = Limits(site=SiteId(SITE))
NOW_MS = 1_800_000_000_000
STAMP = datetime.fromtimestamp(NOW_MS / 1000, UTC).isoformat(timespec="milliseconds")
PLACES = ["traits", "context.traits", "properties", "properties.nested", "context"]
KEYS = ["email", "phone", "Phone_Number", "first_name", "address", "ip", "birthday"]


@dataclass(frozen=True)
class Datum:
    person: int | None  # None: an anonymous event
    place: str
    key: str
    phone: bool
    broken: bool  # rejected: the datum would sit in a dead letter
    n: int


data = st.builds(
    Datum,
    person=st.one_of(st.none(), st.integers(0, 2)),
    place=st.sampled_from(PLACES),
    key=st.sampled_from(KEYS),
    phone=st.booleans(),
    broken=st.booleans(),
    n=st.integers(0, 10**6),
)


def _value(d: Datum, index: int) -> str:
    return (
        f"+886 9{index:02d} {d.n % 1000:03d} {d.n % 997:03d}"
        if d.phone
        else (f"person{index}.{d.n}@example.org")
    )


def _event(d: Datum, index: int) -> dict[str, Any]:
    value = _value(d, index)
    event: dict[str, Any] = {
        "type": "track",
        "event": "Product Viewed",
        "messageId": f"m{index}",
        "timestamp": STAMP,
        "anonymousId": f"visit-{index}",
        "properties": {"product_id": "p1"},
        "context": {"device": {"id": "till-1"}},
    }
    if d.person is not None:
        event["userId"] = f"member-{d.person}"
    if d.place == "traits":
        event["traits"] = {d.key: value}
    elif d.place == "context.traits":
        event["context"]["traits"] = {d.key: value}
    elif d.place == "properties":
        event["properties"][d.key] = value
    elif d.place == "properties.nested":
        event["properties"]["buyer"] = {"details": [{d.key: value}]}
    else:
        event["context"][d.key] = value
    if d.broken:
        event["event"] = "Coupon Redeemed"  # unknown_event: kept as a dead letter
    return event


def _consent(person: int, crm_sync: bool, index: int) -> dict[str, Any]:
    purposes = {"analytics": True, "personalization": True, "crm_sync": crm_sync}
    return {
        "type": "track",
        "event": "Consent Updated",
        "messageId": f"c{index}",
        "timestamp": STAMP,
        "userId": f"member-{person}",
        "properties": {"purposes": purposes, "source": "kiosk"},
        "context": {"device": {"id": "till-1"}},
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(data, min_size=1, max_size=20), st.lists(st.booleans(), min_size=3, max_size=3))
def test_no_personal_datum_is_kept_outside_the_vault(batch: list[Datum], crm: list[bool]) -> None:
    payloads = [(topic("till-1"), encode(_consent(p, crm[p], p)), NOW_MS) for p in range(3)]
    payloads += [(topic("till-1"), encode(_event(d, i)), NOW_MS) for i, d in enumerate(batch)]
    with tempfile.TemporaryDirectory() as folder:
        store = migrated_store(Path(folder) / "site.db")
        received, rejected = ingest.classify(payloads, LIMITS, SCHEMAS, 65536, KEY)
        store.commit(received, rejected, "v1", NOW_MS)
        db = store.db.conn
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        outside = {
            table: " ".join(
                str(v.decode(errors="replace") if isinstance(v, bytes) else v)
                for row in db.execute(f"SELECT * FROM {table}")  # noqa: S608 (sqlite_master)
                for v in row
            )
            for table in tables
            if table != "identity_vault"
        }
        vault = " ".join(str(r) for r in db.execute("SELECT * FROM identity_vault"))
        store.close()
        raw = b"".join(p.read_bytes() for p in Path(folder).iterdir())
    for index, d in enumerate(batch):
        value = _value(d, index)
        traits = d.person is not None and not d.broken and d.place in ("traits", "context.traits")
        # A first name is the one trait a profile keeps, for the staff screen's greeting,
        # under personalization (which every person here granted).
        greeting = traits and d.key == "first_name"
        for table, text in outside.items():
            if not (greeting and table == "profiles"):
                assert value not in text, (d, table)
        # The vault keeps a person's traits only while they consent to crm_sync.
        may_vault = traits and d.person is not None and crm[d.person]
        if not (may_vault or greeting):
            assert value not in vault, d
            assert value.encode() not in raw, d
