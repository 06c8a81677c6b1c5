"""What a staff screen shows after the models have scored: business rules and reasons.

The models (ONNX, in onnxruntime) give a score per vocabulary item. Here, without I/O: only
available items, nothing already in the basket, no item twice across the lists, and a short
reason per item that a shop assistant can say out loud. A visitor without ``personalization``
consent gets no personal list at all, and their history is never an input: the caller passes
an empty one (`Context.personal` is False), so the result equals the anonymous result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_agent.core.catalogue import MIN_COVERAGE, shown_name
from edge_agent.core.nbr import decay_weights

#: A personal pick's reason counts the visits it was bought on among this many latest ones.
RECENT_VISITS = 10
PERSONAL = "next-basket"
COMPLEMENTS = "complements"
TRENDING = "trending"


@dataclass(frozen=True, slots=True)
class Context:
    """What the screen knows about the visitor in front of it.

    ``history`` is the person's past baskets (item ids), only when ``personal`` (consent to
    personalization); ``basket`` is what is being rung up now.
    """

    basket: tuple[str, ...] = ()
    history: tuple[tuple[str, ...], ...] = ()
    personal: bool = False


@dataclass(frozen=True, slots=True)
class Pick:
    """One recommended item, why, and from which list."""

    item: str
    score: float
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class Inputs:
    """The model inputs of a context over a vocabulary: ``history`` weights (share of the
    person's baskets holding the item) and ``basket`` (1 per item in the basket)."""

    history: npt.NDArray[np.float32]
    basket: npt.NDArray[np.float32]
    #: Per item the person bought: on how many of their last ``RECENT_VISITS`` visits, of
    #: how many (0 of them: only on earlier visits).
    bought: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def inputs(context: Context, vocabulary: Sequence[str], decay: float = 1.0) -> Inputs:
    """The vectors the models take for ``context`` (unknown items are left out).

    ``history`` is the decayed average basket the next-basket model was trained on: basket
    ``j`` of ``n`` (oldest first) weighs ``decay ** (n-1-j)``, normalised; with decay 1 it is
    the share of baskets holding each item.
    """
    index = {item: i for i, item in enumerate(vocabulary)}
    history = np.zeros((1, len(vocabulary)), dtype=np.float32)
    basket = np.zeros((1, len(vocabulary)), dtype=np.float32)
    bought: dict[str, tuple[int, int]] = {}
    if context.personal and context.history:
        counts: dict[str, int] = {}
        weights = decay_weights(len(context.history), decay)
        for past, weight in zip(context.history, weights, strict=True):
            for item in set(past):
                counts[item] = counts.get(item, 0) + 1
                if item in index:
                    history[0, index[item]] += weight
        recent = context.history[-RECENT_VISITS:]
        bought = {item: (sum(item in past for past in recent), len(recent)) for item in counts}
    for item in context.basket:
        if item in index:
            basket[0, index[item]] = 1.0
    return Inputs(history, basket, bought)


def pick(
    scores: Mapping[str, npt.NDArray[np.float32]],
    vocabulary: Sequence[str],
    context: Context,
    available: frozenset[str] | None,
    k: int,
    bought: Mapping[str, tuple[int, int]],
    goes_with: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, list[Pick]]:
    """Up to ``k`` items per list (personal, complements, trending), best first.

    Args:
        scores: each model's score row over ``vocabulary`` (lists whose model is missing are
            simply absent).
        vocabulary: item ids in score order.
        context: the visitor; no personal list unless ``context.personal``.
        available: items that may be offered (None: all).
        k: the length of each list.
        bought: on how many of their latest visits the person bought each item (from
            `inputs`), for the reasons.
        goes_with: for complements, the basket item each one goes with best.
        names: the products' names, for the reasons (an item without one is said to be
            unnamed, never shown as its id).
    """
    taken = set(context.basket)
    out: dict[str, list[Pick]] = {}
    for source in (PERSONAL, COMPLEMENTS, TRENDING):
        row = scores.get(source)
        if row is None or (source == PERSONAL and not context.personal):
            continue
        if source == COMPLEMENTS and not context.basket:
            continue
        chosen: list[Pick] = []
        # Stable order: ties go to the earlier vocabulary entry, so a list never flickers.
        for i in np.argsort(-np.asarray(row, dtype=np.float64).ravel(), kind="stable"):
            if len(chosen) == k:
                break
            item = vocabulary[int(i)]
            value = float(row.ravel()[i])
            if item in taken or (available is not None and item not in available):
                continue
            if not np.isfinite(value) or value <= 0:
                break
            reason = _reason(source, item, bought, goes_with, names or {})
            chosen.append(Pick(item, value, reason, source))
            taken.add(item)
        if chosen:
            out[source] = chosen
    return out


def _reason(
    source: str,
    item: str,
    bought: Mapping[str, tuple[int, int]],
    goes_with: Mapping[str, str] | None,
    names: Mapping[str, str],
) -> str:
    if source == PERSONAL:
        if item not in bought:
            return "shoppers with baskets like yours buy this"
        times, visits = bought[item]
        if times == 0:
            return "you have bought this before"
        if times == visits == 1:
            return "you bought this on your last visit"
        if times == visits:
            return f"you bought this on each of your last {visits} visits"
        return f"you bought this on {times} of your last {visits} visits"
    if source == COMPLEMENTS:
        partner = (goes_with or {}).get(item)
        if partner is None:
            return "often bought with this basket"
        return f"often bought with {shown_name(partner, names.get(partner))}"
    return "popular here this week"


@dataclass(frozen=True, slots=True)
class Situation:
    """What decides whether each list can be filled, as the recommender found it."""

    identified: bool
    context: Context
    #: Per list: the share of the site's items its serving model knows (absent: none serves).
    coverage: Mapping[str, float]


def why_missing(situation: Situation, lists: Mapping[str, Sequence[Pick]]) -> dict[str, str]:
    """For each list left empty, why, in words a shop assistant can act on."""
    context = situation.context
    out: dict[str, str] = {}
    for source in (PERSONAL, COMPLEMENTS, TRENDING):
        if lists.get(source):
            continue
        coverage = situation.coverage.get(source)
        if source == PERSONAL and not situation.identified:
            out[source] = "Scan the customer's loyalty card for picks of their own"
        elif source == PERSONAL and not context.personal:
            out[source] = "This customer has not agreed to personal suggestions"
        elif source == PERSONAL and not context.history:
            out[source] = "Too little history for this customer yet"
        elif source == COMPLEMENTS and not context.basket:
            out[source] = "Scan an item to see what goes with it"
        elif coverage is None:
            out[source] = _LEARNING[source]
        elif coverage < MIN_COVERAGE:
            out[source] = "The suggestions do not know this shop's products yet"
        else:
            out[source] = _NOTHING[source]
    return out


_LEARNING = {
    PERSONAL: "Personal picks are still being learned for this shop",
    COMPLEMENTS: "Still learning what sells together here",
    TRENDING: "Still learning what sells here: ready within the hour",
}
_NOTHING = {
    PERSONAL: "Nothing new to suggest for this customer",
    COMPLEMENTS: "Nothing found that goes with this basket",
    TRENDING: "Nothing popular left to suggest",
}
