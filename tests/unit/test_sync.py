"""The outbox's pure rules: quota and priorities, batching, answers, backoff."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.core.sync import (
    NEVER_DROPPED,
    PRIORITY,
    Item,
    Refused,
    Retry,
    Sent,
    backoff,
    batches,
    clock_offset_s,
    clock_warning,
    encode,
    halves,
    judge,
    over_quota,
    parse_retry_after,
    site_offset,
)

items = st.lists(
    st.builds(
        Item,
        id=st.integers(1, 10**6),
        kind=st.sampled_from(sorted(PRIORITY)),
        size=st.integers(1, 5000),
        created_ms=st.integers(0, 10**6),
    ),
    max_size=60,
    unique_by=lambda i: i.id,
)


@given(items, st.integers(0, 100_000))
def test_over_quota_drops_the_lowest_class_oldest_first_and_never_a_notice(
    queued: list[Item], quota: int
) -> None:
    dropped = over_quota(queued, quota)
    assert not any(i.kind in NEVER_DROPPED for i in dropped)
    kept = [i for i in queued if i not in dropped]
    droppable_kept = [i for i in kept if i.kind not in NEVER_DROPPED]
    # Fits the quota, unless only notices are left.
    assert sum(i.size for i in kept) <= quota or not droppable_kept
    # Nothing more is dropped than needed: without the last one dropped, it would not fit.
    if dropped:
        assert sum(i.size for i in kept) + dropped[-1].size > quota

    # What is dropped comes first in drop order (lowest class, then oldest) before anything kept.
    def rank(i: Item) -> tuple[int, int, int]:
        return (-PRIORITY[i.kind], i.created_ms, i.id)

    if dropped and droppable_kept:
        assert max(map(rank, dropped)) < min(map(rank, droppable_kept))


@given(st.lists(st.integers(1, 3000), max_size=80), st.integers(1, 20), st.integers(1, 10_000))
def test_batches_cover_everything_in_order_within_limits(
    sizes: list[int], max_items: int, max_bytes: int
) -> None:
    runs = batches(sizes, max_items, max_bytes)
    assert [i for run in runs for i in run] == list(range(len(sizes)))
    for run in runs:
        assert 1 <= len(run) <= max_items
        assert len(run) == 1 or sum(sizes[i] for i in run) <= max_bytes


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Sent),
        (202, Sent),
        (408, Retry),
        (429, Retry),
        (500, Retry),
        (503, Retry),
        (None, Retry),
        (400, Refused),
        (401, Retry),
        (403, Retry),
        (409, Refused),
        (413, Refused),
        (422, Refused),
    ],
)
def test_what_an_answer_means(status: int | None, expected: type) -> None:
    assert isinstance(judge(status, None, "detail", 0.0), expected)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert judge(429, "7", "", 0.0) == Retry(7.0, "HTTP 429: ")
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


@given(st.integers(1, 100), st.floats(0.01, 10), st.floats(10, 1000), st.randoms())
def test_backoff_grows_and_stays_under_its_cap(
    attempt: int, base: float, cap: float, rng: random.Random
) -> None:
    delay = backoff(attempt, base, cap, rng)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


def test_a_retried_body_has_the_same_key_and_another_body_another() -> None:
    body = {"site": "s", "items": [1, 2]}
    assert encode(body) == encode(dict(reversed(body.items())))
    assert encode(body)[1] != encode({**body, "items": [1]})[1]


@given(st.text(min_size=1, max_size=64), st.integers(10, 86400))
def test_sites_spread_over_the_period(site: str, every_s: int) -> None:
    assert 0 <= site_offset(site, every_s) < every_s


@given(st.lists(st.integers(), min_size=2, max_size=200))
def test_halving_keeps_every_item_once_in_order_and_always_shrinks(items: list[int]) -> None:
    first, second = halves(items)
    assert first + second == items
    assert first
    assert second
    # Halving again and again isolates one item in log2(n) rounds.
    assert len(first) <= (len(items) + 1) // 2


def test_the_site_clock_is_judged_by_centrals_date_header() -> None:
    now = 1_800_000_000.0
    an_hour_on = email.utils.formatdate(now + 3600, usegmt=True)
    assert clock_offset_s(an_hour_on, now) == pytest.approx(3600)
    assert clock_offset_s(None, now) is None
    assert clock_offset_s("yesterday", now) is None
    assert clock_warning(120) is None
    assert "3600 s behind central's" in str(clock_warning(3600))
    assert "ahead of central's" in str(clock_warning(-400 * 86400))
