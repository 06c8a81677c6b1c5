"""What a dead letter keeps of a rejected payload: bounded raw bytes, their digest, a key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from edge_agent.core.events import Inbound, Reason, Rejection


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejection ready to store.

    ``fingerprint`` identifies the same rejected bytes on the same topic, so a message the
    broker redelivers after a crash is counted again rather than stored twice.
    """

    fingerprint: str
    reason: Reason
    detail: str
    topic: str
    received_ms: int
    raw: bytes
    raw_size: int
    raw_sha256: str

    @property
    def truncated(self) -> bool:
        """Whether ``raw`` holds only the first part of what arrived."""
        return len(self.raw) < self.raw_size


def dead_letter(message: Inbound, rejection: Rejection, raw_limit: int) -> DeadLetter:
    """Turn a rejection of ``message`` into a dead letter keeping at most ``raw_limit`` bytes."""
    digest = hashlib.sha256(rejection.raw).hexdigest()
    topic = message.topic[:512]
    key = hashlib.sha256(topic.encode("utf-8", "replace") + b"\x00" + digest.encode()).hexdigest()
    return DeadLetter(
        fingerprint=key,
        reason=rejection.reason,
        detail=rejection.detail,
        topic=topic,
        received_ms=message.received_ms,
        raw=rejection.raw[:raw_limit],
        raw_size=len(rejection.raw),
        raw_sha256=digest,
    )
