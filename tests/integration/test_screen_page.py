"""The staff screen in headless Chromium, against a running agent and a real broker: pairing
in the browser, the visitor pushed to the page, consent withdrawn, the screen revoked, the
agent restarted, and hostile names and traits shown as text."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from edge_agent.mqtt.broker import Mosquitto
from tests.conftest import ARTEFACTS, AgentProcess, Opener
from tests.helpers import Publisher, encode, identify, topic, track
from tests.screens import add_screen, revoke, serving

pytestmark = pytest.mark.integration

MEMBER = "member-77aa01"
SECRETS = (MEMBER, "mei@example.org", "+886912345678")
#: How long the page may take to show what the broker delivered (the benchmark measures it).
DEADLINE_MS = 5000
#: The site's figures are recomputed every second here (every 30 s by default).
SITE_DEADLINE_MS = 15_000
#: What the page keeps in the browser.
KEPT = "localStorage.getItem('edge-agent.screen-token')"


def _consent(personalization: bool, visit: str) -> dict[str, Any]:
    purposes = {"analytics": True, "personalization": personalization, "crm_sync": False}
    return track(
        "Consent Updated",
        {"purposes": purposes, "source": "till"},
        userId=MEMBER,
        anonymousId=visit,
    )


def _member_visits(first_name: str = "Mei", product_name: str = "Soy milk") -> list[dict[str, Any]]:
    """Mei bought tea and crackers last time (the shipped model's own item ids, so it knows
    them); now she is at till 1 with soy milk in her basket."""
    traits = {"first_name": first_name, "email": SECRETS[1], "phone": SECRETS[2]}
    bought = [
        {"product_id": "22633", "name": "Oolong tea", "price": 3.0, "quantity": 1},
        {"product_id": "22632", "name": "Rice crackers", "price": 2.0, "quantity": 1},
    ]
    order = {"order_id": "o-1", "total": 5.0, "currency": "TWD", "products": bought}
    added = {"product_id": "84879", "name": product_name, "price": 1.5, "quantity": 1}
    return [
        _consent(True, "visit-1"),
        identify(MEMBER, traits, anonymousId="visit-1"),
        track("Order Completed", order, userId=MEMBER, anonymousId="visit-1"),
        identify(MEMBER, traits, anonymousId="visit-2"),
        track("Product Added", added, userId=MEMBER, anonymousId="visit-2"),
    ]


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    """A device publishing on the test's broker."""
    device = Publisher(broker.port)
    yield device
    device.close()


def _publish(publisher: Publisher, events: list[dict[str, Any]]) -> None:
    publisher.publish_all((topic("till-1"), encode(e)) for e in events)


def test_a_screen_pairs_shows_the_visitor_and_is_locked_out_when_revoked(
    broker: Mosquitto,
    agent_factory: Callable[..., AgentProcess],
    open_page: Opener,
    publisher: Publisher,
) -> None:
    money = {"EDGE_AGENT_SITE__CURRENCY": "EUR", "EDGE_AGENT_SITE__LOCALE": "fi-FI"}
    agent, _ = serving(broker, agent_factory, "site_refresh_s = 1\n[insights]\nk = 1\n", money)
    screen_id, url = add_screen(agent, "till-1")
    page, trouble = open_page(url, 1280, 800)
    expect(page.locator("#greeting")).to_have_text("Waiting for a customer")
    expect(page.locator("#link")).to_have_text("Live")
    assert "pair" not in page.url  # the code left the address bar and the history
    assert page.evaluate(KEPT)

    _publish(publisher, _member_visits())
    expect(page.locator("#greeting")).to_have_text("Serving Mei", timeout=DEADLINE_MS)
    expect(page.locator("#basket")).to_have_text("Soy milk", timeout=DEADLINE_MS)
    personal = page.locator("#panel-personal")
    expect(personal).to_be_visible(timeout=DEADLINE_MS)
    expect(personal).to_contain_text("Oolong tea")
    # Worded reasons, never raw ids.
    expect(personal).to_contain_text("you bought this on your last visit")
    expect(page.locator("#personal-title")).to_have_text("Picked for Mei")
    for secret in SECRETS:
        assert secret not in page.content()
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTEFACTS / "screen-customer-1280x800.png")

    page.click("#tab-site")
    expect(page.locator("#fig-orders")).to_have_text("1", timeout=SITE_DEADLINE_MS)
    # Money in the site's currency, written as the site's locale writes it.
    expect(page.locator("#fig-revenue")).to_contain_text("€")
    assert "," in page.locator("#fig-revenue").inner_text()  # fi-FI: a decimal comma
    # The order was rung up in TWD, which no rate converts into EUR: named, never added.
    expect(page.locator("#fig-revenue")).to_contain_text("0,00")
    expect(page.locator("#cap-revenue")).to_contain_text("not counted: 5,00 TWD")
    expect(page.locator("#top-products")).to_contain_text("Oolong tea")
    expect(page.locator("#chart-footfall canvas")).to_have_count(1)
    page.screenshot(path=ARTEFACTS / "screen-site-1280x800.png")
    page.click("#tab-visitor")

    # Withdrawn at the till: the personal list and the name go at once.
    _publish(publisher, [_consent(False, "visit-2")])
    expect(personal.locator("ol")).to_be_empty(timeout=DEADLINE_MS)
    # The panel says why in staff words instead of leaving a gap.
    expect(personal.locator(".why")).to_have_text(
        "This customer has not agreed to personal suggestions"
    )
    expect(page.locator("#greeting")).to_have_text("Customer here")

    revoke(agent, screen_id)
    expect(page.locator("#notice-title")).to_have_text(
        "This screen is locked out", timeout=DEADLINE_MS
    )
    assert page.evaluate(KEPT) is None
    page.reload()  # and it stays locked out
    expect(page.locator("#notice-title")).to_have_text("This screen is not paired")
    assert trouble == []


def test_a_used_code_is_refused_in_the_page(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], open_page: Opener
) -> None:
    agent, _ = serving(broker, agent_factory)
    _, url = add_screen(agent, "till-1")
    first, _ = open_page(url, 1280, 800)
    expect(first.locator("#link")).to_have_text("Live")
    second, _ = open_page(url, 1280, 800)
    expect(second.locator("#notice-title")).to_have_text("This pairing code does not work")
    expect(second.locator("#notice-text")).to_contain_text("Ask the site's installer")
    # Staff pages speak to staff: no command line on any of them.
    for shown in (first, second):
        assert "edge-agent" not in shown.locator("body").inner_text()


def test_the_page_reconnects_after_the_agent_restarts(
    broker: Mosquitto,
    agent_factory: Callable[..., AgentProcess],
    open_page: Opener,
    publisher: Publisher,
) -> None:
    agent, _ = serving(broker, agent_factory)
    _, url = add_screen(agent, "till-1")
    page, _ = open_page(url, 1920, 1080)
    expect(page.locator("#link")).to_have_text("Live")
    # On a TV both views are shown side by side: nothing to press.
    expect(page.locator("#site-view")).to_be_visible()
    expect(page.locator("#visitor-view")).to_be_visible()
    page.screenshot(path=ARTEFACTS / "screen-tv-1920x1080.png")

    assert agent.stop() == 0
    expect(page.locator("#link")).to_have_text("Reconnecting…", timeout=DEADLINE_MS)
    agent.start()
    expect(page.locator("#link")).to_have_text("Live", timeout=15_000)
    _publish(publisher, _member_visits())
    expect(page.locator("#greeting")).to_have_text("Serving Mei", timeout=DEADLINE_MS)


def test_names_and_traits_are_shown_as_text_and_inline_script_is_blocked(
    broker: Mosquitto,
    agent_factory: Callable[..., AgentProcess],
    open_page: Opener,
    publisher: Publisher,
) -> None:
    agent, _ = serving(broker, agent_factory)
    _, url = add_screen(agent, "till-1")
    page, trouble = open_page(url, 1280, 800)
    expect(page.locator("#link")).to_have_text("Live")
    name = "<img src=x onerror=\"window.pwned='name'\">"
    product = "<script>window.pwned='product'</script>"
    _publish(publisher, _member_visits(first_name=name, product_name=product))
    expect(page.locator("#greeting")).to_have_text(f"Serving {name}", timeout=DEADLINE_MS)
    expect(page.locator("#basket")).to_have_text(product, timeout=DEADLINE_MS)
    assert page.locator("#basket img, #basket script, #greeting img").count() == 0
    # Even a script that does get into the page cannot run inline: the policy forbids it.
    ran = page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = \"window.pwned = 'inline'\"; document.body.append(s);"
        " return window.pwned ?? null; }"
    )
    assert ran is None
    assert any("Content Security Policy" in line for line in trouble)
    assert all("Content Security Policy" in line for line in trouble)


FITS = """() => ({
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
    innerWidth, innerHeight,
})"""


@pytest.mark.parametrize(
    ("width", "height", "scrolls"),
    [(1280, 800, False), (1920, 1080, False), (3840, 2160, False)],
)
def test_the_page_fits_its_screen_and_stays_within_it_when_resized(
    broker: Mosquitto,
    agent_factory: Callable[..., AgentProcess],
    open_page: Opener,
    publisher: Publisher,
    width: int,
    height: int,
    scrolls: bool,
) -> None:
    agent, _ = serving(broker, agent_factory, "site_refresh_s = 1\n[insights]\nk = 1\n")
    _, url = add_screen(agent, "till-1")
    page, trouble = open_page(url, 1280, 800)
    expect(page.locator("#link")).to_have_text("Live")
    _publish(publisher, _member_visits())
    expect(page.locator("#panel-personal")).to_contain_text("Oolong tea", timeout=DEADLINE_MS)
    # Grown (or shrunk) from the tablet's size to this one, as a window is.
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(500)
    fits = page.evaluate(FITS)
    assert fits["width"] <= fits["innerWidth"], fits
    if not scrolls:
        # A TV cannot scroll: everything is within its screen.
        assert fits["height"] <= fits["innerHeight"], fits
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTEFACTS / f"screen-visitor-{width}x{height}.png")
    assert trouble == []
