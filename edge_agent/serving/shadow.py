"""Shadow evaluation: a model scored on this site's own recent baskets, before it may serve.

The cases are the people who granted ``personalization`` (``profile_purchases`` holds no one
else): each one's latest basket is the truth, the baskets before it the history. A candidate
and the serving model are scored on the same cases (recall@10, NDCG@10); with too few cases the
registry falls back to the releases' offline metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnxruntime as ort

from edge_agent.core.nbr import evaluate, top_k
from edge_agent.core.recommend import Context, inputs
from edge_agent.core.releases import Manifest
from edge_agent.serving.models import Shadow
from edge_agent.serving.recommend import history_decay, run_model
from edge_agent.store.database import Store

#: Fewer people than this with two or more baskets: not enough to tell two models apart.
MIN_CASES = 30


def cases(store: Store) -> list[tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]]:
    """(history, latest basket) of every consenting person with at least two baskets.

    Raises:
        StorageError: the database cannot be read.
    """
    baskets = store.people.baskets().values()
    return [(tuple(b[:-1]), b[-1]) for b in baskets if len(b) >= 2]


def local_shadow(
    store: Store,
    minimum: int = MIN_CASES,
    only: Sequence[tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]] | None = None,
) -> Shadow | None:
    """A shadow evaluation over the site's cases (``only``: these of them, the ones a
    candidate was not trained on), or None when there are too few."""
    found = cases(store) if only is None else list(only)
    if len(found) < minimum:
        return None

    def shadow(session: ort.InferenceSession, manifest: Manifest) -> Mapping[str, float]:
        index = {item: i for i, item in enumerate(manifest.vocabulary)}
        decay = history_decay(manifest)
        truths, rankings = [], []
        for history, latest in found:
            vectors = inputs(Context((), history, True), manifest.vocabulary, decay)
            row = run_model(session, vectors)
            # An item the model does not know still counts in the truth: a model with a
            # smaller vocabulary must not look better for it.
            truths.append([index.get(item, -1 - n) for n, item in enumerate(latest)])
            rankings.append([int(i) for i in top_k(row[None, :], 10)[0]])
        return evaluate(truths, rankings, ks=(10,))

    return shadow
