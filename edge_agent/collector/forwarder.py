"""Forwarding what central holds of consenting people to the CRM destinations, in the
background (docs/crm-forwarding.md).

The collector's serve process runs `worker`: every few seconds, for each enabled
destination, it claims the due rows of its queue (`store.forwarding`), sends identified
items as Segment ``POST /v1/batch`` and notices as ``POST /v1/edge/notices``, and settles
each row. The answer is read as the agent reads central's (`edge_agent.core.sync.judge`):
2xx delivered; no answer, 408, 429 or 5xx retried after an exponential backoff with jitter
(or the destination's ``Retry-After``); any other status refuses the rows for good: a
refused batch is halved until the rows refused are alone, and those alone are dead, with
the reason. Each item keeps its ``messageId``, so a batch sent again after a lost answer is
deduplicated by the destination.
"""

from __future__ import annotations

import base64
import collections
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson

from edge_agent import logs
from edge_agent.collector.background import Worker
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import now_ms
from edge_agent.collector.store.forwarding import IDENTIFIED, Destination, Due
from edge_agent.core.sync import Refused, Retry, Sent, backoff, batches, encode, halves, judge

log = logging.getLogger(__name__)

#: Rows claimed per destination and kind in one go; Segment takes up to 500 KB per batch.
BATCH_ITEMS = 100
BATCH_BYTES = 500_000
#: Seconds a destination has to answer one request.
TIMEOUT_S = 10.0
#: How long claimed rows are left to this forwarder before another may take them (its
#: process died mid-send): more than a pass's requests can take.
LEASE_MS = 120_000
NOTICE_KINDS = ("erasure", "consent_withdrawn")
NOTICES_PATH = "/v1/edge/notices"
#: Makes a request body of rows.
_Body = Callable[[Sequence[Due]], dict[str, object]]


@dataclass(frozen=True, slots=True)
class Pacing:
    """How often to look, and how long to wait before trying a failing destination again."""

    every_s: float = 5.0
    backoff_min_s: float = 2.0
    backoff_max_s: float = 900.0


@dataclass
class Pass:
    """What one pass did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0

    @property
    def busy(self) -> bool:
        """Whether it delivered anything: more may be due at once."""
        return self.delivered > 0


def segment_body(rows: Sequence[Due]) -> dict[str, object]:
    """The Segment ``/v1/batch`` body of identified rows: each item as the site sent it
    (its ``messageId`` too); ``sentAt`` is the newest row's queueing time, so a retried
    batch is the same bytes."""
    return {
        "batch": [orjson.loads(r.body) for r in rows],
        "sentAt": _iso(max(r.queued_ms for r in rows)),
    }


def notices_body(rows: Sequence[Due]) -> dict[str, object]:
    """The ``/v1/edge/notices`` body: each erasure or withdrawal, naming the person by the
    user ids central held of them and by the subject hash their items carried
    (``context.edge.subject_hash``)."""
    notices = []
    for r in rows:
        notice = orjson.loads(r.body)
        notices.append(
            {
                "type": r.kind,
                "messageId": f"{r.site}:{r.message_id}",
                "site": r.site,
                "subjectHash": r.subject_hash,
                "userIds": notice["user_ids"],
                "purpose": notice["purpose"],
                "requestedAt": _iso(int(notice["requested_ms"])),
            }
        )
    return {"notices": notices, "sentAt": _iso(max(r.queued_ms for r in rows))}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def forward(
    store: CentralStore,
    client: httpx.Client,
    now: int,
    rng: random.Random,
    pacing: Pacing = Pacing(),
) -> Pass:
    """One pass over every enabled destination: its due items, then its due notices (a
    notice follows what it is about).

    Raises:
        Unavailable: the database is busy or unreachable.
    """
    done = Pass()
    for destination in store.destinations(enabled_only=True):
        _Sender(store, client, destination, now, rng, pacing, done).run()
    return done


class _Sender:
    """One destination's pass."""

    def __init__(
        self,
        store: CentralStore,
        client: httpx.Client,
        destination: Destination,
        now: int,
        rng: random.Random,
        pacing: Pacing,
        done: Pass,
    ) -> None:
        self.store = store
        self.client = client
        self.destination = destination
        self.now = now
        self.rng = rng
        self.pacing = pacing
        self.done = done
        self.authorization = (
            "Basic " + base64.b64encode(f"{destination.write_key}:".encode()).decode()
        )

    def run(self) -> None:
        base = self.destination.url.rstrip("/")
        for kinds, url, body in (
            ((IDENTIFIED,), f"{base}/v1/batch", segment_body),
            (NOTICE_KINDS, f"{base}{NOTICES_PATH}", notices_body),
        ):
            rows = self.store.claim_due(
                self.destination.name, kinds, BATCH_ITEMS, self.now, LEASE_MS
            )
            parts = [
                [rows[i] for i in run]
                for run in batches([len(r.body) for r in rows], BATCH_ITEMS, BATCH_BYTES)
            ]
            for index, part in enumerate(parts):
                if not self._deliver(url, body, part):
                    # The destination is failing: the rest waits as long as this part.
                    rest = [r.id for p in parts[index + 1 :] for r in p]
                    self.store.release(rest, self._next_ms(part, None))
                    return

    def _deliver(self, url: str, body: _Body, rows: list[Due]) -> bool:
        """Send ``rows``, halving a refused batch until the refused rows are alone (they are
        set aside as dead). Returns False when the destination asked to wait (the rows not
        sent are scheduled again)."""
        parts = collections.deque([rows])
        while parts:
            part = parts.popleft()
            outcome = self._post(url, body(part))
            if isinstance(outcome, Sent):
                self.store.delivered([r.id for r in part], now_ms())
                self.done.delivered += len(part)
            elif isinstance(outcome, Retry):
                waiting = part + [r for p in parts for r in p]
                self.store.retry_later(
                    [r.id for r in waiting], self._next_ms(part, outcome.after_s), outcome.reason
                )
                self.done.retried += len(waiting)
                logs.log(
                    log,
                    logging.WARNING,
                    "forward_retry",
                    f"destination {self.destination.name} will be tried again: {outcome.reason}",
                    destination=self.destination.name,
                    rows=len(waiting),
                )
                return False
            elif len(part) > 1:
                first, second = halves(part)
                parts.extendleft((second, first))
            else:
                self.store.dead([part[0].id], now_ms(), outcome.reason)
                self.done.dead += 1
                logs.log(
                    log,
                    logging.ERROR,
                    "forward_refused",
                    f"destination {self.destination.name} refused a {part[0].kind} row for "
                    f"good; it is kept as dead in its queue: {outcome.reason}",
                    destination=self.destination.name,
                    message_id=part[0].message_id,
                )
        return True

    def _post(self, url: str, body: dict[str, object]) -> Sent | Retry | Refused:
        raw, key = encode(body)
        try:
            response = self.client.post(
                url,
                content=raw,
                headers={
                    "Authorization": self.authorization,
                    "Content-Type": "application/json",
                    "Idempotency-Key": key,
                },
            )
        except httpx.HTTPError as exc:
            return judge(None, None, f"{type(exc).__name__}: {exc}", time.time())
        detail = response.text[:500]
        if response.status_code in (401, 403):
            # The write key, not the items: they wait (with backoff) for the key to be put
            # right rather than being set aside one batch after another.
            return Retry(
                None,
                f"HTTP {response.status_code}: the destination refuses the write key; check it "
                f"(edge-agent-collector destinations set-key; queued items wait): {detail}",
            )
        return judge(response.status_code, response.headers.get("Retry-After"), detail, time.time())

    def _next_ms(self, rows: Sequence[Due], after_s: float | None) -> int:
        if after_s is None:
            attempt = max(r.attempts for r in rows) + 1
            after_s = backoff(
                attempt, self.pacing.backoff_min_s, self.pacing.backoff_max_s, self.rng
            )
        return self.now + int(after_s * 1000)


def worker(store: CentralStore, pacing: Pacing = Pacing()) -> tuple[Worker, httpx.Client]:
    """The serve process's forwarding thread, and its HTTP client (close it after the
    thread stops). A busy pass goes on at once."""
    client = httpx.Client(timeout=TIMEOUT_S)
    rng = random.Random()

    def one_pass() -> bool:
        return forward(store, client, now_ms(), rng, pacing).busy

    return Worker("forwarding to the CRM", one_pass, pacing.every_s), client
