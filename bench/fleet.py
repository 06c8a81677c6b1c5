"""Benchmark: a fleet of sites syncing to central as agents do, on PostgreSQL with N workers
and on SQLite with one (the reference); then the dashboard's and the summary's reads over
1,000 sites x 90 days.

Run: ``python -m bench.fleet [--sites 10000] [--workers 2] [--engine both|postgresql|sqlite]``
(some 10 minutes on 2 cores, most of it the catch-up's 12,500 batches and the exports;
``--engine postgresql`` halves it, ``--sites 200 --steady-s 20 --read-sites 100`` is a quick
look). Progress goes to stderr,
the tables to stdout at the end.

The fleet (``--sites`` 10000, ``--shop-share`` 0.8, ``--identified-share`` 0.25, ``--seed`` 3):
    a share of the sites are shops, one agent each and its own venue; the rest are the agents
    of venues of 2 to 4 agents (one site id per agent, the venue's id shared), shuffled so
    every slice of the fleet has the same mix. ``--identified-share`` of the sites also send
    identified items (``/v1/batch``): each period 0-4 loyalty visits, an ``identify`` and an
    ``Order Completed`` each, of 200 members per site.
Hour cells (``--cell-pool`` 300): made with the real aggregation code (`compute_hour`, then
    `for_central` at k = 5) from a simulated hour of events of the agent's kind, once, shared
    out between the kinds as the sites are; each hour a site sends is one of them with its
    ``start_ms`` set (real sketches for 10,000 sites x hours would take longer than the run).
    Shops: 15-120 visits an hour through 1-3 of 6 zones (30-600 s each), 55 % order 1-6 of
    400 products, 3 % answer CES, 15 % identified: ~7.7 KB a cell. Venues: 150-600 visits an
    agent-hour through 2-5 of 12 zones (120-1,800 s), 6 % order 1-3 of 60 products, 5 %
    answer NPS, 30 % identified (badges): ~28 KB. A tenth of the hours are quiet (1-4
    visits) and leave the site as suppressed markers.
How an agent syncs (``--period-s`` 900, ``--jitter-s`` 60; the agent's ``[sync]`` defaults
    otherwise): its runs start at the agent's own per-site offset (`site_offset`), then come
    every period plus 0-jitter seconds, as apscheduler adds it. Each run queues one hour cell
    (the hour closed since the last run, else that hour again with the next revision, as
    recomputed after late events: the issue counts a batch per run, the busiest case of what a
    run carries) and the period's identified items; the outbox keeps one unsent cell per hour,
    as the agent's does. A run drains as `edge_agent.sync.client.drain` does: hour cells, then
    identified items, in batches of at most ``batch_max_items`` (500) items and
    ``batch_max_bytes`` (1 MB), canonical JSON gzipped, ``Idempotency-Key`` its sha256
    (`encode`). Each answer is judged by the agent's `judge`: 2xx stored; 408, 429, 5xx and no
    answer (a refused connection, the agent's 30 s timeout) end the run and set the next try
    after ``Retry-After`` or the agent's `backoff` (2 s doubling, jitter, 900 s cap); any other
    answer is an error, which must stay 0. Retries and errors are counted by status, or by
    httpx's exception when there was no answer (``ConnectError``: refused; ``ReadTimeout``).
Phases, on each engine, against a fresh database and the collector as its own process:
    warm-up: ``--warm-up-s`` (5) of load at the fastest speed, not counted (a collector's
    first requests load what it loads once).
    steady: for each ``--speedup`` factor (1,10), ``--steady-s`` (30) of real time with the
    simulated clock that many times faster (10,000 sites are 11 runs/s at 1, 111 at 10); each
    site keeps its schedule and skips a run while it backs off, as the agent does. Printed:
    requests sent per second, batches stored per second (until the last answer), p50/p99 per
    request, errors, retries by answer, and how late the generator sent at worst (it must
    keep up for the figures to be the collector's).
    catch-up: central is stopped for ``--outage-s`` (3600) of simulated time; each of the
    hour's runs (4) queues its period and tries: the first connects and is refused, the
    others are counted refused without a socket (httpx takes ~2.5 ms of CPU to be refused).
    Central starts again and every site sends what it holds at once, through
    ``--burst-connections`` (64) connections at a time (a proxy's upstream pool holds a herd
    so), trying again as soon as its backoff or ``Retry-After`` allows (a real agent also
    waits for its next run: the bench keeps the herd on central, the hardest case), giving up
    after ``--burst-timeout-s`` (900). Printed: time to absorb (until every site's backlog is
    stored), batches/s, p50/p99, errors, sites left with a backlog, retries.
    size and memory: the database's growth over its size with only the sites registered
    (PostgreSQL: pg_database_size; SQLite: the file and its WAL), per hour cell stored and per
    site-day (24 cells, with the identified rows, keys and ids that came with them); the peak
    RSS (VmHWM) of the largest serving worker and of all the collector's processes; the
    collector's own warnings and errors (its log), by event.
Reads (``--read-sites`` 1000, ``--days`` 90, ``--cell-days`` 1, ``--reads`` 20,
    ``--read-budget-s`` 60): a fresh database of ``--read-sites`` sites of the same mix, each
    holding one day (yesterday, UTC) of 24 hour cells, stored through the collector's own
    parse and store (no HTTP: these figures are the reads'); the collector rolls them up (the
    bench waits for its queues to empty), and the bench copies, in SQL, the rolled-up days
    (``site_days``, ``venue_days``: whatever columns they have) to the ``--days - 1`` days
    before, and the hour cells of one venue to all of them and every site's to the last
    ``--cell-days`` (1,000 sites x 90 days of hour cells would be ~25 GB per engine), then
    has the tables analysed, as autovacuum would have over 90 real days. Timed: ``GET
    /v1/overview``, ``/v1/comparison``, ``/v1/trend?by=day`` over the days,
    ``/v1/insights?by=day`` over them for the largest venue and for every site (a 422: past
    the summary's 20,000 rows, timed to show a refusal costs a count, not the rows), and the
    wide export of every site's days (``/v1/export?shape=wide``, the way to all of them); up
    to ``--reads`` requests each from 4 connections, none started after ``--read-budget-s``,
    each timed to the end of its answer.
The load runs in ``--clients`` (2) processes of its own (spawned; asyncio + httpx), never in
the collector's. ``--workers`` (2) is passed to ``serve --workers`` on PostgreSQL; SQLite
runs one, the reference.
``--pool-size`` goes to ``serve --pool-size`` when given. The sites all come from 127.0.0.1,
so the collector runs with ``--connections-per-client 0``, as behind a proxy. The databases
are made on ``--pg-admin``'s server (the machine's, postgres@127.0.0.1:5432) and dropped
after; SQLite's in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import math
import multiprocessing
import random
import re
import secrets
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal

import httpx
import orjson
import psycopg
from psycopg import sql

from bench.collector import DAY_START, PG_ADMIN
from bench.ingest import descendants
from bench.measure import mb, parent_pid, percentile, vmhwm_kb
from edge_agent.collector import wire
from edge_agent.collector.local import LocalCollector
from edge_agent.collector.store.central import CentralStore, Envelope
from edge_agent.collector.store.central import Site as Registered
from edge_agent.collector.store.engine import now_ms
from edge_agent.config import SyncSettings
from edge_agent.core.aggregate import HOUR_MS, Fact, compute_hour, for_central, hour_of
from edge_agent.core.identity import Pseudonym, subject_hash
from edge_agent.core.sync import Refused, Retry, Sent, backoff, batches, encode, judge, site_offset
from edge_agent.core.wireform import PROTOCOL

K = 5
DAY_MS = 24 * HOUR_MS
Kind = Literal["shop", "venue"]
Document = dict[str, object]

# --- the fleet ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Site:
    """One simulated agent: its site id, venue, kind, whether it sends identified items, and
    its token."""

    site: str
    venue: str
    kind: Kind
    identified: bool
    token: str


def make_fleet(sites: int, shop_share: float, identified_share: float, seed: int) -> list[Site]:
    """``sites`` agents: shops (their own venue) and the agents of venues of 2-4, shuffled so
    that every slice of the fleet has the same mix."""
    rng = random.Random(seed)
    kinds: list[tuple[Kind, str]] = []
    shops = round(sites * shop_share)
    kinds += [("shop", f"shop-{n:05d}") for n in range(shops)]
    venue = 0
    while len(kinds) < sites:
        agents = min(rng.randint(2, 4), sites - len(kinds))
        kinds += [("venue", f"venue-{venue:04d}")] * agents
        venue += 1
    rng.shuffle(kinds)
    out = []
    for n, (kind, place) in enumerate(kinds):
        site = place if kind == "shop" else f"{place}-a{n:05d}"
        out.append(
            Site(site, place, kind, rng.random() < identified_share, secrets.token_urlsafe(24))
        )
    return out


# --- hour cells -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """What an open hour of one agent looks like."""

    visits: tuple[int, int]
    zones: tuple[str, ...]
    zones_per_visit: tuple[int, int]
    dwell_s: tuple[int, int]
    order_share: float
    products: int
    lines: tuple[int, int]
    feedback: Literal["nps", "ces"]
    feedback_share: float
    identified_share: float


PROFILES: dict[Kind, Profile] = {
    "shop": Profile(
        (15, 120),
        ("entrance", "produce", "dairy", "bakery", "household", "checkout"),
        (1, 3),
        (30, 600),
        0.55,
        400,
        (1, 6),
        "ces",
        0.03,
        0.15,
    ),
    "venue": Profile(
        (150, 600),
        (
            *(f"hall-{h}" for h in "abcd"),
            *("stage", "food-court", "merch", "lounge"),
            *(f"booth-{b}" for b in range(1, 5)),
        ),
        (2, 5),
        (120, 1800),
        0.06,
        60,
        (1, 3),
        "nps",
        0.05,
        0.3,
    ),
}
#: The share of hours that are quiet (1-4 visits): released as suppressed markers at k = 5.
QUIET_SHARE = 0.1


def hour_facts(profile: Profile, start_ms: int, visits: int, rng: random.Random) -> list[Fact]:
    """A simulated hour of one agent's events, as aggregation reads them."""
    end = start_ms + HOUR_MS - 1
    facts: list[Fact] = []
    for n in range(visits):
        visit = f"v{n}"
        identified = rng.random() < profile.identified_share
        at = start_ms + rng.randrange(HOUR_MS * 2 // 3)
        facts.append(Fact(at, "Door Counted", None, None, False, {"direction": "in", "count": 1}))
        for zone in rng.sample(profile.zones, rng.randint(*profile.zones_per_visit)):
            left = min(end, at + 1000 * rng.randint(*profile.dwell_s))
            facts.append(Fact(at, "Zone Entered", visit, visit, identified, {"zone": zone}))
            facts.append(Fact(left, "Zone Exited", visit, visit, identified, {"zone": zone}))
            at = min(end, left + 30_000)
        if rng.random() < profile.order_share:
            lines = [
                {"product_id": f"p{rng.randint(1, profile.products)}", "quantity": 1}
                for _ in range(rng.randint(*profile.lines))
            ]
            order = {"total": 40 * len(lines) + rng.randint(0, 400), "currency": "TWD"}
            facts.append(
                Fact(at, "Order Completed", visit, visit, identified, {**order, "products": lines})
            )
        if rng.random() < profile.feedback_share:
            answer = rng.randint(0, 10) if profile.feedback == "nps" else rng.randint(1, 5)
            facts.append(
                Fact(at, "Feedback Submitted", visit, visit, identified, {profile.feedback: answer})
            )
        facts.append(Fact(at, "Door Counted", None, None, False, {"direction": "out", "count": 1}))
    return facts


def cell_pool(size: int, sites: Sequence[Site], seed: int) -> dict[Kind, list[Document]]:
    """``size`` hour cells in the form a site sends, shared out between the kinds as the
    sites are (at least 20 each)."""
    rng = random.Random(seed)
    venues = sum(s.kind == "venue" for s in sites) / max(1, len(sites))
    pool: dict[Kind, list[Document]] = {}
    shares: tuple[tuple[Kind, float], ...] = (("shop", 1 - venues), ("venue", venues))
    for kind, share in shares:
        profile = PROFILES[kind]
        cells = []
        for _ in range(max(20, round(size * share))):
            quiet = rng.random() < QUIET_SHARE
            visits = rng.randint(1, 4) if quiet else rng.randint(*profile.visits)
            cells.append(for_central(compute_hour(0, hour_facts(profile, 0, visits, rng)), K))
        pool[kind] = cells
    return pool


# --- what an agent sends --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """The simulated agents' timing and limits (the agent's ``[sync]`` defaults but the
    period and jitter), and the simulated clock's origin."""

    epoch_ms: int
    period_s: float
    jitter_s: float
    timeout_s: float
    max_items: int
    max_bytes: int
    backoff_min_s: float
    backoff_max_s: float
    seed: int


_SYNC = SyncSettings()
#: The agent's own ``[sync]`` defaults.
_AGENT_TIMING = Timing(
    epoch_ms=0,
    period_s=_SYNC.every_s,
    jitter_s=_SYNC.jitter_s,
    timeout_s=_SYNC.timeout_s,
    max_items=_SYNC.batch_max_items,
    max_bytes=_SYNC.batch_max_bytes,
    backoff_min_s=_SYNC.backoff_min_s,
    backoff_max_s=_SYNC.backoff_max_s,
    seed=0,
)


@dataclass(slots=True)
class _Row:
    """An outbox row: what is sent, its size as the outbox counts it, and when it was queued."""

    item: Document
    size: int
    created_ms: int
    #: An hour cell's hour (the outbox keeps one unsent cell per hour).
    hour: int | None = None


class Agent:
    """One site's outbox and retry state, as the agent keeps them."""

    def __init__(self, site: Site, pool: Sequence[Document], timing: Timing) -> None:
        self.site = site
        self.pool = pool
        self.timing = timing
        self.rng = random.Random(f"{timing.seed}:{site.site}")
        self.cells: dict[int, _Row] = {}
        self.identified: list[_Row] = []
        self.last_hour = hour_of(timing.epoch_ms) - 2 * HOUR_MS
        self.revision = 0
        self.messages = 0
        self.attempt = 0
        #: Simulated time before which a run is skipped (the agent's ``sync_next_ms``).
        self.waiting_until = 0.0

    def run_at(self, n: int) -> float:
        """When the ``n``-th sync run fires, in simulated seconds: the agent's per-site first
        offset, then every period, each with its own jitter (as apscheduler adds it)."""
        jitter = random.Random(f"{self.timing.seed}:{self.site.site}:{n}").uniform(
            0, self.timing.jitter_s
        )
        return site_offset(self.site.site, round(self.timing.period_s)) + (
            n * self.timing.period_s + jitter
        )

    def queue(self, at_s: float) -> None:
        """What the agent queues in a period ending at ``at_s``: the hours closed since the
        last period (else the last one again, recomputed), and its identified items."""
        now = self.timing.epoch_ms + int(at_s * 1000)
        closed = hour_of(now) - HOUR_MS
        hours = range(self.last_hour + HOUR_MS, closed + 1, HOUR_MS) or range(closed, closed + 1)
        for hour in hours:
            self.revision += 1
            item: Document = {
                "kind": "insight",
                "id": f"insight:{hour}:{self.revision}",
                "k": K,
                "computed_ms": now,
                "revision": self.revision,
                "cell": {**self.rng.choice(self.pool), "start_ms": hour},
            }
            # Replaces the unsent cell of the same hour, as the outbox does.
            self.cells[hour] = _Row(item, len(orjson.dumps(item["cell"])), now, hour)
        self.last_hour = max(self.last_hour, closed)
        if self.site.identified:
            for _ in range(self.rng.randint(0, 4)):
                self._visit(now - self.rng.randrange(int(self.timing.period_s * 1000)), now)

    def _visit(self, at_ms: int, now: int) -> None:
        member = f"member-{self.rng.randrange(200)}"
        person = Pseudonym(hashlib.sha256(f"{self.site.site}/{member}".encode()).hexdigest())
        edge = {"edge": {"site": self.site.site, "subject_hash": subject_hash(person)}}
        lines = self.rng.randint(1, 4)
        for kind, extra in (
            ("identify", {"traits": {"tier": self.rng.choice(["silver", "gold"])}}),
            (
                "track",
                {
                    "event": "Order Completed",
                    "properties": {
                        "order_id": f"o{self.messages}",
                        "total": 80 * lines,
                        "currency": "TWD",
                        "products": [
                            {"product_id": f"p{self.rng.randint(1, 400)}", "quantity": 1}
                            for _ in range(lines)
                        ],
                    },
                },
            ),
        ):
            self.messages += 1
            item: Document = {
                "type": kind,
                "messageId": f"{self.site.site}-m{self.messages}",
                "timestamp": _iso(at_ms),
                "userId": member,
                **extra,
                "context": edge,
            }
            self.identified.append(_Row(item, len(orjson.dumps(item)), now))

    @property
    def pending(self) -> int:
        """Rows queued and not yet stored."""
        return len(self.cells) + len(self.identified)

    def next_batch(self) -> tuple[str, list[_Row], Document] | None:
        """The path, rows and body of the next batch a drain sends: cells first, then
        identified items, the oldest that fit one batch."""
        for path, rows in (
            ("/v1/sync", sorted(self.cells.values(), key=lambda r: r.created_ms)),
            ("/v1/batch", self.identified),
        ):
            if not rows:
                continue
            s = self.timing
            rows = rows[: len(batches([r.size for r in rows], s.max_items, s.max_bytes)[0])]
            newest = max(r.created_ms for r in rows)
            if path == "/v1/sync":
                body: Document = {
                    "protocol": PROTOCOL,
                    "site": self.site.site,
                    "venue": self.site.venue,
                    "sent_ms": newest,
                    "items": [r.item for r in rows],
                    "losses": {},
                }
            else:
                body = {"batch": [r.item for r in rows], "sentAt": _iso(newest)}
            return path, rows, body
        return None

    def settle(self, path: str, rows: list[_Row]) -> None:
        """Take stored (or refused) rows out of the outbox."""
        if path == "/v1/sync":
            for row in rows:
                # A cell of the same hour queued since stays.
                if row.hour is not None and self.cells.get(row.hour) is row:
                    del self.cells[row.hour]
        else:
            gone = {id(r) for r in rows}
            self.identified = [r for r in self.identified if id(r) not in gone]

    def back_off(self, after_s: float | None, now_s: float) -> float:
        """A run stopped on a retryable answer: the next may start after the returned delay
        (``Retry-After``, else the agent's backoff for this attempt)."""
        self.attempt += 1
        delay = after_s
        if delay is None:
            s = self.timing
            delay = backoff(self.attempt, s.backoff_min_s, s.backoff_max_s, self.rng)
        self.waiting_until = now_s + delay
        return delay


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# --- the load generator (in processes of its own) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of the run, as the load processes play it."""

    name: Literal["steady", "outage", "burst"]
    url: str
    #: Wall-clock time at which simulated time ``sim_start`` is now.
    start_wall: float
    sim_start: float
    sim_end: float
    speedup: float
    #: Requests in flight at once per process; 0: as many as the schedule makes.
    connections: int
    #: Burst: give up on what is left after this many seconds.
    deadline_s: float = 0.0


@dataclass
class Tally:
    """What the requests of a phase came to."""

    latencies: list[float] = field(default_factory=list)
    #: Requests sent (answered or not).
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    first_wall: float = math.inf
    last_wall: float = 0.0
    #: How late the generator sent a scheduled run, at worst (real seconds).
    late_s: float = 0.0
    #: Sites whose outbox is not empty at the end.
    left: int = 0

    def add(self, other: Tally) -> None:
        """Fold another process's tally into this one."""
        self.latencies += other.latencies
        self.sent += other.sent
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.errors.update(other.errors)
        self.retried.update(other.retried)
        self.first_wall = min(self.first_wall, other.first_wall)
        self.last_wall = max(self.last_wall, other.last_wall)
        self.late_s = max(self.late_s, other.late_s)
        self.left += other.left


class _Player:
    """Plays a phase for the agents of one load process."""

    def __init__(self, phase: Phase, agents: list[Agent], client: httpx.AsyncClient) -> None:
        self.phase = phase
        self.agents = agents
        self.client = client
        self.tally = Tally()
        self.slots = asyncio.Semaphore(phase.connections or 1_000_000)

    def now(self) -> float:
        """Simulated seconds."""
        return self.phase.sim_start + (time.time() - self.phase.start_wall) * self.phase.speedup

    async def until(self, sim_s: float) -> None:
        """Sleep until simulated time ``sim_s``."""
        wait = (sim_s - self.now()) / self.phase.speedup
        if wait > 0:
            await asyncio.sleep(wait)

    async def drain(self, agent: Agent, at: float | None = None) -> float | None:
        """One sync run (at simulated time ``at``, else now): send batches until the outbox
        is empty (None) or an answer says to wait (the delay before the next try, in
        simulated seconds)."""
        while (batch := agent.next_batch()) is not None:
            path, rows, body = batch
            raw, key = encode(body)
            content = gzip.compress(raw, compresslevel=6)
            headers = {
                "Authorization": f"Bearer {agent.site.token}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Idempotency-Key": key,
            }
            async with self.slots:
                self.tally.sent += 1
                self.tally.first_wall = min(self.tally.first_wall, time.time())
                started = time.perf_counter()
                try:
                    answer = await self.client.post(
                        self.phase.url + path, content=content, headers=headers
                    )
                except httpx.HTTPError as exc:
                    reason = type(exc).__name__
                    outcome = judge(None, None, f"{type(exc).__name__}: {exc}", time.time())
                else:
                    self.tally.latencies.append(time.perf_counter() - started)
                    self.tally.last_wall = max(self.tally.last_wall, time.time())
                    reason = str(answer.status_code)
                    retry_after = answer.headers.get("Retry-After")
                    outcome = judge(answer.status_code, retry_after, answer.text[:500], time.time())
                    if isinstance(outcome, Sent):
                        self.tally.duplicates += bool(orjson.loads(answer.content).get("duplicate"))
            if isinstance(outcome, Sent):
                agent.settle(path, rows)
                self.tally.stored += 1
            elif isinstance(outcome, Retry):
                self.tally.retried[reason] += 1
                return agent.back_off(outcome.after_s, self.now() if at is None else at)
            else:
                assert isinstance(outcome, Refused)
                # The agent would dead-letter it: for the bench, an error.
                self.tally.errors[reason] += 1
                agent.settle(path, rows)
        agent.attempt = 0
        agent.waiting_until = 0.0
        return None

    async def steady(self, agent: Agent) -> None:
        """The agent's runs in the phase's window, each on its schedule."""
        n = self._first_run(agent)
        while (at := agent.run_at(n)) < self.phase.sim_end:
            await self.until(at)
            self.tally.late_s = max(self.tally.late_s, (self.now() - at) / self.phase.speedup)
            agent.queue(at)
            # A run while the agent backs off is skipped; what it queued waits.
            if agent.waiting_until <= at:
                await self.drain(agent)
            n += 1

    async def outage(self, agent: Agent) -> None:
        """The agent's runs while central is down: each queues its period and tries. The
        first try connects for real (refused); the others would be refused the same way and
        are counted so without a socket (httpx takes some 2.5 ms of CPU to be refused)."""
        n = self._first_run(agent)
        tried = False
        while (at := agent.run_at(n)) < self.phase.sim_end:
            agent.queue(at)
            if agent.waiting_until <= at:
                if not tried:
                    await self.drain(agent, at)
                    tried = True
                else:
                    self.tally.retried["ConnectError"] += 1
                    agent.back_off(None, at)
            n += 1

    def _first_run(self, agent: Agent) -> int:
        """The number of the agent's first run in the phase."""
        n = max(0, int(self.phase.sim_start // agent.timing.period_s) - 1)
        while agent.run_at(n) < self.phase.sim_start:
            n += 1
        return n

    async def burst(self, agent: Agent) -> None:
        """Everything the agent holds, sent at once; tried again when its backoff allows."""
        deadline = self.phase.start_wall + self.phase.deadline_s
        while agent.pending and time.time() < deadline:
            delay = await self.drain(agent)
            if delay is not None:
                await asyncio.sleep(delay)

    async def play(self) -> Tally:
        """Play the phase for every agent; the tally once all have finished."""
        await asyncio.sleep(max(0.0, self.phase.start_wall - time.time()))
        play = getattr(self, self.phase.name)
        await asyncio.gather(*(play(agent) for agent in self.agents))
        self.tally.left = sum(bool(agent.pending) for agent in self.agents)
        return self.tally


async def _play(phase: Phase, agents: list[Agent], timing: Timing) -> Tally:
    # Steady: no bound, as every agent has its own connection (an overloaded collector makes
    # the agents' timeouts fire, not a queue in the generator); else the phase's bound.
    limits = httpx.Limits(max_connections=phase.connections or None, max_keepalive_connections=500)
    timeout = httpx.Timeout(timing.timeout_s, pool=None)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        return await _Player(phase, agents, client).play()


def _load_process(
    conn: Connection, sites: list[Site], pool: dict[Kind, list[Document]], timing: Timing
) -> None:
    """A load process: its share of the agents, playing each phase it is sent (None ends)."""
    agents = [Agent(site, pool[site.kind], timing) for site in sites]
    while (phase := conn.recv()) is not None:
        conn.send(asyncio.run(_play(phase, agents, timing)))


class Load:
    """The load processes (``spawn``: none inherits the bench's connections or threads)."""

    def __init__(
        self,
        sites: Sequence[Site],
        pool: dict[Kind, list[Document]],
        timing: Timing,
        processes: int,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for n in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_load_process,
                args=(theirs, list(sites[n::processes]), pool, timing),
                daemon=True,
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def play(self, phase: Phase) -> Tally:
        """Play ``phase`` in every load process; their tallies folded into one."""
        for pipe in self.pipes:
            pipe.send(phase)
        total = Tally()
        for pipe in self.pipes:
            total.add(pipe.recv())
        total.latencies.sort()
        return total

    def close(self) -> None:
        """End the load processes."""
        for pipe in self.pipes:
            pipe.send(None)
        for process in self.processes:
            process.join(10)


# --- central --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """Peak RSS (VmHWM) in MB: the largest serving worker's, and all the collector's
    processes' together (workers, the sandbox's, the parent)."""

    worker_mb: float
    tree_mb: float


def memory(root: int, workers: int) -> Memory:
    """The collector's peak RSS now: with several workers they are the parent's children
    (not its resource tracker); with one, the serving process is the parent."""
    tree = [root, *descendants(root)]
    serving = [root]
    if workers > 1:
        serving = [
            pid
            for pid in tree
            if parent_pid(pid) == root and b"resource_tracker" not in _cmdline(pid)
        ] or [root]
    return Memory(max(mb(vmhwm_kb(pid)) for pid in serving), sum(mb(vmhwm_kb(pid)) for pid in tree))


def log_events(log: Path) -> Counter[str]:
    """The collector's warnings and errors in its log (JSON lines), by event."""
    found: Counter[str] = Counter()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            found[str(record.get("event") or record.get("msg"))] += 1
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def database(engine: str, folder: Path, admin: str, label: str) -> Iterator[str]:
    """A fresh, empty collector database on ``engine`` (PostgreSQL: made on ``admin``'s
    server, dropped afterwards)."""
    if engine == "sqlite":
        yield str(folder / f"{label}.db")
        return
    name = f"bench_fleet_{label}_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as pg:
            pg.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _query(target: str, statement: str, params: Sequence[object] = ()) -> int:
    """One figure from the collector's database (``%s`` placeholders)."""
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as pg:
            row = pg.execute(statement, params).fetchone()
    else:
        lite = sqlite3.connect(target)
        try:
            row = lite.execute(statement.replace("%s", "?"), params).fetchone()
        finally:
            lite.close()
    return int(row[0]) if row else 0


def database_bytes(target: str) -> int:
    """The database's size on disk: pg_database_size, or the SQLite file and its WAL."""
    if target.startswith("postgresql://"):
        return _query(target, "SELECT pg_database_size(current_database())")
    return sum(
        path.stat().st_size for path in (Path(target), Path(target + "-wal")) if path.exists()
    )


def register(target: str, sites: Sequence[Site]) -> None:
    """Add the sites to central (by the sha256 of their tokens, as ``add-site`` does)."""
    store = CentralStore.open(target)
    try:
        for site in sites:
            store.add_site(site.site, site.venue, hashlib.sha256(site.token.encode()).hexdigest())
    finally:
        store.close()


# --- one engine: the fleet ------------------------------------------------------------------


@dataclass
class Steady:
    """A steady phase: its speed-up, the requests it offered and how they went."""

    speedup: float
    window_s: float
    tally: Tally

    @property
    def offered_per_s(self) -> float:
        """Requests sent per second of the window (retries included)."""
        return self.tally.sent / self.window_s

    @property
    def stored_per_s(self) -> float:
        """Batches stored per second, until the last answer."""
        span = max(self.window_s, self.tally.last_wall - self.tally.first_wall)
        return self.tally.stored / span


@dataclass
class FleetResult:
    """What one engine did with the fleet."""

    engine: str
    workers: int
    steady: list[Steady]
    outage: Tally
    burst: Tally
    absorb_s: float
    db_bytes: int
    cells: int
    identified: int
    steady_memory: Memory
    burst_memory: Memory
    #: The collector's warnings and errors, by event.
    log: Counter[str]

    @property
    def burst_per_s(self) -> float:
        """Batches stored per second while the herd was absorbed."""
        return self.burst.stored / self.absorb_s if self.absorb_s else 0.0

    @property
    def cell_bytes(self) -> float:
        """Database bytes per hour cell stored."""
        return self.db_bytes / self.cells if self.cells else 0.0


def run_fleet(
    engine: str,
    target: str,
    workers: int,
    serve: Sequence[str],
    sites: Sequence[Site],
    pool: dict[Kind, list[Document]],
    args: argparse.Namespace,
) -> FleetResult:
    """The fleet's phases against one engine."""
    register(target, sites)
    progress(f"{engine}: {len(sites)} sites registered")
    empty_bytes = database_bytes(target)
    # Simulated time starts a period in, so that every site is in its rhythm from the start.
    sim = args.period_s + args.jitter_s
    steady_s = (args.warm_up_s + args.steady_s) * sum(args.speedup)
    span_s = sim + steady_s + args.outage_s + args.burst_timeout_s
    timing = replace(
        _AGENT_TIMING,
        epoch_ms=hour_of(int(time.time() * 1000)) - (math.ceil(span_s / 3600) + 2) * HOUR_MS,
        period_s=args.period_s,
        jitter_s=args.jitter_s,
        seed=args.seed,
    )
    per = max(1, args.burst_connections // max(1, args.clients))
    load = Load(sites, pool, timing, args.clients)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
            central = LocalCollector(Path(folder), target, workers=workers, serve_args=serve)
            central.start()
            try:
                # Not counted: a collector's first requests load what it loads once.
                if args.warm_up_s:
                    fastest = max(args.speedup)
                    warm_up = args.warm_up_s * fastest
                    start = time.time() + 1
                    load.play(Phase("steady", central.url, start, sim, sim + warm_up, fastest, 0))
                    sim += warm_up
                steady: list[Steady] = []
                for speedup in args.speedup:
                    window = args.steady_s * speedup
                    phase = Phase(
                        "steady", central.url, time.time() + 1, sim, sim + window, speedup, 0
                    )
                    steady.append(Steady(speedup, args.steady_s, load.play(phase)))
                    progress(f"{engine}: steady at {speedup:g}x done")
                    sim += window
                steady_memory = memory(central.pid or 0, workers)
            finally:
                central.stop()
            progress(f"{engine}: central stopped")
            outage = load.play(
                Phase("outage", central.url, time.time(), sim, sim + args.outage_s, 1.0, per)
            )
            sim += args.outage_s
            progress(f"{engine}: outage played")
            central.start()
            progress(f"{engine}: central started again")
            try:
                started = time.time() + 1
                burst = load.play(
                    Phase("burst", central.url, started, sim, sim, 1.0, per, args.burst_timeout_s)
                )
                progress(f"{engine}: catch-up absorbed")
                burst_memory = memory(central.pid or 0, workers)
                db_bytes = database_bytes(target) - empty_bytes
                cells = _query(target, "SELECT count(*) FROM insight_cells")
                identified = _query(target, "SELECT count(*) FROM identified")
            finally:
                central.stop()
            events = log_events(central.log)
    finally:
        load.close()
    absorb_s = max(0.0, burst.last_wall - started)
    return FleetResult(
        engine, workers, steady, outage, burst, absorb_s, db_bytes, cells, identified,
        steady_memory, burst_memory, events,
    )  # fmt: skip


def progress(message: str) -> None:
    """A line on stderr while the bench runs (the tables go to stdout at the end)."""
    print(f"[bench.fleet {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- one engine: the reads ------------------------------------------------------------------

#: A copied row's columns that differ from the synced day's, by what they hold: the day's
#: label, its bounds, a cell's version and the cell's own ``start_ms`` (named parameters:
#: ``day`` the copy's label, ``shift`` how many ms earlier).
_SHIFTED = {
    "day": "%(day)s",
    "start_ms": "start_ms - %(shift)s",
    "end_ms": "end_ms - %(shift)s",
    "version_ms": "version_ms - %(shift)s",
    "cell": "replace(cell, '\"start_ms\":' || start_ms, '\"start_ms\":' || (start_ms - %(shift)s))",
}


def _columns(target: str, table: str) -> list[str]:
    """The table's columns as the database has them (none: no such table)."""
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as pg:
            rows = pg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            ).fetchall()
        return [str(r[0]) for r in rows]
    lite = sqlite3.connect(target)
    try:
        return [str(r[1]) for r in lite.execute(f"PRAGMA table_info({table})")]
    finally:
        lite.close()


def wait_rolled_up(target: str, timeout_s: float = 600.0) -> float:
    """Seconds until the rollup's queues (hours, and venue days where the schema has them)
    are empty.

    Raises:
        TimeoutError: they were not in ``timeout_s``.
    """
    queues = [t for t in ("rollup_queue", "venue_queue") if _columns(target, t)]
    started = time.monotonic()
    while any(_query(target, f"SELECT count(*) FROM {t}") for t in queues):  # noqa: S608
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"the rollup did not catch up in {timeout_s:g} s")
        time.sleep(0.5)
    return time.monotonic() - started


def copy_back(target: str, days: int, cell_days: int, venue: str) -> tuple[int, int]:
    """Copy what central holds of the synced day (`DAY_START`) to the ``days - 1`` days
    before it, in SQL: the rolled-up days of every site and venue (whatever columns the
    rollup's tables have), every site's hour cells to the ``cell_days - 1`` days before and
    ``venue``'s to all. Returns the site days and hour cells held."""
    base = datetime.fromtimestamp(DAY_START / 1000, UTC).date()
    cells = "start_ms >= %(first)s AND start_ms < %(end)s"
    tables = {t: _columns(target, t) for t in ("site_days", "venue_days", "insight_cells")}
    steps: list[tuple[str, dict[str, object]]] = []
    for back in range(1, days):
        params: dict[str, object] = {
            "day": (base - timedelta(days=back)).isoformat(),
            "shift": back * DAY_MS,
            "base": base.isoformat(),
            "first": DAY_START,
            "end": DAY_START + DAY_MS,
            "venue": venue,
        }
        for table, where in (
            ("site_days", "day = %(base)s"),
            ("venue_days", "day = %(base)s"),
            ("insight_cells", cells if back < cell_days else cells + " AND venue = %(venue)s"),
        ):
            columns = tables[table]
            if columns:
                copied = ", ".join(_SHIFTED.get(c, c) for c in columns)
                steps.append(
                    (
                        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
                        f"SELECT {copied} FROM {table} WHERE {where}",
                        params,
                    )
                )
    # A quarter stored at once leaves the planner with the statistics of one day, where
    # autovacuum would have kept them up to date over 90 real ones: they are taken again.
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as pg:
            for statement, values in steps:
                pg.execute(statement, values)
        with psycopg.connect(target, autocommit=True) as pg:
            pg.execute("VACUUM ANALYZE")
    else:
        lite = sqlite3.connect(target)
        try:
            with lite:
                for statement, values in steps:
                    lite.execute(re.sub(r"%\((\w+)\)s", r":\1", statement), values)
            lite.execute("ANALYZE")
        finally:
            lite.close()
    return (
        _query(target, "SELECT count(*) FROM site_days"),
        _query(target, "SELECT count(*) FROM insight_cells"),
    )


def store_days(
    target: str, sites: Sequence[Site], pool: dict[Kind, list[Document]], seed: int
) -> None:
    """Each site's day of 24 hour cells (`DAY_START`'s), as its agent sends them, stored
    through the collector's own parse and store (what its intake does once HTTP and the
    sandbox's cell check are done: the reads measure the reads, not filling central)."""
    timing = replace(_AGENT_TIMING, epoch_ms=DAY_START, seed=seed)
    store = CentralStore.open(target)
    try:
        for site in sites:
            agent = Agent(site, pool[site.kind], timing)
            agent.last_hour = DAY_START - HOUR_MS
            agent.queue(DAY_MS / 1000)
            registered = store.site_for_token(site.token)
            if not isinstance(registered, Registered):
                raise RuntimeError(f"{site.site} is not registered")
            while (batch := agent.next_batch()) is not None:
                path, rows, body = batch
                raw, key = encode(body)
                envelope = Envelope(registered, path, key, hashlib.sha256(raw).hexdigest())
                store.receive_sync(envelope, wire.parse_sync(raw, site.site, wire.Clock(now_ms())))
                agent.settle(path, rows)
    finally:
        store.close()


@dataclass
class Read:
    """One read's timings (of its 200s) and the statuses it was answered."""

    latencies: list[float]
    statuses: Counter[str]

    expected: int = 200

    @property
    def failed(self) -> int:
        """Requests not answered as expected."""
        return sum(n for status, n in self.statuses.items() if status != str(self.expected))


async def timed_reads(
    url: str,
    token: str,
    path: str,
    params: dict[str, str],
    n: int,
    budget_s: float,
    expected: int = 200,
) -> Read:
    """Up to ``n`` GETs of ``path`` from 4 connections, none started after ``budget_s``,
    timed when answered ``expected`` (the whole answer read)."""
    read = Read([], Counter(), expected)
    deadline = time.monotonic() + budget_s
    left = n

    async def connection(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            started = time.perf_counter()
            try:
                answer = await client.get(url + path, params=params)
            except httpx.HTTPError as exc:
                read.statuses[type(exc).__name__] += 1
                continue
            read.statuses[str(answer.status_code)] += 1
            if answer.status_code == expected:
                read.latencies.append(time.perf_counter() - started)

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=300) as client:
        await asyncio.gather(*(connection(client) for _ in range(4)))
    read.latencies.sort()
    return read


@dataclass
class ReadsResult:
    """The reads on one engine: the database they ran on, and each read."""

    day_rows: int
    cells: int
    rolled_s: float
    reads: dict[str, Read]
    memory: Memory
    #: The collector's warnings and errors, by event.
    log: Counter[str]


def run_reads(
    target: str,
    workers: int,
    serve: Sequence[str],
    pool: dict[Kind, list[Document]],
    args: argparse.Namespace,
) -> ReadsResult:
    """The dashboard's and the summary's reads over ``--read-sites`` x ``--days``."""
    sites = make_fleet(args.read_sites, args.shop_share, 0.0, args.seed + 1)
    register(target, sites)
    store_days(target, sites, pool, args.seed)
    progress(f"reads: {len(sites)} sites hold a day")
    venue = Counter(s.venue for s in sites if s.kind == "venue").most_common(1)
    place = venue[0][0] if venue else sites[0].venue
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
        central = LocalCollector(Path(folder), target, workers=workers, serve_args=serve)
        central.start()
        try:
            rolled_s = wait_rolled_up(target)
            progress(f"reads: rolled up in {rolled_s:.1f} s")
            day_rows, cells = copy_back(target, args.days, args.cell_days, place)
            progress(f"reads: {day_rows} rolled-up days and {cells} hour cells held")
            last = datetime.fromtimestamp(DAY_START / 1000, UTC).date()
            span = {
                "from": (last - timedelta(days=args.days - 1)).isoformat(),
                "to": last.isoformat(),
            }
            reads = {}
            for name, path, params, expected in (
                ("overview", "/v1/overview", span, 200),
                ("comparison", "/v1/comparison", span, 200),
                ("trend", "/v1/trend", {**span, "by": "day"}, 200),
                (f"insights, {place}", "/v1/insights", {**span, "by": "day", "venue": place}, 200),
                ("insights, all sites (refused)", "/v1/insights", {**span, "by": "day"}, 422),
                ("export wide, all sites", "/v1/export", {**span, "shape": "wide"}, 200),
            ):
                reads[name] = asyncio.run(
                    timed_reads(
                        central.url, central.admin_token, path, params, args.reads,
                        args.read_budget_s, expected,
                    )
                )  # fmt: skip
                progress(f"reads: {name} done")
            used = memory(central.pid or 0, workers)
        finally:
            central.stop()
        events = log_events(central.log)
    return ReadsResult(day_rows, cells, rolled_s, reads, used, events)


# --- the run --------------------------------------------------------------------------------


@dataclass
class EngineResult:
    """One engine's figures."""

    fleet: FleetResult
    reads: ReadsResult | None


@dataclass
class Report:
    """The whole run: each engine's figures."""

    engines: dict[str, EngineResult]


def run(args: argparse.Namespace) -> Report:
    """Every phase on each engine asked for (PostgreSQL first, SQLite the reference)."""
    engines = {"both": ["postgresql", "sqlite"]}.get(args.engine, [args.engine])
    report = Report({})
    sites = make_fleet(args.sites, args.shop_share, args.identified_share, args.seed)
    pool = cell_pool(args.cell_pool, sites, args.seed)
    for engine in engines:
        workers = args.workers if engine == "postgresql" else 1
        serve = ["--connections-per-client", "0", "--workers", str(workers)]
        if args.pool_size:
            serve += ["--pool-size", str(args.pool_size)]
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
            with database(engine, Path(folder), args.pg_admin, "fleet") as target:
                fleet = run_fleet(engine, target, workers, serve, sites, pool, args)
            reads = None
            if args.read_sites:
                with database(engine, Path(folder), args.pg_admin, "reads") as target:
                    reads = run_reads(target, workers, serve, pool, args)
        report.engines[engine] = EngineResult(fleet, reads)
    return report


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The bench's arguments (see the module's docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--engine", choices=["both", "postgresql", "sqlite"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="collector workers on PostgreSQL")
    parser.add_argument("--pool-size", type=int, default=0, help="serve --pool-size (0: its own)")
    parser.add_argument("--shop-share", type=float, default=0.8)
    parser.add_argument("--identified-share", type=float, default=0.25)
    parser.add_argument("--cell-pool", type=int, default=300, help="real hour cells made")
    parser.add_argument("--period-s", type=float, default=900.0, help="the agents' sync period")
    parser.add_argument("--jitter-s", type=float, default=60.0)
    parser.add_argument("--steady-s", type=float, default=30.0, help="real seconds per speed")
    parser.add_argument("--warm-up-s", type=float, default=5.0, help="load not counted, first")
    parser.add_argument(
        "--speedup",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[1.0, 10.0],
        help="steady phases, each at this many times real time (comma-separated)",
    )
    parser.add_argument("--outage-s", type=float, default=3600.0, help="simulated outage")
    parser.add_argument("--burst-connections", type=int, default=64)
    parser.add_argument("--burst-timeout-s", type=float, default=900.0)
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--read-sites", type=int, default=1000, help="0: no reads")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--cell-days", type=int, default=1, help="days of every site's hour cells")
    parser.add_argument("--reads", type=int, default=20, help="requests per read")
    parser.add_argument("--read-budget-s", type=float, default=60.0)
    parser.add_argument("--pg-admin", default=PG_ADMIN)
    parser.add_argument("--seed", type=int, default=3)
    return parser.parse_args(argv)


NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def _ms(values: Sequence[float], fraction: float) -> str:
    return f"{1000 * percentile(values, fraction):.0f}" if values else "-"


def _p(values: Sequence[float], fraction: float) -> float:
    return percentile(values, fraction) if values else 0.0


def _counts(counter: Counter[str]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(counter.items())) or "0"


def _ratio(pg: float, lite: float) -> str:
    return f"{pg / lite:.2f}" if lite else "-"


def _table(columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[object]]) -> list[str]:
    """A table's lines, indented, its column names first: each column ``width`` wide,
    right-aligned, or left-aligned (after two spaces unless first) when the width is
    negative."""

    def line(cells: Sequence[object]) -> str:
        out = "  "
        for i, (cell, (_, width)) in enumerate(zip(cells, columns, strict=True)):
            if width < 0:
                out += ("  " if i else "") + f"{cell!s:<{-width}}"
            else:
                out += f"{cell!s:>{width}}"
        return out.rstrip()

    return [line([name for name, _ in columns]), *(line(row) for row in rows)]


def _fleet_lines(report: Report, args: argparse.Namespace) -> list[str]:
    engines = [(NAMES[name], result.fleet) for name, result in report.engines.items()]
    out = [f"steady ({args.steady_s:g} s of real time at each speed)"]
    out += _table(
        [
            ("engine", -11),
            ("workers", 8),
            ("speed", 7),
            ("sent/s", 8),
            ("stored/s", 9),
            ("p50 ms", 8),
            ("p99 ms", 8),
            ("errors", 7),
            ("retried", -16),
            ("late s", 7),
        ],
        (
            (
                name,
                f.workers,
                f"{s.speedup:g}x",
                f"{s.offered_per_s:.1f}",
                f"{s.stored_per_s:.1f}",
                _ms(s.tally.latencies, 0.5),
                _ms(s.tally.latencies, 0.99),
                s.tally.errors.total(),
                _counts(s.tally.retried),
                f"{s.tally.late_s:.1f}",
            )
            for name, f in engines
            for s in f.steady
        ),
    )
    out.append(
        f"catch-up after {args.outage_s:g} s down ({args.outage_s / args.period_s:g} periods "
        f"queued), every site at once through {args.burst_connections} connections"
    )
    out += _table(
        [
            ("engine", -11),
            ("batches", 8),
            ("absorb s", 9),
            ("batches/s", 10),
            ("p50 ms", 8),
            ("p99 ms", 8),
            ("errors", 7),
            ("left", 6),
            ("retried", -18),
            ("while down", -12),
        ],
        (
            (
                name,
                f.burst.stored,
                f"{f.absorb_s:.1f}",
                f"{f.burst_per_s:.1f}",
                _ms(f.burst.latencies, 0.5),
                _ms(f.burst.latencies, 0.99),
                f.burst.errors.total(),
                f.burst.left,
                _counts(f.burst.retried),
                _counts(f.outage.retried),
            )
            for name, f in engines
        ),
    )
    out.append("size (the database's growth over its sites alone) and peak RSS")
    out += _table(
        [
            ("engine", -11),
            ("hour cells", 11),
            ("identified", 11),
            ("DB MB", 8),
            ("KB/cell", 8),
            ("MB/site-day", 12),
            ("MB/worker steady", 17),
            ("burst", 7),
            ("all procs", 10),
        ],
        (
            (
                name,
                f.cells,
                f.identified,
                f"{f.db_bytes / 2**20:.1f}",
                f"{f.cell_bytes / 1024:.1f}",
                f"{24 * f.cell_bytes / 2**20:.2f}",
                f"{f.steady_memory.worker_mb:.0f}",
                f"{f.burst_memory.worker_mb:.0f}",
                f"{max(f.steady_memory.tree_mb, f.burst_memory.tree_mb):.0f}",
            )
            for name, f in engines
        ),
    )
    if {"postgresql", "sqlite"} <= report.engines.keys():
        pg, lite = report.engines["postgresql"].fleet, report.engines["sqlite"].fleet
        fast_pg, fast_lite = pg.steady[-1], lite.steady[-1]
        p99 = _ratio(_p(fast_pg.tally.latencies, 0.99), _p(fast_lite.tally.latencies, 0.99))
        out.append(
            f"PostgreSQL / SQLite: stored/s at {fast_pg.speedup:g}x "
            f"{_ratio(fast_pg.stored_per_s, fast_lite.stored_per_s)}, its p99 {p99}, catch-up "
            f"batches/s {_ratio(pg.burst_per_s, lite.burst_per_s)}, absorb time "
            f"{_ratio(pg.absorb_s, lite.absorb_s)}, size/site-day "
            f"{_ratio(pg.cell_bytes, lite.cell_bytes)}, RSS/worker "
            f"{_ratio(pg.burst_memory.worker_mb, lite.burst_memory.worker_mb)}"
        )
    return out


def _read_lines(report: Report, args: argparse.Namespace) -> list[str]:
    readers = {n: r.reads for n, r in report.engines.items() if r.reads is not None}
    if not readers:
        return []
    first = next(iter(readers.values()))
    out = [
        f"reads over {args.read_sites:,} sites x {args.days} days ({first.day_rows:,} rolled-up "
        f"site days; {first.cells:,} hour cells: every site's for {args.cell_days} day(s), one "
        f"venue's for all), up to {args.reads} requests each from 4 connections within "
        f"{args.read_budget_s:g} s; ok: answered as expected (a refusal where one is expected)",
    ]
    columns = [("read", -34)]
    for n in readers:
        columns += [(f"{NAMES[n]} p50/p99 ms", 24), ("ok/not", 8)]
    rows = []
    for read in first.reads:
        row: list[object] = [read]
        for reading in readers.values():
            r = reading.reads[read]
            row += [f"{_ms(r.latencies, 0.5)}/{_ms(r.latencies, 0.99)}"]
            row += [f"{len(r.latencies)}/{r.failed}"]
        rows.append(row)
    out += _table(columns, rows)
    if {"postgresql", "sqlite"} <= readers.keys():
        pg, lite = readers["postgresql"].reads, readers["sqlite"].reads
        ratios = (
            f"{read} {_ratio(_p(pg[read].latencies, 0.5), _p(lite[read].latencies, 0.5))}"
            for read in pg
        )
        out.append("  PostgreSQL / SQLite p50: " + ", ".join(ratios))
    out.append(
        "  rolled up in "
        + ", ".join(f"{NAMES[n]} {r.rolled_s:.1f} s" for n, r in readers.items())
        + "; peak RSS of the largest worker "
        + ", ".join(f"{NAMES[n]} {r.memory.worker_mb:.0f} MB" for n, r in readers.items())
    )
    return out


def render(report: Report, args: argparse.Namespace) -> str:
    """The run's figures as tables."""
    sites = make_fleet(args.sites, args.shop_share, args.identified_share, args.seed)
    shops = sum(s.kind == "shop" for s in sites)
    venues = len({s.venue for s in sites if s.kind == "venue"})
    head = [
        f"bench.fleet: {args.sites:,} sites ({shops:,} shops, {args.sites - shops:,} agents of "
        f"{venues:,} venues; {sum(s.identified for s in sites):,} send identified items), a "
        f"sync every {args.period_s:g} s + 0-{args.jitter_s:g} s, load from {args.clients} "
        "processes",
    ]
    logs = ["the collector's log, warnings and errors by event:"]
    for name, result in report.engines.items():
        logs.append(f"  {NAMES[name]:<11}fleet: {_counts(result.fleet.log)}")
        if result.reads is not None:
            logs.append(f"  {'':<11}reads: {_counts(result.reads.log)}")
    return "\n".join([*head, *_fleet_lines(report, args), *_read_lines(report, args), *logs])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fleet and the reads on each engine and print the tables."""
    args = parse(argv)
    print(render(run(args), args))


if __name__ == "__main__":
    main()
