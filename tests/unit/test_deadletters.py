"""What a dead letter keeps."""

from __future__ import annotations

import hashlib

import pytest

from edge_agent.core.deadletters import UNADDRESSED, Budget, dead_letter, keeps, source_of
from edge_agent.core.events import Inbound, Reason, Rejection


def test_raw_bytes_are_bounded_and_digested_whole() -> None:
    raw = b"x" * 1000
    letter = dead_letter(
        Inbound("sites/s/devices/d/events", raw, 5), Rejection(Reason.NOT_JSON, "no", raw), 100
    )
    assert letter.raw == raw[:100]
    assert letter.raw_size == 1000
    assert letter.truncated
    assert letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert letter.received_ms == 5


def test_the_same_bytes_on_the_same_topic_have_one_fingerprint() -> None:
    def key(topic: str, raw: bytes) -> str:
        return dead_letter(
            Inbound(topic, raw, 1), Rejection(Reason.NOT_JSON, "", raw), 10
        ).fingerprint

    assert key("sites/s/devices/a/events", b"x") == key("sites/s/devices/a/events", b"x")
    assert key("sites/s/devices/a/events", b"x") != key("sites/s/devices/b/events", b"x")
    assert key("sites/s/devices/a/events", b"x") != key("sites/s/devices/a/events", b"y")


def test_a_device_keeps_its_first_letters_then_samples_then_only_counts() -> None:
    budget = Budget(first=3, sample_every=4, max_bytes=10_000)
    kept = unkept = 0
    ways: list[str | None] = []
    for _ in range(40):
        way = keeps(budget, kept, unkept, used_bytes=0, cost=10)
        ways.append(way)
        if way is None:
            unkept += 1
        else:
            kept += 1
    assert ways[:3] == ["first"] * 3
    # Then one in `sample_every`, up to `first` more.
    assert [n for n, way in enumerate(ways) if way == "sample"] == [6, 10, 14]
    assert kept == 6
    assert unkept == 34


def test_nothing_is_kept_past_the_byte_bound() -> None:
    budget = Budget(first=100, sample_every=1, max_bytes=1000)
    assert keeps(budget, 0, 0, used_bytes=900, cost=100) == "first"
    assert keeps(budget, 0, 0, used_bytes=901, cost=100) is None


@pytest.mark.parametrize(
    ("topic", "source"),
    [
        ("sites/s/devices/kiosk-3/events", "kiosk-3"),
        ("sites/s/devices/kiosk-3/event", "kiosk-3"),  # a typo still names its device
        ("sites/s/devices//events", UNADDRESSED),
        ("Sites/s/devices/kiosk-3/events", UNADDRESSED),
        ("sites/s/devices/kiosk-3/events/extra", UNADDRESSED),
        ("", UNADDRESSED),
    ],
)
def test_a_letter_counts_against_the_device_its_topic_names(topic: str, source: str) -> None:
    assert source_of(topic) == source
