"""Benchmark: a fleet syncing to the collector, on SQLite and on PostgreSQL side by side.

Run: ``python -m bench.collector [--sites 1000] [--concurrency 64]``. Each simulated site sends
one day of insight cells (24 hour cells, real sketches) in one ``/v1/sync`` batch, and every
fourth site also a ``/v1/batch`` of 50 identified items, all at once from ``--concurrency``
connections. The collector runs as its own process under uvicorn (one worker), on a fresh
SQLite file, then on a fresh PostgreSQL database (the machine's, dropped afterwards). Printed
per engine: batches/s, request latency p50/p99, errors (must be 0), the collector's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import random
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import psycopg
from psycopg import sql

from bench.measure import peak_rss_mb, percentile
from edge_agent.collector.local import LocalCollector
from edge_agent.collector.store.central import CentralStore
from edge_agent.core.aggregate import HOUR_MS, Fact, compute_hour, for_central
from edge_agent.core.identity import Pseudonym, subject_hash

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY_START = (int(time.time() * 1000) // (24 * HOUR_MS) - 1) * 24 * HOUR_MS


def _cells(rng: random.Random) -> list[dict[str, object]]:
    """A day of hour cells of a small shop, in the form a site sends."""
    cells = []
    for hour in range(24):
        start = DAY_START + hour * HOUR_MS
        facts = []
        for n in range(rng.randint(20, 120)):
            visit = f"v{hour}-{n}"
            at = start + rng.randrange(HOUR_MS - 600_000)
            zone = rng.choice(["produce", "dairy", "bakery", "household"])
            facts += [
                Fact(at, "Door Counted", None, None, False, {"direction": "in", "count": 1}),
                Fact(at, "Zone Entered", visit, visit, False, {"zone": zone}),
                Fact(at + 90_000, "Zone Exited", visit, visit, False, {"zone": zone}),
                Fact(
                    at + 300_000,
                    "Order Completed",
                    visit,
                    visit,
                    False,
                    {
                        "total": rng.randint(50, 900),
                        "products": [
                            {"product_id": f"p{rng.randint(1, 400)}", "quantity": 1}
                            for _ in range(rng.randint(1, 6))
                        ],
                    },
                ),
            ]
        cells.append(for_central(compute_hour(start, facts), 5))
    return cells


def _bodies(sites: int, rng: random.Random) -> list[tuple[str, str, bytes, str]]:
    """(site, path, gzip body, idempotency key) for every request of the fleet."""
    day = _cells(rng)
    out = []
    for n in range(sites):
        site = f"site-{n:05d}"
        sync = {
            "protocol": 1,
            "site": site,
            "venue": f"venue-{n // 4}",
            "sent_ms": DAY_START + 24 * HOUR_MS,
            "items": [
                {
                    "kind": "insight",
                    "id": f"insight:{cell['start_ms']}:1",
                    "k": 5,
                    "computed_ms": DAY_START + 24 * HOUR_MS,
                    "cell": cell,
                }
                for cell in day
            ],
            "losses": {},
        }
        bodies = [("/v1/sync", sync)]
        if n % 4 == 0:
            person = Pseudonym(hashlib.sha256(site.encode()).hexdigest())
            items = [
                {
                    "type": "track",
                    "event": "Order Completed",
                    "messageId": f"{site}-m{i}",
                    "timestamp": "2026-11-25T10:00:00.000Z",
                    "userId": f"member-{n}",
                    "properties": {"order_id": f"o{i}", "total": 120.0, "currency": "TWD"},
                    "context": {"edge": {"site": site, "subject_hash": subject_hash(person)}},
                }
                for i in range(50)
            ]
            bodies.append(("/v1/batch", {"batch": items, "sentAt": "2026-11-26T00:00:00.000Z"}))
        for path, body in bodies:
            raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
            out.append((site, path, gzip.compress(raw), hashlib.sha256(raw).hexdigest()))
    return out


async def _fleet(
    url: str, requests: list[tuple[str, str, bytes, str]], tokens: dict[str, str], concurrency: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[tuple[str, str, bytes, str]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            site, path, body, key = queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(
                url + path,
                content=body,
                headers={
                    "Authorization": f"Bearer {tokens[site]}",
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                    "Idempotency-Key": key,
                },
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, sorted(latencies), errors


def _run(target: str, args: argparse.Namespace) -> dict[str, float]:
    store = CentralStore.open(target)
    tokens = {}
    try:
        for n in range(args.sites):
            site = f"site-{n:05d}"
            tokens[site] = secrets.token_urlsafe(24)
            store.add_site(
                site, f"venue-{n // 4}", hashlib.sha256(tokens[site].encode()).hexdigest()
            )
    finally:
        store.close()
    requests = _bodies(args.sites, random.Random(args.seed))
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as folder:
        central = LocalCollector(Path(folder), target)
        central.start()
        try:
            elapsed, latencies, errors = asyncio.run(
                _fleet(central.url, requests, tokens, args.concurrency)
            )
            rss = peak_rss_mb(central.pid or 0)
        finally:
            central.stop()
    return {
        "batches": len(requests),
        "seconds": elapsed,
        "per_s": len(requests) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "errors": errors,
        "rss_mb": rss,
    }


def main() -> None:
    """Run the fleet against both engines and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as folder:
        results["SQLite"] = _run(str(Path(folder) / "central.db"), args)
    name = f"bench_collector_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        results["PostgreSQL"] = _run(f"postgresql://postgres@127.0.0.1:5432/{name}", args)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    print(
        f"bench.collector: {args.sites} sites, a day of insights each (+ identified batches "
        f"from every fourth), {args.concurrency} concurrent connections"
    )
    print(
        f"  {'engine':<11}{'batches':>9}{'batches/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'RSS MB':>8}"
    )
    for engine, r in results.items():
        print(
            f"  {engine:<11}{r['batches']:>9.0f}{r['per_s']:>11.1f}{r['p50_ms']:>9.1f}"
            f"{r['p99_ms']:>9.1f}{r['errors']:>8.0f}{r['rss_mb']:>8.1f}"
        )
    sqlite, pg = results["SQLite"], results["PostgreSQL"]
    print(f"  PostgreSQL / SQLite throughput: {pg['per_s'] / sqlite['per_s']:.2f}")


if __name__ == "__main__":
    main()
