"""The screen's business rules after the models: availability, the basket, no repeats,
reasons, and no personal list without consent."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.core.recommend import (
    COMPLEMENTS,
    PERSONAL,
    TRENDING,
    Context,
    Pick,
    Situation,
    inputs,
    pick,
    why_missing,
)

VOCABULARY = ("a", "b", "c", "d", "e")


def _row(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_inputs_weigh_history_by_share_of_baskets_and_mark_the_basket() -> None:
    context = Context(("c", "zz"), (("a", "b"), ("a",), ("a", "a")), personal=True)
    made = inputs(context, VOCABULARY)
    np.testing.assert_allclose(made.history, [[1.0, 1 / 3, 0.0, 0.0, 0.0]], rtol=1e-6)
    assert made.basket.tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0]]
    assert made.bought == {"a": (3, 3), "b": (1, 3)}


def test_without_consent_the_history_is_not_an_input() -> None:
    made = inputs(Context(("c",), (("a", "b"),), personal=False), VOCABULARY)
    assert not made.history.any()
    assert made.bought == {}


def test_rules_skip_unavailable_basket_and_repeated_items_and_give_reasons() -> None:
    context = Context(("a",), (("b",), ("b", "c")), personal=True)
    scores = {
        PERSONAL: _row(9, 8, 7, 6, 0),
        COMPLEMENTS: _row(9, 8, 7, 6, 5),
        TRENDING: _row(1, 2, 3, 4, 5),
    }
    bought = inputs(context, VOCABULARY).bought
    assert bought == {"b": (2, 2), "c": (1, 2)}
    lists = pick(
        scores, VOCABULARY, context, frozenset({"a", "b", "c", "e"}), 2, bought, {"e": "a"}
    )
    assert [(p.item, p.reason) for p in lists[PERSONAL]] == [
        ("b", "you bought this on each of your last 2 visits"),
        ("c", "you bought this on 1 of your last 2 visits"),
    ]
    assert [(p.item, p.reason) for p in lists[COMPLEMENTS]] == [
        ("e", "often bought with unnamed product a")
    ]  # d is unavailable, a is in the basket, b and c were already shown
    assert TRENDING not in lists  # nothing left that is available, new and scored


def test_no_personal_list_without_consent_and_no_complements_without_a_basket() -> None:
    scores = {PERSONAL: _row(1, 1, 1, 1, 1), COMPLEMENTS: _row(1, 1, 1, 1, 1)}
    assert pick(scores, VOCABULARY, Context(()), None, 3, {}) == {}


def test_items_a_model_does_not_score_are_not_offered() -> None:
    lists = pick({TRENDING: _row(0, 3, 0, np.nan, 1)}, VOCABULARY, Context(()), None, 5, {})
    assert [p.item for p in lists[TRENDING]] == ["b", "e"]
    assert lists[TRENDING][0].reason == "popular here this week"


def test_reasons_name_products_by_their_names() -> None:
    scores = {COMPLEMENTS: _row(0, 0, 0, 0, 5)}
    names = {"a": "Espresso beans 500 g"}
    lists = pick(scores, VOCABULARY, Context(("a",)), None, 1, {}, {"e": "a"}, names)
    assert lists[COMPLEMENTS][0].reason == "often bought with Espresso beans 500 g"


@pytest.mark.parametrize(
    ("situation", "personal", "complements", "trending"),
    [
        (
            Situation(False, Context(()), {}),
            "Scan the customer's loyalty card for picks of their own",
            "Scan an item to see what goes with it",
            "Still learning what sells here: ready within the hour",
        ),
        (
            Situation(True, Context(("a",)), {COMPLEMENTS: 0.05, TRENDING: 0.9}),
            "This customer has not agreed to personal suggestions",
            "The suggestions do not know this shop's products yet",
            "Nothing popular left to suggest",
        ),
        (
            Situation(True, Context(("a",), (), personal=True), {PERSONAL: 1.0}),
            "Too little history for this customer yet",
            "Still learning what sells together here",
            "Still learning what sells here: ready within the hour",
        ),
        (
            Situation(True, Context((), (("b",),), personal=True), {PERSONAL: 0.0}),
            "The suggestions do not know this shop's products yet",
            "Scan an item to see what goes with it",
            "Still learning what sells here: ready within the hour",
        ),
    ],
)
def test_an_empty_list_says_why_in_staff_words(
    situation: Situation, personal: str, complements: str, trending: str
) -> None:
    assert why_missing(situation, {}) == {
        PERSONAL: personal,
        COMPLEMENTS: complements,
        TRENDING: trending,
    }
    shown = {TRENDING: [Pick("a", 1.0, "popular here this week", TRENDING)]}
    assert TRENDING not in why_missing(situation, shown)


def test_personal_reasons_count_the_visits_in_words() -> None:
    history = (*tuple(("a",) if n % 2 else ("a", "b") for n in range(12)), ("c",))
    bought = inputs(Context((), history, personal=True), VOCABULARY).bought
    # The last 10 visits: "a" on 9 of them, "b" on 4, "c" on the last; "d" never.
    assert bought == {"a": (9, 10), "b": (4, 10), "c": (1, 10)}
    lists = pick(
        {PERSONAL: _row(5, 4, 3, 2, 0)}, VOCABULARY, Context((), history, True), None, 4, bought
    )
    assert [p.reason for p in lists[PERSONAL]] == [
        "you bought this on 9 of your last 10 visits",
        "you bought this on 4 of your last 10 visits",
        "you bought this on 1 of your last 10 visits",
        "shoppers with baskets like yours buy this",
    ]
    once = inputs(Context((), (("a",),), personal=True), VOCABULARY).bought
    assert (
        pick(
            {PERSONAL: _row(5, 0, 0, 0, 0)}, VOCABULARY, Context((), (("a",),), True), None, 1, once
        )[PERSONAL][0].reason
        == "you bought this on your last visit"
    )
    old = inputs(Context((), (("e",), *((("a",),) * 10)), personal=True), VOCABULARY).bought
    assert old["e"] == (0, 10)
