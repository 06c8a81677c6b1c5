"""Central's login in headless Chromium against a real collector server (uvicorn, SQLite):
the home page sends the browser to the login, a wrong password is told, the right one signs
in and shows who is signed in, signing out ends it; with no script error, no request to
another origin, and the security headers on the pages. Screenshots go to the test artefacts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from edge_agent.collector.app import create_app
from edge_agent.collector.auth import SESSION_COOKIE
from edge_agent.collector.credentials import hash_password
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.web.login import WRONG
from tests.collector_helpers import ADMIN_TOKEN, Server
from tests.conftest import ARTEFACTS

pytestmark = pytest.mark.integration

PASSWORD = "a long enough password"  # noqa: S105 - the test's own user
SIZES = [pytest.param(1280, 800, id="laptop"), pytest.param(390, 844, id="phone")]


@pytest.fixture
def central(tmp_path: Path) -> Iterator[str]:
    """A collector named "Central test" serving on a loopback port, with a viewer "ann";
    its base URL."""
    store = CentralStore.open(str(tmp_path / "central.db"))
    store.add_user("ann", "viewer", hash_password(PASSWORD, secrets.token_bytes(16)))
    try:
        with Server(create_app(store, ADMIN_TOKEN, name="Central test")) as server:
            yield server.url
    finally:
        store.close()


def _watch(page: Page, base: str) -> list[str]:
    """What goes wrong in ``page``: script errors, console errors (a policy violation is
    one), requests to anywhere but ``base``."""
    trouble: list[str] = []
    page.on("pageerror", lambda error: trouble.append(f"script error: {error}"))
    page.on(
        "console",
        lambda message: trouble.append(message.text) if message.type == "error" else None,
    )
    page.on(
        "request",
        lambda request: None if request.url.startswith(base) else trouble.append(request.url),
    )
    return trouble


def _shot(page: Page, name: str, width: int, height: int) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTEFACTS / f"collector-{name}-{width}x{height}.png", full_page=True)


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_a_browser_is_sent_to_the_login_signs_in_and_out(
    browser: Browser, central: str, width: int, height: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        trouble = _watch(page, central)
        opened = page.goto(f"{central}/")
        assert opened is not None
        assert page.url == f"{central}/login?next=/"
        csp = opened.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert opened.headers["x-frame-options"] == "DENY"
        expect(page).to_have_title("Sign in · Central test")
        expect(page.locator("#user")).to_be_focused()
        _shot(page, "login", width, height)

        page.fill("#user", "ann")
        page.fill("#password", "not the password at all")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_have_text(WRONG)
        expect(page.locator("#user")).to_have_value("ann")
        _shot(page, "login-refused", width, height)
        # Chromium logs the refused login's status as an error; that one is expected.
        assert trouble == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
        trouble.clear()

        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{central}/overview")
        expect(page.locator(".who")).to_contain_text("Signed in as ann")
        expect(page.locator(".who .role")).to_have_text("viewer")
        expect(page.locator("main h1")).to_have_text("Overview")
        [session] = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
        assert session["httpOnly"]
        assert session["sameSite"] == "Strict"
        # The page's script cannot read it.
        assert SESSION_COOKIE not in page.evaluate("document.cookie")
        _shot(page, "home", width, height)
        # Nothing overflows sideways, on a phone either.
        assert page.evaluate("document.documentElement.scrollWidth") <= width

        page.click("text=Sign out")
        page.wait_for_url(f"{central}/login")
        assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
        page.goto(f"{central}/")
        assert page.url == f"{central}/login?next=/"
        assert trouble == []
    finally:
        context.close()
