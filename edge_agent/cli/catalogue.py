"""``catalogue import`` and ``catalogue list``: the products the site's screens name."""

from __future__ import annotations

import argparse

from edge_agent.app.clock import now_ms
from edge_agent.cli.output import when
from edge_agent.config import Settings

#: Refusals printed at most; the count says how many there were.
_SHOWN = 20


def cmd_catalogue_import(args: argparse.Namespace, settings: Settings) -> int:
    """Import a catalogue file; exit 1 when a row was refused (the others are taken)."""
    from edge_agent.app.catalogue import import_file

    done = import_file(settings, args.file, now_ms())
    print(
        f"took {done.taken} products from {args.file}; the catalogue knows {done.known}, "
        f"{done.named} of them by name"
    )
    for refusal in done.refused[:_SHOWN]:
        print(f"  refused {refusal.where}: {refusal.reason}")
    if len(done.refused) > _SHOWN:
        print(f"  ... and {len(done.refused) - _SHOWN} more rows refused")
    if done.refused:
        print(f"{len(done.refused)} rows refused: fix them and import the file again")
        return 1
    return 0


def cmd_catalogue_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the products the site knows."""
    from edge_agent.app.catalogue import products

    found = products(settings, args.limit, args.after or "")
    if not found:
        print("no products yet (edge-agent catalogue import FILE, or wait for the tills)")
    for p in found:
        price = "" if p.price is None else f"{p.price:,.2f} {p.currency or ''}".strip()
        state = "" if p.available is None else ("on sale" if p.available else "not on sale")
        source = "imported" if p.imported else "from the tills"
        print(
            f"{p.product_id:<16} {p.name or '(no name)':<32} {p.category or '':<16} "
            f"{price:>14}  {state:<11} {source}, {when(p.updated_ms)}"
        )
    return 0
