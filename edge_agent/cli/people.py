"""``forget`` and ``export-person``: a person's rights."""

from __future__ import annotations

import argparse
import json

from edge_agent.config import Settings


def named(args: argparse.Namespace) -> tuple[str, str]:
    """Who the command names: a userId, a ticket or a badge (the parser asks for one)."""
    if args.ticket is not None:
        return "ticket", str(args.ticket)
    if args.badge is not None:
        return "badge", str(args.badge)
    return "user_id", str(args.user_id)


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase a person and print the receipt."""
    from edge_agent.app import people

    receipt = people.forget(settings, named(args))
    print(json.dumps(receipt.as_dict(), indent=2))
    return 0


def cmd_export_person(args: argparse.Namespace, settings: Settings) -> int:
    """Write everything held about a person as JSON."""
    from edge_agent.app import people

    document = json.dumps(people.export_person(settings, named(args)), indent=2, default=str)
    if args.output:
        args.output.write_text(document + "\n")
        print(f"written to {args.output}")
    else:
        print(document)
    return 0
