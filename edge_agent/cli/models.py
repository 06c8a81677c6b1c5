"""``models list``, ``pull``, ``rollback`` and ``train``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from edge_agent.cli.output import when
from edge_agent.config import Settings
from edge_agent.core.catalogue import MIN_COVERAGE


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    """List every model version offered to this agent and what became of it."""
    from edge_agent.app import models

    entries = models.offered(settings)
    known = models.coverage(settings)
    if args.json:
        listed = [
            {
                **asdict(e),
                **(
                    {"coverage": known[e.name]} if e.name in known and e.status == "serving" else {}
                ),
            }
            for e in entries
        ]
        print(json.dumps(listed, indent=2))
        return 0
    if not entries:
        print("no model releases yet (edge-agent models pull NAME)")
    for e in entries:
        figures = ", ".join(f"{k} {v:.4f}" for k, v in sorted((e.shadow or e.metrics).items()))
        print(f"{e.name:<16}{e.version:<24}{e.status:<10}{when(e.changed_ms)}  {figures}")
        if e.reason:
            print(f"{'':<16}{e.reason}")
        share = known.get(e.name) if e.status == "serving" else None
        if share is not None and share < MIN_COVERAGE:
            print(
                f"{'':<16}LOW COVERAGE: knows {share:.0%} of the items sold here in the last "
                "30 days; it cannot suggest most of this shop's products"
            )
    return 0


def cmd_models_pull(args: argparse.Namespace, settings: Settings) -> int:
    """Pull the newest release of each named model from central; exit 1 when one was not
    promoted, 2 when one could not be pulled."""
    from edge_agent.app import models

    code = 0
    for pulled in models.pull(settings, args.name):
        e = pulled.entry
        if e is None:
            print(f"edge-agent: {pulled.name}: {pulled.error}", file=sys.stderr)
            code = 2
        elif pulled.known:
            print(f"{e.name} {e.version} is the newest release, already {e.status}")
        else:
            print(f"{e.name} {e.version}: {e.status}")
            if e.reason:
                print(f"  {e.reason}")
            if e.status != "serving":
                code = max(code, 1)
    return code


def cmd_models_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the previous version of a model again."""
    from edge_agent.app import models
    from edge_agent.core.releases import Refused

    back = models.rollback(settings, args.name)
    if isinstance(back, Refused):
        print(f"edge-agent: {back.reason}", file=sys.stderr)
        return 1
    print(f"{back.name} {back.version} is serving again")
    return 0


def cmd_models_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train the site's own models from its stored data and serve them."""
    from edge_agent.app import models
    from edge_agent.serving.training import MIN_ORDERS, MIN_PEOPLE

    trained = models.train(settings, args.quick)
    for shipped in trained.shipped:
        print(f"{shipped.name} {shipped.version} (shipped default): {shipped.status}")
    trend, personal, pairs = trained.trending, trained.personal, trained.complements
    if trend is None:
        print("trending: no orders in the last two weeks, nothing to learn from")
    if personal is None and not args.quick:
        print(
            f"next-basket: fewer than {MIN_PEOPLE} people with personalization consent and a "
            "repeat visit, nothing personal to learn from yet"
        )
    if pairs is None and not args.quick:
        print(f"complements: fewer than {MIN_ORDERS} recent orders to learn from yet")
    for entry in (e for e in (trend, personal, pairs) if e is not None):
        figures = ", ".join(f"{k} {v:.4f}" for k, v in sorted(entry.shadow.items()))
        print(f"{entry.name} {entry.version}: {entry.status} {figures} {entry.reason}".rstrip())
    return 0 if any(e is not None for e in (trend, personal, pairs)) else 1
