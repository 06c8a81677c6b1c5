"""``POST /v1/checkin``: the site's health report to central, over the sync's HTTP client.

Tiny and on its own: no outbox, no idempotency key, no backoff. A check-in that fails is
simply replaced by the next one a period later.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import orjson

from edge_agent.config import Settings
from edge_agent.core.sync import Sent, clock_offset_s, judge


@dataclass(frozen=True, slots=True)
class Answer:
    """What came of one check-in: None ``problem`` when central took it, and central's
    clock minus the site's from its ``Date`` header (None: no readable header)."""

    problem: str | None
    clock_offset_s: float | None


def post(settings: Settings, client: httpx.Client, document: Mapping[str, object]) -> Answer:
    """Send one check-in to ``[sync] url``; never raises for the network or central's answer."""
    s = settings.sync
    status: int | None = None
    offset = None
    try:
        response = client.post(
            f"{s.url.rstrip('/')}/v1/checkin",
            content=orjson.dumps(document),
            headers={"Authorization": f"Bearer {s.token}", "Content-Type": "application/json"},
        )
        status = response.status_code
        offset = clock_offset_s(response.headers.get("Date"), time.time())
        outcome = judge(
            status, response.headers.get("Retry-After"), response.text[:500], time.time()
        )
    except httpx.HTTPError as exc:
        outcome = judge(None, None, f"{type(exc).__name__}: {exc}", time.time())
    return Answer(None if isinstance(outcome, Sent) else outcome.reason, offset)
