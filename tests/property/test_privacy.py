"""Privacy as properties, over random interleaved streams of anonymous and identified events,
consent grants and withdrawals (in and out of order) and erasures, stored through the real
ingest path (validation, pseudonymisation, SQLite on disk)."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import schemas
from edge_agent.app import ingest
from edge_agent.core.consent import PURPOSES
from edge_agent.core.events import Limits
from edge_agent.core.identity import SiteKey, pseudonym
from edge_agent.core.topics import SiteId
from tests.helpers import SITE, encode, migrated_store, topic

KEY = SiteKey(bytes(range(32)))
SCHEMAS = schemas.load()
LIMITS = Limits(site=SiteId(SITE))
NOW_MS = 1_800_000_000_000
PEOPLE = ["member-7f3a91c2", "member-b44e0d17", "member-2c9d6a55"]
VISITS = ["visit-a1", "visit-b2", "visit-c3", "visit-d4"]


@dataclass(frozen=True)
class Step:
    kind: str
    person: int
    visit: int
    offset_s: int
    purposes: tuple[tuple[str, bool], ...]


steps = st.builds(
    Step,
    kind=st.sampled_from(["identify", "consent", "consent", "order", "zone", "erase", "bad"]),
    person=st.integers(0, len(PEOPLE) - 1),
    visit=st.integers(0, len(VISITS) - 1),
    # Timestamps jitter around the receive time, so consent changes arrive out of order.
    offset_s=st.integers(-120, 0),
    purposes=st.lists(
        st.tuples(st.sampled_from(PURPOSES), st.booleans()), min_size=1, max_size=3
    ).map(tuple),
)


def _stamp(offset_s: int) -> str:
    return datetime.fromtimestamp(NOW_MS / 1000 + offset_s, UTC).isoformat(timespec="milliseconds")


def _event(n: int, step: Step) -> dict[str, Any]:
    base: dict[str, Any] = {
        "messageId": f"m{n}",
        "timestamp": _stamp(step.offset_s),
        "anonymousId": VISITS[step.visit],
        "context": {"device": {"id": "till-1"}},
    }
    user = {"userId": PEOPLE[step.person]}
    if step.kind == "identify":
        return {
            **base,
            **user,
            "type": "identify",
            "traits": {"first_name": "Mei", "email": f"{PEOPLE[step.person]}@example.org"},
        }
    if step.kind == "consent":
        return {
            **base,
            **user,
            "type": "track",
            "event": "Consent Updated",
            "properties": {"purposes": dict(step.purposes), "source": "kiosk"},
        }
    if step.kind == "bad":  # rejected, so a dead letter: it must not keep the raw id either
        return {
            **base,
            **user,
            "type": "identify",
            "traits": {"email": "x@example.org"},
            "context": [],
        }
    if step.kind == "erase":
        return {**base, **user, "type": "track", "event": "Erasure Requested", "properties": {}}
    if step.kind == "order":
        product = {"product_id": "4710199010372", "price": 10.0, "quantity": 1}
        return {
            **base,
            "type": "track",
            "event": "Order Completed",
            "properties": {
                "order_id": f"o{n}",
                "total": 10.0,
                "currency": "TWD",
                "products": [product],
            },
        }
    return {**base, "type": "track", "event": "Zone Entered", "properties": {"zone": "dairy"}}


class Model:
    """What the consent rules say each person's state is after the stream."""

    def __init__(self) -> None:
        self.decisions: dict[str, dict[str, tuple[tuple[int, int], bool]]] = {}
        self.last_kind: dict[str, str] = {}

    def see(self, seq: int, step: Step) -> None:
        person = PEOPLE[step.person]
        if step.kind in ("identify", "consent", "erase", "bad"):
            self.last_kind[person] = step.kind
        if step.kind == "erase":
            self.decisions.pop(person, None)
        elif step.kind == "consent":
            current = self.decisions.setdefault(person, {})
            stamp = (step.offset_s, seq)
            for purpose, value in dict(step.purposes).items():
                if purpose not in current or current[purpose][0] < stamp:
                    current[purpose] = (stamp, value)

    def with_purpose(self, purpose: str) -> set[str]:
        return {p for p, d in self.decisions.items() if purpose in d and d[purpose][1]}

    def erased(self) -> set[str]:
        return {p for p, kind in self.last_kind.items() if kind == "erase"}


def _batches(items: list[Any], cuts: list[int]) -> Iterator[list[Any]]:
    start = 0
    for cut in [*sorted({c % (len(items) + 1) for c in cuts}), len(items)]:
        if cut > start:
            yield items[start:cut]
            start = cut


def _all_rows(db: sqlite3.Connection, skip: str = "") -> Iterator[tuple[str, str]]:
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if table == skip:
            continue
        for row in db.execute(f"SELECT * FROM {table}"):  # noqa: S608 (names from sqlite_master)
            yield (
                table,
                " ".join(
                    v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row
                ),
            )


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=1, max_size=40), st.lists(st.integers(0, 40), max_size=5))
def test_consent_rules_hold_over_random_streams(stream: list[Step], cuts: list[int]) -> None:
    model = Model()
    with tempfile.TemporaryDirectory() as folder:
        store = migrated_store(Path(folder) / "site.db")
        payloads = [
            (topic("till-1"), encode(_event(n, step)), NOW_MS) for n, step in enumerate(stream)
        ]
        for n, step in enumerate(stream):
            model.see(n, step)
        for batch in _batches(payloads, cuts):
            received, rejected = ingest.classify(batch, LIMITS, SCHEMAS, 65536, KEY)
            store.commit(received, rejected, "v1", NOW_MS)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db = store.db.conn
        pseudonyms = {person: pseudonym(KEY, person) for person in PEOPLE}

        # 1. No raw userId outside the vault; the vault holds exactly the crm_sync people.
        for table, text in _all_rows(db, skip="identity_vault"):
            assert "@example.org" not in text, f"an email trait in {table}"
            for person in PEOPLE:
                assert person not in text, f"raw userId in {table}"
        vault = {r[0] for r in db.execute("SELECT pseudonym FROM identity_vault")}
        assert vault == {pseudonyms[p] for p in model.with_purpose("crm_sync")}

        # 2. The outbox holds identified items only for people with crm_sync now.
        subjects = {
            r[0] for r in db.execute("SELECT subject FROM outbox WHERE kind = 'identified'")
        }
        assert subjects <= {pseudonyms[p] for p in model.with_purpose("crm_sync")}

        # 4. Profiles only for people with personalization.
        profiles = {r[0] for r in db.execute("SELECT pseudonym FROM profiles")}
        assert profiles <= {pseudonyms[p] for p in model.with_purpose("personalization")}
        purchases = {r[0] for r in db.execute("SELECT pseudonym FROM profile_purchases")}
        assert purchases <= profiles

        # 3. After erasure nothing anywhere names the person: rows, nor the file's bytes.
        erased = model.erased()
        for table, text in _all_rows(db):
            for person in erased:
                assert pseudonyms[person] not in text, f"pseudonym left in {table}"
                assert person not in text, f"raw id left in {table}"
        store.close()
        raw = b"".join(
            p.read_bytes() for p in Path(folder).iterdir() if p.name.startswith("site.db")
        )
        for person in erased:
            assert pseudonyms[person].encode() not in raw
            assert person.encode() not in raw
