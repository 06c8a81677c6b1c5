"""Benchmark: insight cells of one busy day from scratch, one incremental hour, and the I/O floor.

Run: ``python -m bench.insights [--events N] [--seed S]``. A synthetic site's day (simulated
visits at a busy rate, real Ta Feng baskets) is stored through the agent's store, then:
- full day: the 24 hour cells computed from scratch, in a fresh process (time, peak RSS);
- incremental: one late event arrives for a closed hour, the job recomputes only what it must;
- reference: a plain ``SELECT`` of the same rows (the I/O floor), in the same kind of process.
Targets: full day <= 60 s and <= 300 MB; incremental hour <= 5 % of the full day.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from edge_agent.config import load_settings
from edge_agent.core.aggregate import HOUR_MS
from edge_agent.core.events import Event, MessageId
from edge_agent.core.topics import DeviceId, parse_topic
from edge_agent.demo.catalogue import load_sales
from edge_agent.demo.simulate import site_stream
from edge_agent.store.database import Store
from edge_agent.store.events import Received

SITE = "bench"
DAY_MS = 24 * HOUR_MS
BATCH = 5000

# Run in a child process so that its peak RSS is the computation's alone.
_FULL_DAY = """
import json, resource, sys, time
from edge_agent.app.insights import compute_insights
from edge_agent.store.database import Store
from edge_agent.config import load_settings
settings = load_settings(environ={"EDGE_AGENT_SITE__DATA_DIR": sys.argv[1]})
started = time.perf_counter()
with Store.open(settings.database) as store:
    if sys.argv[2] == "scan":
        rows = store.db.conn.execute(
            "SELECT ts_ms, event, anonymous_id, pseudonym, body FROM events").fetchall()
        done = len(rows)
    else:
        done = compute_insights(store, settings, int(sys.argv[3]))
elapsed = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "done": done}))
"""


def _event(payload: dict[str, object], topic: str) -> Event:
    # Built directly: the day is the input of this benchmark, its validation is measured in
    # bench.ingest.
    user = payload.get("userId")
    return Event(
        MessageId(str(payload["messageId"])),
        "identify" if payload["type"] == "identify" else "track",
        payload.get("event"),  # type: ignore[arg-type]
        int(payload["at"]),  # type: ignore[call-overload]
        DeviceId(parse_topic(topic).device),
        payload.get("anonymousId"),  # type: ignore[arg-type]
        user if isinstance(user, str) else None,
        orjson.dumps({k: v for k, v in payload.items() if k != "at"}).decode(),
    )


def build_day(folder: Path, events: int, seed: int, day_start: int) -> float:
    """Store a busy day's events; returns the seconds it took."""
    started = time.perf_counter()
    # Visits an hour: a little more than events / 15.5 a visit, so the day reaches ``events``.
    per_hour = events / 24 / 14.5
    stream = site_stream(
        random.Random(seed), day_start, SITE, load_sales(), visits_per_hour=per_hour
    )
    in_day = itertools.takewhile(lambda p: p.at_ms < day_start + DAY_MS, stream)
    kept = (p for p in in_day if p.payload.get("event") != "Erasure Requested")
    total = 0
    settings = load_settings(environ={"EDGE_AGENT_SITE__DATA_DIR": str(folder)})
    with Store.open(settings.database, synchronous="NORMAL") as store:
        while True:
            chunk = list(itertools.islice(kept, BATCH))
            if not chunk:
                break
            received = [
                Received(_event({**p.payload, "at": p.at_ms}, p.topic), p.at_ms) for p in chunk
            ]
            total += store.commit(received, [], "v1", day_start + DAY_MS).stored
            if total >= events:
                break
    return time.perf_counter() - started


def run_child(folder: Path, what: str, now_ms: int) -> dict[str, float]:
    """Run the full-day computation or the scan in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DAY, str(folder), what, str(now_ms)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    """Build the day, measure, print the figures and the targets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    day_start = (int(time.time() * 1000) // DAY_MS - 2) * DAY_MS
    after_day = day_start + DAY_MS + HOUR_MS
    with tempfile.TemporaryDirectory(prefix="bench-insights-") as name:
        folder = Path(name)
        built = build_day(folder, args.events, args.seed, day_start)
        settings = load_settings(environ={"EDGE_AGENT_SITE__DATA_DIR": str(folder)})
        with Store.open(settings.database) as store:
            stored = store.status().stored
        print(f"bench.insights: {stored:,} events stored for one day in {built:.1f} s")
        scan = run_child(folder, "scan", after_day)
        full = run_child(folder, "compute", after_day)
        # One late event for a closed hour: only that hour and the next are recomputed.
        late_hour = day_start + 13 * HOUR_MS
        with Store.open(settings.database) as store:
            late = Event(
                MessageId("late-1"),
                "track",
                "Door Counted",
                late_hour + 5,
                DeviceId("door-1"),
                None,
                None,
                '{"properties": {"direction": "in", "count": 1}}',
            )
            store.commit([Received(late, late_hour + 5)], [], "v1", after_day)
        incremental = run_child(folder, "compute", after_day)
    ratio_scan = full["seconds"] / scan["seconds"]
    share = incremental["seconds"] / full["seconds"]
    print(
        f"  reference: plain SELECT of all rows    {scan['seconds']:7.2f} s  "
        f"peak RSS {scan['peak_mb']:6.1f} MB"
    )
    print(
        f"  full day from scratch ({int(full['done'])} hours)  {full['seconds']:7.2f} s  "
        f"peak RSS {full['peak_mb']:6.1f} MB"
        f"  ratio to the scan {ratio_scan:.2f}"
    )
    print(
        f"  incremental: one late event          {incremental['seconds']:7.2f} s  "
        f"({int(incremental['done'])} hours recomputed)"
        f"  = {100 * share:.1f} % of the full day"
    )
    print("targets:")
    print(f"  full day <= 60 s: {'PASS' if full['seconds'] <= 60 else 'FAIL'}")
    print(f"  full day <= 300 MB: {'PASS' if full['peak_mb'] <= 300 else 'FAIL'}")
    print(f"  incremental hour <= 5 % of the full day: {'PASS' if share <= 0.05 else 'FAIL'}")


if __name__ == "__main__":
    main()
