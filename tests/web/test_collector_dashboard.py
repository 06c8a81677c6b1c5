"""The central team's pages in headless Chromium, on a collector under uvicorn holding real
cells sent through ``/v1/sync``: sign in, the overview, the comparison (sorting, a partial
site marked), trends with a gap, a site page, a venue page, fleet health with a silent site,
the audit trail, and the downloads. Every page at 1280x800 and 1920x1080, with screenshots
for a person to look at, nothing asked of another origin and nothing refused by the policy."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from edge_agent.collector.app import create_app
from edge_agent.collector.credentials import hash_password
from edge_agent.collector.rollup import roll_up
from edge_agent.collector.sandbox import Sandbox
from edge_agent.collector.store.central import CentralStore
from tests.collector_helpers import (
    ADMIN_TOKEN,
    Server,
    check_in,
    insight,
    post,
    shop_cell,
    sync_body,
)
from tests.conftest import ARTEFACTS

HOUR = 3_600_000
DAY = 24 * HOUR
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test user's
#: Today's UTC midnight: the sites below keep UTC days.
TODAY_MS = int(time.time() * 1000) // DAY * DAY
SIZES = ((1280, 800), (1920, 1080))


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A collector with three sites: two shops of one venue that report every day but one,
    and a small one whose hours are all below k; one shop checks in (its check-in names it),
    one went silent."""
    folder = tmp_path_factory.mktemp("central")
    store = CentralStore.open(str(folder / "central.db"))
    tokens = {}
    for site, venue, name in (
        ("mall-north", "mall", "Mall north entrance"),
        ("mall-south", "mall", "Mall south <b>entrance</b>"),
        ("kiosk", "kiosk", None),
    ):
        tokens[site] = secrets.token_urlsafe(24)
        store.add_site(site, venue, hashlib.sha256(tokens[site].encode()).hexdigest())
        if name:
            with store.write() as tx:
                tx.run("UPDATE sites SET name = ?, timezone = 'UTC' WHERE site = ?", (name, site))
    store.add_user("ann", "admin", hash_password(PASSWORD, secrets.token_bytes(16)))
    app = create_app(store, ADMIN_TOKEN)
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for site, visitors in (("mall-north", 9), ("mall-south", 6), ("kiosk", 2)):
            cells = [
                shop_cell(TODAY_MS - day * DAY + hour * HOUR, visitors + hour % 3, 20 + hour, 2)
                for day in range(1, 8)
                if not (site == "mall-south" and day == 3)
                for hour in range(9, 18)
            ]
            body = sync_body(site, "x", int(time.time() * 1000), [insight(c) for c in cells])
            answer = post(client, "/v1/sync", body, tokens[site])
            assert answer.status_code == 200, answer.text
        now = int(time.time() * 1000)
        store.record_check_in(
            "mall-north", check_in("mall-north", now - 30_000, "Mall north entrance"), now - 30_000
        )
        old = now - 3 * HOUR
        store.record_check_in(
            "mall-south", check_in("mall-south", old, "Mall south <b>entrance</b>"), old
        )
        # Its syncs stopped then too (they arrived above, as its backlog would have).
        with store.write() as tx:
            tx.run("UPDATE sites SET last_seen_ms = ? WHERE site = 'mall-south'", (old,))
        sandbox = Sandbox(workers=1)
        try:
            while roll_up(store, sandbox).queued:
                pass
        finally:
            sandbox.close()
        # The rollup listed "tea" among the top products: the next check-in names it.
        report = replace(
            check_in("mall-north", now, "Mall north entrance"), products={"tea": "Jasmine tea 50 g"}
        )
        assert store.record_check_in("mall-north", report, now) == []
        yield server.url
    store.close()


def _open(browser: Browser, central: str, width: int, height: int) -> tuple[Page, list[str]]:
    """A signed-in page; what it reports as trouble (requests elsewhere, errors) is listed."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    trouble: list[str] = []
    origin = urlsplit(central).netloc
    page.on(
        "request",
        lambda r: (
            None
            if urlsplit(r.url).netloc in (origin, "")
            else trouble.append(f"request to {r.url}")
        ),
    )
    page.on("console", lambda m: trouble.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: trouble.append(str(e)))
    page.goto(f"{central}/")
    page.wait_for_url("**/login**")
    page.fill("#user", "ann")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{central}/overview")
    return page, trouble


def _shot(page: Page, name: str, width: int, height: int) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"collector-{name}-{width}x{height}.png"), full_page=True)
    # Nothing overflows sideways: wide tables scroll inside their own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_page_of_the_workspace(
    browser: Browser, central: str, width: int, height: int
) -> None:
    page, trouble = _open(browser, central, width, height)
    week = f"from={_day(7)}&to={_day(1)}"

    page.goto(f"{central}/overview?{week}")
    expect(page.locator("main h1")).to_have_text("Overview")
    expect(page.locator(".lede")).to_contain_text("3 of")
    expect(page.locator(".kpi").first).to_contain_text("Footfall")
    # The kiosk's hours are all below k: said, not hidden.
    expect(page.locator(".note")).to_contain_text("fewer than 5 distinct visitors")
    _shot(page, "overview", width, height)

    page.goto(f"{central}/comparison?{week}")
    rows = page.locator("table.data tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Mall north entrance")
    # A name is text, never markup.
    expect(rows.nth(1)).to_contain_text("Mall south <b>entrance</b>")
    expect(rows.nth(2)).to_contain_text("partial")
    page.click("table.data thead >> text=Footfall")
    expect(rows.nth(0)).to_contain_text("Mall south")
    _shot(page, "comparison", width, height)

    page.goto(f"{central}/trends?{week}&site=mall-south")
    expect(page.locator("svg.chart").first).to_be_visible()
    expect(page.locator("td.gap-cell")).to_have_count(1)
    expect(page.locator("svg.chart rect.gap")).to_have_count(4)
    _shot(page, "trends", width, height)

    page.goto(f"{central}/sites/mall-north?{week}")
    expect(page.locator("main h1")).to_have_text("Mall north entrance")
    expect(page.locator("table.heat td.h5").first).to_be_visible()
    expect(page.locator("main")).to_contain_text("Jasmine tea 50 g")
    _shot(page, "site", width, height)

    page.goto(f"{central}/venues/mall?{week}")
    expect(page.locator("table[aria-label=Agents] tbody tr")).to_have_count(2)
    # The agents' visitors are different people: merged, they add up (within the sketch).
    expect(page.locator(".kpis")).to_contain_text("Distinct visitors")
    expect(page.locator("table.heat td.h5").first).to_be_visible()
    expect(page.locator("main")).to_contain_text("Jasmine tea 50 g")
    _shot(page, "venue", width, height)

    page.goto(f"{central}/fleet")
    expect(page.locator(".lede")).to_contain_text("1 silent")
    south = page.locator("table.data tbody tr", has_text="mall-south")
    expect(south).to_contain_text("silent")
    expect(south).to_contain_text("no check-in for 3 h")
    _shot(page, "fleet", width, height)

    page.goto(f"{central}/audit")
    expect(page.locator("main")).to_contain_text("site added")
    _shot(page, "audit", width, height)
    assert trouble == []
    page.context.close()


def test_the_tables_download(browser: Browser, central: str) -> None:
    page, trouble = _open(browser, central, 1280, 800)
    page.goto(f"{central}/comparison?from={_day(7)}&to={_day(1)}")
    with page.expect_download() as comparison:
        page.click("text=Download CSV")
    lines = list(csv.DictReader(io.StringIO(Path(comparison.value.path()).read_text())))
    assert [line["site"] for line in lines] == ["mall-north", "mall-south", "kiosk"]
    page.goto(f"{central}/sites/mall-north?from={_day(7)}&to={_day(1)}")
    with page.expect_download() as days:
        page.click("text=Download its days (CSV)")
    assert days.value.suggested_filename.startswith("edge-wide-")
    lines = list(csv.DictReader(io.StringIO(Path(days.value.path()).read_text())))
    assert len(lines) == 7
    assert {line["site"] for line in lines} == {"mall-north"}
    page.goto(f"{central}/fleet")
    with page.expect_download() as fleet:
        page.click("text=Download CSV")
    health = {
        r["site"]: r for r in csv.DictReader(io.StringIO(Path(fleet.value.path()).read_text()))
    }
    assert (health["mall-south"]["health"], health["mall-north"]["health"]) == ("silent", "healthy")
    assert health["mall-north"]["models"] == "next-basket=3"
    page.goto(f"{central}/audit")
    with page.expect_download() as audit:
        page.click("text=Download CSV")
    actions = [
        r["action"] for r in csv.DictReader(io.StringIO(Path(audit.value.path()).read_text()))
    ]
    assert "site_added" in actions
    assert trouble == []
    page.context.close()


def test_a_page_that_cannot_be_shown_says_why_as_a_page(browser: Browser, central: str) -> None:
    page, _ = _open(browser, central, 1280, 800)
    for path, why in (
        ("/venues/nowhere", "no site of venue 'nowhere' is registered"),
        ("/sites/mall-north?from=2026-01-01&to=2026-12-31", "a page spans at most 92 days"),
        ("/no-such-page", "there is no page /no-such-page"),
    ):
        answer = page.goto(f"{central}{path}")
        assert answer is not None
        assert answer.status in (404, 422)
        expect(page.locator("main h1")).to_have_text(re.compile("Not found|That cannot be shown"))
        expect(page.locator("main .lede")).to_contain_text(why)
    _shot(page, "refused", 1280, 800)
    # The API keeps answering JSON, whoever asks.
    api = page.request.get(f"{central}/v1/venues/nowhere/page", headers={"Accept": "text/html"})
    assert api.status == 404
    assert api.headers["content-type"].startswith("application/json")
    page.context.close()


def _day(back: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime((TODAY_MS - back * DAY) / 1000))
