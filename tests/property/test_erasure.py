"""Erasure reaches every dead letter that names the person, and nothing else: over random
letters of people whose ids contain one another's ("4", "42", "142"), timestamps and counts
full of the same digits, JSON (redacted at ingest, as the agent keeps it) and broken JSON (kept
as it came), whoever is erased; found through the index of who each letter names, and for
letters written before it, through their bytes."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.core.deadletters import dead_letter
from edge_agent.core.events import Inbound, Reason, Rejection
from edge_agent.core.identity import Identity, SiteKey, UserId, named_people, pseudonym, redact
from tests.helpers import migrated_store, topic

KEY = SiteKey(bytes(range(32)))
#: Ids that are substrings of one another, of the timestamps, and JSON's own punctuation.
PEOPLE = ["4", "42", "142", "member-42", '"', "2026", "a b"]
NOW_MS = 1_800_000_000_000


@dataclass(frozen=True)
class Letter:
    person: int | None  # who it names (index into PEOPLE); None: nobody
    json: bool  # parsable (redacted) or broken (kept as it came)
    count: int
    salt: int


letters = st.builds(
    Letter,
    person=st.one_of(st.none(), st.integers(0, len(PEOPLE) - 1)),
    json=st.booleans(),
    count=st.integers(0, 10**6),
    salt=st.integers(0, 10**9),
)


def _raw(letter: Letter) -> bytes:
    event: dict[str, object] = {
        "type": "track",
        "event": "Door Counted",
        "timestamp": "2026-04-21T14:42:42.142Z",
        "messageId": f"m-{letter.salt}-42",
        "properties": {"count": letter.count, "door": "42"},
    }
    if letter.person is not None:
        event["userId"] = PEOPLE[letter.person]
    text = orjson.dumps(event)
    # Broken JSON: the same text cut short, so nothing can parse it (and no redaction runs).
    return text if letter.json else text[:-1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(letters, min_size=1, max_size=25), st.integers(0, len(PEOPLE) - 1))
def test_an_erasure_removes_the_letters_naming_the_person_and_no_other(
    batch: list[Letter], erased: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = migrated_store(Path(folder) / "site.db")
        kept = []
        for n, letter in enumerate(batch):
            raw = redact(_raw(letter), KEY)
            rejection = Rejection(Reason.INVALID_PROPERTIES, "test", raw)
            people = named_people(raw, KEY)  # as ingest finds them
            kept.append(
                dead_letter(Inbound(topic(f"d-{n}"), raw, NOW_MS), rejection, 65536, people)
            )
        store.commit([], kept, "v1", NOW_MS)
        # Every other letter as one written before the people index: found by its bytes.
        store.db.execute("UPDATE dead_letters SET indexed = 0 WHERE id % 2 = 0")
        store.db.execute("DELETE FROM dead_letter_people WHERE letter_id % 2 = 0")
        person = PEOPLE[erased]
        identity = Identity(pseudonym(KEY, person), UserId(person), {})
        store.erase(identity, "test", NOW_MS)
        left = {row[0]: row[1] for row in store.db.execute("SELECT topic, raw FROM dead_letters")}
        store.close()
    for n, letter in enumerate(batch):
        names_erased = letter.person == erased
        assert (topic(f"d-{n}") in left) != names_erased, (letter, person)


def test_letters_from_before_the_index_are_indexed_and_found_by_it(tmp_path: Path) -> None:
    store = migrated_store(tmp_path / "site.db")
    letters = [Letter(person, json, 7, n) for n, (person, json) in enumerate(
        [(0, True), (1, False), (None, False), (2, True)]
    )]  # fmt: skip
    store.commit(
        [],
        [
            dead_letter(
                Inbound(topic(f"d-{n}"), redact(_raw(letter), KEY), NOW_MS),
                Rejection(Reason.INVALID_PROPERTIES, "test", redact(_raw(letter), KEY)),
                65536,
            )  # as an older release wrote them: nobody recorded
            for n, letter in enumerate(letters)
        ],
        "v1",
        NOW_MS,
    )
    store.db.execute("UPDATE dead_letters SET indexed = 0")
    assert store.dead_letters.index_people(lambda raw: named_people(raw, KEY), chunk=3) == 4
    named = store.db.execute("SELECT count(*) FROM dead_letter_people").fetchone()[0]
    assert named == 3
    for person in PEOPLE[:3]:
        store.erase(Identity(pseudonym(KEY, person), UserId(person), {}), "test", NOW_MS)
    assert [row[0] for row in store.db.execute("SELECT topic FROM dead_letters")] == [topic("d-2")]
    store.close()
