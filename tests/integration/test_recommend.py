"""Recommendations from the site's stored data through onnxruntime: trending trained here,
personal and complement lists with reasons, and consent as a property."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edge_agent.app import clock
from edge_agent.config import Settings, load_settings
from edge_agent.core.identity import pseudonym
from edge_agent.core.recommend import COMPLEMENTS, PERSONAL, TRENDING
from edge_agent.core.releases import Manifest, release_unsigned
from edge_agent.ops import keyfile
from edge_agent.serving.models import Models
from edge_agent.serving.recommend import Recommender
from edge_agent.serving.shadow import local_shadow
from edge_agent.serving.training import train_trending
from edge_agent.store.database import Store
from tests.helpers import SITE, cli, ingest, track

pytestmark = pytest.mark.integration

ITEMS = ("p1", "p2", "p3", "p4", "p5", "p6")


def _site(folder: Path) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "agent.toml"
    config.write_text(f'[site]\nid = "{SITE}"\ndata_dir = "{folder / "data"}"\n')
    return load_settings(config, environ={})


def _order(items: list[str], **who: Any) -> dict[str, Any]:
    lines = [{"product_id": i, "price": 1.0, "quantity": 1} for i in items]
    return track(
        "Order Completed",
        {"order_id": json.dumps(items), "total": float(len(items)), "currency": "TWD",
         "products": lines},
        **who,
    )  # fmt: skip


def _consent(user: str, personalization: bool) -> dict[str, Any]:
    purposes = {"analytics": True, "personalization": personalization, "crm_sync": False}
    return track("Consent Updated", {"purposes": purposes, "source": "kiosk"}, userId=user)


def _store(settings: Settings, events: list[dict[str, Any]]) -> None:
    assert ingest(settings, events) == 0


def _item_model(history: np.ndarray, basket: np.ndarray) -> bytes:
    """scores = history @ H + basket @ B over ITEMS."""
    n = len(ITEMS)
    nodes = [
        helper.make_node("MatMul", ["history", "H"], ["from_history"]),
        helper.make_node("MatMul", ["basket", "B"], ["from_basket"]),
        helper.make_node("Add", ["from_history", "from_basket"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "item-to-item",
        [
            helper.make_tensor_value_info("history", TensorProto.FLOAT, [1, n]),
            helper.make_tensor_value_info("basket", TensorProto.FLOAT, [1, n]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n])],
        [
            numpy_helper.from_array(history.astype(np.float32), "H"),
            numpy_helper.from_array(basket.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


# p1 goes with p2, p2 with p3, ...: a chain of complements.
CHAIN = np.roll(np.eye(len(ITEMS)), 1, axis=1) + 0.01


def _serve(models: Models, name: str, model: bytes) -> None:
    manifest = release_unsigned(Manifest(name, "1", "2026-11-26T00:00:00Z", ITEMS, "", 0), model)
    entry = models.install(orjson.dumps(manifest.document()), model, None, clock.now_ms())
    assert entry.status == "serving", entry.reason


def _models(settings: Settings, store: Store) -> Models:
    models = Models(store, settings.models_folder)
    _serve(models, PERSONAL, _item_model(np.eye(len(ITEMS)) + CHAIN, np.zeros_like(CHAIN)))
    _serve(models, COMPLEMENTS, _item_model(np.zeros_like(CHAIN), CHAIN))
    assert train_trending(store, models, clock.now_ms()) is not None
    return models


def test_the_screen_lists_with_reasons(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    member = "member-00aa11"
    _store(
        settings,
        [
            _consent(member, personalization=True),
            _order(["p1", "p2"], userId=member),
            _order(["p1"], userId=member),
            *[_order(["p6", "p5"]) for _ in range(5)],
            _order(["p4"]),  # p3 is never sold here: not stocked, never offered
        ],
    )
    with Store.open(settings.database) as store:
        _models(settings, store)
    done = cli(
        "--config", str(tmp_path / "agent.toml"), "recommend", "--user-id", member,
        "--basket", "p3", "--k", "2", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lists = json.loads(done.stdout)
    personal = [(p["item"], p["reason"]) for p in lists[PERSONAL]]
    assert personal == [
        ("p2", "you bought this on 1 of your last 2 visits"),  # and it goes with p1
        ("p1", "you bought this on each of your last 2 visits"),
    ]
    assert [(p["item"], p["reason"]) for p in lists[COMPLEMENTS]] == [
        ("p4", "often bought with unnamed product p3"),
        ("p5", "often bought with unnamed product p3"),
    ]
    assert [(p["item"], p["reason"]) for p in lists[TRENDING]] == [
        ("p6", "popular here this week"),
    ]  # p5 was already shown, p1-p3 too
    assert member not in done.stdout
    assert pseudonym(keyfile.load_or_create(settings.site_key), member) not in done.stdout


histories = st.lists(
    st.lists(st.sampled_from(ITEMS), min_size=1, max_size=4), min_size=1, max_size=5
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    histories,
    st.lists(st.sampled_from(["grant", "withdraw", "none"]), min_size=1, max_size=3),
    st.lists(st.sampled_from(ITEMS), max_size=3),
)
def test_without_personalization_the_list_is_the_anonymous_one(
    history: list[list[str]], consents: list[str], basket: list[str]
) -> None:
    """Whatever the person bought and however their consent went, unless personalization
    holds now, what they see equals what an anonymous visitor with that basket sees."""
    member = "member-77bb22"
    with tempfile.TemporaryDirectory() as folder:
        settings = _site(Path(folder))
        events = [_order(items, userId=member) for items in history]
        for n, step in enumerate(consents):
            if step != "none":
                events.insert(min(n, len(events)), _consent(member, step == "grant"))
        _store(settings, events)
        with Store.open(settings.database) as store:
            recommender = Recommender(store, _models(settings, store))
            person = pseudonym(keyfile.load_or_create(settings.site_key), member)
            theirs = recommender.recommend(person, tuple(basket))
            anonymous = recommender.recommend(None, tuple(basket))
            consented = store.db.execute(
                "SELECT granted FROM consent WHERE pseudonym = ? AND purpose = 'personalization'",
                (person,),
            ).fetchone()
    if consented is None or not consented[0]:
        assert theirs == anonymous
    else:
        assert PERSONAL in theirs


def test_the_shadow_evaluation_uses_the_consenting_peoples_latest_baskets(
    tmp_path: Path,
) -> None:
    settings = _site(tmp_path)
    events: list[dict[str, Any]] = []
    for n in range(4):  # person n bought p(n+1), then p(n+2): the chain
        user = f"member-{n:04d}"
        events += [
            _consent(user, personalization=n < 3),  # the fourth one did not consent
            _order([ITEMS[n]], userId=user),
            _order([ITEMS[n + 1]], userId=user),
        ]
    _store(settings, events)
    with Store.open(settings.database) as store:
        assert local_shadow(store, minimum=4) is None  # only three may be used
        shadow = local_shadow(store, minimum=3)
        assert shadow is not None
        models = Models(store, settings.models_folder)
        _serve(models, PERSONAL, _item_model(CHAIN, np.zeros_like(CHAIN)))
        chain = models.serving(PERSONAL)
        assert chain is not None
        _serve(models, "same-again", _item_model(np.eye(len(ITEMS)), np.zeros_like(CHAIN)))
        same = models.serving("same-again")
        assert same is not None
        assert shadow(chain[1], chain[0])["ndcg@10"] == 1.0
        assert shadow(same[1], same[0])["ndcg@10"] < 1.0


def test_the_site_trains_its_next_basket_model_from_consenting_people(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    catalogue = [f"sku-{n}" for n in range(12)]
    events: list[dict[str, Any]] = []
    for person in range(40):
        user = f"member-{person:04d}"
        events.append(_consent(user, personalization=person % 8 != 0))  # a few said no
        for visit in range(3):  # each visit moves one step along the shelf
            step = (person + visit) % len(catalogue)
            events.append(_order([catalogue[step], catalogue[(step + 1) % 12]], userId=user))
    _store(settings, events)
    config = str(tmp_path / "agent.toml")
    trained = cli("--config", config, "models", "train")
    assert trained.returncode == 0, trained.stderr
    assert "trending site-" in trained.stdout
    (line,) = [x for x in trained.stdout.splitlines() if x.startswith("next-basket site-")]
    assert ": serving ndcg@10" in line
    with Store.open(settings.database) as store:
        models = Models(store, settings.models_folder)
        serving = models.serving(PERSONAL)
        assert serving is not None
        manifest = serving[0]
        assert manifest.training["people"] == 35  # the five who said no are not in it
        assert set(manifest.vocabulary) == set(catalogue)
        (entry,) = [e for e in models.entries() if e.name == PERSONAL and e.status == "serving"]
        assert entry.shadow["recall@10"] > 0.5  # the next step along the shelf is learnt
    done = cli("--config", config, "recommend", "--user-id", "member-0001", "--json")
    picks = json.loads(done.stdout)[PERSONAL]
    assert picks
    worded = re.compile(
        r"you bought this on (your last visit|each of your last \d+ visits|\d+ of your last "
        r"\d+ visits)|you have bought this before|shoppers with baskets like yours buy this"
    )
    assert all(worded.fullmatch(p["reason"]) for p in picks), picks


def test_the_site_learns_which_items_go_together(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    pairs = [(f"tea-{n}", f"lemon-{n}") for n in range(10)]
    orders = [_order([*pairs[n % 10], f"bread-{n % 7}"]) for n in range(700)]
    _store(settings, orders)
    trained = cli("--config", str(tmp_path / "agent.toml"), "models", "train")
    (line,) = [x for x in trained.stdout.splitlines() if x.startswith("complements site-")]
    assert ": serving" in line
    done = cli(
        "--config", str(tmp_path / "agent.toml"), "recommend", "--basket", "tea-3", "--json"
    )  # fmt: skip
    top = json.loads(done.stdout)[COMPLEMENTS][0]
    assert (top["item"], top["reason"]) == ("lemon-3", "often bought with unnamed product tea-3")
