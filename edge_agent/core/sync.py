"""What the outbox sends, in which batches, what it drops when full, and what an answer means.

Pure: the sender (`edge_agent.sync.client`) reads the outbox, asks these functions, and does
the I/O. The wire format is docs/sync-protocol.md.
"""

from __future__ import annotations

import email.utils
import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import orjson

#: Outbox kinds by priority when the outbox is over its quota: a lower number is kept longer.
#: Notices are never dropped: central must learn of every withdrawal and erasure.
PRIORITY: Mapping[str, int] = {
    "erasure": 0,
    "consent_withdrawn": 0,
    "identified": 1,
    "insight": 2,
}
T = TypeVar("T")
NEVER_DROPPED = frozenset(k for k, p in PRIORITY.items() if p == 0)


@dataclass(frozen=True, slots=True)
class Item:
    """One outbox row: its id, kind, size in bytes and age."""

    id: int
    kind: str
    size: int
    created_ms: int


def over_quota(items: Iterable[Item], quota_bytes: int) -> list[Item]:
    """The items to drop so the outbox fits ``quota_bytes``: oldest first within the lowest
    class (insights, then identified data); notices are never chosen, even over quota."""
    items = list(items)
    excess = sum(i.size for i in items) - quota_bytes
    dropped: list[Item] = []
    if excess <= 0:
        return dropped
    candidates = sorted(
        (i for i in items if i.kind not in NEVER_DROPPED),
        key=lambda i: (-PRIORITY[i.kind], i.created_ms, i.id),
    )
    for item in candidates:
        if excess <= 0:
            break
        dropped.append(item)
        excess -= item.size
    return dropped


def batches(sizes: Sequence[int], max_items: int, max_bytes: int) -> list[range]:
    """Consecutive runs of items (as index ranges) of at most ``max_items`` items and
    ``max_bytes`` bytes each; an item larger than ``max_bytes`` travels alone."""
    out: list[range] = []
    start, used = 0, 0
    for index, size in enumerate(sizes):
        count = index - start
        if count and (count >= max_items or used + size > max_bytes):
            out.append(range(start, index))
            start, used = index, 0
        used += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def halves(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """A refused batch split in two, oldest half first: halving again and again finds the
    item central refuses in log2(n) requests, and the rest is sent on the way."""
    middle = (len(items) + 1) // 2
    return list(items[:middle]), list(items[middle:])


def encode(body: Mapping[str, object]) -> tuple[bytes, str]:
    """A request body as sent (canonical JSON) and its ``Idempotency-Key``.

    The key is the sha256 of the body, so a retried batch carries the same key and central
    stores it once, while a different batch can never collide with it.
    """
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return raw, hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class Sent:
    """Central stored the batch: its items may leave the outbox."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again later, not before ``after_s`` seconds (central's ``Retry-After`` if it gave
    one); the items stay."""

    after_s: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Central will never accept this batch as it is: it goes to the sync dead letters."""

    reason: str


Outcome = Sent | Retry | Refused


def judge(status: int | None, retry_after: str | None, detail: str, now_s: float) -> Outcome:
    """What an answer (or no answer: ``status`` None) means for the batch.

    2xx: stored. 408, 429, 5xx and network errors: retry. 401 and 403 say the site's token or
    id is not what central knows: a set-up problem, so the items wait (with backoff) for it to
    be fixed rather than being refused one batch after another. Any other status: refused.
    """
    if status is None:
        return Retry(None, f"no answer: {detail}")
    if 200 <= status < 300:
        return Sent()
    if status in (401, 403):
        return Retry(
            None,
            f"HTTP {status}: central does not accept this site's credentials; check [site] id "
            f"and [sync] token against the collector ({detail})",
        )
    if status in (408, 429) or status >= 500:
        return Retry(parse_retry_after(retry_after, now_s), f"HTTP {status}: {detail}")
    return Refused(f"HTTP {status}: {detail}")


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None
    when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


#: How far the site's clock may be from central's before a sync says so.
CLOCK_WARNING_S = 300


def clock_offset_s(date: str | None, now_s: float) -> float | None:
    """How far central's clock (an answer's ``Date`` header) is ahead of ours, in seconds;
    None without a readable header. Exact to a second or so: the header has no fraction."""
    if not date:
        return None
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now_s


def clock_warning(offset_s: float) -> str | None:
    """What to tell the installer when the site's clock is off central's by more than
    `CLOCK_WARNING_S`, or None."""
    if abs(offset_s) <= CLOCK_WARNING_S:
        return None
    way = "behind" if offset_s > 0 else "ahead of"
    return (
        f"the site's clock is {abs(offset_s):.0f} s {way} central's: set it right (NTP); "
        "central refuses hours and orders timed ahead of its clock"
    )


def backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): exponential with full jitter, so
    a fleet that lost central at once does not come back at once."""
    ceiling = min(cap_s, base_s * 2 ** min(attempt - 1, 30))
    return rng.uniform(ceiling / 2, ceiling)


def site_offset(site: str, every_s: int) -> float:
    """A fixed delay in ``[0, every_s)`` for the first sync of ``site``: sites of a fleet
    spread over the period instead of arriving together."""
    digest = hashlib.sha256(site.encode()).digest()
    return int.from_bytes(digest[:8], "big") % (every_s * 1000) / 1000
