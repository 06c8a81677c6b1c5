"""Benchmark: a fleet syncing to the collector, on SQLite and on PostgreSQL side by side.

Run: ``python -m bench.collector [--sites 1000] [--concurrency 64]``. Each simulated site sends
one day of insight cells (24 hour cells, real sketches) in one ``/v1/sync`` batch, and every
fourth site also a ``/v1/batch`` of 50 identified items, all at once from ``--concurrency``
connections. The collector runs as its own process under uvicorn (one worker), on a fresh
SQLite file, then on a fresh PostgreSQL database (the machine's, dropped afterwards). Printed
per engine: batches/s, request latency p50/p99, errors (must be 0), the collector's peak RSS.

Then the dashboard's reads over ``--days`` (30) days of every site: the collector rolls each
site's synced day up (its own worker, waited for), the bench copies that day to the days
before it (so the reads find ``sites x days`` rolled-up days without syncing a month), and
``GET /v1/overview`` and ``GET /v1/comparison`` over the whole period are timed, ``--reads``
times each from 4 connections, beside ``GET /v1/sites`` (one row per site, no figures) as the
reference of a plain read.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
from psycopg import sql

from bench.measure import peak_rss_mb, percentile
from edge_agent.collector.local import LocalCollector
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.rollups import DAY_COLUMNS
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


def _wait_rolled_up(url: str, token: str) -> float:
    """Seconds until the collector's rollup queue is empty."""
    started = time.perf_counter()
    while True:
        answer = httpx.get(
            f"{url}/v1/overview", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        answer.raise_for_status()
        if answer.json()["days_to_roll_up"] == 0:
            return time.perf_counter() - started
        time.sleep(1)


def _copy_days(target: str, days: int) -> int:
    """Copy every site's rolled-up day to the ``days - 1`` days before it; returns the rows."""
    base = datetime.fromtimestamp(DAY_START / 1000, UTC).date()
    columns = ", ".join(DAY_COLUMNS)
    # Every column but the day and its bounds is copied as it is.
    copied = ", ".join(
        {"day": "%s", "start_ms": "start_ms - %s", "end_ms": "end_ms - %s"}.get(c, c)
        for c in DAY_COLUMNS
    )
    statement = f"INSERT INTO site_days ({columns}) SELECT {copied} FROM site_days WHERE day = %s"  # noqa: S608
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as pg:
            for back in range(1, days):
                shift = back * 24 * HOUR_MS
                pg.execute(
                    statement,
                    ((base - timedelta(days=back)).isoformat(), shift, shift, base.isoformat()),
                )
            return int(pg.execute("SELECT count(*) FROM site_days").fetchone()[0])  # type: ignore[index]
    import sqlite3

    lite = sqlite3.connect(target)
    try:
        with lite:
            for back in range(1, days):
                shift = back * 24 * HOUR_MS
                lite.execute(
                    statement.replace("%s", "?"),
                    ((base - timedelta(days=back)).isoformat(), shift, shift, base.isoformat()),
                )
        return int(lite.execute("SELECT count(*) FROM site_days").fetchone()[0])
    finally:
        lite.close()


async def _reads(url: str, token: str, path: str, params: dict[str, str], n: int) -> list[float]:
    latencies: list[float] = []
    left = list(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        while left:
            left.pop()
            started = time.perf_counter()
            answer = await client.get(url + path, params=params)
            answer.raise_for_status()
            latencies.append(time.perf_counter() - started)

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(4)))
    return sorted(latencies)


def _dashboard(central: LocalCollector, target: str, args: argparse.Namespace) -> dict[str, float]:
    """The dashboard's reads over ``args.days`` rolled-up days of every site."""
    rolled_s = _wait_rolled_up(central.url, central.admin_token)
    rows = _copy_days(target, args.days)
    last = datetime.fromtimestamp(DAY_START / 1000, UTC).date()
    span = {"from": (last - timedelta(days=args.days - 1)).isoformat(), "to": last.isoformat()}
    out: dict[str, float] = {"rolled_s": rolled_s, "day_rows": rows}
    for name, path, params in (
        ("overview", "/v1/overview", span),
        ("comparison", "/v1/comparison", span),
        ("sites", "/v1/sites", {}),
    ):
        latencies = asyncio.run(_reads(central.url, central.admin_token, path, params, args.reads))
        out[f"{name}_p50_ms"] = 1000 * percentile(latencies, 0.5)
        out[f"{name}_p99_ms"] = 1000 * percentile(latencies, 0.99)
    return out


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
            reads = _dashboard(central, target, args)
        finally:
            central.stop()
    return {
        **reads,
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
    parser.add_argument("--days", type=int, default=30, help="days the dashboard reads over")
    parser.add_argument("--reads", type=int, default=100, help="requests per dashboard read")
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
    print(
        f"dashboard reads over {args.days} days x {args.sites} sites (rolled-up days read), "
        f"{args.reads} requests each from 4 connections; reference: GET /v1/sites"
    )
    print(
        f"  {'engine':<11}{'day rows':>9}{'roll-up s':>10}{'overview p50/p99 ms':>21}"
        f"{'comparison p50/p99 ms':>23}{'sites p50/p99 ms':>18}{'overview/sites p99':>20}"
    )
    for engine, r in results.items():
        print(
            f"  {engine:<11}{r['day_rows']:>9.0f}{r['rolled_s']:>10.1f}"
            f"{r['overview_p50_ms']:>12.1f}/{r['overview_p99_ms']:<8.1f}"
            f"{r['comparison_p50_ms']:>14.1f}/{r['comparison_p99_ms']:<8.1f}"
            f"{r['sites_p50_ms']:>9.1f}/{r['sites_p99_ms']:<8.1f}"
            f"{r['overview_p99_ms'] / r['sites_p99_ms']:>11.2f}"
        )


if __name__ == "__main__":
    main()
