"""Helpers of the staff screens' tests: an agent serving screens, and screens added to it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from edge_agent.mqtt.broker import Mosquitto
from edge_agent.service import free_port
from tests.conftest import AgentProcess
from tests.helpers import cli, identify, track, wait_for


def answers(base: str) -> bool:
    """Whether the agent's HTTP server answers its health check."""
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def serving(
    broker: Mosquitto,
    agent_factory: Callable[..., AgentProcess],
    extra: str = "",
    env: Mapping[str, str] | None = None,
) -> tuple[AgentProcess, str]:
    """A running agent with its staff screens up (``extra``: more [http] lines and sections;
    ``env``: settings as environment variables); returns it and their base URL."""
    port = free_port()
    agent = agent_factory(
        broker.port,
        f"[http]\nenabled = true\nport = {port}\n{extra}",
        env=env or {},
        train_on_start=True,
    )
    agent.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(base), 20, "the staff screens' server")
    # The start-up model job (a child process) has installed the shipped models.
    agent.wait_log("model_job_done")
    return agent, base


def add_screen(agent: AgentProcess, place: str, kind: str = "--device") -> tuple[str, str]:
    """Register a screen at a device (or, with ``--zone``, in a zone); returns its id and the
    address that pairs it."""
    added = cli("--config", str(agent.config), "screens", "add", kind, place)
    assert added.returncode == 0, added.stderr
    screen_id = added.stdout.split()[1]
    url = added.stdout.split("open ")[1].split()[0]
    return screen_id, url


def revoke(agent: AgentProcess, screen_id: str) -> None:
    """Lock a screen out through the CLI, as an installer would."""
    revoked = cli("--config", str(agent.config), "screens", "revoke", screen_id)
    assert revoked.returncode == 0, revoked.stderr


#: The loyalty member the screens' tests serve.
MEMBER = "member-5e1f00"


def visit_at_till(personalization: bool) -> list[dict[str, Any]]:
    """A member's visit at till-1: consent (with or without personalization), a loyalty
    check-in with traits a screen must never show, and a product in the basket."""
    user = {"userId": MEMBER, "anonymousId": "visit-at-till"}
    purposes = {"analytics": True, "personalization": personalization, "crm_sync": False}
    product = {"product_id": "p2", "price": 2.0, "quantity": 1, "cart_id": "c1"}
    traits = {"first_name": "Mei", "email": "mei@example.org", "phone": "+886912345678"}
    # Consent first: a name given before personalization is granted is not kept.
    return [
        track("Consent Updated", {"purposes": purposes, "source": "till"}, **user),
        identify(MEMBER, traits, anonymousId=user["anonymousId"]),
        track("Product Added", product, **user),
    ]
