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
    #: The people it names (`edge_agent.core.identity.named_people`): what erasure finds it by.
    people: frozenset[str] = frozenset()

    @property
    def truncated(self) -> bool:
        """Whether ``raw`` holds only the first part of what arrived."""
        return len(self.raw) < self.raw_size


def dead_letter(
    message: Inbound,
    rejection: Rejection,
    raw_limit: int,
    people: frozenset[str] = frozenset(),
) -> DeadLetter:
    """Turn a rejection of ``message`` into a dead letter keeping at most ``raw_limit`` bytes;
    ``people``: the pseudonyms it names."""
    size, digest = len(rejection.raw), hashlib.sha256(rejection.raw).hexdigest()
    if message.whole_sha256 is not None:
        # The receiver kept only the head of what arrived (so only the whole message can be
        # rejected, never an event of it): say what arrived.
        size, digest = message.size, message.whole_sha256
    topic = message.topic[:512]
    key = hashlib.sha256(topic.encode("utf-8", "replace") + b"\x00" + digest.encode()).hexdigest()
    return DeadLetter(
        fingerprint=key,
        reason=rejection.reason,
        detail=rejection.detail,
        topic=topic,
        received_ms=message.received_ms,
        raw=rejection.raw[:raw_limit],
        raw_size=size,
        raw_sha256=digest,
        people=people,
    )


#: Dead letters from a topic that names no device share one budget under this source.
UNADDRESSED = "(no device)"


def source_of(topic: str) -> str:
    """Whose budget a dead letter counts against: the device its topic names, else one
    bucket for every misaddressed topic."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "sites" and parts[2] == "devices" and parts[3]:
        return parts[3][:128]
    return UNADDRESSED


@dataclass(frozen=True, slots=True)
class Budget:
    """What dead letters may take: a broken device must never fill the disk for the others.

    Per device and reason the first ``first`` are kept whole, then one in ``sample_every``
    up to ``first`` more; all together take at most ``max_bytes``. The rest are counted
    (per device and reason, with their bytes and the last digest), not kept.
    """

    first: int
    sample_every: int
    max_bytes: int


#: The ``[store]`` settings' defaults.
DEFAULT_BUDGET = Budget(first=50, sample_every=100, max_bytes=64 * 1024 * 1024)

#: What a kept row costs beyond its raw bytes and detail (columns, index entries).
ROW_OVERHEAD = 256


def letter_cost(letter: DeadLetter) -> int:
    """The bytes a dead letter takes against `Budget.max_bytes`."""
    return len(letter.raw) + len(letter.detail) + len(letter.topic) + ROW_OVERHEAD


def keeps(budget: Budget, kept: int, unkept: int, used_bytes: int, cost: int) -> str | None:
    """How a new dead letter is kept: ``"first"``, ``"sample"``, or None (counted only).

    ``kept`` and ``unkept``: its device's open letters and counted-only ones for its reason;
    ``used_bytes``: what every kept letter takes now.
    """
    if used_bytes + cost > budget.max_bytes:
        return None
    if kept < budget.first:
        return "first"
    past_first = kept + unkept - budget.first  # every letter counts as kept or unkept once
    if kept < 2 * budget.first and (past_first + 1) % budget.sample_every == 0:
        return "sample"
    return None
