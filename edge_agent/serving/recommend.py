"""Recommendations for a staff screen: the serving models in onnxruntime, then the business
rules of `edge_agent.core.recommend`.

A visitor's history is read only when their consent allows personalising (the store keeps a
profile only then, and checks the consent again when reading it); otherwise the models see
none of it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.core.catalogue import share_known
from edge_agent.core.identity import Pseudonym
from edge_agent.core.recommend import (
    COMPLEMENTS,
    PERSONAL,
    TRENDING,
    Context,
    Inputs,
    Pick,
    Situation,
    inputs,
    pick,
)
from edge_agent.core.releases import Manifest
from edge_agent.serving.models import Models
from edge_agent.store.database import Store

#: How many basket items are tried one by one to say what a complement "goes with".
_ATTRIBUTE_MAX = 20
_ONE = np.ones(1, dtype=np.int64)


class Recommender:
    """Ranked lists with reasons, from the models serving in ``models``."""

    def __init__(self, store: Store, models: Models) -> None:
        self.store = store
        self.models = models
        # Each serving release's vocabulary as a set, made once (a model knows ~10^4 items).
        self._known: dict[str, frozenset[str]] = {}

    def context(self, visitor: Pseudonym | None, basket: tuple[str, ...]) -> Context:
        """What may be used about ``visitor``: their baskets only when their consent allows
        personalising.

        Raises:
            StorageError: the database cannot be read.
        """
        if visitor is None:
            return Context(basket)
        history = self.store.people.history(visitor)
        if history is None:
            return Context(basket)
        return Context(basket, history, personal=True)

    def situation(
        self, visitor: Pseudonym | None, basket: tuple[str, ...], available: frozenset[str] | None
    ) -> Situation:
        """What decides whether each list can be filled (for `why_missing`): who the visitor
        is, and how much of the site's items each serving model knows.

        Raises:
            StorageError: the database cannot be read.
        """
        coverage: dict[str, float] = {}
        for name in (PERSONAL, COMPLEMENTS, TRENDING):
            serving = self.models.serving(name)
            if serving is None:
                continue
            manifest = serving[0]
            known = self._known.get(manifest.sha256)
            if known is None:
                known = self._known[manifest.sha256] = frozenset(manifest.vocabulary)
            coverage[name] = share_known(known, available or frozenset())
        return Situation(visitor is not None, self.context(visitor, basket), coverage)

    def first_name(self, visitor: Pseudonym) -> str | None:
        """The name a screen may greet the visitor by: only with personalization (the store
        keeps a profile only then), and only if they gave one.

        Raises:
            StorageError: the database cannot be read.
        """
        return self.store.people.first_name(visitor)

    def recommend(
        self,
        visitor: Pseudonym | None,
        basket: tuple[str, ...],
        k: int = 5,
        available: frozenset[str] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> dict[str, list[Pick]]:
        """Up to ``k`` picks per list for the visitor in front of the screen, among the
        ``available`` items (None: any), their reasons naming products by ``names``.

        Raises:
            StorageError: the database cannot be read.
            ModelIntegrityError: a serving model's files are gone or do not load.
        """
        context = self.context(visitor, basket)
        picks: dict[str, list[Pick]] = {}
        taken: set[str] = set()
        for name in (PERSONAL, COMPLEMENTS, TRENDING):
            if (name == PERSONAL and not context.personal) or (name == COMPLEMENTS and not basket):
                continue
            serving = self.models.serving(name)
            if serving is None:
                continue
            manifest, session = serving
            vocabulary = manifest.vocabulary
            vectors = inputs(context, vocabulary, history_decay(manifest))
            row = run_model(session, vectors)
            goes_with = (
                _attribute(session, vectors, vocabulary, context.basket)
                if name == COMPLEMENTS
                else None
            )
            # Each list is picked over its own vocabulary; earlier lists' items are not repeated.
            shown = Context(tuple(taken | set(basket)), context.history, context.personal)
            found = pick(
                {name: row}, vocabulary, shown, available, k, vectors.bought, goes_with, names
            )
            for source, chosen in found.items():
                picks[source] = chosen
                taken.update(p.item for p in chosen)
        return picks


def history_decay(manifest: Manifest) -> float:
    """The decay of the history input the model was trained with (1: a plain average)."""
    declared = manifest.inputs.get("history")
    decay = declared.get("decay", 1.0) if isinstance(declared, dict) else 1.0
    return float(decay) if isinstance(decay, int | float) and 0 < decay <= 1 else 1.0


def run_model(session: ort.InferenceSession, vectors: Inputs) -> npt.NDArray[np.float32]:
    """The model's score row for these inputs (it is fed only the inputs it declares; a
    ``k`` for a graph that also ranks is not used here, the rules rank the full row)."""
    feeds = {"history": vectors.history, "basket": vectors.basket, "k": _ONE}
    (scores,) = session.run(["scores"], {i.name: feeds[i.name] for i in session.get_inputs()})
    row: npt.NDArray[np.float32] = np.asarray(scores, dtype=np.float32)[0]
    return row


def _attribute(
    session: ort.InferenceSession,
    vectors: Inputs,
    vocabulary: tuple[str, ...],
    basket: tuple[str, ...],
) -> dict[str, str]:
    """For each item, the basket item that alone scores it highest (what it "goes with")."""
    index = {item: i for i, item in enumerate(vocabulary)}
    known = [item for item in dict.fromkeys(basket) if item in index][:_ATTRIBUTE_MAX]
    if not known:
        return {}
    rows = []
    for item in known:
        alone = np.zeros_like(vectors.basket)
        alone[0, index[item]] = 1.0
        rows.append(run_model(session, Inputs(vectors.history, alone)))
    best = np.argmax(np.stack(rows), axis=0)
    return {vocabulary[i]: known[int(b)] for i, b in enumerate(best)}


#: How long after its last event a visit still counts as the one in front of a screen.
PRESENT_MS = 15 * 60 * 1000


@dataclass(frozen=True, slots=True)
class InFront:
    """Who stands at a device now."""

    #: The person, when the visit is linked to one (else None).
    person: Pseudonym | None
    #: The basket being rung up: items added minus removed, or the order just completed.
    basket: tuple[str, ...]
    #: Whether any visit was seen there in the last ``PRESENT_MS``.
    present: bool
    #: The names the till gave the basket's items (item -> name), where it gave one.
    names: dict[str, str]


def in_front(store: Store, kind: str, place: str, now_ms: int) -> InFront:
    """The visit seen last, within ``PRESENT_MS``, at the device ``place`` (``kind``
    device), or in the zone ``place`` (``kind`` zone: the latest visitor to enter it who has
    not left it).

    Raises:
        StorageError: the database cannot be read.
    """
    since_ms = now_ms - PRESENT_MS
    visit = (
        store.events.latest_visit_in(place, since_ms)
        if kind == "zone"
        else store.events.latest_visit_at(place, since_ms)
    )
    if visit is None:
        return InFront(None, (), False, {})
    person = store.events.person_of(visit)
    basket: dict[str, None] = {}
    names: dict[str, str] = {}
    for name, properties in store.events.basket_events(visit):
        lines = properties.get("products", []) if name == "Order Completed" else [properties]
        for line in lines:
            if isinstance(line.get("name"), str):
                names[str(line.get("product_id"))] = line["name"]
        if name == "Order Completed":
            basket = {str(line.get("product_id")): None for line in lines}
        elif name == "Product Added":
            basket[str(properties.get("product_id"))] = None
        else:
            basket.pop(str(properties.get("product_id")), None)
    return InFront(person, tuple(basket), True, names)


#: Items sold at the site this recently count as available (the POS data says they are stocked).
AVAILABLE_DAYS = 30


def stocked_items(store: Store, now_ms: int, after_id: int = 0) -> tuple[dict[str, str], int]:
    """What the site's tills sold in the last ``AVAILABLE_DAYS`` (the items a screen may
    offer), each with the name the tills gave it ("" when they gave none), from the orders
    stored after event ``after_id``; and the event id to read on from next time.

    Raises:
        StorageError: the database cannot be read.
    """
    sold, last = store.events.sold_items(after_id, now_ms - AVAILABLE_DAYS * 24 * 3600 * 1000)
    return {item: name if isinstance(name, str) else "" for item, name in sold.items()}, last


class Stocked:
    """`stocked_items`, kept current for a server: each look reads only the orders stored
    since the last one, and every ``full_every_ms`` all of them again (old sales leave)."""

    def __init__(self, full_every_ms: int = 3600 * 1000) -> None:
        self.full_every_ms = full_every_ms
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        self._after = 0
        self._full_ms: int | None = None

    def get(self, store: Store, now_ms: int) -> dict[str, str]:
        """The items on sale and their names (a fresh dict whenever it changes).

        Raises:
            StorageError: the database cannot be read.
        """
        with self._lock:
            if self._full_ms is None or now_ms - self._full_ms >= self.full_every_ms:
                self._names, self._after = stocked_items(store, now_ms)
                self._full_ms = now_ms
            else:
                more, self._after = stocked_items(store, now_ms, self._after)
                if more:
                    self._names = {**self._names, **more}
            return self._names
