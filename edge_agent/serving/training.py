"""Training on the site's own stored data, into the model registry.

Trending learns from every recent order (no person involved: quantities per item). Models
of persons learn only from ``profile_purchases``, which holds purchases of people who granted
``personalization`` and nothing else.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from threadpoolctl import threadpool_limits

from edge_agent.core import complements, trending
from edge_agent.core.nbr import evaluate, fit_recipe, recipe_params, top_k, validation_people
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
    metrics: Mapping[str, float] | None = None,
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
        metrics=dict(metrics or {}),
    )


def _serve(
    models: Models, manifest: Manifest, model: bytes, now_ms: int, shadow: Shadow | None = None
) -> Entry:
    raw = orjson.dumps(release_unsigned(manifest, model).document())
    return models.install(raw, model, None, now_ms, shadow)


def train_next_basket(store: Store, models: Models, now_ms: int) -> Entry | None:
    """Fit the next-basket model on this site's data with the one recipe
    (`edge_agent.core.nbr.fit_recipe`) and serve it when it is not worse than the serving
    one on the validation people's latest baskets; None when too few people.

    Personal histories come only from ``profile_purchases`` (people with personalization).
    A fifth of the people (when that is at least ten) are held out: their latest basket
    chooses the settings and judges the model, and is never trained on; everyone else's
    latest basket is a time-aligned training pair. A smaller site learns from histories
    alone, with the default settings, and everyone's latest basket judges. Recent anonymous
    orders add what goes together. numpy's BLAS runs on one thread (see `bounded_threads`).

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
    recipe: list[tuple[list[list[int]], list[int] | None]] = [
        ([[index[i] for i in b] for b in history], [index[i] for i in latest])
        for history, latest in people
    ]
    recipe += [([[index[i] for i in lines]], None) for _, lines in orders]
    held = validation_people([latest is not None for _, latest in recipe])
    if not any(held):
        # Too few people to hold a fifth out: learn from histories alone and let everyone's
        # latest basket judge (none of them was trained on).
        recipe = [(history, None) for history, _ in recipe]
    params = recipe_params(len(recipe), len(items))
    with bounded_threads():
        tuned = fit_recipe(recipe, len(items), params, held)
    manifest = _site_manifest(
        PERSONAL,
        tuple(items),
        now_ms,
        {"history": {"shape": [1, len(items)], "decay": params.decay}, "k": [1]},
        {
            "people": len(people),
            "validated_on": tuned.validated_on,
            "anonymous_orders": len(orders),
            "rank": params.rank,
            "ridge": tuned.ridge,
            "repeat_weight": tuned.repeat_weight,
        },
        tuned.validation,
    )
    judged = [case for case, v in zip(people, held, strict=False) if v]
    shadow = local_shadow(store, only=judged) if judged else local_shadow(store)
    return _serve(models, manifest, serialize(tuned.model), now_ms, shadow=shadow)


@contextmanager
def bounded_threads() -> Iterator[None]:
    """numpy's BLAS on one thread while a model trains: on a 2-core box OpenBLAS's default
    (a thread per core, spinning) ran the fit up to 5 times slower, and the agent and the
    screens' server need the other core."""
    with threadpool_limits(limits=1):
        yield


#: The newest orders, a fifth of them up to this many, are held out to judge a complements
#: model; with fewer orders than MIN_ORDERS there is too little to learn pairs from.
HOLDOUT_ORDERS = 300
MIN_ORDERS = 100


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
    if len(orders) < MIN_ORDERS:
        return None
    holdout = min(HOLDOUT_ORDERS, len(orders) // 5)
    items = sorted({i for lines in orders for i in lines})
    index = {item: n for n, item in enumerate(items)}
    held = [sorted(lines) for lines in orders[-holdout:] if len(lines) >= 2]
    fitted = complements.fit([[index[i] for i in lines] for lines in orders[:-holdout]], len(items))
    manifest = _site_manifest(
        COMPLEMENTS,
        tuple(items),
        now_ms,
        {"basket": [1, len(items)]},
        {"orders": len(orders) - holdout, "held_out": holdout, "rank": int(fitted.shape[1])},
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
