"""The staff screens' API of a running agent (uvicorn in the agent process, a real broker):
pairing, tokens, the visitor at the screen's device and their lists, the push stream, and
what only a real HTTP server refuses. Hostile requests that need no socket are in
tests/web/test_http.py."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.mqtt.broker import Mosquitto
from edge_agent.store.database import Store
from edge_agent.store.screens import PAIRING_TTL_MS, Screens
from tests.conftest import AgentProcess
from tests.helpers import (
    Publisher,
    chunked_post,
    encode,
    fate,
    http_answer,
    slow_clients,
    socket_slack_mb,
    topic,
    track,
    wait_for,
)
from tests.screens import MEMBER, add_screen, answers, revoke, serving, visit_at_till

pytestmark = pytest.mark.integration


def _pair(agent: AgentProcess, base: str, device: str = "till-1") -> str:
    _, url = add_screen(agent, device)
    code = url.split("#pair=")[1]
    paired = httpx.post(f"{base}/v1/pair", json={"code": code})
    assert paired.status_code == 200, paired.text
    again = httpx.post(f"{base}/v1/pair", json={"code": code})
    assert again.status_code == 403  # a code works once
    token: str = paired.json()["token"]
    return token


def test_a_paired_screen_sees_the_visitor_at_its_till_and_nothing_identifying(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    agent, base = serving(broker, agent_factory)
    token = _pair(agent, base)
    headers = {"Authorization": f"Bearer {token}"}
    empty = httpx.get(f"{base}/v1/screen", headers=headers).json()
    assert empty["visitor"] == {"present": False, "first_name": None}

    publisher = Publisher(broker.port)
    try:
        publisher.publish_all((topic("till-1"), encode(e)) for e in visit_at_till(True))
        wait_for(
            lambda: (
                httpx.get(f"{base}/v1/screen", headers=headers).json()["basket"]
                == [{"item": "p2", "name": "unnamed product p2"}]
            ),
            20,
            "the visit at the till",
        )
        seen = httpx.get(f"{base}/v1/screen", headers=headers)
        assert seen.json()["visitor"] == {"present": True, "first_name": "Mei"}
        for secret in (MEMBER, "mei@example.org", "+886912345678", "visit-at-till"):
            assert secret not in seen.text
        assert seen.headers["cache-control"] == "no-store"

        # Withdrawn: no name any more.
        publisher.publish_all((topic("till-1"), encode(e)) for e in visit_at_till(False)[:1])
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

    revoke(agent, "1")
    locked = httpx.get(f"{base}/v1/screen", headers=headers)
    assert locked.status_code == 401
    assert "Bearer" in locked.json()["detail"]


def test_a_request_line_past_what_the_http_parser_takes_is_refused_and_serving_goes_on(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    _, base = serving(broker, agent_factory)
    # Past what the HTTP parser takes at all, the server refuses the request line itself.
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"GET /v1/screen?k=5&" + b"x" * 200_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert raw.recv(64).split()[1] in (b"400", b"414", b"431")
    assert answers(base)


def test_the_stream_pushes_the_visitor_and_ends_when_the_screen_is_revoked(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    agent, base = serving(broker, agent_factory)
    headers = {"Authorization": f"Bearer {_pair(agent, base)}"}
    publisher = Publisher(broker.port)
    events: list[str] = []
    try:
        with httpx.stream("GET", f"{base}/v1/screen/stream", headers=headers, timeout=30) as feed:
            assert feed.headers["content-type"].startswith("text/event-stream")
            lines = feed.iter_lines()
            for line in lines:
                if line.startswith("event: "):
                    events.append(line[7:])
                if events.count("visitor") == 1 and "site" in events:
                    break
            publisher.publish_all((topic("till-1"), encode(e)) for e in visit_at_till(True))
            for line in lines:
                if line.startswith("data: ") and '"first_name":"Mei"' in line:
                    break
            revoke(agent, "1")
            for line in lines:
                if line.startswith("event: "):
                    events.append(line[7:])
            # The server ended the stream after saying so.
            assert events[-1] == "locked"
    finally:
        publisher.close()


def test_a_screen_in_a_zone_sees_who_entered_it_until_they_leave(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    agent, base = serving(broker, agent_factory)
    screen_id, url = add_screen(agent, "booth", "--zone")
    assert screen_id == "1"
    token = httpx.post(f"{base}/v1/pair", json={"code": url.split("#pair=")[1]}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}

    def in_zone() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{base}/v1/screen", headers=headers).json()
        return answer

    assert in_zone()["screen"]["place"] == "zone booth"
    sensor = {"device": "zone-sensor-2", "anonymousId": "track-81"}
    publisher = Publisher(broker.port)
    try:
        for name, zone in (("Zone Entered", "aisle"), ("Zone Entered", "booth")):
            publisher.publish(topic("zone-sensor-2"), encode(track(name, {"zone": zone}, **sensor)))
        wait_for(lambda: in_zone()["visitor"]["present"], 20, "the visitor in the booth")
        publisher.publish(
            topic("zone-sensor-2"), encode(track("Zone Exited", {"zone": "booth"}, **sensor))
        )
        wait_for(lambda: not in_zone()["visitor"]["present"], 20, "the visitor to leave")
    finally:
        publisher.close()


def test_a_pairing_code_works_once_and_only_until_it_expires(tmp_path: Path) -> None:
    with Store.open(tmp_path / "edge-agent.db") as store:
        screens = Screens(store)
        _, stale = screens.add("till-1", "Till 1", now_ms=0)
        assert screens.pair(stale, PAIRING_TTL_MS + 1) is None
        _, fresh = screens.add("till-1", "Till 1", now_ms=1000)
        token = screens.pair(fresh, 1000 + PAIRING_TTL_MS)
        assert token is not None
        assert screens.pair(fresh, 1000) is None
        found = screens.by_token(token)
        assert found is not None
        assert found.device == "till-1"
        # Only hashes are kept: neither the code nor the token is in the database.
        dumped = "\n".join(store.db.conn.iterdump())
        assert fresh not in dumped
        assert token not in dumped


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_a_huge_body_is_refused_while_it_streams_and_costs_no_memory(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], how: str
) -> None:
    agent, base = serving(broker, agent_factory)
    port = int(base.rsplit(":", 1)[1])
    assert agent.process is not None
    before = _rss_kb(agent.process.pid)
    if how == "content-length":
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/pair HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000\r\n\r\n"
            )
            answer = http_answer(sock)  # refused before a byte of the body is sent
    else:
        answer, sent = chunked_post(port, "/v1/pair", 300)
        assert sent <= 1 + socket_slack_mb(), f"{sent} MB went before the refusal"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"too_large" in answer
    assert _rss_kb(agent.process.pid) - before < 20 * 1024
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_slow_and_greedy_clients_cannot_hold_the_screens(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    agent, base = serving(
        broker, agent_factory, "request_timeout_s = 2\nconnections_per_client = 8\n"
    )
    token = _pair(agent, base)
    port = int(base.rsplit(":", 1)[1])
    held = slow_clients(port, 140)
    opened = time.monotonic()
    try:
        # A screen at another address is answered while all 140 trickle their headers.
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=other, base_url=base, timeout=5) as screen:
            assert screen.get("/healthz").status_code == 200
            answer = screen.get("/v1/screen", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
        # Bytes now and then do not buy more time.
        time.sleep(1)
        for sock in held:
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
        fates = [fate(sock, 6) for sock in held]
    finally:
        for sock in held:
            sock.close()
    refused = [f for f, _ in fates if f.startswith(b"HTTP/1.1 429")]
    cut = [time.monotonic() - opened - waited for f, waited in fates if f == b""]
    assert len(refused) == 140 - 8
    assert len(cut) == 8, "the connections within the share are cut off at the deadline"
    # The same address is served again once its slow connections are gone.
    assert httpx.get(f"{base}/healthz").status_code == 200
