"""Readiness verdicts and the disk-space rule."""

from __future__ import annotations

import pytest

from edge_agent.core.catalogue import share_known
from edge_agent.core.health import (
    MB,
    Check,
    broker_check,
    database_check,
    disk_check,
    models_check,
    short_of_space,
    verdict,
)


@pytest.mark.parametrize(
    ("free", "min_free_mb", "short"),
    [
        pytest.param(200 * MB, 200, False, id="exactly-the-floor"),
        pytest.param(200 * MB - 1, 200, True, id="one-byte-under"),
        pytest.param(0, 200, True, id="full"),
        pytest.param(0, 0, False, id="check-off"),
        pytest.param(10**15, 1, False, id="plenty"),
    ],
)
def test_short_of_space(free: int, min_free_mb: int, short: bool) -> None:
    assert short_of_space(free, min_free_mb) is short
    check = disk_check(free, min_free_mb, "/var/lib/edge-agent")
    assert check.ok is not short
    assert "/var/lib/edge-agent" in check.reason
    if short:
        assert check.state == "low"
        assert "[store] min_free_mb" in check.reason


def test_ready_only_when_every_check_holds() -> None:
    good = Check("a", True, "ok", "")
    bad = Check("b", False, "low", "free space")
    assert verdict([good, good]).ready
    assert not verdict([good, bad]).ready
    assert not verdict([]).ready
    body = verdict([good, bad]).as_dict()
    assert body["status"] == "not_ready"
    assert body["checks"] == [
        {"name": "a", "ok": True, "state": "ok", "reason": ""},
        {"name": "b", "ok": False, "state": "low", "reason": "free space"},
    ]


@pytest.mark.parametrize(
    ("state", "ok"),
    [
        pytest.param(None, False, id="never-reached"),
        pytest.param(("disconnected", 5), False, id="down"),
        pytest.param(("connected", 5), True, id="up"),
    ],
)
def test_broker(state: tuple[str, int] | None, ok: bool) -> None:
    check = broker_check(state, "broker:1883")
    assert check.ok is ok
    assert "broker:1883" in check.reason
    if not ok:
        assert "[mqtt]" in check.reason


@pytest.mark.parametrize(
    ("heartbeat", "ok", "state"),
    [
        pytest.param(None, False, "not_started", id="none"),
        pytest.param(("stopped", 1000), False, "not_started", id="stopped"),
        pytest.param(("alive", 1000), True, "writable", id="fresh"),
        pytest.param(("alive", 1000 - 30_000), True, "writable", id="at-the-limit"),
        pytest.param(("alive", 1000 - 30_001), False, "stale", id="stale"),
    ],
)
def test_database(heartbeat: tuple[str, int] | None, ok: bool, state: str) -> None:
    check = database_check(heartbeat, 1000, 30_000)
    assert (check.ok, check.state) == (ok, state)


def test_models() -> None:
    assert models_check({}, 0) == Check("models", True, "none", "no model serves yet")
    assert models_check({}, 2).ok
    failed = models_check({"next-basket": "the serving model is missing"}, 2)
    assert not failed.ok
    assert "next-basket: the serving model is missing" in failed.reason
    assert "rollback" in failed.reason


def test_a_model_that_does_not_know_the_shops_products_is_flagged() -> None:
    sold = {"sku-1", "sku-2", "sku-3", "sku-4", "sku-5"}
    assert share_known(["sku-1", "tafeng:2"], sold) == 0.2
    assert share_known(["tafeng:1"], set()) == 1.0  # nothing sold yet: nothing to judge
    fits = models_check({}, 2, {"trending": 1.0, "next-basket": share_known(["sku-1"], sold)})
    assert (fits.ok, fits.state) == (True, "loaded")
    low = models_check({}, 2, {"trending": 1.0, "next-basket": share_known(["x"], sold)})
    assert (low.ok, low.state) == (True, "low_coverage")
    assert "next-basket knows 0%" in low.reason
    assert "trending" not in low.reason
