"""The shipped next-basket default: the site recipe fitted on the packaged demo sales.

Run: ``python -m bench.shipped_default --key release-key.pem``. The people are the sales'
known customers (their receipts in time order), anonymous receipts add what goes together;
the vocabulary is the sales' stock codes, the ids the demo's tills send. The metrics are the
recipe's on each repeat customer's latest receipt, fitted without those receipts; the file
that ships is then fitted on every receipt. Prints the figures and writes the signed release
under ``edge_agent/serving/shipped/next-basket/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.measure import peak_rss_mb
from edge_agent.core import nbr
from edge_agent.core.nbr_onnx import serialize
from edge_agent.core.recommend import PERSONAL
from edge_agent.core.releases import Manifest, release
from edge_agent.demo.catalogue import load_sales
from edge_agent.serving.training import SHIPPED, bounded_threads

VERSION = "online-retail-2010"


def people(index: dict[str, int]) -> list[tuple[list[list[int]], list[int] | None]]:
    """(history, latest receipt) per known customer with two receipts or more; every other
    receipt (a one-time or an anonymous customer's) as a history of its own."""
    by_customer: dict[str, list[list[int]]] = {}
    alone: list[list[int]] = []
    for basket in load_sales().baskets:
        items = sorted({index[line.product.product_id] for line in basket.lines})
        if basket.customer is None:
            alone.append(items)
        else:
            by_customer.setdefault(basket.customer, []).append(items)
    found: list[tuple[list[list[int]], list[int] | None]] = [
        (receipts[:-1], receipts[-1]) for receipts in by_customer.values() if len(receipts) >= 2
    ]
    found += [(receipts, None) for receipts in by_customer.values() if len(receipts) == 1]
    return found + [([items], None) for items in alone]


def main(argv: Sequence[str] | None = None) -> int:
    """Fit, score, sign and write the shipped default; print what it measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", type=Path, required=True, help="the release Ed25519 key (PEM)")
    args = parser.parse_args(argv)
    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{args.key} is not an Ed25519 private key")
    catalogue = load_sales()
    vocabulary = tuple(sorted(catalogue.products))
    index = {item: n for n, item in enumerate(vocabulary)}
    found = people(index)
    repeat = [(h, latest) for h, latest in found if latest is not None]
    params = nbr.recipe_params(len(found), len(vocabulary))
    began = time.perf_counter()
    with bounded_threads():
        # Scored as a site would judge it: the latest receipts held out, never trained on.
        held = nbr.fit_recipe([(h, None) for h, _ in found], len(vocabulary), params)
        ranked = held.model.recommend([h for h, _ in repeat], 20).tolist()
        metrics = nbr.evaluate([latest for _, latest in repeat], ranked)
        tuned = nbr.fit_recipe(found, len(vocabulary), params)
    seconds = time.perf_counter() - began
    model = serialize(tuned.model)
    unsigned = Manifest(
        PERSONAL,
        VERSION,
        datetime.now(UTC).isoformat(timespec="seconds"),
        vocabulary,
        "",
        0,
        inputs={"history": {"shape": [1, len(vocabulary)], "decay": params.decay}, "k": [1]},
        outputs={
            "scores": [1, len(vocabulary)],
            "items": [1, "k"],
            "top_scores": [1, "k"],
        },
        training={
            "data": 'UCI "Online Retail" (CC BY 4.0), 1-5 December 2010, the demo\'s sales',
            "people": len(repeat),
            "histories": len(found),
            "ridge": tuned.ridge,
            "repeat_weight": tuned.repeat_weight,
            "rank": params.rank,
            "metrics_from": "each repeat customer's latest receipt, fitted without it",
        },
        metrics=metrics,
    )
    target = SHIPPED / PERSONAL / VERSION
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.onnx").write_bytes(model)
    manifest = release(unsigned, model, key)
    (target / "manifest.json").write_text(json.dumps(manifest.document(), indent=1) + "\n")
    print(
        f"{len(vocabulary)} products, {len(found)} histories ({len(repeat)} repeat customers), "
        f"rank {params.rank}\n"
        + "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        + f"\ntraining {seconds:.2f} s (both fits, 1 BLAS thread), peak RSS {peak_rss_mb():.0f} "
        f"MB, ONNX {len(model) / 1e6:.2f} MB\nwritten to {target}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
