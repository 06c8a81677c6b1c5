"""What a provisioned site's files say: device ids, MQTT user names, the broker's password and
ACL files, the agent's configuration and a device's bundle. Text in, text out; no files here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edge_agent.core.topics import DeviceId, DeviceTopic, SiteId
from edge_agent.errors import ConfigError

MAX_ID = 64
# Letters, digits and - _ . only: a device id is part of a topic (no + # /), of a user name in the
# broker's files (no whitespace, no ':'), and the name of the device's bundle folder (no
# leading '.', so neither '..' nor a hidden file).
_ID = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_ID - 1}}}")

#: User names: the two prefixes keep the agent's name from ever being a device's.
AGENT_PREFIX = "agent."
DEVICE_PREFIX = "device."
#: The agent's venue link logs in as the agent's user plus this, with the agent's password:
#: the broker replaces each client id with its user name (``use_username_as_clientid``, so
#: no device can take the agent's session), and with one user the agent's two connections
#: would take each other's place.
VENUE_USER_SUFFIX = ".venue"

#: Mosquitto 2.0's ``$7$`` hash: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash.
PBKDF2_SALT_BYTES = 12
# mosquitto_passwd 2.0 uses 101 rounds. Every password here is 32 random bytes, which no
# number of rounds makes easier or harder to guess; more rounds would only slow each CONNECT
# on a small box.
PBKDF2_ITERATIONS = 101


def _checked(raw: str, what: str) -> str:
    if not _ID.fullmatch(raw):
        shown = raw[:MAX_ID].encode("unicode_escape").decode("ascii")
        raise ConfigError(
            f"{what} {shown!r} must be 1-{MAX_ID} letters, digits, - _ or . "
            "(not starting with .); no spaces, /, + or #"
        )
    return raw


def check_device_id(raw: str) -> DeviceId:
    """The device id, if it can name a topic, a broker user and a folder.

    Raises:
        ConfigError: it is empty, too long, or has a character other than letters, digits,
            ``-``, ``_`` and ``.`` (not first).
    """
    return DeviceId(_checked(raw, "device id"))


def check_site_id(raw: str) -> SiteId:
    """The site id, if it can name a topic and a broker user (the same rule as devices').

    Raises:
        ConfigError: as `check_device_id`.
    """
    return SiteId(_checked(raw, "site id"))


def check_venue_id(raw: str) -> str:
    """The venue id, if it can name a topic (the same rule as sites').

    Raises:
        ConfigError: as `check_device_id`.
    """
    return _checked(raw, "venue id")


def agent_username(site: SiteId) -> str:
    """The agent's MQTT user name on its site's broker."""
    return f"{AGENT_PREFIX}{site}"


def venue_username(site: SiteId) -> str:
    """The MQTT user name of the agent's venue link (`VENUE_USER_SUFFIX`)."""
    return agent_username(site) + VENUE_USER_SUFFIX


def device_username(device: DeviceId) -> str:
    """A device's MQTT user name."""
    return f"{DEVICE_PREFIX}{device}"


def device_of(username: str) -> DeviceId | None:
    """The device a user name belongs to; None for the agent's (or anything else)."""
    if not username.startswith(DEVICE_PREFIX):
        return None
    return DeviceId(username.removeprefix(DEVICE_PREFIX))


def password_line(
    username: str, password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """One line of Mosquitto's password file: ``user:$7$<rounds>$<b64 salt>$<b64 hash>``.

    Raises:
        ConfigError: the user name cannot be written in the file (':' or a line break).
    """
    if not username or any(c in username for c in ":\r\n\x00"):
        raise ConfigError(f"MQTT user name {username!r} cannot hold ':' or a line break")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{username}:$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def parse_password_file(text: str) -> dict[str, str]:
    """User name -> its whole line, in file order; blank lines and comments are skipped."""
    users: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            users[line.partition(":")[0]] = line
    return users


def password_file(lines: Mapping[str, str]) -> str:
    """The password file from user name -> line, agent first, then devices in name order."""
    ordered = sorted(lines, key=lambda u: (not u.startswith(AGENT_PREFIX), u))
    return "".join(f"{lines[u]}\n" for u in ordered)


_ACL_HEADER = "# Written by edge-agent provision: regenerated on every change."


def acl_text(site: SiteId, devices: Iterable[DeviceId], venue: str = "") -> str:
    """Mosquitto's ACL file: each device may publish only to its own topic, the agent may
    only read the site's device topics and, at a ``venue``, its venue link
    (`venue_username`) may read every agent's share of the venue and write its own
    (``venues/{venue}/agents/{site}/...``: no agent can speak for another); nobody may do
    anything else. Devices get nothing of the venue's.

    Mosquitto denies whatever no line allows, so nothing else needs saying. Subscribing is not
    checked against ``read`` lines in Mosquitto 2.0 (a wider subscription is granted); what is
    delivered is.
    """
    return "\n".join([_ACL_HEADER, *_agent_acl(site, devices, venue)]) + "\n"


def venue_acl_text(venue: str, agents: Mapping[SiteId, Iterable[DeviceId]]) -> str:
    """The ACL file of a venue's one broker: every agent's lines as `acl_text` writes a
    site's, each agent with its own partition of the venue's devices, which publish under
    its site's topics only."""
    lines = [_ACL_HEADER]
    for site in sorted(agents):
        lines += ["", f"# agent {site}", *_agent_acl(site, agents[site], venue)]
    return "\n".join(lines) + "\n"


def _agent_acl(site: SiteId, devices: Iterable[DeviceId], venue: str) -> list[str]:
    lines = [f"user {agent_username(site)}", f"topic read sites/{site}/devices/+/events"]
    if venue:
        lines += [
            "",
            f"user {venue_username(site)}",
            f"topic read venues/{venue}/agents/#",
            f"topic write venues/{venue}/agents/{site}/#",
        ]
    for device in sorted(set(devices)):
        lines += ["", f"user {device_username(device)}"]
        lines.append(f"topic write {DeviceTopic(site, device).topic}")
    return lines


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, but for DEL, which TOML forbids raw)."""
    return json.dumps(value).replace("\x7f", "\\u007f")


@dataclass(frozen=True)
class AgentConfig:
    """What the provisioned agent's TOML file holds."""

    site: SiteId
    data_dir: str
    broker_host: str
    broker_port: int
    username: str
    password_file: str
    ca_file: str
    sync_url: str = ""
    sync_token: str = ""
    #: The venue the site belongs to; empty: none.
    venue: str = ""
    #: ``[venue] share``: share its cells of today with the venue's other agents.
    share: bool = False


def agent_config_text(config: AgentConfig) -> str:
    """The agent's TOML configuration. Its password is in a file of its own, which the
    agent reads again at every reconnection, so a rotation needs no restart."""
    s = toml_string
    venue = f"venue = {s(config.venue)}\n" if config.venue else ""
    text = (
        "# Written by edge-agent provision init.\n"
        f"[site]\nid = {s(config.site)}\ndata_dir = {s(config.data_dir)}\n{venue}\n"
        f"[mqtt]\nhost = {s(config.broker_host)}\nport = {config.broker_port}\n"
        f"username = {s(config.username)}\npassword_file = {s(config.password_file)}\n"
        f"tls = true\nca_file = {s(config.ca_file)}\n"
        # The ACL lets the agent read only its own site's topics.
        f'topic = "sites/{{site}}/devices/+/events"\n'
    )
    if config.sync_url:
        text += f"\n[sync]\nurl = {s(config.sync_url)}\ntoken = {s(config.sync_token)}\n"
    if config.share:
        text += "\n[venue]\nshare = true\n"
    return text


def device_bundle(
    site: SiteId, device: DeviceId, host: str, port: int, password: str
) -> dict[str, object]:
    """What a device needs to publish: ``device.json`` of its bundle (next to ``ca.crt``)."""
    return {
        "site": site,
        "device": device,
        "host": host,
        "port": port,
        "tls": True,
        "ca_file": "ca.crt",
        "username": device_username(device),
        "password": password,
        "topic": DeviceTopic(site, device).topic,
        "qos": 1,
        "protocol": "MQTT 5",
    }
