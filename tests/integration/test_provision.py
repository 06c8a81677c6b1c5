"""A provisioned site on a real Mosquitto: TLS, one password per device, the ACL, and the agent
ingesting over TLS through revocations and rotations."""

from __future__ import annotations

import getpass
import json
import os
import pwd
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import load_settings
from edge_agent.core.topics import DeviceId
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.ops.provision import SiteFolder, VenueFolder
from edge_agent.service import free_port
from tests.conftest import AgentProcess
from tests.helpers import cli, encode, query, stored_ids, topic, track, wait_for

pytestmark = pytest.mark.integration

SITE = "test-site"
NOT_AUTHORIZED = 0x87


def _bundle(folder: SiteFolder, device: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (folder.bundle(DeviceId(device)) / "device.json").read_text()
    )
    return document


class Client:
    """A paho MQTT 5 client over TLS that records what the broker answered."""

    def __init__(
        self, port: int, ca_file: Path, username: str, password: str, client_id: str = ""
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.tls_set(ca_certs=str(ca_file))
        self.client.username_pw_set(username, password)
        self.lock = threading.Lock()
        self.connack: ReasonCode | None = None
        self.disconnected = False
        self.pubacks: dict[int, int] = {}
        self.received: list[str] = []
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, m: self.received.append(m.topic)
        self.port = port

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        with self.lock:
            self.connack = rc

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: ReasonCode, _p: Any) -> None:
        with self.lock:
            self.disconnected = True

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        with self.lock:
            self.pubacks[mid] = rc.value

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        with self.lock:
            self.subacks[mid] = codes

    def subscribe(self, topic_filter: str) -> list[ReasonCode]:
        """Subscribe at QoS 1 and return the SUBACK's reason codes."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None
        wait_for(lambda: mid in self.subacks, 15, f"SUBACK for {topic_filter}")
        return self.subacks[mid]

    def connect(self) -> ReasonCode:
        """Connect (the TLS handshake happens here) and wait for the CONNACK."""
        # No automatic retry: a refused client must stay refused for the test to see it.
        self.client.reconnect_delay_set(3600, 3600)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, 15, "CONNACK")
        assert self.connack is not None
        return self.connack

    def publish(self, topic_name: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic_name, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, 15, f"PUBACK for {topic_name}")
        return self.pubacks[info.mid]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Site:
    """A provisioned site folder with its broker running."""

    folder: SiteFolder
    broker: Mosquitto
    clients: list[Client]

    def device(self, device: str, password: str | None = None) -> Client:
        """A client with a device's bundle, or with another password (and the site's CA,
        since a revoked device has no bundle any more)."""
        if password is None:
            bundle = self.folder.bundle(DeviceId(device))
            return self._client(
                f"device.{device}", _bundle(self.folder, device)["password"], bundle
            )
        return self._client(f"device.{device}", password, self.folder.ca_cert.parent)

    def _client(self, username: str, password: str, bundle: Path) -> Client:
        client = Client(self.broker.port, bundle / "ca.crt", username, password)
        self.clients.append(client)
        return client

    def as_agent(self, password: str) -> Client:
        """A client with the agent's user name."""
        return self._client(f"agent.{SITE}", password, self.folder.agent)


def _init(out: Path, port: int, *devices: str) -> SiteFolder:
    args = ["provision", "init", "--out", str(out), "--site", SITE]
    args += ["--broker-host", "127.0.0.1", "--broker-port", str(port)]
    args += ["--broker-user", getpass.getuser()]
    for device in devices:
        args += ["--device", device]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return SiteFolder(out)


@pytest.fixture
def site(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    """A site provisioned with two devices, its Mosquitto started with the provisioned config."""
    port = free_port()
    folder = _init(tmp_path / "site", port, "till-1", "door")
    broker = Mosquitto(folder.broker, port=port, config=folder.broker_config)
    broker.start()
    running = Site(folder, broker, [])
    yield running
    for client in running.clients:
        client.close()
    broker.stop()
    if getattr(request.node, "failed", False):
        print(f"--- mosquitto log ---\n{broker.log_tail(80)}")


@pytest.fixture
def agent(site: Site, request: pytest.FixtureRequest) -> Iterator[AgentProcess]:
    """The agent as a process, with the provisioned agent.toml as it is."""
    process = AgentProcess(site.folder.agent, site.broker.port, prepared=site.folder.agent_config)
    process.start()
    yield process
    process.stop()
    process.kill_group()
    if getattr(request.node, "failed", False):
        print(f"--- agent log ---\n{process.log_text()[-6000:]}")


def _door(device: str = "till-1") -> dict[str, Any]:
    return track("Door Counted", {"direction": "in", "count": 1}, device)


def test_init_writes_secrets_private_and_prints_none(tmp_path: Path) -> None:
    out = tmp_path / "site"
    args = ["provision", "init", "--out", str(out), "--site", SITE, "--device", "till-1"]
    done = cli(*args, "--broker-user", getpass.getuser())
    assert done.returncode == 0, done.stderr
    folder = SiteFolder(out)
    secrets = [
        folder.ca_key,
        folder.broker / "server.key",
        folder.passwd,
        folder.acl,
        folder.agent_config,
        folder.agent_password,
        folder.agent / "data" / "site.key",
        folder.bundle(DeviceId("till-1")) / "device.json",
    ]
    for path in secrets:
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in (
        folder.agent,
        folder.broker,
        folder.root / "ca",
        folder.bundle(DeviceId("till-1")),
    ):
        assert path.stat().st_mode & 0o777 == 0o700, path
    passwords = [folder.agent_password.read_text(), _bundle(folder, "till-1")["password"]]
    for password in passwords:
        assert len(password) >= 40
        assert password not in done.stdout + done.stderr
        assert password not in folder.passwd.read_text()
    again = cli(*args)
    assert again.returncode == 2
    assert "already provisioned" in again.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another user")
def test_the_agent_user_is_given_its_folder_and_data_and_keeps_them_on_rotation(
    tmp_path: Path,
) -> None:
    out, data = tmp_path / "site", tmp_path / "data"
    nobody = pwd.getpwnam("nobody")
    args = ["provision", "init", "--out", str(out), "--site", SITE, "--data-dir", str(data)]
    done = cli(*args, "--broker-user", "root", "--agent-user", "nobody")
    assert done.returncode == 0, done.stderr
    folder = SiteFolder(out)
    assert cli("provision", "rotate", "--dir", str(out), "--agent").returncode == 0
    for path in (folder.agent, folder.agent_config, folder.agent_password, data / "site.key"):
        assert path.stat().st_uid == nobody.pw_uid, path
    assert folder.passwd.stat().st_uid == 0  # the broker's files stay the broker's
    unknown = cli("provision", "init", "--out", str(tmp_path / "b"), "--site", SITE,
                  "--agent-user", "no-such-user-here")  # fmt: skip
    assert unknown.returncode == 2
    assert "does not exist" in unknown.stderr


def test_a_device_publishes_to_its_topic_and_the_agent_stores_it_over_tls(
    site: Site, agent: AgentProcess
) -> None:
    till = site.device("till-1")
    assert not till.connect().is_failure
    event = _door()
    assert till.publish(topic("till-1", SITE), encode(event)) == 0
    wait_for(lambda: event["messageId"] in stored_ids(agent.db), 30, "the event stored")
    assert f"{site.folder.agent / 'ca.crt'}" in agent.config.read_text()


def test_other_topics_are_denied_and_never_stored(site: Site, agent: AgentProcess) -> None:
    till = site.device("till-1")
    till.connect()
    theirs, other_site = _door("door"), _door()
    # Mosquitto 2.0.11 answers a denied QoS-1 publish with PUBACK 0x87 Not authorized.
    assert till.publish(topic("door", SITE), encode(theirs)) == NOT_AUTHORIZED
    assert till.publish(topic("till-1", "another-site"), encode(other_site)) == NOT_AUTHORIZED
    assert till.publish("sites/test-site/devices/till-1/other", b"{}") == NOT_AUTHORIZED
    # A device reads nothing either, not even its own topic.
    door = site.device("door")
    door.connect()
    # Mosquitto 2.0 grants the subscription and then delivers nothing the ACL does not allow.
    door.subscribe("sites/#")
    # The agent's credential may read the site's topics and nothing else: no publishing. It
    # is tried with the agent stopped: one credential is one session (client ids are bound to
    # user names), so this client would otherwise take the agent's session.
    agent.stop()
    spoofed = _door()
    as_agent = site.as_agent(site.folder.agent_password.read_text())
    as_agent.connect()
    assert as_agent.publish(topic("till-1", SITE), encode(spoofed)) == NOT_AUTHORIZED
    as_agent.close()
    agent.start()
    marker = _door()
    assert till.publish(topic("till-1", SITE), encode(marker)) == 0
    wait_for(lambda: marker["messageId"] in stored_ids(agent.db), 30, "the allowed event")
    stored = set(stored_ids(agent.db))
    assert not {theirs["messageId"], other_site["messageId"], spoofed["messageId"]} & stored
    assert door.received == []


def test_a_device_cannot_take_the_agents_session(site: Site, agent: AgentProcess) -> None:
    dropped = agent.logged("broker_disconnected")
    bundle = site.folder.bundle(DeviceId("till-1"))
    password = _bundle(site.folder, "till-1")["password"]
    # The agent's client id, as a kicking loop would use it, with the device's credential.
    sent = []
    for _ in range(3):
        impostor = Client(
            site.broker.port, bundle / "ca.crt", "device.till-1", password, f"edge-agent-{SITE}"
        )
        site.clients.append(impostor)
        assert not impostor.connect().is_failure
        marker = _door()
        assert impostor.publish(topic("till-1", SITE), encode(marker)) == 0
        sent.append(marker["messageId"])
        impostor.close()
    # The agent kept its session and took every event, without one disconnection.
    wait_for(lambda: set(sent) <= set(stored_ids(agent.db)), 30, "the events stored")
    assert agent.logged("broker_disconnected") == dropped
    assert "Client device.till-1" in site.broker.log_tail(200)


def test_a_wrong_password_and_a_foreign_ca_are_refused(site: Site, tmp_path: Path) -> None:
    assert site.device("till-1", "not-the-password").connect().value == 0x87
    foreign = _init(tmp_path / "elsewhere", free_port(), "till-1")
    # The handshake itself, with the standard library: paho would leave the failed TLS
    # socket open behind it.
    context = ssl.create_default_context(cafile=foreign.bundle(DeviceId("till-1")) / "ca.crt")
    with (
        socket.create_connection(("127.0.0.1", site.broker.port), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(sock, server_hostname="127.0.0.1")
    # With the site's own CA the same handshake succeeds.
    context = ssl.create_default_context(cafile=site.folder.bundle(DeviceId("till-1")) / "ca.crt")
    with (
        socket.create_connection(("127.0.0.1", site.broker.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_revoked_device_is_disconnected_and_refused(site: Site, agent: AgentProcess) -> None:
    door = site.device("door")
    door.connect()
    password = _bundle(site.folder, "door")["password"]
    done = cli("provision", "revoke-device", "--dir", str(site.folder.root), "--device", "door")
    assert done.returncode == 0, done.stderr
    assert "broker reloaded" in done.stdout
    assert not site.folder.bundle(DeviceId("door")).exists()
    assert "device.door" not in site.folder.passwd.read_text()
    assert "devices/door/" not in site.folder.acl.read_text()
    wait_for(lambda: door.disconnected, 15, "the revoked device disconnected")
    assert site.device("door", password=password).connect().value == 0x87
    # The others carry on.
    till = site.device("till-1")
    till.connect()
    event = _door()
    assert till.publish(topic("till-1", SITE), encode(event)) == 0
    wait_for(lambda: event["messageId"] in stored_ids(agent.db), 30, "the event stored")


def test_added_and_rotated_devices(site: Site, agent: AgentProcess) -> None:
    root = str(site.folder.root)
    done = cli("provision", "add-device", "--dir", root, "--device", "kiosk-2")
    assert done.returncode == 0, done.stderr
    assert str(site.folder.bundle(DeviceId("kiosk-2"))) in done.stdout
    password = _bundle(site.folder, "kiosk-2")["password"]
    assert password not in done.stdout
    kiosk = site.device("kiosk-2")
    assert not kiosk.connect().is_failure
    event = _door("kiosk-2")
    assert kiosk.publish(topic("kiosk-2", SITE), encode(event)) == 0
    wait_for(lambda: event["messageId"] in stored_ids(agent.db), 30, "the new device's event")

    done = cli("provision", "rotate", "--dir", root, "--device", "kiosk-2")
    assert done.returncode == 0, done.stderr
    assert _bundle(site.folder, "kiosk-2")["password"] != password
    wait_for(lambda: kiosk.disconnected, 15, "the old password's connection dropped")
    assert site.device("kiosk-2", password=password).connect().value == 0x87
    assert not site.device("kiosk-2").connect().is_failure


def test_rotating_the_agent_keeps_it_ingesting_without_a_restart(
    site: Site, agent: AgentProcess
) -> None:
    old = site.folder.agent_password.read_text()
    pid = agent.process.pid if agent.process else 0
    done = cli("provision", "rotate", "--dir", str(site.folder.root), "--agent")
    assert done.returncode == 0, done.stderr
    assert "broker reloaded" in done.stdout
    new = site.folder.agent_password.read_text()
    assert new != old
    assert new not in done.stdout
    assert site.folder.agent_password.stat().st_mode & 0o777 == 0o600
    # The broker drops the connection made with the old password; the agent reads its
    # password file again and is back on its persistent session.
    agent.wait_log("broker_connected", 2)
    assert agent.process is not None
    assert agent.process.pid == pid
    assert agent.process.poll() is None
    till = site.device("till-1")
    till.connect()
    event = _door()
    assert till.publish(topic("till-1", SITE), encode(event)) == 0
    wait_for(lambda: event["messageId"] in stored_ids(agent.db), 30, "an event after rotation")
    assert site.as_agent(old).connect().value == 0x87


@pytest.mark.parametrize(
    "device",
    [
        pytest.param("", id="empty"),
        pytest.param("a/b", id="slash"),
        pytest.param("+", id="plus"),
        pytest.param("till#1", id="hash"),
        pytest.param("till 1", id="space"),
        pytest.param("till\n1", id="newline"),
        pytest.param("..", id="dot-dot"),
        pytest.param("x" * 65, id="too-long"),
    ],
)
def test_hostile_device_ids_change_nothing(tmp_path: Path, device: str) -> None:
    folder = _init(tmp_path / "site", free_port())
    before = folder.passwd.read_text(), folder.acl.read_text()
    done = cli("provision", "add-device", "--dir", str(folder.root), "--device", device)
    assert done.returncode == 2
    assert "device id" in done.stderr
    assert (folder.passwd.read_text(), folder.acl.read_text()) == before
    assert list((folder.root / "devices").iterdir()) == []


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        pytest.param('tls = true\nca_file = "{missing}"\n', "{missing}", id="missing-ca"),
        pytest.param('tls = true\nca_file = "{junk}"\n', "{junk}", id="not-pem"),
        pytest.param('ca_file = "{junk}"\n', "tls is false", id="ca-without-tls"),
        pytest.param('password_file = "{missing}"\n', "{missing}", id="missing-password-file"),
    ],
)
def test_a_bad_tls_or_password_file_stops_the_agent_naming_it(
    tmp_path: Path, settings: str, said: str
) -> None:
    names = {"missing": str(tmp_path / "nowhere.pem"), "junk": str(tmp_path / "junk.pem")}
    Path(names["junk"]).write_text("not a certificate\n")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[site]\ndata_dir = "{tmp_path / "data"}"\n[mqtt]\nusername = "a"\n'
        + settings.format(**names)
    )
    done = cli("--config", str(config), "run")
    assert done.returncode == 2
    assert said.format(**names) in done.stderr


# --- a venue: one broker, N agents, one site key --------------------------------------------

VENUE = "expo"
HALLS = ("hall-a", "hall-b")


def _venue(out: Path, port: int) -> VenueFolder:
    args = ["provision", "venue", "--out", str(out), "--venue", VENUE, "--agents", ",".join(HALLS)]
    args += ["--broker-host", "127.0.0.1", "--broker-port", str(port)]
    args += ["--broker-user", getpass.getuser()]
    args += ["--device", "hall-a:door-a", "--device", "hall-b:door-b"]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    for hall in HALLS:
        assert f"{out / 'agents' / hall / 'agent.toml'}" in done.stdout
    return VenueFolder(out)


def test_a_venue_is_provisioned_with_one_key_and_each_agent_its_devices(tmp_path: Path) -> None:
    folder = _venue(tmp_path / "venue", 8883)
    keys = {(folder.agent(h) / "data" / "site.key").read_bytes() for h in HALLS}
    assert len(keys) == 1
    for hall in HALLS:
        home = folder.agent(hall)
        for secret in (home / "agent.toml", home / "mqtt.password", home / "data" / "site.key"):
            assert secret.stat().st_mode & 0o777 == 0o600, secret
        settings = load_settings(home / "agent.toml", environ={})
        assert (settings.site.id, settings.site.venue, settings.venue.share) == (hall, VENUE, True)
        assert settings.mqtt.topic == "sites/{site}/devices/+/events"
        assert settings.site_key == home / "data" / "site.key"
    acl = folder.shared.acl.read_text()
    assert "user device.door-a\ntopic write sites/hall-a/devices/door-a/events" in acl
    assert "user device.door-b\ntopic write sites/hall-b/devices/door-b/events" in acl
    assert "user agent.hall-a.venue\ntopic read venues/expo/agents/#\n" in acl
    assert "topic write venues/expo/agents/hall-b/#" in acl
    assert _bundle(folder.shared, "door-b")["topic"] == "sites/hall-b/devices/door-b/events"
    users = folder.shared.passwd.read_text()
    for user in ("agent.hall-a", "agent.hall-a.venue", "agent.hall-b.venue", "device.door-b"):
        assert f"\n{user}:" in f"\n{users}", user
    again = cli("provision", "venue", "--out", str(folder.root), "--venue", VENUE,
                "--agents", "hall-a")  # fmt: skip
    assert again.returncode == 2
    assert "already provisioned" in again.stderr


@pytest.mark.parametrize(
    ("agents", "devices", "reason"),
    [
        pytest.param("hall-a,hall-a", [], "names an agent twice", id="agent-twice"),
        pytest.param("hall-a,a/b", [], "site id", id="bad-agent"),
        pytest.param("hall-a", ["hall-z:door"], "is not one of --agents", id="unknown-agent"),
        pytest.param("hall-a", ["door"], "must be AGENT:DEVICE", id="no-agent"),
        pytest.param(
            "hall-a,hall-b", ["hall-a:door", "hall-b:door"], "belongs to one agent", id="shared"
        ),
    ],
)
def test_a_bad_venue_is_refused_and_writes_nothing(
    tmp_path: Path, agents: str, devices: list[str], reason: str
) -> None:
    out = tmp_path / "venue"
    args = ["provision", "venue", "--out", str(out), "--venue", VENUE, "--agents", agents]
    for device in devices:
        args += ["--device", device]
    done = cli(*args, "--broker-user", getpass.getuser())
    assert done.returncode == 2
    assert reason in done.stderr
    assert not out.exists()


def test_a_provisioned_venue_runs_on_its_broker_and_its_agents_share(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    folder = _venue(tmp_path / "venue", port)
    broker = Mosquitto(folder.shared.broker, port=port, config=folder.shared.broker_config)
    broker.start()
    agents = [
        AgentProcess(folder.agent(h), port, prepared=folder.agent(h) / "agent.toml") for h in HALLS
    ]
    door = Client(
        port,
        folder.shared.bundle(DeviceId("door-a")) / "ca.crt",
        "device.door-a",
        _bundle(folder.shared, "door-a")["password"],
    )
    try:
        for agent in agents:
            agent.start()
            agent.wait_log("venue_connected")
        assert not door.connect().is_failure
        event = _door("door-a")
        assert door.publish(topic("door-a", "hall-a"), encode(event)) == 0
        # Its own agent's topic only: not hall-b's, nor the venue's shares.
        assert door.publish(topic("door-a", "hall-b"), encode(_door("door-a"))) == NOT_AUTHORIZED
        assert door.publish(f"venues/{VENUE}/agents/hall-b/today", b"{}") == NOT_AUTHORIZED
        wait_for(lambda: event["messageId"] in stored_ids(agents[0].db), 30, "hall-a storing")
        # hall-b takes hall-a's hour cell over the broker, both under the venue's one key.
        cells = "SELECT count(*) FROM peer_cells WHERE site = 'hall-a'"
        wait_for(lambda: query(agents[1].db, cells)[0][0] == 1, 30, "hall-b holding hall-a's hour")
        for agent in agents:
            # The venue link has a user of its own: the two sessions never take each other's place.
            assert agent.logged("broker_disconnected") == 0
            assert agent.logged("venue_disconnected") == 0
            assert agent.logged("venue_key_mismatch") == 0
    finally:
        door.close()
        for agent in agents:
            agent.stop()
            agent.kill_group()
        broker.stop()
        if getattr(request.node, "failed", False):
            print(f"--- mosquitto log ---\n{broker.log_tail(80)}")
            for agent in agents:
                print(f"--- agent log ---\n{agent.log_text()[-6000:]}")
