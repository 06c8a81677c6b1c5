"""``dead-letters list``, ``show`` and ``replay``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from edge_agent.cli.output import when
from edge_agent.config import Settings


def cmd_dead_letters_list(args: argparse.Namespace, settings: Settings) -> int:
    """List dead letters, newest first."""
    from edge_agent.app import deadletters

    rows = deadletters.list_dead_letters(settings, args.reason, args.all, args.limit)
    if args.json:
        print(
            json.dumps([{k: v for k, v in asdict(r).items() if k != "raw"} for r in rows], indent=2)
        )
        return 0
    if not rows:
        print("no dead letters")
    for r in rows:
        repeat = f" x{r.occurrences}" if r.occurrences > 1 else ""
        repeat += " (a sample)" if r.kept == "sample" else ""
        print(f"{r.id:>6}  {when(r.received_ms)}  {r.status:<8} {r.reason:<20} {r.topic}{repeat}")
        print(f"        {r.detail}")
    unkept = [
        u for u in deadletters.unkept_dead_letters(settings) if args.reason in (None, u.reason)
    ]
    if unkept:
        print(
            "over the budget, counted but not kept ([store] dead_letters_first, "
            "dead_letters_sample_every, dead_letters_max_mb):"
        )
    for u in unkept:
        print(
            f"        {u.occurrences} more {u.reason} from {u.source} "
            f"({u.bytes} bytes), {when(u.first_ms)} to {when(u.last_ms)}"
        )
    return 0


def cmd_dead_letters_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one dead letter with its payload."""
    from edge_agent.app import deadletters

    row = deadletters.get_dead_letter(settings, args.id)
    if row is None:
        print(f"no dead letter with id {args.id}", file=sys.stderr)
        return 1
    print(f"id:           {row.id}")
    print(f"status:       {row.status}")
    print(f"reason:       {row.reason}")
    print(f"detail:       {row.detail}")
    print(f"topic:        {row.topic}")
    print(
        f"received:     {when(row.received_ms)} "
        f"(last seen {when(row.last_seen_ms)}, {row.occurrences}x)"
    )
    print(
        f"payload:      {row.raw_size} bytes, sha256 {row.raw_sha256}"
        + (", truncated" if len(row.raw) < row.raw_size else "")
    )
    if args.raw:
        sys.stdout.buffer.write(row.raw)
        sys.stdout.flush()
    else:
        print(row.raw[:4096].decode("utf-8", "backslashreplace"))
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Validate dead letters again with the current schemas."""
    from edge_agent.app import deadletters

    if not (args.id or args.reason or args.all):
        print(
            "say which dead letters to replay: --id N (repeatable), --reason R or --all",
            file=sys.stderr,
        )
        return 2
    report = deadletters.replay_dead_letters(settings, args.id or None, args.reason)
    print(
        f"examined {report.examined}, fixed {report.fixed} (stored {report.stored} events, "
        f"{report.duplicates} already stored), not replayable {report.not_replayable}"
    )
    for reason, count in report.still_rejected.items():
        print(f"  still rejected: {reason} x{count}")
    return 0
