"""The SQLite store on real files: schema, WAL, exactly-once commits, dead letters, replay."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from edge_agent import schemas
from edge_agent.app import clock, deadletters, ingest
from edge_agent.config import load_settings
from edge_agent.core.deadletters import Budget, DeadLetter, dead_letter
from edge_agent.core.events import Event, Inbound, MessageId, Reason, Rejection, Schemas
from edge_agent.core.identity import REDACTED, SiteKey, pseudonym
from edge_agent.core.retention import Cutoffs
from edge_agent.core.topics import DeviceId
from edge_agent.errors import StorageError
from edge_agent.store.database import Store
from edge_agent.store.events import Received
from edge_agent.store.migrations import migrations
from tests.helpers import SITE, encode, migrated_store, topic, track


def event(message_id: str) -> Received:
    return Received(
        Event(
            MessageId(message_id), "track", "Door Counted", 1, DeviceId("door-1"), None, None, "{}"
        ),
        2,
    )


def test_schema_is_migrated_once_and_wal_is_on(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert {"events", "dead_letters", "counters", "agent_state"} <= set(store.db.table_names())
    store.close()
    again = Store.open(tmp_path / "a.db", synchronous="NORMAL")
    applied = again.db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    assert applied == len(migrations.pending(Database(memory=True)))
    assert again.db.execute("PRAGMA synchronous").fetchone()[0] == 1
    again.close()


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no database at"):
        Store.open(tmp_path / "missing.db", readonly=True)
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(StorageError, match=str(folder)):
        Store.open(folder)


def test_commit_counts_duplicates_and_dead_letter_repeats(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db")
    raw = b"not json"
    message = Inbound(topic(), raw, 10)
    letter = dead_letter(message, Rejection(Reason.NOT_JSON, "bad", raw), 1024)
    first = store.commit([event("a"), event("b"), event("a")], [letter], "v1", 100)
    assert (first.stored, first.duplicates, first.dead_letters) == (2, 1, 1)
    second = store.commit([event("b"), event("c")], [letter], "v1", 200)
    assert (second.stored, second.duplicates) == (1, 1)
    status = store.status()
    assert status.stored == 3
    assert status.duplicates == 2
    assert status.dead_letters_by_reason == {"not_json": 2}
    assert status.last_stored_ms == 200
    (row,) = store.dead_letters.find()
    assert (row.occurrences, row.received_ms, row.last_seen_ms, row.raw) == (2, 10, 200, raw)
    store.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([f"m{i}" for i in range(30)]), max_size=40), max_size=8))
def test_each_message_id_is_stored_once_whatever_the_batches(batches: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = migrated_store(Path(folder) / "a.db")
        for n, batch in enumerate(batches):
            store.commit([event(m) for m in batch], [], "v1", n)
        ids = [r[0] for r in store.db.execute("SELECT message_id FROM events")]
        everything = [m for batch in batches for m in batch]
        assert sorted(ids) == sorted(set(everything))
        assert store.status().duplicates == len(everything) - len(set(everything))
        store.close()


def test_replay_after_a_schema_update_stores_the_fixed_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_ = load_settings(
        environ={"EDGE_AGENT_SITE__ID": SITE, "EDGE_AGENT_SITE__DATA_DIR": str(tmp_path)}
    )
    store = Store.open(settings_.database)
    coupon = track("Coupon Redeemed", {"coupon": "WELCOME"})
    door = track("Door Counted", {"direction": "sideways", "count": 1}, "door-1")
    _, rejected = ingest.classify(
        [
            (topic(), encode(coupon), clock.now_ms()),
            (topic("door-1"), encode(door), clock.now_ms()),
        ],
        ingest.limits_of(settings_),
        schemas.load(),
        65536,
        SiteKey(bytes(32)),
    )
    store.commit([], rejected, "v1", clock.now_ms())
    store.close()
    assert deadletters.replay_dead_letters(settings_, None, None).fixed == 0

    shipped = schemas.load()

    def with_coupons(version: str = "v1") -> Schemas:
        # A later schema version that knows the event the old one did not.
        return Schemas(
            version="v2",
            envelope=shipped.envelope,
            events={**shipped.events, "Coupon Redeemed": lambda d: d},
        )

    monkeypatch.setattr(schemas, "load", with_coupons)
    report = deadletters.replay_dead_letters(settings_, None, None)
    assert (report.examined, report.fixed, report.stored) == (2, 1, 1)
    assert report.still_rejected == {"invalid_properties": 1}
    store = Store.open(settings_.database)
    assert [r[0] for r in store.db.execute("SELECT message_id FROM events")] == [
        coupon["messageId"]
    ]
    assert {r.reason: r.status for r in store.dead_letters.find(status=None)} == {
        "unknown_event": "replayed",
        "invalid_properties": "open",
    }
    store.close()
    again = deadletters.replay_dead_letters(settings_, None, None)
    assert (again.examined, again.fixed) == (1, 0)


def test_truncated_dead_letters_are_not_replayed(tmp_path: Path) -> None:
    settings_ = load_settings(environ={"EDGE_AGENT_SITE__DATA_DIR": str(tmp_path)})
    store = Store.open(settings_.database)
    raw = b"x" * 5000
    store.commit(
        [],
        [
            dead_letter(
                Inbound(topic(), raw, 1), Rejection(Reason.PAYLOAD_TOO_LARGE, "big", raw), 100
            )
        ],
        "v1",
        1,
    )
    store.close()
    report = deadletters.replay_dead_letters(settings_, None, "payload_too_large")
    assert (report.examined, report.not_replayable, report.fixed) == (1, 1, 0)


def test_an_id_in_the_agents_pseudonym_form_from_a_device_is_refused(tmp_path: Path) -> None:
    key = SiteKey(bytes(32))
    marked = REDACTED + pseudonym(key, "member-1")
    settings_ = load_settings(
        environ={"EDGE_AGENT_SITE__ID": SITE, "EDGE_AGENT_SITE__DATA_DIR": str(tmp_path)}
    )
    purposes = {"analytics": True, "personalization": True, "crm_sync": True}
    consent = track("Consent Updated", {"purposes": purposes, "source": "till"}, userId=marked)
    received, rejected = ingest.classify(
        [(topic(), encode(consent), clock.now_ms())],
        ingest.limits_of(settings_),
        schemas.load(),
        65536,
        key,
    )
    assert received == []
    assert [r.reason for r in rejected] == [Reason.RESERVED_ID]
    # The device's text is hashed in the dead letter like any id, never kept as "ours".
    assert marked.encode() not in rejected[0].raw


def _door(message_id: str, device: str, count: int = 1) -> Received:
    body = f'{{"messageId": "{message_id}", "count": {count}}}'
    return Received(
        Event(
            MessageId(message_id), "track", "Door Counted", 1, DeviceId(device), None, None, body
        ),
        2,
        topic=topic(device),
    )


def test_a_messageid_reused_with_other_content_is_a_conflict_not_a_duplicate(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "a.db")
    store.commit([_door("m1", "door-1")], [], "v1", 100)
    # The same event again (a redelivery) is a duplicate; another device's or another body
    # under the same messageId is a conflict, kept with both digests.
    again = store.commit([_door("m1", "door-1")], [], "v1", 200)
    assert (again.stored, again.duplicates, again.refused) == (0, 1, ())
    clash = store.commit(
        [_door("m1", "door-2"), _door("m1", "door-1", count=7), _door("m2", "door-1")],
        [],
        "v1",
        300,
    )
    assert (clash.stored, clash.duplicates) == (1, 0)
    assert [c.reason for c in clash.refused] == [Reason.DUPLICATE_CONFLICT] * 2
    # In one batch too: the second body of a new messageId is a conflict with the first.
    inside = store.commit([_door("m3", "door-1"), _door("m3", "door-1", 9)], [], "v1", 400)
    assert (inside.stored, inside.duplicates, len(inside.refused)) == (1, 0, 1)
    letters = store.dead_letters.find(reason="duplicate_conflict")
    assert len(letters) == 3
    assert all(d.detail.count("sha256") == 2 for d in letters)
    assert store.status().duplicates == 1
    store.close()


def _garbage(device: str, n: int, size: int = 1000) -> DeadLetter:
    raw = f"{n:08d}".encode() + b"\xff" * size
    return dead_letter(
        Inbound(topic(device), raw, 10), Rejection(Reason.NOT_JSON, "bad", raw), size
    )


def _usage_is_exact(store: Store) -> bool:
    (exact,) = store.db.execute(
        "SELECT coalesce(sum(length(raw) + length(detail) + length(topic) + 256), 0) "
        "FROM dead_letters"
    ).fetchone()
    return bool(store.dead_letters.used_bytes() == exact)


def test_one_broken_device_cannot_take_the_dead_letters_of_the_others(tmp_path: Path) -> None:
    budget = Budget(first=20, sample_every=10, max_bytes=200_000)
    store = Store.open(tmp_path / "a.db", budget=budget)
    flood = [_garbage("kiosk-bad", n) for n in range(400)]
    result = store.commit([], flood[:150], "v1", 100)
    result2 = store.commit([], flood[150:], "v1", 200)
    assert result.unkept + result2.unkept == 400 - 20 - 20  # first 20, then 20 samples (1 in 10)
    good = store.commit([], [_garbage("till-1", 0)], "v1", 300)
    assert good.unkept == 0
    kept = store.dead_letters.find(limit=1000)
    assert {r.kept for r in kept if r.source == "kiosk-bad"} == {"first", "sample"}
    assert [r.source for r in kept].count("till-1") == 1
    (unkept,) = store.dead_letters.unkept()
    assert (unkept.source, unkept.reason, unkept.occurrences) == ("kiosk-bad", "not_json", 360)
    assert unkept.bytes == 360 * 1008
    # Every rejection is counted, kept or not.
    assert store.status().dead_letters_by_reason == {"not_json": 401}
    assert store.status().dead_letters_unkept == 360
    # A redelivery of a kept letter counts on it, never against the budget.
    again = store.commit([], [flood[0]], "v1", 400)
    assert again.unkept == 0
    assert store.dead_letters.find(limit=1000)[-1].occurrences == 2
    assert _usage_is_exact(store)
    store.close()


def test_the_byte_bound_holds_across_devices(tmp_path: Path) -> None:
    budget = Budget(first=50, sample_every=1, max_bytes=30_000)
    store = Store.open(tmp_path / "a.db", budget=budget)
    # A device id per message (topics are not authenticated): the byte bound still holds.
    store.commit([], [_garbage(f"d{n}", n) for n in range(100)], "v1", 100)
    assert store.dead_letters.used_bytes() <= 30_000
    assert _usage_is_exact(store)
    assert len(store.dead_letters.find(limit=1000)) == 30_000 // (1008 + 3 + 256 + 24)
    # Expiry and erasure give the room back.
    store.expire(Cutoffs(events_before_ms=0, dead_letters_before_ms=10**15))
    assert store.dead_letters.used_bytes() == 0
    assert store.commit([], [_garbage("till-1", 1)], "v1", 200).unkept == 0
    store.close()


def test_an_hours_revision_only_grows_whatever_the_clock_or_a_restore_does(
    tmp_path: Path,
) -> None:
    def queue(store: Store, now_ms: int) -> int:
        with store.outbox.connection.atomic():
            store.outbox.replace_insight("insight:0", {"start_ms": 0, "hours": 1}, now_ms)
        ((revision,),) = store.db.execute("SELECT revision FROM outbox").fetchall()
        return int(revision)

    with Store.open(tmp_path / "edge.db") as store:
        first = queue(store, 1_800_000_000_000)
        assert first == 1_800_000_000_000
        # The clock set back a year: the revision still grows.
        assert queue(store, 1_768_000_000_000) == first + 1
        # A restore brings the counter back; the next cell climbs past what was sent since.
        store.db.execute("UPDATE sync_revision SET revision = 5")
        assert queue(store, 1_800_000_060_000) == 1_800_000_060_000
