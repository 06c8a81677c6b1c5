"""Training on the site's own stored data, into the model registry.

Trending learns from every recent order (no person involved: quantities per item). Models
of persons learn only from ``profile_purchases``, which holds purchases of people who granted
``personalization`` and nothing else.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.core import complements, trending
from edge_agent.core.nbr import NbrParams, evaluate, fit_nbr, top_k
from edge_agent.core.nbr_onnx import serialize
from edge_agent.core.recommend import COMPLEMENTS, PERSONAL, Context, inputs
from edge_agent.core.releases import Manifest, release_unsigned
from edge_agent.errors import ModelIntegrityError
from edge_agent.serving.models import Models, Shadow
from edge_agent.serving.recommend import run_model
from edge_agent.serving.shadow import cases, local_shadow
from edge_agent.store.database import Store
from edge_agent.store.registry import Entry

#: The releases that ship inside the package, signed by the project's release key.
SHIPPED = Path(__file__).resolve().parent / "shipped"

#: Fewer consenting people with a repeat visit than this: nothing personal to learn yet.
MIN_PEOPLE = 30
#: Anonymous orders this recent also teach which items go together (no person involved).
ORDERS_WINDOW_DAYS = 90


def recent_orders(store: Store, since_ms: int) -> list[tuple[int, dict[str, int]]]:
    """``(time, {item: quantity})`` of every order stored since ``since_ms``.

    Raises:
        StorageError: the database cannot be read.
    """
    orders = []
    for ts_ms, products in store.events.orders(since_ms):
        lines: dict[str, int] = {}
        for line in products:
            item = str(line.get("product_id"))
            lines[item] = lines.get(item, 0) + int(line.get("quantity", 1))
        orders.append((ts_ms, lines))
    return orders


def install_shipped(models: Models, now_ms: int, folder: Path = SHIPPED) -> list[Entry]:
    """Serve the shipped default of any model nothing serves yet (and that was never judged
    here), verified against the release key shipped beside it.

    Raises:
        StorageError: the registry cannot be written.
        ModelIntegrityError: the folder or its release key is missing (an incomplete
            installation: without it the default model would silently never serve).
    """
    public = folder / "publisher.pub"
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.read_text().strip()))
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(
            f"the shipped models' release key {public} cannot be read ({exc}): the installation "
            "is incomplete; reinstall edge-agent"
        ) from exc
    entries = models.entries()
    judged = {(e.name, e.version) for e in entries}
    # Read from the registry alone: loading a serving model only to see that it serves
    # would cost a session every run.
    served = {e.name for e in entries if e.status == "serving"}
    installed = []
    for manifest_file in sorted(folder.glob("*/*/manifest.json")):
        name, version = manifest_file.parent.parent.name, manifest_file.parent.name
        if (name, version) in judged or name in served:
            continue
        model = (manifest_file.parent / "model.onnx").read_bytes()
        installed.append(models.install(manifest_file.read_bytes(), model, key, now_ms))
    return installed


def train_trending(store: Store, models: Models, now_ms: int) -> Entry | None:
    """Build and serve the trending model from the last two weeks' orders; None when the
    site has sold nothing in that time.

    Raises:
        StorageError: the database or the model folder cannot be used.
    """
    orders = recent_orders(store, now_ms - trending.WINDOW_DAYS * trending.DAY_MS)
    by_item = trending.scores(orders, now_ms)
    if not by_item:
        return None
    vocabulary = tuple(sorted(by_item))
    model = trending.graph(vocabulary, by_item)
    training = {"orders": len(orders), "window_days": trending.WINDOW_DAYS}
    manifest = _site_manifest("trending", vocabulary, now_ms, {}, training)
    return _serve(models, manifest, model, now_ms)


def _site_manifest(
    name: str,
    vocabulary: tuple[str, ...],
    now_ms: int,
    inputs: Mapping[str, object],
    training: Mapping[str, object],
) -> Manifest:
    """The manifest of a model trained here (its version is when it was made)."""
    created = datetime.fromtimestamp(now_ms / 1000, UTC)
    return Manifest(
        name,
        f"site-{created:%Y%m%dT%H%M%S}",
        created.isoformat(timespec="seconds"),
        vocabulary,
        "",
        0,
        inputs=inputs,
        outputs={"scores": [1, len(vocabulary)]},
        training=training,
    )


def _serve(
    models: Models, manifest: Manifest, model: bytes, now_ms: int, shadow: Shadow | None = None
) -> Entry:
    raw = orjson.dumps(release_unsigned(manifest, model).document())
    return models.install(raw, model, None, now_ms, shadow)


def train_next_basket(store: Store, models: Models, now_ms: int) -> Entry | None:
    """Fit the next-basket model on this site's data and serve it when it is not worse than
    the serving one on each consenting person's latest basket; None when too few people.

    Personal histories come only from ``profile_purchases`` (people with personalization);
    each person's latest basket is held out to judge the model, never trained on. Recent
    anonymous orders add what goes together.

    Raises:
        StorageError: the database or the model folder cannot be used.
    """
    people = cases(store)
    if len(people) < MIN_PEOPLE:
        return None
    orders = recent_orders(store, now_ms - ORDERS_WINDOW_DAYS * trending.DAY_MS)
    items = sorted(
        {i for history, latest in people for b in (*history, latest) for i in b}
        | {i for _, lines in orders for i in lines}
    )
    index = {item: n for n, item in enumerate(items)}
    histories = [[[index[i] for i in b] for b in history] for history, _ in people]
    histories += [[[index[i] for i in lines]] for _, lines in orders]
    params = NbrParams(rank=max(8, min(256, len(histories) // 2, len(items) - 1)))
    fitted = fit_nbr(histories, [None] * len(histories), len(items), params)
    manifest = _site_manifest(
        PERSONAL,
        tuple(items),
        now_ms,
        {"history": {"shape": [1, len(items)], "decay": params.decay}, "k": [1]},
        {"people": len(people), "anonymous_orders": len(orders), "rank": params.rank},
    )
    return _serve(models, manifest, serialize(fitted), now_ms, shadow=local_shadow(store))


#: The newest orders of this many items or more are held out to judge a complements model.
HOLDOUT_ORDERS = 300


def train_complements(store: Store, models: Models, now_ms: int) -> Entry | None:
    """Fit the complements model on recent orders and serve it when, on the newest orders
    held out (each with one item hidden), it finds the hidden item at least as well as the
    serving one; None when the site has too few orders.

    Raises:
        StorageError: the database or the model folder cannot be used.
    """
    orders = [
        lines for _, lines in recent_orders(store, now_ms - ORDERS_WINDOW_DAYS * trending.DAY_MS)
    ]
    if len(orders) < 2 * HOLDOUT_ORDERS:
        return None
    items = sorted({i for lines in orders for i in lines})
    index = {item: n for n, item in enumerate(items)}
    held = [sorted(lines) for lines in orders[-HOLDOUT_ORDERS:] if len(lines) >= 2]
    fitted = complements.fit(
        [[index[i] for i in lines] for lines in orders[:-HOLDOUT_ORDERS]], len(items)
    )
    manifest = _site_manifest(
        COMPLEMENTS,
        tuple(items),
        now_ms,
        {"basket": [1, len(items)]},
        {"orders": len(orders) - HOLDOUT_ORDERS, "rank": int(fitted.shape[1])},
    )
    return _serve(models, manifest, complements.graph(fitted), now_ms, _hidden_item(held))


def _hidden_item(held: list[list[str]]) -> Shadow:
    """Scores a complements model by finding each held-out order's last item from the rest."""

    def shadow(session: ort.InferenceSession, manifest: Manifest) -> Mapping[str, float]:
        truths, rankings = [], []
        index = {item: n for n, item in enumerate(manifest.vocabulary)}
        for lines in held:
            shown, hidden = tuple(lines[:-1]), lines[-1]
            row = run_model(session, inputs(Context(shown), manifest.vocabulary))
            row[[index[i] for i in shown if i in index]] = -np.inf
            truths.append([index.get(hidden, -1)])
            rankings.append([int(i) for i in top_k(row[None, :], 10)[0]])
        return evaluate(truths, rankings, ks=(10,))

    return shadow
