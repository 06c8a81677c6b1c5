"""Benchmark: what sync puts on the wire for the demo site, and how fast a backlog drains.

Run: ``python -m bench.sync [--days 7] [--seed S]``. The demo site's simulated days (the demo's
default rate, real Ta Feng baskets, loyalty check-ins with a mix of consents) go through the
agent's real ingest path (validation, pseudonymisation, consent rules) into SQLite while central
is down; the hours are computed; then the collector starts (SQLite, under uvicorn, as a separate
process) and the agent drains the backlog. Printed:
- bytes on the wire per day (request bodies as sent, gzip) against the raw events' bytes, and
  their ratio (the reference: what a pipeline shipping raw events would send);
- the time to drain the whole backlog after the outage, and its rate.
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from edge_agent import schemas
from edge_agent.app import ingest
from edge_agent.app.insights import compute_insights
from edge_agent.collector.local import LocalCollector
from edge_agent.config import Settings, load_settings
from edge_agent.core.aggregate import HOUR_MS
from edge_agent.demo.catalogue import load_sales
from edge_agent.demo.simulate import iso_timestamp, site_stream
from edge_agent.ops import keyfile
from edge_agent.store.database import Store
from edge_agent.sync.client import client_for, drain

SITE = "bench-site"
DAY_MS = 24 * HOUR_MS
BATCH = 2000


def store_days(settings: Settings, start: int, end: int, seed: int) -> tuple[int, int]:
    """The demo site's simulated events from ``start`` to ``end`` through the agent's real
    ingest path; returns how many, and their bytes as published."""
    key = keyfile.load_or_create(settings.site_key)
    limits, compiled = ingest.limits_of(settings), schemas.load()
    stream = site_stream(random.Random(seed), start, SITE, load_sales())
    raw_bytes = events = 0
    with Store.open(settings.database, "NORMAL") as store:
        in_days = itertools.takewhile(lambda p: p.at_ms < end, stream)
        while chunk := list(itertools.islice(in_days, BATCH)):
            items = []
            for p in chunk:
                payload = orjson.dumps({**p.payload, "timestamp": iso_timestamp(p.at_ms)})
                raw_bytes += len(payload)
                items.append((p.topic, payload, p.at_ms))
            received, rejected = ingest.classify(
                items, limits, compiled, settings.store.dead_letter_raw_bytes, key
            )
            store.commit(received, rejected, "v1", chunk[-1].at_ms)
            events += len(items)
    return events, raw_bytes


def main() -> None:
    """Store the days, drain them, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    now = int(time.time() * 1000)
    start = (now // DAY_MS - args.days) * DAY_MS
    end = start + args.days * DAY_MS
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as name:
        folder = Path(name)
        central = LocalCollector(folder / "central")
        token = central.add_site(SITE)
        central.start()
        url = central.url
        config = folder / "agent.toml"
        config.write_text(
            f'[site]\nid = "{SITE}"\ndata_dir = "{folder / "data"}"\n'
            f'[sync]\nurl = "{url}"\ntoken = "{token}"\n'
            # The days are old: accept them as a replay of a backlog would.
            f"[ingest]\nmax_past_age_s = {args.days * 86400 + 86400}\n"
        )
        settings = load_settings(config, environ={})
        started = time.perf_counter()
        events, raw_bytes = store_days(settings, start, end, args.seed)
        with Store.open(settings.database, "NORMAL") as store:
            compute_insights(store, settings, end)
            queued = sum(
                n for _, n in store.db.execute("SELECT kind, count(*) FROM outbox GROUP BY kind")
            )
        stored_s = time.perf_counter() - started
        print(
            f"bench.sync: {events:,} events of {args.days} days stored in {stored_s:.1f} s "
            f"while central was down; {queued:,} items queued"
        )
        sent_bytes = 0

        def count(request: httpx.Request) -> None:
            nonlocal sent_bytes
            sent_bytes += len(request.content)

        try:
            with client_for(settings) as client:
                client.event_hooks["request"] = [count]
                started = time.perf_counter()
                report = drain(settings, end, client, force=True)
                drained_s = time.perf_counter() - started
        finally:
            central.stop()
    sent = sum(report.sent.values())
    print(f"  sent: {report.sent}, left: {report.remaining or 'nothing'}")
    print(
        f"  wire bytes per day: {sent_bytes / args.days / 1024:8.1f} KiB   "
        f"raw event bytes per day: {raw_bytes / args.days / 1024:8.1f} KiB   "
        f"ratio {sent_bytes / raw_bytes:.4f} ({raw_bytes / max(sent_bytes, 1):.0f}x smaller)"
    )
    print(
        f"  backlog of {args.days} days drained in {drained_s:.2f} s "
        f"({sent / drained_s:,.0f} items/s, {sent_bytes / drained_s / 1024:,.0f} KiB/s)"
    )


if __name__ == "__main__":
    main()
