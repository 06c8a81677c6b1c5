"""The screens' API of a running agent (uvicorn in the agent process, a real broker): pairing,
tokens, the visitor at the screen's device and their lists, and hostile requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from edge_agent.adapters.mosquitto import Mosquitto, free_port
from tests.conftest import AgentProcess
from tests.helpers import Publisher, cli, encode, topic, track, wait_for

pytestmark = pytest.mark.integration

MEMBER = "member-5e1f00"


def _serving(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> tuple[AgentProcess, str]:
    """A running agent with its screens' API up; returns it and the API's base URL."""
    port = free_port()
    agent = agent_factory(broker.port, f"[http]\nenabled = true\nport = {port}\n")
    agent.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), 20, "the screens API")
    return agent, base


def _pair(agent: AgentProcess, base: str, device: str = "till-1") -> str:
    added = cli("--config", str(agent.config), "screens", "add", "--device", device)
    assert added.returncode == 0, added.stderr
    code = added.stdout.split("pairing code ")[1].split()[0]
    paired = httpx.post(f"{base}/v1/pair", json={"code": code})
    assert paired.status_code == 200, paired.text
    again = httpx.post(f"{base}/v1/pair", json={"code": code})
    assert again.status_code == 403  # a code works once
    token: str = paired.json()["token"]
    return token


def _visit(personalization: bool) -> list[dict[str, Any]]:
    user = {"userId": MEMBER, "anonymousId": "visit-at-till"}
    purposes = {"analytics": True, "personalization": personalization, "crm_sync": False}
    product = {"product_id": "p2", "price": 2.0, "quantity": 1, "cart_id": "c1"}
    identify = {
        "type": "identify",
        "messageId": f"identify-{personalization}",
        "timestamp": track("x", {})["timestamp"],
        "traits": {"first_name": "Mei", "email": "mei@example.org", "phone": "+886912345678"},
        "context": {"device": {"id": "till-1"}},
        **user,
    }
    # Consent first: a name given before personalization is granted is not kept.
    return [
        track("Consent Updated", {"purposes": purposes, "source": "till"}, **user),
        identify,
        track("Product Added", product, **user),
    ]


def test_a_paired_screen_sees_the_visitor_at_its_till_and_nothing_identifying(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    agent, base = _serving(broker, agent_factory)
    token = _pair(agent, base)
    headers = {"Authorization": f"Bearer {token}"}
    empty = httpx.get(f"{base}/v1/screen", headers=headers).json()
    assert empty["visitor"] == {"present": False, "first_name": None}

    publisher = Publisher(broker.port)
    try:
        publisher.publish_all((topic("till-1"), encode(e)) for e in _visit(True))
        wait_for(
            lambda: httpx.get(f"{base}/v1/screen", headers=headers).json()["basket"] == ["p2"],
            20,
            "the visit at the till",
        )
        seen = httpx.get(f"{base}/v1/screen", headers=headers)
        assert seen.json()["visitor"] == {"present": True, "first_name": "Mei"}
        for secret in (MEMBER, "mei@example.org", "+886912345678", "visit-at-till"):
            assert secret not in seen.text
        assert seen.headers["cache-control"] == "no-store"

        # Withdrawn: no name any more.
        publisher.publish_all((topic("till-1"), encode(e)) for e in _visit(False)[:1])
        wait_for(
            lambda: (
                httpx.get(f"{base}/v1/screen", headers=headers).json()["visitor"]
                == {"present": True, "first_name": None}
            ),
            20,
            "the withdrawal to take effect",
        )
    finally:
        publisher.close()

    listed = cli("--config", str(agent.config), "screens", "list")
    screen_id = listed.stdout.split()[0]
    assert cli("--config", str(agent.config), "screens", "revoke", screen_id).returncode == 0
    locked = httpx.get(f"{base}/v1/screen", headers=headers)
    assert locked.status_code == 401
    assert "Bearer" in locked.json()["detail"]


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


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
        ("GET", "/../../etc/passwd", {}, 404),
        ("DELETE", "/v1/screen", {}, 404),
    ],
)
def test_hostile_requests_get_clear_errors(
    broker: Mosquitto,
    agent_factory: Callable[..., AgentProcess],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    _, base = _serving(broker, agent_factory)
    answer = httpx.request(method, base + path, **kwargs)
    assert answer.status_code == status
    assert set(answer.json()) == {"error", "detail"}
    assert _answers(base)  # still serving
