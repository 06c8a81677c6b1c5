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
from edge_agent.core.wireform import MAX_CHECKIN_PRODUCTS


@dataclass(frozen=True, slots=True)
class Answer:
    """What came of one check-in: None ``problem`` when central took it, central's clock
    minus the site's from its ``Date`` header (None: no readable header), and the products
    whose names central asks for in the next check-in."""

    problem: str | None
    clock_offset_s: float | None
    products_wanted: tuple[str, ...] = ()


def wanted(body: bytes) -> tuple[str, ...]:
    """The ``products_wanted`` of central's answer: ids it shows without a name. Anything
    else (an older central, a body not in that form) asks for none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    ids = document.get("products_wanted") if isinstance(document, dict) else None
    if not isinstance(ids, list):
        return ()
    # Product ids as events carry them (wireform.ID): 1-64 characters, no NUL.
    fitting = (i for i in ids[:MAX_CHECKIN_PRODUCTS] if isinstance(i, str) and 0 < len(i) <= 64)
    return tuple(dict.fromkeys(i for i in fitting if "\x00" not in i))


def post(settings: Settings, client: httpx.Client, document: Mapping[str, object]) -> Answer:
    """Send one check-in to ``[sync] url``; never raises for the network or central's answer."""
    s = settings.sync
    status: int | None = None
    offset = None
    products: tuple[str, ...] = ()
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
        if isinstance(outcome, Sent):
            products = wanted(response.content)
    except httpx.HTTPError as exc:
        outcome = judge(None, None, f"{type(exc).__name__}: {exc}", time.time())
    return Answer(None if isinstance(outcome, Sent) else outcome.reason, offset, products)
