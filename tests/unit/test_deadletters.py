"""What a dead letter keeps."""

from __future__ import annotations

import hashlib

from edge_agent.core.deadletters import dead_letter
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
