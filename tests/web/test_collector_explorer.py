"""The collector's API explorer (``/docs``) in headless Chromium: it draws the operations from
the collector's own files, with nothing asked of another origin and nothing the page's
Content-Security-Policy refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser

from edge_agent.collector.app import create_app
from edge_agent.collector.store.central import CentralStore
from tests.collector_helpers import ADMIN_TOKEN, Server
from tests.conftest import ARTEFACTS


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[str]:
    store = CentralStore.open(str(tmp_path / "central.db"))
    try:
        with Server(create_app(store, ADMIN_TOKEN)) as server:
            yield server.url
    finally:
        store.close()


def test_the_api_explorer_works_with_no_way_out(browser: Browser, collector: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    origin = urlsplit(collector).netloc
    elsewhere: list[str] = []
    problems: list[str] = []
    page.on(
        "request",
        lambda r: None if urlsplit(r.url).netloc in (origin, "") else elsewhere.append(r.url),
    )
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    answer = page.goto(f"{collector}/docs")
    assert answer is not None
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/sync" in paths
    assert "/v1/overview" in paths
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "collector-docs-1280x800.png"))
    page.close()
    assert elsewhere == []
    assert problems == []
