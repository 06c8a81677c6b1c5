"""The staff screens' HTTP app in-process, over a store file under ``tmp_path`` (no server,
broker or agent process): hostile requests, bad query strings, another screen's token, and the
security headers on every kind of answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.app.catalogue import import_file
from edge_agent.app.clock import now_ms
from edge_agent.config import Settings, load_settings
from edge_agent.ops.metrics import Metrics
from edge_agent.store.database import Store
from edge_agent.store.screens import Screens
from edge_agent.web.app import create_app
from edge_agent.web.changes import Changes
from tests.helpers import SITE, ingest, wait_for
from tests.inprocess import another_client, in_process
from tests.screens import visit_at_till


class Site:
    """An agent's settings and a client of its staff screens' app, in-process."""

    def __init__(self, settings: Settings, client: httpx.Client) -> None:
        self.settings = settings
        self.client = client

    def answers(self) -> bool:
        """Whether the app answers its health check."""
        return self.client.get("/healthz").status_code == 200

    def pair(self, device: str = "till-1") -> str:
        """Add a screen at ``device`` as ``edge-agent screens add`` does, pair it; its token."""
        with Store.open(self.settings.database) as store:
            _, code = Screens(store).add(device, device, now_ms())
        paired = self.client.post("/v1/pair", json={"code": code})
        assert paired.status_code == 200, paired.text
        again = self.client.post("/v1/pair", json={"code": code})
        assert again.status_code == 403  # a code works once
        token: str = paired.json()["token"]
        return token


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A fresh site's staff screens' app, started for the test."""
    config = tmp_path / "agent.toml"
    # The in-process client names the server "testserver" in Host: a name the agent must know.
    config.write_text(
        f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n'
        '[http]\npublic_url = "http://screens.shop.lan:8080"\n'
        'allowed_hosts = "testserver, till.lan"\n'
    )
    settings = load_settings(config)
    settings.site.data_dir.mkdir()
    app = create_app(settings, now_ms, Changes(), Metrics(settings, now_ms))
    with in_process(app) as client:
        yield Site(settings, client)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/v1/screen", {}, 401),
        ("GET", "/v1/screen", {"headers": {"Authorization": "Bearer nope"}}, 401),
        ("GET", "/v1/screen", {"headers": {"Authorization": "Basic x"}}, 401),
        ("GET", "/v1/screen", {"headers": {"Authorization": "Bearer " + "x" * 5000}}, 401),
        ("POST", "/v1/pair", {"content": b"{oops"}, 400),
        ("POST", "/v1/pair", {"json": {"code": 7}}, 400),
        ("POST", "/v1/pair", {"json": {"code": "x" * 100}}, 400),
        ("POST", "/v1/pair", {"json": {"code": "never-issued"}}, 403),
        ("POST", "/v1/pair", {"content": b"x" * 10_000}, 413),
        ("GET", "/v1/screen/stream", {}, 401),
        ("GET", "/v1/screen/stream", {"headers": {"Authorization": "Bearer nope"}}, 401),
        ("GET", "/v1/site", {"headers": {"Authorization": "Bearer nope"}}, 401),
        ("GET", "/../../etc/passwd", {}, 404),
        ("GET", "/static/%2e%2e/%2e%2e/config.py", {}, 404),
        ("GET", "/static/..%2f..%2fweb.py", {}, 404),
        ("GET", "/static/%2e%2e%2fweb.py", {}, 404),
        ("GET", "/static/vendor/%2e%2e/%2e%2e/%2e%2e/pyproject.toml", {}, 404),
        ("GET", "/static/" + "a/" * 2000, {}, 404),
        ("GET", "/static/%00.js", {}, 404),
        ("DELETE", "/v1/screen", {}, 404),
        ("POST", "/", {"content": b"<script>"}, 404),
    ],
)
def test_hostile_requests_get_clear_errors(
    site: Site, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    answer = site.client.request(method, path, **kwargs)
    assert answer.status_code == status
    assert set(answer.json()) == {"error", "detail"}
    assert site.answers()  # still serving


def test_bad_query_strings_and_another_screens_token(site: Site) -> None:
    at_till_1 = {"Authorization": f"Bearer {site.pair('till-1')}"}
    at_till_2 = {"Authorization": f"Bearer {site.pair('till-2')}"}
    for query in ("k=0", "k=21", "k=five", "k=5&" + "x" * 5000, "k=" + "9" * 5000):
        for path in ("/v1/screen", "/v1/screen/stream", "/v1/site"):
            answer = site.client.get(f"{path}?{query}", headers=at_till_1)
            assert answer.status_code == 400, (path, query[:20])
            assert "k must be" in answer.json()["detail"]
    assert site.answers()

    ingest(site.settings, visit_at_till(True), device="till-1")
    wait_for(
        lambda: site.client.get("/v1/screen", headers=at_till_1).json()["visitor"]["present"],
        20,
        "the visit at till 1",
    )
    # A screen sees its own device only: till 2's screen knows nothing of till 1's visitor.
    other = site.client.get("/v1/screen", headers=at_till_2).json()
    assert other["screen"]["device"] == "till-2"
    assert other["visitor"] == {"present": False, "first_name": None}
    assert other["basket"] == []


def test_every_answer_carries_a_strict_content_security_policy(site: Site) -> None:
    for path in ("/", "/static/screen.js", "/static/vendor/uPlot.iife.min.js", "/healthz", "/nope"):
        answer = site.client.get(path)
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    page = site.client.get("/").text
    # Nothing from elsewhere, and no inline script the policy would have to allow.
    assert "http://" not in page
    assert "https://" not in page
    assert "<script>" not in page


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("testserver", 200),
        ("till.lan", 200),
        ("TILL.LAN:8080", 200),
        ("screens.shop.lan:8080", 200),
        ("127.0.0.1:8080", 200),
        ("192.168.1.20", 200),
        ("[::1]:8080", 200),
        ("localhost", 200),
        ("evil.example", 421),
        ("evil.example:8080", 421),
        ("127.0.0.1.evil.example", 421),
        ("till.lan.evil.example", 421),
        ("", 421),
    ],
)
@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/metrics"])
def test_only_names_the_agent_knows_are_answered(
    site: Site, host: str, path: str, status: int
) -> None:
    answer = site.client.get(path, headers={"Host": host})
    if status == 421:
        assert answer.status_code == 421
        assert answer.json()["error"] == "unknown_host"
        assert "[http] allowed_hosts" in answer.json()["detail"]
    else:
        # Metrics need a token here; the page and the health checks answer.
        assert answer.status_code in ((403,) if path == "/metrics" else (200, 503))


def test_wrong_pairing_codes_are_throttled_per_client_without_locking_real_screens(
    site: Site,
) -> None:
    for _ in range(5):
        assert site.client.post("/v1/pair", json={"code": "guess"}).status_code == 403
    throttled = site.client.post("/v1/pair", json={"code": "guess"})
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= 60
    assert "too many wrong pairing codes" in throttled.json()["detail"]
    # The throttled client waits even with a right code; no database write meanwhile.
    with Store.open(site.settings.database) as store:
        _, code = Screens(store).add("till-1", "till-1", now_ms())
    assert site.client.post("/v1/pair", json={"code": code}).status_code == 429
    # Another client (another address) pairs at once, with the same code: the code was not
    # locked by the guesses.
    with another_client(site.client, "10.0.0.7") as screen:
        paired = screen.post("/v1/pair", json={"code": code})
    assert paired.status_code == 200, paired.text


def test_screens_name_products_as_the_catalogue_does(site: Site, tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("product_id,name,available\np2,Rooibos tea 100 g,yes\n")
    assert import_file(site.settings, catalogue, now_ms()).refused == []
    headers = {"Authorization": f"Bearer {site.pair('till-1')}"}
    events = visit_at_till(True)
    # The till names the product otherwise: the catalogue's name is the site's word.
    events[-1]["properties"]["name"] = "RB TEA"
    ingest(site.settings, events, device="till-1")
    wait_for(
        lambda: (
            site.client.get("/v1/screen", headers=headers).json()["basket"]
            == [{"item": "p2", "name": "Rooibos tea 100 g"}]
        ),
        20,
        "the basket, named by the catalogue",
    )
    with Store.open(site.settings.database) as store:
        (p2,) = store.catalogue.listed(10)
    assert (p2.name, p2.price, p2.imported) == ("Rooibos tea 100 g", 2.0, True)
