"""A venue's page at central in headless Chromium, for an event venue: two agents' gates
sent through ``/v1/sync`` as real hour cells, merged into the venue's gates, halls and
sessions, at 1280x800 and 1920x1080 with screenshots for a person to look at."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Browser, expect

from edge_agent.collector.app import create_app
from edge_agent.collector.credentials import hash_password
from edge_agent.collector.rollup import roll_up
from edge_agent.collector.sandbox import Sandbox
from edge_agent.collector.store.central import CentralStore
from tests.collector_helpers import ADMIN_TOKEN, Server, gate_cell, insight, post, sync_body
from tests.conftest import ARTEFACTS

HOUR = 3_600_000
DAY = 24 * HOUR
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test user's
TODAY_MS = int(time.time() * 1000) // DAY * DAY
#: Each agent's gate, and how many holders it lets in an hour.
GATES = (("expo-east", "east", 60), ("expo-west", "west", 40))


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A collector with a venue of two agents, each with its gate, over two mornings."""
    store = CentralStore.open(str(tmp_path_factory.mktemp("central") / "central.db"))
    tokens = {}
    for site, gate, _ in GATES:
        tokens[site] = secrets.token_urlsafe(24)
        store.add_site(site, "expo", hashlib.sha256(tokens[site].encode()).hexdigest())
        with store.write() as tx:
            tx.run("UPDATE sites SET name = ?, timezone = 'UTC' WHERE site = ?",
                   (f"Expo {gate} gates", site))  # fmt: skip
    store.add_user("ann", "viewer", hash_password(PASSWORD, secrets.token_bytes(16)))
    with (
        Server(create_app(store, ADMIN_TOKEN)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for site, gate, holders in GATES:
            cells = [
                gate_cell(TODAY_MS - day * DAY + hour * HOUR, gate, holders, rejected=hour)
                for day in (1, 2)
                for hour in (8, 9)
            ]
            body = sync_body(site, "x", int(time.time() * 1000), [insight(c) for c in cells])
            answer = post(client, "/v1/sync", body, tokens[site])
            assert answer.status_code == 200, answer.text
        sandbox = Sandbox(workers=1)
        try:
            while roll_up(store, sandbox).queued:
                pass
        finally:
            sandbox.close()
        yield server.url
    store.close()


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1920, 1080)])
def test_a_venue_page_shows_its_gates_halls_and_sessions(
    browser: Browser, central: str, width: int, height: int
) -> None:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{central}/login")
    page.fill("#user", "ann")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{central}/overview")
    last = datetime.fromtimestamp(TODAY_MS / 1000, UTC).date() - timedelta(days=1)
    page.goto(f"{central}/venues/expo?from={last - timedelta(days=6)}&to={last}")
    gates = page.locator("table[aria-label=Gates] tbody tr")
    # The two agents' gates and the hall gates behind them, merged at central.
    expect(gates).to_have_count(4)
    east = gates.filter(has_text="east").first
    expect(east).to_contain_text("already_used")
    main = page.locator("main")
    expect(main).to_contain_text("distinct ticket holders")
    expect(main).to_contain_text("Session keynote")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"collector-venue-gates-{width}x{height}.png"),
                    full_page=True)  # fmt: skip
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # Over a week, how long the venue took to fill means nothing; on one day it is said.
    expect(main).not_to_contain_text("half of the entries")
    page.goto(f"{central}/venues/expo?from={last}&to={last}")
    expect(main).to_contain_text("half of the entries came in the first")
    page.context.close()
