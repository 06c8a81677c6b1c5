"""The sender: drains the outbox to central over HTTPS (httpx), batch by batch.

A batch leaves the outbox only after a 2xx. A retryable failure (network, 408, 429, 5xx)
stops the run and sets when the next may start (exponential backoff with jitter, or central's
``Retry-After``). Any other answer refuses the batch for good: it is halved until the item
central refuses is alone, and that item alone moves to ``sync_dead_letters`` with the reason
(notices excepted: they stay queued). Each item is checked against the form central takes
(`edge_agent.core.wireform`, `edge_agent.core.cellcheck`) before it leaves, and identified
items against consent just before their batch is built.
"""

from __future__ import annotations

import base64
import collections
import gzip
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson

from edge_agent import logs
from edge_agent.config import Settings
from edge_agent.core.aggregate import from_document
from edge_agent.core.cellcheck import CellLimits, bounds_problem, figures_problem
from edge_agent.core.identity import Pseudonym, subject_hash
from edge_agent.core.sync import (
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
)
from edge_agent.core.wireform import IDENTIFIED, INSIGHT, PROTOCOL, item_problem
from edge_agent.errors import CollectorUnavailable, ConfigError
from edge_agent.store.database import Store
from edge_agent.store.outbox import Holder, Outbox, Row

logger = logging.getLogger(__name__)

_NOTICE_KINDS = ("erasure", "consent_withdrawn")
_NEXT_KEY = "sync_next_ms"
_ATTEMPT_KEY = "sync_attempt"
_LOSSES_KEY = "sync_losses_reported"
#: ``agent_state``: when a sync run last ended with nothing left it could send.
LAST_OK_KEY = "sync_ok_ms"


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
    #: Central's clock minus the site's, in seconds, from its first answer (None: no answer).
    clock_offset_s: float | None = None
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
            "clock_offset_s": self.clock_offset_s,
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

    Notices (erasures, withdrawals) go first and on their own; then hour cells, then
    identified data. A batch central refuses is split until the item it refuses is alone:
    that item goes to the sync dead letters and the rest are sent. A notice is never dead-
    lettered: refused, it stays queued and is tried again on every run.

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
            run = _Run(settings, client, now_ms, report, store)
            try:
                run.notices()
                run.insights()
                run.identified()
                # Losses since the last batch central took travel even with nothing else.
                if outbox.losses() != _reported_losses(store):
                    run.deliver(run.sync_route(), [])
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
                # A check-in tells central when the sync last got through (or had nothing).
                store.state.set(LAST_OK_KEY, str(now_ms), now_ms)
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


@dataclass(frozen=True, slots=True)
class _Route:
    """Where a batch goes, and how its body is made from its rows."""

    url: str
    authorization: str
    body: Callable[[list[Row]], dict[str, object]]
    #: Called with the body once central took it.
    taken: Callable[[Mapping[str, object]], None]


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A batch central refused: its answer and the body, as kept in the dead letters."""

    reason: str
    status: int
    raw: bytes


class _Run:
    """One drain: the batches it builds, sends and settles."""

    def __init__(
        self,
        settings: Settings,
        client: httpx.Client,
        now_ms: int,
        report: SyncReport,
        store: Store,
    ) -> None:
        self.settings = settings
        self.client = client
        self.now_ms = now_ms
        self.report = report
        self.store = store
        self.outbox = store.outbox
        self.limits = CellLimits()
        # Notices central refused in this run: kept queued, not tried again until the next.
        self.held: set[int] = set()

    # --- what is sent -----------------------------------------------------------------------

    def sync_route(self) -> _Route:
        """``POST /v1/sync``: notices, hour cells and the loss ledger."""
        s = self.settings.sync
        return _Route(
            f"{s.url.rstrip('/')}/v1/sync", f"Bearer {s.token}", self._sync_body, self._taken
        )

    def _sync_body(self, rows: list[Row]) -> dict[str, object]:
        return {
            "protocol": PROTOCOL,
            "site": self.settings.site.id,
            "venue": self.settings.site.venue or self.settings.site.id,
            # The newest item's time, not the clock: a retried batch is the same bytes.
            "sent_ms": max((r.created_ms for r in rows), default=0),
            "items": [_collector_item(r, self.settings.insights.k) for r in rows],
            "losses": self.outbox.losses(),
        }

    def _taken(self, body: Mapping[str, object]) -> None:
        if "losses" in body:
            self.store.state.set(_LOSSES_KEY, orjson.dumps(body["losses"]).decode(), self.now_ms)

    def notices(self) -> None:
        """Send the erasure and withdrawal notices, in batches of their own."""
        route = self.sync_route()
        while rows := self.outbox.pending(_NOTICE_KINDS, self._limit(), self.held):
            rows = self._first_batch(rows)
            for row, why in self.deliver(route, rows):
                # Never dead-lettered: central must learn of every one. Held for this run
                # (the next ones still go), tried again on the next.
                self.held.add(row.id)
                self.report.problem = f"central refused a notice; it stays queued: {why.reason}"
                logs.log(
                    logger,
                    logging.ERROR,
                    "notice_refused",
                    "central refused an erasure or withdrawal notice; it stays in the outbox "
                    f"and is sent again on every sync until central takes it: {why.reason}",
                    kind=row.kind,
                    item=row.id,
                )

    def insights(self) -> None:
        """Send the hour cells."""
        route = self.sync_route()
        while rows := self.outbox.pending(("insight",), self._limit()):
            rows = self._first_batch(rows)
            if sendable := self._sendable(rows, route.url, self._insight_problem):
                self._dead_letter(route.url, self.deliver(route, sendable))

    def identified(self) -> None:
        """Send identified data, to central or the Segment-compatible destination."""
        s = self.settings.sync
        url = f"{(s.segment_url or s.url).rstrip('/')}/v1/batch"
        # Segment-compatible endpoints take the write key as the Basic user name.
        authorization = (
            "Basic " + base64.b64encode(f"{s.segment_write_key}:".encode()).decode()
            if s.segment_url
            else f"Bearer {s.token}"
        )
        while rows := self.outbox.pending(("identified",), self._limit()):
            # Consent is read again now: whoever withdrew or was erased since queueing is
            # skipped.
            holders = self.outbox.holders(r.subject for r in rows if r.subject)
            withdrawn = [r.id for r in rows if r.subject not in holders]
            if withdrawn:
                self.outbox.settle(withdrawn, ("identified", "withdrawn"))
                self.report.withdrawn += len(withdrawn)
                continue
            self._send_identified(rows, holders, url, authorization)

    def _send_identified(
        self, rows: list[Row], holders: Mapping[str, Holder], url: str, authorization: str
    ) -> None:
        site = self.settings.site.id
        items = {r.id: _segment_item(r, holders[str(r.subject)], site) for r in rows}

        def body(part: list[Row]) -> dict[str, object]:
            return {
                "batch": [items[r.id] for r in part],
                "sentAt": _iso(max(r.created_ms for r in part)),
            }

        route = _Route(url, authorization, body, lambda _: None)
        rows = self._first_batch(rows)
        if sendable := self._sendable(rows, url, lambda r: item_problem(IDENTIFIED, items[r.id])):
            self._dead_letter(url, self.deliver(route, sendable))

    def _limit(self) -> int:
        return self.settings.sync.batch_max_items

    def _first_batch(self, rows: list[Row]) -> list[Row]:
        """The oldest rows that fit one batch (``[sync] batch_max_items`` and ``_bytes``)."""
        s = self.settings.sync
        if not rows:
            return rows
        return rows[: len(batches([r.size for r in rows], s.batch_max_items, s.batch_max_bytes)[0])]

    def _insight_problem(self, row: Row) -> str | None:
        item = _collector_item(row, self.settings.insights.k)
        if problem := item_problem(INSIGHT, item):
            return problem
        if row.payload.get("suppressed"):
            return None
        if problem := bounds_problem(row.payload, self.limits):
            return f"item.cell.{problem}"
        try:
            problem = figures_problem(from_document(row.payload), self.limits)
        except ValueError as exc:
            problem = str(exc)
        return None if problem is None else f"item.cell.{problem}"

    def _sendable(
        self, rows: list[Row], url: str, problem: Callable[[Row], str | None]
    ) -> list[Row]:
        """The rows central would take for their form; the others are dead-lettered here,
        each alone, with the reason central would have given."""
        out = []
        for row in rows:
            why = problem(row)
            if why is None:
                out.append(row)
                continue
            self.outbox.dead_letter(
                url,
                0,
                f"not sent: central would refuse it ({why})",
                [row.id],
                orjson.dumps(row.payload),
                self.now_ms,
                row.kind,
                loss="unsendable",
            )
            self.report.refused += 1
            logs.log(
                logger,
                logging.ERROR,
                "sync_unsendable",
                f"an outbox item is not in a form central takes; kept in sync_dead_letters: {why}",
                kind=row.kind,
                item=row.id,
            )
        return out

    def _dead_letter(self, url: str, refused: list[tuple[Row, _Refusal]]) -> None:
        for row, why in refused:
            self.outbox.dead_letter(
                url, why.status, why.reason, [row.id], why.raw, self.now_ms, row.kind
            )
            self.report.refused += 1
            logs.log(
                logger,
                logging.ERROR,
                "sync_refused",
                "central refused an item for good; it is kept in sync_dead_letters and the "
                f"rest of its batch was sent: {why.reason}",
                url=url,
                kind=row.kind,
            )

    # --- how it is sent ---------------------------------------------------------------------

    def deliver(self, route: _Route, rows: list[Row]) -> list[tuple[Row, _Refusal]]:
        """Send ``rows`` to ``route``; a refused batch is halved until each refused item is
        alone. Returns the items refused alone (the others are settled).

        Raises:
            CollectorUnavailable: central did not answer or asked to wait; what was not
                taken stays queued.
        """
        refused: list[tuple[Row, _Refusal]] = []
        parts = collections.deque([rows])
        while parts:
            part = parts.popleft()
            why = self._post(route, part)
            if why is None:
                continue
            if len(part) > 1:
                first, second = halves(part)
                parts.extendleft((second, first))
            elif part:
                refused.append((part[0], why))
            else:
                # The loss ledger alone: kept so the refusal can be read; sent again next run.
                self.outbox.dead_letter(
                    route.url, why.status, why.reason, [], why.raw, self.now_ms, "losses"
                )
        return refused

    def _read_clock(self, date: str | None) -> None:
        offset = clock_offset_s(date, time.time())
        if offset is None or self.report.clock_offset_s is not None:
            return
        self.report.clock_offset_s = round(offset)
        if warning := clock_warning(offset):
            self.report.problem = warning
            logs.log(logger, logging.WARNING, "site_clock_off", warning, offset_s=round(offset))

    def _post(self, route: _Route, rows: list[Row]) -> _Refusal | None:
        """Send one batch; settle its rows when central took it. Returns the refusal when
        central refused it for good.

        Raises:
            CollectorUnavailable: central did not take it this time; the rows stay queued.
        """
        body = route.body(rows)
        raw, key = encode(body)
        status: int | None = None
        try:
            response = self.client.post(
                route.url,
                content=gzip.compress(raw, compresslevel=6),
                headers={
                    "Authorization": route.authorization,
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                    "Idempotency-Key": key,
                },
            )
            status = response.status_code
            self._read_clock(response.headers.get("Date"))
            outcome = judge(
                status, response.headers.get("Retry-After"), response.text[:500], time.time()
            )
        except httpx.HTTPError as exc:
            outcome = judge(None, None, f"{type(exc).__name__}: {exc}", time.time())
        if isinstance(outcome, Sent):
            self.outbox.settle([r.id for r in rows])
            route.taken(body)
            self.report.batches += 1
            for r in rows:
                self.report.sent[r.kind] = self.report.sent.get(r.kind, 0) + 1
            return None
        if isinstance(outcome, Refused):
            return _Refusal(outcome.reason, status or 0, raw)
        assert isinstance(outcome, Retry)
        self.report.retry_in_s = outcome.after_s
        self.report.problem = outcome.reason
        logs.log(
            logger,
            logging.WARNING,
            "sync_retry",
            f"sync will retry: {outcome.reason}",
            url=route.url,
        )
        raise CollectorUnavailable(outcome.reason)


def _reported_losses(store: Store) -> dict[str, dict[str, int]]:
    reported: dict[str, dict[str, int]] = orjson.loads(
        store.state.all().get(_LOSSES_KEY, ("{}", 0))[0]
    )
    return reported


def _collector_item(row: Row, k: int) -> dict[str, object]:
    if row.kind == "insight":
        item: dict[str, object] = {
            "kind": "insight",
            "id": f"insight:{row.payload['start_ms']}:{row.revision or row.created_ms}",
            "k": k,
            "computed_ms": row.created_ms,
            "cell": row.payload,
        }
        if row.revision is not None:
            item["revision"] = row.revision
        return item
    notice = {key: value for key, value in row.payload.items() if key != "type"}
    return {"kind": row.kind, "id": f"{row.kind}:{row.id}", **notice}


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
