"""``screens add``, ``list``, ``revoke``, and ``recommend`` (what a screen would show)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from edge_agent.cli.output import when
from edge_agent.config import Settings

if TYPE_CHECKING:
    from edge_agent.store.screens import Kind


def cmd_screens_add(args: argparse.Namespace, settings: Settings) -> int:
    """Register a screen and print its one-time pairing code."""
    from edge_agent.app.screens import GATES, add_screen

    kind: Kind = "gate" if args.gate else "zone" if args.zone else "device"
    added = add_screen(settings, kind, GATES if args.gate else args.zone or args.device, args.label)
    where = {"device": added.place, "zone": f"zone {added.place}", "gate": "the gates"}[kind]
    print(f"screen {added.id} for {where}: pairing code {added.code}")
    print(
        f"open {added.url} on the screen (the code works once, "
        f"for {added.expires_in_min} minutes; the page keeps the token it gets for it)"
    )
    return 0


def cmd_screens_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the registered screens."""
    from edge_agent.app.screens import registered

    found = registered(settings)
    if not found:
        print("no screens (edge-agent screens add --device DEVICE)")
    for s in found:
        state = (
            f"revoked {when(s.revoked_ms)}"
            if s.revoked_ms
            else f"paired {when(s.paired_ms)}"
            if s.paired_ms
            else "waiting for its pairing code"
        )
        print(f"{s.id:>4}  {s.place:<16}{s.label:<20}{state}")
    return 0


def cmd_screens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Lock a screen out at once."""
    from edge_agent.app.screens import revoke

    if not revoke(settings, args.id):
        print(f"edge-agent: no screen {args.id} to revoke", file=sys.stderr)
        return 1
    print(f"screen {args.id} is locked out")
    return 0


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    """Print what a staff screen would show for a visitor and a basket."""
    from edge_agent.app.screens import recommend

    basket = tuple(item for item in (args.basket or "").split(",") if item)
    lists, missing = recommend(settings, args.user_id, basket, args.k)
    if args.json:
        shown: dict[str, object] = {k: [asdict(p) for p in v] for k, v in lists.items()}
        print(json.dumps({**shown, "missing": missing}, indent=2))
        return 0
    for source, picks in lists.items():
        print(f"{source}:")
        for p in picks:
            print(f"  {p.item:<16}{p.score:10.3f}  {p.reason}")
    for source, why in missing.items():
        print(f"{source}: none: {why}")
    return 0
