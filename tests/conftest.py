"""Fixtures that start real parts: a Mosquitto on a free port and the agent as a process."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import settings
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from edge_agent.demo.agent import AgentChild
from edge_agent.mqtt.broker import Mosquitto
from tests.helpers import SITE
from tests.postgres import Cluster

# Examples: as many as each test asks for (hypothesis's 100 where it does not say), with no
# deadline, since a loaded machine or a second xdist worker slows any one example down. "dev"
# runs fewer where a test does not set its own count: HYPOTHESIS_PROFILE=dev.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGE_AGENT_* variable of the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith("EDGE_AGENT_") or name == "JOURNAL_STREAM":
            monkeypatch.delenv(name)


@pytest.fixture
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    """A real Mosquitto with the project's config, on a free loopback port."""
    folder = tmp_path / "broker"
    folder.mkdir()
    mosquitto = Mosquitto(folder)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()
    if getattr(request.node, "failed", False):
        print(f"--- mosquitto log ---\n{mosquitto.log_tail(80)}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster of this test session's own (one per xdist worker), started the
    first time a test needs it: its admin DSN. Each test makes its own database in it."""
    cluster = Cluster()
    try:
        cluster.start()
    except RuntimeError:
        print(f"--- postgresql log ---\n{cluster.log_tail()}")
        cluster.stop()
        raise
    yield cluster.admin
    cluster.stop()


#: Where tests leave what a person should be able to look at afterwards (screenshots).
ARTEFACTS = Path(__file__).parent.parent / "build" / "test-artefacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no browser is downloaded). Per
    module: Playwright's sync API keeps an event loop running in this thread while it is open,
    and tests with an event loop of their own must not find it."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("chromium is missing: run scripts/setup, which installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Remember whether a test failed, so fixtures can print their process's log."""
    report = yield
    if getattr(report, "when", None) == "call" and getattr(report, "failed", False):
        item.failed = True  # type: ignore[attr-defined]
    return report


class AgentProcess(AgentChild):
    """The agent run as ``python -m edge_agent run``, the way an installer runs it."""

    def __init__(
        self,
        folder: Path,
        broker_port: int,
        extra: str = "",
        prepared: Path | None = None,
        env: Mapping[str, str] = {},
    ) -> None:
        """``prepared``: run with that config file as it is (its data_dir must be
        ``folder/data``) instead of writing one for ``broker_port``. ``env``: variables added
        to the agent's environment (e.g. what systemd would set)."""
        super().__init__(
            prepared or folder / "agent.toml", folder / "agent.log", {**os.environ, **env}
        )
        self.folder = folder
        self.db = folder / "data" / "edge-agent.db"
        if prepared is None:
            self.config.write_text(
                f'[site]\nid = "{SITE}"\ndata_dir = "{folder / "data"}"\n'
                f"[mqtt]\nport = {broker_port}\nreconnect_min_s = 0.5\nreconnect_max_s = 1\n"
                f"{extra}"
            )

    def start(self, wait_connected: bool = True) -> None:
        """Start the agent in a session of its own; by default wait until its subscription
        is confirmed."""
        if wait_connected:
            self.start_subscribed(own_session=True)
        else:
            self.spawn(own_session=True)

    def kill9(self) -> None:
        """SIGKILL the agent's main process, as a power cut or OOM kill would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def agent_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., AgentProcess]]:
    """Make agents on a fresh data folder each; all are stopped after the test."""
    made: list[AgentProcess] = []

    def make(
        broker_port: int,
        extra: str = "",
        env: Mapping[str, str] = {},
        train_on_start: bool = False,
    ) -> AgentProcess:
        """``train_on_start``: let the agent run its model job at start-up (a child process
        that loads onnxruntime): only the tests about models and screens need it."""
        folder = tmp_path / f"agent{len(made)}"
        folder.mkdir(exist_ok=True)  # it may be a filesystem of its own, mounted there
        if not train_on_start:
            env = {"EDGE_AGENT_MODELS__TRAIN_ON_START": "false", **env}
        agent = AgentProcess(folder, broker_port, extra, env=env)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()
        agent.kill_group()
        if getattr(request.node, "failed", False):
            print(f"--- agent log {agent.folder} ---\n{agent.log_text()[-6000:]}")


#: Opens an address at a size: the page, and what went wrong in it.
Opener = Callable[[str, int, int], tuple[Page, list[str]]]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Opener]:
    """Open an address in a fresh browser profile of the given size; also gives what went
    wrong in it (script errors, policy violations, requests to anywhere but the address's own
    origin). Every profile is closed after the test."""
    contexts: list[BrowserContext] = []

    def open_(url: str, width: int, height: int) -> tuple[Page, list[str]]:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        trouble: list[str] = []
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}/"
        page.on("pageerror", lambda error: trouble.append(f"script error: {error}"))
        page.on(
            "console",
            lambda message: trouble.append(message.text) if message.type == "error" else None,
        )
        page.on(
            "request",
            lambda request: None if request.url.startswith(base) else trouble.append(request.url),
        )
        page.goto(url)
        return page, trouble

    yield open_
    for context in contexts:
        context.close()
