"""The sender: drains the outbox to central over HTTPS (httpx), batch by batch.

A batch leaves the outbox only after a 2xx. A retryable failure (network, 408, 429, 5xx)
stops the run and sets when the next may start (exponential backoff with jitter, or central's
``Retry-After``); any other answer moves the batch to ``sync_dead_letters`` with the reason.
Identified items are re-checked against consent just before their batch is built.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import logging
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson

from edge_agent import logs
from edge_agent.config import Settings
from edge_agent.core.identity import Pseudonym, subject_hash
from edge_agent.core.sync import (
    PROTOCOL,
    Refused,
    Retry,
    Sent,
    backoff,
    batches,
    encode,
    judge,
    over_quota,
)
from edge_agent.errors import CollectorRejected, CollectorUnavailable, ConfigError
from edge_agent.store.database import Store
from edge_agent.store.outbox import Holder, Outbox, Row

logger = logging.getLogger(__name__)

_COLLECTOR_KINDS = ("erasure", "consent_withdrawn", "insight")
_NEXT_KEY = "sync_next_ms"
_ATTEMPT_KEY = "sync_attempt"
_LOSSES_KEY = "sync_losses_reported"


@dataclass
class SyncReport:
    """What one drain did."""

    sent: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    refused: int = 0
    withdrawn: int = 0
    dropped: int = 0
    retry_in_s: float | None = None
    problem: str | None = None
    skipped: str | None = None
    remaining: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready values."""
        return {
            "sent": self.sent,
            "batches_sent": self.batches,
            "refused": self.refused,
            "withdrawn_before_send": self.withdrawn,
            "dropped_over_quota": self.dropped,
            "retry_in_s": self.retry_in_s,
            "problem": self.problem,
            "skipped": self.skipped,
            "remaining": self.remaining,
        }


def client_for(settings: Settings) -> httpx.Client:
    """An HTTP client with the site's TLS trust and timeouts.

    Raises:
        ConfigError: the configured CA bundle does not exist.
    """
    bundle = settings.sync.ca_bundle
    if str(bundle) not in ("", "."):
        try:
            verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"[sync] ca_bundle {bundle} is not a readable PEM file of CA certificates: {exc}"
            ) from exc
    else:
        verify = True
    return httpx.Client(verify=verify, timeout=settings.sync.timeout_s)


def drain(
    settings: Settings,
    now_ms: int,
    client: httpx.Client,
    force: bool = False,
    rng: random.Random | None = None,
) -> SyncReport:
    """Send what the outbox holds, until it is empty or central asks to wait.

    Args:
        settings: the agent's settings (``[sync]``).
        now_ms: the current time.
        client: the HTTP client (see `client_for`).
        force: ignore a pending backoff (``edge-agent sync``).
        rng: jitter source.

    Raises:
        StorageError: the database cannot be read or written.
    """
    report = SyncReport()
    if not settings.sync.url:
        report.skipped = "no [sync] url configured"
        return report
    with Store.open(settings.database, settings.store.synchronous) as store:
        outbox = store.outbox
        state = store.state.all()
        waiting_until = int(state.get(_NEXT_KEY, ("0", 0))[0])
        # The quota holds while central is away too: it is checked on every run.
        _enforce_quota(outbox, settings, report)
        if not force and waiting_until > now_ms:
            report.skipped = f"backing off for {(waiting_until - now_ms) / 1000:.0f} s more"
        else:
            try:
                _send_notices_and_insights(outbox, settings, client, now_ms, report, store)
                _send_identified(outbox, settings, client, now_ms, report)
                # Losses since the last batch central took travel even with nothing else.
                if outbox.losses() != _reported_losses(store):
                    _send_notices_and_insights(
                        outbox, settings, client, now_ms, report, store, even_empty=True
                    )
            except CollectorUnavailable:
                attempt = int(state.get(_ATTEMPT_KEY, ("0", 0))[0]) + 1
                delay = report.retry_in_s
                if delay is None:
                    delay = backoff(
                        attempt,
                        settings.sync.backoff_min_s,
                        settings.sync.backoff_max_s,
                        rng or random.Random(),
                    )
                report.retry_in_s = round(delay, 3)
                store.state.set(_ATTEMPT_KEY, str(attempt), now_ms)
                store.state.set(_NEXT_KEY, str(now_ms + int(delay * 1000)), now_ms)
            else:
                store.state.set(_ATTEMPT_KEY, "0", now_ms)
                store.state.set(_NEXT_KEY, "0", now_ms)
        report.remaining = outbox.depth()
    return report


def _enforce_quota(outbox: Outbox, settings: Settings, report: SyncReport) -> None:
    dropped = over_quota(outbox.sizes(), settings.sync.outbox_quota_bytes)
    if dropped:
        outbox.drop(dropped, "dropped_quota")
        report.dropped += len(dropped)
        logs.log(
            logger,
            logging.WARNING,
            "outbox_over_quota",
            "the outbox is over [sync] outbox_quota_bytes: the oldest of the lowest class "
            "were dropped (counted in the loss ledger central receives)",
            dropped=len(dropped),
        )


def _send_notices_and_insights(
    outbox: Outbox,
    settings: Settings,
    client: httpx.Client,
    now_ms: int,
    report: SyncReport,
    store: Store,
    even_empty: bool = False,
) -> None:
    s = settings.sync
    url = f"{s.url.rstrip('/')}/v1/sync"
    while (rows := outbox.pending(_COLLECTOR_KINDS, s.batch_max_items)) or even_empty:
        even_empty = False
        if rows:
            rows = _first_batch(rows, settings)
        losses = outbox.losses()
        body = {
            "protocol": PROTOCOL,
            "site": settings.site.id,
            "venue": settings.site.venue or settings.site.id,
            # The newest item's time, not the clock: a retried batch is the same bytes.
            "sent_ms": max((r.created_ms for r in rows), default=0),
            "items": [_collector_item(r, settings.insights.k) for r in rows],
            "losses": losses,
        }
        try:
            _post(outbox, client, url, f"Bearer {s.token}", body, rows, now_ms, report)
        except CollectorRejected:
            # Already in the sync dead letters; its losses were not taken, so they go again.
            continue
        store.state.set(_LOSSES_KEY, orjson.dumps(losses).decode(), now_ms)


def _reported_losses(store: Store) -> dict[str, dict[str, int]]:
    reported: dict[str, dict[str, int]] = orjson.loads(
        store.state.all().get(_LOSSES_KEY, ("{}", 0))[0]
    )
    return reported


def _first_batch(rows: list[Row], settings: Settings) -> list[Row]:
    """The oldest rows that fit one batch (``[sync] batch_max_items`` and ``_bytes``)."""
    s = settings.sync
    return rows[: len(batches([r.size for r in rows], s.batch_max_items, s.batch_max_bytes)[0])]


def _collector_item(row: Row, k: int) -> dict[str, object]:
    if row.kind == "insight":
        return {
            "kind": "insight",
            "id": f"insight:{row.payload['start_ms']}:{row.created_ms}",
            "k": k,
            "computed_ms": row.created_ms,
            "cell": row.payload,
        }
    notice = {key: value for key, value in row.payload.items() if key != "type"}
    return {"kind": row.kind, "id": f"{row.kind}:{row.id}", **notice}


def _send_identified(
    outbox: Outbox, settings: Settings, client: httpx.Client, now_ms: int, report: SyncReport
) -> None:
    s = settings.sync
    url = f"{(s.segment_url or s.url).rstrip('/')}/v1/batch"
    # Segment-compatible endpoints take the write key as the Basic user name.
    authorization = (
        "Basic " + base64.b64encode(f"{s.segment_write_key}:".encode()).decode()
        if s.segment_url
        else f"Bearer {s.token}"
    )
    while rows := outbox.pending(("identified",), s.batch_max_items):
        # Consent is read again now: whoever withdrew or was erased since queueing is skipped.
        holders = outbox.holders(r.subject for r in rows if r.subject)
        withdrawn = [r.id for r in rows if r.subject not in holders]
        if withdrawn:
            outbox.settle(withdrawn, ("identified", "withdrawn"))
            report.withdrawn += len(withdrawn)
            continue
        rows = _first_batch(rows, settings)
        body = {
            "batch": [_segment_item(r, holders[str(r.subject)], settings.site.id) for r in rows],
            "sentAt": _iso(max(r.created_ms for r in rows)),
        }
        # A refused batch is already in the sync dead letters: the next one goes on.
        with contextlib.suppress(CollectorRejected):
            _post(outbox, client, url, authorization, body, rows, now_ms, report)


def _segment_item(row: Row, holder: Holder, site: str) -> dict[str, object]:
    item = {**row.payload, "userId": holder.user_id}
    if item.get("type") == "identify" and holder.traits:
        item["traits"] = holder.traits
    item["context"] = {
        "edge": {"site": site, "subject_hash": subject_hash(Pseudonym(str(row.subject)))}
    }
    return item


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _post(
    outbox: Outbox,
    client: httpx.Client,
    url: str,
    authorization: str,
    body: Mapping[str, object],
    rows: list[Row],
    now_ms: int,
    report: SyncReport,
) -> None:
    """Send one batch and settle its rows by the answer.

    Raises:
        CollectorUnavailable: central did not take it this time; the rows stay queued.
        CollectorRejected: central refused it for good; the rows are in the sync dead letters.
    """
    raw, key = encode(body)
    status: int | None = None
    try:
        response = client.post(
            url,
            content=gzip.compress(raw, compresslevel=6),
            headers={
                "Authorization": authorization,
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Idempotency-Key": key,
            },
        )
        status = response.status_code
        outcome = judge(
            status,
            response.headers.get("Retry-After"),
            response.text[:500],
            time.time(),
        )
    except httpx.HTTPError as exc:
        outcome = judge(None, None, f"{type(exc).__name__}: {exc}", time.time())
    ids = [r.id for r in rows]
    if isinstance(outcome, Sent):
        outbox.settle(ids)
        report.batches += 1
        for r in rows:
            report.sent[r.kind] = report.sent.get(r.kind, 0) + 1
        return
    if isinstance(outcome, Refused):
        outbox.dead_letter(
            url, status or 0, outcome.reason, ids, raw, now_ms, rows[0].kind if rows else "losses"
        )
        report.refused += len(ids)
        logs.log(
            logger,
            logging.ERROR,
            "sync_refused",
            f"central refused a batch for good; it is kept in sync_dead_letters: {outcome.reason}",
            url=url,
            items=len(ids),
        )
        raise CollectorRejected(outcome.reason, status or 0)
    assert isinstance(outcome, Retry)
    report.retry_in_s = outcome.after_s
    report.problem = outcome.reason
    logs.log(logger, logging.WARNING, "sync_retry", f"sync will retry: {outcome.reason}", url=url)
    raise CollectorUnavailable(outcome.reason)
