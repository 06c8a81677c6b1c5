"""The agent's outbox drained to the real collector under uvicorn, on SQLite and PostgreSQL:
end to end, through an outage, through a link that cuts connections, and refusals."""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.app import clock
from edge_agent.app.insights import compute_insights
from edge_agent.collector.app import create_app
from edge_agent.collector.store.central import CentralStore
from edge_agent.config import Settings, load_settings
from edge_agent.core.aggregate import HOUR_MS, hour_of
from edge_agent.errors import ConfigError
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.service import free_port
from edge_agent.store.database import Store
from edge_agent.sync.client import SyncReport, client_for, drain
from tests.collector_helpers import ADMIN_TOKEN, Server, count, database, rows
from tests.conftest import AgentProcess
from tests.helpers import SITE, Publisher, cli, encode, ingest, topic, track, wait_for
from tests.proxy import FlakyProxy

pytestmark = pytest.mark.integration

NOW = clock.now_ms()
LAST_HOUR = hour_of(NOW) - HOUR_MS
TOKEN = "site-token-" + "t" * 32
MEMBER = "member-0001"


class Central:
    """A collector on one database, restartable on the same port (an outage and back)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.store = CentralStore.open(target)
        self.store.add_site(SITE, "venue-1", hashlib.sha256(TOKEN.encode()).hexdigest())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Server | None = None

    def start(self) -> None:
        self.server = Server(create_app(self.store, ADMIN_TOKEN), port=self.port)
        self.server.__enter__()

    def stop(self) -> None:
        if self.server is not None:
            self.server.__exit__()
            self.server = None

    def close(self) -> None:
        self.stop()
        self.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def central(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Central]:
    with database(str(request.param), tmp_path, request) as target:
        c = Central(target)
        c.start()
        try:
            yield c
        finally:
            c.close()


def _site(tmp_path: Path, url: str, **overrides: object) -> Settings:
    sync: dict[str, object] = {
        "url": url,
        "token": TOKEN,
        "backoff_min_s": 0.01,
        "backoff_max_s": 0.05,
        **overrides,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[site]\nid = "{SITE}"\nvenue = "venue-1"\ndata_dir = "{tmp_path / "data"}"\n[sync]\n'
        + "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in sync.items())
    )
    return load_settings(config, environ={})


def _store(settings: Settings, events: list[dict[str, Any]]) -> None:
    # Judged at the real time: some events are stamped now, and a long run of the suite
    # puts NOW (taken at import) minutes in the past.
    assert ingest(settings, events, clock.now_ms()) == 0


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _day(visits: int, member_orders: int = 0) -> list[dict[str, Any]]:
    """Anonymous visits with an order each in the last hour, and a member with crm_sync who
    buys ``member_orders`` times."""
    events: list[dict[str, Any]] = []
    product = {"product_id": "p1", "price": 5.0, "quantity": 2, "category": "c1"}
    for n in range(visits):
        at = LAST_HOUR + n * 1000
        visit = f"visit-{n}"
        events.append(
            track("Zone Entered", {"zone": "dairy"}, anonymousId=visit, timestamp=_iso(at))
        )
        events.append(
            track(
                "Order Completed",
                {"order_id": f"o{n}", "total": 10.0, "currency": "TWD", "products": [product]},
                anonymousId=visit,
                timestamp=_iso(at + 500),
            )
        )
    if member_orders:
        user = {"userId": MEMBER, "anonymousId": "visit-member"}
        events.append(
            track(
                "Consent Updated",
                {
                    "purposes": {"analytics": True, "personalization": False, "crm_sync": True},
                    "source": "kiosk",
                },
                **user,
            )
        )
        events.append(
            {
                "type": "identify",
                "messageId": "identify-member",
                "timestamp": _iso(NOW),
                "traits": {"first_name": "Mei", "email": "mei@example.org"},
                "context": {"device": {"id": "till-1"}},
                **user,
            }
        )
        for n in range(member_orders):
            events.append(
                track(
                    "Order Completed",
                    {
                        "order_id": f"m{n}",
                        "total": 20.0,
                        "currency": "TWD",
                        "products": [product],
                    },
                    **user,
                )
            )
    return events


def _prepare(settings: Settings, visits: int = 8, member_orders: int = 3) -> None:
    _store(settings, _day(visits, member_orders))
    with Store.open(settings.database) as store:
        compute_insights(store, settings, NOW)


def _drain_until_empty(settings: Settings, client: httpx.Client, tries: int = 200) -> SyncReport:
    for _ in range(tries):
        report = drain(settings, clock.now_ms(), client, force=True)
        if not report.remaining:
            return report
    raise AssertionError(f"the outbox did not drain: {report.as_dict()}")


def test_insights_notices_and_consented_data_arrive_once(central: Central, tmp_path: Path) -> None:
    settings = _site(tmp_path, central.url)
    _prepare(settings)
    with client_for(settings) as client:
        report = _drain_until_empty(settings, client)
        assert report.sent == {"identified": 4, "insight": 1}
        # Nothing left: a second run sends nothing.
        assert drain(settings, clock.now_ms(), client, force=True).sent == {}
    ((user_id,),) = set(rows(central.target, "SELECT DISTINCT user_id FROM identified"))
    assert user_id == MEMBER  # the raw id, for the CRM to match: crm_sync was granted
    assert count(central.target, "identified") == 4  # identify, three orders
    summary = httpx.get(
        f"{central.url}/v1/insights",
        params={"venue": "venue-1", "by": "hour", "k": 1},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()
    (hour,) = [r for r in summary["rows"] if not r.get("suppressed")]
    assert hour["orders"] == 8  # the member's orders are in the current hour, still open


def test_an_outage_loses_nothing_and_drains_afterwards(central: Central, tmp_path: Path) -> None:
    settings = _site(tmp_path, central.url)
    _prepare(settings, visits=6, member_orders=2)
    central.stop()
    with client_for(settings) as client:
        at = clock.now_ms()
        down = drain(settings, at, client, force=True)
        assert down.problem is not None
        assert down.retry_in_s is not None
        assert down.sent == {}
        # Without force, the backoff holds the next run back.
        assert drain(settings, at, client).skipped is not None
        # The site keeps producing while central is down.
        _store(settings, _day(0, member_orders=2))
        central.start()
        _drain_until_empty(settings, client)
    ((stored, distinct),) = rows(
        central.target, "SELECT count(*), count(DISTINCT message_id) FROM identified"
    )
    assert stored == distinct == 1 + 2 + 2  # identify once, four orders


def test_a_link_that_cuts_connections_stores_each_batch_once(
    central: Central, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        proxy = FlakyProxy(central.port, cut_share=0.6, seed=7)
        stack.callback(proxy.close)
        settings = _site(tmp_path, f"http://127.0.0.1:{proxy.port}", batch_max_items=2)
        _prepare(settings, visits=10, member_orders=8)
        # One request per connection, so that the proxy's dice roll for every request.
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            _drain_until_empty(settings, client)
    assert proxy.cuts["mid-response"] > 0  # some batches were stored but not acknowledged
    assert proxy.cuts["mid-request"] > 0
    messages = rows(central.target, "SELECT message_id FROM identified")
    assert len(messages) == len(set(messages)) == 1 + 8
    assert count(central.target, "insight_cells") == 1


def test_consent_withdrawn_before_sending_stops_the_items_and_tells_central(
    central: Central, tmp_path: Path
) -> None:
    settings = _site(tmp_path, central.url)
    _prepare(settings, visits=6, member_orders=3)
    withdraw = track(
        "Consent Updated",
        {"purposes": {"crm_sync": False}, "source": "kiosk"},
        userId=MEMBER,
    )
    _store(settings, [withdraw])
    with client_for(settings) as client:
        report = _drain_until_empty(settings, client)
    assert "identified" not in report.sent
    assert count(central.target, "identified") == 0
    assert MEMBER not in str(rows(central.target, "SELECT * FROM audit"))


def test_an_item_central_would_refuse_is_kept_here_alone(central: Central, tmp_path: Path) -> None:
    settings = _site(tmp_path, central.url)
    _prepare(settings, visits=6, member_orders=1)
    # An item the collector would refuse for good (a cell of no form it takes): the agent
    # checks with the same rules, so it never leaves and holds nothing back.
    with Store.open(settings.database) as store:
        store.db.execute(
            "UPDATE outbox SET payload = ? WHERE kind = 'insight'",
            [orjson.dumps({"start_ms": LAST_HOUR, "hours": "one"}).decode()],
        )
    with client_for(settings) as client:
        report = _drain_until_empty(settings, client)
    assert report.refused == 1
    with Store.open(settings.database) as store:
        ((status, reason, items),) = store.db.execute(
            "SELECT status, reason, items FROM sync_dead_letters"
        ).fetchall()
        losses = {(c, r): n for c, r, n in store.db.execute("SELECT * FROM outbox_losses")}
    assert status == 0
    assert "item.cell.hours" in reason
    assert items == 1
    assert losses == {("insight", "unsendable"): 1}
    assert count(central.target, "identified") == 2  # the rest went through


def test_a_wrong_token_keeps_everything_queued(central: Central, tmp_path: Path) -> None:
    settings = _site(tmp_path, central.url, token="not-the-token")  # noqa: S106
    _prepare(settings, visits=6, member_orders=1)
    with client_for(settings) as client:
        report = drain(settings, clock.now_ms(), client, force=True)
    assert report.problem is not None
    assert "token" in report.problem
    assert report.remaining == {"identified": 2, "insight": 1}


def test_bodies_are_gzip_with_a_stable_idempotency_key(central: Central, tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    settings = _site(tmp_path, central.url)
    _prepare(settings, visits=6, member_orders=0)
    with client_for(settings) as client:
        client.event_hooks["request"] = [seen.append]
        _drain_until_empty(settings, client)
    (request,) = seen
    body = gzip.decompress(request.content)
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Idempotency-Key"] == hashlib.sha256(body).hexdigest()
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_identified_data_can_go_to_a_segment_compatible_endpoint(
    central: Central, tmp_path: Path
) -> None:
    seen: list[httpx.Request] = []
    settings = _site(tmp_path, central.url, segment_url=central.url + "/", segment_write_key=TOKEN)
    _prepare(settings, visits=6, member_orders=2)
    with client_for(settings) as client:
        client.event_hooks["request"] = [seen.append]
        _drain_until_empty(settings, client)
    (batch,) = [r for r in seen if r.url.path == "/v1/batch"]
    basic = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
    assert batch.headers["Authorization"] == basic
    assert count(central.target, "identified") == 3


def test_a_full_outbox_drops_the_lowest_class_first_and_central_sees_the_losses(
    central: Central, tmp_path: Path
) -> None:
    settings = _site(tmp_path, central.url, outbox_quota_bytes=10_000)
    _prepare(settings, visits=6, member_orders=40)
    with Store.open(settings.database) as store:
        before = dict(store.db.execute("SELECT kind, count(*) FROM outbox GROUP BY kind"))
    with client_for(settings) as client:
        report = _drain_until_empty(settings, client)
    assert report.dropped > 0
    with Store.open(settings.database) as store:
        losses = {(c, r): n for c, r, n in store.db.execute("SELECT * FROM outbox_losses")}
    # The insight went first, then the oldest identified items; every one is counted.
    assert losses[("insight", "dropped_quota")] == before["insight"]
    dropped_identified = losses[("identified", "dropped_quota")]
    assert count(central.target, "identified") == before["identified"] - dropped_identified
    sites = httpx.get(
        f"{central.url}/v1/sites", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    (site,) = [s for s in sites["sites"] if s["site"] == SITE]
    assert site["losses"]["identified"]["dropped_quota"] == dropped_identified


def test_the_sync_command(central: Central, tmp_path: Path) -> None:
    settings = _site(tmp_path, central.url)
    _prepare(settings, visits=6, member_orders=1)
    config = str(tmp_path / "agent.toml")
    central.stop()
    down = cli("--config", config, "sync")
    assert down.returncode == 1
    assert "stopped: no answer" in down.stdout
    assert "still queued: identified 2, insight 1" in down.stdout
    central.start()
    up = cli("--config", config, "sync")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "sent: identified 2, insight 1" in up.stdout
    assert "still queued: nothing" in up.stdout


def test_the_running_agent_rides_out_a_central_outage(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """Events keep coming over MQTT while central is down; afterwards everything drains, once."""
    with database("sqlite", tmp_path) as target:
        c = Central(target)
        c.start()
        agent = agent_factory(
            broker.port,
            f'[sync]\nurl = "{c.url}"\ntoken = "{TOKEN}"\nevery_s = 10\njitter_s = 0\n'
            "backoff_min_s = 0.5\nbackoff_max_s = 1\n",
        )
        agent.start()
        publisher = Publisher(broker.port)
        try:
            consent = {"analytics": True, "personalization": False, "crm_sync": True}
            orders = [
                track(
                    "Order Completed",
                    {
                        "order_id": f"o{n}",
                        "total": 5.0,
                        "currency": "TWD",
                        "products": [{"product_id": "p1", "price": 5.0, "quantity": 1}],
                    },
                    userId=MEMBER,
                )
                for n in range(20)
            ]
            first = [
                track("Consent Updated", {"purposes": consent, "source": "kiosk"}, userId=MEMBER),
                *orders[:10],
            ]
            publisher.publish_all((topic("till-1"), encode(e)) for e in first)
            wait_for(lambda: count(target, "identified") == 10, 40, "the first orders at central")
            c.stop()
            publisher.publish_all((topic("till-1"), encode(e)) for e in orders[10:])
            agent.wait_log("sync_retry", timeout_s=40)  # it tried, central was away
            c.start()
            wait_for(lambda: count(target, "identified") == 20, 40, "every order at central")
            messages = rows(target, "SELECT message_id FROM identified")
            assert sorted(m for (m,) in messages) == sorted(e["messageId"] for e in orders)
        finally:
            publisher.close()
            c.close()


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A site CA, and a certificate for 127.0.0.1 it signed: (CA, certificate, key) PEM files."""
    now = datetime.now(UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test central CA"))
        .issuer_name(name("test central CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "central.pem", folder / "central.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_with_the_configured_ca_bundle_and_only_with_it(tmp_path: Path) -> None:
    ca, certificate, key = _certificates(tmp_path)
    with database("sqlite", tmp_path) as target:
        store = CentralStore.open(target)
        store.add_site(SITE, "venue-1", hashlib.sha256(TOKEN.encode()).hexdigest())
        try:
            with Server(create_app(store, ADMIN_TOKEN), tls=(certificate, key)) as server:
                untrusted = _site(tmp_path / "a", server.url)
                _prepare(untrusted, visits=6, member_orders=1)
                with client_for(untrusted) as client:
                    refused = drain(untrusted, clock.now_ms(), client, force=True)
                assert refused.problem is not None
                assert "CERTIFICATE_VERIFY_FAILED" in refused.problem
                assert refused.remaining == {"identified": 2, "insight": 1}
                trusted = _site(tmp_path / "b", server.url, ca_bundle=str(ca))
                _prepare(trusted, visits=6, member_orders=1)
                with client_for(trusted) as client:
                    report = _drain_until_empty(trusted, client)
                assert report.sent == {"identified": 2, "insight": 1}
        finally:
            store.close()
    missing = _site(tmp_path / "c", "https://127.0.0.1:1", ca_bundle=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match="ca_bundle"):
        client_for(missing)
