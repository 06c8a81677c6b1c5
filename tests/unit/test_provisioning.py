"""What a provisioned site's files say: device ids, the password file, the ACL, the configs."""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib

import pytest

from edge_agent.core.broker import DURABILITY, PACKET_ROOM, mosquitto_conf
from edge_agent.core.provisioning import (
    AgentConfig,
    acl_text,
    agent_config_text,
    agent_username,
    check_device_id,
    check_site_id,
    device_bundle,
    device_of,
    device_username,
    parse_password_file,
    password_file,
    password_line,
    toml_string,
    venue_acl_text,
    venue_username,
)
from edge_agent.core.topics import DeviceId, SiteId, parse_topic
from edge_agent.errors import ConfigError

SITE = SiteId("shop-12")


@pytest.mark.parametrize("device", ["till-1", "door_north", "Zone.3", "k", "x" * 64, "-a"])
def test_plain_device_ids_are_accepted(device: str) -> None:
    assert check_device_id(device) == device
    bundle = device_bundle(SITE, DeviceId(device), "shop12.local", 8883, "pw")
    assert parse_topic(str(bundle["topic"])).device == device


@pytest.mark.parametrize(
    "device",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("a/b", id="slash"),
        pytest.param("+", id="plus"),
        pytest.param("till#", id="hash"),
        pytest.param("till 1", id="space"),
        pytest.param("till\t1", id="tab"),
        pytest.param("till-1\n", id="trailing-newline"),
        pytest.param("till\r\nuser agent.shop-12", id="acl-injection"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\x1bb", id="escape"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("a:b", id="colon-breaks-password-file"),
        pytest.param("..", id="dot-dot"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("tïll", id="non-ascii"),
        pytest.param("till\u2028", id="unicode-line-separator"),
        pytest.param("%u", id="acl-pattern"),
    ],
)
def test_hostile_device_ids_are_refused_with_a_readable_message(device: str) -> None:
    with pytest.raises(ConfigError, match="device id") as refused:
        check_device_id(device)
    message = str(refused.value)
    assert "letters, digits" in message
    # The id is shown escaped: a control character cannot rewrite the installer's terminal.
    assert not any(ord(c) < 32 or ord(c) == 127 for c in message)


def test_site_ids_follow_the_same_rule() -> None:
    assert check_site_id("shop-12") == "shop-12"
    with pytest.raises(ConfigError, match="site id"):
        check_site_id("shop/12")


def test_user_names_of_agent_and_devices_never_collide() -> None:
    assert agent_username(SITE) == "agent.shop-12"
    assert device_username(DeviceId("agent")) == "device.agent"
    assert device_of("device.till-1") == "till-1"
    assert device_of(agent_username(SITE)) is None


def test_password_line_matches_mosquitto_passwd() -> None:
    # Written by mosquitto_passwd 2.0.11 for user dev1, password "secret".
    known = (
        "dev1:$7$101$aF274+QCRquHBcyN$O/NAwWM3ljlnOljL1JWMArTRe65cNFRJCg2JeTLgjmAx+NDSk1n0p0d2"
        "FI/Ep1t0pFD1vq2bdlOOYaBzjLkZcQ=="
    )
    assert password_line("dev1", "secret", base64.b64decode("aF274+QCRquHBcyN")) == known


def test_password_line_shape_and_hash() -> None:
    salt = bytes(range(12))
    line = password_line("device.till-1", "pw", salt)
    match = re.fullmatch(
        r"device\.till-1:\$7\$101\$([A-Za-z0-9+/=]{16})\$([A-Za-z0-9+/=]{88})", line
    )
    assert match is not None
    assert base64.b64decode(match[1]) == salt
    assert base64.b64decode(match[2]) == hashlib.pbkdf2_hmac("sha512", b"pw", salt, 101)
    assert "pw" not in line.partition(":")[2]


@pytest.mark.parametrize("username", ["", "a:b", "a\nb", "a\x00"])
def test_password_line_refuses_names_the_file_cannot_hold(username: str) -> None:
    with pytest.raises(ConfigError):
        password_line(username, "pw", bytes(12))


def test_password_file_round_trip_agent_first() -> None:
    lines = {
        "device.b": password_line("device.b", "1", bytes(12)),
        "agent.shop-12": password_line("agent.shop-12", "2", bytes(12)),
        "device.a": password_line("device.a", "3", bytes(12)),
    }
    text = password_file(lines)
    assert [line.partition(":")[0] for line in text.splitlines()] == [
        "agent.shop-12",
        "device.a",
        "device.b",
    ]
    assert parse_password_file("# comment\n\n" + text) == lines


def test_acl_allows_each_device_its_own_topic_and_the_agent_reading_only() -> None:
    text = acl_text(SITE, [DeviceId("till-1"), DeviceId("door"), DeviceId("till-1")])
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "user agent.shop-12",
        "topic read sites/shop-12/devices/+/events",
        "user device.door",
        "topic write sites/shop-12/devices/door/events",
        "user device.till-1",
        "topic write sites/shop-12/devices/till-1/events",
    ]
    # Nothing wider: no readwrite, no multi-level wildcard, no pattern, no anonymous lines.
    assert "readwrite" not in text
    assert "#" not in "".join(rules)
    assert "pattern" not in text
    assert rules[0].startswith("user ")


def test_acl_with_no_devices_still_lets_the_agent_read() -> None:
    assert acl_text(SITE, []).splitlines()[1:] == [
        "user agent.shop-12",
        "topic read sites/shop-12/devices/+/events",
    ]


def test_a_venue_acl_gives_each_agent_its_devices_and_its_venue_link_the_shares() -> None:
    halls = {
        SiteId("hall-a"): [DeviceId("door-a")],
        SiteId("hall-b"): [DeviceId("door-b"), DeviceId("gate-b")],
    }
    text = venue_acl_text("expo", halls)
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "user agent.hall-a",
        "topic read sites/hall-a/devices/+/events",
        "user agent.hall-a.venue",
        "topic read venues/expo/agents/#",
        "topic write venues/expo/agents/hall-a/#",
        "user device.door-a",
        "topic write sites/hall-a/devices/door-a/events",
        "user agent.hall-b",
        "topic read sites/hall-b/devices/+/events",
        "user agent.hall-b.venue",
        "topic read venues/expo/agents/#",
        "topic write venues/expo/agents/hall-b/#",
        "user device.door-b",
        "topic write sites/hall-b/devices/door-b/events",
        "user device.gate-b",
        "topic write sites/hall-b/devices/gate-b/events",
    ]
    # A site's ACL at a venue is the same agent's lines.
    site = acl_text(SiteId("hall-a"), [DeviceId("door-a")], "expo")
    assert [r for r in site.splitlines() if r and not r.startswith("#")] == rules[:7]
    # The venue link's user is never a device's, nor another agent's.
    assert venue_username(SiteId("hall-a")) == "agent.hall-a.venue"
    assert device_of(venue_username(SiteId("hall-a"))) is None


@pytest.mark.parametrize(
    "value", ['a"b', "back\\slash", "line\nbreak", "tab\t", "del\x7f", "nul\x00", "ünï", ""]
)
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value


def test_agent_config_text() -> None:
    config = AgentConfig(
        site=SITE,
        data_dir='/var/lib/edge "agent"',
        broker_host="shop12.local",
        broker_port=8883,
        username="agent.shop-12",
        password_file="/etc/edge-agent/mqtt.password",  # noqa: S106 a path, not a password
        ca_file="/etc/edge-agent/ca.crt",
    )
    document = tomllib.loads(agent_config_text(config))
    assert document["site"] == {"id": "shop-12", "data_dir": '/var/lib/edge "agent"'}
    assert document["mqtt"] == {
        "host": "shop12.local",
        "port": 8883,
        "username": "agent.shop-12",
        "password_file": "/etc/edge-agent/mqtt.password",
        "tls": True,
        "ca_file": "/etc/edge-agent/ca.crt",
        "topic": "sites/{site}/devices/+/events",
    }
    assert "sync" not in document
    with_sync = AgentConfig(**{**config.__dict__, "sync_url": "https://c/", "sync_token": "t"})
    assert tomllib.loads(agent_config_text(with_sync))["sync"] == {
        "url": "https://c/",
        "token": "t",
    }
    at_venue = AgentConfig(**{**config.__dict__, "venue": "expo", "share": True})
    document = tomllib.loads(agent_config_text(at_venue))
    assert (document["site"]["venue"], document["venue"]) == ("expo", {"share": True})


def test_device_bundle() -> None:
    bundle = device_bundle(SITE, DeviceId("till-1"), "shop12.local", 8883, "pw")
    assert bundle["username"] == "device.till-1"
    assert bundle["topic"] == "sites/shop-12/devices/till-1/events"
    assert bundle["ca_file"] == "ca.crt"
    assert bundle["tls"] is True


def test_mosquitto_conf_shares_the_durability_settings() -> None:
    text = mosquitto_conf(
        user="mosquitto",
        listener=["listener 8883", "certfile /s/server.crt"],
        access=["allow_anonymous false", "password_file /s/passwd"],
        data="/s/data",
        log="/s/mosquitto.log",
        pid_file="/s/mosquitto.pid",
    )
    assert DURABILITY.format(data="/s/data", max_packet=64 * 1024 + PACKET_ROOM) in text
    lines = text.splitlines()
    assert lines.index("listener 8883") < lines.index("certfile /s/server.crt")
    assert "pid_file /s/mosquitto.pid" in lines
    assert "allow_anonymous true" not in text


@pytest.mark.parametrize("field", ["user", "data", "log", "pid_file"])
def test_mosquitto_conf_refuses_a_line_break_in_a_value(field: str) -> None:
    values = {"user": "u", "data": "/d", "log": "/l", "pid_file": "/p"}
    values[field] += "\nallow_anonymous true"
    with pytest.raises(ConfigError, match="line break"):
        mosquitto_conf(
            user=values["user"],
            listener=["listener 1"],
            access=["allow_anonymous false"],
            data=values["data"],
            log=values["log"],
            pid_file=values["pid_file"],
        )
