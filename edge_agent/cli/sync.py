"""``sync``: drain the outbox to central now."""

from __future__ import annotations

import argparse
import json

from edge_agent.config import Settings


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    """Drain the outbox to central now; exit 1 when something is left for a later retry."""
    from edge_agent.app.clock import now_ms
    from edge_agent.app.sync import send

    report = send(settings, now_ms(), force=True)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif report.skipped:
        print(f"nothing sent: {report.skipped}")
    else:
        sent = ", ".join(f"{k} {v}" for k, v in sorted(report.sent.items())) or "nothing"
        print(f"sent: {sent}")
        if report.withdrawn:
            print(f"not sent, consent withdrawn since queued: {report.withdrawn}")
        if report.dropped:
            print(f"dropped, outbox over its quota: {report.dropped}")
        if report.refused:
            print(f"refused by central (kept in sync_dead_letters): {report.refused}")
        if report.problem:
            print(f"stopped: {report.problem}; the next try in {report.retry_in_s:g} s")
        left = ", ".join(f"{k} {v}" for k, v in sorted(report.remaining.items())) or "nothing"
        print(f"still queued: {left}")
    return 1 if report.problem else 0
