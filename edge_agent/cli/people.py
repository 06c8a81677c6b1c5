"""``forget`` and ``export-person``: a person's rights."""

from __future__ import annotations

import argparse
import json

from edge_agent.config import Settings


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase a person and print the receipt."""
    from edge_agent.app import people

    receipt = people.forget(settings, args.user_id)
    print(json.dumps(receipt.as_dict(), indent=2))
    return 0


def cmd_export_person(args: argparse.Namespace, settings: Settings) -> int:
    """Write everything held about a person as JSON."""
    from edge_agent.app import people

    document = json.dumps(people.export_person(settings, args.user_id), indent=2, default=str)
    if args.output:
        args.output.write_text(document + "\n")
        print(f"written to {args.output}")
    else:
        print(document)
    return 0
