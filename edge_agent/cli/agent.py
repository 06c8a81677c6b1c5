"""``run`` and ``status``: the agent itself."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from edge_agent.cli.output import when
from edge_agent.config import Settings


def _agent_line(heartbeat: tuple[str, int] | None, every_s: float) -> str:
    if heartbeat is None:
        return "never ran"
    state, at = heartbeat
    if state == "stopped":
        return f"stopped at {when(at)}"
    silent_s = time.time() - at / 1000
    if silent_s > 3 * every_s:
        return f"not seen since {when(at)}: is it running? (it may have been killed)"
    return f"running (heartbeat {silent_s:.0f} s ago)"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the agent in the foreground."""
    from edge_agent import logs
    from edge_agent.app import ingest
    from edge_agent.service import under_journald

    logs.setup(settings.log.level, under_journald())
    ingest.run(settings)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the store's counters."""
    from edge_agent.app.status import counters
    from edge_agent.core.health import HEARTBEAT_EVERY_S

    status = counters(settings)
    if args.json:
        print(json.dumps(asdict(status), indent=2))
        return 0
    broker = status.broker.get("broker")
    heartbeat = status.broker.get("heartbeat")
    print(f"site:             {settings.site.id}")
    print(f"database:         {settings.database}")
    print(f"events stored:    {status.stored}")
    print(f"duplicates:       {status.duplicates}")
    unkept = (
        f" ({status.dead_letters_unkept} over the budget: counted, not kept)"
        if status.dead_letters_unkept
        else ""
    )
    print(f"dead letters:     {sum(status.dead_letters_by_reason.values())}{unkept}")
    for reason, count in status.dead_letters_by_reason.items():
        print(f"  {reason:<24}{count}")
    print(f"agent:            {_agent_line(heartbeat, HEARTBEAT_EVERY_S)}")
    print(f"last event time:  {when(status.last_event_ms)}")
    print(f"last stored at:   {when(status.last_stored_ms)}")
    print(
        "broker:           "
        + (f"{broker[0]} since {when(broker[1])}" if broker else "unknown (the agent never ran)")
    )
    queued = ", ".join(f"{k} {n}" for k, n in sorted(status.outbox.items())) or "empty"
    print(f"outbox:           {queued}")
    lost = ", ".join(
        f"{kind} {reason} {n}"
        for kind, reasons in sorted(status.outbox_losses.items())
        for reason, n in sorted(reasons.items())
    )
    print(f"outbox losses:    {lost or 'none'}")
    return 0
