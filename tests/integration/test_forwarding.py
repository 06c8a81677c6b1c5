"""Consented identified data forwarded from central to a CRM destination: a local
Segment-compatible receiver under a real uvicorn, central's store on SQLite and PostgreSQL,
the forwarder as the serve process runs it (end to end) or one pass at a time (outages)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request, Response

from edge_agent.collector import wire
from edge_agent.collector.app import create_app
from edge_agent.collector.forwarder import Pacing, forward
from edge_agent.collector.store.central import CentralStore, Envelope, Site
from edge_agent.collector.store.engine import now_ms
from tests.collector_helpers import (
    ADMIN_TOKEN,
    Server,
    collector_cli,
    post,
    rows,
    segment_item,
    subject,
    sync_body,
)

pytestmark = pytest.mark.integration

VENUE = "mall-a"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WRITE_KEY = "wk-" + "k" * 20
FAST = Pacing(every_s=0.05, backoff_min_s=0.01, backoff_max_s=0.02)


class Receiver:
    """A Segment-compatible endpoint that records what it is sent; ``answer`` says what it
    replies to a request (a status), by default 200."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.notices: list[dict[str, Any]] = []
        self.auth: set[str] = set()
        self.answer: Callable[[dict[str, Any]], int] = lambda _: 200
        self.app = FastAPI()
        self.app.post("/v1/batch")(self._batch)
        self.app.post("/v1/edge/notices")(self._notices)

    async def _batch(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.auth.add(request.headers["authorization"])
        status = self.answer(body)
        if status == 200:
            self.batches.append(body)
        return Response(b'{"success": true}' if status == 200 else b"no", status_code=status)

    async def _notices(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        status = self.answer(body)
        if status == 200:
            self.notices.append(body)
        return Response(b"{}", status_code=status)

    def message_ids(self) -> list[str]:
        return [item["messageId"] for b in self.batches for item in b["batch"]]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, Server]]:
    made = Receiver()
    with Server(made.app) as server:
        yield made, server


def add_site(store: CentralStore, site: str = "shop-a") -> str:
    token = secrets.token_urlsafe(32)
    store.add_site(site, VENUE, hashlib.sha256(token.encode()).hexdigest())
    return token


def add_destination(target: str, url: str, tmp_path: Path, name: str = "crm") -> None:
    key_file = tmp_path / f"{name}.key"
    key_file.write_text(WRITE_KEY + "\n")
    done = collector_cli(
        "destinations", "add", name, "--url", url, "--write-key-file", str(key_file),
        "--db", target,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def listed(target: str) -> list[dict[str, Any]]:
    done = collector_cli("destinations", "list", "--format", "json", "--db", target)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def push(store: CentralStore, items: list[dict[str, Any]], site: str = "shop-a") -> None:
    """Items received from ``site`` as the intake stores them."""
    raw = orjson.dumps({"batch": items})
    batch = wire.parse_batch(raw, site, wire.Clock(now_ms()))
    store.receive_batch(Envelope(Site(site, VENUE), "/v1/batch", None, "x"), batch)


def notify(store: CentralStore, notice: dict[str, Any], site: str = "shop-a") -> None:
    raw = orjson.dumps(sync_body(site, VENUE, now_ms(), [notice]))
    body = wire.parse_sync(raw, site, wire.Clock(now_ms()))
    store.receive_sync(Envelope(Site(site, VENUE), "/v1/sync", None, "x"), body)


def erasure(person: str, at_ms: int) -> dict[str, Any]:
    return {"kind": "erasure", "id": f"erasure:{person}", "subject_hash": subject(person),
            "timestamp_ms": at_ms}  # fmt: skip


def until(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not reached before the deadline"
        time.sleep(0.05)


def test_a_site_s_items_reach_the_crm_once_and_an_erasure_follows(
    store: CentralStore, target: str, tmp_path: Path, receiver: tuple[Receiver, Server]
) -> None:
    crm, crm_server = receiver
    token = add_site(store)
    add_destination(target, crm_server.url, tmp_path)
    ts = now_ms() - 60_000
    body = {"batch": [segment_item("shop-a", p, timestamp_ms=ts) for p in ("mei", "ana", "bo")]}
    sent = {item["messageId"] for item in body["batch"]}
    with (
        Server(create_app(store, ADMIN_TOKEN)) as central,
        httpx.Client(base_url=central.url, timeout=30) as client,
    ):
        assert post(client, "/v1/batch", body, token).json()["stored"] == 3
        # The site retries without its key: stored once, so forwarded once.
        assert post(client, "/v1/batch", body, token, key=False).json()["stored"] == 0
        until(lambda: set(crm.message_ids()) == sent)
        assert listed(target)[0] | {"url": None} == {
            "name": "crm", "kind": "segment", "url": None, "enabled": True, "queued": 0,
            "delivered": 3, "failing": 0, "dead": 0, "last_error": None,
        }  # fmt: skip
        assert sorted(crm.message_ids()) == sorted(sent)
        assert crm.batches[0]["batch"][0]["context"]["edge"]["site"] == "shop-a"
        assert crm.auth == {"Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}

        gone = erasure("mei", ts + 1000)
        assert (
            post(client, "/v1/sync", sync_body("shop-a", VENUE, ts, [gone]), token).status_code
            == 200
        )
        until(lambda: len(crm.notices) == 1)
        (notice,) = crm.notices[0]["notices"]
        assert notice | {"requestedAt": None} == {
            "type": "erasure", "messageId": "shop-a:erasure:mei", "site": "shop-a",
            "subjectHash": subject("mei"), "userIds": ["loyalty-mei"], "purpose": None,
            "requestedAt": None,
        }  # fmt: skip

        person = client.get(f"/v1/people/{subject('ana')}", headers=ADMIN)
        assert person.status_code == 200, person.text
        ana = person.json()
        assert [s["site"] for s in ana["sites"]] == ["shop-a"]
        assert ana["sites"][0]["items"][0]["item"]["userId"] == "loyalty-ana"
        assert [(f["destination"], f["kind"]) for f in ana["forwarded"]] == [("crm", "identified")]
        assert ana["forwarded"][0]["delivered_ms"] is not None
        mei = client.get(f"/v1/people/{subject('mei')}", headers=ADMIN).json()
        assert mei["sites"] == []
        assert [n["kind"] for n in mei["notices"]] == ["erasure"]
        assert [f["kind"] for f in mei["forwarded"]] == ["identified", "erasure"]
        assert client.get(f"/v1/people/{subject('ana')}").status_code == 401
        assert client.get("/v1/people/not-a-hash", headers=ADMIN).status_code == 422
    # Delivered, a notice keeps no user id.
    assert "loyalty-" not in str(rows(target, "SELECT * FROM forward_queue"))


def test_an_outage_is_waited_out_and_everything_drains_without_duplicates(
    store: CentralStore, target: str, tmp_path: Path
) -> None:
    crm = Receiver()
    with Server(crm.app) as first:
        url, port = first.url, int(first.url.rsplit(":", 1)[1])
    add_site(store)
    add_destination(target, url, tmp_path)
    ts = now_ms() - 60_000
    items = [segment_item("shop-a", f"p{i}", timestamp_ms=ts + i) for i in range(150)]
    push(store, items)
    rng = random.Random(7)
    with httpx.Client(timeout=5) as client:
        # Down: no answer at all.
        assert forward(store, client, now_ms(), rng, FAST).retried == 100
        (status,) = listed(target)
        assert (status["queued"], status["failing"], status["delivered"]) == (150, 100, 0)
        assert "no answer" in status["last_error"]
        with Server(crm.app, port=port):
            crm.answer = lambda _: 503
            later = now_ms() + 60_000
            assert forward(store, client, later, rng, FAST).retried > 0
            assert "HTTP 503" in listed(target)[0]["last_error"]
            crm.answer = lambda _: 200
            for step in range(2, 6):
                forward(store, client, later + step * 60_000, rng, FAST)
    assert sorted(crm.message_ids()) == sorted(i["messageId"] for i in items)
    (status,) = listed(target)
    assert (status["queued"], status["delivered"], status["failing"]) == (0, 150, 0)


def test_an_erasure_drops_undelivered_items_and_is_forwarded_with_a_withdrawal(
    store: CentralStore, target: str, tmp_path: Path, receiver: tuple[Receiver, Server]
) -> None:
    crm, crm_server = receiver
    add_site(store)
    add_destination(target, crm_server.url, tmp_path)
    ts = now_ms() - 60_000
    mei = [segment_item("shop-a", "mei", timestamp_ms=ts), segment_item("shop-a", "mei",
           timestamp_ms=ts, event=None)]  # fmt: skip
    ana = [segment_item("shop-a", "ana", timestamp_ms=ts)]
    push(store, mei + ana)
    rng = random.Random(1)
    with httpx.Client(timeout=5) as client:
        crm.answer = lambda _: 503
        forward(store, client, now_ms(), rng, FAST)
        notify(store, erasure("mei", ts + 1000))
        withdrawal = {"kind": "consent_withdrawn", "id": "consent:ana", "purpose": "crm_sync",
                      "subject_hash": subject("ana"), "timestamp_ms": ts + 2000}  # fmt: skip
        crm.answer = lambda _: 200
        forward(store, client, now_ms() + 60_000, rng, FAST)
        notify(store, withdrawal)
        forward(store, client, now_ms() + 120_000, rng, FAST)
    assert crm.message_ids() == [ana[0]["messageId"]]
    got = [n for body in crm.notices for n in body["notices"]]
    assert [(n["type"], n["userIds"], n["purpose"]) for n in got] == [
        ("erasure", ["loyalty-mei"], None),
        ("consent_withdrawn", ["loyalty-ana"], "crm_sync"),
    ]
    assert rows(target, "SELECT count(*) FROM forward_queue WHERE subject_hash = ?",
                (subject("mei"),)) == [(1,)]  # fmt: skip
    audit = rows(target, "SELECT detail FROM audit WHERE action = 'erasure'")
    assert orjson.loads(audit[0][0])["forward_queue_dropped"] == 2


def test_a_refused_item_is_set_aside_with_the_reason_and_the_rest_is_delivered(
    store: CentralStore, target: str, tmp_path: Path, receiver: tuple[Receiver, Server]
) -> None:
    crm, crm_server = receiver
    add_site(store)
    add_destination(target, crm_server.url, tmp_path)
    ts = now_ms() - 60_000
    good = [segment_item("shop-a", f"p{i}", timestamp_ms=ts) for i in range(5)]
    bad = segment_item("shop-a", "zed", timestamp_ms=ts, event="Bad Event")
    push(store, [*good[:2], bad, *good[2:]])
    crm.answer = lambda body: (
        400 if any(i.get("event") == "Bad Event" for i in body["batch"]) else 200
    )
    with httpx.Client(timeout=5) as client:
        done = forward(store, client, now_ms(), random.Random(3), FAST)
    assert (done.delivered, done.dead, done.retried) == (5, 1, 0)
    assert sorted(crm.message_ids()) == sorted(i["messageId"] for i in good)
    (status,) = listed(target)
    assert (status["queued"], status["delivered"], status["dead"]) == (0, 5, 1)
    assert status["last_error"].startswith("HTTP 400")
    text = collector_cli("destinations", "list", "--db", target).stdout
    assert "dead 1" in text
    assert "last error: HTTP 400" in text
    assert WRITE_KEY not in text
    removed = collector_cli("destinations", "remove", "crm", "--db", target)
    assert removed.returncode == 0, removed.stderr
    assert listed(target) == []
    again = collector_cli("destinations", "remove", "crm", "--db", target)
    assert again.returncode == 2
    assert "no destination" in again.stderr


def test_a_refused_write_key_keeps_the_items_until_the_key_is_put_right(
    store: CentralStore, target: str, tmp_path: Path, receiver: tuple[Receiver, Server]
) -> None:
    crm, crm_server = receiver
    add_site(store)
    add_destination(target, crm_server.url, tmp_path)
    good_key = "wk-right-" + "r" * 16
    expected = "Basic " + base64.b64encode(f"{good_key}:".encode()).decode()
    crm.answer = lambda _: 200 if expected in crm.auth and len(crm.auth) == 1 else 401
    crm.auth.clear()
    items = [segment_item("shop-a", f"p{i}", timestamp_ms=now_ms() - 60_000) for i in range(3)]
    push(store, items)
    rng = random.Random(5)
    with httpx.Client(timeout=5) as client:
        assert forward(store, client, now_ms(), rng, FAST).dead == 0
        (status,) = listed(target)
        assert (status["queued"], status["dead"]) == (3, 0)
        assert "write key" in status["last_error"]
        key_file = tmp_path / "right.key"
        key_file.write_text(good_key + "\n")
        changed = collector_cli(
            "destinations", "set-key", "crm", "--write-key-file", str(key_file), "--db", target
        )
        assert changed.returncode == 0, changed.stderr
        crm.auth.clear()
        forward(store, client, now_ms(), rng, FAST)
    assert sorted(crm.message_ids()) == sorted(i["messageId"] for i in items)
    assert listed(target)[0]["delivered"] == 3
