"""Benchmark: a staff screen's recommendation request, end to end in the agent's process.

Run: ``python -m bench.recommend [--days 3] [--requests 500]``. The demo site's simulated days
go through the real ingest path into SQLite; the site trains its own models (trending and
next-basket, from the people who granted personalization); then requests for consenting
visitors with a basket are answered by `Recommender.recommend` (consent read, history read,
three models in onnxruntime on one thread, the business rules, the reasons). Printed: request
latency p50/p99, the reference (one bare onnxruntime run of the next-basket model, the floor)
and the ratio, training time (``models train`` in its own process, as the nightly job runs
it), and the serving process's peak RSS with every model loaded. The same request through the
agent's HTTP API, from one and from 20 screens, is measured by `bench.screen`.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import peak_rss_mb, percentile
from bench.sync import DAY_MS, SITE, store_days
from edge_agent.config import load_settings
from edge_agent.core.recommend import PERSONAL, Context, inputs
from edge_agent.serving.models import Models
from edge_agent.serving.recommend import Recommender, run_model
from edge_agent.store.database import Store


def _percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return percentile(ordered, 0.5), percentile(ordered, 0.99)


def main() -> None:
    """Store the days, train, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    now = int(time.time() * 1000)
    start = now - args.days * DAY_MS
    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as name:
        folder = Path(name)
        config = folder / "agent.toml"
        config.write_text(
            f'[site]\nid = "{SITE}"\ndata_dir = "{folder}"\n'
            f"[ingest]\nmax_past_age_s = {args.days * 86400 + 86400}\n"
        )
        settings = load_settings(config, environ={})
        store_days(settings, start, now, args.seed)
        # Trained the way the agent's nightly job does it: in a child process of its own,
        # so that the serving process's memory is the serving memory.
        began = time.perf_counter()
        trained = subprocess.run(
            [sys.executable, "-m", "edge_agent", "--config", str(config), "models", "train"],
            capture_output=True,
            text=True,
            check=True,
        )
        trained_s = time.perf_counter() - began
        with Store.open(settings.database, "NORMAL") as store:
            models = Models(store, settings.models_folder)
            people = [
                row[0]
                for row in store.db.execute(
                    "SELECT DISTINCT pseudonym FROM profile_purchases ORDER BY pseudonym"
                )
            ]
            products = [
                row[0]
                for row in store.db.execute(
                    "SELECT DISTINCT json_extract(value, '$.product_id') FROM events, "
                    "json_each(json_extract(body, '$.properties.products')) "
                    "WHERE event = 'Order Completed' LIMIT 2000"
                )
            ]
            recommender = Recommender(store, models)
            rng = random.Random(args.seed)
            for _ in range(20):  # warm the sessions and SQLite's cache
                recommender.recommend(rng.choice(people), tuple(rng.sample(products, 3)))
            times = []
            for _ in range(args.requests):
                visitor, basket = rng.choice(people), tuple(rng.sample(products, 3))
                t = time.perf_counter()
                recommender.recommend(visitor, basket)
                times.append((time.perf_counter() - t) * 1000)
            serving = models.serving(PERSONAL)
            assert serving is not None
            manifest, session = serving
            vectors = inputs(Context((), (tuple(products[:5]),), True), manifest.vocabulary, 0.9)
            floor = []
            for _ in range(args.requests):
                t = time.perf_counter()
                run_model(session, vectors)
                floor.append((time.perf_counter() - t) * 1000)
    p50, p99 = _percentiles(times)
    f50, f99 = _percentiles(floor)
    print(f"bench.recommend: {args.days} simulated days, {len(people)} consenting people")
    print("  " + trained.stdout.strip().replace("\n", "\n  "))
    print(f"  training (models train, its own process): {trained_s:.1f} s")
    print(f"  one request (3 lists, reasons): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"  reference, one bare next-basket run: p50 {f50:.2f} ms, p99 {f99:.2f} ms")
    print(f"  ratio p50 {p50 / f50:.1f}x; peak RSS with every model loaded {peak_rss_mb():.0f} MB")
    print(f"  requests/s on one thread: {1000 / float(np.mean(times)):.0f}")


if __name__ == "__main__":
    main()
